/**
 * The fused attention kernel alone (src/kernels/simd/attention.ts): ms per call and GFLOP/s.
 *
 *   node --import tsx bench/attention.ts [--threads 1,2] [--samples 7] [--only prefill|decode]
 *
 * Shapes: the hidden-512 test model (8 heads, 2 kv heads, headDim 64) and 7B (32, 8, 128), both
 * with a 4096 sliding window; prefill T = 512 queries over their own 512 keys (causal), and
 * decode, 1 query over S = 512 and S = 4096 cached keys. A call includes copying q, k and v
 * into the workspace, as the model's calls do (the copy's share is printed beside it). FLOPs: 4·D per (query, head, seen key): a
 * multiply-add each for q·k and p·v. Each figure is the median of `samples` samples, each the
 * mean of enough calls to last ~20 ms, after warm-up calls (the host is noisy).
 */
import { parseArgs } from 'node:util';
import { fusedAttention, type AttentionShape } from '../src/kernels/simd/attention.js';
import { kernelVariant } from '../src/kernels/simd/arena.js';
import { closeKernelPool, setThreads } from '../src/kernels/simd/pool.js';

const { values } = parseArgs({
  options: {
    threads: { type: 'string', default: '1,2' },
    samples: { type: 'string', default: '7' },
    only: { type: 'string' },
  },
});
const threads = values.threads.split(',').map(Number);
const samples = Number(values.samples);

const SHAPES: Array<{ name: string; shape: AttentionShape }> = [
  { name: 'hidden-512', shape: { heads: 8, kvHeads: 2, headDim: 64, window: 4096 } },
  { name: '7B', shape: { heads: 32, kvHeads: 8, headDim: 128, window: 4096 } },
];
const CASES = [
  { name: 'prefill T=512 S=512', T: 512, S: 512 },
  { name: 'decode T=1 S=512', T: 1, S: 512 },
  { name: 'decode T=1 S=4096', T: 1, S: 4096 },
].filter((c) => values.only === undefined || c.name.startsWith(values.only));

let seed = 7;
const random = (n: number, scale: number) => Float32Array.from({ length: n }, () => {
  seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0;
  return scale * (seed / 2 ** 32 - 0.5);
});

const median = (a: number[]) => [...a].sort((x, y) => x - y)[Math.floor(a.length / 2)]!;

console.log(`fused attention, kernels: ${kernelVariant()}; median of ${samples} samples`);
console.log('| shape | case | threads | ms / call | of which k, v copy | GFLOP/s |');
console.log('|---|---|---:|---:|---:|---:|');
for (const { name, shape } of SHAPES) {
  const { heads: H, kvHeads: KV, headDim: D } = shape;
  for (const { name: caseName, T, S } of CASES) {
    // Queries are the last T positions; keys 0 … S − 1, every one seen by the last query.
    const qpos = Array.from({ length: T }, (_, i) => S - T + i);
    const kpos = Array.from({ length: S }, (_, j) => j);
    const q = random(T * H * D, 2);
    const k = random(KV * S * D, 2);
    const v = random(KV * S * D, 2);
    let seen = 0;
    for (const p of qpos) seen += Math.min(p + 1, shape.window ?? Infinity);
    const flops = 4 * D * H * seen;
    let copying = 0; // ms spent writing keys and values into the workspace
    const call = () => fusedAttention(q, qpos, shape, (into) => {
      const t0 = performance.now();
      const a = into(S);
      a.k.set(k);
      a.v.set(v);
      copying += performance.now() - t0;
      return kpos;
    });
    for (const n of threads) {
      setThreads(n);
      // Warm-up: at least 3 calls and 500 ms (V8 tiering the kernel up to TurboFan, the pool's
      // start, the workspace's growth).
      const warm = performance.now();
      let calls = 0;
      for (; calls < 3 || performance.now() - warm < 500; calls++) call();
      // A sample is enough calls for ~20 ms, so that short calls are not lost in the timer's noise.
      const reps = Math.max(1, Math.round(20 / ((performance.now() - warm) / calls)));
      const times: number[] = [];
      const copies: number[] = [];
      for (let i = 0; i < samples; i++) {
        copying = 0;
        const t0 = performance.now();
        for (let r = 0; r < reps; r++) call();
        times.push((performance.now() - t0) / reps);
        copies.push(copying / reps);
      }
      const ms = median(times);
      console.log(`| ${name} | ${caseName} | ${n} | ${ms.toFixed(3)} | ${median(copies).toFixed(3)} | ${(flops / ms / 1e6).toFixed(2)} |`);
    }
  }
}
closeKernelPool();
