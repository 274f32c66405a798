/** Mixtral's router and sparse experts. */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { maxAbsDiff } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import { NonFiniteError } from '../src/model/errors.js';
import { routeToken } from '../src/model/moe.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir, refFile } from './helpers/fixtures.js';
import { forwardWithRouting } from '../src/inspect/routing.js';

beforeAll(() => useBackend('cpu'));

/** transformers' formulation: softmax over all experts, top-k, renormalise. */
function hfRouting(logits: number[], k: number) {
  const top = Math.max(...logits);
  const p = logits.map((l) => Math.exp(l - top));
  const z = p.reduce((a, b) => a + b, 0);
  const probs = p.map((x) => x / z);
  const order = probs.map((_, e) => e).sort((a, b) => probs[b]! - probs[a]! || a - b).slice(0, k);
  const s = order.reduce((a, e) => a + probs[e]!, 0);
  return { experts: order, weights: order.map((e) => probs[e]! / s) };
}

describe('router', () => {
  it('top-k then softmax over the k equals softmax, top-k, renormalise', () => {
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 8 - 4;
    for (let trial = 0; trial < 200; trial++) {
      const E = 2 + (trial % 7);
      const k = 1 + (trial % Math.min(E, 3));
      const logits = Array.from({ length: E }, rand);
      const ours = routeToken(logits, k);
      const hf = hfRouting(logits, k);
      expect(ours.experts).toEqual(hf.experts);
      ours.weights.forEach((w, i) => expect(w).toBeCloseTo(hf.weights[i]!, 6));
      expect(ours.weights.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
    }
  });

  it('breaks ties towards the lowest expert index', () => {
    expect(routeToken([1, 3, 3, 3], 2).experts).toEqual([1, 2]);
    expect(routeToken([0, 0, 0, 0], 2)).toEqual({ experts: [0, 1], weights: [0.5, 0.5] });
  });
});

describe('sparse experts', () => {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-moe-'));
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('never evaluates an expert no token chose: a poisoned expert leaves the golden logits intact', () => {
    // Find a (layer, expert) that no token of some golden prompt is routed to.
    const model = Transformer.load(modelDir('mixtral-tiny'));
    const ref = Reference.open(refFile('mixtral-tiny'));
    let pick: { prompt: number; layer: number; expert: number } | undefined;
    ref.prompts.forEach((p, i) => {
      const { result: r, routing: all } = forwardWithRouting(model, p.input_ids);
      all.forEach((routing, layer) => {
        for (let e = 0; e < routing.numExperts && pick === undefined; e++) {
          if (!routing.experts.includes(e)) pick = { prompt: i, layer, expert: e };
        }
      });
      disposeResult(r);
    });
    model.dispose();
    expect(pick).toBeDefined();
    const { prompt, layer, expert } = pick!;

    // Copy the checkpoint and fill that expert's three matrices with 3e38: finite (NaN weights
    // are refused at load), but any token run through them overflows to ±Inf / NaN.
    const dir = path.join(tmp, 'nan-expert');
    fs.mkdirSync(dir);
    for (const f of fs.readdirSync(modelDir('mixtral-tiny'))) fs.copyFileSync(path.join(modelDir('mixtral-tiny'), f), path.join(dir, f));
    const file = path.join(dir, 'model.safetensors');
    fs.chmodSync(file, 0o644);
    const bytes = fs.readFileSync(file);
    const st = SafetensorsFile.open(file);
    for (const w of ['w1', 'w2', 'w3']) {
      const { begin, end } = st.info(`model.layers.${layer}.block_sparse_moe.experts.${expert}.${w}.weight`);
      new Float32Array(bytes.buffer, bytes.byteOffset + begin, (end - begin) / 4).fill(3e38);
    }
    st.close();
    fs.writeFileSync(file, bytes);

    const poisoned = Transformer.load(dir);
    const p = ref.prompts[prompt]!;
    const r = poisoned.forward(p.input_ids);
    const logits = r.logits.dataSync();
    expect(logits.every(Number.isFinite)).toBe(true);
    expect(maxAbsDiff(logits, ref.tensor(p.tensors.logits).data)).toBeLessThan(5e-5);
    disposeResult(r);
    // The expert does exist and poisons any token routed to it: force one token there.
    let caught: unknown;
    try {
      disposeResult(poisoned.forward(p.input_ids, {
        hooks: new Map([[`blocks.${layer}.moe.hook_expert_indices`, (t: tf.Tensor) => tf.tidy(() => {
          const ids = t.arraySync() as number[][];
          ids[0]![1] = expert;
          return tf.tensor2d(ids, t.shape as [number, number], 'int32');
        })]]),
      }));
    } catch (e) {
      caught = e;
    }
    expect(caught).toBeInstanceOf(NonFiniteError);
    expect((caught as NonFiniteError).layer).toBe(layer);
    poisoned.dispose();
    ref.close();
  });

  it('returns each layer\'s router logits, chosen experts and weights', () => {
    const model = Transformer.load(modelDir('mixtral-tiny'));
    const ids = [1, 5, 9, 200, 17];
    const { result: r, routing: all } = forwardWithRouting(model, ids);
    expect(all).toHaveLength(3);
    for (const routing of all) {
      expect(routing.logits).toHaveLength(ids.length * 4);
      expect(routing.experts).toHaveLength(ids.length * 2);
      for (let t = 0; t < ids.length; t++) {
        const want = routeToken(routing.logits.subarray(t * 4, t * 4 + 4), 2);
        expect(Array.from(routing.experts.subarray(t * 2, t * 2 + 2))).toEqual(want.experts);
        expect(routing.weights[t * 2]! + routing.weights[t * 2 + 1]!).toBeCloseTo(1, 6);
      }
    }
    disposeResult(r);
    model.dispose();
  });
});
