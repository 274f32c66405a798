/**
 * Threads for the matrix kernels: a pool of `worker_threads`, each running the same wasm
 * kernels over the same shared memories (arena.ts), each computing its own rows of every
 * product. Rows are split in contiguous, 4-aligned ranges, so every core streams its own
 * share of a weight, and a row's dot product is computed the same way whichever thread
 * computes it: results do not depend on the thread count, bit for bit.
 *
 * Dispatch is synchronous (Atomics, no promises), so `linear()` stays an ordinary function
 * call: the calling thread writes the job into a shared control block, wakes the workers,
 * computes share 0 itself, and waits until every worker has counted itself done. The cost
 * per product is one wake-up (tens of µs), small against a layer's work (bench/speed.ts
 * measures it).
 *
 * Workers are unref'd: an idle pool never keeps the process alive, and they end with it.
 */
import * as os from 'node:os';
import { MessageChannel, Worker, type MessagePort } from 'node:worker_threads';
import { defaultThreads, kernelModule, MAX_THREADS, type KernelExports, type WasmMemory } from './arena.js';

export { defaultThreads, MAX_THREADS };

/** Control block slots (Int32). */
const GEN = 0; // job generation: bumped to wake the workers
const DONE = 1; // workers finished with this generation
const OP = 2; // 0 gemv, 1 gemm, 2 stop
const ARENA = 3;
const DTYPE = 4; // 0 bf16, 1 f16, 2 f32
const W = 5;
const X = 6;
const Y = 7;
const K = 8;
const T = 9;
const LDY = 10;
const TB = 11;
const PARTS = 12; // participants: workers + the caller
const FAILED = 13;
const KC = 14; // gemm: K chunk
const PANEL = 15; // gemm: rows per panel
const ROWS = 16; // ROWS + 2i, ROWS + 2i + 1: rows [r0, r1) of participant i
const SCRATCH = ROWS + 2 * 64; // SCRATCH + i: widen scratch of participant i
const ARGS = SCRATCH + 64; // attend: its 15 arguments before the unit range (the 13th, √D, as float32 bits); SCRATCH + i is its scratch
// (the elementwise kernels: their integer arguments before the row range)
const EPS = (ARGS + 16) / 2; // rmsnorm's eps, as a float64 (index into the block as Float64Array)
const RQ = ARGS + 18; // gemv, gemm: rows stored as quads (matmul.ts)
const SLOTS = ARGS + 20; // an even count: the block is also read as float64s

export const OPS = { gemv: 0, gemm: 1, stop: 2, read: 3, flops: 4, attend: 5, rmsnorm: 6, swiglu: 7, addrows: 8, rope: 9 } as const;

/**
 * How long an idle thread spins before it sleeps (ms). A sleeping worker takes 0.1–0.8 ms to
 * wake on a 2-core VM (measured: a 1 MB product through the pool, 66 µs when the worker is
 * spinning, 145 µs median and 514 µs p90 after a 3 ms gap). Between two products of a
 * prefill the caller spends up to ~5 ms in JavaScript (norms, RoPE, the input layout of
 * 512 tokens), between two decode steps ~1 ms choosing the token: a 20 ms spin outlasts
 * both (hidden-512 prefill-512 on 2 threads, one run: 520 → 622 tokens/s, the wait for
 * the worker 85–140 → 12–170 ms). With more threads than cores a spinning thread takes
 * the core a computing one needs, so the spin is short there.
 */
const SPIN_MS = 20;
const OVERSUBSCRIBED_SPIN_MS = 0.2;
export const DTYPE_CODES = { bf16: 0, f16: 1, f32: 2 } as const;


export class PoolError extends Error {
  override readonly name = 'PoolError';
}

/**
 * The worker's whole program, as plain JavaScript (a worker started from source text runs
 * the same under tsx, vitest and the built package).
 */
const WORKER_SOURCE = `
const { workerData, receiveMessageOnPort } = require('node:worker_threads');
const { control, module: kernels, index, port, spinMs } = workerData; // not 'module': Deno's eval worker declares it
const c = new Int32Array(control);
const cf = new Float32Array(control);
const cd = new Float64Array(control);
const instances = new Map(); // memory id → kernel exports
const names = ['bf16', 'f16', 'f32'];
// Memories arrive (and are forgotten, when their model is disposed) as messages, read
// synchronously before each job: a worker blocked in Atomics.wait runs no event loop.
function drain() {
  for (let m; (m = receiveMessageOnPort(port)) !== undefined;) {
    const { id, memory } = m.message;
    if (memory === undefined) instances.delete(id);
    else instances.set(id, new WebAssembly.Instance(kernels, { env: { memory } }).exports);
  }
}
let seen = 0;
for (;;) {
  // Spin a little before sleeping: during decode the next product comes within tens of
  // microseconds, sooner than a sleeping thread wakes.
  const until = performance.now() + spinMs;
  while (Atomics.load(c, ${GEN}) === seen && performance.now() < until);
  Atomics.wait(c, ${GEN}, seen);
  // A wake-up may belong to a job done already: the caller can be descheduled between
  // publishing a job and waking the workers, and by the time it wakes them a fast worker
  // has done the job and gone back to sleep. Taken for a job, it would run that job again
  // and count itself done twice, and the next job would return while its rows were still
  // being written (wrong results, rarely, with more threads than free cores).
  const gen = Atomics.load(c, ${GEN});
  if (gen === seen) continue;
  seen = gen;
  if (c[${OP}] === ${OPS.stop}) break;
  try {
    drain();
    const parts = c[${PARTS}];
    if (index < parts) {
      const k = instances.get(c[${ARENA}]);
      if (k === undefined) throw new Error('kernel memory ' + c[${ARENA}] + ' was never sent to this worker');
      const r0 = c[${ROWS} + 2 * index], r1 = c[${ROWS} + 2 * index + 1];
      if (r1 > r0) {
        const d = names[c[${DTYPE}]];
        const op = c[${OP}];
        if (op === ${OPS.gemv}) k['gemv_' + d](c[${W}], c[${X}], c[${Y}], r0, r1, c[${K}], c[${RQ}]);
        else if (op === ${OPS.gemm}) k['gemm_' + d](c[${W}], c[${X}], c[${Y}], r0, r1, c[${K}], c[${T}], c[${LDY}], c[${TB}], c[${SCRATCH} + index], c[${KC}], c[${PANEL}], c[${RQ}]);
        else if (op === ${OPS.read}) k.read(c[${W}] + 64 * r0, 64 * (r1 - r0));
        else if (op === ${OPS.flops}) k.flops(c[${K}]);
        else if (op === ${OPS.attend}) {
          const a = c.subarray(${ARGS}, ${ARGS} + 15);
          k.attend(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], cf[${ARGS} + 12], a[13], a[14], r0, r1, c[${SCRATCH} + index]);
        } else if (op === ${OPS.rmsnorm}) k.rmsnorm(c[${ARGS}], c[${ARGS} + 1], c[${ARGS} + 2], c[${ARGS} + 3], cd[${EPS}], c[${ARGS} + 4], r0, r1);
        else if (op === ${OPS.swiglu}) k.swiglu(c[${ARGS}], c[${ARGS} + 1], c[${ARGS} + 2], c[${ARGS} + 3], c[${ARGS} + 4], c[${ARGS} + 5], r0, r1);
        else if (op === ${OPS.addrows}) k.addrows(c[${ARGS}], c[${ARGS} + 1], c[${ARGS} + 2], r0, r1);
        else if (op === ${OPS.rope}) k.rope(c[${ARGS}], c[${ARGS} + 1], c[${ARGS} + 2], c[${ARGS} + 3], c[${ARGS} + 4], c[${ARGS} + 5], r0, r1);
      }
    }
  } catch (e) {
    Atomics.store(c, ${FAILED}, 1);
    console.error('mistral-ref kernel worker ' + index + ': ' + (e && e.message));
  }
  Atomics.add(c, ${DONE}, 1);
  Atomics.notify(c, ${DONE});
}
`;

/** Rows [r0, r1) split in `parts` contiguous ranges aligned to `align` rows: range `i`. */
export function share(r0: number, r1: number, parts: number, i: number, align = 4): [number, number] {
  const groups = Math.ceil((r1 - r0) / align);
  const a = r0 + align * Math.floor((groups * i) / parts);
  const b = r0 + align * Math.floor((groups * (i + 1)) / parts);
  return [Math.min(a, r1), Math.min(b, r1)];
}

interface PoolWorker {
  readonly worker: Worker;
  readonly port: MessagePort;
  /** Ids of the memories it holds an instance for. */
  readonly sent: Set<number>;
}

export interface KernelJob {
  /**
   * gemv, gemm: rows [r0, r1) of a product. The probes: read, a 64-byte block per "row"
   * from w; flops, K rounds of the arithmetic probe per participant (one "row" group each).
   * attend: units (token, kv head). rmsnorm, swiglu, addrows, rope: rows [r0, r1) of tokens.
   */
  readonly op: 'gemv' | 'gemm' | 'read' | 'flops' | 'attend' | 'rmsnorm' | 'swiglu' | 'addrows' | 'rope';
  readonly dtype: keyof typeof DTYPE_CODES;
  readonly w: number;
  readonly x: number;
  readonly y: number;
  readonly r0: number;
  readonly r1: number;
  readonly K: number;
  /** gemm only: tokens, output row stride, and the blocking (see matmul.ts's gemmBlocking). */
  readonly T?: number;
  readonly ldy?: number;
  readonly tb?: number;
  readonly kc?: number;
  readonly panel?: number;
  /** gemv, gemm: rows below rq are stored as quads (matmul.ts's quadRows); default 0. */
  readonly rq?: number;
  /**
   * attend and the elementwise kernels: their arguments before the range [r0, r1) (see
   * build-kernels.ts; rmsnorm's eps apart); widenScratch(i) is participant i's scratch.
   */
  readonly args?: readonly number[];
  /** rmsnorm only. */
  readonly eps?: number;
  /** Rows a share is a multiple of (default 4, a row group of the product kernels). */
  readonly align?: number;
}

/** What a job runs in: a memory with its kernel instance (an Arena, or attention's workspace). */
export interface KernelMemory {
  readonly memory: WasmMemory;
  readonly kernels: KernelExports;
  widenScratch(i: number): number;
}

/** Ids of the memories pools have seen: a worker instantiates each once. Weak: no memory is kept alive. */
const memoryIds = new WeakMap<WasmMemory, number>();
let nextMemoryId = 0;

function memoryId(m: WasmMemory): number {
  let id = memoryIds.get(m);
  if (id === undefined) memoryIds.set(m, (id = nextMemoryId++));
  return id;
}

export class KernelPool {
  private readonly control = new Int32Array(new SharedArrayBuffer(4 * SLOTS));
  private readonly controlF32 = new Float32Array(this.control.buffer);
  private readonly controlF64 = new Float64Array(this.control.buffer);
  private readonly workers: PoolWorker[] = [];
  private closed = false;
  /** How long this pool's threads spin before they sleep (ms). */
  private readonly spinMs: number;

  /** @param threads participants including the calling thread (≥ 1) */
  constructor(readonly threads: number) {
    if (!Number.isInteger(threads) || threads < 1 || threads > MAX_THREADS) {
      throw new PoolError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${threads}`);
    }
    const module = kernelModule();
    this.spinMs = threads <= os.availableParallelism() ? SPIN_MS : OVERSUBSCRIBED_SPIN_MS;
    for (let i = 1; i < threads; i++) {
      const { port1, port2 } = new MessageChannel();
      const worker = new Worker(WORKER_SOURCE, {
        eval: true,
        workerData: { control: this.control.buffer, module, index: i, port: port2, spinMs: this.spinMs },
        transferList: [port2],
      });
      worker.unref();
      port1.unref();
      worker.on('error', () => { Atomics.store(this.control, FAILED, 1); });
      this.workers.push({ worker, port: port1, sent: new Set() });
    }
  }

  /**
   * Runs one product over rows [r0, r1) of `arena`'s memory on every thread; returns when
   * all rows are written. The caller computes share 0 with `own`.
   */
  run(arena: KernelMemory, job: KernelJob): void {
    if (this.closed) throw new PoolError('the kernel thread pool is closed');
    const c = this.control;
    const id = memoryId(arena.memory);
    for (const w of this.workers) {
      if (w.sent.has(id)) continue;
      w.port.postMessage({ id, memory: arena.memory });
      w.sent.add(id);
    }
    // Fewer participants than threads when there are few rows: a thread per row group at most.
    const align = job.align ?? 4;
    const parts = Math.min(this.threads, Math.ceil((job.r1 - job.r0) / align));
    c[OP] = OPS[job.op];
    c[ARENA] = id;
    c[DTYPE] = DTYPE_CODES[job.dtype];
    c[W] = job.w; c[X] = job.x; c[Y] = job.y; c[K] = job.K;
    c[T] = job.T ?? 1; c[LDY] = job.ldy ?? 0; c[TB] = job.tb ?? 0; c[KC] = job.kc ?? 0; c[PANEL] = job.panel ?? 0; c[RQ] = job.rq ?? 0;
    c[PARTS] = parts;
    if (job.args !== undefined) {
      c.set(job.args, ARGS);
      if (job.op === 'attend') this.controlF32[ARGS + 12] = job.args[12]!;
    }
    if (job.eps !== undefined) this.controlF64[EPS] = job.eps;
    for (let i = 0; i < parts; i++) {
      [c[ROWS + 2 * i], c[ROWS + 2 * i + 1]] = share(job.r0, job.r1, parts, i, align);
      c[SCRATCH + i] = arena.widenScratch(i);
    }
    Atomics.store(c, DONE, 0);
    Atomics.add(c, GEN, 1);
    Atomics.notify(c, GEN);

    // This thread's share; if it fails, the workers still finish theirs before the error
    // goes up, so that no worker is left writing into the next job's output.
    const [r0, r1] = share(job.r0, job.r1, parts, 0, align);
    let failure: unknown = null;
    try {
      if (r1 > r0) runShare(arena.kernels, job, r0, r1, arena.widenScratch(0));
    } catch (e) {
      failure = e;
    }

    const others = this.workers.length;
    const until = performance.now() + this.spinMs;
    while (Atomics.load(c, DONE) < others && performance.now() < until);
    for (;;) {
      const done = Atomics.load(c, DONE);
      if (done >= others) break;
      if (Atomics.wait(c, DONE, done, 10_000) === 'timed-out' && Atomics.load(c, DONE) === done) {
        this.close();
        throw new PoolError('a kernel worker stopped answering (10 s); the thread pool is closed');
      }
    }
    if (failure !== null) throw failure;
    if (Atomics.load(c, FAILED) !== 0) {
      this.close();
      throw new PoolError('a kernel worker failed (see the line above); the thread pool is closed');
    }
  }

  /**
   * Wakes sleeping workers without a new job, as a wake-up meant for a job they have done
   * already can (see the worker's loop): they must go back to sleep. For the tests.
   */
  wakeIdle(): void {
    Atomics.notify(this.control, GEN);
  }

  get isClosed(): boolean {
    return this.closed;
  }

  /** The workers drop their instance of `memory` (its model was disposed), so it can be freed. */
  forget(memory: WasmMemory): void {
    const id = memoryIds.get(memory);
    if (id === undefined) return;
    for (const w of this.workers) {
      if (w.sent.delete(id)) w.port.postMessage({ id });
    }
  }

  /** Stops the workers (they also end with the process). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.control[OP] = OPS.stop;
    Atomics.add(this.control, GEN, 1);
    Atomics.notify(this.control, GEN);
    for (const w of this.workers) {
      w.port.close();
      void w.worker.terminate();
    }
  }
}

/** One thread's rows of a product, on this thread. */
export function runShare(k: KernelExports, job: KernelJob, r0: number, r1: number, scratch: number): void {
  if (job.op === 'attend') {
    const a = job.args!;
    k.attend(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, a[6]!, a[7]!, a[8]!, a[9]!, a[10]!, a[11]!, a[12]!, a[13]!, a[14]!, r0, r1, scratch);
  } else if (job.op === 'rmsnorm') {
    const a = job.args!;
    k.rmsnorm(a[0]!, a[1]!, a[2]!, a[3]!, job.eps!, a[4]!, r0, r1);
  } else if (job.op === 'swiglu') {
    const a = job.args!;
    k.swiglu(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, r0, r1);
  } else if (job.op === 'addrows') {
    const a = job.args!;
    k.addrows(a[0]!, a[1]!, a[2]!, r0, r1);
  } else if (job.op === 'rope') {
    const a = job.args!;
    k.rope(a[0]!, a[1]!, a[2]!, a[3]!, a[4]!, a[5]!, r0, r1);
  } else if (job.op === 'read') {
    k.read(job.w + 64 * r0, 64 * (r1 - r0));
  } else if (job.op === 'flops') {
    k.flops(job.K);
  } else if (job.op === 'gemv') {
    const f = job.dtype === 'bf16' ? k.gemv_bf16 : job.dtype === 'f16' ? k.gemv_f16 : k.gemv_f32;
    f(job.w, job.x, job.y, r0, r1, job.K, job.rq ?? 0);
  } else {
    const f = job.dtype === 'bf16' ? k.gemm_bf16 : job.dtype === 'f16' ? k.gemm_f16 : k.gemm_f32;
    f(job.w, job.x, job.y, r0, r1, job.K, job.T!, job.ldy!, job.tb!, scratch, job.kc!, job.panel!, job.rq ?? 0);
  }
}

let pool: KernelPool | null = null;
/** The thread count asked for; null until set (then every core: read lazily, arena.ts and this module import each other). */
let wanted: number | null = null;

/**
 * Sets how many threads the kernels use (the calling thread included); 1 = no workers.
 * The pool starts on first use and is replaced when the count changes.
 */
export function setThreads(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_THREADS) {
    throw new PoolError(`threads must be an integer from 1 to ${MAX_THREADS}, got ${n}`);
  }
  if (n !== getThreads()) {
    pool?.close();
    pool = null;
  }
  wanted = n;
}

export function getThreads(): number {
  wanted ??= defaultThreads();
  return wanted;
}

/** The pool for the current thread count, or null for one thread. */
export function kernelPool(): KernelPool | null {
  const n = getThreads();
  if (n === 1) return null;
  if (pool === null || pool.threads !== n || pool.isClosed) pool = new KernelPool(n); // a failed pool is replaced
  return pool;
}

/** Multiply-adds below which a job runs on the calling thread alone (a wake-up costs more). */
let parallelThreshold = 2 ** 17;

/** Sets the work (multiply-adds) from which jobs use the thread pool; 0 = always (tests). */
export function setParallelThreshold(macs: number): void {
  parallelThreshold = macs;
}

/** The pool for a job of `work` multiply-adds, or null when it should run on the calling thread. */
export function poolFor(work: number): KernelPool | null {
  return work >= parallelThreshold ? kernelPool() : null;
}

/** Tells the running pool, if any, that `memory` is no longer used (WeightMemory.dispose). */
export function forgetMemory(memory: WasmMemory): void {
  pool?.forget(memory);
}

/** Stops the pool's workers now (tests; the process exits without it). */
export function closeKernelPool(): void {
  pool?.close();
  pool = null;
}
