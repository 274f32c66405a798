/** The `parity` command's contract: exit codes, JSON keys, per-layer divergence. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { writeSafetensors } from '../src/io/safetensors-writer.js';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile } from './helpers/fixtures.js';

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-parity-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A copy of a golden model folder with its config.json edited. */
function withConfig(model: string, edit: (c: Record<string, unknown>) => void): string {
  const dir = fs.mkdtempSync(path.join(tmp, `${model}-`));
  for (const f of fs.readdirSync(modelDir(model))) fs.copyFileSync(path.join(modelDir(model), f), path.join(dir, f));
  fs.chmodSync(path.join(dir, 'config.json'), 0o644);
  const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
  edit(config);
  fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(config));
  return dir;
}

/** A copy of mistral-tiny whose tensor `name` is scaled by `factor`, in place in the file. */
function withScaledTensor(name: string, factor: number): string {
  const dir = withConfig('mistral-tiny', () => {});
  const file = path.join(dir, 'model.safetensors');
  fs.chmodSync(file, 0o644);
  const st = SafetensorsFile.open(file);
  const { begin, end } = st.info(name);
  st.close();
  const bytes = fs.readFileSync(file);
  const view = new Float32Array(bytes.buffer, bytes.byteOffset + begin, (end - begin) / 4);
  for (let i = 0; i < view.length; i++) view[i] = view[i]! * factor;
  fs.writeFileSync(file, bytes);
  return dir;
}

const parity = (model: string, ref: string, ...extra: string[]) =>
  runCli(['parity', '--model', model, '--reference', refFile(ref), ...extra]);

describe('mistral-ref parity', () => {
  it('passes with exit 0 and prints a table per tensor kind', async () => {
    const r = await parity(modelDir('mistral-tiny'), 'mistral-tiny');
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^logits\s+\d\.\d\de-\d+\s+\S+\s+ok$/m);
    expect(r.stdout).toMatch(/^p0\s+37\s+identical/m);
    expect(r.stdout.trimEnd().endsWith('PASS')).toBe(true);
    expect(r.stderr).toBe('');
  });

  it('--json gives one object with pass, atol, checked and max_abs_diff', async () => {
    const r = await parity(modelDir('mixtral-tiny'), 'mixtral-tiny', '--json', '--backend', 'wasm', '--atol', '4e-5');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.pass).toBe(true);
    expect(report.atol).toBe(4e-5);
    expect(report.backend).toBe('wasm');
    expect(report.checked).toEqual(expect.arrayContaining(['logits', 'embeddings', 'layer_out', 'final_norm',
      'router_logits', 'step_logits', 'generated_ids', 'expert_choices', 'debug.layer0.attn_probs']));
    for (const kind of report.checked.filter((k: string) => k !== 'generated_ids' && k !== 'expert_choices')) {
      expect(report.max_abs_diff[kind]).toBeLessThan(4e-5);
    }
    expect(report.first_divergent_layer).toBeNull();
    expect(report.per_layer).toHaveLength(3);
  });

  it.each([
    ['rope_theta 1e4 → 1e6', (c: Record<string, unknown>) => { c.rope_theta = 1e6; }],
    ['sliding_window 8 → 9', (c: Record<string, unknown>) => { c.sliding_window = 9; }],
    ['sliding_window 8 → null', (c: Record<string, unknown>) => { c.sliding_window = null; }],
    ['rms_norm_eps 1e-5 → 1e-6', (c: Record<string, unknown>) => { c.rms_norm_eps = 1e-6; }],
  ])('fails with exit 1 when the config is changed: %s', async (_label, edit) => {
    const r = await parity(withConfig('mistral-tiny', edit), 'mistral-tiny', '--json');
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.pass).toBe(false);
    expect(report.failures).toContain('logits');
  });

  it('--per-layer names exactly the layer whose weight was corrupted', async () => {
    const dir = withScaledTensor('model.layers.1.self_attn.o_proj.weight', 1.01);
    const r = await parity(dir, 'mistral-tiny', '--per-layer', '--json');
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout);
    expect(report.first_divergent_layer).toBe(1);
    expect(report.per_layer[0]).toBeLessThan(5e-5);
    expect(report.per_layer[1]).toBeGreaterThan(1e-3);
    const human = await parity(dir, 'mistral-tiny', '--per-layer');
    expect(human.stdout).toContain('first layer beyond tolerance: 1');
  });

  it.each([
    [['--reference', refFile('mistral-tiny')], '--model is required'],
    [['--model', modelDir('mistral-tiny')], '--reference is required'],
    [['--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--atol', 'x'], '--atol expects a number'],
    [['--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--backend', 'gpu'], '--backend must be one of'],
    [['--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--bogus'], "Unknown option '--bogus'"],
    [['--model', modelDir('mistral-tiny'), '--reference', path.join(tmp, 'none.json')], 'none.json: not found'],
    [['--model', path.join(tmp, 'missing'), '--reference', refFile('mistral-tiny')], 'not a directory'],
    // The CUDA backend is an optional peer that this checkout does not install.
    [['--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--backend', 'tensorflow'], 'npm install @tensorflow/tfjs-node-gpu@4.22.0'],
  ])('bad input %j exits 2 with one line', async (args, message) => {
    const r = await runCli(['parity', ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toContain(message);
    expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
    expect(r.stdout).toBe('');
  });

  it('accepts a minimal reference of its own making: input ids and logits only (docs/parity.md)', async () => {
    const golden = Reference.open(refFile('mistral-tiny'));
    const p1 = golden.prompts[1]!;
    const logits = golden.tensor(p1.tensors.logits);
    golden.close();
    writeSafetensors(path.join(tmp, 'mine.safetensors'), [{ name: 'x.logits', shape: logits.shape }], 'F32',
      (_name, start, out) => out.set(logits.data.subarray(start, start + out.length)));
    const file = path.join(tmp, 'mine.json');
    fs.writeFileSync(file, JSON.stringify({
      schema: 'mistral-golden-ref/1', tensors_file: 'mine.safetensors',
      prompts: [{ name: 'x', input_ids: p1.input_ids, tensors: { logits: 'x.logits' } }],
    }));
    const r = await runCli(['parity', '--model', modelDir('mistral-tiny-native'), '--reference', file, '--json']);
    expect(r.code).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(report.checked).toEqual(['logits']);
    expect(report.max_abs_diff.logits).toBeLessThan(5e-5);
  });

  it.each([[Infinity, 'Infinity'], [-Infinity, '-Infinity'], [NaN, 'NaN']])('a reference holding %s is bad input (exit 2), not a pass', async (bad, shown) => {
    // One non-finite value among the real logits: before, +Inf made the allowance infinite and any logits passed.
    const golden = Reference.open(refFile('mistral-tiny'));
    const p1 = golden.prompts[1]!;
    const logits = golden.tensor(p1.tensors.logits);
    golden.close();
    const data = logits.data.slice();
    data[7] = bad;
    writeSafetensors(path.join(tmp, 'bad.safetensors'), [{ name: 'x.logits', shape: logits.shape }], 'F32',
      (_name, start, out) => out.set(data.subarray(start, start + out.length)));
    const file = path.join(tmp, 'bad.json');
    fs.writeFileSync(file, JSON.stringify({
      schema: 'mistral-golden-ref/1', tensors_file: 'bad.safetensors',
      prompts: [{ name: 'x', input_ids: p1.input_ids, tensors: { logits: 'x.logits' } }],
    }));
    const r = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mistral-ref parity: ${path.join(tmp, 'bad.safetensors')} [x.logits]: reference tensor holds ${shown} at element 7; reference values must be finite\n`);
  });

  it('a reference for another model is a clear exit-2 error, not a crash', async () => {
    const r = await parity(modelDir('mistral-nowindow'), 'mistral-demo');
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('reference is for another model: vocab_size 99 in the reference, 1000 in');
  });
});
