import * as tf from '@tensorflow/tfjs-core';
import { swigluFused } from '../kernels/fused.js';
import { linear, onSimdKernels, type Linear } from '../kernels/linear.js';
import { NO_HOOKS, type HookScope } from './hooks.js';

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
export function feedForward(x: tf.Tensor2D, w: FeedForwardWeights, hook: HookScope = NO_HOOKS): tf.Tensor2D {
  const gate = hook(linear(x, w.gate), 'mlp.hook_pre'); // [tokens, inter]
  const up = hook(linear(x, w.up), 'mlp.hook_pre_linear');
  const act = hook(onSimdKernels(w.gate)
    ? swigluFused(gate, up)
    : tf.mul<tf.Tensor2D>(tf.mul(gate, tf.sigmoid(gate)), up), 'mlp.hook_post'); // silu(g) = g·σ(g)
  return linear(act, w.down);
}
