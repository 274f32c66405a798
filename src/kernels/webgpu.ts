/**
 * The `webgpu` backend: tfjs-backend-webgpu on Google's Dawn (the `webgpu` npm package),
 * both optional dependencies, loaded only when asked for.
 *
 * Why a worker. The model reads tensors synchronously (`dataSync`: the MoE router's choices,
 * generation's logits, parity's comparisons). A WebGPU buffer can only be read back with
 * `mapAsync`, whose promise Dawn settles from the event loop: on the thread that owns the
 * device a synchronous read can never complete (tfjs-backend-webgpu's own `readSync` needs a
 * browser's OffscreenCanvas). So the device and tfjs-backend-webgpu live in a worker thread,
 * and this thread registers a small tfjs backend named `webgpu` that forwards each kernel to
 * it and blocks (`Atomics.wait`) only for the answer: output shapes for a kernel, values for
 * a read. Kernels are enqueued on the GPU as they arrive; nothing waits for the GPU but reads.
 *
 * No silent wrong numbers. The worker keeps WebGPU error scopes (validation, out-of-memory,
 * internal) open over all work since the last read, and pops them at each read before it
 * answers; an error in them, or an uncaptured device error, or a lost device, makes that read
 * throw a WebGpuDeviceError instead of returning values. (A weight bound whole beyond
 * `maxStorageBufferBindingSize` is such an error: Dawn rejects the bind group, and without the
 * scopes the read would return wrong numbers. `linear.ts` splits those weights by rows.)
 */
import * as tf from '@tensorflow/tfjs-core';
import { createRequire } from 'node:module';
import { MessageChannel, receiveMessageOnPort, Worker, type MessagePort } from 'node:worker_threads';

/** The optional packages the webgpu backend needs, pinned in package.json's optionalDependencies. */
export const WEBGPU_PACKAGES = ['webgpu@0.6.2', '@tensorflow/tfjs-backend-webgpu@4.22.0'] as const;

/** What the worker found: the adapter (Dawn's name for it, the route that reached it) and its limits. */
export interface WebGpuAdapterInfo {
  /** `default` (Vulkan, Metal or D3D12: a real GPU, or Mesa 25's llvmpipe) or `opengles` (EGL, compatibility mode). */
  readonly route: 'default' | 'opengles';
  readonly vendor: string;
  readonly architecture: string;
  readonly device: string;
  readonly description: string;
  /** A subset of the adapter's limits: the ones that decide how weights are laid out. */
  readonly limits: {
    readonly maxStorageBufferBindingSize: number;
    readonly maxBufferSize: number;
    readonly maxComputeWorkgroupStorageSize: number;
    readonly maxComputeInvocationsPerWorkgroup: number;
  };
}

/** Why webgpu cannot start here: a package missing, no adapter, or the device failed to start (backend.ts makes it a BackendError). */
export interface WebGpuProblem {
  readonly kind: 'missing' | 'no-adapter' | 'device';
  readonly message: string;
}

// ── the worker ──────────────────────────────────────────────────────────────────────────
//
// Plain CommonJS source (a worker from source text runs the same under tsx, vitest and the
// built package). It answers on `port`, then sets control[0] = 1 and notifies: the main
// thread, blocked in Atomics.wait, takes the answer with receiveMessageOnPort.
const WORKER_SOURCE = `
const { workerData } = require('node:worker_threads');
const { pathToFileURL } = require('node:url');
const { port, control, paths, probeOnly } = workerData;
const ctl = new Int32Array(control);
function answer(m) { port.postMessage(m); Atomics.store(ctl, 0, 1); Atomics.notify(ctl, 0); }
function text(e) { return String(e && e.message !== undefined ? e.message : e).split('\\n')[0]; }

// Routes to an adapter, in order: the platform's default (Vulkan / Metal / D3D12), then
// OpenGL ES in compatibility mode (Debian 12's Mesa 22 llvmpipe through EGL surfaceless:
// Dawn rejects its lavapipe Vulkan).
const ROUTES = [
  { route: 'default', flags: [], options: {} },
  { route: 'opengles', flags: ['backend=opengles'], options: { featureLevel: 'compatibility' } },
].filter((r) => !workerData.route || r.route === workerData.route);

async function main() {
  let webgpu;
  try { webgpu = await import(pathToFileURL(paths.webgpu).href); }
  catch (e) { return answer({ problem: { kind: 'missing', message: 'the webgpu package failed to load: ' + text(e) } }); }
  Object.assign(globalThis, webgpu.globals);
  let found = null;
  const tried = [];
  for (const r of ROUTES) {
    try {
      const gpu = webgpu.create(r.flags);
      const adapter = await gpu.requestAdapter(r.options);
      if (adapter) { found = { r, gpu, adapter }; break; }
      tried.push(r.route + ': no adapter');
    } catch (e) { tried.push(r.route + ': ' + text(e)); }
  }
  if (found === null) {
    return answer({ problem: { kind: 'no-adapter', message: 'no WebGPU adapter (' + tried.join('; ') + ')' } });
  }
  const { r, gpu, adapter } = found;
  const i = adapter.info || {};
  const L = adapter.limits;
  const info = {
    route: r.route, vendor: i.vendor || '', architecture: i.architecture || '', device: i.device || '',
    description: i.description || '',
    limits: {
      maxStorageBufferBindingSize: L.maxStorageBufferBindingSize, maxBufferSize: L.maxBufferSize,
      maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
    },
  };
  if (probeOnly) return answer({ info });

  // tfjs-backend-webgpu registers itself on import only when navigator.gpu exists.
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true, writable: true });
  let tf, WebGPUBackend;
  try {
    tf = require(paths.core);
    ({ WebGPUBackend } = require(paths.backend));
  } catch (e) {
    return answer({ problem: { kind: 'missing', message: '@tensorflow/tfjs-backend-webgpu failed to load: ' + text(e) } });
  }
  const device = await adapter.requestDevice({ requiredLimits: {
    maxStorageBufferBindingSize: L.maxStorageBufferBindingSize, maxBufferSize: L.maxBufferSize,
    maxComputeWorkgroupStorageSize: L.maxComputeWorkgroupStorageSize,
    maxComputeWorkgroupsPerDimension: L.maxComputeWorkgroupsPerDimension,
    maxComputeWorkgroupSizeX: L.maxComputeWorkgroupSizeX,
    maxComputeInvocationsPerWorkgroup: L.maxComputeInvocationsPerWorkgroup,
  } });
  // Errors no scope caught, and a lost device: reported at the next answer.
  let pending = null;
  device.onuncapturederror = (ev) => { pending ??= 'uncaptured ' + errorKind(ev.error) + ' error: ' + text(ev.error); };
  device.lost.then((l) => { pending ??= 'device lost (' + l.reason + '): ' + l.message; });
  // Our backend, not the one the import registered: ours has our device (its limits, our handlers).
  tf.removeBackend('webgpu');
  tf.registerBackend('webgpu', () => new WebGPUBackend(device, adapter.info), 0);
  await tf.setBackend('webgpu');
  tf.env().set('PROD', true);

  const FILTERS = ['validation', 'out-of-memory', 'internal'];
  let scoped = false;
  function open() {
    if (scoped) return;
    for (const f of FILTERS) device.pushErrorScope(f);
    scoped = true;
  }
  async function close() {
    if (!scoped) return null;
    scoped = false;
    let first = null;
    for (let k = FILTERS.length - 1; k >= 0; k--) {
      const e = await device.popErrorScope();
      if (e && first === null) first = errorKind(e) + ' error: ' + text(e);
    }
    return first;
  }
  function errorKind(e) {
    const n = e && e.constructor && e.constructor.name;
    return n === 'GPUValidationError' ? 'validation' : n === 'GPUOutOfMemoryError' ? 'out-of-memory' : n === 'GPUInternalError' ? 'internal' : 'device';
  }

  const tensors = new Map();
  let nextId = -1; // the worker names outputs with negative ids, the main thread names writes with positive ones
  let failed = null; // a failure in a message that has no answer (write, dispose), told at the next answer
  function get(id) {
    const t = tensors.get(id);
    if (t === undefined) throw new Error('webgpu worker: no tensor ' + id);
    return t;
  }
  port.on('message', async (m) => {
    if (m.op === 'write' || m.op === 'dispose') {
      try {
        if (m.op === 'write') {
          open();
          const t = tf.tensor(m.values, m.shape, m.dtype);
          // Upload now, not at first use: tfjs-webgpu then drops its host copy, so loading a
          // model does not hold every weight twice (host and device) until the first forward.
          tf.backend().uploadToGPU(t.dataId);
          tensors.set(m.id, t);
        }
        else { const t = tensors.get(m.id); tensors.delete(m.id); if (t !== undefined) t.dispose(); }
      } catch (e) { failed ??= text(e); }
      return;
    }
    let reply;
    try {
      if (failed !== null) { const f = failed; failed = null; throw new Error(f); }
      if (m.op === 'kernel') {
        open();
        // Some kernels (Concat, AddN, Pack) take their inputs as an array.
        const inputs = Array.isArray(m.inputs) ? [] : {};
        for (const k in m.inputs) if (m.inputs[k] !== null) inputs[k] = get(m.inputs[k]);
        const out = tf.engine().runKernel(m.name, inputs, m.attrs);
        const outs = Array.isArray(out) ? out : [out];
        reply = { array: Array.isArray(out), outputs: outs.map((t) => { const id = nextId--; tensors.set(id, t); return { id, shape: t.shape, dtype: t.dtype }; }) };
      } else if (m.op === 'read') {
        const values = await get(m.id).data();
        const err = (await close()) ?? pending;
        reply = err !== null ? { deviceError: err } : { values };
      } else if (m.op === 'count') {
        reply = { held: tensors.size, tensors: tf.memory().numTensors };
      } else if (m.op === 'sync') {
        const err = (await close()) ?? pending;
        reply = err !== null ? { deviceError: err } : {};
      } else {
        reply = { error: 'webgpu worker: unknown op ' + m.op };
      }
    } catch (e) { reply = { error: text(e) }; }
    answer(reply);
  });
  answer({ info, kernels: tf.getKernelsForBackend('webgpu').map((k) => k.kernelName) });
}
main().catch((e) => answer({ problem: { kind: 'device', message: text(e) } }));
`;

/** How long a blocked call waits for the worker before giving up (a software adapter is slow, but not this slow). */
const CALL_TIMEOUT_MS = 30 * 60_000;

interface WorkerLink {
  readonly worker: Worker;
  readonly port: MessagePort;
  readonly control: Int32Array;
}

const require = createRequire(import.meta.url);

function resolveInstalled(spec: string): string | null {
  try {
    return require.resolve(spec);
  } catch {
    return null;
  }
}

/**
 * Resolves the optional packages' entry points; names the ones missing.
 * @param resolve a package's entry file, or null when it is not installed
 */
export function packagePaths(resolve: (spec: string) => string | null = resolveInstalled):
  { paths: { webgpu: string; backend: string; core: string } } | { problem: WebGpuProblem } {
  const webgpu = resolve('webgpu');
  const backend = resolve('@tensorflow/tfjs-backend-webgpu');
  const missing = [webgpu === null ? WEBGPU_PACKAGES[0] : null, backend === null ? WEBGPU_PACKAGES[1] : null].filter((p) => p !== null);
  if (missing.length > 0) {
    return { problem: { kind: 'missing', message: `backend "webgpu" needs the optional package${missing.length > 1 ? 's' : ''} ` +
      `${missing.join(' and ')}: \`npm install ${missing.join(' ')}\`` } };
  }
  return { paths: { webgpu: webgpu!, backend: backend!, core: resolveInstalled('@tensorflow/tfjs-core')! } };
}

function startWorker(probeOnly: boolean): { link: WorkerLink } | { problem: WebGpuProblem } {
  const found = packagePaths();
  if ('problem' in found) return found;
  // Mesa's EGL needs a platform without a display; read by libEGL from the real environment,
  // which a worker's process.env is only a copy of.
  process.env.EGL_PLATFORM ??= 'surfaceless';
  const { port1, port2 } = new MessageChannel();
  const control = new Int32Array(new SharedArrayBuffer(4));
  const worker = new Worker(WORKER_SOURCE, {
    eval: true,
    // MISTRAL_REF_WEBGPU_ROUTE=default|opengles tries that route only (to compare them, or to test).
    workerData: { port: port2, control: control.buffer, paths: found.paths, probeOnly, route: process.env.MISTRAL_REF_WEBGPU_ROUTE ?? '' },
    transferList: [port2],
  });
  worker.unref();
  port1.unref();
  return { link: { worker, port: port1, control } };
}

/** Blocks until the worker answers (the answer to `message`, or its first one when none is sent). */
function call(link: WorkerLink, message?: object): Record<string, unknown> {
  Atomics.store(link.control, 0, 0);
  if (message !== undefined) link.port.postMessage(message);
  const start = Date.now();
  while (Atomics.load(link.control, 0) === 0) {
    if (Date.now() - start > CALL_TIMEOUT_MS) throw new Error('the webgpu worker did not answer within 30 minutes');
    Atomics.wait(link.control, 0, 0, 1000);
  }
  const m = receiveMessageOnPort(link.port);
  if (m === undefined) throw new Error('the webgpu worker signalled an answer but sent none');
  return m.message as Record<string, unknown>;
}

/**
 * Looks for a WebGPU adapter without starting tfjs on it: what `backends` reports. Starts a
 * worker, asks, ends it.
 */
export async function probeWebGpu(): Promise<{ info: WebGpuAdapterInfo } | { problem: WebGpuProblem }> {
  const started = startWorker(true);
  if ('problem' in started) return started;
  try {
    const first = call(started.link);
    return 'problem' in first ? { problem: first.problem as WebGpuProblem } : { info: first.info as WebGpuAdapterInfo };
  } finally {
    await started.link.worker.terminate();
  }
}

type DataId = { readonly id: number };

/** The webgpu backend as this thread sees it: a forwarder to the worker that owns the device. */
export class WebGpuProxyBackend extends tf.KernelBackend {
  private readonly refs = new Map<number, number>();
  private nextId = 1;
  private disposed = false;

  constructor(private readonly link: WorkerLink, readonly info: WebGpuAdapterInfo,
    private readonly onDeviceError: (message: string) => Error) {
    super();
  }

  /** Forwards one kernel; returns its outputs' infos. Called by the kernels `startWebGpu` registers. */
  runKernel(name: string, inputs: tf.NamedTensorInfoMap, attrs: tf.NamedAttrMap | undefined): tf.TensorInfo | tf.TensorInfo[] {
    const id = (t: tf.TensorInfo | undefined | null) => (t === undefined || t === null ? null : (t.dataId as DataId).id);
    // Some kernels (Concat, AddN, Pack) take their inputs as an array: keep it one.
    const ids = Array.isArray(inputs) ? (inputs as tf.TensorInfo[]).map(id)
      : Object.fromEntries(Object.entries(inputs).map(([k, t]) => [k, id(t)]));
    const r = this.ask({ op: 'kernel', name, inputs: ids, attrs: attrs ?? {} });
    const outs = (r.outputs as Array<{ id: number; shape: number[]; dtype: tf.DataType }>).map((o) => {
      this.refs.set(o.id, 1);
      return { dataId: { id: o.id }, shape: o.shape, dtype: o.dtype };
    });
    return r.array ? outs : outs[0]!;
  }

  /**
   * Tensors alive in the worker, where the device memory is: `held` for this thread's
   * tensors, `tensors` in the worker's tfjs engine. For leak checks.
   */
  workerTensors(): { held: number; tensors: number } {
    return this.ask({ op: 'count' }) as unknown as { held: number; tensors: number };
  }

  /** Waits for every kernel enqueued so far and throws what the device reported, if anything. */
  sync(): void {
    this.ask({ op: 'sync' });
  }

  private ask(message: object): Record<string, unknown> {
    if (this.disposed) throw new Error('the webgpu backend has been disposed');
    const r = call(this.link, message);
    if (typeof r.deviceError === 'string') throw this.onDeviceError(r.deviceError);
    if (typeof r.error === 'string') throw new Error(r.error);
    return r;
  }

  override write(values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType): tf.DataId {
    const dataId = { id: this.nextId++ };
    this.move(dataId, values, shape, dtype, 1);
    return dataId;
  }

  override move(dataId: tf.DataId, values: tf.backend_util.BackendValues, shape: number[], dtype: tf.DataType, refCount: number): void {
    if (dtype === 'string' || dtype === 'complex64') throw new Error(`the webgpu backend here holds numeric tensors only, got ${dtype}`);
    const id = (dataId as DataId).id;
    this.refs.set(id, refCount);
    // values may be null (an uninitialised tensor): zeros then. A view of part of a buffer (a
    // weight's row block) is copied: posting the view would clone its whole buffer.
    let v = values ?? new Float32Array(shape.reduce((a, b) => a * b, 1));
    if (ArrayBuffer.isView(v) && v.byteLength !== v.buffer.byteLength) v = (v as Float32Array).slice();
    this.link.port.postMessage({ op: 'write', id, values: v, shape, dtype });
  }

  override readSync(dataId: tf.DataId): tf.backend_util.BackendValues {
    return this.ask({ op: 'read', id: (dataId as DataId).id }).values as tf.backend_util.BackendValues;
  }

  override async read(dataId: tf.DataId): Promise<tf.backend_util.BackendValues> {
    return this.readSync(dataId);
  }

  override refCount(dataId: tf.DataId): number {
    return this.refs.get((dataId as DataId).id) ?? 0;
  }

  override incRef(dataId: tf.DataId): void {
    const id = (dataId as DataId).id;
    this.refs.set(id, (this.refs.get(id) ?? 0) + 1);
  }

  override disposeData(dataId: tf.DataId, force = false): boolean {
    const id = (dataId as DataId).id;
    const n = this.refs.get(id);
    if (n === undefined) return true;
    if (!force && n > 1) {
      this.refs.set(id, n - 1);
      return false;
    }
    this.refs.delete(id);
    if (!this.disposed) this.link.port.postMessage({ op: 'dispose', id });
    return true;
  }

  override numDataIds(): number {
    return this.refs.size;
  }

  override memory(): { unreliable: boolean; reasons?: string[] } {
    return { unreliable: true, reasons: ['the webgpu device lives in a worker thread'] };
  }

  override timerAvailable(): boolean {
    return false;
  }

  override async time(f: () => void): Promise<tf.BackendTimingInfo> {
    const start = performance.now();
    f();
    this.sync();
    return { kernelMs: performance.now() - start };
  }

  override floatPrecision(): 32 {
    return 32;
  }

  override epsilon(): number {
    return 1e-7;
  }

  override dispose(): void {
    if (this.disposed) return;
    this.disposed = true;
    void this.link.worker.terminate();
  }
}

/**
 * Starts the worker, finds an adapter, starts tfjs-backend-webgpu on it, and registers
 * `webgpu` here with a forwarding kernel for each kernel the worker has.
 */
export function startWebGpu(onDeviceError: (message: string) => Error): { backend: WebGpuProxyBackend } | { problem: WebGpuProblem } {
  const started = startWorker(false);
  if ('problem' in started) return started;
  const first = call(started.link);
  if ('problem' in first) {
    void started.link.worker.terminate();
    return { problem: first.problem as WebGpuProblem };
  }
  const backend = new WebGpuProxyBackend(started.link, first.info as WebGpuAdapterInfo, onDeviceError);
  for (const kernelName of first.kernels as string[]) {
    if (tf.getKernel(kernelName, 'webgpu') !== undefined) continue;
    tf.registerKernel({
      kernelName, backendName: 'webgpu',
      kernelFunc: ({ inputs, attrs, backend: b }) => (b as WebGpuProxyBackend).runKernel(kernelName, inputs, attrs),
    });
  }
  return { backend };
}
