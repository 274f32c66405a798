/**
 * `mistral-ref generate`, in-process: streamed ids and text, --json, sampling flags,
 * the speed line on a terminal, and bad input (one line on stderr, exit 2).
 */
import * as fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile } from './helpers/fixtures.js';
import { main } from '../src/cli/main.js';
import type { CliIO } from '../src/cli/io.js';

const TINY = modelDir('mistral-tiny');
const DEMO = modelDir('mistral-demo');

/** mistral-tiny's reference prompt p0 and its 16 greedy tokens (transformers 4.47.1). */
const golden = (JSON.parse(fs.readFileSync(refFile('mistral-tiny'), 'utf8')) as {
  prompts: Array<{ input_ids: number[]; greedy: { generated_ids: number[] } }>;
}).prompts[0]!;

describe('generate --ids (no tokenizer needed)', () => {
  it('streams the greedy ids of the reference, space-separated', async () => {
    const r = await runCli(['generate', '--model', TINY, '--ids', golden.input_ids.join(','), '--max-tokens', '16', '--ignore-eos']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe(golden.greedy.generated_ids.join(' ') + '\n');
  });

  it('--json prints one object with the ids, the stop reason and the speed', async () => {
    const r = await runCli(['generate', '--model', TINY, '--ids', golden.input_ids.join(','), '--max-tokens', '16', '--ignore-eos', '--json', '--backend', 'wasm']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim().split('\n')).toHaveLength(1);
    const out = JSON.parse(r.stdout);
    expect(out.prompt_ids).toEqual(golden.input_ids);
    expect(out.generated_ids).toEqual(golden.greedy.generated_ids);
    expect(out.stop_reason).toBe('length');
    expect(out.text).toBeUndefined(); // no tokenizer in the folder
    expect(out.seed).toBeUndefined(); // greedy
    expect(out.tokens_per_second).toBeGreaterThan(0);
    expect(out.seconds).toBeGreaterThanOrEqual(out.prefill_seconds);
    // prefill and decode speeds: finite, non-negative, and derived from the other keys
    for (const key of ['prefill_tokens_per_second', 'decode_tokens_per_second']) {
      expect(typeof out[key], key).toBe('number');
      expect(Number.isFinite(out[key]), key).toBe(true);
      expect(out[key], key).toBeGreaterThanOrEqual(0);
    }
    expect(out.prefill_seconds).toBeGreaterThan(0);
    expect(out.prefill_tokens_per_second).toBeCloseTo(out.prompt_ids.length / out.prefill_seconds, 6);
    expect(out.decode_tokens_per_second).toBeGreaterThan(0);
    expect(out.decode_tokens_per_second).toBeCloseTo((out.generated_ids.length - 1) / (out.seconds - out.prefill_seconds), 6);
  });

  it('--json with one generated token: decode_tokens_per_second is 0', async () => {
    const r = await runCli(['generate', '--model', TINY, '--ids', '1,269,505', '--max-tokens', '1', '--ignore-eos', '--json']);
    expect(r.code).toBe(0);
    const out = JSON.parse(r.stdout);
    expect(out.generated_ids).toHaveLength(1);
    expect(out.decode_tokens_per_second).toBe(0);
    expect(out.prefill_tokens_per_second).toBeCloseTo(3 / out.prefill_seconds, 6);
    expect(Object.keys(out)).toEqual(['prompt_ids', 'generated_ids', 'stop_reason', 'tokens_per_second', 'seconds',
      'prefill_seconds', 'prefill_tokens_per_second', 'decode_tokens_per_second']);
  });

  it('--json with --max-tokens 0: both speeds are 0, not NaN', async () => {
    const out = JSON.parse((await runCli(['generate', '--model', TINY, '--ids', '1,269,505', '--max-tokens', '0', '--json'])).stdout);
    expect(out.generated_ids).toEqual([]);
    expect(out.prefill_tokens_per_second).toBe(0);
    expect(out.decode_tokens_per_second).toBe(0);
  });

  it('sampling with --seed repeats itself, reports the seed, and differs from greedy', async () => {
    const args = ['generate', '--model', TINY, '--ids', '1,269,505', '--max-tokens', '20', '--ignore-eos', '--temperature', '1.5', '--top-k', '40', '--top-p', '0.9', '--seed', '11', '--json'];
    const a = JSON.parse((await runCli(args)).stdout);
    const b = JSON.parse((await runCli(args)).stdout);
    expect(a.generated_ids).toHaveLength(20);
    expect(b.generated_ids).toEqual(a.generated_ids);
    expect(a.seed).toBe(11);
    const greedy = JSON.parse((await runCli(['generate', '--model', TINY, '--ids', '1,269,505', '--max-tokens', '20', '--ignore-eos', '--json'])).stdout);
    expect(a.generated_ids).not.toEqual(greedy.generated_ids);
  });

  it('--stop-ids stops after the id, which is printed', async () => {
    const stopAt = golden.greedy.generated_ids[3]!;
    const r = await runCli(['generate', '--model', TINY, '--ids', golden.input_ids.join(','), '--ignore-eos', '--stop-ids', String(stopAt), '--json']);
    const out = JSON.parse(r.stdout);
    const first = golden.greedy.generated_ids.indexOf(stopAt);
    expect(out.generated_ids).toEqual(golden.greedy.generated_ids.slice(0, first + 1));
    expect(out.stop_reason).toBe('stop');
  });

  it('on a terminal, stderr gets one line with tokens/s', async () => {
    let stdout = '';
    let stderr = '';
    const io: CliIO = { stdout: (t) => { stdout += t; }, stderr: (t) => { stderr += t; }, interactive: true, stdin: async function* () {} };
    const code = await main(['generate', '--model', TINY, '--ids', '1,269,505', '--max-tokens', '5', '--ignore-eos'], io);
    expect(code).toBe(0);
    expect(stdout.trim().split(' ')).toHaveLength(5);
    expect(stderr).toMatch(/^generate: 5 tokens in \d+\.\d\d s, \d+\.\d tokens\/s \(prompt 3 tokens in \d+\.\d\d s; stopped: length\)\n$/);
  });
});

describe('generate with the demo model\'s tokenizer', () => {
  it('--prompt "47+38=" prints 85 (BOS added, stops at </s>)', async () => {
    const r = await runCli(['generate', '--model', DEMO, '--prompt', '47+38=']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('85\n');
  });

  it('--ids with a tokenizer in the folder prints text; --json adds it', async () => {
    const ids = '1,24,27,15,23,28,33'; // <s>47+38=
    const r = await runCli(['generate', '--model', DEMO, '--ids', ids]);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('85\n');
    const j = JSON.parse((await runCli(['generate', '--model', DEMO, '--ids', ids, '--json'])).stdout);
    expect(j.generated_ids).toEqual([28, 25, 2]); // "8", "5", "</s>" (the reference's greedy ids, up to eos)
    expect(j.text).toBe('85');
    expect(j.stop_reason).toBe('eos');
  });
});

describe('bad input: one line on stderr, exit 2', () => {
  const tooLong = Array.from({ length: 4097 }, () => 1).join(',');
  it.each([
    [['--ids', '1,1000'], 'mistral-ref generate: token id 1000 at index 1 is outside the vocabulary [0, 1000)'],
    [['--ids', ''], 'mistral-ref generate: --ids expects comma-separated non-negative integers, got ""'],
    [['--ids', '1,-2'], 'mistral-ref generate: --ids expects comma-separated non-negative integers, got "1,-2"'],
    [[], 'mistral-ref generate: give the prompt as --prompt TEXT or as --ids 1,2,3 (one of them)'],
    [['--ids', '1', '--prompt', 'hi'], 'mistral-ref generate: give the prompt as --prompt TEXT or as --ids 1,2,3 (one of them)'],
    [['--ids', '1', '--temperature=-1'], 'mistral-ref generate: --temperature expects a number ≥ 0, got "-1"'],
    [['--ids', '1', '--temperature', '-1'], "mistral-ref generate: Option '--temperature' argument is ambiguous."], // node:util wants --temperature=-1
    [['--ids', '1', '--top-p', '0'], 'mistral-ref generate: --top-p expects a number > 0 and ≤ 1, got "0"'],
    [['--ids', '1', '--top-p', '1.5'], 'mistral-ref generate: --top-p expects a number ≥ 0 and ≤ 1, got "1.5"'],
    [['--ids', '1', '--top-k', '0'], 'mistral-ref generate: --top-k expects an integer ≥ 1, got "0"'],
    [['--ids', '1', '--max-tokens', 'many'], 'mistral-ref generate: --max-tokens expects an integer ≥ 0, got "many"'],
    [['--ids', '1', '--seed=-3'], 'mistral-ref generate: --seed expects an integer ≥ 0 and ≤ 4294967295, got "-3"'],
    [['--ids', '1', '--stop-ids', '5000'], 'mistral-ref generate: stop id 5000 is outside the vocabulary [0, 1000)'],
  ])('%j', async (extra, line) => {
    const r = await runCli(['generate', '--model', TINY, ...extra]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe(line + '\n');
  });

  it('a prompt longer than max_position_embeddings of a model without a window', async () => {
    const r = await runCli(['generate', '--model', modelDir('mistral-nowindow'), '--ids', tooLong]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('mistral-ref generate: sequence of 4097 tokens exceeds max_position_embeddings 4096 (this model has no sliding window to roll over)\n');
  });

  it('--prompt for a model folder without a tokenizer', async () => {
    const r = await runCli(['generate', '--model', TINY, '--prompt', 'hello']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mistral-ref generate: --prompt needs a tokenizer in ${TINY} (tokenizer.model.v*, tokenizer.model or tokenizer.json); give token ids with --ids\n`);
  });

  it('a missing model folder', async () => {
    const r = await runCli(['generate', '--model', '/nonexistent/model', '--ids', '1']);
    expect(r.code).toBe(2);
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr).toMatch(/^mistral-ref generate: .*\/nonexistent\/model/);
  });
});
