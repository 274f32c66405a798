/** `mistral-ref attribute` and `mistral-ref patch`: the JSON contracts, the files, and one line + exit 2 for every bad argument. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { modelDir } from './helpers/fixtures.js';

const DEMO = modelDir('mistral-demo');
const MIXTRAL = modelDir('mixtral-tiny');

describe('attribute', () => {
  it.each([['cpu', 'eager'], ['wasm', 'resident']])('--json on the demo (%s, %s): parts sum to logit_diff', async (backend, weights) => {
    const r = await runCli(['attribute', '--model', DEMO, '--prompt', '47+38=', '--answer', '8', '--wrong', '7', '--json', '--backend', backend!, '--weights', weights!]);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { logit_diff: number; parts: Array<{ name: string; value: number }>; sum: number };
    expect(Object.keys(j)).toEqual(['logit_diff', 'parts', 'sum']);
    expect(Math.abs(j.sum - j.logit_diff)).toBeLessThan(1e-4);
    expect(Math.abs(j.parts.reduce((a, p) => a + p.value, 0) - j.sum)).toBeLessThan(1e-9);
    expect(j.parts.map((p) => p.name)).toContain('blocks.3.attn.head.1');
    expect(j.parts[0]!.name).toBe('embed');
    expect(j.parts.map((p) => p.name)).toContain('blocks.0.mlp');
    expect(Object.keys(j.parts[0]!)).toEqual(['name', 'value']);
  });

  it('Mixtral by ids (no tokenizer): parts name the mixtures', async () => {
    const r = await runCli(['attribute', '--model', MIXTRAL, '--ids', '1,269,505,717', '--answer', '5', '--wrong', '9', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { logit_diff: number; parts: Array<{ name: string }>; sum: number };
    expect(j.parts.map((p) => p.name)).toContain('blocks.2.moe');
    expect(Math.abs(j.sum - j.logit_diff)).toBeLessThan(1e-4);
  });

  it('prints a table without --json', async () => {
    const r = await runCli(['attribute', '--model', DEMO, '--prompt', '47+38=', '--answer', '8', '--wrong', '7']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^logit\(28 \("8"\)\) − logit\(27 \("7"\)\) at position 6: /);
    expect(r.stdout).toContain('  blocks.3.attn.head.3');
  });

  it.each([
    [['--prompt', '47+38=', '--wrong', '7'], '--answer is required (a token id or a vocabulary piece)'],
    [['--prompt', '47+38=', '--answer', 'xyz', '--wrong', '7'], '--answer: "xyz" is neither a piece of the tokenizer\'s vocabulary nor a token id'],
    [['--prompt', '47+38=', '--ids', '1,2', '--answer', '8', '--wrong', '7'], 'give exactly one of --prompt and --ids'],
    [['--ids', '1,2', '--answer', '8', '--wrong', '700'], '--wrong: token id 700 is outside the vocabulary [0, 99)'],
    [['--ids', '1,200', '--answer', '8', '--wrong', '7'], 'token id 200 at index 1 is outside the vocabulary [0, 99)'],
    [['--prompt', '1', '--answer', '8', '--wrong', '7', '--bogus'], "Unknown option '--bogus'"],
  ])('bad input %j: one line, exit 2', async (args, message) => {
    const r = await runCli(['attribute', '--model', DEMO, ...args]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(message);
  });

  it('no tokenizer: pieces are refused, ids work', async () => {
    const r = await runCli(['attribute', '--model', MIXTRAL, '--ids', '1,2', '--answer', 'a', '--wrong', '9']);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('--answer expects a token id (the model folder has no tokenizer to look pieces up in), got "a"');
  });
});

describe('patch', () => {
  it('--json: resid_pre by position restores the differing position in layer 0; the heatmap is written', async () => {
    const out = fs.mkdtempSync(path.join(os.tmpdir(), 'patch-'));
    const r = await runCli(['patch', '--model', DEMO, '--clean', '47+38=', '--corrupt', '47+39=', '--answer', '8', '--wrong', '6',
      '--hook', 'resid_pre', '--by', 'position', '--out', out, '--json']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { hook: string; by: string; clean: number; corrupt: number; grid: number[][] };
    expect(Object.keys(j)).toEqual(['hook', 'by', 'clean', 'corrupt', 'grid']);
    expect([j.hook, j.by]).toEqual(['resid_pre', 'position']);
    expect(j.grid).toHaveLength(4);
    expect(j.grid[0]!.map((x) => Math.round(x * 1e5) / 1e5)).toEqual([0, 0, 0, 0, 0, 1, 0]);
    expect(fs.readFileSync(path.join(out, 'patch-resid_pre-position.svg'), 'utf8')).toContain('<svg');
    expect(fs.readFileSync(path.join(out, 'patch-resid_pre-position.png')).subarray(1, 4).toString()).toBe('PNG');
    fs.rmSync(out, { recursive: true });
  });

  it('--json: z by head_position is grid[layer][head][position]', async () => {
    const r = await runCli(['patch', '--model', MIXTRAL, '--clean-ids', '1,269,505,717,918', '--corrupt-ids', '1,269,42,717,918',
      '--answer', '5', '--wrong', '9', '--hook', 'z', '--by', 'head_position', '--json']);
    expect(r.code).toBe(0);
    const j = JSON.parse(r.stdout) as { grid: number[][][] };
    expect(j.grid.map((l) => l.map((h) => h.length))).toEqual(Array(3).fill(Array(4).fill(5)));
  });

  it('prints the grid without --json', async () => {
    const r = await runCli(['patch', '--model', MIXTRAL, '--clean-ids', '1,269,505', '--corrupt-ids', '1,42,505',
      '--answer', '5', '--wrong', '9', '--hook', 'z', '--by', 'head']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('patching z by head (1 = restores clean, 0 = no effect)');
    expect(r.stdout).toMatch(/^layer 2 /m);
  });

  const base = ['--model', DEMO, '--clean', '47+38=', '--corrupt', '47+39=', '--answer', '8', '--wrong', '6'];
  it.each([
    [[...base, '--by', 'position'], '--hook is required (resid_pre, attn_out, mlp_out, z)'],
    [[...base, '--hook', 'resid_pre'], '--by is required (position, head, head_position)'],
    [[...base, '--hook', 'resid_mid', '--by', 'position'], '--hook must be one of resid_pre, attn_out, mlp_out, z, got "resid_mid"'],
    [[...base, '--hook', 'resid_pre', '--by', 'head'], '--by head needs --hook z (the only hook with heads), got --hook resid_pre'],
    [['--model', DEMO, '--clean', '47+38=', '--corrupt', '47+389=', '--answer', '8', '--wrong', '6', '--hook', 'z', '--by', 'head'],
      'the clean and corrupted prompts must have the same number of tokens, got 7 and 8'],
    [['--model', DEMO, '--clean', '47+38=', '--corrupt', '47+38=', '--answer', '8', '--wrong', '6', '--hook', 'z', '--by', 'head'],
      'the clean and corrupted prompts give the same logit difference'],
    [['--model', DEMO, '--clean', '47+38=', '--answer', '8', '--wrong', '6', '--hook', 'z', '--by', 'head'], 'give exactly one of --corrupt and --corrupt-ids'],
  ])('bad input %j: one line, exit 2', async (args, message) => {
    const r = await runCli(['patch', ...args]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stderr).toContain(message);
  });
});
