/**
 * Memory the project's wasm kernels own: weights at their stored width, outside tfjs.
 *
 * One `WebAssembly.Memory` holds at most 4 GiB (Node 20 has no 64-bit memories), and a
 * module instance sees one memory, so a 14.5 GB checkpoint lives in several arenas, each
 * a memory with its own kernel instance and its own scratch space for activations.
 * Memories are shared (SharedArrayBuffer), so worker threads can run the same kernels over
 * the same weights without copying them. A tensor never spans two arenas.
 */
import * as os from 'node:os';
import * as v8 from 'node:v8';
import { KERNELS_WASM, KERNELS_WASM_RELAXED } from './kernels.generated.js';
import { forgetMemory } from './pool.js';

export interface KernelExports {
  /**
   * Rows below rq are stored as quads (see build-kernels.ts and matmul.ts's StoredMatrix).
   * Returns a value folded from the touch-ahead loads (ignored; it keeps them alive).
   */
  gemv_bf16(w: number, x: number, y: number, r0: number, r1: number, K: number, rq: number): number;
  gemv_f16(w: number, x: number, y: number, r0: number, r1: number, K: number, rq: number): number;
  gemv_f32(w: number, x: number, y: number, r0: number, r1: number, K: number, rq: number): number;
  gemm_bf16(w: number, x: number, y: number, r0: number, r1: number, K: number, T: number, ldy: number, tb: number, scratch: number, kc: number, panel: number, rq: number): void;
  gemm_f16(w: number, x: number, y: number, r0: number, r1: number, K: number, T: number, ldy: number, tb: number, scratch: number, kc: number, panel: number, rq: number): void;
  gemm_f32(w: number, x: number, y: number, r0: number, r1: number, K: number, T: number, ldy: number, tb: number, scratch: number, kc: number, panel: number, rq: number): void;
  /** Rearranges `rows` (a multiple of 4) row-major rows of K 2-byte elements at p into quads, through tmp (8·K bytes). */
  quads(p: number, rows: number, K: number, tmp: number): void;
  /**
   * Fused attention over units (token, kv head) [u0, u1), in blocks of `block` keys, over the
   * first S of each kv head's rows, which start `headRows` rows apart: see build-kernels.ts.
   */
  attend(q: number, k: number, v: number, z: number, qpos: number, kpos: number, T: number, S: number, H: number, KV: number,
    D: number, window: number, sqrtD: number, block: number, headRows: number, u0: number, u1: number, scratch: number): void;
  /** attend's float32 e^x (x ≤ 0), one lane: for the tests. */
  exp_f32(x: number): number;
  /**
   * out[t, i] = silu(g[t·ld + i]) · u[t·ld + i] for r0 ≤ t < r1, i < I (byte offsets; layout
   * 1: out in the products' input order; see build-kernels.ts).
   */
  swiglu(g: number, u: number, out: number, I: number, ld: number, layout: number, r0: number, r1: number): void;
  /** RMSNorm of rows [r0, r1) of x [·, K] with weight w into y (may be x); layout as swiglu's. */
  rmsnorm(x: number, w: number, y: number, K: number, eps: number, layout: number, r0: number, r1: number): void;
  /** dst += src over rows [r0, r1) of K floats. */
  addrows(dst: number, src: number, K: number, r0: number, r1: number): void;
  rope(x: number, cos: number, sin: number, ld: number, heads: number, D: number, r0: number, r1: number): void;
  /** Σ e^(x − m) in float64 over the n float32 values at p (see build-kernels.ts). */
  sumexp(p: number, n: number, m: number): number;
  /** Folds n bytes from p into one value (the bandwidth probe). */
  read(p: number, n: number): number;
  /** n rounds of 64 float32 operations on registers (the arithmetic probe). */
  flops(n: number): number;
  /** 1 when the n bytes at p (a multiple of 64) hold an element whose exponent is all ones: see build-kernels.ts. */
  nonfinite(p: number, n: number, mask: number, add: number, flag: number): number;
}

// The few WebAssembly JS-API types used here (the project compiles without the DOM lib).
export interface WasmMemory {
  readonly buffer: SharedArrayBuffer;
  grow(pages: number): number;
}
interface WasmApi {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
  Memory: new (d: { initial: number; maximum: number; shared: true }) => WasmMemory;
}
const wasm = (globalThis as unknown as { WebAssembly: WasmApi }).WebAssembly;

let compiled: { module: object; relaxed: boolean } | null = null;

/**
 * Compiles the kernels once per thread: the relaxed-SIMD build (fused multiply-add) where V8
 * takes it, else baseline SIMD. Node 20 has relaxed SIMD behind a V8 flag, set here before
 * compiling; `MISTRAL_REF_RELAXED_SIMD=0` keeps the baseline build (bit-reproducible across
 * machines: a relaxed multiply-add may or may not round in between, depending on the CPU).
 */
function compileKernels(): { module: object; relaxed: boolean } {
  if (process.env.MISTRAL_REF_RELAXED_SIMD !== '0') {
    try {
      v8.setFlagsFromString('--experimental-wasm-relaxed-simd');
      return { module: new wasm.Module(Buffer.from(KERNELS_WASM_RELAXED, 'base64')), relaxed: true };
    } catch {
      // this V8 has no relaxed SIMD: the baseline build below
    }
  }
  return { module: new wasm.Module(Buffer.from(KERNELS_WASM, 'base64')), relaxed: false };
}

/** The compiled kernel module. */
export function kernelModule(): object {
  compiled ??= compileKernels();
  return compiled.module;
}

/** Which build of the kernels runs: `relaxed-simd` (with fused multiply-add) or `simd`. */
export function kernelVariant(): 'relaxed-simd' | 'simd' {
  compiled ??= compileKernels();
  return compiled.relaxed ? 'relaxed-simd' : 'simd';
}

export function instantiate(memory: WasmMemory): KernelExports {
  return new wasm.Instance(kernelModule(), { env: { memory } }).exports as KernelExports;
}

const PAGE = 65536;
/** Pages of one memory: 4 GiB, the wasm32 limit. */
export const MAX_PAGES = 65536;

/** A shared memory of at least `bytes` (growable to 4 GiB) and a kernel instance over it. */
export function kernelMemory(bytes: number): { memory: WasmMemory; kernels: KernelExports } {
  const memory = new wasm.Memory({ initial: Math.max(1, Math.ceil(bytes / PAGE)), maximum: MAX_PAGES, shared: true });
  return { memory, kernels: instantiate(memory) };
}

/** Grows `memory` so that bytes [0, end) exist. */
export function growTo(memory: WasmMemory, end: number): void {
  const pages = memory.buffer.byteLength / PAGE;
  const need = Math.ceil(end / PAGE);
  if (need > pages) memory.grow(need - pages);
}

/** Floats of activation scratch per arena: inputs, outputs (and each thread's widen scratch, below). */
export const SCRATCH_X = 2 ** 21; // 8 MiB
export const SCRATCH_Y = 2 ** 21;
/** Longest row the product kernels take. */
export const MAX_K = 2 ** 16;

/** Most threads the kernels run on (control slots and scratch are sized for it). */
export const MAX_THREADS = 64;

/** Every core the process may use. */
export function defaultThreads(): number {
  return Math.min(MAX_THREADS, os.availableParallelism());
}

/** Bytes of one thread's widen scratch (1 MiB): a widened panel of the matrix-matrix kernel (at most 32768 floats, matmul.ts's gemmBlocking), or attention's scratch. */
const WIDEN_BYTES = 4 * 4 * MAX_K;

/** Bytes at the start of every arena: activations in and out, and every core's widen scratch. */
function scratchBytes(): number {
  return 4 * (SCRATCH_X + SCRATCH_Y) + defaultThreads() * WIDEN_BYTES;
}

export class ArenaError extends Error {
  override readonly name = 'ArenaError';
}

export class Arena {
  readonly memory: WasmMemory;
  readonly kernels: KernelExports;
  /** Byte offsets of the scratch regions (at the start of the memory). */
  readonly x: number;
  readonly y: number;
  /** Widen scratch of each thread (four rows of MAX_K floats each). */
  private readonly widen: number[] = [];
  private top: number;

  constructor() {
    // Widen scratch for every core up front, so a thread pool of the default size never
    // has to find room in a full arena.
    ({ memory: this.memory, kernels: this.kernels } = kernelMemory(scratchBytes()));
    this.x = 0;
    this.y = 4 * SCRATCH_X;
    for (let i = 0; i < defaultThreads(); i++) this.widen.push(this.y + 4 * SCRATCH_Y + i * WIDEN_BYTES);
    this.top = scratchBytes();
  }

  /** Byte offset of thread i's widen scratch (reserved on first use past the default count). */
  widenScratch(i: number): number {
    while (this.widen.length <= i) {
      const p = this.tryAlloc(WIDEN_BYTES);
      if (p === null) throw new ArenaError(`no room for thread ${i}'s scratch in a full 4 GiB kernel memory; use fewer threads`);
      this.widen.push(p);
    }
    return this.widen[i]!;
  }

  /** Bytes in use (scratch included). */
  get used(): number {
    return this.top;
  }

  /** Reserves `bytes` (64-byte aligned), growing the memory; null when it would pass 4 GiB. */
  tryAlloc(bytes: number): number | null {
    const start = Math.ceil(this.top / 64) * 64;
    const end = start + bytes;
    if (end > MAX_PAGES * PAGE) return null;
    try {
      growTo(this.memory, end);
    } catch (e) {
      throw new ArenaError(`cannot grow kernel memory to ${(end / 2 ** 30).toFixed(2)} GiB: ${(e as Error).message}`);
    }
    this.top = end;
    return start;
  }

  /** A view of `bytes` bytes at `ptr` (views must be made after any grow). */
  bytes(ptr: number, bytes: number): Uint8Array {
    return new Uint8Array(this.memory.buffer, ptr, bytes);
  }

  floats(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }
}

/** Where one tensor's bytes live. */
export interface Allocation {
  readonly arena: Arena;
  readonly ptr: number;
}

/**
 * The arenas of one model: allocates tensors, opening a new arena when one is full.
 *
 * Stream mode frees and reads tensors again and again. Wasm memories cannot shrink, so a
 * freed allocation goes on a free list for its exact size; the next tensor of that size
 * (the next layer's q_proj, the next expert's w1) takes it. Layers repeat the same shapes,
 * so the memory settles at its peak working set instead of growing by a layer per step.
 */
export class WeightMemory {
  readonly arenas: Arena[] = [];
  private readonly freed = new Map<number, Allocation[]>();

  alloc(bytes: number): Allocation {
    if (bytes > MAX_PAGES * PAGE - scratchBytes()) {
      throw new ArenaError(`one tensor of ${(bytes / 2 ** 30).toFixed(2)} GiB does not fit in a 4 GiB wasm memory`);
    }
    const reuse = this.freed.get(bytes)?.pop();
    if (reuse !== undefined) return reuse;
    const last = this.arenas.at(-1);
    const ptr = last?.tryAlloc(bytes) ?? null;
    if (last !== undefined && ptr !== null) return { arena: last, ptr };
    const fresh = new Arena();
    this.arenas.push(fresh);
    return { arena: fresh, ptr: fresh.tryAlloc(bytes)! };
  }

  /** Gives `a` (of `bytes` bytes) back for a later alloc of the same size. */
  free(a: Allocation, bytes: number): void {
    // the place only: `a` may be a matrix, whose shape and layout the next tensor does not share
    const place: Allocation = { arena: a.arena, ptr: a.ptr };
    const list = this.freed.get(bytes);
    if (list === undefined) this.freed.set(bytes, [place]);
    else list.push(place);
  }

  /** Bytes reserved in every arena, scratch included (freed allocations count: memories cannot shrink). */
  get bytes(): number {
    return this.arenas.reduce((a, m) => a + m.used, 0);
  }

  /**
   * Drops the memories (the garbage collector frees them; wasm memories cannot shrink), and
   * has the thread pool's workers drop their instances of them.
   */
  dispose(): void {
    for (const a of this.arenas) forgetMemory(a.memory);
    this.arenas.length = 0;
    this.freed.clear();
  }
}
