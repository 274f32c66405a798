/**
 * Peak memory of a full-width forward in stream mode, measured and extrapolated to the
 * full layer count.
 *
 *   node --import tsx bench/memory.ts [--preset mistral-7b-v0.1] [--layers 2,4] [--tokens 4]
 *                                     [--backend wasm] [--weights stream] [--dtype bf16] [--dir DIR]
 *
 * For each layer count N it synthesizes the preset at full width with N layers (bf16,
 * sharded like the real one) into a temporary folder, runs one forward of a `--tokens`
 * prompt in a fresh child process, reads that process's peak RSS
 * (`process.resourceUsage().maxRSS`), and deletes the folder. Stream mode holds one layer
 * at a time, so the peak should not grow with N: the per-layer cost is
 * (peak(N₂) − peak(N₁)) / (N₂ − N₁), and the full model's figure is
 * peak(N₂) + (L − N₂) · per-layer cost.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { forwardWithRouting } from '../src/inspect/routing.js';

const { values } = parseArgs({
  options: {
    preset: { type: 'string', default: 'mistral-7b-v0.1' },
    layers: { type: 'string', default: '2,4' },
    tokens: { type: 'string', default: '4' },
    backend: { type: 'string', default: 'wasm' },
    weights: { type: 'string', default: 'stream' },
    dtype: { type: 'string', default: 'bf16' },
    dir: { type: 'string' },
    child: { type: 'string' }, // internal: run one forward on this checkpoint and print JSON
  },
});

const GiB = 2 ** 30;

if (values.child !== undefined) {
  await child(values.child);
} else {
  await parent();
}

/** One forward in this process; prints what it measured as one JSON line. */
async function child(dir: string): Promise<void> {
  const { useBackend } = await import('../src/kernels/backend.js');
  const { Transformer, disposeResult } = await import('../src/model/transformer.js');
  const tf = await import('@tensorflow/tfjs-core');
  await useBackend(values.backend as 'wasm' | 'cpu');
  const t0 = performance.now();
  const model = Transformer.load(dir, { weights: values.weights as 'stream' | 'eager' });
  const t1 = performance.now();
  const T = Number(values.tokens);
  const ids = Array.from({ length: T }, (_, t) => (1 + 37 * t) % model.config.vocabSize);
  const { result: r, routing } = forwardWithRouting(model, ids, { lastOnly: true });
  const logits = r.logits.dataSync();
  const t2 = performance.now();
  const finite = Array.from(logits).every(Number.isFinite);
  // Mixtral: how many distinct experts each layer read (the prompt's tokens route to these).
  const expertsRead = model.config.numExperts === null ? undefined : routing.map((l) => new Set(l.experts).size);
  disposeResult(r);
  model.dispose();
  console.log(JSON.stringify({
    layers: model.config.numLayers,
    maxRssBytes: process.resourceUsage().maxRSS * 1024, // maxRSS is in KiB
    loadSeconds: (t1 - t0) / 1000,
    forwardSeconds: (t2 - t1) / 1000,
    finite,
    tensorsLeft: tf.memory().numTensors,
    ...(expertsRead ? { expertsRead } : {}),
  }));
}

async function parent(): Promise<void> {
  const { planSynth, synthesize } = await import('../src/cli/synthetic.js');
  type Preset = Parameters<typeof planSynth>[0]['preset'];
  const preset = values.preset as Preset;
  const counts = values.layers!.split(',').map(Number);
  const root = fs.mkdtempSync(path.join(values.dir ?? os.tmpdir(), 'mistral-ref-memory-'));
  const self = fileURLToPath(import.meta.url);
  const results: Array<{ layers: number; maxRssBytes: number; loadSeconds: number; forwardSeconds: number; finite: boolean;
    tensorsLeft: number; expertsRead?: number[]; synthSeconds: number; diskBytes: number }> = [];
  const full = planSynth({ preset }).config.numLayers;
  console.log(`memory: ${preset}, ${values.dtype}, ${values.weights} mode, ${values.backend} backend, ${values.tokens}-token prompt, layers ${counts.join(' and ')} of ${full}`);
  try {
    for (const n of counts) {
      const dir = path.join(root, `layers-${n}`);
      const plan = planSynth({ preset, layers: n, dtype: values.dtype === 'f32' ? 'F32' : 'BF16' });
      const s0 = performance.now();
      synthesize(plan, dir);
      const synthSeconds = (performance.now() - s0) / 1000;
      const diskBytes = plan.shards.reduce((a, s) => a + s.bytes, 0);
      const run = spawnSync(process.execPath, ['--import', 'tsx', self, '--child', dir,
        '--tokens', values.tokens!, '--backend', values.backend!, '--weights', values.weights!], { encoding: 'utf8', maxBuffer: 1 << 24 });
      fs.rmSync(dir, { recursive: true, force: true });
      if (run.status !== 0) throw new Error(`child for ${n} layers failed (${run.status}): ${run.stderr}`);
      const line = run.stdout.trim().split('\n').at(-1)!;
      const r = { ...JSON.parse(line), synthSeconds, diskBytes };
      results.push(r);
      console.log(`  ${String(n).padStart(2)} layers: peak RSS ${(r.maxRssBytes / GiB).toFixed(2)} GiB  ` +
        `(checkpoint ${(diskBytes / 1e9).toFixed(2)} GB written in ${synthSeconds.toFixed(0)} s; load ${r.loadSeconds.toFixed(2)} s, ` +
        `forward ${r.forwardSeconds.toFixed(1)} s, logits finite: ${r.finite}, tensors left: ${r.tensorsLeft}` +
        (r.expertsRead ? `, experts read per layer: ${r.expertsRead.join(' ')}` : '') + ')');
    }
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
  if (results.length >= 2) {
    const a = results.at(-2)!;
    const b = results.at(-1)!;
    const perLayer = (b.maxRssBytes - a.maxRssBytes) / (b.layers - a.layers);
    const extrapolated = b.maxRssBytes + (full - b.layers) * Math.max(0, perLayer);
    console.log(`  per-layer cost: ${(perLayer / 2 ** 20).toFixed(0)} MiB (peak(${b.layers}) − peak(${a.layers})) / ${b.layers - a.layers}`);
    console.log(`  extrapolated to ${full} layers: peak RSS ${(extrapolated / GiB).toFixed(2)} GiB` +
      (perLayer < 0 ? ' (negative per-layer cost counted as 0)' : ''));
    console.log(JSON.stringify({ preset, dtype: values.dtype, weights: values.weights, backend: values.backend, tokens: Number(values.tokens), results, perLayerBytes: perLayer, extrapolatedBytes: extrapolated, fullLayers: full }));
  }
}
