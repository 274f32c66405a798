/**
 * Fused attention on the simd kernels: queries, keys and values go into a workspace memory,
 * and one kernel computes softmax(q·kᵀ/√D + mask)·v per query and head in a single pass
 * over the keys (online softmax, in blocks of keys), without a [tokens, keys] score matrix.
 * The arithmetic of model/attention.ts, in another order (so float32 roundings differ):
 * that path stays the reference, and runs whenever a hook asks for the scores or the
 * pattern. The mask rule is mask.ts's: 0 ≤ j ≤ i and i − W < j.
 */
import { poolFor, runShare, type KernelJob } from './pool.js';
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
  const { heads: H, kvHeads: KV, headDim: D } = shape;
  if (D % 4 !== 0) throw new RangeError(`fused attention needs headDim a multiple of 4, got ${D}`);
  if (H % KV !== 0) throw new RangeError(`fused attention needs heads a multiple of kvHeads, got ${H} and ${KV}`);
  const T = queryPositions.length;
  workspace.reset();
  const qp = workspace.alloc(4 * T * H * D);
  const zp = workspace.alloc(4 * T * H * D);
  const qposp = workspace.alloc(4 * T);
  workspace.f32(qp, T * H * D).set(q);
  workspace.i32(qposp, T).set(queryPositions);
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
  // Units (a token and a kv head: its H / KV query heads) split over the threads when the
  // work is worth a wake-up; each thread has its own scratch.
  const pool = poolFor(T * H * S * D);
  workspace.scratchFor(pool?.threads ?? 1, scratchBytes(H / KV));
  const job: KernelJob = { op: 'attend', dtype: 'f32', w: 0, x: 0, y: 0, K: 0, r0: 0, r1: T * KV, align: 1,
    args: [qp, kp, vp, zp, qposp, kposp, T, S, H, KV, D, shape.window ?? 0, Math.sqrt(D), BLOCK] };
  if (pool !== null) pool.run(workspace, job);
  else runShare(workspace.kernels, job, 0, T * KV, workspace.widenScratch(0));
  const z = workspace.f32(zp, T * H * D);
  if (out === undefined) return z.slice();
  out.set(z);
  return out;
}
