/**
 * Fused elementwise steps for the simd path: RMSNorm, RoPE and SwiGLU's gating as plain
 * loops over the data, one tfjs tensor out, instead of 4–10 tfjs ops each. For a decode
 * step on a small model the ops' bookkeeping, not their arithmetic, is the cost (bench/speed.ts
 * profile: ~15% of a hidden-512 token). Each rounds to float32 where its composite twin in
 * src/model does, and is tested against it (test/fused.test.ts).
 */
import * as tf from '@tensorflow/tfjs-core';

const f = Math.fround;

/** A tensor's values as a Float32Array (the backend's own array when it is one). */
export function float32(t: tf.Tensor): Float32Array {
  const a = t.dataSync();
  return a instanceof Float32Array ? a : Float32Array.from(a);
}

/**
 * y = w · x / sqrt(mean(x²) + eps), as model/rmsnorm.ts.
 * @param x [tokens, hidden]
 * @param weight [hidden]
 */
export function rmsNormFused(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number): tf.Tensor2D {
  const [T, H] = x.shape;
  const xs = float32(x);
  const w = float32(weight);
  const y = new Float32Array(T * H);
  for (let t = 0; t < T; t++) {
    const o = t * H;
    let sum = 0;
    for (let i = 0; i < H; i++) sum += xs[o + i]! * xs[o + i]!;
    const scale = f(1 / Math.sqrt(f(f(sum / H) + eps)));
    for (let i = 0; i < H; i++) y[o + i] = f(f(xs[o + i]! * scale) * w[i]!);
  }
  return tf.tensor2d(y, [T, H]);
}

/**
 * Rotate-half RoPE, as model/rope.ts: x · cos + rotateHalf(x) · sin.
 * @param x [tokens, heads, headDim]
 * @param cos [tokens, headDim] (both halves), as ropeAngles makes them
 */
export function ropeFused(x: tf.Tensor3D, cos: Float32Array, sin: Float32Array): tf.Tensor3D {
  const [T, Hn, D] = x.shape;
  const half = D / 2;
  const xs = float32(x);
  const y = new Float32Array(xs.length);
  for (let t = 0; t < T; t++) {
    for (let h = 0; h < Hn; h++) {
      const o = (t * Hn + h) * D;
      const r = t * D;
      for (let i = 0; i < half; i++) {
        const a = xs[o + i]!;
        const b = xs[o + i + half]!;
        y[o + i] = f(f(a * cos[r + i]!) + f(-b * sin[r + i]!));
        y[o + i + half] = f(f(b * cos[r + i + half]!) + f(a * sin[r + i + half]!));
      }
    }
  }
  return tf.tensor3d(y, [T, Hn, D]);
}

/** silu(gate) ⊙ up = gate · σ(gate) · up, as model/feedforward.ts. [tokens, inter] each. */
export function swigluFused(gate: tf.Tensor2D, up: tf.Tensor2D): tf.Tensor2D {
  const g = float32(gate);
  const u = float32(up);
  const y = new Float32Array(g.length);
  for (let i = 0; i < g.length; i++) {
    const x = g[i]!;
    y[i] = f(f(x * f(1 / (1 + Math.exp(-x)))) * u[i]!);
  }
  return tf.tensor2d(y, gate.shape);
}
