/**
 * The whole model: embed → decoder layers → final RMSNorm → unembedding.
 *
 * One forward serves parity tests, generation (with a cache) and stepping through layers
 * (with hooks): there is no second debug copy of the model.
 */
import * as tf from '@tensorflow/tfjs-core';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { rmsNormFused } from '../kernels/fused.js';
import { linear, onSimdKernels } from '../kernels/linear.js';
import { decoderBlock } from './block.js';
import { ModelCache } from './cache.js';
import { parseConfig, type ModelConfig } from './config.js';
import { InputError, NonFiniteError } from './errors.js';
import { hookPoint, hookScope, type Hooks } from './hooks.js';
import { tensorSource } from './layout.js';
import type { Routing } from './moe.js';
import { defaultExpertCacheBytes, type Residency } from './residency.js';
import { rmsNorm } from './rmsnorm.js';
import { ropeTables } from './rope.js';
import { validateTensors } from './schema.js';
import { ModelWeights } from './weights.js';

export interface LoadOptions {
  /**
   * `eager` (default) holds every weight as a float32 tfjs tensor; `resident` keeps them at
   * their stored width for the simd kernels (bf16: half the memory, several times faster);
   * `stream` reads each layer when needed.
   */
  readonly weights?: Residency;
  /** Resident loading: called with the bytes read so far, after each tensor. */
  readonly onProgress?: (loadedBytes: number) => void;
  /**
   * Stream mode, Mixtral: float32 bytes of experts kept between uses, least recently used
   * out (default: a share of the memory that is free at load, see `defaultExpertCacheBytes`;
   * 0 = one expert at a time).
   */
  readonly expertCacheBytes?: number;
  /** Replaces config values after parsing (experiments, e.g. a smaller sliding window). */
  readonly overrides?: Partial<ModelConfig>;
}

export interface ForwardOptions {
  /** Continue from this cache (positions start at cache.length); it is updated in place. */
  readonly cache?: ModelCache;
  readonly hooks?: Hooks;
  /** Also return embeddings, every layer's output and the final-norm output. */
  readonly hiddenStates?: boolean;
  /** Compute logits for the last position only (generation). Default: every position. */
  readonly lastOnly?: boolean;
}

export interface ForwardResult {
  /** [tokens, vocab], or [1, vocab] with lastOnly. */
  readonly logits: tf.Tensor2D;
  /** [tokens, hidden] each, with hiddenStates. */
  readonly embeddings?: tf.Tensor2D;
  readonly layerOutputs?: tf.Tensor2D[];
  readonly finalNorm?: tf.Tensor2D;
  /** Mixtral: the routing of every layer. */
  readonly routing?: Routing[];
}

/** Whether every element of `x` is finite, as a bool scalar (not read back). */
function allFinite(x: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.all(tf.isFinite(x)));
}

/**
 * Throws NonFiniteError when `logits` hold a NaN or ±Inf, naming the first layer whose
 * output did. One scalar is read back per forward; the per-layer flags only on failure.
 */
function checkFinite(logits: tf.Tensor, layerFinite: readonly tf.Scalar[]): void {
  const ok = allFinite(logits);
  try {
    if (ok.dataSync()[0] !== 0) return;
  } finally {
    ok.dispose();
  }
  const layer = layerFinite.findIndex((f) => f.dataSync()[0] === 0);
  throw new NonFiniteError(layer < 0 ? null : layer);
}

/** Disposes every tensor of a ForwardResult. */
export function disposeResult(r: ForwardResult): void {
  tf.dispose([r.logits, ...(r.embeddings ? [r.embeddings] : []), ...(r.layerOutputs ?? []), ...(r.finalNorm ? [r.finalNorm] : [])]);
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
      return new Transformer(config, new ModelWeights(config, src, opts.weights ?? 'eager', opts.onProgress,
        opts.expertCacheBytes ?? defaultExpertCacheBytes(config)), ckpt);
    } catch (e) {
      ckpt.store.close();
      throw e;
    }
  }

  /** A fresh cache: rolling W slots per layer with a sliding window, else a growing one. */
  createCache(): ModelCache {
    return new ModelCache(this.config.numLayers, this.config.slidingWindow);
  }

  /**
   * Runs `ids` through the model. The caller disposes the result (`disposeResult`).
   * @param ids token ids, [tokens]
   */
  forward(ids: readonly number[], opts: ForwardOptions = {}): ForwardResult {
    const c = this.config;
    const start = opts.cache?.length ?? 0;
    this.checkIds(ids, start);
    const positions = ids.map((_, t) => start + t);
    const keep = opts.hiddenStates === true;
    const hooks = opts.hooks;
    const w = this.weights;

    const embeddings = tf.tidy(() => hookPoint(hooks, 'hook_embed', w.embed(ids))); // [tokens, hidden]
    const rope = ropeTables(positions, c.headDim, c.ropeTheta);
    const layerOutputs: tf.Tensor2D[] = [];
    const routing: Routing[] = [];
    // Per layer, whether its output is all finite: a bool scalar computed where the
    // activations are and read only when the logits turn out non-finite (see checkFinite).
    const finite: tf.Scalar[] = [];
    let x = embeddings;
    try {
      for (let l = 0; l < c.numLayers; l++) {
        const input = x;
        x = tf.tidy(() => {
          const r = decoderBlock(input, w.layer(l), c, rope, positions, opts.cache?.layers[l] ?? null, hookScope(hooks, `blocks.${l}.`));
          if (r.routing) routing.push(r.routing);
          return r.out;
        });
        w.releaseLayer(l);
        finite.push(allFinite(x));
        if (keep) layerOutputs.push(x);
        else input.dispose();
      }
      const head = tf.tidy(() => {
        const norm = onSimdKernels(w.lmHead()) ? rmsNormFused : rmsNorm;
        const normed = hookPoint(hooks, 'ln_final.hook_normalized', norm(x, w.finalNorm(), c.rmsNormEps));
        const last = opts.lastOnly ? tf.slice(normed, [normed.shape[0] - 1, 0], [1, -1]) : normed;
        const logits = hookPoint(hooks, 'hook_logits', linear(last, w.lmHead())); // [tokens, vocab]
        return keep ? { logits, finalNorm: normed } : { logits };
      });
      w.releaseHead();
      try {
        checkFinite(head.logits, finite);
      } catch (e) {
        tf.dispose([head.logits, ...(head.finalNorm ? [head.finalNorm] : [])]);
        throw e;
      }
      if (opts.cache) opts.cache.length += ids.length;
      if (!keep) x.dispose();
      return {
        logits: head.logits,
        ...(keep ? { embeddings, layerOutputs, finalNorm: head.finalNorm } : {}),
        ...(routing.length > 0 ? { routing } : {}),
      };
    } catch (e) {
      tf.dispose([x, ...layerOutputs, embeddings]);
      throw e;
    } finally {
      tf.dispose([rope.cos, rope.sin, ...finite]);
    }
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
