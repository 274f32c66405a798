/**
 * Golden generation: `generate` (chunked prefill with the default chunk W, then one token
 * at a time) reproduces transformers' 16-token greedy generation of every golden model:
 * ids identical, step logits within |Δ| ≤ 5e-5 (+ 1e-6·max|ref| for the trained demo
 * models), on the cpu and wasm backends.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { generate, generateSync } from '../src/generate/index.js';
import { Reference } from '../src/io/reference.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';

const measured: string[] = [];
afterAll(() => console.log(`greedy generation vs golden, max |Δ| of step logits:\n${measured.join('\n')}`));

function maxAbs(a: Float32Array): number {
  return a.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
}

describe.each(['cpu', 'wasm'] as const)('golden greedy generation on %s', (backend) => {
  it.each(GOLDEN_MODELS)('$model reproduces greedy.generated_ids and step_logits of refs/$ref', async ({ model: name, ref: refName }) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const model = Transformer.load(modelDir(name));
    const ref = Reference.open(refFile(refName));
    let worst = 0;
    try {
      const prompts = ref.prompts.filter((p) => p.greedy !== undefined);
      expect(prompts.length).toBeGreaterThan(0);
      for (const p of prompts) {
        const want = p.greedy!;
        const steps = want.generated_ids.length;
        const tokens = generateSync(model, p.input_ids, { maxNewTokens: steps, stopAtEos: false, returnLogits: true });
        expect(tokens.map((t) => t.id), `${p.name} ids`).toEqual(want.generated_ids);

        const expected = ref.tensor(want.step_logits); // [steps, vocab]
        const vocab = model.config.vocabSize;
        expect(expected.shape).toEqual([steps, vocab]);
        const tol = 5e-5 + (name.endsWith('-demo') ? 1e-6 * maxAbs(expected.data) : 0);
        tokens.forEach((t, s) => {
          const row = expected.data.subarray(s * vocab, (s + 1) * vocab);
          const d = t.logits!.reduce((m, x, i) => Math.max(m, Math.abs(x - row[i]!)), 0);
          expect(d, `${p.name} step ${s}`).toBeLessThanOrEqual(tol);
          worst = Math.max(worst, d);
        });
        expect(tokens.at(-1)!.stopReason).toBe('length');
        expect(tokens.map((t) => t.position)).toEqual(tokens.map((_, i) => p.input_ids.length + i));
      }
    } finally {
      model.dispose();
      ref.close();
    }
    expect(tf.memory().numTensors).toBe(before);
    measured.push(`  ${backend.padEnd(4)} ${name.padEnd(20)} ${worst.toExponential(2)}`);
  });
});

describe('the async stream', () => {
  it('yields the same tokens as the synchronous loop, and a break frees the cache', async () => {
    await useBackend('cpu');
    const model = Transformer.load(modelDir('mistral-tiny'));
    const ref = Reference.open(refFile('mistral-tiny'));
    try {
      const p = ref.prompts[0]!;
      const before = tf.memory().numTensors;
      const ids: number[] = [];
      for await (const t of generate(model, p.input_ids, { maxNewTokens: 16, stopAtEos: false })) ids.push(t.id);
      expect(ids).toEqual(p.greedy!.generated_ids);
      expect(tf.memory().numTensors).toBe(before);

      const firstFive: number[] = [];
      for await (const t of generate(model, p.input_ids, { maxNewTokens: 16, stopAtEos: false })) {
        firstFive.push(t.id);
        if (t.index === 4) break;
      }
      expect(firstFive).toEqual(p.greedy!.generated_ids.slice(0, 5));
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      model.dispose();
      ref.close();
    }
  });
});
