/**
 * Key/value caches for incremental decoding. A cache is a small object with one method,
 * `update`: store this step's keys and values, and return every key and value the step
 * may attend to, with their absolute positions (the mask is computed from positions, see
 * mask.ts, so the order of the returned keys does not matter).
 *
 * Rolling cache, for a sliding window W: W slots, position p lives in slot p mod W.
 * A query at position i needs keys i−W+1 … i, so W slots always suffice: when a chunk
 * arrives, it attends to the slots that hold a key plus its own keys, and then its newest
 * keys overwrite the slots they map to. (W − 1 slots would do, since key i arrives with its
 * query; W keeps mistral-inference's slot = p mod W, and the one spare slot is masked.)
 * Worked example, W = 4, a 6-token prompt prefilled in chunks of 4, then one decoded token:
 *
 *   chunk 0–3: attends slots [ ] + keys 0 1 2 3               → slots [0 1 2 3]
 *   chunk 4–5: attends slots [0 1 2 3] + keys 4 5             → slots [4 5 2 3]
 *              (query 4 sees 1 2 3 4; query 5 sees 2 3 4 5; key 0 is masked out by position)
 *   token 6:   attends slots [4 5 2 3] + key 6                → slots [4 5 6 3]
 *              (query 6 sees 3 4 5 6)
 *
 * Empty slots are never returned, so a step costs what the context costs: with W = 4096,
 * token 65 attends slots [0 … 64] + key 65, 66 keys, not 4097.
 *
 * Storage: keys and values live in two Float32Arrays per layer, [kvHeads, rows, headDim],
 * owned by the cache (no tensors are kept between steps): plain arrays, or, for a model on
 * the simd kernels, regions of a kernel memory of the layer's own, where the fused
 * attention reads them in place (`attendInPlace`: a decode step copies no row). Rows are
 * handed out as they are first needed, and the arrays double in size when full (at most W
 * rows for the rolling cache), so a step writes its own rows in place and copies out only
 * the rows in use. A slot gets the next free row the first time a position lands in it; a text that
 * starts at position 0, as a ModelCache's does, therefore keeps slot s in row s.
 * Memory stays at most W rows however long the text grows. Without a window the cache
 * keeps every key (`FullCache`), one row per token.
 */
import * as tf from '@tensorflow/tfjs-core';
import { float32 } from '../kernels/fused.js';
import { CacheRows, type AttentionShape } from '../kernels/simd/attention.js';

export interface CacheView {
  /** [kvHeads, keys, headDim] */
  readonly k: tf.Tensor3D;
  readonly v: tf.Tensor3D;
  /** Absolute position of each key (every returned key holds one: no empty slots). */
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
  /**
   * `update` on arrays, for a kernel that works on memory of its own: the step's keys and
   * values come as arrays, and the view is written into arrays the caller provides.
   * @param k [kvHeads, tokens, headDim], keys after RoPE; v likewise
   * @param into given the number of keys S, returns two [kvHeads, S, headDim] arrays to fill
   * @returns the position of each of the S keys
   */
  updateInto(k: Float32Array, v: Float32Array, kvHeads: number, headDim: number, positions: readonly number[],
    into: ViewArrays): readonly number[];
  /**
   * The update and the fused attention kernel in one, over the cache's rows where they lie
   * (no copy of them), for a cache kept in kernel memory: the step's keys are stored first,
   * then every row in use is attended to. Null when the cache is not in kernel memory, or
   * when storing first would overwrite a key an earlier token of the step still needs (a
   * rolling cache's chunk of several tokens over slots in use): then use updateInto.
   * @param q [queries, heads, headDim], after RoPE; k, v as for updateInto
   * @param queryPositions the positions of q's tokens (default: all of the step's)
   * @returns z [queries, heads, headDim]: `out` when given
   */
  attendInPlace(q: Float32Array, k: Float32Array, v: Float32Array, positions: readonly number[], shape: AttentionShape,
    out?: Float32Array, queryPositions?: readonly number[]): Float32Array | null;
  /**
   * Bytes of the keys and values held: 2 · 4 · kvHeads · rows in use · headDim. The arrays
   * behind them may be up to twice that (capacity doubles), never more than W rows.
   */
  readonly bytes: number;
  dispose(): void;
}

/** Given S keys, where to write them: two [kvHeads, S, headDim] arrays. */
export type ViewArrays = (keys: number) => { k: Float32Array; v: Float32Array };

/** Smallest allocation, in rows (capped at W): saves reallocating at 1, 2, 4, 8 rows. */
const MIN_ROWS = 16;

/** One step's new keys and values, read out of their tensors: [kvHeads, tokens, headDim]. */
interface NewRows {
  readonly tokens: number;
  readonly k: Float32Array;
  readonly v: Float32Array;
}

/**
 * Rows of keys and values in two growing Float32Arrays, [kvHeads, capacity, headDim]:
 * rows 0 … rows − 1 hold a key each. Heads first, so each head's rows in use are one
 * contiguous block, copied out with one `set` per head. A step shows the rows in use plus
 * its own keys (`attended`), then keeps its keys (`store`): the two caches differ only there.
 */
abstract class KeyValueRows implements LayerCache {
  /** The rows in kernel memory (the fused kernel reads them in place), or null: in plain arrays. */
  private kernelRows: CacheRows | null = null;

  /** @param inKernelMemory keep the rows in kernel memory (a model on the simd kernels) */
  constructor(private readonly inKernelMemory = false) {}

  /** Positions of the rows in use, then of the step's keys. */
  protected abstract attended(positions: readonly number[]): readonly number[];
  /** Keeps the step's keys and values. */
  protected abstract store(step: NewRows, positions: readonly number[]): void;
  /** Whether store() leaves every key each of the step's tokens attends to (so it may run first). */
  protected abstract storeFirstSafe(positions: readonly number[]): boolean;

  update(k: tf.Tensor3D, v: tf.Tensor3D, positions: readonly number[]): CacheView {
    const step = this.read(k, v, positions);
    const seen = this.view(step, this.attended(positions));
    this.store(step, positions);
    return seen;
  }

  updateInto(k: Float32Array, v: Float32Array, kvHeads: number, headDim: number, positions: readonly number[],
    into: ViewArrays): readonly number[] {
    const step = this.stepOf(k, v, kvHeads, headDim, positions);
    const seen = this.attended(positions);
    this.viewInto(step, into);
    this.store(step, positions);
    return seen;
  }

  attendInPlace(q: Float32Array, k: Float32Array, v: Float32Array, positions: readonly number[], shape: AttentionShape,
    out?: Float32Array, queryPositions = positions): Float32Array | null {
    if (!this.inKernelMemory || !this.storeFirstSafe(positions)) return null;
    this.store(this.stepOf(k, v, shape.kvHeads, shape.headDim, positions), positions);
    return this.kernelRows!.attend(q, queryPositions, this.rows, shape, out);
  }

  /** A step's keys and values given as arrays, checked against its shape (the first step fixes kvHeads and headDim). */
  private stepOf(k: Float32Array, v: Float32Array, kvHeads: number, headDim: number, positions: readonly number[]): NewRows {
    const tokens = positions.length;
    if (k.length !== kvHeads * tokens * headDim || v.length !== k.length) {
      throw new Error(`cache update: ${k.length} key and ${v.length} value floats for ${kvHeads} heads × ${tokens} tokens × ${headDim}`);
    }
    this.fixShape(kvHeads, headDim);
    return { tokens, k, v };
  }

  private kvHeads = 0;
  private headDim = 0;
  private capacity = 0;
  private keys: Float32Array = new Float32Array(0);
  private values: Float32Array = new Float32Array(0);
  /** In kernel memory only: the position of each row (the kernel's mask reads it). */
  private rowPos: Int32Array | null = null;
  /** Rows in use. */
  protected rows = 0;

  get bytes(): number {
    return 2 * 4 * this.kvHeads * this.rows * this.headDim;
  }

  /** Reads the step's keys and values (the first step fixes kvHeads and headDim). */
  protected read(k: tf.Tensor3D, v: tf.Tensor3D, positions: readonly number[]): NewRows {
    const [kvHeads, tokens, headDim] = k.shape;
    if (tokens !== positions.length || !tf.util.arraysEqual(v.shape, k.shape)) {
      throw new Error(`cache update: keys ${JSON.stringify(k.shape)}, values ${JSON.stringify(v.shape)} and ${positions.length} positions disagree`);
    }
    this.fixShape(kvHeads, headDim);
    return { tokens, k: float32(k), v: float32(v) };
  }

  /** The first step fixes kvHeads and headDim; later ones must match. */
  private fixShape(kvHeads: number, headDim: number): void {
    if (this.capacity === 0) {
      this.kvHeads = kvHeads;
      this.headDim = headDim;
    } else if (kvHeads !== this.kvHeads || headDim !== this.headDim) {
      throw new Error(`cache update: keys of ${kvHeads} heads × ${headDim}, the cache holds ${this.kvHeads} × ${this.headDim}`);
    }
  }

  /** What the step attends to: rows 0 … rows − 1, then the step's own keys. O(rows + tokens). */
  protected view(step: NewRows, positions: readonly number[]): CacheView {
    const { kvHeads: KV, headDim: D } = this;
    const S = this.rows + step.tokens;
    const { k, v } = this.viewInto(step, (n) => ({ k: new Float32Array(KV * n * D), v: new Float32Array(KV * n * D) }));
    return { k: tf.tensor3d(k, [KV, S, D]), v: tf.tensor3d(v, [KV, S, D]), positions };
  }

  /** The view's keys and values, written into arrays from `into`. */
  protected viewInto(step: NewRows, into: ViewArrays): { k: Float32Array; v: Float32Array } {
    const { kvHeads: KV, headDim: D, capacity: C, rows: n } = this;
    const T = step.tokens;
    const S = n + T;
    const { k, v } = into(S);
    for (let h = 0; h < KV; h++) {
      k.set(this.keys.subarray(h * C * D, (h * C + n) * D), h * S * D);
      v.set(this.values.subarray(h * C * D, (h * C + n) * D), h * S * D);
      k.set(step.k.subarray(h * T * D, (h + 1) * T * D), (h * S + n) * D);
      v.set(step.v.subarray(h * T * D, (h + 1) * T * D), (h * S + n) * D);
    }
    return { k, v };
  }

  /** Makes room for `rows` rows: doubles the capacity (at least), but never beyond `limit`. */
  protected reserve(rows: number, limit: number): void {
    if (rows <= this.capacity) return;
    const { kvHeads: KV, headDim: D, capacity: C, rows: n } = this;
    const grown = Math.min(limit, Math.max(rows, 2 * C, MIN_ROWS));
    if (this.inKernelMemory) {
      this.kernelRows ??= new CacheRows(KV, D);
      this.kernelRows.grow(grown, n);
      ({ keys: this.keys, values: this.values, positions: this.rowPos } = this.kernelRows);
      this.capacity = grown;
      return;
    }
    const keys = new Float32Array(KV * grown * D);
    const values = new Float32Array(KV * grown * D);
    for (let h = 0; h < KV; h++) {
      keys.set(this.keys.subarray(h * C * D, (h * C + n) * D), h * grown * D);
      values.set(this.values.subarray(h * C * D, (h * C + n) * D), h * grown * D);
    }
    this.keys = keys;
    this.values = values;
    this.capacity = grown;
  }

  /** Writes token t of the step, at `position`, into `row` (which `reserve` made room for), in place. */
  protected write(row: number, step: NewRows, t: number, position: number): void {
    const { kvHeads: KV, headDim: D, capacity: C } = this;
    if (this.rowPos !== null) this.rowPos[row] = position;
    const T = step.tokens;
    for (let h = 0; h < KV; h++) {
      const from = (h * T + t) * D;
      this.keys.set(step.k.subarray(from, from + D), (h * C + row) * D);
      this.values.set(step.v.subarray(from, from + D), (h * C + row) * D);
    }
  }

  dispose(): void {
    this.kernelRows?.dispose();
    this.kernelRows = this.rowPos = null;
    this.keys = new Float32Array(0);
    this.values = new Float32Array(0);
    this.kvHeads = this.headDim = this.capacity = this.rows = 0;
  }
}

/** Keeps every key: memory grows with the text (models without a sliding window). */
export class FullCache extends KeyValueRows {
  /** Position of each row. */
  private positions: number[] = [];

  protected attended(positions: readonly number[]): readonly number[] {
    return this.positions.concat(positions); // a new array: a view's is never changed
  }

  protected store(step: NewRows, positions: readonly number[]): void {
    this.reserve(this.rows + step.tokens, Infinity);
    for (let t = 0; t < step.tokens; t++) this.write(this.rows + t, step, t, positions[t]!);
    this.rows += step.tokens;
    this.positions = this.positions.concat(positions);
  }

  /** Nothing is ever overwritten. */
  protected storeFirstSafe(): boolean {
    return true;
  }

  override dispose(): void {
    super.dispose();
    this.positions = [];
  }
}

/** W slots; position p in slot p mod W (see the worked example above). */
export class RollingCache extends KeyValueRows {
  /** The row each slot that holds a key lives in. */
  private readonly rowOfSlot = new Map<number, number>();
  /** Position held by each row in use. */
  private rowPositions: number[] = [];

  constructor(readonly window: number, inKernelMemory = false) {
    super(inKernelMemory);
    if (!Number.isInteger(window) || window < 1) throw new RangeError(`window must be an integer ≥ 1, got ${window}`);
  }

  /** The chunk attends to the rows in use (old positions, masked by mask.ts) + its own keys. */
  protected attended(positions: readonly number[]): readonly number[] {
    return this.rowPositions.concat(positions);
  }

  protected store(step: NewRows, positions: readonly number[]): void {
    const W = this.window;
    // Slot p mod W takes the chunk's newest key that maps to it (a chunk longer than W
    // maps several). Map order = first use, so new slots get rows in the order of the text.
    const newest = new Map<number, number>(); // slot → token
    positions.forEach((p, t) => newest.set(p % W, t));
    let fresh = 0;
    for (const slot of newest.keys()) if (!this.rowOfSlot.has(slot)) fresh++;
    this.reserve(this.rows + fresh, W);
    for (const [slot, t] of newest) {
      let row = this.rowOfSlot.get(slot);
      if (row === undefined) {
        row = this.rows++;
        this.rowOfSlot.set(slot, row);
      }
      this.write(row, step, t, positions[t]!);
      this.rowPositions[row] = positions[t]!;
    }
  }

  /**
   * One token: the key it overwrites (its slot's, W positions back) is out of its window.
   * Several: only when every slot they map to is a fresh one, and distinct.
   */
  protected storeFirstSafe(positions: readonly number[]): boolean {
    const W = this.window;
    return positions.length === 1 || (positions.length <= W && positions.every((p) => !this.rowOfSlot.has(p % W)));
  }

  override dispose(): void {
    super.dispose();
    this.rowOfSlot.clear();
    this.rowPositions = [];
  }
}

/** One cache per layer and the next position to fill. */
export class ModelCache {
  readonly layers: LayerCache[];
  /** Number of tokens seen so far = position of the next token. */
  length = 0;

  /** @param inKernelMemory keep every layer's rows in kernel memory (a model on the simd kernels; see LayerCache.attendInPlace) */
  constructor(numLayers: number, window: number | null, inKernelMemory = false) {
    this.layers = Array.from({ length: numLayers }, () =>
      (window === null ? new FullCache(inKernelMemory) : new RollingCache(window, inKernelMemory)));
  }

  get bytes(): number {
    return this.layers.reduce((a, l) => a + l.bytes, 0);
  }

  dispose(): void {
    for (const l of this.layers) l.dispose();
    this.length = 0;
  }
}
