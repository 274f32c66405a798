/**
 * Memory policy: how many bytes the weights take, and whether they stay resident.
 *
 * `resident` keeps every weight at its stored width (bf16: 2 bytes) in the simd kernels'
 * memory; `eager` turns every tensor into a float32 tf tensor at load (the plain tfjs
 * path); `stream` reads a layer's tensors from disk when the forward reaches it and frees
 * them after, so a checkpoint larger than memory runs layer by layer (the store itself is
 * `ModelWeights`). This module
 * is arithmetic only: it reads no file and holds no tensor.
 */
import * as os from 'node:os';
import * as tf from '@tensorflow/tfjs-core';
import type { KernelsName } from '../kernels/linear.js';
import type { ModelConfig } from './config.js';

export type Residency = 'resident' | 'eager' | 'stream';

/** float32 bytes the weights take in each residency mode (activations not counted). */
export interface MemoryEstimate {
  /** Every weight resident: 4 bytes × parameters. */
  readonly eager: number;
  /** The largest decoder layer (Mixtral: with all its experts, the prefill worst case). */
  readonly layer: number;
  /** The final norm and the unembedding, resident while the logits are computed. */
  readonly head: number;
  /** The largest single tensor: one transient float32 copy is in flight while it loads. */
  readonly largestTensor: number;
  /** Stream-mode peak: one layer or the head, plus one tensor in flight. */
  readonly stream: number;
}

export function estimateMemory(c: ModelConfig): MemoryEstimate {
  // Arithmetic, not a walk over expectedTensors: a config may claim 10^9 layers.
  const H = c.hiddenSize;
  const E = c.numExperts ?? 1;
  const q = c.numHeads * c.headDim * H;
  const kv = c.numKvHeads * c.headDim * H;
  const mlp = c.intermediateSize * H; // one of gate / up / down (per expert)
  const layer = 2 * H + 2 * q + 2 * kv + 3 * mlp * E + (c.numExperts === null ? 0 : E * H);
  const table = c.vocabSize * H;
  const eager = c.numLayers * layer + table * (c.tieWordEmbeddings ? 1 : 2) + H;
  const largest = Math.max(table, mlp, q);
  return { eager: 4 * eager, layer: 4 * layer, head: 4 * (table + H), largestTensor: 4 * largest, stream: 4 * (Math.max(layer, table + H) + largest) };
}

/** tfjs-wasm is a 32-bit heap: 4 GiB at most, shared with activations and copies. */
export const WASM_EAGER_LIMIT = 2 * 2 ** 30;

/** Resident weights may take this share of free memory; the rest is for activations and caches. */
export const RESIDENT_SHARE = 0.85;

/** What a checkpoint weighs, from its headers. */
export interface CheckpointSize {
  /** Bytes of tensor data as stored (bf16: 2 per parameter). */
  readonly storedBytes: number;
  /** 4 × parameters. */
  readonly float32Bytes: number;
}

const gb = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);

/**
 * The automatic residency choice.
 *
 * simd kernels: `resident` when the stored bytes fit in RESIDENT_SHARE of free memory, else
 * `stream`. tfjs kernels: `eager` when every float32 weight fits in half the free memory
 * (loading briefly holds a second copy of a tensor, and the forward needs room for
 * activations) and, on wasm, in its 32-bit heap; otherwise `stream`.
 *
 * @param freeBytes `os.freemem()` (Linux: MemAvailable)
 */
export function chooseResidency(size: CheckpointSize, freeBytes: number, backend: string, kernels: KernelsName = 'simd'):
  { weights: Residency; reason: string } {
  if (kernels === 'simd') {
    const stored = `stored weights ${gb(size.storedBytes)}`;
    if (size.storedBytes > RESIDENT_SHARE * freeBytes) {
      return { weights: 'stream', reason: `${stored} exceed ${RESIDENT_SHARE * 100}% of the ${gb(freeBytes)} free memory` };
    }
    return { weights: 'resident', reason: `${stored} fit in the ${gb(freeBytes)} free memory` };
  }
  const size32 = `float32 weights ${gb(size.float32Bytes)}`;
  if (backend === 'wasm' && size.float32Bytes > WASM_EAGER_LIMIT) {
    return { weights: 'stream', reason: `${size32} exceed the ${gb(WASM_EAGER_LIMIT)} the wasm heap can hold` };
  }
  if (size.float32Bytes > freeBytes / 2) {
    return { weights: 'stream', reason: `${size32} exceed half of the ${gb(freeBytes)} free memory` };
  }
  return { weights: 'eager', reason: `${size32} fit in half of the ${gb(freeBytes)} free memory` };
}

/**
 * Why an explicitly asked-for mode cannot work here, before a byte is loaded: null when
 * it can. Names the size needed and a mode that fits.
 */
export function residencyProblem(weights: Residency, size: CheckpointSize, freeBytes: number, backend: string): string | null {
  const fits = chooseResidency(size, freeBytes, backend, 'simd').weights === 'resident' ? 'resident' : 'stream';
  if (weights === 'eager' && backend === 'wasm' && size.float32Bytes > WASM_EAGER_LIMIT) {
    return `--weights eager needs ${gb(size.float32Bytes)} of float32 weights in the wasm heap, which holds ${gb(WASM_EAGER_LIMIT)} of them; ` +
      `use --weights ${fits} (${fits === 'resident' ? `${gb(size.storedBytes)} at stored width` : 'a layer at a time'})`;
  }
  if (weights === 'eager' && size.float32Bytes > freeBytes) {
    return `--weights eager needs ${gb(size.float32Bytes)} of float32 weights, more than the ${gb(freeBytes)} free memory; ` +
      `use --weights ${fits} (${fits === 'resident' ? `${gb(size.storedBytes)} at stored width` : 'a layer at a time'})`;
  }
  if (weights === 'resident' && size.storedBytes > freeBytes) {
    return `--weights resident needs ${gb(size.storedBytes)} for the stored weights, more than the ${gb(freeBytes)} free memory; use --weights stream`;
  }
  return null;
}

/** What stream mode on the simd kernels keeps in kernel memory between uses. */
export interface StoredStreamPlan {
  /**
   * Mixtral: keep everything but the experts (attention, router, unembedding) once read, so
   * that decode reads only the experts it misses. Dense models stream every layer.
   */
  readonly keepShared: boolean;
  /** Bytes of experts at their stored width kept between uses, least recently used out. */
  readonly expertCacheBytes: number;
}

/**
 * Stream mode on the simd kernels (weights at their stored width in kernel memory). For
 * Mixtral 8x7B in bf16 the weights outside the experts are 3 GB of 93: they stay once read
 * when they take at most half of RESIDENT_SHARE of free memory, and the experts get the rest
 * of that share. The embedding table is not counted: stream mode reads only the rows it needs.
 *
 * @param bytesPerParam the checkpoint's stored width (bf16: 2)
 */
export function storedStreamPlan(c: ModelConfig, bytesPerParam: number, freeBytes = os.freemem()): StoredStreamPlan {
  if (c.numExperts === null) return { keepShared: false, expertCacheBytes: 0 };
  const H = c.hiddenSize;
  const perLayer = 2 * c.numHeads * c.headDim * H + 2 * c.numKvHeads * c.headDim * H + c.numExperts * H;
  const shared = bytesPerParam * (c.numLayers * perLayer + c.vocabSize * H);
  const budget = RESIDENT_SHARE * freeBytes;
  const keepShared = shared <= budget / 2;
  return { keepShared, expertCacheBytes: Math.max(0, budget - (keepShared ? shared : 0)) };
}

/**
 * Stream mode's expert cache (float32 tfjs tensors): half of what is free beyond the stream peak (one layer, the
 * head and a tensor in flight); on wasm at most 1 GiB, which its 4 GiB heap can spare beside a layer.
 * Dense models have no experts to keep: 0.
 */
export function defaultExpertCacheBytes(c: ModelConfig, freeBytes = os.freemem(), backend = tf.getBackend()): number {
  if (c.numExperts === null) return 0;
  const spare = Math.max(0, (freeBytes - estimateMemory(c).stream) / 2);
  return backend === 'wasm' ? Math.min(spare, 2 ** 30) : spare;
}
