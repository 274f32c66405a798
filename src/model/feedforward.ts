import * as tf from '@tensorflow/tfjs-core';
import { swigluFused } from '../kernels/fused.js';
import { linear, onSimdKernels, type Linear } from '../kernels/linear.js';
import type { HookScope } from './hooks.js';

/** SwiGLU weights; HF names gate_proj / up_proj / down_proj, native w1 / w3 / w2. */
export interface FeedForwardWeights {
  readonly gate: Linear; // [inter, hidden]
  readonly up: Linear; // [inter, hidden]
  readonly down: Linear; // [hidden, inter]
}

/**
 * SwiGLU (Shazeer 2020): down( silu(x·Wgateᵀ) ⊙ (x·Wupᵀ) ).
 * @param x [tokens, hidden]
 * @returns [tokens, hidden]
 */
export function feedForward(x: tf.Tensor2D, w: FeedForwardWeights, hook?: HookScope): tf.Tensor2D {
  const h = hook ?? ((_name, t) => t);
  const gate = h('mlp.hook_pre', linear(x, w.gate)); // [tokens, inter]
  const up = h('mlp.hook_pre_linear', linear(x, w.up));
  const act = h('mlp.hook_post', onSimdKernels(w.gate)
    ? swigluFused(gate, up)
    : tf.mul<tf.Tensor2D>(tf.mul(gate, tf.sigmoid(gate)), up)); // silu(g) = g·σ(g)
  return linear(act, w.down);
}
