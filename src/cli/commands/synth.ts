import * as fs from 'node:fs';
import { PRESET_NAMES, PRESETS, planSynth, synthSteps, type PresetName, type SynthOverrides, type SynthPlan } from '../synthetic.js';
import { number, oneOf, parse, required } from '../args.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';
import { writeOutputDir } from '../output-dir.js';

export const summary = 'write a synthetic full-size checkpoint (Mistral 7B, Mixtral 8x7B shapes)';

export const usage = `usage: mistral-ref synth --preset NAME --out DIR [options]

Writes an HF-layout checkpoint with the exact published config and tensor shapes of a
model and seeded random weights, sharded like the published repository
(model-0000k-of-0000n.safetensors + model.safetensors.index.json; one model.safetensors
when it fits in one shard). Written streaming: memory stays at a few MB. Weights are
uniform with variance 1/fan_in, so activations stay finite through every layer.

  --preset NAME          ${PRESET_NAMES.join(', ')}
  --out DIR              output folder (created; must be absent or empty). Written into
                         DIR.partial, renamed to DIR when complete; an interrupted run
                         removes it
  --layers N             decoder layers (default: all, 32); the config says N
  --dtype DTYPE          bf16 (default, as published) or f32
  --seed S               integer seed (default 0); a tensor's values depend on seed and name only
  --dry-run              print the files and sizes, write nothing

For tests and experiments (the config is then no longer the published one):
  --hidden N  --intermediate N  --vocab N  --heads N  --kv-heads N  --experts N
  --shard-size BYTES     shard size limit (default: the published one, 10e9 or 5e9)

exit: 0 written, 2 bad options or no room on disk
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    preset: { type: 'string' },
    out: { type: 'string' },
    layers: { type: 'string' },
    dtype: { type: 'string' },
    seed: { type: 'string' },
    'dry-run': { type: 'boolean' },
    hidden: { type: 'string' },
    intermediate: { type: 'string' },
    vocab: { type: 'string' },
    heads: { type: 'string' },
    'kv-heads': { type: 'string' },
    experts: { type: 'string' },
    'shard-size': { type: 'string' },
  });
  const preset = oneOf<PresetName>(required(values.preset, '--preset'), '--preset', PRESET_NAMES, 'mistral-7b-v0.1');
  const dryRun = values['dry-run'] === true;
  const out = dryRun ? values.out ?? '' : required(values.out, '--out');
  // Layers and experts are enumerated tensor by tensor: bounded well above any real model.
  const count = (flag: 'hidden' | 'intermediate' | 'vocab' | 'heads' | 'kv-heads' | 'experts' | 'layers', max = 1 << 24) => {
    const v = values[flag];
    return v === undefined ? undefined : number(v, `--${flag}`, 0, { min: 1, integer: true, max });
  };
  const overrides: SynthOverrides = Object.fromEntries(Object.entries({
    hidden_size: count('hidden'),
    intermediate_size: count('intermediate'),
    vocab_size: count('vocab'),
    num_attention_heads: count('heads'),
    num_key_value_heads: count('kv-heads'),
    num_local_experts: count('experts', 1024),
  }).filter(([, v]) => v !== undefined));
  if (overrides.num_local_experts !== undefined && preset !== 'mixtral-8x7b') {
    throw new UsageError('--experts applies to the mixtral-8x7b preset only');
  }
  const plan = planSynth({
    preset,
    layers: count('layers', 1024),
    dtype: oneOf(values.dtype, '--dtype', ['bf16', 'f32'], 'bf16') === 'bf16' ? 'BF16' : 'F32',
    seed: number(values.seed, '--seed', 0, { integer: true, min: 0, max: 2 ** 32 - 1 }),
    overrides,
    maxShardBytes: values['shard-size'] === undefined ? undefined : number(values['shard-size'], '--shard-size', 0, { min: 1 }),
  });

  const bytes = plan.shards.reduce((n, s) => n + s.bytes, 0);
  const describe = describePlan(preset, plan, bytes);
  if (dryRun) {
    io.stdout(describe + plan.shards.map((s) => `  ${s.file}  ${gb(s.bytes)}  ${s.tensors.length} tensors\n`).join(''));
    return 0;
  }
  const started = Date.now();
  // Written into <out>.partial and renamed when complete: an interrupted or failed run leaves
  // nothing behind, and a second run into the same folder fails while this one writes.
  await writeOutputDir(out, '--out', { replace: 'empty', what: 'a checkpoint' }, async (tmp) => {
    checkRoom(tmp, out, bytes);
    let chunks = 0;
    for (const _ of synthSteps(plan, tmp, (p) => {
      if (io.interactive) {
        io.stderr(`synth: ${p.file} (${p.shard}/${p.shards})  ${gb(p.written)} of ${gb(p.total)}  ${((Date.now() - started) / 1000).toFixed(0)} s\n`);
      }
    })) {
      // Every few chunks, let the event loop run: Ctrl-C then removes the partial folder.
      if (++chunks % 8 === 0) await new Promise<void>((resolve) => setImmediate(resolve));
    }
  });
  io.stdout(describe + `wrote ${plan.shards.length} file(s), ${gb(bytes)}, to ${out} in ${((Date.now() - started) / 1000).toFixed(1)} s\n`);
  return 0;
}

function describePlan(preset: PresetName, plan: SynthPlan, bytes: number): string {
  const c = plan.config;
  const shape = `${c.numLayers} layers, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize}, ` +
    `${c.numHeads} heads / ${c.numKvHeads} kv, vocab ${c.vocabSize}` +
    (c.numExperts === null ? '' : `, ${c.numExperts} experts top-${c.numExpertsPerTok}`);
  return `preset      ${preset} (${PRESETS[preset].source})\n` +
    `shape       ${shape}\n` +
    `parameters  ${plan.parameters.toLocaleString('en-US')} (${plan.dtype}, seed ${plan.seed})\n` +
    `files       ${plan.shards.length}, ${gb(bytes)}\n`;
}

/** Refuses to start a write that cannot finish (a 93 GB Mixtral on a small disk). */
function checkRoom(dir: string, out: string, bytes: number): void {
  const st = fs.statfsSync(dir);
  const free = st.bavail * st.bsize;
  if (bytes > free) {
    throw new UsageError(`${out}: needs ${gb(bytes)} but only ${gb(free)} is free on that disk (try --layers N)`);
  }
}

function gb(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : `${(n / 1e6).toFixed(1)} MB`;
}
