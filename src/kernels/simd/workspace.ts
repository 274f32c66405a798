/**
 * A growable kernel memory for activations only (no weights): the fused attention and the
 * elementwise kernels copy their operands in, run, and copy the result out. Regions are
 * carved afresh for every call (`reset`), so it stays as large as the largest call; a
 * prefix of `reserved` bytes is kept across calls (a cache's rows: attention.ts's CacheRows).
 */
import { growTo, kernelMemory, type KernelExports, type WasmMemory } from './arena.js';
import type { KernelMemory } from './pool.js';

export class Workspace implements KernelMemory {
  private mem: WasmMemory | null = null;
  private instance: KernelExports | null = null;
  private top = 0;
  /** Bytes at the start that reset() keeps. */
  private base = 0;
  /** Participant i's kernel scratch: scratch + i · scratchStride (see scratchFor). */
  private scratch = 0;
  private scratchStride = 0;

  get memory(): WasmMemory {
    return this.mem!;
  }

  get kernels(): KernelExports {
    return this.instance!;
  }

  /** Participant i's scratch for a kernel (see scratchFor; 0 when none was asked for). */
  widenScratch(i: number): number {
    return this.scratch + i * this.scratchStride;
  }

  /** A scratch region of `bytes` for each of `parts` participants, each on its own cache lines. */
  scratchFor(parts: number, bytes: number): void {
    this.scratchStride = Math.ceil(bytes / 64) * 64;
    this.scratch = this.alloc(parts * this.scratchStride);
  }

  /** Starts a call: every region past the reserved prefix is free again. */
  reset(): void {
    if (this.mem === null) ({ memory: this.mem, kernels: this.instance } = kernelMemory(2 ** 20));
    this.top = this.base;
    this.scratch = this.scratchStride = 0;
  }

  /** Keeps the first `bytes` bytes across calls (growing the memory to hold them); a call's regions follow. */
  reserve(bytes: number): void {
    this.base = Math.ceil(bytes / 64) * 64;
    this.reset();
    growTo(this.memory, this.base);
  }

  /** A region of `bytes` bytes (64-aligned); its byte offset. */
  alloc(bytes: number): number {
    const start = Math.ceil(this.top / 64) * 64;
    this.top = start + bytes;
    growTo(this.memory, this.top);
    return start;
  }

  /** A float32 view (make views after every alloc: growing detaches earlier ones). */
  f32(ptr: number, n: number): Float32Array {
    return new Float32Array(this.memory.buffer, ptr, n);
  }

  i32(ptr: number, n: number): Int32Array {
    return new Int32Array(this.memory.buffer, ptr, n);
  }
}
