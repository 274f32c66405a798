/**
 * Gradients through the forward, checked against central finite differences on the golden
 * models, on cpu and wasm; attribution patching is gradient × activation difference, in the
 * layout of patchSweep; the wasm UnsortedSegmentSum agrees with the cpu backend's.
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { disposeResult, runWithCache } from '../src/inspect/activations.js';
import { activationGradients, attributionPatch } from '../src/inspect/gradients.js';
import { logitDiffMetric, metricValue, patchSweep } from '../src/inspect/sweep.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { modelDir, withModel } from './helpers/fixtures.js';

const CLEAN = [1, 269, 505, 717, 918, 977, 694];
const CORRUPT = [1, 269, 505, 42, 918, 977, 694];
const metric = logitDiffMetric(5, 9);

/** The metric of CORRUPT with `name` moved by `delta`. */
function metricAt(m: Transformer, name: string, delta: tf.Tensor): number {
  const r = m.forward(CORRUPT, { hooks: new Map([[name, (t: tf.Tensor) => tf.add(t, delta)]]) });
  try {
    return metricValue(metric, r.logits);
  } finally {
    disposeResult(r);
  }
}

describe.each(['cpu', 'wasm'] as const)('on %s', (backend) => {
  it.each([
    ['mistral-tiny', 'blocks.1.hook_resid_pre'],
    ['mistral-tiny', 'blocks.0.attn.hook_z'],
    ['mixtral-tiny', 'blocks.1.hook_resid_pre'],
    ['mixtral-tiny', 'blocks.2.hook_mlp_out'],
  ])('%s, %s: the gradient matches central finite differences', async (name, hook) => {
    await withModel(name, { backend }, (m) => {
      const [g] = activationGradients(m, CORRUPT, metric, [hook]);
      // Directions: the clean − corrupt difference, and single elements (the largest gradients).
      const { result, cache } = runWithCache(m, CLEAN, { names: [hook] });
      const { result: r2, cache: c2 } = runWithCache(m, CORRUPT, { names: [hook] });
      const diff = tf.sub(cache.get(hook), c2.get(hook));
      const gData = g!.dataSync();
      const top = Array.from(gData.keys()).sort((a, b) => Math.abs(gData[b]!) - Math.abs(gData[a]!)).slice(0, 3);
      const directions = tf.tidy(() => [tf.div(diff, tf.norm(diff)), ...top.map((i) => tf.reshape(tf.oneHot(i, g!.size), g!.shape).toFloat())]);
      // h = 1e-2: float32 rounding of a metric of size ~10 is ~1e-6, i.e. ~1e-4 after dividing
      // by 2h, while the O(h²) truncation error stays below that for these smooth functions.
      const h = 1e-2;
      for (const d of directions) {
        const analytic = tf.tidy(() => tf.sum(tf.mul(g!, d)).dataSync()[0]!);
        const plus = tf.mul(d, h);
        const minus = tf.mul(d, -h);
        const numeric = (metricAt(m, hook, plus) - metricAt(m, hook, minus)) / (2 * h);
        tf.dispose([plus, minus]);
        expect(Math.abs(numeric - analytic), `${analytic} vs ${numeric}`).toBeLessThan(2e-3 * Math.max(1, Math.abs(analytic)));
      }
      tf.dispose([g!, diff, ...directions]);
      cache.dispose(); c2.dispose();
      disposeResult(result); disposeResult(r2);
    });
  });
});

describe('attributionPatch', () => {
  it('is Σ gradient × (clean − corrupt) over each piece, in patchSweep\'s layout, and refuses the simd path', async () => {
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      const est = attributionPatch(m, CLEAN, CORRUPT, metric, { hook: 'resid_pre', by: 'position' });
      const real = patchSweep(m, CLEAN, CORRUPT, metric, { hook: 'resid_pre', by: 'position' });
      expect([est.clean, est.corrupt]).toEqual([real.clean, real.corrupt]);
      const g = est.grid as number[][];
      expect(g.map((r) => r.length)).toEqual((real.grid as number[][]).map((r) => r.length));
      // No difference, no estimate: positions other than 3 are equal in layer 0.
      g[0]!.forEach((x, p) => { if (p !== 3) expect(x).toBe(0); });
      // By hand, layer 1 position 3.
      const name = 'blocks.1.hook_resid_pre';
      const [grad] = activationGradients(m, CORRUPT, metric, [name]);
      const a = runWithCache(m, CLEAN, { names: [name] });
      const b = runWithCache(m, CORRUPT, { names: [name] });
      const byHand = tf.tidy(() => tf.sum(tf.gather(tf.mul(grad!, tf.sub(a.cache.get(name), b.cache.get(name))), 3)).dataSync()[0]!);
      expect((est.raw as number[][])[1]![3]! - est.corrupt).toBeCloseTo(byHand, 4);
      const heads = attributionPatch(m, CLEAN, CORRUPT, metric, { hook: 'z', by: 'head_position' });
      expect((heads.grid as number[][][]).map((l) => l.map((r) => r.length))).toEqual(Array(3).fill(Array(4).fill(7)));
      tf.dispose(grad!);
      for (const r of [a, b]) { r.cache.dispose(); disposeResult(r.result); }
    });
    await useBackend('cpu');
    const resident = Transformer.load(modelDir('mistral-tiny'), { weights: 'resident' });
    expect(() => attributionPatch(resident, CLEAN, CORRUPT, metric, { hook: 'z', by: 'head' })).toThrow('gradients need the tfjs path');
    resident.dispose();
  });
});

describe.each(['cpu', 'wasm'] as const)('attributionPatch on %s', (backend) => {
  it('mixtral-tiny: z by head_position estimates every cell; cells before the difference are 0', async () => {
    await withModel('mixtral-tiny', { backend }, (m) => {
      const est = attributionPatch(m, CLEAN, CORRUPT, metric, { hook: 'z', by: 'head_position' });
      const g = est.grid as number[][][];
      expect(g.map((l) => l.map((r) => r.length))).toEqual(Array(3).fill(Array(4).fill(7)));
      for (const heads of g) for (const row of heads) for (let p = 0; p < 3; p++) expect(row[p]).toBe(0);
      expect(g.flat(2).every(Number.isFinite)).toBe(true);
      expect(g.flat(2).some((x) => x !== 0)).toBe(true);
    });
  });
});

describe('UnsortedSegmentSum on wasm', () => {
  it('equals the cpu backend\'s, ids outside the range dropped', async () => {
    const x = [[1, 2], [3, 4], [5, 6], [7, 8]];
    const ids = [2, 0, 2, -1];
    const run = () => tf.tidy(() => Array.from(tf.unsortedSegmentSum(tf.tensor2d(x), tf.tensor1d(ids, 'int32'), 3).dataSync()));
    await useBackend('cpu');
    const before = tf.memory().numTensors;
    const cpu = run();
    expect(tf.memory().numTensors).toBe(before);
    await useBackend('wasm');
    expect(run()).toEqual(cpu);
    expect(cpu).toEqual([3, 4, 0, 0, 6, 8]);
  });
});
