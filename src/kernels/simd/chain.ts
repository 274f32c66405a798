/**
 * Chains of kernels in the weights' own memory: the steps of a decoder layer that lie between
 * its products (RMSNorm, RoPE, SwiGLU's gate, the residual adds) run as wasm kernels across the
 * thread pool, over the arena's scratch, so that a product's output is the next step's input
 * with no JavaScript loop and no copy between them. On arrays, those steps were a quarter of
 * a hidden-512 prefill on two threads (one thread ran them while the other waited).
 *
 * Each chain computes exactly what its steps compute one by one (fused.ts's rmsNormInto and
 * ropeInPlace, elementwise.ts's swigluKernel, matmul.ts's matmul, a float32 add): the same
 * kernels, or the same roundings, so results are equal bit for bit (test/simd-chain.test.ts). The
 * residual stream stays a Float32Array; a chain copies the rows it works on in and out.
 *
 * Scratch per arena (arena.ts): the input region x holds the chain's operands (the norm
 * weight, the residual rows, the product inputs, RoPE's angles), the output region y the products'
 * outputs. Long prompts go in passes of tokens that fit.
 */
import { SCRATCH_X, SCRATCH_Y } from './arena.js';
import { layoutInput, permutedInput, productAt, tokensPerPass, type StoredMatrix } from './matmul.js';
import { poolFor, runShare, type KernelJob } from './pool.js';

/** Floats from `n` rounded up to a 64-byte boundary (regions start on cache lines). */
const lines = (n: number) => Math.ceil(n / 16) * 16;

/** The kernels' layout argument for a step whose output is a product's input over m: 1 permuted, 0 as it is. */
const layoutFor = (m: StoredMatrix) => (permutedInput(m.dtype) ? 1 : 0);

/** A chain keeps a whole output row in the output scratch. */
function checkRows(rows: number): void {
  if (rows > SCRATCH_Y) throw new RangeError(`kernel chain: output rows of ${rows} floats exceed the ${SCRATCH_Y} of scratch`);
}

/** Runs an elementwise kernel over token rows [0, T), on the pool when the work pays for a wake-up. */
function elementwise(m: StoredMatrix, op: 'rmsnorm' | 'swiglu' | 'addrows' | 'rope', T: number, width: number, args: number[],
  eps?: number): void {
  const job: KernelJob = { op, dtype: 'f32', w: 0, x: 0, y: 0, K: 0, r0: 0, r1: T, align: 1, args, ...(eps === undefined ? {} : { eps }) };
  const pool = poolFor(T * width);
  if (pool !== null) pool.run(m.arena, job);
  else runShare(m.arena.kernels, job, 0, T, m.arena.widenScratch(0));
}

/** RoPE on the first `heads` heads of each output row (q's heads, then k's, of a q|k|v product). */
export interface RopeOnOutput {
  /** [T, headDim] each (both halves), as ropeAngles makes them. */
  readonly cos: Float32Array;
  readonly sin: Float32Array;
  readonly heads: number;
  readonly headDim: number;
}

/**
 * out = rmsNorm(x) · Wᵀ (q|k|v, or the model's head), then RoPE on the first heads of each
 * row when `rope` is given (fused.ts's ropeInPlace, as a kernel on the pool).
 * @param x [T, cols]
 * @param norm [cols]
 * @returns [T, rows]: `out`
 */
export function normThenProduct(x: Float32Array, T: number, norm: Float32Array, eps: number, m: StoredMatrix,
  out: Float32Array, rope?: RopeOnOutput): Float32Array {
  const { arena, cols: K, rows } = m;
  checkRows(rows);
  const D = rope?.headDim ?? 0;
  if (rope !== undefined && (D % 2 !== 0 || rope.heads * D > rows || rope.cos.length < T * D || rope.sin.length < T * D)) {
    throw new RangeError(`normThenProduct: RoPE on ${rope.heads} heads of ${D} over rows of ${rows} and ${T} tokens ` +
      `(angles: ${rope.cos.length} and ${rope.sin.length} floats)`);
  }
  const wp = arena.x;
  const xp = wp + 4 * lines(K);
  // x: the norm weight, then per token its input row, then (with RoPE) its angles' rows
  const chunk = tokensPerPass(T, K, K + 2 * D, rows, SCRATCH_X - lines(K) - 16);
  arena.floats(wp, K).set(norm);
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const n = Math.min(chunk, T - t0);
    arena.floats(xp, n * K).set(x.subarray(t0 * K, (t0 + n) * K));
    elementwise(m, 'rmsnorm', n, K, [xp, wp, xp, K, layoutFor(m)], eps);
    productAt(m, xp, n, 0, rows, arena.y, rows);
    if (rope !== undefined) {
      const cp = xp + 4 * lines(n * K);
      const sp = cp + 4 * n * D;
      arena.floats(cp, n * D).set(rope.cos.subarray(t0 * D, (t0 + n) * D));
      arena.floats(sp, n * D).set(rope.sin.subarray(t0 * D, (t0 + n) * D));
      elementwise(m, 'rope', n, rope.heads * D, [arena.y, cp, sp, rows, rope.heads, D]);
    }
    out.set(arena.floats(arena.y, n * rows), t0 * rows);
  }
  return out;
}

/**
 * resid += x · Wᵀ (o_proj and the residual add).
 * @param x [T, cols]
 * @param resid [T, rows]
 */
export function productThenAdd(x: Float32Array, T: number, m: StoredMatrix, resid: Float32Array): void {
  const { arena, cols: K, rows } = m;
  checkRows(rows);
  const chunk = tokensPerPass(T, K, K + rows, rows, SCRATCH_X - 16); // x: the input, then the residual rows
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const n = Math.min(chunk, T - t0);
    const rp = arena.x + 4 * lines(n * K);
    layoutInput(x.subarray(t0 * K, (t0 + n) * K), n, K, m.dtype, arena.floats(arena.x, n * K));
    arena.floats(rp, n * rows).set(resid.subarray(t0 * rows, (t0 + n) * rows));
    productAt(m, arena.x, n, 0, rows, arena.y, rows);
    elementwise(m, 'addrows', n, rows, [rp, arena.y, rows]);
    resid.set(arena.floats(rp, n * rows), t0 * rows);
  }
}

/** Whether feedForward takes this gate|up and down: one arena, so the chain never leaves it. */
export function feedForwardFits(gateUp: StoredMatrix, down: StoredMatrix): boolean {
  return gateUp.arena === down.arena && gateUp.rows === 2 * down.cols && gateUp.cols === down.rows;
}

/**
 * resid += down(silu(gate(h)) ⊙ up(h)) with h = rmsNorm(resid): the SwiGLU MLP and its
 * residual add.
 * @param resid [T, hidden]
 * @param gateUp [2·inter, hidden]: gate's rows, then up's
 * @param down [hidden, inter]
 */
export function feedForward(resid: Float32Array, T: number, norm: Float32Array, eps: number, gateUp: StoredMatrix,
  down: StoredMatrix): void {
  const { arena, cols: H } = gateUp;
  const I = down.cols;
  checkRows(2 * I);
  const wp = arena.x;
  // x: the norm weight, then per token its residual row and the products' input (the
  // normed row, then the gate's output); y: gate|up's output, then down's
  const chunk = tokensPerPass(T, I, H + Math.max(H, I), Math.max(2 * I, H), SCRATCH_X - lines(H) - 16);
  arena.floats(wp, H).set(norm);
  for (let t0 = 0; t0 < T; t0 += chunk) {
    const n = Math.min(chunk, T - t0);
    const rp = wp + 4 * lines(H); // the residual rows [n, H]
    const hp = rp + 4 * lines(n * H); // the products' inputs: normed [n, H], then the gate's output [n, I]
    arena.floats(rp, n * H).set(resid.subarray(t0 * H, (t0 + n) * H));
    elementwise(gateUp, 'rmsnorm', n, H, [rp, wp, hp, H, layoutFor(gateUp)], eps);
    productAt(gateUp, hp, n, 0, 2 * I, arena.y, 2 * I);
    elementwise(gateUp, 'swiglu', n, I, [arena.y, arena.y + 4 * I, hp, I, 2 * I, layoutFor(down)]);
    productAt(down, hp, n, 0, H, arena.y, H);
    elementwise(gateUp, 'addrows', n, H, [rp, arena.y, H]);
    resid.set(arena.floats(rp, n * H), t0 * H);
  }
}
