/**
 * weightMatrix: TransformerLens's shapes from any layout and any backend, and the matrices
 * reproduce what the forward computed with its own weights.
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { runWithCache } from '../src/inspect/activations.js';
import { unembedRows, weightMatrix, type WeightName } from '../src/inspect/weights.js';
import { disposeResult, type Transformer } from '../src/model/transformer.js';
import { withModel } from './helpers/fixtures.js';

const IDS = [1, 269, 505, 717, 918, 977];
const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

/** Every weight of `m` as [name, layer?, expert?] with its expected shape. */
function shapes(m: Transformer): Array<[WeightName, number | undefined, number | undefined, number[]]> {
  const c = m.config;
  const moe = c.numExperts !== null;
  const e = moe ? 1 : undefined;
  return [
    ['W_E', undefined, undefined, [c.vocabSize, c.hiddenSize]],
    ['W_Q', 1, undefined, [c.numHeads, c.hiddenSize, c.headDim]],
    ['W_K', 1, undefined, [c.numKvHeads, c.hiddenSize, c.headDim]],
    ['W_V', 1, undefined, [c.numKvHeads, c.hiddenSize, c.headDim]],
    ['W_O', 1, undefined, [c.numHeads, c.headDim, c.hiddenSize]],
    ['W_gate', 1, e, [c.hiddenSize, c.intermediateSize]],
    ['W_in', 1, e, [c.hiddenSize, c.intermediateSize]],
    ['W_out', 1, e, [c.intermediateSize, c.hiddenSize]],
    ...(moe ? [['W_router', 1, undefined, [c.hiddenSize, c.numExperts!]] as [WeightName, number, undefined, number[]]] : []),
    ['W_U', undefined, undefined, [c.hiddenSize, c.vocabSize]],
  ];
}

describe('weightMatrix', () => {
  it.each(['mistral-tiny', 'mixtral-tiny', 'mistral-nowindow'])('%s: every weight in its documented shape; native layouts give the same matrices', async (name) => {
    await withModel(name, { backend: 'cpu' }, (m) => {
      for (const [w, layer, expert, shape] of shapes(m)) {
        const t = weightMatrix(m, w, layer, expert);
        expect(t.shape, w).toEqual(shape);
        t.dispose();
      }
    });
    if (name === 'mistral-nowindow') return;
    const hf: Record<string, Float32Array> = {};
    await withModel(name, { backend: 'cpu' }, (m) => {
      for (const [w, layer, expert] of shapes(m)) {
        const t = weightMatrix(m, w, layer, expert);
        hf[w] = t.dataSync() as Float32Array;
        t.dispose();
      }
    });
    await withModel(`${name}-native`, { backend: 'wasm' }, (m) => {
      for (const [w, layer, expert] of shapes(m)) {
        const t = weightMatrix(m, w, layer, expert);
        expect(Array.from(t.dataSync()), w).toEqual(Array.from(hf[w]!));
        t.dispose();
      }
    });
  });

  it.each([['cpu', 'eager'], ['wasm', 'eager'], ['wasm', 'resident']] as const)('on %s, %s weights, the matrices reproduce the forward: q = x·W_Q, up = x·W_in, logits = x·W_U', async (backend, weights) => {
    await withModel('mistral-tiny', { backend, weights }, (m) => {
      const names = ['blocks.1.ln1.hook_normalized', 'blocks.1.attn.hook_q', 'blocks.1.ln2.hook_normalized', 'blocks.1.mlp.hook_pre_linear', 'ln_final.hook_normalized', 'hook_logits'];
      const { result, cache } = runWithCache(m, IDS, { names });
      tf.tidy(() => {
        const x = cache.get('blocks.1.ln1.hook_normalized') as tf.Tensor2D; // [T, hidden]
        const wq = weightMatrix(m, 'W_Q', 1) as tf.Tensor3D; // [heads, hidden, headDim]
        const q = tf.transpose(tf.matMul(tf.broadcastTo(tf.expandDims(x, 0), [wq.shape[0], ...x.shape]) as tf.Tensor3D, wq), [1, 0, 2]);
        expect(maxDiff(q, cache.get('blocks.1.attn.hook_q'))).toBeLessThan(1e-5);
        const up = tf.matMul(cache.get('blocks.1.ln2.hook_normalized') as tf.Tensor2D, weightMatrix(m, 'W_in', 1) as tf.Tensor2D);
        expect(maxDiff(up, cache.get('blocks.1.mlp.hook_pre_linear'))).toBeLessThan(1e-5);
        const logits = tf.matMul(cache.get('ln_final.hook_normalized') as tf.Tensor2D, weightMatrix(m, 'W_U') as tf.Tensor2D);
        expect(maxDiff(logits, cache.get('hook_logits'))).toBeLessThan(1e-5);
        const rows = unembedRows(m, [5, 9]);
        expect(maxDiff(rows, tf.transpose(tf.gather(weightMatrix(m, 'W_U'), [5, 9], 1)))).toBe(0);
      });
      cache.dispose();
      disposeResult(result);
    });
  });

  it('bad names, layers and experts are InputErrors that say what is expected', async () => {
    await withModel('mixtral-tiny', { backend: 'cpu' }, (m) => {
      expect(() => weightMatrix(m, 'W_X' as WeightName)).toThrow('unknown weight "W_X" (expected one of W_E, W_Q, W_K, W_V, W_O, W_gate, W_in, W_out, W_router, W_U)');
      expect(() => weightMatrix(m, 'W_Q')).toThrow('W_Q needs a layer in [0, 3), got undefined');
      expect(() => weightMatrix(m, 'W_Q', 3)).toThrow('W_Q needs a layer in [0, 3), got 3');
      expect(() => weightMatrix(m, 'W_E', 0)).toThrow('W_E belongs to no layer, got layer 0');
      expect(() => weightMatrix(m, 'W_in', 0)).toThrow('W_in of a Mixtral layer needs an expert in [0, 4), got undefined');
      expect(() => weightMatrix(m, 'W_O', 0, 1)).toThrow('W_O has no experts, got expert 1');
      expect(() => unembedRows(m, [1000])).toThrow('token id 1000 is outside the vocabulary [0, 1000)');
    });
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      expect(() => weightMatrix(m, 'W_router', 0)).toThrow('W_router exists only in Mixtral (mixture-of-experts) models');
      expect(() => weightMatrix(m, 'W_in', 0, 2)).toThrow('W_in has no experts (a dense model), got expert 2');
    });
  });
});
