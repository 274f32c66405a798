/** `mistral-ref trace`: the per-layer table and the pictures, written to --out. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { TraceReport } from '../src/inspect/trace.js';
import { useBackend } from '../src/kernels/backend.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';
import { modelDir } from './helpers/fixtures.js';
import { runWithCache } from '../src/inspect/activations.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-trace-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));
beforeAll(() => useBackend('cpu'));

const IDS = [1, 269, 505, 717, 918, 977, 694, 348, 713];
const PNG_MAGIC = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];
const readJson = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'layers.json'), 'utf8')) as TraceReport;

/** The --prompt test needs the tokenizer, which another part of the project provides. */
describe('mistral-ref trace', () => {
  it('dense model: prints the table and writes layers.md, layers.json, attention and logit-lens pictures', async () => {
    const out = path.join(tmp, 'dense');
    const before = tf.memory().numTensors;
    const r = await runCli(['trace', '--model', modelDir('mistral-tiny'), '--ids', IDS.join(','), '--out', out]);
    expect(tf.memory().numTensors).toBe(before);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('| layer | ‖resid‖ | ‖attn_out‖ | ‖mlp_out‖ | logit lens top-5 (last position) | p(final) | attn entropy per head (nats) |');
    const files = ['layers.md', 'layers.json', ...[0, 1, 2].flatMap((l) => [`attention-layer-${l}.svg`, `attention-layer-${l}.png`]),
      'logit-lens.svg', 'logit-lens.png'];
    expect(fs.readdirSync(out).sort()).toEqual(files.sort());
    expect(r.stdout).toContain(`wrote ${files.length} files to ${out}`);
    for (const f of files.filter((x) => x.endsWith('.png'))) {
      expect(Array.from(fs.readFileSync(path.join(out, f)).subarray(0, 8)), f).toEqual(PNG_MAGIC);
    }
    const md = fs.readFileSync(path.join(out, 'layers.md'), 'utf8');
    expect(md).toContain('![attention-layer-2](attention-layer-2.svg)');
    expect(md.split('\n').filter((l) => /^\| [0-9]+ \|/.test(l))).toHaveLength(3);

    const report = readJson(out);
    expect(report.ids).toEqual(IDS);
    expect(report.tokens).toEqual(IDS.map(String)); // no tokenizer in this folder: ids
    expect(report.layers).toHaveLength(3);
    expect(report.logit_lens.map((r) => r.label)).toEqual(['embed', '0', '1', '2']);
    for (const l of report.layers) {
      expect(l.attn_entropy).toHaveLength(4);
      expect(l.lens_top).toHaveLength(5);
      expect(l.resid_norm).toBeGreaterThan(0);
      expect(l.expert_load).toBeUndefined();
    }
    // The prediction is the model's own argmax, and the last lens row is that prediction;
    // resid_norm is the mean over positions of each layer output row's L2 norm.
    const model = Transformer.load(modelDir('mistral-tiny'));
    const { result: res, cache } = runWithCache(model, IDS, { names: (n) => n.endsWith('hook_resid_post') });
    const argmax = tf.tidy(() => tf.argMax(tf.slice(res.logits, [IDS.length - 1, 0], [1, -1]), 1).dataSync()[0]!);
    const norms = Array.from({ length: model.config.numLayers }, (_, l) => {
      const rows = cache.get(`blocks.${l}.hook_resid_post`).arraySync() as number[][];
      return rows.reduce((a, row) => a + Math.hypot(...row), 0) / rows.length;
    });
    cache.dispose();
    disposeResult(res);
    model.dispose();
    expect(report.prediction[0]!.id).toBe(argmax);
    expect(report.layers[2]!.lens_top[0]!.id).toBe(argmax);
    expect(report.layers[2]!.final_token_prob).toBe(report.prediction[0]!.prob);
    report.layers.forEach((l, i) => expect(l.resid_norm).toBeCloseTo(norms[i]!, 4));
  });

  it('Mixtral: router picture and expert load; --layers, --top-k and --no-png', async () => {
    const out = path.join(tmp, 'moe');
    const r = await runCli(['trace', '--model', modelDir('mixtral-tiny'), '--ids', IDS.join(','), '--out', out,
      '--layers', '1', '--top-k', '3', '--no-png']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['attention-layer-1.svg', 'layers.json', 'layers.md', 'logit-lens.svg', 'router.svg']);
    expect(r.stdout).toContain('expert load (tokens)');
    const report = readJson(out);
    for (const l of report.layers) {
      expect(l.lens_top).toHaveLength(3);
      expect(l.expert_load).toHaveLength(4);
      expect(l.expert_load!.reduce((a, b) => a + b, 0)).toBe(IDS.length * 2);
    }
    expect(report.routing).toHaveLength(3);
    expect(report.routing![0]).toHaveLength(IDS.length);
    const svg = fs.readFileSync(path.join(out, 'router.svg'), 'utf8');
    for (const l of [0, 1, 2]) expect(svg).toContain(`>layer ${l}</text>`);
  });

  it('--prompt encodes with the model folder\'s tokenizer (BOS first) and labels with its pieces', async () => {
    const out = path.join(tmp, 'prompt');
    const r = await runCli(['trace', '--model', modelDir('mistral-demo'), '--prompt', '47+38=', '--out', out, '--no-png']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    const report = readJson(out);
    expect(report.ids).toEqual([1, 24, 27, 15, 23, 28, 33]);
    expect(report.tokens).toEqual(['<s>', '4', '7', '+', '3', '8', '=']);
    expect(report.prediction[0]!.piece).toBe('8'); // 47 + 38 = 85
    expect(fs.readFileSync(path.join(out, 'logit-lens.svg'), 'utf8')).toContain('>6 =</text>');
  });

  it('--no-bos encodes without BOS; --ids on a folder with a tokenizer labels with its pieces', async () => {
    const r = await runCli(['trace', '--model', modelDir('mistral-demo'), '--prompt', '1 2', '--no-bos', '--out', path.join(tmp, 'nobos'), '--no-png']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('3 tokens: 1 ␣ 2');
    const s = await runCli(['trace', '--model', modelDir('mistral-demo'), '--ids', '1,24,27', '--out', path.join(tmp, 'ids'), '--no-png']);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain('3 tokens: <s> 4 7');
  });

  it.each([
    [['--model', 'M', '--out', 'O'], 'give exactly one of --ids and --prompt'],
    [['--model', 'M', '--out', 'O', '--ids', '1', '--prompt', 'x'], 'give exactly one of --ids and --prompt'],
    [['--model', 'M', '--ids', '1'], '--out is required'],
    [['--model', 'M', '--out', 'O', '--ids', '1', '--top-k', '0'], '--top-k expects an integer ≥ 1 and ≤ 100, got "0"'],
    [['--model', 'M', '--out', 'O', '--ids', '1,x'], '--ids expects comma-separated non-negative integers, got "1,x"'],
    [['--model', 'M', '--out', 'O', '--ids', '1,5000'], 'token id 5000 at index 1 is outside the vocabulary [0, 1000)'],
    [['--model', 'M', '--out', 'O', '--ids', '1', '--layers', '0,3'], '--layers: layer 3 does not exist (the model has 3)'],
    [['--model', 'M', '--out', 'O', '--prompt', 'hi'], `--prompt needs a tokenizer in M (tokenizer.model.v*, tokenizer.model or tokenizer.json); give --ids instead`],
  ])('bad input %j: one line, exit 2', async (args, message) => {
    const dir = modelDir('mistral-tiny');
    const argv = args.map((a) => (a === 'M' ? dir : a === 'O' ? path.join(tmp, 'never') : a));
    const before = tf.memory().numTensors;
    const r = await runCli(['trace', ...argv]);
    expect(r.stderr).toBe(`mistral-ref trace: ${message.replace(' M ', ` ${dir} `)}\n`);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(tf.memory().numTensors).toBe(before);
    expect(fs.existsSync(path.join(tmp, 'never'))).toBe(false);
  });

  it('--backend wasm gives the same table as cpu (same experts and lens tokens, norms within float noise)', async () => {
    const run = async (backend: string) => {
      const out = path.join(tmp, `backend-${backend}`);
      const r = await runCli(['trace', '--model', modelDir('mixtral-tiny'), '--ids', IDS.join(','), '--out', out, '--no-png', '--backend', backend]);
      expect(r.code).toBe(0);
      return readJson(out);
    };
    try {
      const [cpu, wasm] = [await run('cpu'), await run('wasm')];
      expect(wasm.backend).toBe('wasm');
      expect(wasm.routing!.map((l) => l.map((t) => t.experts))).toEqual(cpu.routing!.map((l) => l.map((t) => t.experts)));
      expect(wasm.logit_lens.map((r) => r.top1)).toEqual(cpu.logit_lens.map((r) => r.top1));
      wasm.layers.forEach((l, i) => {
        expect(l.expert_load).toEqual(cpu.layers[i]!.expert_load);
        expect(Math.abs(l.resid_norm - cpu.layers[i]!.resid_norm)).toBeLessThan(1e-4);
        l.attn_entropy.forEach((h, j) => expect(Math.abs(h - cpu.layers[i]!.attn_entropy[j]!)).toBeLessThan(1e-4));
      });
    } finally {
      await useBackend('cpu');
    }
  });

  it('--help describes the options', async () => {
    const r = await runCli(['trace', '--help']);
    expect(r.code).toBe(0);
    for (const flag of ['--ids', '--prompt', '--out', '--top-k', '--layers', '--no-png', '--backend']) expect(r.stdout).toContain(flag);
  });
});
