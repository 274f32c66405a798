/**
 * Reading and changing intermediates through the model's hook points
 * (names and shapes: docs/hooks.md, src/inspect/hookpoints.ts).
 *
 *   const { result, cache } = runWithCache(model, ids, { names: ['blocks.0.attn.hook_pattern'] });
 *   cache.get('blocks.0.attn.hook_pattern').print();   // [heads, tokens, keys]
 *   cache.dispose(); disposeResult(result);
 *
 *   // Activation patching: run prompt B with layer 2's residual of prompt A at position 5.
 *   const a = runWithCache(model, idsA, { names: ['blocks.2.hook_resid_pre'] });
 *   const patched = runWithHooks(model, idsB, {
 *     'blocks.2.hook_resid_pre': patchPositions(a.cache.get('blocks.2.hook_resid_pre'), [5]),
 *   });
 *
 * Names are checked against the model's hook points before the forward runs: a typo is a
 * HookError, not a hook that silently never fires.
 */
import * as tf from '@tensorflow/tfjs-core';
import { HookError, isOptIn, type HookFn, type Hooks } from '../model/hooks.js';
import { disposeResult, type ForwardOptions, type ForwardResult, type Transformer } from '../model/transformer.js';
import { generateTokens, type GeneratedToken, type GenerateOptions } from '../generate/index.js';
import { checkHookNames } from './hookpoints.js';

/** Captured activations by hook name. The caller owns them: call dispose(). */
export class ActivationCache {
  readonly tensors = new Map<string, tf.Tensor>();

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The captured tensor (owned by the cache); throws a HookError when absent. */
  get(name: string): tf.Tensor {
    const t = this.tensors.get(name);
    if (t === undefined) {
      const some = [...this.tensors.keys()].slice(0, 5).join(', ');
      throw new HookError(`no activation ${JSON.stringify(name)} captured (have ${this.tensors.size}${some ? `: ${some}` : ''}` +
        `${this.tensors.size > 5 ? ', …' : ''})`);
    }
    return t;
  }

  /**
   * One per-layer hook of every layer, stacked: `stack('hook_resid_post')` →
   * [layers, tokens, hidden]. A new tensor: the caller disposes it.
   */
  stack(hook: string, numLayers: number): tf.Tensor {
    const parts = Array.from({ length: numLayers }, (_, l) => this.get(`blocks.${l}.${hook}`));
    return tf.stack(parts);
  }

  names(): string[] {
    return [...this.tensors.keys()];
  }

  dispose(): void {
    tf.dispose([...this.tensors.values()]);
    this.tensors.clear();
  }
}

export interface CacheOptions extends Omit<ForwardOptions, 'hooks'> {
  /** Hook names to capture, or a predicate; default every hook point. */
  readonly names?: readonly string[] | ((name: string) => boolean);
  /** Hooks that run before capture, so a patched run can be cached too (its values are cached). */
  readonly hooks?: Hooks | Readonly<Record<string, HookFn>>;
}

function toMap(hooks: Hooks | Readonly<Record<string, HookFn>> | undefined): Map<string, HookFn> {
  if (hooks === undefined) return new Map();
  return new Map(hooks instanceof Map ? hooks : Object.entries(hooks));
}

/**
 * Runs the model and keeps a copy of every selected intermediate (after any hook in
 * `opts.hooks` has replaced it). Both the result and the cache belong to the caller.
 */
export function runWithCache(model: Transformer, ids: readonly number[], opts: CacheOptions = {}):
  { result: ForwardResult; cache: ActivationCache } {
  const wanted = opts.names;
  if (Array.isArray(wanted)) checkHookNames(model.config, wanted);
  const user = toMap(opts.hooks);
  checkHookNames(model.config, user.keys());

  const select = wanted === undefined ? () => true
    : typeof wanted === 'function' ? wanted as (name: string) => boolean
      : ((set: Set<string>) => (n: string) => set.has(n))(new Set(wanted as readonly string[]));
  const cache = new ActivationCache();
  const capture = (t: tf.Tensor, name: string): void => {
    if (!select(name)) return;
    cache.tensors.get(name)?.dispose(); // a name fires once per forward; this only guards reuse
    // clone shares the data (no copy); keep lets it outlive the forward's tf.tidy.
    cache.tensors.set(name, tf.keep(tf.clone(t)));
  };

  // hookPoint runs '*' first, then the hook registered for the name. Capture after the
  // last one that runs, so the cache holds what the forward actually used.
  const star = user.get('*');
  const hooks = new Map<string, HookFn>();
  // Opt-in points (hook_result, hook_scale) fire only when asked for by name.
  const named = new Set([...user.keys(), ...(Array.isArray(wanted) ? (wanted as readonly string[]).filter(isOptIn) : [])]);
  named.delete('*');
  hooks.set('*', (t, name, ctx) => {
    const r = star?.(t, name, ctx);
    if (!named.has(name)) capture(r ?? t, name);
    return r;
  });
  for (const name of named) {
    const fn = user.get(name);
    hooks.set(name, (t, n, ctx) => {
      const r = fn?.(t, n, ctx);
      capture(r ?? t, n);
      return r;
    });
  }
  const { names: _names, hooks: _hooks, ...forward } = opts;
  try {
    return { result: model.forward(ids, { ...forward, hooks }), cache };
  } catch (e) {
    cache.dispose();
    throw e;
  }
}

/**
 * Runs the model with hooks that may read or replace intermediates, given as an object
 * or a Map from hook name (or `*`) to function. What a hook returns is cloned before
 * use, so it may return a tensor it keeps (src/model/hooks.ts has the whole contract).
 */
export function runWithHooks(model: Transformer, ids: readonly number[],
  hooks: Hooks | Readonly<Record<string, HookFn>>, opts: Omit<ForwardOptions, 'hooks'> = {}): ForwardResult {
  const map = toMap(hooks);
  checkHookNames(model.config, map.keys());
  return model.forward(ids, { ...opts, hooks: map });
}

/**
 * Generation with hooks in every forward (prefill chunks and steps), names checked first.
 * Each hook's context has the absolute positions of the tokens it sees:
 *
 *   // add a steering vector to layer 1's residual from position 5 on
 *   generateWithHooks(model, ids, { 'blocks.1.hook_resid_pre': (t, _n, { positions }) =>
 *     tf.tidy(() => tf.add(t, tf.mul(tf.tensor2d(positions.map((p) => [p >= 5 ? 1 : 0])), v))) });
 */
export function generateWithHooks(model: Transformer, ids: readonly number[], hooks: Hooks | Readonly<Record<string, HookFn>>,
  opts: Omit<GenerateOptions, 'hooks'> = {}): Generator<GeneratedToken, void, undefined> {
  const map = toMap(hooks);
  checkHookNames(model.config, map.keys());
  return generateTokens(model, ids, { ...opts, hooks: map });
}

export { disposeResult };
