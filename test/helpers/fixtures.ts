/** Paths to the golden fixtures (copied from ../shared/golden) and the bundled demo models. */
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, expect } from 'vitest';
import { useBackend } from '../../src/kernels/backend.js';
import { Transformer } from '../../src/model/transformer.js';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const FIXTURES = path.join(ROOT, 'fixtures');

export const modelDir = (name: string): string =>
  name.endsWith('-demo') ? path.join(ROOT, 'models', name) : path.join(FIXTURES, 'models', name);
export const refFile = (name: string): string => path.join(FIXTURES, 'refs', `${name}.json`);

/** Every golden checkpoint with the reference it must reproduce. */
export const GOLDEN_MODELS: ReadonlyArray<{ model: string; ref: string }> = [
  { model: 'mistral-tiny', ref: 'mistral-tiny' },
  { model: 'mistral-tiny-bf16', ref: 'mistral-tiny-bf16' },
  { model: 'mistral-tiny-sharded', ref: 'mistral-tiny-sharded' },
  { model: 'mistral-tiny-native', ref: 'mistral-tiny' },
  { model: 'mistral-nowindow', ref: 'mistral-nowindow' },
  { model: 'mixtral-tiny', ref: 'mixtral-tiny' },
  { model: 'mixtral-tiny-native', ref: 'mixtral-tiny' },
  { model: 'mistral-demo', ref: 'mistral-demo' },
  { model: 'mixtral-demo', ref: 'mixtral-demo' },
];

/**
 * A per-file model loader: each model is loaded once, on first use, and disposed after
 * the file's tests (loading is cheap but not free, and tfjs tensors need disposing).
 */
export function sharedModels(): (name: string) => Transformer {
  const models = new Map<string, Transformer>();
  afterAll(() => { for (const m of models.values()) m.dispose(); });
  return (name) => {
    let m = models.get(name);
    if (m === undefined) models.set(name, (m = Transformer.load(modelDir(name))));
    return m;
  };
}

/**
 * Loads `name` on `backend` with `weights`, runs `fn`, disposes the model, and checks that
 * tfjs holds as many tensors as before the load (no leak, whatever `fn` did).
 */
export async function withModel(name: string, opts: { backend: 'cpu' | 'wasm'; weights?: 'eager' | 'resident' },
  fn: (m: Transformer) => void): Promise<void> {
  await useBackend(opts.backend);
  const start = tf.memory().numTensors;
  const m = Transformer.load(modelDir(name), { weights: opts.weights ?? 'eager' });
  try {
    fn(m);
  } finally {
    m.dispose();
  }
  expect(tf.memory().numTensors).toBe(start);
}
