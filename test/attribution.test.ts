/**
 * Attribution: the parts (embedding, heads, MLPs / mixtures) sum to the model's logit
 * difference within 1e-4 on the golden Mixtral and the demo models, on cpu and wasm, on
 * the tfjs and the simd paths; the stacks sum to what the forward computed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterEach, describe, expect, it } from 'vitest';
import { runWithCache } from '../src/inspect/activations.js';
import { accumulatedResid, applyLnToStack, attributionHookNames, decomposeResid, directLogitAttribution, logitAttrs, stackHeadResults } from '../src/inspect/attribution.js';
import { weightMatrix } from '../src/inspect/weights.js';
import { useBackend } from '../src/kernels/backend.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir } from './helpers/fixtures.js';

const PROMPTS: Record<string, number[]> = {
  'mixtral-tiny': [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913],
  'mistral-tiny': [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913],
  'mistral-demo': [1, 24, 27, 21, 23, 28, 30], // <s>47+38=
  'mixtral-demo': [1, 24, 27, 21, 23, 28, 30],
};
const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

let start = 0;
afterEach(() => { expect(tf.memory().numTensors).toBe(start); });

describe.each(['cpu', 'wasm'] as const)('on %s', (backend) => {
  describe.each(['eager', 'resident'] as const)('%s weights', (weights) => {
    it.each(['mixtral-tiny', 'mistral-demo', 'mixtral-demo'])('%s: direct logit attribution sums to the logit difference', async (name) => {
      await useBackend(backend);
      start = tf.memory().numTensors;
      const m = Transformer.load(modelDir(name), { weights });
      try {
        const ids = PROMPTS[name]!;
        const plain = m.forward(ids);
        const last = plain.logits.dataSync().slice((ids.length - 1) * m.config.vocabSize);
        disposeResult(plain);
        // The answer and the runner-up of the plain run.
        const order = Array.from(last.keys()).sort((a, b) => last[b]! - last[a]!);
        const [answer, wrong] = [order[0]!, order[1]!];
        const dla = directLogitAttribution(m, ids, answer, wrong);
        expect(Math.abs(dla.sum - dla.logitDiff)).toBeLessThan(1e-4);
        expect(Math.abs(dla.logitDiff - (last[answer]! - last[wrong]!))).toBeLessThan(1e-4);
        const c = m.config;
        expect(dla.parts).toHaveLength(1 + c.numLayers * (c.numHeads + 1));
        expect(dla.parts[0]!.name).toBe('embed');
        expect(dla.parts[1]!.name).toBe('blocks.0.attn.head.0');
        expect(dla.parts[c.numHeads + 1]!.name).toBe(`blocks.0.${c.numExperts === null ? 'mlp' : 'moe'}`);
      } finally {
        m.dispose();
      }
    });
  });
});

describe('the stacks', () => {
  it.each(['mistral-tiny', 'mixtral-tiny'])('%s: decomposeResid, stackHeadResults and accumulatedResid add up; logitAttrs of every part sums to the logit difference at every position', async (name) => {
    await useBackend('cpu');
    start = tf.memory().numTensors;
    const m = Transformer.load(modelDir(name));
    const c = m.config;
    const ids = PROMPTS[name]!;
    const { result, cache } = runWithCache(m, ids, { names: attributionHookNames(c) });
    try {
      tf.tidy(() => {
        const final = cache.get(`blocks.${c.numLayers - 1}.hook_resid_post`);
        const parts = decomposeResid(cache, c.numLayers);
        expect(parts.labels).toEqual(['embed', ...Array.from({ length: c.numLayers }, (_, l) => [`blocks.${l}.attn`, `blocks.${l}.mlp`]).flat()]);
        expect(maxDiff(tf.sum(parts.stack, 0), final)).toBeLessThan(1e-5);

        const heads = stackHeadResults(cache, c.numLayers);
        expect(heads.stack.shape).toEqual([c.numLayers * c.numHeads, ids.length, c.hiddenSize]);
        expect(heads.labels[c.numHeads + 1]).toBe('blocks.1.attn.head.1');
        for (let l = 0; l < c.numLayers; l++) {
          const layer = tf.slice(heads.stack, [l * c.numHeads, 0, 0], [c.numHeads, -1, -1]);
          expect(maxDiff(tf.sum(layer, 0), cache.get(`blocks.${l}.hook_attn_out`))).toBeLessThan(1e-5);
        }

        const acc = accumulatedResid(cache, c.numLayers);
        expect(acc.stack.shape[0]).toBe(c.numLayers + 1);
        expect(maxDiff(tf.slice(acc.stack, [c.numLayers, 0, 0], [1, -1, -1]).squeeze([0]), final)).toBe(0);

        const [A, B] = [5, 9];
        const attrs = logitAttrs(m, applyLnToStack(m, parts.stack, cache), A, B); // [parts, T]
        const logits = cache.get('hook_logits');
        const diff = tf.sub(tf.gather(logits, A, 1), tf.gather(logits, B, 1)); // [T]
        expect(maxDiff(tf.sum(attrs, 0), diff)).toBeLessThan(1e-4);
        // One token's logit alone: the direction is that token's column of W_U.
        const wU = weightMatrix(m, 'W_U');
        const single = logitAttrs(m, applyLnToStack(m, parts.stack, cache), A);
        expect(maxDiff(tf.sum(single, 0), tf.gather(logits, A, 1))).toBeLessThan(1e-4);
        expect(wU.shape).toEqual([c.hiddenSize, c.vocabSize]);
      });
    } finally {
      cache.dispose();
      disposeResult(result);
      m.dispose();
    }
  });
});
