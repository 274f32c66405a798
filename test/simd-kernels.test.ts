/**
 * The wasm SIMD kernels against a float64 reference on the same stored values, at shapes
 * that exercise every path: row groups of 4 and leftover rows, 8-blocks and K mod 8 tails,
 * token pairs and an odd token, several token blocks, and the f16 special values.
 */
import { describe, expect, it } from 'vitest';
import { kernelVariant, WeightMemory } from '../src/kernels/simd/arena.js';
import { matmul, productAt, DTYPE_BYTES, toQuads, type StoredMatrix, type WeightDType } from '../src/kernels/simd/matmul.js';
import { closeKernelPool, setParallelThreshold, setThreads } from '../src/kernels/simd/pool.js';
import { halfToFloat } from '../src/io/safetensors.js';

/** Deterministic values in [-1, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 31 - 1;
  };
}

/** Stores random weights in `dtype`; returns the matrix and the exact float values stored. */
function store(mem: WeightMemory, rows: number, cols: number, dtype: WeightDType, seed: number, special: number[] = []) {
  const rand = rng(seed);
  const a = mem.alloc(rows * cols * DTYPE_BYTES[dtype]);
  const values = new Float64Array(rows * cols);
  const buf = a.arena.bytes(a.ptr, rows * cols * DTYPE_BYTES[dtype]);
  const u16 = new Uint16Array(buf.buffer, buf.byteOffset, rows * cols);
  const f32 = new Float32Array(buf.buffer, buf.byteOffset, dtype === 'f32' ? rows * cols : 0);
  const scratch = new Float32Array(1);
  const bits = new Uint32Array(scratch.buffer);
  for (let i = 0; i < rows * cols; i++) {
    if (dtype === 'f32') {
      f32[i] = rand();
      values[i] = f32[i]!;
    } else if (dtype === 'bf16') {
      scratch[0] = rand();
      u16[i] = bits[0]! >>> 16;
      bits[0] = u16[i]! << 16;
      values[i] = scratch[0]!;
    } else {
      const h = special.length > 0 && i < special.length ? special[i]! : Math.floor(((rand() + 1) / 2) * 0x3bff) | (rand() < 0 ? 0x8000 : 0);
      u16[i] = h;
      values[i] = halfToFloat(h);
    }
  }
  return { m: { ...a, rows, cols, dtype } as StoredMatrix, values };
}

function reference(values: Float64Array, rows: number, cols: number, x: Float32Array, T: number): Float64Array {
  const y = new Float64Array(T * rows);
  for (let t = 0; t < T; t++) {
    for (let r = 0; r < rows; r++) {
      let s = 0;
      for (let k = 0; k < cols; k++) s += values[r * cols + k]! * x[t * cols + k]!;
      y[t * rows + r] = s;
    }
  }
  return y;
}

function maxErr(got: Float32Array, want: Float64Array): number {
  let e = 0;
  for (let i = 0; i < want.length; i++) e = Math.max(e, Math.abs(got[i]! - want[i]!));
  return e;
}

// Beyond a row group, token pair and 8-block with their leftovers: 16-row panels with a
// short last one, several token blocks, and rows past 1024 that go in K chunks of 1024
// added together (5003: four whole chunks and a last one with a K mod 8 tail; 1536 × 130
// tokens, hidden-512's down_proj: a chunk and a half, two token blocks of 128 and one of 2).
const SHAPES: Array<[rows: number, cols: number, tokens: number]> = [
  [1, 1, 1], [3, 7, 1], [4, 8, 1], [5, 9, 2], [13, 24, 3], [64, 72, 5], [37, 515, 1], [37, 515, 17],
  [8, 4096, 2], [130, 300, 64], [6, 20000, 9], [40, 600, 300], [21, 5003, 67], [9, 1536, 130],
];

describe.each(['bf16', 'f16', 'f32'] as const)('%s kernels', (dtype) => {
  it.each(SHAPES)('[%i × %i] weights × %i tokens match a float64 reference', (rows, cols, T) => {
    const mem = new WeightMemory();
    const { m, values } = store(mem, rows, cols, dtype, rows * 7919 + cols * 31 + T);
    const rand = rng(cols);
    const x = Float32Array.from({ length: T * cols }, rand);
    const y = matmul(x, T, m);
    // float32 accumulation of `cols` products of size ≤ 1: error grows like cols · 2^-24.
    expect(maxErr(y, reference(values, rows, cols, x, T))).toBeLessThan(cols * 2 ** -22 + 1e-6);
  });
});

/** Where element (r, k) of a [rows, K] weight stored as quads lies, in elements (the layout of matmul.ts). */
function quadIndex(r: number, k: number, rows: number, K: number): number {
  const K8 = K & ~7;
  if (r >= (rows & ~3)) return r * K + k; // the last rows mod 4: row-major
  const group = (r & ~3) * K; // a group takes the place of its four rows
  return k < K8 ? group + (k >> 3) * 32 + (r & 3) * 8 + (k & 7) : group + 4 * K8 + (r & 3) * (K - K8) + (k - K8);
}

describe('weights stored as quads (2-byte projections, as the loader stores them)', () => {
  it('the rearrangement puts every element where the layout says, rows and K of every remainder', () => {
    for (const [rows, K] of [[4, 8], [9, 21], [13, 40], [8, 3], [6, 1037]] as const) {
      const mem = new WeightMemory();
      const { m } = store(mem, rows, K, 'bf16', rows * 100 + K);
      const before = m.arena.bytes(m.ptr, 2 * rows * K).slice();
      const q = toQuads(m);
      expect(q.quads).toBe(true);
      const b16 = new Uint16Array(before.buffer);
      const after = new Uint16Array(q.arena.memory.buffer, q.ptr, rows * K);
      const moved: number[] = [];
      for (let r = 0; r < rows; r++) for (let k = 0; k < K; k++) if (after[quadIndex(r, k, rows, K)] !== b16[r * K + k]) moved.push(r * K + k);
      expect(moved).toEqual([]);
      mem.dispose();
    }
  });

  it('refuses f32 weights, and a row range that cuts a group of four', () => {
    const mem = new WeightMemory();
    expect(() => toQuads(store(mem, 8, 16, 'f32', 1).m)).toThrow('toQuads: f32 weights stay row-major');
    const { m } = store(mem, 12, 16, 'bf16', 2);
    const q = toQuads(m);
    // rows [2, 12) or [0, 6) would start or end mid-group
    expect(() => productAt(q, q.arena.x, 1, 2, 12, q.arena.y, 12)).toThrow('matmul: rows [2, 12) cut a group of four of a weight stored as quads');
    expect(() => productAt(q, q.arena.x, 3, 0, 6, q.arena.y, 12)).toThrow('matmul: rows [0, 6) cut a group of four of a weight stored as quads');
    mem.dispose();
  });

  describe.each(['bf16', 'f16'] as const)('%s', (dtype) => {
    it.each([1, 2, 3])('matrix-vector and matrix-matrix products equal the row-major ones bit for bit, at every shape (%i threads)', (threads) => {
      setThreads(threads);
      setParallelThreshold(0); // every product through the pool, however small
      try {
        for (const [rows, cols, T] of SHAPES) {
          const mem = new WeightMemory();
          const seed = rows * 7919 + cols * 31 + T;
          const plain = store(mem, rows, cols, dtype, seed).m;
          const quads = toQuads(store(mem, rows, cols, dtype, seed).m);
          const rand = rng(cols + 1);
          const x = Float32Array.from({ length: T * cols }, rand);
          for (const n of new Set([1, T])) {
            expect(matmul(x.subarray(0, n * cols), n, quads), `[${rows} × ${cols}] × ${n}`).toEqual(matmul(x.subarray(0, n * cols), n, plain));
          }
          mem.dispose();
        }
      } finally {
        setParallelThreshold(2 ** 17);
        closeKernelPool();
      }
    });
  });
});

describe('outputs longer than the output scratch', () => {
  it('a token against 2^21 + 5 rows goes in row slices, every row right', () => {
    const mem = new WeightMemory();
    const rows = 2 ** 21 + 5;
    const { m, values } = store(mem, rows, 3, 'f32', 11);
    const x = Float32Array.from([0.5, -2, 0.25]);
    const y = matmul(x, 1, m);
    let err = 0;
    for (let r = 0; r < rows; r++) err = Math.max(err, Math.abs(y[r]! - (values[3 * r]! * 0.5 - 2 * values[3 * r + 1]! + 0.25 * values[3 * r + 2]!)));
    expect(err).toBeLessThan(1e-6);
  });
});

describe('inputs longer than the output scratch', () => {
  it('go in passes of whole token blocks, each row and token computed as in one pass, bit for bit', () => {
    // 8000 rows × 600 tokens pass the 2^21-float output scratch: passes of 256, 256 and 88
    // tokens. A row's dot product with a token does not depend on how rows and tokens are
    // grouped, so row slices small enough for one pass must give the same bits.
    const mem = new WeightMemory();
    const rows = 8000;
    const cols = 512;
    const T = 600;
    const { m } = store(mem, rows, cols, 'bf16', 5);
    const rand = rng(6);
    const x = Float32Array.from({ length: T * cols }, rand);
    const whole = matmul(x, T, m);
    const slice = 2000;
    for (let r0 = 0; r0 < rows; r0 += slice) {
      const part = matmul(x, T, { ...m, ptr: m.ptr + r0 * cols * DTYPE_BYTES.bf16, rows: slice });
      for (let t = 0; t < T; t += 37) expect(whole.subarray(t * rows + r0, t * rows + r0 + slice)).toEqual(part.subarray(t * slice, (t + 1) * slice));
    }
  });
});

describe('f16 special values', () => {
  it('widens subnormals, zeros, infinities and NaN exactly', () => {
    const mem = new WeightMemory();
    const special = [0x0001, 0x03ff, 0x8001, 0x0000, 0x8000, 0x7bff, 0xfbff, 0x0400, 0x7c00, 0xfc00, 0x7e00];
    for (let i = 0; i < special.length; i++) {
      // one stored special value per row, multiplied by x = e_k picks it out exactly
      const { m, values } = store(mem, special.length, 16, 'f16', 1, []);
      const buf = new Uint16Array(m.arena.memory.buffer, m.ptr, special.length * 16);
      buf.fill(0);
      special.forEach((h, r) => { buf[r * 16 + (i % 16)] = h; });
      const x = new Float32Array(16);
      x[i % 16] = 1;
      const y = matmul(x, 1, m);
      const y2 = matmul(Float32Array.from([...x, ...x]), 2, m);
      special.forEach((h, r) => {
        const want = halfToFloat(h);
        for (const got of [y[r]!, y2[r]!, y2[special.length + r]!]) {
          if (Number.isNaN(want)) expect(got).toBeNaN();
          else expect(got + 0).toBe(want + 0); // a sum with +0 terms loses the sign of zero
        }
      });
      void values;
    }
  });
});

describe('the build in use', () => {
  it('is the relaxed-SIMD one on this Node (test/simd-baseline.test.ts covers the other)', () => {
    expect(kernelVariant()).toBe('relaxed-simd');
  });
});

describe('WeightMemory', () => {
  it('opens a new 4 GiB arena only when the current one is full', () => {
    const mem = new WeightMemory();
    const a = mem.alloc(1000);
    const b = mem.alloc(1000);
    expect(b.arena).toBe(a.arena);
    expect(b.ptr).toBeGreaterThanOrEqual(a.ptr + 1000);
    expect(b.ptr % 64).toBe(0);
    expect(() => mem.alloc(5 * 2 ** 30)).toThrow(/does not fit in a 4 GiB wasm memory/);
  });
});
