/**
 * Kernel chains in the weights' memory (src/kernels/simd/chain.ts): each must equal its
 * steps done one by one on arrays (rmsNormInto, matmul, ropeInPlace, swigluKernel, a float32 add) bit for
 * bit, whatever the weights' type (the products' input order for 2-byte weights, natural for
 * f32), the thread count, and however many passes the tokens take; rows of 8 and tails. And
 * the RMSNorm kernel against float64 arithmetic, and in place.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { rmsNormInto, ropeInPlace } from '../src/kernels/fused.js';
import { WeightMemory } from '../src/kernels/simd/arena.js';
import { feedForward, feedForwardFits, normThenProduct, productThenAdd } from '../src/kernels/simd/chain.js';
import { swigluKernel } from '../src/kernels/simd/elementwise.js';
import { matmul, tokensPerPass, type StoredMatrix, type WeightDType } from '../src/kernels/simd/matmul.js';
import { closeKernelPool, defaultThreads, setParallelThreshold, setThreads } from '../src/kernels/simd/pool.js';

const memory = new WeightMemory();
afterAll(() => {
  memory.dispose();
  setParallelThreshold(2 ** 17);
  setThreads(defaultThreads());
  closeKernelPool();
});

/** Seeded values in ±[0.25, 1) · scale, as float32. */
function values(n: number, seed: number, scale = 1): Float32Array {
  let s = seed;
  return Float32Array.from({ length: n }, () => {
    s = (Math.imul(s, 1103515245) + 12345) >>> 0;
    return Math.fround(((s >>> 8) / 2 ** 24 - 0.5) * 1.5 * scale + (s & 1 ? 0.25 : -0.25) * scale);
  });
}

/** A [rows, cols] weight of seeded values stored as `dtype` in fresh kernel memory. */
function matrix(rows: number, cols: number, dtype: WeightDType, seed: number): StoredMatrix {
  const v = values(rows * cols, seed, 0.05);
  const bytes = dtype === 'f32' ? 4 : 2;
  const a = memory.alloc(bytes * rows * cols);
  if (dtype === 'f32') new Float32Array(a.arena.memory.buffer, a.ptr, rows * cols).set(v);
  else {
    const u = new Uint16Array(a.arena.memory.buffer, a.ptr, rows * cols);
    const f = new Float32Array(1);
    const i = new Uint32Array(f.buffer);
    for (let k = 0; k < u.length; k++) {
      f[0] = v[k]!;
      // bf16: the top half of the float32; f16: 0x3c00 ± small mantissas (values in [1, 2))
      u[k] = dtype === 'bf16' ? i[0]! >>> 16 : 0x3c00 + ((i[0]! >>> 13) & 0x3ff);
    }
  }
  return { ...a, rows, cols, dtype };
}

/**
 * Bit-for-bit equality of two float arrays. vitest's toEqual walks millions of elements at
 * microseconds each; this compares the bytes and reports the first difference.
 */
function expectSameBits(got: Float32Array, want: Float32Array): void {
  expect(got.length).toBe(want.length);
  const a = new Uint32Array(got.buffer, got.byteOffset, got.length);
  const b = new Uint32Array(want.buffer, want.byteOffset, want.length);
  const at = a.findIndex((v, i) => v !== b[i]);
  if (at >= 0) expect({ at, got: got[at] }).toEqual({ at, got: want[at] });
}

/** Two [rows, cols] matrices one after the other in one allocation, as one: what resident mode loads for gate|up. */
function pair(rows: number, cols: number, dtype: WeightDType, seed: number): StoredMatrix {
  return matrix(2 * rows, cols, dtype, seed);
}

describe('RMSNorm kernel', () => {
  it.each([1, 3, 8, 13, 64, 515])('matches float64 arithmetic rounded where the composite rounds (hidden %i)', (K) => {
    const T = 5;
    const x = values(T * K, K, 3);
    const w = values(K, K + 1);
    const y = new Float32Array(T * K);
    rmsNormInto(x, T, K, w, 1e-5, y);
    const f = Math.fround;
    for (let t = 0; t < T; t++) {
      let sum = 0;
      for (let i = 0; i < K; i++) sum += x[t * K + i]! ** 2;
      const scale = f(1 / Math.sqrt(f(f(sum / K) + 1e-5)));
      for (let i = 0; i < K; i++) {
        // the float64 sum in another order may differ in its last bit, which can move scale by an ulp
        const want = f(f(x[t * K + i]! * scale) * w[i]!);
        expect(Math.abs(y[t * K + i]! - want)).toBeLessThanOrEqual(2.5e-7 * Math.abs(want));
      }
    }
    const inPlace = x.slice();
    rmsNormInto(inPlace, T, K, w, 1e-5, inPlace);
    expect(inPlace).toEqual(y);
  });
});

describe.each(['bf16', 'f16', 'f32'] as const)('kernel chains over %s weights', (dtype) => {
  const eps = 1e-5;

  /** Runs `f` on 1, 2 and 3 threads, every kernel through the pool however small. */
  function onThreads(f: () => void): void {
    setParallelThreshold(0);
    try {
      for (const n of [1, 2, 3]) {
        setThreads(n);
        f();
      }
    } finally {
      setParallelThreshold(2 ** 17);
    }
  }

  it.each([1, 7, 300])('normThenProduct equals rmsNormInto then matmul (%i tokens)', (T) => {
    // 300 tokens of 64-element rows against 16400 rows: 127 tokens a pass (the output scratch)
    const K = T === 300 ? 64 : 21;
    const m = matrix(T === 300 ? 16400 : 44, K, dtype, 7);
    if (T === 300) expect(tokensPerPass(T, K, K, m.rows)).toBeLessThan(T / 2);
    const x = values(T * K, 3, 4);
    const w = values(K, 4);
    const normed = new Float32Array(T * K);
    rmsNormInto(x, T, K, w, eps, normed);
    const want = matmul(normed, T, m);
    onThreads(() => {
      const got = normThenProduct(x, T, w, eps, m, new Float32Array(T * m.rows));
      expectSameBits(got, want);
    });
  });

  it.each([[1, 8], [7, 12], [5, 6], [300, 64]])('normThenProduct with RoPE equals it without, then ropeInPlace on q and k (%i tokens, head dim %i)', (T, D) => {
    // heads: 3 of q, 1 of k, then 1 of v (not rotated); 300 tokens of 64-element rows against
    // 256 heads of 64 take several passes
    const heads = T === 300 ? 256 : 5;
    const K = T === 300 ? 64 : 19;
    const m = matrix(heads * D, K, dtype, 31);
    const x = values(T * K, 32, 4);
    const w = values(K, 33);
    const cos = values(T * D, 34);
    const sin = values(T * D, 35);
    const rotated = heads - 1;
    if (T === 300) expect(tokensPerPass(T, K, K + 2 * D, m.rows)).toBeLessThan(T / 2);
    const want = normThenProduct(x, T, w, eps, m, new Float32Array(T * m.rows));
    ropeInPlace(want, T, rotated, D, cos, sin, m.rows, 0);
    onThreads(() => {
      const got = normThenProduct(x, T, w, eps, m, new Float32Array(T * m.rows), { cos, sin, heads: rotated, headDim: D });
      expectSameBits(got, want);
    });
  });

  it('normThenProduct refuses RoPE on more heads than its rows hold, or too few angles', () => {
    const m = matrix(16, 8, dtype, 36);
    const x = values(2 * 8, 37);
    const w = values(8, 38);
    const angles = values(2 * 4, 39);
    const out = new Float32Array(2 * 16);
    expect(() => normThenProduct(x, 2, w, eps, m, out, { cos: angles, sin: angles, heads: 5, headDim: 4 }))
      .toThrow('RoPE on 5 heads of 4 over rows of 16 and 2 tokens');
    expect(() => normThenProduct(x, 2, w, eps, m, out, { cos: angles.subarray(1), sin: angles, heads: 4, headDim: 4 }))
      .toThrow('angles: 7 and 8 floats');
  });

  it.each([1, 6, 600])('productThenAdd equals matmul, then a float32 add into the residual (%i tokens)', (T) => {
    // 600 tokens of 4100 + 21 floats each: about 500 a pass (the input scratch holds x and the residual rows)
    const K = T === 600 ? 4100 : 37;
    const rows = T === 600 ? 21 : 20;
    const m = matrix(rows, K, dtype, 9);
    if (T === 600) expect(tokensPerPass(T, K, K + rows, rows)).toBeLessThan(T);
    const x = values(T * K, 5);
    const resid = values(T * rows, 6, 2);
    const y = matmul(x, T, m);
    const want = resid.map((r, i) => Math.fround(r + y[i]!));
    onThreads(() => {
      const got = resid.slice();
      productThenAdd(x, T, m, got);
      expectSameBits(got, want);
    });
  });

  it.each([1, 5, 130])('feedForward equals the SwiGLU MLP step by step, and the residual add (%i tokens)', (T) => {
    // 130 tokens against 2 × 8200 rows: 127 tokens a pass (the output scratch)
    const H = T === 130 ? 48 : 27;
    const I = T === 130 ? 8200 : 19;
    const gateUp = pair(I, H, dtype, 11);
    const down = matrix(H, I, dtype, 13);
    expect(feedForwardFits(gateUp, down)).toBe(true);
    const resid = values(T * H, 14, 3);
    const w = values(H, 15);
    const normed = new Float32Array(T * H);
    rmsNormInto(resid, T, H, w, eps, normed);
    const gu = matmul(normed, T, gateUp);
    const h = swigluKernel(gu, gu, T, I, 0, I, 2 * I);
    const d = matmul(h, T, down);
    const want = resid.map((r, i) => Math.fround(r + d[i]!));
    onThreads(() => {
      const got = resid.slice();
      feedForward(got, T, w, eps, gateUp, down);
      expectSameBits(got, want);
    });
  });
});

describe('feedForwardFits', () => {
  it('takes gate|up and down of matching shapes in one arena only', () => {
    const gateUp = pair(16, 8, 'bf16', 21);
    expect(feedForwardFits(gateUp, matrix(8, 16, 'bf16', 23))).toBe(true);
    expect(feedForwardFits(gateUp, matrix(8, 12, 'bf16', 24))).toBe(false); // inter differs
    expect(feedForwardFits(gateUp, matrix(9, 16, 'bf16', 25))).toBe(false); // hidden differs
    const other = new WeightMemory();
    try {
      const a = other.alloc(2 * 8 * 16);
      expect(feedForwardFits(gateUp, { ...a, rows: 8, cols: 16, dtype: 'bf16' })).toBe(false); // another arena
    } finally {
      other.dispose();
    }
  });
});
