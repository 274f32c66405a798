/**
 * The native-layout adapter: canonical (Hugging Face) names over a checkpoint of any layout.
 *
 * The one place where layouts differ: Mistral's consolidated names map to HF names, and
 * the rows of wq / wk are permuted per head from Mistral's interleaved RoPE pairs
 * (x[2p], x[2p+1]) to HF's rotate-half pairs (x[p], x[p + d/2]). Everything past
 * `tensorSource` sees HF names and HF row order only.
 */
import type { Checkpoint, TensorStore } from '../io/checkpoint.js';
import { isFloatDType, throwIfNonFinite, type FloatDType } from '../io/safetensors.js';
import type { ModelConfig } from './config.js';

/** Where the data of one canonical tensor comes from. */
export interface TensorSource {
  /** Shape as stored (same in every layout). */
  shape(name: string): readonly number[] | undefined;
  /** Stored dtype (F32, F16, BF16). */
  dtype(name: string): string;
  /** float32 copy of the tensor, or of `count` elements from element `start`, in HF row order. */
  read(name: string, start?: number, count?: number): Float32Array;
  /**
   * The stored bytes into `out` (exactly the tensor's size), in HF row order. `mayBeNonFinite`
   * is a fast first test of the bytes read (the kernels' SIMD scan); only when it says yes are
   * they searched in JS for the element to name.
   */
  readInto(name: string, out: Uint8Array, mayBeNonFinite?: (bytes: Uint8Array, dtype: FloatDType) => boolean): void;
}

/** HF name → Mistral native name (inverse of what HF's converter does). */
export function nativeName(hf: string): string {
  const fixed: Record<string, string> = {
    'model.embed_tokens.weight': 'tok_embeddings.weight',
    'model.norm.weight': 'norm.weight',
    'lm_head.weight': 'output.weight',
  };
  if (fixed[hf] !== undefined) return fixed[hf];
  const m = /^model\.layers\.(\d+)\.(.+)$/.exec(hf);
  if (m === null) return hf;
  const parts: Record<string, string> = {
    'input_layernorm.weight': 'attention_norm.weight',
    'post_attention_layernorm.weight': 'ffn_norm.weight',
    'self_attn.q_proj.weight': 'attention.wq.weight',
    'self_attn.k_proj.weight': 'attention.wk.weight',
    'self_attn.v_proj.weight': 'attention.wv.weight',
    'self_attn.o_proj.weight': 'attention.wo.weight',
    'mlp.gate_proj.weight': 'feed_forward.w1.weight',
    'mlp.down_proj.weight': 'feed_forward.w2.weight',
    'mlp.up_proj.weight': 'feed_forward.w3.weight',
    'block_sparse_moe.gate.weight': 'feed_forward.gate.weight',
  };
  const rest = parts[m[2]!] ?? m[2]!.replace(/^block_sparse_moe\.experts\./, 'feed_forward.experts.');
  return `layers.${m[1]}.${rest}`;
}

/**
 * Row permutation between the RoPE layouts, per head of size d:
 * HF row h·d + i·d/2 + p  ←  native row h·d + 2p + i   (i ∈ {0, 1}, p < d/2).
 * @returns for each HF row, the native row it comes from
 */
function nativeRowOfHfRow(heads: number, d: number): Int32Array {
  const from = new Int32Array(heads * d);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < 2; i++) {
      for (let p = 0; p < half; p++) from[h * d + i * half + p] = h * d + 2 * p + i;
    }
  }
  return from;
}

/** out row r = data row rows[r] (or, `inverse`, out row rows[r] = data row r); rows of `len` elements. */
function permuteRows<T extends Float32Array | Uint8Array>(data: T, out: T, rows: Int32Array, len: number, inverse = false): T {
  rows.forEach((src, r) => {
    const [to, from] = inverse ? [src, r] : [r, src];
    out.set(data.subarray(from * len, (from + 1) * len), to * len);
  });
  return out;
}

/** @param data [heads·d, cols] row-major, native row order */
export function permuteNativeToHf(data: Float32Array, heads: number, d: number, cols: number): Float32Array {
  return permuteRows(data, new Float32Array(data.length), nativeRowOfHfRow(heads, d), cols);
}

/** The inverse of permuteNativeToHf (HF's converter direction reversed). */
export function permuteHfToNative(data: Float32Array, heads: number, d: number, cols: number): Float32Array {
  return permuteRows(data, new Float32Array(data.length), nativeRowOfHfRow(heads, d), cols, true);
}

/** permuteNativeToHf in place on stored bytes (any dtype): rows of `rowBytes` bytes. */
export function permuteRowsNativeToHf(data: Uint8Array, heads: number, d: number, rowBytes: number): void {
  permuteRows(data.slice(), data, nativeRowOfHfRow(heads, d), rowBytes);
}

/**
 * Canonical-name access to a checkpoint of any layout. Every read is checked for NaN and
 * ±Inf as it arrives (float32 reads while they are widened, stored-width reads by the
 * caller's fast scan): a non-finite weight would otherwise produce a confident wrong answer
 * (argmax over NaN logits is id 0), so it is a CheckpointError naming the tensor and the
 * first bad element.
 */
export function tensorSource(ckpt: Checkpoint, c: ModelConfig): TensorSource {
  const store: TensorStore = ckpt.store;
  const native = ckpt.layout === 'native';
  const stored = (name: string) => (native ? nativeName(name) : name);
  // q and k rows of a native checkpoint are permuted per head; every other tensor is stored as HF stores it.
  const ropeHeads = (name: string) => (!native ? null : name.endsWith('self_attn.q_proj.weight') ? c.numHeads
    : name.endsWith('self_attn.k_proj.weight') ? c.numKvHeads : null);
  return {
    shape: (name) => (store.has(stored(name)) ? store.info(stored(name)).shape : undefined),
    dtype: (name) => store.info(stored(name)).dtype,
    read: (name, start = 0, count) => {
      const data = store.readFloat32(stored(name), start, count, { finite: true }); // checked while widened
      const heads = ropeHeads(name);
      return heads === null ? data : permuteNativeToHf(data, heads, c.headDim, c.hiddenSize);
    },
    readInto: (name, out, mayBeNonFinite) => {
      store.readInto(stored(name), out);
      const info = store.info(stored(name));
      if (isFloatDType(info.dtype) && (mayBeNonFinite?.(out, info.dtype) ?? true)) throwIfNonFinite(info, out, info.dtype, 0);
      const heads = ropeHeads(name);
      if (heads !== null) permuteRowsNativeToHf(out, heads, c.headDim, out.length / (heads * c.headDim));
    },
  };
}
