/**
 * What this machine can do, measured with the kernels' own code: the memory read rate
 * (bounds decode, which reads every weight once a token) and the arithmetic rate of
 * baseline wasm SIMD (bounds prefill), on one thread or a pool of them. Benchmarks report
 * their figures as fractions of these.
 */
import { performance } from 'node:perf_hooks';
import { WeightMemory } from './arena.js';
import { KernelPool, runShare, type KernelJob } from './pool.js';

/**
 * Best read rate (bytes/s) over `bytes` of kernel memory, split over `threads` threads. The
 * pages are written first: untouched wasm memory maps to the kernel's zero page, and reading
 * that would measure the cache, not memory.
 */
export function measureReadRate(threads: number, bytes = 1.25 * 2 ** 30, reps = 5): number {
  const mem = new WeightMemory();
  const { arena, ptr } = mem.alloc(bytes);
  arena.bytes(ptr, bytes).fill(1);
  const pool = threads > 1 ? new KernelPool(threads) : null;
  const blocks = Math.floor(bytes / 64);
  const job: KernelJob = { op: 'read', dtype: 'f32', w: ptr, x: 0, y: 0, r0: 0, r1: blocks, K: 0 };
  let best = 0;
  try {
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      if (pool !== null) pool.run(arena, job);
      else for (let b = 0; b < blocks; b += 2 ** 22) runShare(arena.kernels, job, b, Math.min(blocks, b + 2 ** 22), 0); // < 2^31 bytes a call
      best = Math.max(best, (64 * blocks) / ((performance.now() - t0) / 1000));
    }
  } finally {
    pool?.close();
    mem.dispose();
  }
  return best;
}

/** Best float32 operations per second of the arithmetic probe on `threads` threads. */
export function measureSimdFlops(threads: number, reps = 5): number {
  const rounds = 2e7; // 1.28 GFLOP a thread: a few tenths of a second
  const mem = new WeightMemory();
  const { arena } = mem.alloc(64);
  const pool = threads > 1 ? new KernelPool(threads) : null;
  const job: KernelJob = { op: 'flops', dtype: 'f32', w: 0, x: 0, y: 0, r0: 0, r1: 4 * threads, K: rounds };
  let best = 0;
  try {
    for (let r = 0; r < reps; r++) {
      const t0 = performance.now();
      if (pool !== null) pool.run(arena, job);
      else runShare(arena.kernels, job, 0, 4, 0);
      best = Math.max(best, (threads * rounds * 64) / ((performance.now() - t0) / 1000));
    }
  } finally {
    pool?.close();
    mem.dispose();
  }
  return best;
}
