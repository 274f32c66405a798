/**
 * `linear(x, W)` = x · Wᵀ, whichever way the weight is held. The model calls only this,
 * so how weights live and which kernel multiplies them never shows in the model code.
 *
 * Two kinds of weight:
 * - `tensor`: a float32 tf tensor (the plain tfjs path, `--kernels tfjs`), laid out once,
 *   at load, in the orientation the active backend multiplies fastest. tfjs-wasm only
 *   reaches XNNPACK when neither operand is transposed (3× faster; docs/architecture.md), while
 *   the cpu backend is faster with `transposeB`.
 * - `split`: the same, cut into row blocks, when the whole weight is more than the backend
 *   can bind in one kernel (webgpu's `maxStorageBufferBindingSize`, 128 MiB on software
 *   adapters, less than one `[14336, 4096]` float32 projection). Each block's product is a
 *   slice of the output's columns; concatenated they are the product, each column computed
 *   from the same row of W as unsplit.
 * - `stored`: the checkpoint's bytes at their stored width (bf16, f16 or f32) in memory our
 *   wasm SIMD kernels own (`--kernels simd`, src/kernels/simd/); widened inside the kernel,
 *   accumulated in float32. The activations cross into kernel memory and back per call.
 */
import * as tf from '@tensorflow/tfjs-core';
import { bindingLimitBytes } from './backend.js';
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

export interface SplitLinear extends LinearShape {
  readonly kind: 'split';
  /** Row blocks of `[out, in]`, in order, each a TensorLinear `[rows_b, in]` with transposeB. */
  readonly blocks: readonly TensorLinear[];
}

export type Linear = TensorLinear | StoredLinear | SplitLinear;

/**
 * Whether a layer runs on the simd kernels: its weights are stored ones. Such a layer also
 * takes the fused steps (attention, RMSNorm, RoPE, SwiGLU) unless a hook needs what only
 * their composite twins form.
 */
export function onSimdKernels(l: Linear): boolean {
  return l.kind === 'stored';
}

/** Whether the active backend prefers `[out, in]` with transposeB (webgpu: rows split without copying). */
export function prefersTransposedWeights(): boolean {
  return tf.getBackend() === 'cpu' || tf.getBackend() === 'webgpu';
}

/** Rows per block so that a `[rows, cols]` float32 block stays within `limitBytes`. */
export function rowsPerBlock(cols: number, limitBytes: number): number {
  const rows = Math.floor(limitBytes / (4 * cols));
  if (rows < 1) throw new RangeError(`one row of ${cols} float32 values is more than the backend binds at once (${limitBytes} bytes)`);
  return rows;
}

/**
 * Builds a tensor Linear from row-major `[out, in]` data: split into row blocks when it is
 * larger than the active backend binds at once (`limitBytes`).
 * @param data float32 `[out, in]`, as in the checkpoint
 */
export function makeLinear(data: Float32Array, outFeatures: number, inFeatures: number,
  transposed = prefersTransposedWeights(), limitBytes = bindingLimitBytes()): TensorLinear | SplitLinear {
  if (4 * data.length > limitBytes) {
    const step = rowsPerBlock(inFeatures, limitBytes);
    const blocks: TensorLinear[] = [];
    for (let r = 0; r < outFeatures; r += step) {
      const rows = Math.min(step, outFeatures - r);
      blocks.push(makeLinear(data.subarray(r * inFeatures, (r + rows) * inFeatures), rows, inFeatures, true, Infinity) as TensorLinear);
    }
    return { kind: 'split', blocks, inFeatures, outFeatures };
  }
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
  if (l.kind === 'split') return tf.tidy(() => tf.concat(l.blocks.map((b) => linear(x, b)), 1));
  const T = x.shape[0];
  return tf.tensor2d(matmul(x.dataSync() as Float32Array, T, l.matrix), [T, l.outFeatures]);
}

/** Bytes a Linear's weight holds (float32 tensor, or the stored width). */
export function linearBytes(l: Linear): number {
  if (l.kind === 'split') return l.blocks.reduce((n, b) => n + linearBytes(b), 0);
  return l.kind === 'tensor' ? 4 * l.weight.size : l.matrix.rows * l.matrix.cols * DTYPE_BYTES[l.matrix.dtype];
}

/** Keeps a tensor Linear's weights out of the enclosing tf.tidy. */
export function keepLinear(l: Linear): void {
  if (l.kind === 'tensor') tf.keep(l.weight);
  if (l.kind === 'split') for (const b of l.blocks) tf.keep(b.weight);
}

/** Frees a tensor Linear (stored weights go with their WeightMemory). */
export function disposeLinear(l: Linear): void {
  if (l.kind === 'tensor') l.weight.dispose();
  if (l.kind === 'split') for (const b of l.blocks) b.weight.dispose();
}

/**
 * Row-major `[rows, cols]` float32 data as row blocks the active backend can bind whole (one
 * block when it can bind the table): an embedding table for `gatherRows`.
 */
export function rowBlocks(data: Float32Array, rows: number, cols: number, limitBytes = bindingLimitBytes()): tf.Tensor2D[] {
  const step = 4 * data.length > limitBytes ? rowsPerBlock(cols, limitBytes) : rows;
  const blocks: tf.Tensor2D[] = [];
  for (let r = 0; r < rows; r += step) {
    const n = Math.min(step, rows - r);
    blocks.push(tf.tensor2d(data.subarray(r * cols, (r + n) * cols), [n, cols]));
  }
  return blocks;
}

/**
 * Rows `ids` of a table held as row blocks (all but the last of equal height): [ids, cols].
 * Each block gathers the ids that fall in it; a final gather puts the rows back in order.
 * Copies only, so the rows are exactly the table's.
 */
export function gatherRows(blocks: readonly tf.Tensor2D[], ids: readonly number[]): tf.Tensor2D {
  if (blocks.length === 1) return tf.tidy(() => tf.gather(blocks[0]!, tf.tensor1d(ids as number[], 'int32')));
  const step = blocks[0]!.shape[0];
  const byBlock = blocks.map(() => [] as number[]); // positions in ids, per block
  ids.forEach((id, t) => byBlock[Math.floor(id / step)]!.push(t));
  const back = new Int32Array(ids.length); // where each position's row lands in the concatenation
  let next = 0;
  return tf.tidy(() => {
    const parts: tf.Tensor2D[] = [];
    byBlock.forEach((ts, b) => {
      if (ts.length === 0) return;
      for (const t of ts) back[t] = next++;
      parts.push(tf.gather(blocks[b]!, tf.tensor1d(ts.map((t) => ids[t]! - b * step), 'int32')));
    });
    return tf.gather(tf.concat(parts, 0), tf.tensor1d(back, 'int32'));
  });
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
