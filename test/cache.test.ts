/**
 * The caches' bookkeeping on hand-made tensors: which slot each position lands in, what a
 * step attends to (the slots that hold a key plus the new keys: never an empty slot, so a
 * short context costs what it costs even with W = 4096), and that memory grows with the
 * context up to W rows and no further. The key of position p is filled with the value p
 * (head 1: −p, values ×10), so every returned row can be checked by eye.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { useBackend } from '../src/kernels/backend.js';
import { FullCache as Full, ModelCache, RollingCache as Rolling } from '../src/model/cache.js';
import { canAttend } from '../src/model/mask.js';

const KV = 2;
const D = 3;

/** Keys [kvHeads, tokens, headDim] for these positions: every entry of position p is p (head 1: −p). */
function keysAt(positions: number[]): tf.Tensor3D {
  const data = [1, -1].flatMap((sign) => positions.flatMap((p) => new Array<number>(D).fill(sign * p)));
  return tf.tensor3d(data, [KV, positions.length, D]);
}

/** The position each returned key row holds (read back from head 0). */
function rowsOf(k: tf.Tensor3D): number[] {
  const a = k.arraySync();
  return a[0]!.map((row) => row[0]!);
}

interface Seen {
  positions: number[];
  keys: number[];
  values: number[];
  /** Every entry of the returned keys and values, [kvHeads, keys, headDim] row-major. */
  allKeys: number[];
  allValues: number[];
}

/** One update; returns what the step attends to, as plain arrays, and disposes everything. */
function step(cache: Rolling | Full, positions: number[]): Seen {
  return tf.tidy(() => {
    const k = keysAt(positions);
    const v = tf.mul(keysAt(positions), 10) as tf.Tensor3D;
    const seen = cache.update(k, v, positions);
    expect(seen.k.shape).toEqual([KV, seen.positions.length, D]);
    expect(seen.v.shape).toEqual([KV, seen.positions.length, D]);
    return {
      positions: [...seen.positions], keys: rowsOf(seen.k), values: rowsOf(seen.v),
      allKeys: Array.from(seen.k.dataSync()), allValues: Array.from(seen.v.dataSync()),
    };
  });
}

/** Checks every entry of every returned row: the key row of position p is p on head 0, −p on head 1; values ×10. */
function expectRowsHoldTheirPositions(s: Seen): void {
  const want = keysAt(s.positions);
  const wantK = Array.from(want.dataSync());
  want.dispose();
  expect(s.allKeys).toEqual(wantK);
  expect(s.allValues).toEqual(wantK.map((x) => 10 * x));
}

/** Bytes of keys + values, float32, for this many rows. */
const rowBytes = (rows: number) => 2 * 4 * KV * rows * D;

/** a … b − 1 */
const range = (a: number, b: number) => Array.from({ length: Math.max(0, b - a) }, (_, i) => a + i);

beforeAll(async () => {
  await useBackend('cpu');
});

// Every bookkeeping test runs on both stores of the rows: plain arrays, and kernel memory
// (where the fused attention reads them in place; growth moves each head's rows in place).
describe.each([['plain arrays', false], ['kernel memory', true]] as const)('RollingCache, rows in %s', (_, inKernel) => {
  const RollingCache = class extends Rolling {
    constructor(W: number) {
      super(W, inKernel);
    }
  };
  it('follows the worked example of cache.ts (W = 4: chunk 0–3, chunk 4–5, token 6)', () => {
    const before = tf.memory().numTensors;
    const cache = new RollingCache(4);

    const a = step(cache, [0, 1, 2, 3]);
    expect(a.positions).toEqual([0, 1, 2, 3]); // no slot holds a key yet: only the chunk's own
    expect(a.keys).toEqual([0, 1, 2, 3]);

    const b = step(cache, [4, 5]);
    expect(b.positions).toEqual([0, 1, 2, 3, 4, 5]); // slots [0 1 2 3] + the chunk
    expect(b.keys).toEqual([0, 1, 2, 3, 4, 5]);

    const c = step(cache, [6]);
    expect(c.positions).toEqual([4, 5, 2, 3, 6]); // slots [4 5 2 3]: 4 → slot 0, 5 → slot 1
    expect(c.keys).toEqual([4, 5, 2, 3, 6]);
    expect(c.values).toEqual([40, 50, 20, 30, 60]);

    const d = step(cache, [7]);
    expect(d.positions).toEqual([4, 5, 6, 3, 7]); // 6 → slot 2
    expectRowsHoldTheirPositions(d);

    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('keeps the newest key per slot when a chunk is longer than W', () => {
    const cache = new RollingCache(3);
    const first = step(cache, [0, 1, 2, 3, 4, 5, 6]); // 6 → slot 0, 4 → slot 1, 5 → slot 2
    expect(first.positions).toEqual([0, 1, 2, 3, 4, 5, 6]); // the chunk attends to all its keys
    const next = step(cache, [7]);
    expect(next.positions).toEqual([6, 4, 5, 7]);
    expect(next.keys).toEqual([6, 4, 5, 7]);
    expectRowsHoldTheirPositions(next);
    expect(cache.bytes).toBe(rowBytes(3));
    cache.dispose();
  });

  it('holds at most W slots however many tokens pass: bytes grow to W rows and stop, tensor count flat', () => {
    const W = 4;
    const before = tf.memory().numTensors;
    const cache = new RollingCache(W);
    const bytes: number[] = [];
    const tensors: number[] = [];
    for (let p = 0; p < 5 * W; p++) {
      step(cache, [p]);
      bytes.push(cache.bytes);
      tensors.push(tf.memory().numTensors);
    }
    // keys + values, float32: 2 · 4 bytes · kvHeads · rows · headDim, one row per token up to W.
    expect(bytes).toEqual(range(0, 5 * W).map((p) => rowBytes(Math.min(p + 1, W))));
    expect(new Set(tensors)).toEqual(new Set([before])); // the cache keeps no tensors between steps
    cache.dispose();
    expect(cache.bytes).toBe(0);
  });

  it('restarts empty after dispose', () => {
    const cache = new RollingCache(2);
    step(cache, [0, 1]);
    cache.dispose();
    expect(step(cache, [0]).positions).toEqual([0]);
    expect(step(cache, [1]).positions).toEqual([0, 1]);
    cache.dispose();
  });

  it('W = 4096, a 5-token prompt and 45 decoded tokens: each step returns exactly the S keys of the context', () => {
    const W = 4096;
    const before = tf.memory().numTensors;
    const cache = new RollingCache(W);
    const prompt = step(cache, [0, 1, 2, 3, 4]);
    expect(prompt.positions).toEqual([0, 1, 2, 3, 4]);
    expectRowsHoldTheirPositions(prompt);
    expect(cache.bytes).toBe(rowBytes(5));
    for (let p = 5; p < 50; p++) { // past 16 and 32 rows, where the arrays grow
      const s = step(cache, [p]);
      expect(s.positions).toEqual(range(0, p + 1)); // slots 0 … p − 1 + the new key, not W + 1
      expectRowsHoldTheirPositions(s);
      expect(cache.bytes).toBe(rowBytes(p + 1));
      expect(cache.bytes).toBeLessThan(rowBytes(W) / 50);
    }
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('W = 5 over 23 tokens in chunks of 1, 3, 7, 2, 5, 1, 4: the keys of the window plus the chunk, every step', () => {
    const W = 5;
    const before = tf.memory().numTensors;
    const cache = new RollingCache(W);
    let start = 0;
    for (const size of [1, 3, 7, 2, 5, 1, 4]) {
      const chunk = range(start, start + size);
      const s = step(cache, chunk);
      // The slots hold the last W positions before the chunk, slot p mod W, in slot order
      // (a text from position 0 keeps slot s in row s); then the chunk's own keys.
      const held = range(Math.max(0, start - W), start).sort((a, b) => (a % W) - (b % W));
      expect(s.positions).toEqual([...held, ...chunk]);
      expectRowsHoldTheirPositions(s);
      // Every key a query of the chunk may see is there; of the cached ones, only the
      // spare slot (position start − W) is masked for every query.
      for (const i of chunk) {
        for (const j of range(0, i + 1)) if (canAttend(i, j, W)) expect(s.positions).toContain(j);
      }
      expect(held.filter((j) => !chunk.some((i) => canAttend(i, j, W)))).toEqual(start >= W ? [start - W] : []);
      expect(cache.bytes).toBe(rowBytes(Math.min(start + size, W)));
      start += size;
    }
    expect(start).toBe(23); // the window wrapped four times
    expect(step(cache, [23]).positions).toEqual([20, 21, 22, 18, 19, 23]);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a text that does not start at position 0 still returns only the slots that hold a key', () => {
    const cache = new RollingCache(4096);
    expect(step(cache, [1000, 1001]).positions).toEqual([1000, 1001]);
    const s = step(cache, [1002]);
    expect(s.positions).toEqual([1000, 1001, 1002]);
    expectRowsHoldTheirPositions(s);
    expect(cache.bytes).toBe(rowBytes(3));
    cache.dispose();
  });
});

describe.each([['plain arrays', false], ['kernel memory', true]] as const)('FullCache, rows in %s', (_, inKernel) => {
  const FullCache = class extends Full {
    constructor() {
      super(inKernel);
    }
  };
  it('keeps every key, in order, and grows by one row per token', () => {
    const cache = new FullCache();
    step(cache, [0, 1, 2]);
    const s = step(cache, [3]);
    expect(s.positions).toEqual([0, 1, 2, 3]);
    expect(s.keys).toEqual([0, 1, 2, 3]);
    expect(cache.bytes).toBe(2 * 4 * KV * 4 * D);
    step(cache, [4]);
    expect(cache.bytes).toBe(2 * 4 * KV * 5 * D);
    cache.dispose();
  });

  it('keeps every row through the growth of its arrays (chunks of 1, 3, 7, 20, 2 over 33 tokens)', () => {
    const before = tf.memory().numTensors;
    const cache = new FullCache();
    let start = 0;
    for (const size of [1, 3, 7, 20, 2]) {
      const s = step(cache, range(start, start + size));
      expect(s.positions).toEqual(range(0, start + size));
      expectRowsHoldTheirPositions(s);
      start += size;
      expect(cache.bytes).toBe(rowBytes(start));
    }
    cache.dispose();
    expect(cache.bytes).toBe(0);
    expect(step(cache, [0]).positions).toEqual([0]);
    cache.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('ModelCache', () => {
  it('makes one rolling cache per layer with a window, one full cache without', () => {
    const rolling = new ModelCache(3, 5);
    expect(rolling.layers).toHaveLength(3);
    expect(rolling.layers.every((l) => l instanceof Rolling && l.window === 5)).toBe(true);
    const full = new ModelCache(2, null);
    expect(full.layers.every((l) => l instanceof Full)).toBe(true);
    expect(rolling.length).toBe(0);
  });
});
