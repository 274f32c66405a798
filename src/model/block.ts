import * as tf from '@tensorflow/tfjs-core';
import { rmsNormFused } from '../kernels/fused.js';
import { onSimdKernels } from '../kernels/linear.js';
import { attention } from './attention.js';
import type { LayerCache } from './cache.js';
import type { ModelConfig } from './config.js';
import { feedForward } from './feedforward.js';
import type { HookScope } from './hooks.js';
import { mixtureOfExperts } from './moe.js';
import { rmsNorm, rmsNormWithScale } from './rmsnorm.js';
import type { RopeTables } from './rope.js';
import type { LayerWeights } from './weights.js';

/**
 * One pre-norm decoder layer:
 *
 *   mid  = x + attention(rmsNorm(x))
 *   out  = mid + ffn(rmsNorm(mid))        ffn = SwiGLU, or the mixture of experts (Mixtral)
 *
 * @param x [tokens, hidden], the residual stream
 * @returns the residual stream after the layer
 */
export function decoderBlock(x: tf.Tensor2D, w: LayerWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null, hook: HookScope): tf.Tensor2D {
  const norm = (t: tf.Tensor2D, weight: tf.Tensor1D, ln: 'ln1' | 'ln2') => hook(
    hook.wants(`${ln}.hook_scale`) ? rmsNormWithScale(t, weight, cfg.rmsNormEps, (s) => hook(s, `${ln}.hook_scale`))
      : (onSimdKernels(w.attn.q) ? rmsNormFused : rmsNorm)(t, weight, cfg.rmsNormEps),
    `${ln}.hook_normalized`);
  const residPre = hook(x, 'hook_resid_pre');
  const attnIn = norm(residPre, w.inputNorm, 'ln1');
  const attnOut = hook(attention(attnIn, w.attn, cfg, rope, positions, cache, hook), 'hook_attn_out');
  const residMid = hook(tf.add<tf.Tensor2D>(residPre, attnOut), 'hook_resid_mid');
  const ffnIn = norm(residMid, w.postNorm, 'ln2');
  const ffnOut = w.moe !== undefined ? mixtureOfExperts(ffnIn, w.moe, cfg.numExpertsPerTok!, hook) : feedForward(ffnIn, w.mlp!, hook);
  const mlpOut = hook(ffnOut, 'hook_mlp_out');
  return hook(tf.add<tf.Tensor2D>(residMid, mlpOut), 'hook_resid_post');
}
