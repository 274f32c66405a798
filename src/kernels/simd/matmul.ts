/**
 * Matrix products over weights kept at their stored width in kernel memory (arena.ts),
 * with the wasm SIMD kernels of scripts/build-kernels.ts. Accumulation is float32.
 *
 * One token (decode) is a matrix-vector product that streams the weight once, widening
 * as it reads; several tokens (prefill) widen a panel of rows, one K chunk at a time,
 * into a float32 scratch and run a 4-rows × 2-tokens register tile over it.
 */
import { Arena, SCRATCH_X, SCRATCH_Y, MAX_K, type Allocation } from './arena.js';
import { poolFor, runShare, type KernelJob } from './pool.js';

export type WeightDType = 'bf16' | 'f16' | 'f32';

export const DTYPE_BYTES: Readonly<Record<WeightDType, number>> = { bf16: 2, f16: 2, f32: 4 };

/**
 * A [rows, cols] weight in an arena: row-major, or with `quads` (2-byte weights only) each
 * group of four rows as one stream, their 8-element blocks side by side and then their
 * tails (the last rows mod 4 stay row-major; see build-kernels.ts's gemv). A decode step
 * then reads one stream per four rows instead of four a row apart, which on the hosts
 * measured fetches rows from memory 1.4–1.7 × as fast. The loader stores resident
 * projections so (weights.ts); the embedding table, read a row at a time, and stream mode's
 * tensors, read for one use, stay row-major.
 */
export interface StoredMatrix extends Allocation {
  readonly rows: number;
  readonly cols: number;
  readonly dtype: WeightDType;
  readonly quads?: boolean;
}

/** Rows of m stored as quads: the whole groups of four, or none. */
export const quadRows = (m: StoredMatrix): number => (m.quads === true ? m.rows & ~3 : 0);

/** Rearranges a row-major 2-byte weight in place into quads (once, after it is read); returns it as such. */
export function toQuads(m: StoredMatrix): StoredMatrix {
  if (DTYPE_BYTES[m.dtype] !== 2) throw new RangeError(`toQuads: ${m.dtype} weights stay row-major`);
  if (m.quads === true) return m;
  if (m.rows >= 4) m.arena.kernels.quads(m.ptr, m.rows & ~3, m.cols, m.arena.widenScratch(0));
  return { ...m, quads: true };
}

/** Whether a product over weights of `dtype` reads its input permuted (layoutInput's order), not as it is. */
export const permutedInput = (dtype: WeightDType): boolean => dtype !== 'f32';

/**
 * Writes `T` rows of x into `dst` in the order the kernels read them: for 2-byte weights
 * each block of 8 is split into its even then its odd elements (see build-kernels.ts).
 */
export function layoutInput(x: Float32Array, T: number, K: number, dtype: WeightDType, dst: Float32Array): void {
  if (!permutedInput(dtype)) {
    dst.set(x.subarray(0, T * K));
    return;
  }
  const K8 = K & ~7;
  for (let t = 0; t < T; t++) {
    const o = t * K;
    for (let b = 0; b < K8; b += 8) {
      const i = o + b;
      dst[i] = x[i]!; dst[i + 1] = x[i + 2]!; dst[i + 2] = x[i + 4]!; dst[i + 3] = x[i + 6]!;
      dst[i + 4] = x[i + 1]!; dst[i + 5] = x[i + 3]!; dst[i + 6] = x[i + 5]!; dst[i + 7] = x[i + 7]!;
    }
    for (let k = K8; k < K; k++) dst[o + k] = x[o + k]!;
  }
}

/**
 * Blocking of the matrix-matrix kernel for rows of K: K in chunks of `kc` columns (a
 * multiple of 8), tokens in blocks of `tb` (a block of x is tb · kc floats, ≤ 512 KiB),
 * rows in panels of `panel`, widened once per (chunk, token block). Rows past 1024 go in
 * chunks of 1024 and panels of 4: a 4-row group then stays in L1 (16 KiB widened) while
 * the block's 128 tokens stream past it from L2. Measured on one thread (Zen 5, bf16,
 * 512 tokens, weights larger than L3; the SIMD probe says 53–55 GFLOP/s): K = 4096 37 →
 * 42–44 GFLOP/s (it was whole, 32-token blocks), K = 14336 41 → 45–46 (chunks of 2048),
 * K = 1536 42 → 48 (whole, 84-token blocks of 16-row panels); K = 512 stays whole (49).
 */
export function gemmBlocking(K: number): { kc: number; tb: number; panel: number } {
  const kc = K <= 1024 ? K : 1024;
  return { kc, tb: Math.max(2, Math.floor(131072 / kc) & ~1), panel: K > 1024 ? 4 : 16 };
}

/**
 * y = x · Wᵀ for T tokens.
 * @param x [T, cols] row-major
 * @param out where to write y (a caller that reuses its arrays: a fresh array of megabytes
 *   costs a page fault per 4 KiB on first touch, ~1 ms a megabyte on a VM)
 * @returns [T, rows]: `out` when given
 */
export function matmul(x: Float32Array, T: number, m: StoredMatrix, out = new Float32Array(T * m.rows)): Float32Array {
  const { rows, cols: K, arena } = m;
  if (K > MAX_K) throw new RangeError(`matmul: rows of ${K} elements exceed the kernels' ${MAX_K}`);
  if (out.length !== T * rows) throw new RangeError(`matmul: an output of ${out.length} floats for ${T} tokens × ${rows} rows`);
  if (rows > SCRATCH_Y) return matmulWide(x, T, m, out);
  const chunk = tokensPerPass(T, K, K, rows);
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const n = Math.min(chunk, T - t0);
    run(arena, m, x.subarray(t0 * K, (t0 + n) * K), n, 0, rows, arena.y, rows);
    out.set(arena.floats(arena.y, n * rows), t0 * rows);
  }
  return out;
}

/**
 * Tokens a pass can take when each token needs `xPerToken` floats of the input scratch and
 * `yPerToken` of the output scratch (of `xFloats` and `yFloats`), for a product with rows
 * of K: as many as fit, in whole token blocks of the matrix-matrix kernel when it takes
 * several passes (each pass widens every weight once a block: 7B's gate|up took 73 tokens
 * a pass, blocks of 32, 32 and 9).
 */
export function tokensPerPass(T: number, K: number, xPerToken: number, yPerToken: number, xFloats = SCRATCH_X,
  yFloats = SCRATCH_Y): number {
  let chunk = Math.max(1, Math.min(T, Math.floor(xFloats / xPerToken), Math.floor(yFloats / yPerToken)));
  const { tb } = gemmBlocking(K);
  if (chunk < T && chunk > tb) chunk -= chunk % tb;
  return chunk;
}

/** A single token against more rows than the output scratch holds (a huge vocabulary): row slices. */
function matmulWide(x: Float32Array, T: number, m: StoredMatrix, out: Float32Array): Float32Array {
  const { rows, cols: K, arena } = m;
  for (let t = 0; t < T; t++) {
    for (let r0 = 0; r0 < rows; r0 += SCRATCH_Y) {
      const r1 = Math.min(rows, r0 + SCRATCH_Y);
      run(arena, m, x.subarray(t * K, (t + 1) * K), 1, r0, r1, arena.y - 4 * r0, rows);
      out.set(arena.floats(arena.y, r1 - r0), t * rows + r0);
    }
  }
  return out;
}

/** Rows [r0, r1) of n tokens, into y (byte offset; element (t, r) at y + 4·(t·ldy + r)). */
function run(arena: Arena, m: StoredMatrix, x: Float32Array, n: number, r0: number, r1: number, y: number, ldy: number): void {
  layoutInput(x, n, m.cols, m.dtype, arena.floats(arena.x, n * m.cols));
  productAt(m, arena.x, n, r0, r1, y, ldy);
}

/**
 * Rows [r0, r1) of the product of n tokens whose input already lies in m's arena at byte
 * offset `xp`, in the kernels' order (layoutInput's), into y (byte offset; element (t, r) at
 * y + 4·(t·ldy + r)).
 */
export function productAt(m: StoredMatrix, xp: number, n: number, r0: number, r1: number, y: number, ldy: number): void {
  const K = m.cols;
  const rq = quadRows(m);
  // the kernels take quads a whole group at a time
  if ((r0 < rq && r0 % 4 !== 0) || (r1 < rq && r1 % 4 !== 0)) {
    throw new RangeError(`matmul: rows [${r0}, ${r1}) cut a group of four of a weight stored as quads`);
  }
  const job: KernelJob = n === 1
    ? { op: 'gemv', dtype: m.dtype, w: m.ptr, x: xp, y, r0, r1, K, rq }
    : { op: 'gemm', dtype: m.dtype, w: m.ptr, x: xp, y, r0, r1, K, T: n, ldy, ...gemmBlocking(K), rq };
  const pool = poolFor((r1 - r0) * K * n);
  if (pool !== null) pool.run(m.arena, job);
  else runShare(m.arena.kernels, job, r0, r1, m.arena.widenScratch(0));
}

/**
 * Whether `b` starts where `a` ends in the same arena, rows of the same width, type and
 * layout (with quads, `a` in whole groups, so the groups of both read as one weight's).
 */
function follows(a: StoredMatrix, b: StoredMatrix): boolean {
  return a.arena === b.arena && a.dtype === b.dtype && a.cols === b.cols && b.ptr === a.ptr + a.rows * a.cols * DTYPE_BYTES[a.dtype] &&
    (a.quads === true) === (b.quads === true) && (a.quads !== true || a.rows % 4 === 0);
}

/** [W₀; W₁; …] as one matrix when each weight starts where the one before ends; else null. */
export function concatenated(ms: readonly StoredMatrix[]): StoredMatrix | null {
  if (!ms.every((m, i) => i === 0 || follows(ms[i - 1]!, m))) return null;
  return { ...ms[0]!, rows: ms.reduce((n, m) => n + m.rows, 0) };
}

/**
 * x · [W₀; W₁; …]ᵀ: the products of several weights with one input, side by side.
 * Weights stored one after another (resident mode loads q, k, v and gate, up so) run as
 * one product: one dispatch to the threads and one pass over x. Others run one by one.
 * @param x [T, cols]
 * @returns [T, Σ rows]: row t holds W₀'s outputs, then W₁'s, …; `out` when given
 */
export function matmulConcat(x: Float32Array, T: number, ms: readonly StoredMatrix[],
  out = new Float32Array(T * ms.reduce((n, m) => n + m.rows, 0))): Float32Array {
  const rows = ms.reduce((n, m) => n + m.rows, 0);
  const whole = concatenated(ms);
  if (whole !== null) return matmul(x, T, whole, out);
  if (out.length !== T * rows) throw new RangeError(`matmulConcat: an output of ${out.length} floats for ${T} tokens × ${rows} rows`);
  let col = 0;
  for (const m of ms) {
    const part = matmul(x, T, m);
    for (let t = 0; t < T; t++) out.set(part.subarray(t * m.rows, (t + 1) * m.rows), t * rows + col);
    col += m.rows;
  }
  return out;
}
