/** tfjs memory is manual: after load → forward → decode → dispose, no tensor is left behind. */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { greedySteps } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir } from './helpers/fixtures.js';

describe.each(['cpu', 'wasm'] as const)('no leaks on %s', (backend) => {
  it.each(['mistral-tiny', 'mixtral-tiny-native', 'mistral-nowindow'])('%s', async (name) => {
    await useBackend(backend);
    const start = tf.memory().numTensors;
    for (const weights of ['eager', 'stream'] as const) {
      const model = Transformer.load(modelDir(name), { weights });
      const ids = [1, 17, 42, 99, 5, 6, 7, 8, 9, 10, 11];
      disposeResult(model.forward(ids));
      disposeResult(model.forward(ids, { lastOnly: true, hooks: new Map([['*', () => undefined]]) }));
      expect(greedySteps(model, ids, 12).ids).toHaveLength(12);
      // A failing forward (bad id) must not leak either.
      expect(() => model.forward([1, 1_000_000])).toThrow(/outside the vocabulary/);
      model.dispose();
    }
    expect(tf.memory().numTensors).toBe(start);
  });
});
