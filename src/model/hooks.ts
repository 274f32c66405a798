/**
 * Hook points: every intermediate of the forward pass passes through `hookPoint(name, t)`.
 * A hook may read the tensor (to cache it) or return a replacement of the same shape
 * (ablation, activation patching). Names follow TransformerLens (`blocks.3.attn.hook_pattern`);
 * docs/hooks.md lists them all with their shapes.
 *
 * The model only knows names and this one call; caches, patching and pictures live in
 * src/inspect. A hook's tensor is disposed by the forward pass after use: to keep it,
 * `tf.keep(t.clone())`.
 */
import type * as tf from '@tensorflow/tfjs-core';

/** Returns nothing to observe, or a tensor of the same shape to replace `t`. */
export type HookFn = (t: tf.Tensor, name: string) => tf.Tensor | void;

/** Exact hook names, or `*` for every hook point. */
export type Hooks = ReadonlyMap<string, HookFn>;

export class HookError extends Error {
  override readonly name = 'HookError';
}

/** Runs the hooks registered for `name` on `t` and returns what the forward should use. */
export function hookPoint<T extends tf.Tensor>(hooks: Hooks | undefined, name: string, t: T): T {
  if (hooks === undefined || hooks.size === 0) return t;
  let out: tf.Tensor = t;
  for (const fn of [hooks.get('*'), hooks.get(name)]) {
    if (fn === undefined) continue;
    const r = fn(out, name);
    if (r === undefined) continue;
    if (r.shape.length !== t.shape.length || r.shape.some((d, i) => d !== t.shape[i])) {
      throw new HookError(`hook ${name} returned shape [${r.shape}], expected [${t.shape}]`);
    }
    out = r;
  }
  return out as T;
}

/**
 * hookPoint with a fixed prefix, e.g. `blocks.3.`; `wants(name)` says whether any hook
 * would see `name`, so a fused kernel that never forms that tensor knows when it must not
 * be used.
 */
export type HookScope = (<T extends tf.Tensor>(name: string, t: T) => T) & { readonly wants?: (name: string) => boolean };

export function hookScope(hooks: Hooks | undefined, prefix: string): HookScope {
  const scope = <T extends tf.Tensor>(name: string, t: T): T => hookPoint(hooks, prefix + name, t);
  const wants = (name: string) => hooks !== undefined && (hooks.has('*') || hooks.has(prefix + name));
  return Object.assign(scope, { wants });
}
