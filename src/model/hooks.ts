/**
 * Hook points: every intermediate of the forward pass passes through `hookPoint(t, name)`.
 * A hook may read the tensor (to cache it) or return a replacement of the same shape and
 * dtype (ablation, activation patching, steering). Names follow TransformerLens
 * (`blocks.3.attn.hook_pattern`); docs/hooks.md lists them all with their shapes.
 *
 * The contract:
 * - what a hook returns is cloned before the forward uses it, so returning a tensor the
 *   caller keeps (a cached activation) never lets the forward dispose it;
 * - a replacement must have the shape and dtype of the tensor it replaces (HookError);
 * - tensors a hook creates are freed when the forward's tf.tidy ends; `tf.keep(t)` keeps
 *   one (and makes it the caller's to dispose);
 * - opt-in points (`attn.hook_result`, `ln*.hook_scale`) cost extra work, so they fire only
 *   when a hook is registered under their exact name (`*` alone does not ask for them).
 *
 * The model only knows names and this one call; caches, patching and pictures live in
 * src/inspect.
 */
import * as tf from '@tensorflow/tfjs-core';

/** Where the tensor of a hook call sits in the text. */
export interface HookContext {
  /** Absolute position of each of the call's tokens (with a cache: continuing from cache.length). */
  readonly positions: readonly number[];
  /** In a batched forward, the row of the batch this call runs. */
  readonly batch?: number;
}

/** Returns nothing to observe, or a tensor of the same shape and dtype to replace `t`. */
export type HookFn = (t: tf.Tensor, name: string, ctx: HookContext) => tf.Tensor | void;

/** Exact hook names, or `*` for every hook point. */
export type Hooks = ReadonlyMap<string, HookFn>;

export class HookError extends Error {
  override readonly name = 'HookError';
}

/** Hook points that cost work only when asked for by name (`*` does not ask). */
export function isOptIn(name: string): boolean {
  return name.endsWith('.hook_result') || name.endsWith('.hook_scale');
}

/** Runs the hooks registered for `name` on `t` and returns what the forward should use. */
export function hookPoint<T extends tf.Tensor>(hooks: Hooks | undefined, t: T, name: string, ctx: HookContext): T {
  if (hooks === undefined || hooks.size === 0) return t;
  let out: tf.Tensor = t;
  const star = isOptIn(name) && !hooks.has(name) ? undefined : hooks.get('*');
  for (const fn of [star, hooks.get(name)]) {
    if (fn === undefined) continue;
    const r = fn(out, name, ctx);
    if (r === undefined) continue;
    if (r.isDisposed) throw new HookError(`hook ${name} returned a disposed tensor`);
    if (r.shape.length !== t.shape.length || r.shape.some((d, i) => d !== t.shape[i])) {
      throw new HookError(`hook ${name} returned shape [${r.shape}], expected [${t.shape}]`);
    }
    if (r.dtype !== t.dtype) throw new HookError(`hook ${name} returned dtype ${r.dtype}, expected ${t.dtype}`);
    out = tf.clone(r); // shares the data; the forward owns (and disposes) only the clone
  }
  return out as T;
}

/**
 * hookPoint with a fixed prefix, e.g. `blocks.3.`; `wants(name)` says whether any hook
 * would see `name`, so a fused kernel that never forms that tensor knows when it must not
 * be used, and an opt-in point knows when to do its work.
 */
export type HookScope = (<T extends tf.Tensor>(t: T, name: string) => T) & {
  readonly wants: (name: string) => boolean;
  /** Whether any hook sees a point in this scope (false: its code may skip every hook point). */
  readonly active: boolean;
  /** What the scope puts before names, e.g. `blocks.3.` (for messages). */
  readonly prefix: string;
};

export function hookScope(hooks: Hooks | undefined, prefix: string, ctx: HookContext): HookScope {
  const scope = <T extends tf.Tensor>(t: T, name: string): T => hookPoint(hooks, t, prefix + name, ctx);
  const wants = (name: string) => hooks !== undefined &&
    (hooks.has(prefix + name) || (!isOptIn(name) && hooks.has('*')));
  const active = hooks !== undefined && (hooks.has('*') || [...hooks.keys()].some((k) => k.startsWith(prefix)));
  return Object.assign(scope, { wants, prefix, active });
}

/** A scope with no hooks (model parts run on their own, e.g. an expert's SwiGLU). */
export const NO_HOOKS: HookScope = hookScope(undefined, '', { positions: [] });
