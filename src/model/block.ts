import * as tf from '@tensorflow/tfjs-core';
import { rmsNormFused } from '../kernels/fused.js';
import { onSimdKernels } from '../kernels/linear.js';
import { attention } from './attention.js';
import type { LayerCache } from './cache.js';
import type { ModelConfig } from './config.js';
import { feedForward } from './feedforward.js';
import type { HookScope } from './hooks.js';
import { mixtureOfExperts, type Routing } from './moe.js';
import { rmsNorm } from './rmsnorm.js';
import type { RopeTables } from './rope.js';
import type { LayerWeights } from './weights.js';

/**
 * One pre-norm decoder layer:
 *
 *   mid  = x + attention(rmsNorm(x))
 *   out  = mid + ffn(rmsNorm(mid))        ffn = SwiGLU, or the mixture of experts (Mixtral)
 *
 * @param x [tokens, hidden], the residual stream
 * @returns the residual stream after the layer, and the routing for Mixtral layers
 */
export function decoderBlock(x: tf.Tensor2D, w: LayerWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null, hook: HookScope): { out: tf.Tensor2D; routing?: Routing } {
  const norm = onSimdKernels(w.attn.q) ? rmsNormFused : rmsNorm;
  const residPre = hook('hook_resid_pre', x);
  const attnIn = hook('ln1.hook_normalized', norm(residPre, w.inputNorm, cfg.rmsNormEps));
  const attnOut = hook('hook_attn_out', attention(attnIn, w.attn, cfg, rope, positions, cache, hook));
  const residMid = hook('hook_resid_mid', tf.add<tf.Tensor2D>(residPre, attnOut));
  const ffnIn = hook('ln2.hook_normalized', norm(residMid, w.postNorm, cfg.rmsNormEps));
  let ffnOut: tf.Tensor2D;
  let routing: Routing | undefined;
  if (w.moe !== undefined) {
    ({ out: ffnOut, routing } = mixtureOfExperts(ffnIn, w.moe, cfg.numExpertsPerTok!, hook));
  } else {
    ffnOut = feedForward(ffnIn, w.mlp!, hook);
  }
  const mlpOut = hook('hook_mlp_out', ffnOut);
  const out = hook('hook_resid_post', tf.add<tf.Tensor2D>(residMid, mlpOut));
  return routing === undefined ? { out } : { out, routing };
}
