/**
 * The wasm backend never fails silently: a full wasm heap (4 GiB max) makes XNNPACK print
 * "XNN status … Got status 6" and go on with garbage, makes `_malloc` return 0, or ends in
 * a trap "memory access out of bounds". Each becomes a WasmMemoryError (a BackendError),
 * and the CLI prints it on one line and exits 2. The heap is filled for real with tensors
 * that are allocated but never written, so it reaches 4 GiB in milliseconds while the
 * process's resident memory stays small.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterEach, beforeAll, describe, expect, it, vi } from 'vitest';
import { runCli } from './helpers/cli.js';
import { modelDir } from './helpers/fixtures.js';
import {
  BackendError, checkWasmHealth, fromWasmRuntimeError, useBackend, WASM_HEAP_MAX_BYTES, wasmFailuresWatched,
  wasmHeapBytes, WasmMemoryError,
} from '../src/kernels/backend.js';

// `mistral-ref synth` stands in for any command that meets a wasm failure: it throws
// whatever the test puts here (errors provoked for real below).
const thrown = vi.hoisted(() => ({ error: null as unknown }));
vi.mock('../src/cli/commands/synth.js', () => ({
  summary: 'stand-in',
  usage: 'usage: stand-in',
  run: async () => { throw thrown.error; },
}));

/** tfjs-backend-wasm's BackendWasm, as far as these tests reach into it. */
interface WasmBackend {
  write(values: null, shape: number[], dtype: 'float32'): object;
  disposeData(dataId: object): boolean;
  dataIdMap: { size: number; get(id: object): { memoryOffset: number } | undefined; set(id: object, v: object): void };
  dataIdNextNumber: number;
  wasm: { _malloc(bytes: number): number; tfjs: { registerTensor(id: number, size: number, offset: number): void } };
}

const ADVICE = 'use --weights stream, a smaller model, or --backend cpu';
const HEAP = String.raw`the wasm heap is at \d\.\d\d GiB of its 4 GiB maximum`;
const MALLOC_FAILED = new RegExp(String.raw`^the wasm backend ran out of memory: could not allocate [\d.]+ [KMG]?i?B for a tensor; ${HEAP}; ${ADVICE}$`);
const XNN_OOM = new RegExp(String.raw`^the wasm backend ran out of memory: XNNPACK's xnn_create_fully_connected_nc_f32 got status 6 \(out of memory\); ${HEAP}; ${ADVICE}$`);
const TRAP = new RegExp(String.raw`^the wasm backend failed: memory access out of bounds; ${HEAP}; ${ADVICE}$`);

let be: WasmBackend;
let fillers: object[] = [];

beforeAll(async () => {
  const warn = console.warn;
  await useBackend('wasm');
  be = tf.backend() as unknown as WasmBackend;
  expect(wasmFailuresWatched()).toBe(true);
  expect(console.warn).toBe(warn); // the stderr filter is the wasm module's alone
});

afterEach(() => {
  for (const f of fillers) be.disposeData(f);
  fillers = [];
});

/** Allocates (without writing) chunks of each size until the heap refuses one; returns that refusal. */
function fillHeap(...chunkBytes: number[]): unknown {
  let refusal: unknown = null;
  for (const size of chunkBytes) {
    try {
      for (;;) fillers.push(be.write(null, [size / 4], 'float32'));
    } catch (e) {
      refusal = e;
    }
  }
  return refusal;
}

/** x · W with W [4096, 8192] (128 MiB), which XNNPACK packs into a second 128 MiB buffer. */
function bigMatMul(): { x: tf.Tensor2D; w: tf.Tensor2D } {
  return { x: tf.ones([1, 4096]), w: tf.fill([4096, 8192], 0.5) };
}

describe('a full wasm heap is a WasmMemoryError', () => {
  it('tensor allocation: _malloc returning 0 throws instead of writing at address 0', () => {
    const refusal = fillHeap(128 * 2 ** 20);
    expect(refusal).toBeInstanceOf(WasmMemoryError);
    expect(refusal).toBeInstanceOf(BackendError);
    expect((refusal as Error).message).toMatch(/could not allocate 128\.0 MiB for a tensor/);
    expect((refusal as Error).message).toMatch(MALLOC_FAILED);
    expect(wasmHeapBytes()).toBeGreaterThan(WASM_HEAP_MAX_BYTES - 128 * 2 ** 20);
    expect(() => tf.zeros([64 * 2 ** 20])).toThrow(WasmMemoryError); // through tf, the same
  });

  it('XNNPACK status 6 (packing a weight finds the heap full) throws from the op that failed', () => {
    const { x, w } = bigMatMul();
    // The heap keeps < 128 MiB free: room for x·W's output, not for W packed.
    expect(fillHeap(128 * 2 ** 20)).toBeInstanceOf(WasmMemoryError);
    const tensors = tf.memory().numTensors;
    const buffers = be.dataIdMap.size;
    const warn = vi.spyOn(console, 'warn');
    let caught: unknown = null;
    try {
      tf.matMul(x, w);
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(WasmMemoryError);
    expect((caught as Error).message).toMatch(XNN_OOM);
    expect((caught as Error).message).not.toContain('\n');
    expect(warn).not.toHaveBeenCalled(); // the XNN line is the error now, not stderr noise
    warn.mockRestore();
    expect(tf.memory().numTensors).toBe(tensors); // the garbage output was disposed
    expect(be.dataIdMap.size).toBe(buffers);
    expect(() => checkWasmHealth()).not.toThrow(); // reported once, by the op

    // With the heap freed, the same op runs and is right.
    for (const f of fillers.splice(0)) be.disposeData(f);
    const y = tf.matMul(x, w);
    expect(Array.from(y.dataSync().subarray(0, 3))).toEqual([2048, 2048, 2048]);
    tf.dispose([x, w, y]);
  });

  it('a trap "memory access out of bounds" in a wasm kernel', () => {
    const caught = provokeTrap();
    expect(caught).toBeInstanceOf(WasmMemoryError);
    expect((caught as Error).message).toMatch(TRAP);
    const cause = (caught as Error).cause as Error;
    expect(cause.name).toBe('RuntimeError');
    expect(cause.message).toBe('memory access out of bounds');
    // the backend still computes afterwards
    const y = tf.add(tf.ones([4]), tf.ones([4]));
    expect(Array.from(y.dataSync())).toEqual([2, 2, 2, 2]);
  });

  it('fromWasmRuntimeError leaves other errors alone', () => {
    const trap = Object.assign(new Error('unreachable'), { name: 'RuntimeError' });
    expect(fromWasmRuntimeError(trap)).toBeNull();
    expect(fromWasmRuntimeError(new Error('memory access out of bounds'))).toBeNull(); // not a RuntimeError
    expect(fromWasmRuntimeError('memory access out of bounds')).toBeNull();
  });
});

/** A tensor registered at an offset beyond the wasm memory; adding it to itself traps. Returns what add threw. */
function provokeTrap(): unknown {
  const dataId = {};
  const id = be.dataIdNextNumber++;
  const outside = 0xffffe000; // 4 KiB there end below 2^32 but above the largest heap
  expect(WASM_HEAP_MAX_BYTES).toBeLessThan(outside);
  be.dataIdMap.set(dataId, { id, memoryOffset: outside, shape: [1024], dtype: 'float32', refCount: 1 });
  be.wasm.tfjs.registerTensor(id, 1024, outside);
  const t = tf.engine().makeTensorFromTensorInfo({ dataId, shape: [1024], dtype: 'float32' });
  let caught: unknown = null;
  try {
    tf.add(t, t);
  } catch (e) {
    caught = e;
  }
  be.dataIdMap.get(dataId)!.memoryOffset = be.wasm._malloc(4096); // something dispose can free
  t.dispose();
  return caught;
}

describe('the CLI: one line on stderr, exit 2', () => {
  it('generate --backend wasm on a full heap (for real)', async () => {
    fillHeap(64 * 2 ** 20, 2 ** 20, 2 ** 14, 256);
    const r = await runCli(['generate', '--model', modelDir('mistral-tiny'), '--ids', '1,269,505', '--max-tokens', '3',
      '--backend', 'wasm', '--weights', 'eager']);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expect(r.stderr.split('\n')).toHaveLength(2);
    expect(r.stderr.slice('mistral-ref generate: '.length, -1)).toMatch(MALLOC_FAILED);
  });

  it('XNNPACK status 6', async () => {
    const { x, w } = bigMatMul();
    fillHeap(128 * 2 ** 20);
    try {
      tf.matMul(x, w);
    } catch (e) {
      thrown.error = e;
    }
    tf.dispose([x, w]);
    const r = await runCli(['synth']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^mistral-ref synth: the wasm backend ran out of memory: XNNPACK's xnn_create_fully_connected_nc_f32 got status 6 \(out of memory\); .*; use --weights stream, a smaller model, or --backend cpu\n$/);
  });

  it('emscripten\'s bare RuntimeError: memory access out of bounds', async () => {
    thrown.error = ((provokeTrap() as Error).cause as Error); // the trap itself, as V8 threw it
    expect(thrown.error).not.toBeInstanceOf(BackendError);
    const r = await runCli(['synth']);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/^mistral-ref synth: the wasm backend failed: memory access out of bounds; the wasm heap is at \d\.\d\d GiB of its 4 GiB maximum; use --weights stream, a smaller model, or --backend cpu\n$/);
  });

  it('another RuntimeError stays an internal error (exit 3)', async () => {
    thrown.error = Object.assign(new Error('unreachable'), { name: 'RuntimeError' });
    const r = await runCli(['synth']);
    expect(r.code).toBe(3);
    expect(r.stderr).toMatch(/^mistral-ref synth: internal error: unreachable/);
  });
});
