/**
 * Attribution: the residual stream is a sum, so what reaches the logits can be split into
 * what each part wrote. With the final RMSNorm's divisor held at its value in the run
 * (`ln_final.hook_scale`), the norm is linear, and
 *
 *   logit(A) − logit(B) = Σ_parts  (part / scale ⊙ w_final) · (W_U[:, A] − W_U[:, B])
 *
 * over parts = the embedding, every head's output (`attn.hook_result`) and every MLP /
 * mixture output (`hook_mlp_out`) at that position. The parts sum to the model's logit
 * difference up to float32 rounding.
 *
 *   const { result, cache } = runWithCache(model, ids, { names: attributionHookNames(model.config) });
 *   const { labels, stack } = stackHeadResults(cache, model.config.numLayers);  // [layers·heads, T, hidden]
 *   const attrs = logitAttrs(model, applyLnToStack(model, stack, cache), 8, 7); // [layers·heads, T]
 */
import * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../model/config.js';
import { InputError } from '../model/errors.js';
import { disposeResult, type Transformer } from '../model/transformer.js';
import { ActivationCache, runWithCache } from './activations.js';
import { unembedRows } from './weights.js';

/** Labelled components of the residual stream: stack [components, T, hidden]. */
export interface ResidStack {
  readonly labels: string[];
  readonly stack: tf.Tensor3D;
}

/** The hook names every function here reads (hook_result and hook_scale are opt-in). */
export function attributionHookNames(c: ModelConfig): string[] {
  const names = ['hook_embed', 'ln_final.hook_scale', 'hook_logits'];
  for (let l = 0; l < c.numLayers; l++) {
    names.push(`blocks.${l}.hook_resid_pre`, `blocks.${l}.attn.hook_result`, `blocks.${l}.hook_attn_out`, `blocks.${l}.hook_mlp_out`);
  }
  names.push(`blocks.${c.numLayers - 1}.hook_resid_post`);
  return names;
}

function stackOf(cache: ActivationCache, names: readonly string[], labels: readonly string[]): ResidStack {
  return { labels: [...labels], stack: tf.stack(names.map((n) => cache.get(n))) as tf.Tensor3D };
}

/**
 * The residual stream as the sum of what wrote it: the embedding, then each layer's
 * attention and MLP (or mixture) outputs. stack: [1 + 2·layers, T, hidden]; their sum is
 * the last layer's resid_post.
 */
export function decomposeResid(cache: ActivationCache, numLayers: number): ResidStack {
  const names = ['hook_embed'];
  const labels = ['embed'];
  for (let l = 0; l < numLayers; l++) {
    names.push(`blocks.${l}.hook_attn_out`, `blocks.${l}.hook_mlp_out`);
    labels.push(`blocks.${l}.attn`, `blocks.${l}.mlp`);
  }
  return stackOf(cache, names, labels);
}

/**
 * The residual stream as it accumulates: what enters each layer, then the final output.
 * stack: [layers + 1, T, hidden] (for the logit lens, or attribution by depth).
 */
export function accumulatedResid(cache: ActivationCache, numLayers: number): ResidStack {
  const names = Array.from({ length: numLayers }, (_, l) => `blocks.${l}.hook_resid_pre`);
  names.push(`blocks.${numLayers - 1}.hook_resid_post`);
  return stackOf(cache, names, names);
}

/**
 * Every head's output (`attn.hook_result`, opt-in: cache it by name) as one stack:
 * [layers·heads, T, hidden], labelled `blocks.{l}.attn.head.{h}`.
 */
export function stackHeadResults(cache: ActivationCache, numLayers: number): ResidStack {
  const labels: string[] = [];
  const parts: tf.Tensor[] = [];
  return tf.tidy(() => {
    for (let l = 0; l < numLayers; l++) {
      const r = cache.get(`blocks.${l}.attn.hook_result`); // [T, heads, hidden]
      const H = r.shape[1]!;
      parts.push(tf.transpose(r, [1, 0, 2])); // [heads, T, hidden]
      for (let h = 0; h < H; h++) labels.push(`blocks.${l}.attn.head.${h}`);
    }
    return { labels, stack: tf.concat(parts, 0) as tf.Tensor3D };
  });
}

/**
 * The final RMSNorm applied to each component, with the divisor the run itself used
 * (`ln_final.hook_scale`, [T, 1]), so components stay additive: [n, T, hidden] → [n, T, hidden].
 * A new tensor; the caller disposes it.
 */
export function applyLnToStack(model: Transformer, stack: tf.Tensor3D, cache: ActivationCache): tf.Tensor3D {
  const scale = cache.get('ln_final.hook_scale'); // [T, 1]
  if (scale.shape[0] !== stack.shape[1]) {
    throw new InputError(`applyLnToStack: the stack has ${stack.shape[1]} positions, ln_final.hook_scale has ${scale.shape[0]}`);
  }
  try {
    return tf.tidy(() => tf.mul(tf.div(stack, scale), model.weights.finalNorm()));
  } finally {
    model.weights.releaseHead();
  }
}

/**
 * Each normalised component's contribution to logit(answer) − logit(wrong) (or to
 * logit(answer) alone): [n, T, hidden] → [n, T]. A new tensor; the caller disposes it.
 */
export function logitAttrs(model: Transformer, normed: tf.Tensor3D, answer: number, wrong?: number): tf.Tensor2D {
  return tf.tidy(() => {
    const rows = unembedRows(model, wrong === undefined ? [answer] : [answer, wrong]); // [1 or 2, hidden]
    const direction = wrong === undefined ? tf.squeeze(rows, [0]) : tf.sub(rows.gather(0), rows.gather(1)); // [hidden]
    return tf.sum(tf.mul(normed, direction), -1) as tf.Tensor2D;
  });
}

export interface AttributionPart {
  /** `embed`, `blocks.{l}.attn.head.{h}`, or `blocks.{l}.mlp` (`blocks.{l}.moe` for Mixtral). */
  readonly name: string;
  readonly value: number;
}

export interface DirectLogitAttribution {
  readonly position: number;
  /** logit(answer) − logit(wrong) of the run, at `position`. */
  readonly logitDiff: number;
  /** The embedding, then per layer its heads and its MLP (or mixture), in forward order. */
  readonly parts: AttributionPart[];
  /** Σ parts (float64): equal to logitDiff up to float32 rounding. */
  readonly sum: number;
}

/**
 * Direct logit attribution of logit(answer) − logit(wrong) at `position` (default the
 * last): runs the model once with the opt-in hooks and splits the difference by the
 * embedding, every head and every MLP / mixture.
 */
export function directLogitAttribution(model: Transformer, ids: readonly number[], answer: number, wrong: number,
  opts: { position?: number } = {}): DirectLogitAttribution {
  const c = model.config;
  const position = opts.position ?? ids.length - 1;
  if (!Number.isInteger(position) || position < 0 || position >= ids.length) {
    throw new InputError(`position ${position} is outside the prompt [0, ${ids.length})`);
  }
  unembedRows(model, [answer, wrong]).dispose(); // checks both ids before the run
  const names = ['hook_embed', 'ln_final.hook_scale', 'hook_logits',
    ...Array.from({ length: c.numLayers }, (_, l) => [`blocks.${l}.attn.hook_result`, `blocks.${l}.hook_mlp_out`]).flat()];
  const { result, cache } = runWithCache(model, ids, { names });
  try {
    const logits = cache.get('hook_logits').dataSync();
    const logitDiff = logits[position * c.vocabSize + answer]! - logits[position * c.vocabSize + wrong]!;
    const labels: string[] = ['embed'];
    const values = tf.tidy(() => {
      const at = (t: tf.Tensor) => tf.gather(t, position, t.rank === 3 ? 1 : 0); // the position's row
      const parts: tf.Tensor[] = [tf.expandDims(at(cache.get('hook_embed')), 0)];
      for (let l = 0; l < c.numLayers; l++) {
        parts.push(at(tf.transpose(cache.get(`blocks.${l}.attn.hook_result`), [1, 0, 2]))); // [heads, hidden]
        for (let h = 0; h < c.numHeads; h++) labels.push(`blocks.${l}.attn.head.${h}`);
        parts.push(tf.expandDims(at(cache.get(`blocks.${l}.hook_mlp_out`)), 0));
        labels.push(`blocks.${l}.${c.numExperts === null ? 'mlp' : 'moe'}`);
      }
      const stack = tf.expandDims(tf.concat(parts, 0), 1) as tf.Tensor3D; // [parts, 1, hidden]
      const scale = tf.slice(cache.get('ln_final.hook_scale'), [position, 0], [1, 1]);
      const normed = tf.mul(tf.div(stack, scale), model.weights.finalNorm()) as tf.Tensor3D;
      return logitAttrs(model, normed, answer, wrong).dataSync();
    });
    model.weights.releaseHead();
    const parts = labels.map((name, i) => ({ name, value: values[i]! }));
    return { position, logitDiff, parts, sum: parts.reduce((a, p) => a + p.value, 0) };
  } finally {
    cache.dispose();
    disposeResult(result);
  }
}
