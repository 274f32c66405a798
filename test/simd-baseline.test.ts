/**
 * The baseline-SIMD build of the kernels (no fused multiply-add), which runs where V8 has no
 * relaxed SIMD or with MISTRAL_REF_RELAXED_SIMD=0. Every other test file gets the relaxed
 * build on Node 20; this one (its own process) keeps the baseline and holds it to the goldens.
 */
process.env.MISTRAL_REF_RELAXED_SIMD = '0';

import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { checkParity } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import { kernelVariant } from '../src/kernels/simd/arena.js';
import { Transformer } from '../src/model/transformer.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';

describe('baseline SIMD kernels', () => {
  it('are the build in use', () => {
    expect(kernelVariant()).toBe('simd');
  });

  it.each(GOLDEN_MODELS)('$model reproduces refs/$ref on wasm with resident weights', async ({ model, ref }) => {
    await useBackend('wasm');
    const before = tf.memory().numTensors;
    const m = Transformer.load(modelDir(model), { weights: 'resident' });
    const r = Reference.open(refFile(ref));
    try {
      const report = checkParity(m, r);
      expect(report.failures).toEqual([]);
      expect(report.prompts.every((p) => p.generated_ids_equal)).toBe(true);
    } finally {
      m.dispose();
      r.close();
    }
    expect(tf.memory().numTensors).toBe(before);
  });
});
