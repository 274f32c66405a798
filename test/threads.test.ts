/**
 * The kernels' thread pool: results do not depend on the thread count (bit for bit, since
 * a row's dot product is computed the same way whichever thread computes it), golden
 * parity holds with threads on, and the pool never keeps a process alive or blocks Ctrl-C.
 */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, afterEach, describe, expect, it, vi } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { checkParity } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import { WeightMemory } from '../src/kernels/simd/arena.js';
import { DTYPE_BYTES, matmul, type StoredMatrix, type WeightDType } from '../src/kernels/simd/matmul.js';
import { closeKernelPool, defaultThreads, kernelPool, setParallelThreshold, setThreads, share } from '../src/kernels/simd/pool.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';

const ROOT = path.resolve(import.meta.dirname, '..');

afterEach(() => {
  setParallelThreshold(2 ** 17);
  setThreads(defaultThreads());
});
afterAll(() => closeKernelPool());

/** A matrix of pseudo-random stored values (any bit pattern of finite weights). */
function randomMatrix(mem: WeightMemory, rows: number, cols: number, dtype: WeightDType, seed: number): StoredMatrix {
  const bytes = rows * cols * DTYPE_BYTES[dtype];
  const a = mem.alloc(bytes);
  let s = seed;
  if (dtype === 'f32') {
    const f = a.arena.floats(a.ptr, rows * cols);
    for (let i = 0; i < f.length; i++) f[i] = ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 32) - 0.5;
  } else {
    // exponents of moderate values in both formats; sign and mantissa random
    const u = new Uint16Array(a.arena.memory.buffer, a.ptr, rows * cols);
    const base = dtype === 'bf16' ? 0x3c00 : 0x3000;
    for (let i = 0; i < u.length; i++) u[i] = (base + (((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) >>> 20) & 0x7ff)) | ((s & 1) << 15);
  }
  return { ...a, rows, cols, dtype };
}

describe('share', () => {
  it('splits rows into contiguous aligned ranges that cover them exactly', () => {
    const cases: Array<[number, number, number, number]> = [[0, 4096, 2, 4], [0, 14336, 3, 4], [8, 1001, 3, 4], [0, 5, 2, 4], [0, 64, 64, 4],
      [0, 32, 3, 1], [0, 5, 2, 1]];
    for (const [r0, r1, parts, align] of cases) {
      let next = r0;
      for (let i = 0; i < parts; i++) {
        const [a, b] = share(r0, r1, parts, i, align);
        expect(a).toBe(next);
        expect(b).toBeGreaterThanOrEqual(a);
        if (b < r1) expect((b - r0) % align).toBe(0);
        next = b;
      }
      expect(next).toBe(r1);
    }
  });
});

describe.each(['bf16', 'f16', 'f32'] as const)('%s products on 1, 2 and 3 threads', (dtype) => {
  it.each([[1, 7, 1], [9, 33, 1], [130, 300, 1], [130, 300, 7], [37, 515, 64], [4096, 64, 3]])(
    '[%i × %i] × %i tokens: identical bits', (rows, cols, T) => {
      setParallelThreshold(0); // every product through the pool, however small
      const mem = new WeightMemory();
      const m = randomMatrix(mem, rows, cols, dtype, rows + cols);
      const x = Float32Array.from({ length: T * cols }, (_, i) => Math.sin(i));
      const results = [1, 2, 3].map((n) => {
        setThreads(n);
        return matmul(x, T, m);
      });
      expect(results[1]).toEqual(results[0]);
      expect(results[2]).toEqual(results[0]);
    });
});

describe('golden parity with threads on', () => {
  it.each(GOLDEN_MODELS)('$model on 2 and 3 threads: passes, and logits and ids equal one thread’s bit for bit', async ({ model, ref }) => {
    await useBackend('wasm');
    setParallelThreshold(0);
    const before = tf.memory().numTensors;
    const m = Transformer.load(modelDir(model), { weights: 'resident' });
    const r = Reference.open(refFile(ref));
    try {
      const logits = [1, 2, 3].map((n) => {
        setThreads(n);
        const report = checkParity(m, r);
        expect(report.failures).toEqual([]);
        expect(report.prompts.every((p) => p.generated_ids_equal)).toBe(true);
        const out = m.forward([1, 5, 9, 2, 7, 3]);
        const data = out.logits.dataSync().slice();
        disposeResult(out);
        return data;
      });
      expect(logits[1]).toEqual(logits[0]);
      expect(logits[2]).toEqual(logits[0]);
    } finally {
      m.dispose();
      r.close();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('wake-ups', () => {
  it('a late wake-up for a job the workers have done runs nothing again', () => {
    setParallelThreshold(0);
    setThreads(2);
    const mem = new WeightMemory();
    const m = randomMatrix(mem, 64, 64, 'bf16', 3);
    const pool = kernelPool()!;
    const { arena } = m;
    arena.floats(arena.x, 64).fill(1);
    pool.run(arena, { op: 'gemv', dtype: 'bf16', w: m.ptr, x: arena.x, y: arena.y, r0: 0, r1: 64, K: 64 });
    const y = arena.floats(arena.y, 64);
    expect(y.every((v) => v !== 0)).toBe(true);
    y.fill(0);
    // Past the workers' spin they sleep; a wake-up now is one whose job was done (the caller
    // can be descheduled between publishing a job and waking the workers). A worker that took
    // it for a job would compute its rows again and count itself done twice.
    const pause = new Int32Array(new SharedArrayBuffer(4));
    Atomics.wait(pause, 0, 0, 100);
    pool.wakeIdle();
    Atomics.wait(pause, 0, 0, 200);
    expect(y.every((v) => v === 0)).toBe(true);
  });
});

describe('failures', () => {
  it('a worker that traps closes the pool with a typed error, and the next product gets a new pool', () => {
    setParallelThreshold(0);
    setThreads(2);
    const mem = new WeightMemory();
    const m = randomMatrix(mem, 64, 64, 'bf16', 1);
    const x = new Float32Array(64).fill(1);
    const before = matmul(x, 1, m);
    const pool = kernelPool()!;
    // rows 0–31 (this thread’s) end exactly at the end of the memory; rows 32–63 (the worker’s) lie past it
    const end = m.arena.memory.buffer.byteLength;
    const half = { ...m, ptr: end - 32 * 64 * 2 };
    const stderr = vi.spyOn(console, 'error').mockImplementation(() => {});
    expect(() => matmul(x, 1, half)).toThrow(/a kernel worker failed/);
    stderr.mockRestore();
    expect(pool.isClosed).toBe(true);
    expect(kernelPool()).not.toBe(pool);
    expect(matmul(x, 1, m)).toEqual(before);
  });

  it('when this thread’s share traps, the error comes after the workers finish, and the pool goes on', () => {
    setParallelThreshold(0);
    setThreads(2);
    const mem = new WeightMemory();
    const m = randomMatrix(mem, 64, 64, 'bf16', 2);
    const x = new Float32Array(64).fill(1);
    const before = matmul(x, 1, m);
    const pool = kernelPool()!;
    // rows 0–31 start past the end of the memory; rows 32–63 wrap around to valid bytes
    expect(() => matmul(x, 1, { ...m, ptr: 2 ** 32 - 32 * 64 * 2 })).toThrow(/memory access out of bounds/);
    expect(pool.isClosed).toBe(false);
    for (let i = 0; i < 20; i++) expect(matmul(x, 1, m)).toEqual(before);
  });
});

describe('--threads', () => {
  it('is accepted by the model commands and checked', async () => {
    for (const n of ['1', '2', '3']) {
      const r = await runCli(['generate', '--model', modelDir('mistral-demo'), '--prompt', '47+38=', '--max-tokens', '3', '--threads', n]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('85\n');
    }
    const bad = await runCli(['generate', '--model', modelDir('mistral-demo'), '--ids', '1', '--threads', '0']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toMatch(/^mistral-ref generate: --threads expects an integer ≥ 1/);
    expect(bad.stderr.split('\n')).toHaveLength(2);
  });

  it('a process with a pool of 3 threads exits by itself when its work ends', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join('src', 'cli', 'bin.ts'), 'generate', '--model', modelDir('mistral-demo'),
      '--prompt', '47+38=', '--max-tokens', '3', '--threads', '3', '--backend', 'wasm'], { cwd: ROOT });
    let out = '';
    child.stdout.on('data', (d: Buffer) => { out += d.toString(); });
    const code = await new Promise<number | null>((resolve) => child.on('exit', resolve));
    expect(code).toBe(0);
    expect(out).toBe('85\n');
  }, 30_000);

  it('Ctrl-C ends a generation that runs on 3 threads, with the SIGINT status (130 in a shell)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join('src', 'cli', 'bin.ts'), 'generate', '--model', modelDir('mistral-demo'),
      '--ids', '1', '--max-tokens', '100000', '--ignore-eos', '--threads', '3'], { cwd: ROOT });
    // wait until it generates, then interrupt
    await new Promise<void>((resolve) => child.stdout.once('data', () => resolve()));
    const t0 = Date.now();
    child.kill('SIGINT');
    const [code, signal] = await new Promise<[number | null, string | null]>((resolve) => child.on('exit', (c, s) => resolve([c, s])));
    expect(code === 130 || signal === 'SIGINT').toBe(true);
    expect(Date.now() - t0).toBeLessThan(5000);
  }, 30_000);
});
