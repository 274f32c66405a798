/**
 * The whole model: embed → decoder layers → final RMSNorm → unembedding.
 *
 * One forward serves parity tests, generation (with a cache) and stepping through layers
 * (with hooks): there is no second debug copy of the model.
 */
import * as tf from '@tensorflow/tfjs-core';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { float32, rmsNormFused } from '../kernels/fused.js';
import { linear, onSimdKernels, type KernelsName } from '../kernels/linear.js';
import { fusedHeadsFit } from './attention.js';
import { decoderBlock } from './block.js';
import { ModelCache } from './cache.js';
import { parseConfig, type ModelConfig } from './config.js';
import { InputError, NonFiniteError } from './errors.js';
import { hookPoint, hookScope, type HookContext, type Hooks } from './hooks.js';
import { tensorSource } from './layout.js';
import { defaultExpertCacheBytes, storedStreamPlan, type Residency } from './residency.js';
import { rmsNorm, rmsNormWithScale } from './rmsnorm.js';
import { ropeTables } from './rope.js';
import { allFiniteArray, LAST_ROWS, simdBlockFits, simdBlockInPlace, simdHead, simdLastRows, simdLastRowsFits } from './simd-block.js';
import { validateTensors } from './schema.js';
import { ModelWeights, type WeightOptions } from './weights.js';
import { dtypeSize } from '../io/safetensors.js';
import type { TensorSource } from './layout.js';

export interface LoadOptions {
  /**
   * `eager` (default) holds every weight as a float32 tfjs tensor; `resident` keeps them at
   * their stored width for the simd kernels (bf16: half the memory, several times faster);
   * `stream` reads each layer when needed.
   */
  readonly weights?: Residency;
  /**
   * Stream mode: `simd` (default) reads tensors at their stored width into the simd kernels'
   * memory; `tfjs` as float32 tensors for the tfjs kernels.
   */
  readonly kernels?: KernelsName;
  /** Resident loading: called with the bytes read so far, after each tensor. */
  readonly onProgress?: (loadedBytes: number) => void;
  /**
   * Stream mode, Mixtral: bytes of experts kept between uses, least recently used out
   * (default: a share of the memory that is free at load, see `storedStreamPlan` and
   * `defaultExpertCacheBytes`; 0 = one expert at a time).
   */
  readonly expertCacheBytes?: number;
  /** Replaces config values after parsing (experiments, e.g. a smaller sliding window). */
  readonly overrides?: Partial<ModelConfig>;
}

export interface ForwardOptions {
  /** Continue from this cache (positions start at cache.length); it is updated in place. */
  readonly cache?: ModelCache;
  /** Read or replace intermediates (embeddings, layer outputs, routing, …: src/inspect/hookpoints.ts). */
  readonly hooks?: Hooks;
  /** Compute logits for the last position only (generation). Default: every position. */
  readonly lastOnly?: boolean;
}

/** A forward over several equal-length prompts: one cache per row. */
export interface BatchForwardOptions extends Omit<ForwardOptions, 'cache'> {
  readonly caches?: readonly ModelCache[];
}

export interface BatchForwardResult {
  /** [batch, tokens, vocab], or [batch, 1, vocab] with lastOnly. */
  readonly logits: tf.Tensor3D;
}

const FORWARD_OPTIONS = new Set(['cache', 'hooks', 'lastOnly']);
/** Hook points of the forward's top (final norm, logits): the array path serves a forward none of them is on. */
const HEAD_HOOKS = ['ln_final.hook_scale', 'ln_final.hook_normalized', 'hook_logits'];
const BATCH_OPTIONS = new Set(['caches', 'hooks', 'lastOnly']);

function checkOptionNames(opts: object, known: ReadonlySet<string>, what: string): void {
  const bad = Object.keys(opts).find((k) => !known.has(k));
  if (bad !== undefined) throw new InputError(`unknown ${what} option ${JSON.stringify(bad)} (known: ${[...known].join(', ')})`);
}

/** The forward returns logits; every intermediate comes from hooks. */
export interface ForwardResult {
  /** [tokens, vocab], or [1, vocab] with lastOnly. */
  readonly logits: tf.Tensor2D;
}

/** Whether every element of `x` is finite, as a bool scalar (not read back). */
function allFinite(x: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.all(tf.isFinite(x)));
}

/**
 * Throws NonFiniteError when `logits` hold a NaN or ±Inf, naming the first layer whose
 * output did. One scalar is read back per forward; the per-layer flags only on failure.
 */
function checkFinite(logits: tf.Tensor, layerFinite: readonly (tf.Scalar | boolean)[]): void {
  const ok = allFinite(logits);
  try {
    if (ok.dataSync()[0] !== 0) return;
  } finally {
    ok.dispose();
  }
  const layer = layerFinite.findIndex((f) => (typeof f === 'boolean' ? !f : f.dataSync()[0] === 0));
  throw new NonFiniteError(layer < 0 ? null : layer);
}

/** Disposes a ForwardResult's tensors. */
export function disposeResult(r: ForwardResult): void {
  r.logits.dispose();
}

/** What the weight store needs from the load options, with the defaults filled in. */
function weightOptions(config: ModelConfig, src: TensorSource, opts: LoadOptions): WeightOptions {
  const residency = opts.weights ?? 'eager';
  const kernels = opts.kernels ?? (residency === 'eager' ? 'tfjs' : 'simd');
  if ((residency === 'eager') !== (kernels === 'tfjs') && residency !== 'stream') {
    throw new TypeError(`weights '${residency}' run on the ${residency === 'eager' ? 'tfjs' : 'simd'} kernels, not '${kernels}'`);
  }
  const base = { residency, kernels, ...(opts.onProgress ? { onProgress: opts.onProgress } : {}) };
  if (residency !== 'stream') return base;
  if (kernels === 'tfjs') return { ...base, expertCacheBytes: opts.expertCacheBytes ?? defaultExpertCacheBytes(config) };
  const plan = storedStreamPlan(config, dtypeSize(src.dtype('model.layers.0.self_attn.q_proj.weight'))!);
  return { ...base, keepShared: plan.keepShared, expertCacheBytes: opts.expertCacheBytes ?? plan.expertCacheBytes };
}

export class Transformer {
  private constructor(readonly config: ModelConfig, readonly weights: ModelWeights, readonly checkpoint: Checkpoint) {}

  /** Loads an HF (single or sharded) or native checkpoint folder. */
  static load(dir: string, opts: LoadOptions = {}): Transformer {
    const ckpt = openCheckpoint(dir);
    try {
      const config: ModelConfig = Object.freeze({ ...parseConfig(ckpt), ...opts.overrides });
      const src = tensorSource(ckpt, config);
      validateTensors(ckpt, config, src);
      return new Transformer(config, new ModelWeights(config, src, weightOptions(config, src, opts)), ckpt);
    } catch (e) {
      ckpt.store.close();
      throw e;
    }
  }

  /** A fresh cache: rolling W slots per layer with a sliding window, else a growing one. */
  createCache(): ModelCache {
    // On the simd kernels the rows live in kernel memory, where the fused attention reads them in place.
    return new ModelCache(this.config.numLayers, this.config.slidingWindow, this.weights.stored && fusedHeadsFit(this.config));
  }

  /**
   * Runs `ids` through the model. The caller disposes the result (`disposeResult`).
   * @param ids token ids, [tokens]; or several equal-length prompts, [batch][tokens]: each
   *   row runs the same forward (hooks see one row at a time, `ctx.batch` says which)
   */
  forward(ids: readonly number[], opts?: ForwardOptions): ForwardResult;
  forward(batch: readonly (readonly number[])[], opts?: BatchForwardOptions): BatchForwardResult;
  forward(ids: readonly number[] | readonly (readonly number[])[], opts: ForwardOptions | BatchForwardOptions = {}): ForwardResult | BatchForwardResult {
    if (ids.length > 0 && ids.every((row) => Array.isArray(row))) return this.forwardBatch(ids as number[][], opts as BatchForwardOptions);
    checkOptionNames(opts, FORWARD_OPTIONS, 'forward');
    return this.forwardOne(ids as readonly number[], opts as ForwardOptions);
  }

  private forwardBatch(batch: readonly (readonly number[])[], opts: BatchForwardOptions): BatchForwardResult {
    checkOptionNames(opts, BATCH_OPTIONS, 'batched forward');
    const T = batch[0]!.length;
    batch.forEach((row, b) => {
      if (row.length !== T) throw new InputError(`batch row ${b} has ${row.length} tokens, row 0 has ${T}: a batch needs equal-length prompts`);
      this.checkIds(row, opts.caches?.[b]?.length ?? 0);
    });
    if (opts.caches !== undefined && opts.caches.length !== batch.length) {
      throw new InputError(`${opts.caches.length} caches for a batch of ${batch.length} prompts: give one cache per row`);
    }
    const rows: tf.Tensor2D[] = [];
    try {
      batch.forEach((row, b) => {
        const { caches, ...rest } = opts;
        rows.push(this.forwardOne(row, { ...rest, ...(caches ? { cache: caches[b]! } : {}) }, b).logits);
      });
      return { logits: tf.stack(rows) as tf.Tensor3D };
    } finally {
      tf.dispose(rows);
    }
  }

  private forwardOne(ids: readonly number[], opts: ForwardOptions, batchRow?: number): ForwardResult {
    const c = this.config;
    const start = opts.cache?.length ?? 0;
    this.checkIds(ids, start);
    const positions = ids.map((_, t) => start + t);
    const hooks = opts.hooks;
    const w = this.weights;

    const ctx: HookContext = { positions, ...(batchRow === undefined ? {} : { batch: batchRow }) };
    const T = ids.length;
    // The residual stream [tokens, hidden]: a tensor, or an array while layers that no hook
    // watches run on the simd kernels one after another (no tfjs op between them).
    let x: tf.Tensor2D | null = tf.tidy(() => hookPoint(hooks, w.embed(ids), 'hook_embed', ctx));
    let xs: Float32Array | null = null;
    /** The stream as a tensor, held in `x` (so the finally below frees it whatever throws next). */
    const asTensor = (): tf.Tensor2D => {
      if (x === null) {
        x = tf.tensor2d(xs!, [T, c.hiddenSize]);
        xs = null;
      }
      return x;
    };
    const rope = ropeTables(positions, c.headDim, c.ropeTheta);
    // Per layer, whether its output is all finite: a bool scalar computed where the
    // activations are and read only when the logits turn out non-finite (see checkFinite).
    const finite: (tf.Scalar | boolean)[] = [];
    const top = hookScope(hooks, '', ctx);
    // Only the last token's logits wanted, from the stream as an array: the last layer may
    // compute its last rows only (simdLastRows; the head reads no other row)
    const lastRows = opts.lastOnly === true && T >= LAST_ROWS && !HEAD_HOOKS.some((h) => top.wants(h));
    try {
      for (let l = 0; l < c.numLayers; l++) {
        const lw = w.layer(l);
        const scope = hookScope(hooks, `blocks.${l}.`, ctx);
        const cache = opts.cache?.layers[l] ?? null;
        if (!scope.active && simdBlockFits(lw, c)) {
          if (xs === null) {
            xs = float32(x!).slice();
            x!.dispose();
            x = null;
          }
          if (lastRows && l === c.numLayers - 1 && simdLastRowsFits(lw, c)) {
            simdLastRows(xs, T, lw, c, rope, positions, cache);
            finite.push(allFiniteArray(xs.subarray((T - LAST_ROWS) * c.hiddenSize)));
          } else {
            simdBlockInPlace(xs, T, lw, c, rope, positions, cache);
            finite.push(allFiniteArray(xs));
          }
        } else {
          const input = asTensor();
          x = tf.tidy(() => decoderBlock(input, lw, c, rope, positions, cache, scope));
          finite.push(allFinite(x));
          input.dispose();
        }
        w.releaseLayer(l);
      }
      const head = w.lmHead();
      let logits: tf.Tensor2D;
      if (xs !== null && head.kind === 'stored' && !HEAD_HOOKS.some((h) => top.wants(h))) {
        // The stream is still an array and nothing watches the top: norm and lm_head on it.
        logits = tf.tensor2d(simdHead(xs, T, w.finalNorm(), head, c, opts.lastOnly === true), [opts.lastOnly ? 1 : T, c.vocabSize]);
      } else {
        const out = asTensor();
        logits = tf.tidy(() => {
          const scaleHook = top.wants('ln_final.hook_scale') ? (s: tf.Tensor2D) => top(s, 'ln_final.hook_scale') : undefined;
          const normed = top(this.finalNorm(out, scaleHook), 'ln_final.hook_normalized');
          const last = opts.lastOnly ? tf.slice(normed, [normed.shape[0] - 1, 0], [1, -1]) : normed;
          return top(this.unembed(last), 'hook_logits'); // [tokens, vocab]
        });
      }
      w.releaseHead();
      try {
        checkFinite(logits, finite);
      } catch (e) {
        logits.dispose();
        throw e;
      }
      if (opts.cache) opts.cache.length += ids.length;
      return { logits };
    } finally {
      x?.dispose();
      tf.dispose([rope.cos, rope.sin, ...finite.filter((f): f is tf.Scalar => typeof f !== 'boolean')]);
    }
  }

  /**
   * The final RMSNorm; with `scaleHook`, through its visible divisor (ln_final.hook_scale).
   * @param x [tokens, hidden]
   */
  finalNorm(x: tf.Tensor2D, scaleHook?: (scale: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D {
    const w = this.weights;
    if (scaleHook !== undefined) return rmsNormWithScale(x, w.finalNorm(), this.config.rmsNormEps, scaleHook);
    return (onSimdKernels(w.lmHead()) ? rmsNormFused : rmsNorm)(x, w.finalNorm(), this.config.rmsNormEps);
  }

  /**
   * The unembedding (lm_head), used by the forward and by the logit lens alike.
   * @param x [tokens, hidden], after the final norm
   * @returns [tokens, vocab]
   */
  unembed(x: tf.Tensor2D): tf.Tensor2D {
    return linear(x, this.weights.lmHead());
  }

  /** Frees every weight tensor and closes the checkpoint files. */
  dispose(): void {
    this.weights.dispose();
    this.checkpoint.store.close();
  }

  /**
   * Throws InputError unless `ids` may run starting at position `start`: non-empty, inside
   * the vocabulary and, without a sliding window, within max_position_embeddings.
   * Public so a caller that feeds ids in pieces (chunked prefill) can check them all first.
   */
  checkIds(ids: readonly number[], start = 0): void {
    const c = this.config;
    if (ids.length === 0) throw new InputError('empty input: at least one token id is needed');
    ids.forEach((id, i) => {
      if (Array.isArray(id)) {
        throw new InputError(`ids[${i}] is an array: give one prompt as number[], or a batch whose every row is a number[]`);
      }
      if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) {
        throw new InputError(`token id ${id} at index ${i} is outside the vocabulary [0, ${c.vocabSize})`);
      }
    });
    const end = start + ids.length;
    if (c.slidingWindow === null && c.maxPositionEmbeddings !== null && end > c.maxPositionEmbeddings) {
      throw new InputError(`sequence of ${end} tokens exceeds max_position_embeddings ${c.maxPositionEmbeddings} ` +
        `(this model has no sliding window to roll over)`);
    }
  }
}
