/**
 * `linear(x, W)` = x · Wᵀ, whichever way the weight is held. The model calls only this,
 * so how weights live and which kernel multiplies them never shows in the model code.
 *
 * Two kinds of weight:
 * - `tensor`: a float32 tf tensor (the plain tfjs path, `--kernels tfjs`), laid out once,
 *   at load, in the orientation the active backend multiplies fastest. tfjs-wasm only
 *   reaches XNNPACK when neither operand is transposed (3× faster; docs/architecture.md), while
 *   the cpu backend is faster with `transposeB`.
 * - `stored`: the checkpoint's bytes at their stored width (bf16, f16 or f32) in memory our
 *   wasm SIMD kernels own (`--kernels simd`, src/kernels/simd/); widened inside the kernel,
 *   accumulated in float32. The activations cross into kernel memory and back per call.
 */
import * as tf from '@tensorflow/tfjs-core';
import { DTYPE_BYTES, matmul, type StoredMatrix } from './simd/matmul.js';

/** Which code multiplies the projections. */
export type KernelsName = 'simd' | 'tfjs';
export const KERNELS: readonly KernelsName[] = ['simd', 'tfjs'];

interface LinearShape {
  readonly inFeatures: number;
  readonly outFeatures: number;
}

export interface TensorLinear extends LinearShape {
  readonly kind: 'tensor';
  /** `[out, in]` when `transposed`, else `[in, out]`. */
  readonly weight: tf.Tensor2D;
  readonly transposed: boolean;
}

export interface StoredLinear extends LinearShape {
  readonly kind: 'stored';
  /** [out, in] at the stored width, in kernel memory. */
  readonly matrix: StoredMatrix;
}

export type Linear = TensorLinear | StoredLinear;

/**
 * Whether a layer runs on the simd kernels: its weights are stored ones. Such a layer also
 * takes the fused steps (attention, RMSNorm, RoPE, SwiGLU) unless a hook needs what only
 * their composite twins form.
 */
export function onSimdKernels(l: Linear): boolean {
  return l.kind === 'stored';
}

/** Whether the active backend prefers `[out, in]` with transposeB. */
export function prefersTransposedWeights(): boolean {
  return tf.getBackend() === 'cpu';
}

/**
 * Builds a tensor Linear from row-major `[out, in]` data.
 * @param data float32 `[out, in]`, as in the checkpoint
 */
export function makeLinear(data: Float32Array, outFeatures: number, inFeatures: number,
  transposed = prefersTransposedWeights()): TensorLinear {
  const weight = transposed
    ? tf.tensor2d(data, [outFeatures, inFeatures])
    : tf.tensor2d(transpose2d(data, outFeatures, inFeatures), [inFeatures, outFeatures]);
  return { kind: 'tensor', weight, transposed, inFeatures, outFeatures };
}

/** A Linear over a stored matrix `[out, in]`. */
export function storedLinear(matrix: StoredMatrix): StoredLinear {
  return { kind: 'stored', matrix, inFeatures: matrix.cols, outFeatures: matrix.rows };
}

/** y = x · Wᵀ.  x: [tokens, in] → [tokens, out] */
export function linear(x: tf.Tensor2D, l: Linear): tf.Tensor2D {
  if (l.kind === 'tensor') return tf.matMul(x, l.weight, false, l.transposed);
  const T = x.shape[0];
  return tf.tensor2d(matmul(x.dataSync() as Float32Array, T, l.matrix), [T, l.outFeatures]);
}

/** Bytes a Linear's weight holds (float32 tensor, or the stored width). */
export function linearBytes(l: Linear): number {
  return l.kind === 'tensor' ? 4 * l.weight.size : l.matrix.rows * l.matrix.cols * DTYPE_BYTES[l.matrix.dtype];
}

/** Frees a tensor Linear (stored weights go with their WeightMemory). */
export function disposeLinear(l: Linear): void {
  if (l.kind === 'tensor') l.weight.dispose();
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
