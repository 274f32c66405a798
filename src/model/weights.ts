/**
 * The weight store: model weights by canonical (Hugging Face) name, whatever the
 * checkpoint layout (names and RoPE rows are mapped by `tensorSource`, src/model/layout.ts).
 *
 * Residency (the policy is src/model/residency.ts):
 * - `resident`: every projection and the embedding table stay at their stored width (bf16,
 *   f16 or f32) in kernel memory (src/kernels/simd/), read from the files straight into it;
 *   norms become small float32 tensors. A 7B bf16 checkpoint takes its 14.5 GB, not 29.
 * - `eager`: every tensor becomes a float32 tf tensor at load (the plain tfjs path).
 * - `stream`: a layer's tensors are read when the forward reaches it and freed after
 *   (`releaseLayer`). A Mixtral expert is read only when a token is routed to it, and kept
 *   in an expert cache while spare memory allows (least recently used out; a budget of 0
 *   keeps one expert at a time): decode reuses a layer's favourite experts token after token.
 *   On the simd kernels the tensors are read at their stored width into kernel memory (freed
 *   slots are reused by the next tensor of the same size), and Mixtral keeps everything but
 *   the experts once read when it fits (`storedStreamPlan`); on the tfjs kernels they
 *   become float32 tensors.
 */
import * as tf from '@tensorflow/tfjs-core';
import { disposeLinear, gatherRows, keepLinear, linearBytes, makeLinear, rowBlocks, storedLinear, type KernelsName, type Linear, type StoredLinear } from '../kernels/linear.js';
import { WeightMemory } from '../kernels/simd/arena.js';
import { DTYPE_BYTES, toQuads, type StoredMatrix, type WeightDType } from '../kernels/simd/matmul.js';
import type { AttentionWeights } from './attention.js';
import type { ModelConfig } from './config.js';
import type { FeedForwardWeights } from './feedforward.js';
import { dtypeSize, firstNonFinite, halfToFloat, NONFINITE_BITS } from '../io/safetensors.js';
import type { TensorSource } from './layout.js';
import { expectedTensors } from './schema.js';
import type { MoeWeights } from './moe.js';
import type { Residency } from './residency.js';

/** The embedding table: read a row at a time (embed()), the unembedding too when tied. */
const EMBED = 'model.embed_tokens.weight';

export interface LayerWeights {
  readonly inputNorm: tf.Tensor1D;
  readonly postNorm: tf.Tensor1D;
  readonly attn: AttentionWeights;
  /** Dense layers. */
  readonly mlp?: FeedForwardWeights;
  /** Mixtral layers. */
  readonly moe?: MoeWeights;
}

/** How the stream-mode expert cache did: lookups that found the expert resident, or read it. */
export interface ExpertCacheStats {
  hits: number;
  misses: number;
  /** Bytes of expert weights read from the files (at their stored width). */
  bytesRead: number;
  /** Bytes of expert weights held now (at their stored width on the simd kernels, else float32). */
  heldBytes: number;
  readonly budgetBytes: number;
}

/** How a ModelWeights holds its tensors. */
export interface WeightOptions {
  readonly residency: Residency;
  /**
   * Stream mode: `simd` reads each tensor at its stored width into kernel memory, `tfjs` as a
   * float32 tensor. (Resident is always simd, eager always tfjs.)
   */
  readonly kernels: KernelsName;
  /** Resident loading: called with the bytes read so far, after each tensor. */
  readonly onProgress?: (loadedBytes: number) => void;
  /** Stream mode: bytes of experts to keep between uses (0: one expert at a time). */
  readonly expertCacheBytes?: number;
  /** Stream mode on the simd kernels: keep what is not an expert once read (Mixtral). */
  readonly keepShared?: boolean;
}

export class ModelWeights {
  // Two maps, because one name can be held twice: a tied embedding table is both the
  // gather table [vocab, hidden] and the unembedding Linear (laid out per backend).
  /** Norms [hidden] and the embedding table [vocab, hidden], as stored. */
  private readonly tensors = new Map<string, tf.Tensor>();
  /** Projections: float32 tensors laid out for the backend, or stored-width matrices in kernel memory. */
  private readonly linears = new Map<string, Linear>();

  readonly residency: Residency;
  /** Kernel memory of stored weights (resident, and stream on the simd kernels). */
  private readonly memory: WeightMemory | null;
  /** Stream mode: keep non-expert tensors once read. */
  private readonly keepShared: boolean;
  /** Stream mode: resident experts by name prefix, least recently used first (Map order). */
  private readonly experts = new Map<string, number>();
  /** Stored tensors whose bytes were checked for NaN / ±Inf when first read (see store()). */
  private readonly checkedFinite = new Set<string>();
  readonly expertCache: ExpertCacheStats;
  /** Bytes read from the checkpoint files so far, at their stored width (stream mode: grows every token). */
  bytesRead = 0;

  constructor(readonly config: ModelConfig, private readonly src: TensorSource, opts: WeightOptions) {
    const residency = this.residency = opts.residency;
    const stored = residency === 'resident' || (residency === 'stream' && opts.kernels === 'simd');
    this.memory = stored ? new WeightMemory() : null;
    this.keepShared = residency === 'stream' && stored && opts.keepShared === true;
    this.expertCache = { hits: 0, misses: 0, bytesRead: 0, heldBytes: 0, budgetBytes: residency === 'stream' ? opts.expertCacheBytes ?? 0 : 0 };
    try {
      if (residency === 'resident') this.loadResident(opts.onProgress);
      if (residency === 'eager') this.loadEager();
    } catch (e) {
      this.dispose(); // what loaded before the failure (a full heap, a bad file) is freed, not leaked
      throw e;
    }
  }

  /** Embedding rows of `ids`: [tokens, hidden]. Stream mode reads just those rows. */
  embed(ids: readonly number[]): tf.Tensor2D {
    const H = this.config.hiddenSize;
    if (this.residency === 'eager') return gatherRows(this.table(EMBED, this.config.vocabSize, H), ids);
    if (this.residency === 'resident') {
      const { matrix } = this.linears.get(EMBED) as StoredLinear;
      const rows = new Float32Array(ids.length * H);
      ids.forEach((id, t) => widenRow(matrix.arena.memory.buffer, matrix.ptr + id * H * DTYPE_BYTES[matrix.dtype], H, matrix.dtype, rows.subarray(t * H, (t + 1) * H)));
      return tf.tensor2d(rows, [ids.length, H]);
    }
    const rows = new Float32Array(ids.length * H);
    ids.forEach((id, t) => rows.set(this.read(EMBED, id * H, H), t * H));
    return tf.tensor2d(rows, [ids.length, H]);
  }

  layer(l: number): LayerWeights {
    const c = this.config;
    const p = `model.layers.${l}.`;
    const attn: AttentionWeights = {
      q: this.linear(p + 'self_attn.q_proj.weight'),
      k: this.linear(p + 'self_attn.k_proj.weight'),
      v: this.linear(p + 'self_attn.v_proj.weight'),
      o: this.linear(p + 'self_attn.o_proj.weight'),
    };
    const swiglu = (gate: string, up: string, down: string): FeedForwardWeights => ({
      gate: this.linear(gate), up: this.linear(up), down: this.linear(down),
    });
    const base = { inputNorm: this.norm(p + 'input_layernorm.weight'), postNorm: this.norm(p + 'post_attention_layernorm.weight'), attn };
    if (c.numExperts === null) {
      return { ...base, mlp: swiglu(p + 'mlp.gate_proj.weight', p + 'mlp.up_proj.weight', p + 'mlp.down_proj.weight') };
    }
    const e = (i: number) => `${p}block_sparse_moe.experts.${i}.`;
    return {
      ...base,
      moe: {
        router: this.linear(p + 'block_sparse_moe.gate.weight'),
        numExperts: c.numExperts,
        expert: (i) => {
          if (this.residency === 'stream') this.useExpert(e(i));
          return swiglu(e(i) + 'w1.weight', e(i) + 'w3.weight', e(i) + 'w2.weight');
        },
      },
    };
  }

  /** Whether the projections are stored-width matrices in kernel memory (the simd kernels run them). */
  get stored(): boolean {
    return this.memory !== null;
  }

  /** Final norm weight [hidden]. */
  finalNorm(): tf.Tensor1D {
    return this.norm('model.norm.weight');
  }

  /** Unembedding [vocab, hidden] (the embedding table when tied). */
  lmHead(): Linear {
    return this.config.tieWordEmbeddings ? this.linear(EMBED) : this.linear('lm_head.weight');
  }

  /** Stream mode: frees layer l's tensors, but for cached experts and kept shared ones (no-op otherwise). */
  releaseLayer(l: number): void {
    if (this.residency !== 'stream') return;
    this.releaseWhere((name) => {
      if (!name.startsWith(`model.layers.${l}.`)) return false;
      const expert = expertOf(name);
      return expert === '' ? !this.keepShared : !this.experts.has(expert);
    });
  }

  /**
   * Stream mode: expert `prefix` is about to run. A cached one moves to the recently used
   * end; a new one is read (by the caller, through linear()) after the least recently used
   * experts make room for it. The MoE runs each expert to completion before asking for the
   * next (tfjs executes ops eagerly), so freeing another expert here is safe, and with a
   * budget of 0 a Mixtral layer needs one expert resident, not 8.
   */
  private useExpert(prefix: string): void {
    const stats = this.expertCache;
    const held = this.experts.get(prefix);
    if (held !== undefined) {
      stats.hits++;
      this.experts.delete(prefix);
      this.experts.set(prefix, held);
      return;
    }
    stats.misses++;
    const stored = (name: string) => this.src.shape(name)!.reduce((a, b) => a * b, 1) * dtypeSize(this.src.dtype(name))!;
    const storedBytes = ['w1', 'w2', 'w3'].reduce((a, w) => a + stored(`${prefix}${w}.weight`), 0);
    const bytes = this.memory !== null ? storedBytes : 4 * 3 * this.config.intermediateSize * this.config.hiddenSize;
    for (const [old, oldBytes] of this.experts) {
      if (stats.heldBytes + bytes <= stats.budgetBytes) break;
      this.experts.delete(old);
      stats.heldBytes -= oldBytes;
      this.releaseWhere((name) => name.startsWith(old));
    }
    this.experts.set(prefix, bytes);
    stats.heldBytes += bytes;
    stats.bytesRead += storedBytes;
  }

  /** Stream mode: frees the final norm and the unembedding (unless shared tensors are kept). */
  releaseHead(): void {
    if (this.residency !== 'stream' || this.keepShared) return;
    this.releaseWhere((name) => !name.startsWith('model.layers.'));
  }

  /** Bytes of weights currently held: float32 tensors, and stored weights at their width. */
  get residentBytes(): number {
    let n = 0;
    for (const t of this.tensors.values()) n += 4 * t.size;
    // A Set: a tied table is one Linear held under two names.
    for (const l of new Set(this.linears.values())) n += linearBytes(l);
    return n;
  }

  /** Bytes of kernel memory reserved (resident mode; activation scratch included). */
  get kernelMemoryBytes(): number {
    return this.memory?.bytes ?? 0;
  }

  dispose(): void {
    this.releaseWhere(() => true);
    this.experts.clear();
    this.expertCache.heldBytes = 0;
    this.memory?.dispose();
  }

  /** Eager mode: every tensor as a float32 tf tensor, now. */
  private loadEager(): void {
    const c = this.config;
    this.table(EMBED, c.vocabSize, c.hiddenSize);
    for (let l = 0; l < c.numLayers; l++) {
      const w = this.layer(l);
      if (w.moe) for (let e = 0; e < w.moe.numExperts; e++) w.moe.expert(e);
    }
    this.norm('model.norm.weight');
    this.lmHead();
  }

  /**
   * Resident mode: reads every projection and the embedding table into kernel memory at
   * their stored width, tensor by tensor in checkpoint order; norms become float32 tensors.
   */
  private loadResident(onProgress?: (loadedBytes: number) => void): void {
    const c = this.config;
    let loaded = 0;
    for (const name of expectedTensors(c).keys()) {
      if (name.endsWith('layernorm.weight') || name === 'model.norm.weight') {
        this.norm(name);
        continue;
      }
      loaded += linearBytes(this.store(name));
      onProgress?.(loaded);
    }
    if (c.tieWordEmbeddings) this.linears.set('lm_head.weight', this.linears.get(EMBED)!);
  }

  /** Reads projection `name` at its stored width into kernel memory. */
  private store(name: string): StoredLinear {
    const shape = this.src.shape(name)!; // [out, in]
    const dtype = weightDType(this.src.dtype(name));
    const bytes = shape[0]! * shape[1]! * DTYPE_BYTES[dtype];
    const a = this.memory!.alloc(bytes);
    try {
      // The non-finite check runs in the kernels (SIMD, at memory speed) over the bytes just
      // read, once per tensor: stream mode reads a missed expert again token after token, and
      // scanning it each time cost as much as multiplying by it.
      this.src.readInto(name, a.arena.bytes(a.ptr, bytes), this.checkedFinite.has(name) ? () => false : (b, d) => {
        const { mask, add, flag } = NONFINITE_BITS[d];
        const main = b.length - (b.length % 64);
        return a.arena.kernels.nonfinite(a.ptr, main, mask, add, flag) !== 0 || firstNonFinite(b.subarray(main), d) >= 0;
      });
    } catch (e) {
      this.memory!.free(a, bytes);
      throw e;
    }
    this.checkedFinite.add(name);
    this.bytesRead += bytes;
    const m: StoredMatrix = { arena: a.arena, ptr: a.ptr, rows: shape[0]!, cols: shape[1]!, dtype };
    // Resident projections of 2-byte weights as quads, for decode's reads (matmul.ts). Not
    // the embedding table (embed() reads single rows of it), and not in stream mode: there a
    // tensor is read for one use, and the extra pass over its bytes cost more than the faster
    // reads gave back (Mixtral's 2-layer slice, two threads: 4.36 → 2.95 tok/s).
    const quads = this.residency === 'resident' && DTYPE_BYTES[dtype] === 2 && name !== EMBED;
    const l = storedLinear(quads ? toQuads(m) : m);
    this.linears.set(name, l);
    return l;
  }

  private releaseWhere(pred: (name: string) => boolean): void {
    for (const [name, t] of this.tensors) {
      if (!pred(name)) continue;
      t.dispose();
      this.tensors.delete(name);
    }
    for (const [name, l] of this.linears) {
      if (!pred(name)) continue;
      this.linears.delete(name);
      // Stream mode: the slot goes back for the next tensor of its size (resident weights go with their memory).
      if (l.kind === 'stored' && this.residency === 'stream') this.memory!.free(l.matrix, linearBytes(l));
      else disposeLinear(l);
    }
  }

  private tensor(name: string, shape: number[]): tf.Tensor {
    let t = this.tensors.get(name);
    if (t === undefined) {
      t = tf.keep(tf.tensor(this.read(name), shape)); // freed by release*/dispose, not by a tidy
      this.tensors.set(name, t);
    }
    return t;
  }

  /**
   * A gather table as row blocks the backend can bind (one block but on webgpu with a table
   * over its binding limit), held in `tensors` as `name`, `name#1`, `name#2`, …
   */
  private table(name: string, rows: number, cols: number): tf.Tensor2D[] {
    const held = this.tensors.get(name);
    if (held === undefined) {
      const blocks = rowBlocks(this.read(name), rows, cols);
      blocks.forEach((b, k) => this.tensors.set(k === 0 ? name : `${name}#${k}`, tf.keep(b)));
      return blocks;
    }
    const blocks = [held as tf.Tensor2D];
    for (let t; (t = this.tensors.get(`${name}#${blocks.length}`)) !== undefined;) blocks.push(t as tf.Tensor2D);
    return blocks;
  }

  /** Reads (part of) a tensor as float32, counting the stored bytes read. */
  private read(name: string, start?: number, count?: number): Float32Array {
    const data = this.src.read(name, start, count);
    this.bytesRead += data.length * dtypeSize(this.src.dtype(name))!;
    return data;
  }

  private norm(name: string): tf.Tensor1D {
    return this.tensor(name, [this.config.hiddenSize]) as tf.Tensor1D;
  }

  private linear(name: string): Linear {
    if (this.residency === 'resident') {
      // Tied embeddings: the unembedding is the table itself, stored once.
      const key = name === EMBED && this.config.tieWordEmbeddings ? 'lm_head.weight' : name;
      return this.linears.get(key)!;
    }
    let l = this.linears.get(name);
    if (l === undefined && this.memory !== null) return this.store(name);
    if (l === undefined) {
      const shape = this.src.shape(name)!; // [out, in]
      l = makeLinear(this.read(name), shape[0]!, shape[1]!);
      keepLinear(l);
      this.linears.set(name, l);
    }
    return l;
  }
}

/** The kernels' name for a checkpoint dtype. */
export function weightDType(dtype: string): WeightDType {
  const d = ({ BF16: 'bf16', F16: 'f16', F32: 'f32' } as const)[dtype as 'BF16' | 'F16' | 'F32'];
  if (d === undefined) throw new RangeError(`dtype ${dtype} cannot be kept resident (supported: BF16, F16, F32)`);
  return d;
}

/** Widens one row of `n` stored values at byte `ptr` of `buffer` into `out`. */
function widenRow(buffer: ArrayBufferLike, ptr: number, n: number, dtype: WeightDType, out: Float32Array): void {
  if (dtype === 'f32') {
    out.set(new Float32Array(buffer, ptr, n));
    return;
  }
  const src = new Uint16Array(buffer, ptr, n);
  if (dtype === 'bf16') {
    const bits = new Uint32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) bits[i] = src[i]! << 16;
  } else {
    for (let i = 0; i < n; i++) out[i] = halfToFloat(src[i]!);
  }
}

/** The expert prefix (`model.layers.L.block_sparse_moe.experts.E.`) of a tensor name, or '' when none. */
function expertOf(name: string): string {
  return /^model\.layers\.\d+\.block_sparse_moe\.experts\.\d+\./.exec(name)?.[0] ?? '';
}
