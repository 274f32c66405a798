/**
 * Key/value caches for incremental decoding. A cache is a small object with one method,
 * `update`: store this step's keys and values, and return every key and value the step
 * may attend to, with their absolute positions (the mask is computed from positions, see
 * mask.ts, so the order of the returned keys does not matter).
 *
 * Rolling cache, for a sliding window W: W slots, position p lives in slot p mod W.
 * A query at position i needs keys i−W+1 … i, so W slots always suffice: when a chunk
 * arrives, it attends to the W slots plus its own keys, and then its newest keys
 * overwrite the slots they map to. (W − 1 slots would do, since key i arrives with its
 * query; W keeps mistral-inference's slot = p mod W, and the one spare slot is masked.)
 * Worked example, W = 4, a 6-token prompt prefilled in chunks of 4, then one decoded token:
 *
 *   chunk 0–3: attends slots [ ·  ·  ·  · ] + keys 0 1 2 3   → slots [0 1 2 3]
 *   chunk 4–5: attends slots [0 1 2 3] + keys 4 5             → slots [4 5 2 3]
 *              (query 4 sees 1 2 3 4; query 5 sees 2 3 4 5; key 0 is masked out by position)
 *   token 6:   attends slots [4 5 2 3] + key 6                → slots [4 5 6 3]
 *              (query 6 sees 3 4 5 6)
 *
 * Memory stays at W slots however long the text grows. Without a window the cache keeps
 * every key (`FullCache`).
 */
import * as tf from '@tensorflow/tfjs-core';
import { EMPTY_SLOT } from './mask.js';

export interface CacheView {
  /** [kvHeads, keys, headDim] */
  readonly k: tf.Tensor3D;
  readonly v: tf.Tensor3D;
  /** Absolute position of each key; EMPTY_SLOT for an unused slot. */
  readonly positions: readonly number[];
}

export interface LayerCache {
  /**
   * @param k [kvHeads, tokens, headDim], keys after RoPE
   * @param positions absolute positions of the tokens
   * @returns what the step attends to: the cached keys and the new ones. The returned
   *   tensors belong to the caller's tidy scope; the cache keeps its own copies.
   */
  update(k: tf.Tensor3D, v: tf.Tensor3D, positions: readonly number[]): CacheView;
  /** Bytes of key/value storage held. */
  readonly bytes: number;
  dispose(): void;
}

/** The key and value tensors a layer's cache keeps between steps, outside any tidy. */
abstract class KeptKeysValues {
  protected k: tf.Tensor3D | null = null;
  protected v: tf.Tensor3D | null = null;

  /** Keeps `k`, `v` in place of the previous ones. */
  protected keep(k: tf.Tensor3D, v: tf.Tensor3D): void {
    this.k?.dispose();
    this.v?.dispose();
    this.k = tf.keep(k);
    this.v = tf.keep(v);
  }

  get bytes(): number {
    return this.k === null ? 0 : 2 * 4 * this.k.size;
  }

  dispose(): void {
    this.k?.dispose();
    this.v?.dispose();
    this.k = this.v = null;
  }
}

/** Keeps every key: memory grows with the text (models without a sliding window). */
export class FullCache extends KeptKeysValues implements LayerCache {
  private positions: number[] = [];

  update(k: tf.Tensor3D, v: tf.Tensor3D, positions: readonly number[]): CacheView {
    const allK = this.k === null ? tf.clone(k) : tf.concat([this.k, k], 1);
    const allV = this.v === null ? tf.clone(v) : tf.concat([this.v, v], 1);
    this.keep(tf.clone(allK), tf.clone(allV));
    this.positions = [...this.positions, ...positions];
    return { k: allK, v: allV, positions: this.positions };
  }

  override dispose(): void {
    super.dispose();
    this.positions = [];
  }
}

/** W slots; position p in slot p mod W (see the worked example above). */
export class RollingCache extends KeptKeysValues implements LayerCache {
  private slotPositions: number[];

  constructor(readonly window: number) {
    super();
    this.slotPositions = new Array<number>(window).fill(EMPTY_SLOT);
  }

  update(k: tf.Tensor3D, v: tf.Tensor3D, positions: readonly number[]): CacheView {
    const W = this.window;
    const [kvHeads, , headDim] = k.shape;
    // Before the first step the slots are zeros at EMPTY_SLOT positions, which the mask hides.
    const oldK = this.k ?? tf.zeros<tf.Rank.R3>([kvHeads, W, headDim]);
    const oldV = this.v ?? tf.zeros<tf.Rank.R3>([kvHeads, W, headDim]);
    const allK = tf.concat([oldK, k], 1); // [kvHeads, W + tokens, headDim]
    const allV = tf.concat([oldV, v], 1);
    const allPositions = [...this.slotPositions, ...positions];

    // Slot s keeps its old row unless a new token maps to it; the newest such token wins.
    const source = Array.from({ length: W }, (_, s) => s);
    positions.forEach((p, t) => { source[p % W] = W + t; });
    const index = tf.tensor1d(source, 'int32');
    this.keep(tf.gather(allK, index, 1), tf.gather(allV, index, 1));
    index.dispose();
    this.slotPositions = source.map((i) => allPositions[i]!);
    return { k: allK, v: allV, positions: allPositions };
  }

  override dispose(): void {
    super.dispose();
    this.slotPositions.fill(EMPTY_SLOT);
  }
}

/** One cache per layer and the next position to fill. */
export class ModelCache {
  readonly layers: LayerCache[];
  /** Number of tokens seen so far = position of the next token. */
  length = 0;

  constructor(numLayers: number, window: number | null) {
    this.layers = Array.from({ length: numLayers }, () => (window === null ? new FullCache() : new RollingCache(window)));
  }

  get bytes(): number {
    return this.layers.reduce((a, l) => a + l.bytes, 0);
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
    this.length = 0;
  }
}
