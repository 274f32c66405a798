/**
 * Mixtral's routing, readable: which experts each token went to, with what weights, and
 * how the tokens spread over the experts (load).
 *
 * Worked example, k = 2 of 4 experts, 3 tokens in one layer:
 *
 *   token  experts  weights         load (tokens per expert): e0 e1 e2 e3
 *   0      [2, 0]   [0.71, 0.29]                               2  0  2  2
 *   1      [3, 2]   [0.55, 0.45]    share of the T·k = 6 slots: .33 0 .33 .33
 *   2      [0, 3]   [0.80, 0.20]
 *
 * Load counts slots, so it sums to T·k per layer; `weight` sums the mixing weights
 * instead (it sums to T).
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { ModelConfig } from '../model/config.js';
import { HookError } from '../model/hooks.js';
import type { Routing } from '../model/moe.js';
import type { ForwardResult, Transformer } from '../model/transformer.js';
import { runWithCache, type ActivationCache, type CacheOptions } from './activations.js';

export interface RoutedToken {
  /** Position in the input. */
  readonly position: number;
  /** Chosen experts, best first. */
  readonly experts: number[];
  /** Their mixing weights (sum to 1). */
  readonly weights: number[];
}

/** Token → experts and weights, one list per layer. */
export function routingTable(routing: readonly Routing[]): RoutedToken[][] {
  return routing.map((r) => {
    const T = r.experts.length / r.k;
    return Array.from({ length: T }, (_, t) => ({
      position: t,
      experts: Array.from(r.experts.subarray(t * r.k, (t + 1) * r.k)),
      weights: Array.from(r.weights.subarray(t * r.k, (t + 1) * r.k)),
    }));
  });
}

export interface ExpertLoad {
  /** Slots routed to each expert (a token counts once per expert it chose); sums to T·k. */
  readonly tokens: number[];
  /** tokens / (T·k). */
  readonly share: number[];
  /** Sum of the mixing weights given to each expert; sums to T. */
  readonly weight: number[];
}

/** How one layer's tokens spread over its experts. */
export function expertLoad(r: Routing): ExpertLoad {
  const tokens = new Array<number>(r.numExperts).fill(0);
  const weight = new Array<number>(r.numExperts).fill(0);
  r.experts.forEach((e, i) => {
    tokens[e]! += 1;
    weight[e]! += r.weights[i]!;
  });
  const slots = r.experts.length;
  return { tokens, share: tokens.map((n) => n / slots), weight };
}

/**
 * Router probabilities: softmax of the router logits over all experts, [tokens, experts]
 * row-major (what the router heatmap shows; the chosen experts' weights are these,
 * renormalised over the k chosen).
 */
export function routerProbs(r: Routing): Float32Array {
  const E = r.numExperts;
  const out = new Float32Array(r.logits.length);
  for (let t = 0; t < r.logits.length / E; t++) {
    const row = r.logits.subarray(t * E, (t + 1) * E);
    const top = Math.max(...row);
    let sum = 0;
    for (let e = 0; e < E; e++) sum += (out[t * E + e] = Math.exp(row[e]! - top));
    for (let e = 0; e < E; e++) out[t * E + e]! /= sum;
  }
  return out;
}

/**
 * The routing of every layer rebuilt from the moe hooks of a cache (router_logits,
 * expert_indices, expert_weights): after a hook re-routed tokens, this shows what the
 * forward actually did.
 */
export function routingFromCache(cache: ActivationCache, config: ModelConfig): Routing[] {
  if (config.numExperts === null || config.numExpertsPerTok === null) {
    throw new HookError('routing exists only for Mixtral (mixture-of-experts) models');
  }
  const E = config.numExperts;
  const k = config.numExpertsPerTok;
  return Array.from({ length: config.numLayers }, (_, l) => {
    const read = (hook: string): tf.Tensor => cache.get(`blocks.${l}.moe.${hook}`);
    return {
      logits: Float32Array.from(read('hook_router_logits').dataSync()),
      experts: Int32Array.from(read('hook_expert_indices').dataSync()),
      weights: Float32Array.from(read('hook_expert_weights').dataSync()),
      numExperts: E,
      k,
    };
  });
}

/** The hook names routingFromCache reads. */
export function routingHookNames(config: ModelConfig): string[] {
  return Array.from({ length: config.numLayers }, (_, l) =>
    ['hook_router_logits', 'hook_expert_indices', 'hook_expert_weights'].map((h) => `blocks.${l}.moe.${h}`)).flat();
}

/**
 * Runs the model and returns its logits with the routing of every Mixtral layer (read
 * through the moe.hook_* points; none for a dense model). The caller disposes the result.
 */
export function forwardWithRouting(model: Transformer, ids: readonly number[], opts: Omit<CacheOptions, 'names'> = {}):
  { result: ForwardResult; routing: Routing[] } {
  const moe = model.config.numExperts !== null;
  const { result, cache } = runWithCache(model, ids, { ...opts, names: moe ? routingHookNames(model.config) : [] });
  try {
    return { result, routing: moe ? routingFromCache(cache, model.config) : [] };
  } finally {
    cache.dispose();
  }
}
