/**
 * Ready-made hooks for ablation and activation patching. Each returns a HookFn for
 * `runWithHooks` / `runWithCache({ hooks })`; each hands the forward a fresh tensor, so the
 * value passed in stays the caller's (and is never disposed by the forward).
 *
 *   // Zero head 3 of layer 1 (its z, the input of o_proj), then look at the logits.
 *   runWithHooks(model, ids, { 'blocks.1.attn.hook_z': zeroHead(3) });
 *
 *   // Run prompt B, but with layer 2's residual at positions 4 and 5 taken from prompt A.
 *   runWithHooks(model, idsB, { 'blocks.2.hook_resid_pre': patchPositions(residA, [4, 5]) });
 */
import * as tf from '@tensorflow/tfjs-core';
import { HookError, type HookFn } from '../model/hooks.js';
import { HOOK_POINTS, type HookPointInfo } from './hookpoints.js';

/** The HOOK_POINTS entry of a concrete name (`blocks.3.attn.hook_z` → `blocks.{l}.attn.hook_z`). */
function hookInfo(name: string): HookPointInfo {
  const info = HOOK_POINTS.find((p) => p.name === name.replace(/^blocks\.\d+\./, 'blocks.{l}.'));
  if (info === undefined) throw new HookError(`unknown hook ${JSON.stringify(name)}: no such hook point (see docs/hooks.md)`);
  return info;
}

/** The axes of a hook point's documented shape, e.g. ['T', 'heads', 'headDim']. */
export function hookAxes(name: string): string[] {
  return hookInfo(name).shape.replace(/[[\]\s]/g, '').split(',');
}

/** Axis of the token dimension (T in the hook's documented shape). */
export function tokenAxis(name: string): number {
  const axis = hookAxes(name).indexOf('T');
  if (axis < 0) throw new HookError(`${name} has no token axis (its shape is ${hookInfo(name).shape})`);
  return axis;
}

/** Axis of the head dimension (heads or kvHeads in the hook's documented shape). */
export function headAxis(name: string): number {
  const axes = hookAxes(name);
  const axis = axes.findIndex((a) => a === 'heads' || a === 'kvHeads');
  if (axis < 0) throw new HookError(`${name} has no head axis (its shape is ${hookInfo(name).shape})`);
  return axis;
}

function sameShape(a: tf.Tensor, b: tf.Tensor, name: string): void {
  if (a.rank !== b.rank || a.shape.some((d, i) => d !== b.shape[i])) {
    throw new HookError(`patch for ${name} has shape [${b.shape}], the activation has [${a.shape}]`);
  }
}

/** A 0/1 boolean mask, true at `index` along `axis`, broadcastable against `shape`. */
function axisMask(shape: readonly number[], axis: number, indices: readonly number[], what: string, name: string): tf.Tensor {
  const n = shape[axis]!;
  for (const i of indices) {
    if (!Number.isInteger(i) || i < 0 || i >= n) throw new HookError(`${what} ${i} is outside [0, ${n}) for ${name} [${shape}]`);
  }
  const on = new Uint8Array(n);
  for (const i of indices) on[i] = 1;
  const maskShape = shape.map((_, a) => (a === axis ? n : 1));
  return tf.tensor(on, maskShape, 'bool');
}

/** Replaces the activation with `value` (same shape). */
export function replaceWith(value: tf.Tensor): HookFn {
  return (t, name) => {
    sameShape(t, value, name);
    return tf.clone(value);
  };
}

/**
 * Replaces the rows of the given token positions with those of `value` (same shape as the
 * activation, e.g. the same hook cached from another prompt of the same length); the other
 * positions keep their own values bit for bit.
 */
export function patchPositions(value: tf.Tensor, positions: readonly number[]): HookFn {
  return (t, name) => {
    sameShape(t, value, name);
    return tf.tidy(() => tf.where(axisMask(t.shape, tokenAxis(name), positions, 'position', name), value, t));
  };
}

/**
 * Sets one head's slice to zero (zero ablation). On hook_z this removes the head's
 * contribution to attn_out exactly, since o_proj is linear.
 */
export function zeroHead(head: number): HookFn {
  return (t, name) => tf.tidy(() => tf.where(axisMask(t.shape, headAxis(name), [head], 'head', name), tf.zerosLike(t), t));
}

/** Returns `fn(t)` for any transformation written with tfjs ops (wrapped in a tidy). */
export function mapActivation(fn: (t: tf.Tensor, name: string) => tf.Tensor): HookFn {
  return (t, name) => tf.tidy(() => fn(t, name));
}
