/**
 * Fused elementwise steps for the simd path: RMSNorm and SwiGLU's gating as wasm kernels
 * (simd/elementwise.ts), RoPE as a plain loop, over the data instead of 4–10 tfjs ops each. For a decode step on a small model the
 * ops' bookkeeping, not their arithmetic, is the cost (bench/speed.ts profile: ~15% of a
 * hidden-512 token). Each rounds to float32 where its composite twin in src/model does, and
 * is tested against it (test/fused.test.ts).
 *
 * Each step comes twice: on Float32Arrays (`…Into`, what the whole-layer simd path of
 * model/simd-block.ts calls) and on tensors (what block.ts calls when a hook watches the layer).
 */
import * as tf from '@tensorflow/tfjs-core';
import { rmsNormKernel, swigluKernel } from './simd/elementwise.js';

const f = Math.fround;

/** A tensor's values as a Float32Array (the backend's own array when it is one). */
export function float32(t: tf.Tensor): Float32Array {
  const a = t.dataSync();
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

/**
 * y = w · x / sqrt(mean(x²) + eps), as model/rmsnorm.ts: the wasm kernel (the squares summed
 * in float64, as the JavaScript loop it replaced summed them; 5–7× faster than that loop at
 * hidden 512 and 4096, 512 tokens, one thread, copies in and out included).
 * @param x [tokens, hidden]
 * @param w [hidden]
 * @param y [tokens, hidden], written (may be x)
 */
export function rmsNormInto(x: Float32Array, T: number, H: number, w: Float32Array, eps: number, y: Float32Array): void {
  rmsNormKernel(x, T, H, w, eps, y);
}

/** rmsNormInto on tensors. x: [tokens, hidden], weight: [hidden]. */
export function rmsNormFused(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number): tf.Tensor2D {
  const [T, H] = x.shape;
  const y = new Float32Array(T * H);
  rmsNormInto(float32(x), T, H, float32(weight), eps, y);
  return tf.tensor2d(y, [T, H]);
}

/**
 * Rotate-half RoPE, as model/rope.ts: x · cos + rotateHalf(x) · sin, in place.
 * @param x [tokens, heads, headDim] at row stride `stride` floats per token (heads·headDim
 *   when x is its own array; more when it is the q or k part of a fused q|k|v product)
 * @param cos [tokens, headDim] (both halves), as ropeAngles makes them
 */
export function ropeInPlace(x: Float32Array, T: number, Hn: number, D: number, cos: Float32Array, sin: Float32Array,
  stride = Hn * D, offset = 0): void {
  const half = D / 2;
  for (let t = 0; t < T; t++) {
    const r = t * D;
    for (let h = 0; h < Hn; h++) {
      const o = offset + t * stride + h * D;
      for (let i = 0; i < half; i++) {
        const a = x[o + i]!;
        const b = x[o + i + half]!;
        x[o + i] = f(f(a * cos[r + i]!) + f(-b * sin[r + i]!));
        x[o + i + half] = f(f(b * cos[r + i + half]!) + f(a * sin[r + i + half]!));
      }
    }
  }
}

/** ropeInPlace on a tensor. x: [tokens, heads, headDim]. */
export function ropeFused(x: tf.Tensor3D, cos: Float32Array, sin: Float32Array): tf.Tensor3D {
  const [T, Hn, D] = x.shape;
  const y = float32(x).slice();
  ropeInPlace(y, T, Hn, D, cos, sin);
  return tf.tensor3d(y, [T, Hn, D]);
}

/** silu(gate) ⊙ up = gate · σ(gate) · up, as model/feedforward.ts. [tokens, inter] each. */
export function swigluFused(gate: tf.Tensor2D, up: tf.Tensor2D): tf.Tensor2D {
  const [T, I] = gate.shape;
  return tf.tensor2d(swigluKernel(float32(gate), float32(up), T, I, 0, 0), [T, I]);
}
