/**
 * Model weights by canonical (Hugging Face) name, whatever the checkpoint layout.
 *
 * The one place where layouts differ is `nativeSource`: Mistral's consolidated names map
 * to HF names, and the rows of wq / wk are permuted per head from Mistral's interleaved
 * RoPE pairs (x[2p], x[2p+1]) to HF's rotate-half pairs (x[p], x[p + d/2]).
 *
 * Residency: `eager` turns every tensor into a float32 tf tensor at load; `stream` reads a
 * layer's tensors from disk when the forward reaches it and frees them after
 * (`releaseLayer`), so a checkpoint larger than memory runs layer by layer. In stream mode
 * a Mixtral expert is read only when a token is routed to it, and only one expert of a
 * layer is resident at a time.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Checkpoint, TensorStore } from '../io/checkpoint.js';
import { FLOAT_DTYPES, isFloatDType } from '../io/safetensors.js';
import { makeLinear, type Linear } from '../kernels/linear.js';
import type { AttentionWeights } from './attention.js';
import type { ModelConfig } from './config.js';
import { WeightError } from './errors.js';
import type { FeedForwardWeights } from './feedforward.js';
import type { MoeWeights } from './moe.js';

export type Residency = 'eager' | 'stream';

/** Where the float32 data of one canonical tensor comes from. */
export interface TensorSource {
  /** Shape as stored (same in every layout). */
  shape(name: string): readonly number[] | undefined;
  read(name: string, start?: number, count?: number): Float32Array;
}

/** Every canonical tensor name the config implies, with its expected shape. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const H = c.hiddenSize;
  m.set('model.embed_tokens.weight', [c.vocabSize, H]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(p + 'input_layernorm.weight', [H]);
    m.set(p + 'post_attention_layernorm.weight', [H]);
    m.set(p + 'self_attn.q_proj.weight', [c.numHeads * c.headDim, H]);
    m.set(p + 'self_attn.k_proj.weight', [c.numKvHeads * c.headDim, H]);
    m.set(p + 'self_attn.v_proj.weight', [c.numKvHeads * c.headDim, H]);
    m.set(p + 'self_attn.o_proj.weight', [H, c.numHeads * c.headDim]);
    if (c.numExperts === null) {
      m.set(p + 'mlp.gate_proj.weight', [c.intermediateSize, H]);
      m.set(p + 'mlp.up_proj.weight', [c.intermediateSize, H]);
      m.set(p + 'mlp.down_proj.weight', [H, c.intermediateSize]);
    } else {
      m.set(p + 'block_sparse_moe.gate.weight', [c.numExperts, H]);
      for (let e = 0; e < c.numExperts; e++) {
        m.set(p + `block_sparse_moe.experts.${e}.w1.weight`, [c.intermediateSize, H]);
        m.set(p + `block_sparse_moe.experts.${e}.w3.weight`, [c.intermediateSize, H]);
        m.set(p + `block_sparse_moe.experts.${e}.w2.weight`, [H, c.intermediateSize]);
      }
    }
  }
  m.set('model.norm.weight', [H]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, H]);
  return m;
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
 * @param data [heads·d, cols] row-major
 */
export function permuteNativeToHf(data: Float32Array, heads: number, d: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < 2; i++) {
      for (let p = 0; p < half; p++) {
        const from = (h * d + 2 * p + i) * cols;
        out.set(data.subarray(from, from + cols), (h * d + i * half + p) * cols);
      }
    }
  }
  return out;
}

/** The inverse of permuteNativeToHf (HF's converter direction reversed). */
export function permuteHfToNative(data: Float32Array, heads: number, d: number, cols: number): Float32Array {
  const out = new Float32Array(data.length);
  const half = d / 2;
  for (let h = 0; h < heads; h++) {
    for (let i = 0; i < 2; i++) {
      for (let p = 0; p < half; p++) {
        const from = (h * d + i * half + p) * cols;
        out.set(data.subarray(from, from + cols), (h * d + 2 * p + i) * cols);
      }
    }
  }
  return out;
}

/** Canonical-name access to a checkpoint of any layout. */
export function tensorSource(ckpt: Checkpoint, c: ModelConfig): TensorSource {
  const store: TensorStore = ckpt.store;
  if (ckpt.layout !== 'native') {
    return {
      shape: (name) => (store.has(name) ? store.info(name).shape : undefined),
      read: (name, start, count) => store.readFloat32(name, start, count),
    };
  }
  return {
    shape: (name) => (store.has(nativeName(name)) ? store.info(nativeName(name)).shape : undefined),
    read: (name, start, count) => {
      const data = store.readFloat32(nativeName(name), start, count);
      if (name.endsWith('self_attn.q_proj.weight')) return permuteNativeToHf(data, c.numHeads, c.headDim, c.hiddenSize);
      if (name.endsWith('self_attn.k_proj.weight')) return permuteNativeToHf(data, c.numKvHeads, c.headDim, c.hiddenSize);
      return data;
    },
  };
}

/** One way a checkpoint's tensors disagree with its config. */
export interface TensorProblem {
  readonly kind: 'missing' | 'shape' | 'dtype' | 'extra';
  /** Name as stored in the checkpoint. */
  readonly tensor: string;
  /** The file that holds it (all files of the store for a missing one). */
  readonly file: string;
  readonly message: string;
}

/**
 * Every disagreement between the tensors and the config, in checkpoint order: missing
 * tensors, wrong shapes, dtypes that cannot become float32, and tensors the model never
 * reads (`extra`; harmless, reported by `inspect` only). Reads headers only.
 */
export function tensorProblems(ckpt: Checkpoint, c: ModelConfig): TensorProblem[] {
  const problems: TensorProblem[] = [];
  const store = ckpt.store;
  const stored = (name: string) => (ckpt.layout === 'native' ? nativeName(name) : name);
  const all = store.files.join(', ');

  // A config may claim 10^9 layers or experts: compare counts first, so the work below
  // stays bounded by what the files hold, not by what the config says.
  const names = store.names();
  const layers = distinct(names, /^(?:model\.)?layers\.(\d+)\./);
  const experts = distinct(names, /\.experts\.(\d+)\./);
  let checked = c;
  if (c.numLayers > layers) {
    problems.push({ kind: 'missing', tensor: stored(`model.layers.${layers}`) + (c.numLayers - 1 > layers ? `…${c.numLayers - 1}` : ''), file: all,
      message: `config says ${c.numLayers} layers, the files hold ${layers}` });
    checked = { ...checked, numLayers: layers };
  }
  if (c.numExperts !== null && c.numExperts > experts) {
    problems.push({ kind: 'missing', tensor: `experts.${experts}` + (c.numExperts - 1 > experts ? `…${c.numExperts - 1}` : ''), file: all,
      message: `config says ${c.numExperts} experts per layer, the files hold ${experts}` });
    checked = { ...checked, numExperts: experts };
  }

  const wanted = new Set<string>();
  for (const [name, want] of expectedTensors(checked)) {
    const key = stored(name);
    wanted.add(key);
    if (!store.has(key)) {
      problems.push({ kind: 'missing', tensor: key, file: all, message: `missing tensor (expected shape [${want}] from ${ckpt.configFile})` });
      continue;
    }
    const info = store.info(key);
    const got = info.shape;
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      problems.push({ kind: 'shape', tensor: key, file: info.file, message: `shape [${got}] does not fit the config: expected [${want}]` });
    } else if (!isFloatDType(info.dtype)) {
      problems.push({ kind: 'dtype', tensor: key, file: info.file, message: `dtype ${info.dtype} cannot be read as float32 (supported: ${FLOAT_DTYPES.join(', ')})` });
    }
  }
  for (const key of names) {
    if (!wanted.has(key)) {
      problems.push({ kind: 'extra', tensor: key, file: store.info(key).file, message: 'tensor not used by this config' });
    }
  }
  return problems;
}

/** Number of distinct values of the first group of `re` over `names`. */
function distinct(names: readonly string[], re: RegExp): number {
  const seen = new Set<string>();
  for (const n of names) {
    const m = re.exec(n);
    if (m) seen.add(m[1]!);
  }
  return seen.size;
}

/**
 * Checks presence, shape and dtype of every tensor before a byte of weights is read;
 * throws a WeightError for the first problem. Extra tensors are allowed (transformers
 * ignores them too, e.g. an old `rotary_emb.inv_freq`).
 */
export function validateTensors(ckpt: Checkpoint, c: ModelConfig, _src?: TensorSource): void {
  const p = tensorProblems(ckpt, c).find((x) => x.kind !== 'extra');
  if (p !== undefined) throw new WeightError(p.file, p.message, p.tensor);
}

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

/**
 * The automatic residency choice: eager when every float32 weight fits in half the free
 * memory (loading briefly holds a second copy of a tensor, and the forward needs room
 * for activations), and, on wasm, in its 32-bit heap; otherwise stream.
 *
 * @param float32Bytes 4 × parameters of the checkpoint
 * @param freeBytes `os.freemem()` (Linux: MemAvailable)
 */
export function chooseResidency(float32Bytes: number, freeBytes: number, backend: string): { weights: Residency; reason: string } {
  const gb = (n: number) => (n >= 2 ** 30 ? `${(n / 2 ** 30).toFixed(1)} GiB` : `${(n / 2 ** 20).toFixed(1)} MiB`);
  const size = `float32 weights ${gb(float32Bytes)}`;
  if (backend === 'wasm' && float32Bytes > WASM_EAGER_LIMIT) {
    return { weights: 'stream', reason: `${size} exceed the ${gb(WASM_EAGER_LIMIT)} the wasm heap can hold` };
  }
  if (float32Bytes > freeBytes / 2) {
    return { weights: 'stream', reason: `${size} exceed half of the ${gb(freeBytes)} free memory` };
  }
  return { weights: 'eager', reason: `${size} fit in half of the ${gb(freeBytes)} free memory` };
}

export interface LayerWeights {
  readonly inputNorm: tf.Tensor1D;
  readonly postNorm: tf.Tensor1D;
  readonly attn: AttentionWeights;
  /** Dense layers. */
  readonly mlp?: FeedForwardWeights;
  /** Mixtral layers. */
  readonly moe?: MoeWeights;
}

type Held = tf.Tensor | Linear;

export class ModelWeights {
  private readonly held = new Map<string, Held>();

  constructor(readonly config: ModelConfig, private readonly src: TensorSource, readonly residency: Residency) {
    if (residency === 'eager') {
      for (const name of expectedTensors(config).keys()) {
        if (name === 'model.embed_tokens.weight') this.vector(name, [config.vocabSize, config.hiddenSize]);
      }
      for (let l = 0; l < config.numLayers; l++) {
        const w = this.layer(l);
        if (w.moe) for (let e = 0; e < w.moe.numExperts; e++) w.moe.expert(e);
      }
      this.norm('model.norm.weight');
      this.lmHead();
    }
  }

  /** Embedding rows of `ids`: [tokens, hidden]. Stream mode reads just those rows. */
  embed(ids: readonly number[]): tf.Tensor2D {
    const H = this.config.hiddenSize;
    const name = 'model.embed_tokens.weight';
    if (this.residency === 'eager') {
      const table = this.vector(name, [this.config.vocabSize, H]) as tf.Tensor2D;
      return tf.tidy(() => tf.gather(table, tf.tensor1d(ids as number[], 'int32')));
    }
    const rows = new Float32Array(ids.length * H);
    ids.forEach((id, t) => rows.set(this.src.read(name, id * H, H), t * H));
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
          // Stream mode holds one expert at a time: asking for expert i frees the one asked
          // for before it. The MoE runs each expert to completion before asking for the next
          // (tfjs executes ops eagerly), so a Mixtral layer needs 1 expert resident, not 8.
          if (this.residency === 'stream') this.releaseWhere((name) => name.startsWith(`${p}block_sparse_moe.experts.`) && !name.startsWith(e(i)));
          return swiglu(e(i) + 'w1.weight', e(i) + 'w3.weight', e(i) + 'w2.weight');
        },
      },
    };
  }

  /** Final norm weight [hidden]. */
  finalNorm(): tf.Tensor1D {
    return this.norm('model.norm.weight');
  }

  /** Unembedding [vocab, hidden] (the embedding table when tied). */
  lmHead(): Linear {
    return this.config.tieWordEmbeddings ? this.linear('model.embed_tokens.weight') : this.linear('lm_head.weight');
  }

  /** Stream mode: frees layer l's tensors (no-op when eager). */
  releaseLayer(l: number): void {
    if (this.residency === 'eager') return;
    this.releaseWhere((name) => name.startsWith(`model.layers.${l}.`));
  }

  /** Stream mode: frees the final norm and the unembedding. */
  releaseHead(): void {
    if (this.residency === 'eager') return;
    this.releaseWhere((name) => !name.startsWith('model.layers.'));
  }

  /** Bytes of float32 weights currently held as tensors. */
  get residentBytes(): number {
    let n = 0;
    for (const h of this.held.values()) n += 4 * ('weight' in h ? h.weight.size : h.size);
    return n;
  }

  dispose(): void {
    this.releaseWhere(() => true);
  }

  private releaseWhere(pred: (name: string) => boolean): void {
    for (const [name, h] of this.held) {
      if (!pred(name)) continue;
      ('weight' in h ? h.weight : h).dispose();
      this.held.delete(name);
    }
  }

  private vector(name: string, shape: number[]): tf.Tensor {
    let t = this.held.get(name) as tf.Tensor | undefined;
    if (t === undefined) {
      t = tf.keep(tf.tensor(this.src.read(name), shape)); // freed by release*/dispose, not by a tidy
      this.held.set(name, t);
    }
    return t;
  }

  private norm(name: string): tf.Tensor1D {
    return this.vector(name, [this.config.hiddenSize]) as tf.Tensor1D;
  }

  private linear(name: string): Linear {
    const key = `${name}#linear`;
    let l = this.held.get(key) as Linear | undefined;
    if (l === undefined) {
      const shape = this.src.shape(name)!;
      l = makeLinear(this.src.read(name), shape[0]!, shape[1]!);
      tf.keep(l.weight);
      this.held.set(key, l);
    }
    return l;
  }
}
