/**
 * Projection weights stored in the orientation the active backend multiplies fastest.
 *
 * Checkpoints store linear weights `[out, in]` (y = x · Wᵀ). tfjs-wasm only reaches
 * XNNPACK when neither operand is transposed (3× faster; see docs/PERF-NOTES), while the
 * cpu backend is faster with `transposeB`. So the weight is laid out once, at load, for
 * the backend in use, and `linear` hides the difference.
 */
import * as tf from '@tensorflow/tfjs-core';

export interface Linear {
  /** `[out, in]` when `transposed`, else `[in, out]`. */
  readonly weight: tf.Tensor2D;
  readonly transposed: boolean;
  readonly inFeatures: number;
  readonly outFeatures: number;
}

/** Whether the active backend prefers `[out, in]` with transposeB. */
export function prefersTransposedWeights(): boolean {
  return tf.getBackend() === 'cpu';
}

/**
 * Builds a Linear from row-major `[out, in]` data.
 * @param data float32 `[out, in]`, as in the checkpoint
 */
export function makeLinear(data: Float32Array, outFeatures: number, inFeatures: number,
  transposed = prefersTransposedWeights()): Linear {
  const weight = transposed
    ? tf.tensor2d(data, [outFeatures, inFeatures])
    : tf.tensor2d(transpose2d(data, outFeatures, inFeatures), [inFeatures, outFeatures]);
  return { weight, transposed, inFeatures, outFeatures };
}

/** y = x · Wᵀ.  x: [tokens, in] → [tokens, out] */
export function linear(x: tf.Tensor2D, l: Linear): tf.Tensor2D {
  return tf.matMul(x, l.weight, false, l.transposed);
}

/** Row-major `[rows, cols]` → `[cols, rows]`, blocked for cache locality. */
export function transpose2d(a: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(a.length);
  const B = 64;
  for (let r0 = 0; r0 < rows; r0 += B) {
    for (let c0 = 0; c0 < cols; c0 += B) {
      const r1 = Math.min(r0 + B, rows);
      const c1 = Math.min(c0 + B, cols);
      for (let r = r0; r < r1; r++) {
        for (let c = c0; c < c1; c++) out[c * rows + r] = a[r * cols + c]!;
      }
    }
  }
  return out;
}
