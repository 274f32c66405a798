/**
 * Reading and changing intermediates through the model's hook points
 * (names and shapes: docs/hooks.md).
 *
 *   const { result, cache } = runWithCache(model, ids, { names: ['blocks.0.attn.hook_pattern'] });
 *   cache.get('blocks.0.attn.hook_pattern').print();
 *   cache.dispose(); disposeResult(result);
 */
import * as tf from '@tensorflow/tfjs-core';
import type { HookFn, Hooks } from '../model/hooks.js';
import { disposeResult, type ForwardOptions, type ForwardResult, type Transformer } from '../model/transformer.js';

/** Captured activations by hook name. The caller owns them: call dispose(). */
export class ActivationCache {
  readonly tensors = new Map<string, tf.Tensor>();

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  /** The captured tensor; throws with the known names when absent. */
  get(name: string): tf.Tensor {
    const t = this.tensors.get(name);
    if (t === undefined) {
      throw new Error(`no activation ${JSON.stringify(name)} captured (have ${this.tensors.size}: ${[...this.tensors.keys()].slice(0, 5).join(', ')}…)`);
    }
    return t;
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
  /** Extra hooks that run before capture (so a patched run can be cached too). */
  readonly hooks?: Hooks;
}

/** Runs the model and keeps a copy of every selected intermediate. */
export function runWithCache(model: Transformer, ids: readonly number[], opts: CacheOptions = {}):
  { result: ForwardResult; cache: ActivationCache } {
  const cache = new ActivationCache();
  const wanted = opts.names;
  const select = wanted === undefined ? () => true
    : typeof wanted === 'function' ? wanted
      : ((set: Set<string>) => (n: string) => set.has(n))(new Set(wanted));
  const capture: HookFn = (t, name) => {
    if (select(name)) {
      cache.tensors.get(name)?.dispose();
      cache.tensors.set(name, tf.keep(tf.clone(t)));
    }
  };
  const hooks = new Map(opts.hooks ?? []);
  const user = hooks.get('*');
  hooks.set('*', user === undefined ? capture : (t, name) => {
    const replaced = user(t, name);
    capture(replaced ?? t, name);
    return replaced;
  });
  // Hooks registered for a name run after '*': capture those names after them instead.
  for (const [name, fn] of opts.hooks ?? []) {
    if (name === '*') continue;
    hooks.set(name, (t, n) => {
      const replaced = fn(t, n);
      capture(replaced ?? t, n);
      return replaced;
    });
  }
  try {
    return { result: model.forward(ids, { ...opts, hooks }), cache };
  } catch (e) {
    cache.dispose();
    throw e;
  }
}

/**
 * Runs the model with hooks that may read or replace intermediates, given as an object
 * or a Map from hook name to function.
 */
export function runWithHooks(model: Transformer, ids: readonly number[],
  hooks: Hooks | Record<string, HookFn>, opts: Omit<ForwardOptions, 'hooks'> = {}): ForwardResult {
  const map = hooks instanceof Map ? hooks : new Map(Object.entries(hooks));
  return model.forward(ids, { ...opts, hooks: map });
}

export { disposeResult };
