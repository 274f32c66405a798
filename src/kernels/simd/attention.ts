/**
 * Fused attention on the simd kernels: queries, keys and values go into a workspace memory,
 * and one kernel computes softmax(q·kᵀ/√D + mask)·v per query and head in a single pass
 * over the keys (online softmax, in blocks of keys), without a [tokens, keys] score matrix.
 * The arithmetic of model/attention.ts, in another order (so float32 roundings differ):
 * that path stays the reference, and runs whenever a hook asks for the scores or the
 * pattern. The mask rule is mask.ts's: 0 ≤ j ≤ i and i − W < j.
 */
import type { WasmMemory } from './arena.js';
import { forgetMemory, poolFor, runShare, type KernelJob } from './pool.js';
import { Workspace } from './workspace.js';

const workspace = new Workspace();

/**
 * Keys per block of the kernel (a multiple of 4): the running max and sum, and z, are updated
 * once per block. At 32 a block's key and value rows are 2 × 8 KiB at headDim 64 and 2 × 16
 * KiB at 128, about an L1 cache; 16 measured slower, 64 no faster.
 */
const BLOCK = 32;

/** Bytes of the kernel's scratch for one thread, for G query heads per kv head (see build-kernels.ts). */
const scratchBytes = (G: number) => 4 * (BLOCK + 4) + 4 * BLOCK * G + 16 * G;

export interface AttentionShape {
  readonly heads: number;
  readonly kvHeads: number;
  readonly headDim: number;
  /** Sliding window W, or null for none. */
  readonly window: number | null;
}

/** Given S keys, two [kvHeads, S, headDim] arrays to write them into. */
export type KeyArrays = (keys: number) => { k: Float32Array; v: Float32Array };

/**
 * @param q [T, heads, headDim], after RoPE
 * @param queryPositions absolute position of each query
 * @param keys writes the S keys and values into the arrays `into(S)` gives it, and returns
 *   their positions
 * @param out where to write z (else a new array)
 * @returns z [T, heads, headDim]: `out` when given
 */
export function fusedAttention(q: Float32Array, queryPositions: readonly number[], shape: AttentionShape,
  keys: (into: KeyArrays) => readonly number[], out?: Float32Array): Float32Array {
  const { kvHeads: KV, headDim: D } = checkShape(shape);
  workspace.reset();
  let kp = 0;
  let vp = 0;
  let S = -1;
  const positions = keys((n) => {
    S = n;
    kp = workspace.alloc(4 * KV * S * D);
    vp = workspace.alloc(4 * KV * S * D);
    return { k: workspace.f32(kp, KV * S * D), v: workspace.f32(vp, KV * S * D) };
  });
  if (positions.length !== S) throw new RangeError(`fused attention: ${positions.length} key positions for ${S} keys`);
  const kposp = workspace.alloc(4 * S);
  workspace.i32(kposp, S).set(positions);
  return attendIn(workspace, q, queryPositions, shape, { k: kp, v: vp, positions: kposp, keys: S, headRows: S }, out);
}

function checkShape(shape: AttentionShape): AttentionShape {
  const { heads: H, kvHeads: KV, headDim: D } = shape;
  if (D % 4 !== 0) throw new RangeError(`fused attention needs headDim a multiple of 4, got ${D}`);
  if (H % KV !== 0) throw new RangeError(`fused attention needs heads a multiple of kvHeads, got ${H} and ${KV}`);
  return shape;
}

/** Keys and values already in a workspace's memory: byte offsets, and how many. */
interface KeysIn {
  /** [kvHeads, headRows, headDim] f32 each; the first `keys` rows of each head are read. */
  readonly k: number;
  readonly v: number;
  /** [keys] i32: each row's position (< 0: empty). */
  readonly positions: number;
  readonly keys: number;
  readonly headRows: number;
}

/**
 * The kernel over keys that are in `ws` already: the queries go in, z comes out.
 * @param q [T, heads, headDim]
 * @returns z [T, heads, headDim]: `out` when given
 */
function attendIn(ws: Workspace, q: Float32Array, queryPositions: readonly number[], shape: AttentionShape, keys: KeysIn,
  out?: Float32Array): Float32Array {
  const { heads: H, kvHeads: KV, headDim: D } = shape;
  const T = queryPositions.length;
  const S = keys.keys;
  const qp = ws.alloc(4 * T * H * D);
  const zp = ws.alloc(4 * T * H * D);
  const qposp = ws.alloc(4 * T);
  ws.f32(qp, T * H * D).set(q);
  ws.i32(qposp, T).set(queryPositions);
  // Units (a token and a kv head: its H / KV query heads) split over the threads when the
  // work is worth a wake-up; each thread has its own scratch.
  const pool = poolFor(T * H * S * D);
  ws.scratchFor(pool?.threads ?? 1, scratchBytes(H / KV));
  const job: KernelJob = { op: 'attend', dtype: 'f32', w: 0, x: 0, y: 0, K: 0, r0: 0, r1: T * KV, align: 1,
    args: [qp, keys.k, keys.v, zp, qposp, keys.positions, T, S, H, KV, D, shape.window ?? 0, Math.sqrt(D), BLOCK, keys.headRows] };
  if (pool !== null) pool.run(ws, job);
  else runShare(ws.kernels, job, 0, T * KV, ws.widenScratch(0));
  const z = ws.f32(zp, T * H * D);
  if (out === undefined) return z.slice();
  out.set(z);
  return out;
}

/** Drops the pool threads' instances of a cache's memory when its CacheRows was never disposed. */
const orphans = new FinalizationRegistry<WasmMemory>((memory) => forgetMemory(memory));

/**
 * Memories of disposed caches, for the next cache to take: a fresh kernel memory cost 3–5 ms
 * (an instance of the kernels on every pool thread, first-touch page faults), once per layer
 * per generate() call, 4 % of a hidden-512 prefill of 512 tokens. Up to SPARE_BYTES in all;
 * past that a disposed cache's memory is freed (at 7B a cache is 32 layers of up to 32 MiB,
 * and the 3–5 ms are nothing against its prefill).
 */
const spare: Workspace[] = [];
let spareBytes = 0;
const SPARE_BYTES = 256 * 2 ** 20;

/**
 * One layer's cached keys and values in a kernel memory of their own, where the fused
 * kernel reads them in place: a step used to copy every row in use into the attention's
 * workspace first (for a hidden-512 model 0.6 MB a layer a step at 576 keys; at 7B with
 * 4096 keys 34 MB a layer, about half of attention's time).
 *
 * Layout: keys [kvHeads, capacity, headDim], values likewise, then each row's position
 * (i32 [capacity]); each call's regions (queries, z, scratch) follow.
 */
export class CacheRows {
  private readonly ws: Workspace;
  private capacity = 0;
  /** Its memory went back to the spares (or was freed): no more use. */
  private disposed = false;

  constructor(readonly kvHeads: number, readonly headDim: number) {
    const reused = spare.pop();
    if (reused !== undefined) spareBytes -= reused.memory.buffer.byteLength;
    this.ws = reused ?? new Workspace();
    this.ws.reset(); // makes a fresh workspace's memory, so it can be registered now
    orphans.register(this, this.ws.memory, this);
  }

  /** Floats of one of keys or values. */
  private floats(capacity = this.capacity): number {
    return this.kvHeads * capacity * this.headDim;
  }

  /** [kvHeads, capacity, headDim] (views stay valid: a shared memory grows in place). */
  get keys(): Float32Array {
    return this.ws.f32(0, this.floats());
  }

  get values(): Float32Array {
    return this.ws.f32(4 * this.floats(), this.floats());
  }

  /** [capacity]: the position each row holds. */
  get positions(): Int32Array {
    return this.ws.i32(8 * this.floats(), this.capacity);
  }

  /** Room for `capacity` rows per head; each head's first `rows` rows, and their positions, stay. */
  grow(capacity: number, rows: number): void {
    this.checkLive();
    const old = this.capacity;
    if (capacity <= old) return;
    this.ws.reserve(8 * this.floats(capacity) + 4 * capacity);
    // Every region moves up (or stays): move the last first, and within keys and values the
    // last head first, so nothing is overwritten before it moves.
    const bytes = new Uint8Array(this.ws.memory.buffer);
    const head = 4 * this.headDim; // bytes of one row
    bytes.copyWithin(8 * this.floats(capacity), 8 * this.floats(old), 8 * this.floats(old) + 4 * rows);
    for (const region of [1, 0]) {
      for (let h = this.kvHeads - 1; h >= 0; h--) {
        const from = 4 * region * this.floats(old) + h * old * head;
        bytes.copyWithin(4 * region * this.floats(capacity) + h * capacity * head, from, from + rows * head);
      }
    }
    this.capacity = capacity;
  }

  /**
   * The fused kernel over the first `rows` rows of every head, in place.
   * @param q [T, heads, headDim], after RoPE
   * @returns z [T, heads, headDim]: `out` when given
   */
  attend(q: Float32Array, queryPositions: readonly number[], rows: number, shape: AttentionShape, out?: Float32Array): Float32Array {
    this.checkLive();
    checkShape(shape);
    if (shape.kvHeads !== this.kvHeads || shape.headDim !== this.headDim || rows > this.capacity) {
      throw new RangeError(`cache rows: ${rows} rows of ${shape.kvHeads} × ${shape.headDim} asked of ${this.capacity} of ${this.kvHeads} × ${this.headDim}`);
    }
    this.ws.reset();
    return attendIn(this.ws, q, queryPositions, shape,
      { k: 0, v: 4 * this.floats(), positions: 8 * this.floats(), keys: rows, headRows: this.capacity }, out);
  }

  private checkLive(): void {
    if (this.disposed) throw new Error('cache rows used after dispose');
  }

  /** Gives the memory to the next cache, or frees it (the pool threads drop their instances of it). */
  dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    orphans.unregister(this);
    const bytes = this.ws.memory.buffer.byteLength;
    if (spareBytes + bytes <= SPARE_BYTES) {
      spare.push(this.ws);
      spareBytes += bytes;
    } else {
      forgetMemory(this.ws.memory);
    }
  }
}
