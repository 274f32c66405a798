/**
 * Attribution patching (Nanda 2023; Syed et al. 2023): a first-order estimate of every
 * patch of a sweep from one forward and one backward pass of the corrupted prompt.
 *
 *   metric(patched) − metric(corrupt)  ≈  Σ_piece  ∂metric/∂act · (act_clean − act_corrupt)
 *
 * The gradient is taken at the corrupted run by adding a zero tensor to each layer's
 * activation through a hook and differentiating the metric with respect to it (tf.grads).
 * It needs the tfjs path (`--weights eager` or `stream`): the simd kernels compute outside
 * tfjs and have no gradients.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../model/errors.js';
import type { HookFn } from '../model/hooks.js';
import type { Transformer } from '../model/transformer.js';
import { disposeResult, runWithCache } from './activations.js';
import { checkSweep, metricValue, pieceMask, sweepHookName, sweepPieces, sweepResult, type Metric, type SweepBy, type SweepHook, type SweepResult } from './sweep.js';

/** Throws unless the model's forward can be differentiated. */
export function checkDifferentiable(model: Transformer): void {
  if (model.weights.residency === 'resident') {
    throw new InputError('gradients need the tfjs path: load the model with weights "eager" or "stream" (--weights eager); ' +
      'the simd kernels of resident weights compute outside tfjs');
  }
}

/**
 * ∂metric/∂activation at each layer's `hook` for `ids`: one tensor per layer, shaped like
 * the activation. The caller disposes them.
 */
export function activationGradients(model: Transformer, ids: readonly number[], metric: Metric, names: readonly string[]): tf.Tensor[] {
  checkDifferentiable(model);
  const shapes = runWithCache(model, ids, { names: [...names] });
  const zeros = names.map((n) => tf.zerosLike(shapes.cache.get(n)));
  shapes.cache.dispose();
  disposeResult(shapes.result);
  try {
    return tf.grads((...deltas: tf.Tensor[]) => {
      const hooks = new Map<string, HookFn>(names.map((n, i) => [n, (t) => tf.add(t, deltas[i]!)]));
      return metric(model.forward(ids, { hooks }).logits);
    })(zeros);
  } finally {
    tf.dispose(zeros);
  }
}

/**
 * The attribution-patching estimate of `patchSweep` (same layout): raw holds the estimated
 * patched metrics, grid the estimate normalised by clean − corrupt.
 */
export function attributionPatch(model: Transformer, clean: readonly number[], corrupt: readonly number[], metric: Metric,
  opts: { hook: SweepHook; by: SweepBy }): SweepResult {
  const { hook, by } = opts;
  checkSweep(clean, corrupt, hook, by);
  checkDifferentiable(model);
  const c = model.config;
  const T = clean.length;
  const names = Array.from({ length: c.numLayers }, (_, l) => sweepHookName(hook, l));
  const cleanRun = runWithCache(model, clean, { names });
  const corruptRun = runWithCache(model, corrupt, { names });
  try {
    const cleanMetric = metricValue(metric, cleanRun.result.logits);
    const corruptMetric = metricValue(metric, corruptRun.result.logits);
    const grads = activationGradients(model, corrupt, metric, names);
    const pieces = sweepPieces(by, c.numHeads, T);
    const raw = names.map((name, l) => tf.tidy(() => {
      const g = grads[l]!;
      const effect = tf.mul(g, tf.sub(cleanRun.cache.get(name), corruptRun.cache.get(name))); // per element
      const sums = pieces.map((piece) => tf.sum(tf.where(pieceMask(g.shape, name, piece), effect, tf.zerosLike(effect))));
      return Array.from(tf.stack(sums).dataSync(), (d) => corruptMetric + d);
    }));
    tf.dispose(grads);
    return sweepResult(hook, by, cleanMetric, corruptMetric, raw, c.numHeads, T, corruptMetric);
  } finally {
    for (const r of [cleanRun, corruptRun]) {
      r.cache.dispose();
      disposeResult(r.result);
    }
  }
}
