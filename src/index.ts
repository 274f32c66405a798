/**
 * mistral-ref: the public API.
 *
 *   import { useBackend, Transformer, generate, runWithCache, loadTokenizer } from 'mistral-ref';
 *
 *   await useBackend('wasm');
 *   const model = Transformer.load(bundledModel('mistral-demo'));   // or any checkpoint folder
 *   const tok = await loadTokenizer(bundledModel('mistral-demo'));
 *   for await (const t of generate(model, tok.encode('47+38=', { bos: true }))) process.stdout.write(tok.decode([t.id]));
 *   model.dispose();
 */

// floor 1: files, tokenizers, backends
export * from './io/bundled.js';
export * from './io/checkpoint.js';
export * from './io/errors.js';
export * from './io/reference.js';
export * from './io/safetensors.js';
export * from './kernels/backend.js';
export { KERNELS, linear, makeLinear, type KernelsName, type Linear, type SplitLinear, type StoredLinear, type TensorLinear } from './kernels/linear.js';
export { probeWebGpu, type WebGpuAdapterInfo } from './kernels/webgpu.js';
export { defaultThreads, getThreads, MAX_THREADS, setThreads, closeKernelPool } from './kernels/simd/pool.js';
export * from './tokenizer/index.js';

// floor 2: the model
export * from './model/cache.js';
export * from './model/config.js';
export * from './model/errors.js';
export * from './model/hooks.js';
export { canAttend, maskBias } from './model/mask.js';
export { routeToken, type Routing } from './model/moe.js';
export * from './model/transformer.js';
export { nativeName } from './model/layout.js';
export { chooseResidency, residencyProblem, type CheckpointSize, type Residency } from './model/residency.js';
export { expectedTensors } from './model/schema.js';

// floor 3: generation and stepping through layers
export * from './generate/index.js';
export * from './inspect/activations.js';
export * from './inspect/hookpoints.js';
export * from './inspect/lens.js';
export * from './inspect/parity.js';
export * from './inspect/patching.js';
export * from './inspect/patterns.js';
export { attentionPicture, logitLensPicture, routerPicture, tokenLabel, type AttentionPictureOptions } from './inspect/pictures.js';
export * from './inspect/routing.js';
export { traceModel, writeTrace, type TraceReport } from './inspect/trace.js';
export { heatmapSvg, svgToPng, type Heatmap, type Panel } from './inspect/svg.js';
export { rmsNorm } from './model/rmsnorm.js';
export * from './inspect/weights.js';
export * from './inspect/attribution.js';
export * from './inspect/sweep.js';
export * from './inspect/gradients.js';
