/**
 * Golden parity: every golden checkpoint reproduces its reference (transformers 4.47.1,
 * cross-checked with Mistral's code) on the cpu and wasm backends, within the golden
 * README's tolerance, with identical greedy ids and expert choices.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { checkParity, type ParityReport } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import type { Residency } from '../src/model/residency.js';
import { Transformer } from '../src/model/transformer.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';
import { expectGoldenPass } from './helpers/golden.js';

const measured: string[] = [];
afterAll(() => console.log(`golden parity, max |Δ| (logits / layer_out / step_logits):\n${measured.join('\n')}`));

function run(model: string, ref: string, weights: Residency): ParityReport {
  const m = Transformer.load(modelDir(model), { weights });
  const r = Reference.open(refFile(ref));
  try {
    return checkParity(m, r);
  } finally {
    m.dispose();
    r.close();
  }
}

// eager: float32 tf tensors, the plain tfjs path; resident: stored width, the simd kernels.
describe.each([
  ['cpu', 'eager'], ['wasm', 'eager'], ['cpu', 'resident'], ['wasm', 'resident'],
] as const)('golden parity on %s, %s weights', (backend, weights) => {
  it.each(GOLDEN_MODELS)('$model reproduces refs/$ref', async ({ model, ref }) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const report = run(model, ref, weights);
    expect(tf.memory().numTensors).toBe(before);

    expectGoldenPass(report, model);
    const d = report.max_abs_diff;
    measured.push(`  ${backend.padEnd(4)} ${weights.padEnd(8)} ${model.padEnd(20)} ${d.logits!.toExponential(1)} / ${d.layer_out!.toExponential(1)} / ${d.step_logits!.toExponential(1)}`);
  });
});
