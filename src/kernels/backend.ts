/**
 * Backend selection. `cpu` is the readable JavaScript reference; `wasm` is XNNPACK and
 * fast; `tensorflow` is libtensorflow through the optional peer `@tensorflow/tfjs-node-gpu`
 * (CUDA) or `@tensorflow/tfjs-node`, imported only when asked for, because their install
 * downloads libtensorflow and fails offline; `webgpu` is tfjs-backend-webgpu on Dawn (the
 * optional dependencies `webgpu` and `@tensorflow/tfjs-backend-webgpu`, see ./webgpu.ts),
 * also loaded only when asked for.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import './gradients.js'; // tf.grad through a forward, on cpu and wasm
import { createRequire } from 'node:module';
import type { WebGpuAdapterInfo, WebGpuProxyBackend } from './webgpu.js';

export const BACKENDS = ['cpu', 'wasm', 'tensorflow', 'webgpu'] as const;
export type BackendName = (typeof BACKENDS)[number];

export class BackendError extends Error {
  override readonly name: string = 'BackendError';
}

/**
 * The wasm backend ran out of heap (or failed inside XNNPACK, which it does when its heap
 * is exhausted) and would otherwise have gone on with garbage. A BackendError, so the CLI
 * prints it on one line and exits 2.
 */
export class WasmMemoryError extends BackendError {
  override readonly name: string = 'WasmMemoryError';
}

/** Makes `name` the active tfjs backend (idempotent). */
export async function useBackend(name: BackendName): Promise<void> {
  if (!BACKENDS.includes(name)) {
    throw new BackendError(`unknown backend ${JSON.stringify(name)} (expected ${BACKENDS.join(', ')})`);
  }
  if (name === 'tensorflow' && tf.findBackend('tensorflow') === null) {
    await importTensorflowBackend();
  }
  if (name === 'webgpu' && tf.findBackend('webgpu') === null) {
    await registerWebGpu();
  }
  // PROD only silences tfjs' console advice (e.g. "install tfjs-node") in 4.22; no checks change.
  tf.env().set('PROD', true);
  if (tf.getBackend() === name) return;
  // The wasm module binds its stderr printer once, when it is instantiated: the watch has
  // to be in place before the first tf.setBackend('wasm').
  const watching = name === 'wasm' && !('wasm' in tf.engine().registry) ? watchWasmInit() : null;
  const listeners = processListeners();
  try {
    if (!(await tf.setBackend(name))) throw new BackendError(`backend ${name} failed to initialise`);
    await tf.ready();
  } finally {
    watching?.end();
    dropListenersAddedSince(listeners);
  }
  if (name === 'wasm') guardWasm(watching !== null);
}

const PROCESS_EVENTS = ['uncaughtException', 'unhandledRejection'] as const;

type ProcessListener = (...args: unknown[]) => void;

function processListeners(): Map<string, ProcessListener[]> {
  return new Map(PROCESS_EVENTS.map((e) => [e, process.listeners(e as 'uncaughtException') as ProcessListener[]]));
}

/**
 * The wasm module's emscripten prelude adds process listeners that rethrow any uncaught
 * error from inside its own one-line minified file: node then quoted ≈ 39 KB of it above
 * every script error, and ended the process with exit code 7 ("uncaught exception handler
 * threw") instead of its own report. They do nothing else for us: remove what initialising
 * a backend added.
 */
function dropListenersAddedSince(before: Map<string, ProcessListener[]>): void {
  for (const e of PROCESS_EVENTS) {
    for (const l of processListeners().get(e)!) {
      if (!before.get(e)!.includes(l)) process.removeListener(e, l);
    }
  }
}

async function importTensorflowBackend(): Promise<void> {
  const require = createRequire(import.meta.url);
  for (const pkg of ['@tensorflow/tfjs-node-gpu', '@tensorflow/tfjs-node']) {
    try {
      require.resolve(pkg);
    } catch {
      continue; // not installed: try the next one
    }
    try {
      await import(pkg);
      return;
    } catch (e) {
      throw new BackendError(`${pkg} is installed but failed to load: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new BackendError('backend "tensorflow" needs an optional package: `npm install @tensorflow/tfjs-node-gpu@4.22.0` ' +
    '(CUDA) or `npm install @tensorflow/tfjs-node@4.22.0` (CPU)');
}

/**
 * The device reported an error (validation, out of memory, internal, a lost device) for work
 * whose result was being read: the values would be wrong, so none are returned.
 */
export class WebGpuDeviceError extends BackendError {
  override readonly name: string = 'WebGpuDeviceError';
}

/** The webgpu backend this process registered, or null. */
let webgpu: WebGpuProxyBackend | null = null;

async function registerWebGpu(): Promise<void> {
  const { startWebGpu } = await import('./webgpu.js');
  const started = startWebGpu((message) => new WebGpuDeviceError(`the WebGPU device reported an error, so the result is not returned: ${message}`));
  if ('problem' in started) {
    const { kind, message } = started.problem;
    throw new BackendError(kind === 'missing' ? message : `backend "webgpu" is not available: ${message}` +
      (kind === 'no-adapter' ? ' (on a machine without a GPU, run scripts/setup-webgpu.sh as root)' : ''));
  }
  webgpu = started.backend;
  // Priority 0: registering must not make webgpu anyone's default backend.
  tf.registerBackend('webgpu', () => started.backend, 0);
}

/** The webgpu adapter in use (its name, route and limits), or null before `useBackend('webgpu')`. */
export function webgpuAdapter(): WebGpuAdapterInfo | null {
  return webgpu?.info ?? null;
}

/**
 * The largest tensor, in bytes, a kernel of the active backend can bind whole: webgpu's
 * `maxStorageBufferBindingSize`; unbounded elsewhere. Weights larger than this are split.
 */
export function bindingLimitBytes(): number {
  if (tf.getBackend() !== 'webgpu' || webgpu === null) return Infinity;
  return webgpu.info.limits.maxStorageBufferBindingSize;
}

/** Name of the active backend. */
export function activeBackend(): string {
  return tf.getBackend();
}

// ── wasm failures, never silent ──────────────────────────────────────────────────────────
//
// tfjs-backend-wasm's C++ reports XNNPACK failures with a printf to stderr and carries on
// ("XNN status for xnn_create_fully_connected_nc_f32 is not successful. Got status 6" when
// packing a weight finds the heap full); its JS `_malloc` returns 0 when the heap cannot
// grow, and the tensor then lands at address 0. Either way the numbers that follow are
// garbage. Three watches turn these into a WasmMemoryError:
//
// 1. stderr. Emscripten's `printErr` is `console.warn.bind(console)`, bound when the module
//    is instantiated (inside the first tf.setBackend('wasm')). `useBackend` swaps in a
//    filter for console.warn only for that moment, so the module binds the filter and the
//    rest of the process keeps the real console.warn. The filter records an XNN line (it
//    must not throw: it runs inside a wasm → JS call, in the middle of C++'s fprintf) and
//    passes every other line on.
// 2. every wasm kernel is re-registered with a wrapper that, after the kernel returns,
//    throws the recorded failure (disposing the kernel's outputs): the op that failed is the
//    op that throws. The wrapper also turns a trap "memory access out of bounds" into the
//    same error.
// 3. `_malloc`, called from JS only (tensor allocation), throws when it returns 0, before
//    anything is registered or written.

/** The wasm heap's ceiling: emscripten's getHeapMax() in tfjs-backend-wasm 4.22 (4 GiB − 64 KiB). */
export const WASM_HEAP_MAX_BYTES = 4294901760;

const ADVICE = 'use --weights stream, a smaller model, or --backend cpu';
const XNN_LINE = /XNN status for (\S+) is not successful\. Got status (\d+)/;
/** xnn_status values (XNNPACK's include/xnnpack.h). */
const XNN_STATUS: Readonly<Record<number, string>> = {
  1: 'uninitialized', 2: 'invalid parameter', 3: 'invalid state', 4: 'unsupported parameter',
  5: 'unsupported hardware', 6: 'out of memory',
};
const XNN_OUT_OF_MEMORY = 6;

interface WasmModule {
  HEAPU8: Uint8Array;
  _malloc(bytes: number): number;
  asm?: { malloc?: (bytes: number) => number };
}

/** The wasm backend's emscripten module, once `useBackend('wasm')` has initialised it. */
let wasmModule: WasmModule | null = null;
/** An XNN line seen on the module's stderr, not yet thrown. */
let pending: { op: string; status: number } | null = null;
/** Whether XNNPACK has run out of memory in this process (a later XNN failure is then most likely its consequence). */
let sawOutOfMemory = false;
/** Whether the module's stderr goes through the filter (false when something else initialised wasm first). */
let stderrWatched = false;

/** Current size of the wasm heap in bytes, or null when the wasm backend is not initialised. */
export function wasmHeapBytes(): number | null {
  return wasmModule?.HEAPU8.length ?? null;
}

function heapNote(): string {
  const now = wasmHeapBytes();
  return now === null ? 'the wasm heap (4 GiB max) is full' : `the wasm heap is at ${(now / 2 ** 30).toFixed(2)} GiB of its 4 GiB maximum`;
}

function bytes(n: number): string {
  if (n < 2 ** 10) return `${n} B`;
  if (n < 2 ** 20) return `${(n / 2 ** 10).toFixed(1)} KiB`;
  if (n < 2 ** 30) return `${(n / 2 ** 20).toFixed(1)} MiB`;
  return `${(n / 2 ** 30).toFixed(2)} GiB`;
}

function xnnError(f: { op: string; status: number }, cause?: unknown): WasmMemoryError {
  const what = `XNNPACK's ${f.op} got status ${f.status} (${XNN_STATUS[f.status] ?? 'unknown'})`;
  const msg = f.status === XNN_OUT_OF_MEMORY || sawOutOfMemory
    ? `the wasm backend ran out of memory: ${what}; ${heapNote()}; ${ADVICE}`
    : `the wasm backend failed: ${what}, so its result would be garbage; ${heapNote()}; ${ADVICE}`;
  return new WasmMemoryError(msg, cause === undefined ? undefined : { cause });
}

/**
 * Throws (once) the XNNPACK failure the wasm backend has reported since the last check.
 * Every wasm kernel already calls it after it runs; call it yourself after work that runs
 * wasm outside a kernel (e.g. disposing). No-op on other backends.
 */
export function checkWasmHealth(): void {
  if (pending === null) return;
  const f = pending;
  pending = null;
  throw xnnError(f);
}

/**
 * A WasmMemoryError for a WebAssembly trap "RuntimeError: memory access out of bounds" (what
 * a wasm backend that ran out of heap ends in), an out-of-memory abort, or emscripten's bare
 * "Aborted()" while the wasm heap is within 64 MiB of its maximum (C++ aborts when `new`
 * fails); null for anything else (an "unreachable" trap, say, is a bug, not a full heap).
 */
export function fromWasmRuntimeError(e: unknown): WasmMemoryError | null {
  if (e instanceof WasmMemoryError) return e;
  if (!(e instanceof Error) || e.name !== 'RuntimeError') return null;
  const heap = wasmHeapBytes();
  const nearMax = heap !== null && heap > WASM_HEAP_MAX_BYTES - 64 * 2 ** 20;
  if (!/memory access out of bounds|out of memory|\bOOM\b|Cannot enlarge memory/i.test(e.message) &&
    !(nearMax && e.message.startsWith('Aborted('))) return null;
  return new WasmMemoryError(`the wasm backend failed: ${e.message.split('\n')[0]}; ${heapNote()}; ${ADVICE}`, { cause: e });
}

/** The console.warn the wasm module binds as its printErr. */
function stderrFilter(real: (...args: unknown[]) => void): (...args: unknown[]) => void {
  const filter = (...args: unknown[]): void => {
    const m = XNN_LINE.exec(args.map(String).join(' '));
    if (m !== null) {
      const status = Number(m[2]);
      if (status === XNN_OUT_OF_MEMORY) sawOutOfMemory = true;
      pending ??= { op: m[1]!, status };
      if (!process.env.MISTRAL_REF_DEBUG) return; // the error says it, on one line
    }
    // After the init window, pass lines on to whatever console.warn is now.
    (console.warn === filter ? real : console.warn).apply(console, args);
  };
  return filter;
}

function watchWasmInit(): { end(): void } {
  const real = console.warn;
  const filter = stderrFilter(real);
  console.warn = filter;
  return {
    end() {
      if (console.warn === filter) console.warn = real;
    },
  };
}

/**
 * Installs watches 2 and 3 once the wasm backend is up. When something other than
 * useBackend initialised it first, its stderr went unwatched: traps and failed allocations
 * are still caught, XNN lines are not.
 */
function guardWasm(stderrBound: boolean): void {
  const backend = tf.engine().registry.wasm as unknown as { wasm?: WasmModule } | undefined;
  if (backend?.wasm === undefined || wasmModule !== null) return;
  wasmModule = backend.wasm;
  stderrWatched = stderrBound;
  guardMalloc(backend.wasm);
  wrapWasmKernels();
}

/** Whether XNNPACK's stderr is watched (the wasm backend was first initialised by useBackend). */
export function wasmFailuresWatched(): boolean {
  return stderrWatched;
}

function guardMalloc(m: WasmModule): void {
  // Module._malloc is a stub that replaces itself with asm.malloc on first call: wrap the export.
  const malloc = m.asm?.malloc ?? m._malloc.bind(m);
  m._malloc = (size: number): number => {
    const ptr = malloc(size);
    if (ptr === 0 && size > 0) {
      throw new WasmMemoryError(`the wasm backend ran out of memory: could not allocate ${bytes(size)} ` +
        `for a tensor; ${heapNote()}; ${ADVICE}`);
    }
    return ptr;
  };
}

function wrapWasmKernels(): void {
  for (const config of tf.getKernelsForBackend('wasm')) {
    const inner = config.kernelFunc;
    const kernelFunc: tf.KernelFunc = (params) => {
      let out: tf.TensorInfo | tf.TensorInfo[];
      try {
        out = inner(params);
      } catch (e) {
        if (pending !== null) {
          const f = pending;
          pending = null;
          throw xnnError(f, e);
        }
        throw fromWasmRuntimeError(e) ?? e;
      }
      if (pending !== null) {
        // Not forced: an output that is an input passed through only drops the reference it took.
        for (const t of Array.isArray(out) ? out : [out]) (params.backend as tf.KernelBackend).disposeData(t.dataId);
        checkWasmHealth();
      }
      return out;
    };
    tf.unregisterKernel(config.kernelName, 'wasm');
    tf.registerKernel({ ...config, kernelFunc });
  }
}
