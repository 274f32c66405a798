/**
 * Gradients and chained ops for tfjs-core, which loads neither by default: `tf.grad`
 * through a forward needs every op's gradient registered, and the gradients themselves
 * call chained ops (`dy.mul(…)`).
 *
 * The wasm backend lacks one kernel the gradients use: UnsortedSegmentSum (the gradient of
 * gather, which the embedding and the mixture of experts use). Ours is a plain loop over
 * rows; test/gradients.test.ts checks it against the cpu backend's.
 */
import * as tf from '@tensorflow/tfjs-core';
// Types only: the declarations of the chained ops (tensor.gather(…)) the bundle registers.
import type {} from '@tensorflow/tfjs-core/dist/public/chained_ops/register_all_chained_ops.js';
import './tfjs-gradients.generated.js';

interface WasmBackendLike extends tf.KernelBackend {
  readSync(dataId: tf.DataId): tf.backend_util.BackendValues;
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
}

/**
 * out[s, …] = Σ over i with segmentIds[i] = s of x[i, …]; ids outside [0, numSegments)
 * are dropped (TensorFlow's rule). x: [n, …rest], segmentIds: [n] → [numSegments, …rest].
 */
export function unsortedSegmentSumRows(x: Float32Array | Int32Array, ids: ArrayLike<number>, numSegments: number,
  row: number, dtype: 'float32' | 'int32'): Float32Array | Int32Array {
  const out = dtype === 'int32' ? new Int32Array(numSegments * row) : new Float32Array(numSegments * row);
  for (let i = 0; i < ids.length; i++) {
    const s = ids[i]!;
    if (s < 0 || s >= numSegments) continue;
    for (let j = 0; j < row; j++) out[s * row + j]! += x[i * row + j]!;
  }
  return out;
}

function registerWasmSegmentSum(): void {
  if (tf.getKernel('UnsortedSegmentSum', 'wasm') !== undefined) return;
  tf.registerKernel({
    kernelName: 'UnsortedSegmentSum',
    backendName: 'wasm',
    kernelFunc: ({ inputs, backend, attrs }) => {
      const b = backend as WasmBackendLike;
      const { x, segmentIds } = inputs as { x: tf.TensorInfo; segmentIds: tf.TensorInfo };
      const { numSegments } = attrs as unknown as { numSegments: number };
      if (segmentIds.shape.length !== 1 || segmentIds.shape[0] !== x.shape[0]) {
        throw new Error(`UnsortedSegmentSum (wasm): segmentIds must be [${x.shape[0]}], got [${segmentIds.shape}]`);
      }
      const row = x.shape.slice(1).reduce((a, d) => a * d, 1);
      const dtype = x.dtype === 'int32' ? 'int32' : 'float32';
      const values = unsortedSegmentSumRows(b.readSync(x.dataId) as Float32Array, b.readSync(segmentIds.dataId) as Int32Array,
        numSegments, row, dtype);
      return b.makeOutput([numSegments, ...x.shape.slice(1)], dtype, undefined, values);
    },
  });
}

registerWasmSegmentSum();
