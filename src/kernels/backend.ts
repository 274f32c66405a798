/**
 * Backend selection. `cpu` is the readable JavaScript reference; `wasm` is XNNPACK and
 * fast; `tensorflow` is libtensorflow through the optional peer `@tensorflow/tfjs-node-gpu`
 * (CUDA) or `@tensorflow/tfjs-node`, imported only when asked for, because their install
 * downloads libtensorflow and fails offline.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
import { createRequire } from 'node:module';

export const BACKENDS = ['cpu', 'wasm', 'tensorflow'] as const;
export type BackendName = (typeof BACKENDS)[number];

export class BackendError extends Error {
  override readonly name = 'BackendError';
}

/** Makes `name` the active tfjs backend (idempotent). */
export async function useBackend(name: BackendName): Promise<void> {
  if (!BACKENDS.includes(name)) {
    throw new BackendError(`unknown backend ${JSON.stringify(name)} (expected ${BACKENDS.join(', ')})`);
  }
  if (name === 'tensorflow' && tf.findBackend('tensorflow') === null) {
    await importTensorflowBackend();
  }
  // PROD only silences tfjs' console advice (e.g. "install tfjs-node") in 4.22; no checks change.
  tf.env().set('PROD', true);
  if (tf.getBackend() === name) return;
  if (!(await tf.setBackend(name))) throw new BackendError(`backend ${name} failed to initialise`);
  await tf.ready();
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

/** Name of the active backend. */
export function activeBackend(): string {
  return tf.getBackend();
}
