/**
 * What hook points cost: a forward with no hooks, with an empty hooks map, and with a
 * capture-all activation cache (runWithCache, every hook point cloned and kept), timed in
 * one run, interleaved so that machine noise hits all three alike.
 *
 *   npx tsx bench/hooks.ts [--model DIR] [--backend cpu|wasm] [--tokens N] [--runs N]
 *
 * Prints the median time of each and its ratio to the forward with no hooks.
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { runWithCache } from '../src/inspect/activations.js';
import { useBackend, type BackendName } from '../src/kernels/backend.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';

const { values } = parseArgs({
  options: {
    model: { type: 'string', default: 'models/mistral-demo' },
    backend: { type: 'string', default: 'cpu' },
    tokens: { type: 'string', default: '64' },
    runs: { type: 'string', default: '30' },
  },
});

await useBackend(values.backend as BackendName);
const model = Transformer.load(values.model!);
const T = Math.min(Number(values.tokens), model.config.maxPositionEmbeddings ?? Infinity);
const runs = Number(values.runs);
const ids = Array.from({ length: T }, (_, t) => (t === 0 ? 1 : 3 + ((t * 7919) % (model.config.vocabSize - 3))));

const variants: Record<string, () => void> = {
  'no hooks': () => disposeResult(model.forward(ids)),
  'empty hooks map': () => disposeResult(model.forward(ids, { hooks: new Map() })),
  'capture-all cache': () => {
    const { result, cache } = runWithCache(model, ids);
    cache.dispose();
    disposeResult(result);
  },
};

const times: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
for (const run of Object.values(variants)) run(); // warm-up (wasm kernels, allocator)
const before = tf.memory().numTensors;
for (let r = 0; r < runs; r++) {
  for (const [name, run] of Object.entries(variants)) {
    const t0 = performance.now();
    run();
    times[name]!.push(performance.now() - t0);
  }
}
if (tf.memory().numTensors !== before) throw new Error(`leak: ${tf.memory().numTensors - before} tensors`);

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const base = median(times['no hooks']!);
const c = model.config;
console.log(`${values.model} (${c.arch}, ${c.numLayers} layers, hidden ${c.hiddenSize}), ${T} tokens, backend ${values.backend}, ${runs} runs each, interleaved`);
for (const [name, xs] of Object.entries(times)) {
  const m = median(xs);
  console.log(`  ${name.padEnd(18)} median ${m.toFixed(2).padStart(8)} ms   × ${(m / base).toFixed(3)}`);
}
model.dispose();
