/**
 * The fused attention kernel (simd kernels): against a float64 softmax on its own, over the
 * paths inside it (blocks of keys, a max that grows late, windows, empty slots, every grouping
 * of query heads and head size, long decodes, 1-3 threads), and against the composite tfjs
 * path it replaces: same logits within the golden tolerance and the same greedy ids, on every
 * golden model, for a full forward, chunked prefill through a window that wraps, and decoding.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { generate } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { kernelMemory } from '../src/kernels/simd/arena.js';
import { fusedAttention } from '../src/kernels/simd/attention.js';
import { closeKernelPool, defaultThreads, setParallelThreshold, setThreads } from '../src/kernels/simd/pool.js';
import { fusedAttentionStep } from '../src/model/attention.js';
import { FullCache, RollingCache } from '../src/model/cache.js';
import type { ModelConfig } from '../src/model/config.js';
import type { Hooks } from '../src/model/hooks.js';
import { canAttend } from '../src/model/mask.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { GOLDEN_MODELS, modelDir } from './helpers/fixtures.js';

/** A hook that only watches attn.hook_pattern in every layer: it forces the composite path. */
function compositeHooks(layers: number): Hooks {
  return new Map(Array.from({ length: layers }, (_, l) => [`blocks.${l}.attn.hook_pattern`, () => undefined]));
}

const maxDiff = (a: ArrayLike<number>, b: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
};
const maxAbs = (a: ArrayLike<number>) => {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
};

/** A pseudo-random float in [−scale, scale). */
function randoms(n: number, scale: number, seed: number): Float32Array {
  let x = seed >>> 0;
  return Float32Array.from({ length: n }, () => {
    x = (Math.imul(x, 1664525) + 1013904223) >>> 0;
    return scale * (2 * (x / 2 ** 32) - 1);
  });
}

interface Case {
  readonly H: number;
  readonly KV: number;
  readonly D: number;
  readonly W: number | null;
  readonly qpos: readonly number[];
  /** Slot order of the keys; −1 an empty slot. */
  readonly kpos: readonly number[];
  readonly q: Float32Array; // [T, H, D]
  readonly k: Float32Array; // [KV, S, D]
  readonly v: Float32Array;
}

function run(c: Case): Float32Array {
  return fusedAttention(c.q, c.qpos, { heads: c.H, kvHeads: c.KV, headDim: c.D, window: c.W }, (into) => {
    const a = into(c.kpos.length);
    a.k.set(c.k);
    a.v.set(c.v);
    return c.kpos;
  });
}

/** softmax(q·kᵀ/√D)·v over the keys mask.ts lets each query see, in float64: [T, H, D]. */
function reference(c: Case): Float64Array {
  const { H, KV, D, W, qpos, kpos, q, k, v } = c;
  const T = qpos.length;
  const S = kpos.length;
  const z = new Float64Array(T * H * D);
  for (let t = 0; t < T; t++) {
    const seen = kpos.flatMap((p, j) => (canAttend(qpos[t]!, p, W) ? [j] : []));
    for (let h = 0; h < H; h++) {
      const g = Math.floor(h / (H / KV));
      const s = seen.map((j) => {
        let dot = 0;
        for (let d = 0; d < D; d++) dot += q[(t * H + h) * D + d]! * k[(g * S + j) * D + d]!;
        return dot / Math.sqrt(D);
      });
      const m = Math.max(...s);
      const e = s.map((x) => Math.exp(x - m));
      const l = e.reduce((a, b) => a + b, 0);
      for (let d = 0; d < D; d++) {
        z[(t * H + h) * D + d] = seen.reduce((acc, j, i) => acc + (e[i]! / l) * v[(g * S + j) * D + d]!, 0);
      }
    }
  }
  return z;
}

/** A case with random q, k, v (|q|, |k| ≤ 1, |v| ≤ 2) for the given positions. */
function randomCase(H: number, KV: number, D: number, W: number | null, qpos: readonly number[], kpos: readonly number[], seed = 1): Case {
  const T = qpos.length;
  const S = kpos.length;
  return { H, KV, D, W, qpos, kpos, q: randoms(T * H * D, 1, seed), k: randoms(KV * S * D, 1, seed + 1), v: randoms(KV * S * D, 2, seed + 2) };
}

/**
 * The kernel against the float64 reference, within 1e-6 (values of order 1). Scores, the
 * exps (~1-2 ulp) and the sums of p·v are float32, so each output carries a few float32
 * roundings of its size; 1e-6 is ~16 ulp of 1, and no case here comes near it.
 */
function expectClose(c: Case): void {
  const z = run(c);
  const want = reference(c);
  expect(z.length).toBe(want.length);
  expect(maxDiff(z, want)).toBeLessThan(1e-6);
}

describe('the float32 exp inside the kernel', () => {
  it('is within 1.5 ulp of e^x on [−87, 0], 1 at 0, 0 from −88 down and for −∞, NaN for NaN', () => {
    const { exp_f32: exp } = kernelMemory(65536).kernels;
    const bits = new Uint32Array(1);
    const f = new Float32Array(bits.buffer);
    /** The float32 spacing above y. */
    const ulp = (y: number) => {
      f[0] = y;
      bits[0]! += 1;
      return f[0]! - y;
    };
    let worst = 0;
    for (let i = 0; i <= 100_000; i++) {
      const x = Math.fround(-87 * (i / 100_000) ** 1.5); // denser near 0, where softmax weights live
      const want = Math.exp(x);
      worst = Math.max(worst, Math.abs(exp(x) - want) / ulp(Math.fround(want)));
    }
    expect(worst).toBeLessThan(1.5);
    expect(exp(0)).toBe(1);
    expect(exp(-0)).toBe(1);
    for (const x of [-88, -100, -1e30, -Infinity]) expect(exp(x)).toBe(0);
    expect(exp(NaN)).toBeNaN();
  });
});

describe('fusedAttention', () => {
  it('matches a float64 softmax(q·kᵀ/√D)·v with the causal window, over arbitrary key order and empty slots', () => {
    const T = 5, H = 4, KV = 2, D = 8, W = 3;
    const qpos = [7, 8, 9, 10, 11];
    const kpos = [9, -1, 6, 7, 8, 10, 11, 5]; // slot order of a rolling cache, one empty slot
    const S = kpos.length;
    // every query sees exactly W keys of these slots (its own among them)
    for (const p of qpos) expect(kpos.filter((k) => canAttend(p, k, W)).length).toBe(Math.min(W, p - 4));
    const c: Case = {
      H, KV, D, W, qpos, kpos,
      q: Float32Array.from({ length: T * H * D }, (_, i) => Math.sin(i * 1.3)),
      k: Float32Array.from({ length: KV * S * D }, (_, i) => Math.cos(i * 0.7)),
      v: Float32Array.from({ length: KV * S * D }, (_, i) => Math.sin(i * 0.3) * 2),
    };
    const z = run(c);
    const want = reference(c);
    for (let i = 0; i < want.length; i++) expect(Math.abs(z[i]! - want[i]!)).toBeLessThan(1e-6);
  });

  it('rescales when the max grows late: several blocks of keys, each later key scoring higher', () => {
    // Key j is q's own direction scaled by j (head 0 of the token), so every block raises the
    // running max; the last keys dominate and the first blocks' sums are scaled down to ~0.
    const H = 4, KV = 1, D = 16, S = 150;
    const c = randomCase(H, KV, D, null, [S - 1, S + 10], Array.from({ length: S }, (_, j) => j), 7);
    const k = c.k;
    for (let j = 0; j < S; j++) {
      for (let d = 0; d < D; d++) k[j * D + d] = (j / S) * 3 * c.q[d]! + 0.1 * k[j * D + d]!;
    }
    expectClose(c);
    // and a single key far above the rest, late in the last block
    k.fill(0.01);
    for (let d = 0; d < D; d++) k[(S - 3) * D + d] = 2 * c.q[d]!;
    expectClose(c);
  });

  it('a window that leaves a query only keys in the last, partial block', () => {
    // 100 keys in order; W = 6: the last queries see 6 keys, all past the third block of 32
    const S = 100;
    expectClose(randomCase(8, 2, 64, 6, [40, 97, 98, 99], Array.from({ length: S }, (_, j) => j), 11));
    // and W = 37: one full block and part of another
    expectClose(randomCase(8, 2, 64, 37, [36, 50, 99], Array.from({ length: S }, (_, j) => j), 12));
  });

  it('a rolling cache: keys in slot order that wrapped, empty slots between them', () => {
    const W = 40;
    // 64 slots: positions 60…99 wrapped around slot 20, eight slots still empty
    const kpos = Array.from({ length: 64 }, (_, s) => (s >= 48 && s < 56 ? -1 : s < 20 ? 80 + s : s < 48 ? 60 + (s - 20) : -1));
    expectClose(randomCase(4, 2, 32, W, [99, 98, 90, 70], kpos, 21));
    // every slot but a few empty, no window
    const sparse = Array.from({ length: 70 }, (_, s) => (s % 9 === 4 ? s : -1));
    expectClose(randomCase(4, 4, 8, null, [66, 4, 30], sparse, 22));
  });

  it.each([
    [1, 4], [1, 64], [1, 128], [2, 64], [3, 12], [4, 4], [4, 64], [4, 128], [5, 36], [6, 20], [7, 64], [8, 4], [8, 64], [8, 128],
  ])('G = %i query heads per kv head, D = %i (every path of heads and chunks)', (G, D) => {
    const KV = 2, T = 9, S = 45;
    const qpos = Array.from({ length: T }, (_, t) => S - T + t);
    expectClose(randomCase(G * KV, KV, D, 16, qpos, Array.from({ length: S }, (_, j) => j), 31 + G + D));
  });

  it.each([[8, 2, 64], [32, 8, 128]])('decode: one query against 4096 keys (H = %i, KV = %i, D = %i)', (H, KV, D) => {
    const S = 4096;
    // slot order of a rolling cache that wrapped at slot 1000
    const kpos = Array.from({ length: S }, (_, s) => (s + 3096) % S);
    const c = randomCase(H, KV, D, 4096, [S - 1], kpos, 41);
    c.q.forEach((x, i) => { c.q[i] = 4 * x; }); // sharper softmaxes: outputs of order 1, not averages near 0
    expectClose(c);
  });

  it.each([[8, 8, 128, 1100], [12, 2, 128, 4200]])('over 8 MiB of keys and values (the kernel touches rows ahead): H = %i, KV = %i, D = %i, S = %i', (H, KV, D, S) => {
    const c = randomCase(H, KV, D, null, [S - 1, S - 2], Array.from({ length: S }, (_, j) => (j * 13) % S), 61);
    c.q.forEach((x, i) => { c.q[i] = 4 * x; });
    expectClose(c);
  });

  describe('threads', () => {
    afterAll(() => {
      setParallelThreshold(2 ** 17);
      setThreads(defaultThreads());
      closeKernelPool();
    });

    it('gives the same bits on 1, 2 and 3 threads', () => {
      setParallelThreshold(0); // through the pool however small
      for (const c of [
        randomCase(8, 2, 64, 24, Array.from({ length: 61 }, (_, t) => t), Array.from({ length: 61 }, (_, j) => j), 51),
        randomCase(6, 2, 12, null, [70, 71, 72], Array.from({ length: 73 }, (_, j) => (j * 29) % 73), 52),
        randomCase(4, 4, 16, 8, [30], Array.from({ length: 31 }, (_, j) => j), 53),
      ]) {
        const z = [1, 2, 3].map((n) => {
          setThreads(n);
          return run(c);
        });
        expect(z[1]).toEqual(z[0]);
        expect(z[2]).toEqual(z[0]);
        expect(maxDiff(z[0]!, reference(c))).toBeLessThan(1e-6);
      }
    });
  });
});

describe('over a cache in kernel memory, in place', () => {
  const H = 8;
  const KV = 2;
  const D = 16;
  const cfgOf = (W: number | null) => ({ numHeads: H, numKvHeads: KV, headDim: D, slidingWindow: W }) as unknown as ModelConfig;

  /**
   * Feeds chunks of random keys to a cache in kernel memory and to one in plain arrays (the
   * copy path) side by side; every step's z is checked against the float64 reference over
   * every key so far, and, while the order of the keys is the same on both (nothing
   * overwritten), against the copy path bit for bit. Returns which steps ran in place.
   */
  function feed(W: number | null, chunks: readonly number[], seed: number): boolean[] {
    const cfg = cfgOf(W);
    const shape = { heads: H, kvHeads: KV, headDim: D, window: W };
    const inKernel = W === null ? new FullCache(true) : new RollingCache(W, true);
    const plain = W === null ? new FullCache(false) : new RollingCache(W, false);
    const all = { kpos: [] as number[], k: [] as Float32Array[], v: [] as Float32Array[] }; // per token: [KV, D]
    const inPlace: boolean[] = [];
    let p0 = 0;
    try {
      chunks.forEach((T, i) => {
        const positions = Array.from({ length: T }, (_, t) => p0 + t);
        const c = randomCase(H, KV, D, W, positions, positions, seed + 3 * i);
        const z = inKernel.attendInPlace(c.q, c.k, c.v, positions, shape);
        inPlace.push(z !== null);
        const got = z ?? fusedAttentionStep(c.q, c.k, c.v, positions, cfg, inKernel);
        const copy = fusedAttentionStep(c.q, c.k, c.v, positions, cfg, plain);
        for (let t = 0; t < T; t++) {
          all.kpos.push(p0 + t);
          const row = (a: Float32Array) => Float32Array.from({ length: KV * D }, (_, j) => a[(Math.floor(j / D) * T + t) * D + (j % D)]!);
          all.k.push(row(c.k));
          all.v.push(row(c.v));
        }
        // every key so far, [KV, S, D], for the reference (it masks by position)
        const S = all.kpos.length;
        const gather = (rows: Float32Array[]) => Float32Array.from({ length: KV * S * D }, (_, j) => {
          const g = Math.floor(j / (S * D));
          const r = Math.floor(j / D) % S;
          return rows[r]![g * D + (j % D)]!;
        });
        const want = reference({ ...c, kpos: all.kpos, k: gather(all.k), v: gather(all.v) });
        expect(maxDiff(got, want)).toBeLessThan(1e-6);
        if (W === null || p0 + T <= W) expect(got).toEqual(copy);
        p0 += T;
      });
    } finally {
      inKernel.dispose();
      plain.dispose();
    }
    return inPlace;
  }

  it('without a window: every step in place, through the growth 16 → 32 → 64 → 128 rows, the copy path\'s bits', () => {
    expect(feed(null, [5, 1, 1, 13, 1, 40, 1, 30, 1, 1], 60)).toEqual(new Array(10).fill(true));
  });

  it('a rolling cache (W = 12): single tokens always in place; a chunk over slots in use takes the copy path', () => {
    // positions 0-4, 5, 6, 7-10 (fresh slots), 11, 12 (overwrites slot 0), 13-15 (slots 1-3 in use), 16, 17-29 (longer than W)
    expect(feed(12, [5, 1, 1, 4, 1, 1, 3, 1, 13, 1, 1], 70)).toEqual([true, true, true, true, true, true, false, true, false, true, true]);
  });

  it('a disposed cache gives its memory to the next one, which reads none of the old rows', () => {
    feed(null, [40, 1, 1], 80);
    feed(null, [3, 1, 1], 90); // the reused memory holds 42 rows of the first text: only the 5 of this one count
    feed(64, [20, 1], 100);
  });

  it('gives the same bits on 1, 2 and 3 threads', () => {
    setParallelThreshold(0);
    try {
      const runs = [1, 2, 3].map((n) => {
        setThreads(n);
        const cache = new RollingCache(16, true);
        const shape = { heads: H, kvHeads: KV, headDim: D, window: 16 };
        try {
          return [10, 1, 1, 1, 1, 1, 1, 1].map((T, i) => {
            const positions = Array.from({ length: T }, (_, t) => (i === 0 ? t : 9 + i));
            const c = randomCase(H, KV, D, 16, positions, positions, 110 + i);
            return Array.from(cache.attendInPlace(c.q, c.k, c.v, positions, shape)!);
          });
        } finally {
          cache.dispose();
        }
      });
      expect(runs[1]).toEqual(runs[0]);
      expect(runs[2]).toEqual(runs[0]);
    } finally {
      setParallelThreshold(2 ** 17);
      setThreads(defaultThreads());
    }
  });
});

describe.each(['cpu', 'wasm'] as const)('fused vs composite attention on %s', (backend) => {
  it.each(GOLDEN_MODELS)('$model', async ({ model }) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const m = Transformer.load(modelDir(model), { weights: 'resident' });
    try {
      const c = m.config;
      if (c.headDim % 4 !== 0) return; // the fused kernel does not serve this model
      const hooks = compositeHooks(c.numLayers);
      // longer than the window (W = 8 in the tiny models, 16 in the demos): chunks wrap the rolling cache
      const ids = Array.from({ length: 3 * (c.slidingWindow ?? 8) + 5 }, (_, i) => (i * 37 + 1) % c.vocabSize);

      const fused = m.forward(ids);
      const composite = m.forward(ids, { hooks });
      const tol = 5e-5 + 1e-6 * maxAbs(composite.logits.dataSync());
      expect(maxDiff(fused.logits.dataSync(), composite.logits.dataSync())).toBeLessThanOrEqual(tol);
      disposeResult(fused);
      disposeResult(composite);

      // the fused path, as generate() runs it
      const a: number[] = [];
      for await (const t of generate(m, ids.slice(0, 13), { maxNewTokens: 20, stopAtEos: false, prefillChunk: 5 })) a.push(t.id);
      // the composite path, chunk by chunk through the cache
      const cache = m.createCache();
      const b: number[] = [];
      let next = ids.slice(0, 13);
      for (let s = 0; s < 20; s++) {
        for (let i = 0; i < next.length; i += 5) {
          const r = m.forward(next.slice(i, i + 5), { cache, hooks, lastOnly: true });
          if (i + 5 >= next.length) {
            const l = r.logits.dataSync();
            let best = 0;
            for (let j = 1; j < l.length; j++) if (l[j]! > l[best]!) best = j;
            b.push(best);
          }
          disposeResult(r);
        }
        next = [b.at(-1)!];
      }
      cache.dispose();
      expect(a).toEqual(b);
    } finally {
      m.dispose();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
