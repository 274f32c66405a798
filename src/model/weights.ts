/**
 * Model weights by canonical (Hugging Face) name, whatever the checkpoint layout.
 *
 * The one place where layouts differ is `nativeSource`: Mistral's consolidated names map
 * to HF names, and the rows of wq / wk are permuted per head from Mistral's interleaved
 * RoPE pairs (x[2p], x[2p+1]) to HF's rotate-half pairs (x[p], x[p + d/2]).
 *
 * Residency: `eager` turns every tensor into a float32 tf tensor at load; `stream` reads a
 * layer's tensors from disk when the forward reaches it and frees them after
 * (`releaseLayer`), so a checkpoint larger than memory runs layer by layer.
 */
import * as tf from '@tensorflow/tfjs-core';
import type { Checkpoint, TensorStore } from '../io/checkpoint.js';
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

/** Checks presence and shape of every tensor before a byte of weights is read. */
export function validateTensors(ckpt: Checkpoint, c: ModelConfig, src: TensorSource): void {
  for (const [name, want] of expectedTensors(c)) {
    const got = src.shape(name);
    const stored = ckpt.layout === 'native' ? nativeName(name) : name;
    const file = ckpt.store.has(stored) ? ckpt.store.info(stored).file : ckpt.store.files.join(', ');
    if (got === undefined) {
      throw new WeightError(file, `missing tensor (expected shape [${want}] from ${ckpt.configFile})`, stored);
    }
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      throw new WeightError(file, `shape [${got}] does not fit the config: expected [${want}]`, stored);
    }
  }
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
        expert: (i) => swiglu(e(i) + 'w1.weight', e(i) + 'w3.weight', e(i) + 'w2.weight'),
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
