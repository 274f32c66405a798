/**
 * Hook points: every documented name fires (dense and Mixtral) with its documented shape,
 * the values match the golden debug tensors, and caching, patching and ablation do what
 * they say without leaking tensors.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { runWithCache, runWithHooks } from '../src/inspect/activations.js';
import { HOOK_POINTS, hookNames } from '../src/inspect/hookpoints.js';
import { maxAbsDiff } from '../src/inspect/parity.js';
import { mapActivation, patchPositions, replaceWith, zeroHead } from '../src/inspect/patching.js';
import { useBackend } from '../src/kernels/backend.js';
import { linear } from '../src/kernels/linear.js';
import type { ModelConfig } from '../src/model/config.js';
import { HookError } from '../src/model/hooks.js';
import { routeToken } from '../src/model/moe.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir, refFile, ROOT, sharedModels } from './helpers/fixtures.js';
import { forwardWithRouting } from '../src/inspect/routing.js';

const load = sharedModels();
beforeAll(() => useBackend('cpu'));

const IDS_A = [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913, 118];
const IDS_B = [1, 42, 17, 99, 500, 3, 640, 811, 27, 330, 71, 5];

/** The documented shape, with the config's numbers put in. */
function expectedShape(shape: string, c: ModelConfig, T: number, S: number): number[] {
  const sizes: Record<string, number> = {
    T, S, hidden: c.hiddenSize, heads: c.numHeads, kvHeads: c.numKvHeads, headDim: c.headDim,
    inter: c.intermediateSize, experts: c.numExperts ?? -1, k: c.numExpertsPerTok ?? -1, vocab: c.vocabSize,
  };
  return shape.replace(/[[\]\s]/g, '').split(',').map((s) => sizes[s]!);
}

describe('the table of hook points', () => {
  it.each(['mistral-tiny', 'mixtral-tiny', 'mistral-nowindow'])('%s fires exactly the documented names, in order, with their shapes', (name) => {
    const model = load(name);
    const c = model.config;
    const fired: Array<{ name: string; shape: number[]; dtype: string }> = [];
    const T = IDS_A.length;
    disposeResult(runWithHooks(model, IDS_A, { '*': (t, n) => { fired.push({ name: n, shape: t.shape, dtype: t.dtype }); } }));
    expect(fired.map((f) => f.name)).toEqual(hookNames(c));
    const kind = c.numExperts === null ? 'dense' : 'moe';
    const templates = HOOK_POINTS.filter((p) => (p.only === undefined || p.only === kind) && p.optIn === undefined);
    for (const f of fired) {
      const info = templates.find((p) => p.name === f.name.replace(/^blocks\.\d+\./, 'blocks.{l}.'))!;
      expect(f.shape, f.name).toEqual(expectedShape(info.shape, c, T, T));
      expect(f.dtype, f.name).toBe(info.dtype ?? 'float32');
    }
    // Every template fires for this kind of model: 24 names minus the other kind's 3.
    expect(new Set(fired.map((f) => f.name.replace(/^blocks\.\d+\./, 'blocks.{l}.'))).size).toBe(templates.length);
    expect(templates.length).toBe(21);
  });

  it('with a rolling cache, S is the W slots plus the new keys, and lastOnly logits are [1, vocab]', () => {
    const model = load('mistral-tiny');
    const c = model.config;
    const cache = model.createCache();
    disposeResult(model.forward(IDS_A.slice(0, 10), { cache }));
    const shapes = new Map<string, number[]>();
    disposeResult(runWithHooks(model, IDS_A.slice(10), { '*': (t, n) => { shapes.set(n, t.shape); } }, { cache, lastOnly: true }));
    cache.dispose();
    expect(shapes.get('blocks.0.attn.hook_pattern')).toEqual([c.numHeads, 2, c.slidingWindow! + 2]);
    expect(shapes.get('blocks.1.attn.hook_rot_k')).toEqual([2, c.numKvHeads, c.headDim]);
    expect(shapes.get('hook_logits')).toEqual([1, c.vocabSize]);
  });

  it('docs/hooks.md lists exactly HOOK_POINTS', () => {
    const doc = fs.readFileSync(path.join(ROOT, 'docs/hooks.md'), 'utf8');
    const rows = [...doc.matchAll(/^\| `([^`]+)` \| `([^`]+)`( int32)? \| (both|Mistral|Mixtral) \| (.+) \|$/gm)];
    expect(rows.map((r) => ({ name: r[1], shape: r[2], dtype: r[3] ? 'int32' : undefined, models: r[4], what: r[5] }))).toEqual(
      HOOK_POINTS.map((p) => ({
        name: p.name, shape: p.shape, dtype: p.dtype, what: p.what,
        models: p.only === 'dense' ? 'Mistral' : p.only === 'moe' ? 'Mixtral' : 'both',
      })));
  });

  it('rejects unknown names before running, saying why', () => {
    const before = tf.memory().numTensors;
    const dense = load('mistral-tiny');
    const moe = load('mixtral-tiny');
    const noop = () => undefined;
    expect(() => runWithHooks(dense, IDS_A, { 'blocks.0.attn.hook_patern': noop }))
      .toThrow(new HookError('unknown hook "blocks.0.attn.hook_patern": no such hook point (see docs/hooks.md)'));
    expect(() => runWithHooks(dense, IDS_A, { 'blocks.3.hook_resid_pre': noop }))
      .toThrow(new HookError('unknown hook "blocks.3.hook_resid_pre": layer 3 does not exist (the model has 3 layers)'));
    expect(() => runWithCache(dense, IDS_A, { names: ['blocks.0.moe.hook_router_logits'] }))
      .toThrow(new HookError('unknown hook "blocks.0.moe.hook_router_logits": it exists only in Mixtral (mixture-of-experts) layers'));
    expect(() => runWithCache(moe, IDS_A, { hooks: { 'blocks.1.mlp.hook_post': noop } }))
      .toThrow(new HookError('unknown hook "blocks.1.mlp.hook_post": it exists only in dense layers; Mixtral layers have moe.hook_*'));
    expect(tf.memory().numTensors).toBe(before);
  });
});

/** Golden debug tensor → [hook, our tensor in the reference's layout]. */
const DEBUG: Record<string, [string, (t: tf.Tensor) => tf.Tensor]> = {
  attn_norm: ['blocks.0.ln1.hook_normalized', (t) => t],
  q: ['blocks.0.attn.hook_q', (t) => tf.reshape(t, [t.shape[0]!, -1])],
  k: ['blocks.0.attn.hook_k', (t) => tf.reshape(t, [t.shape[0]!, -1])],
  v: ['blocks.0.attn.hook_v', (t) => tf.reshape(t, [t.shape[0]!, -1])],
  q_rope: ['blocks.0.attn.hook_rot_q', (t) => tf.transpose(t, [1, 0, 2])],
  k_rope: ['blocks.0.attn.hook_rot_k', (t) => tf.transpose(t, [1, 0, 2])],
  attn_probs: ['blocks.0.attn.hook_pattern', (t) => t],
  attn_out: ['blocks.0.attn.hook_z', (t) => tf.reshape(t, [t.shape[0]!, -1])],
  attn_residual: ['blocks.0.hook_resid_mid', (t) => t],
  ffn_norm: ['blocks.0.ln2.hook_normalized', (t) => t],
  ffn_out: ['blocks.0.hook_mlp_out', (t) => t],
};

describe('hook values match the golden tensors (max |Δ| ≤ 5e-5)', () => {
  const measured: string[] = [];
  afterAll(() => console.log(`hook values vs golden, max |Δ|:\n${measured.join('\n')}`));

  it.each(['mistral-tiny', 'mixtral-tiny', 'mixtral-tiny-native'])('%s', (name) => {
    const model = load(name);
    const ref = Reference.open(refFile(name.replace('-native', '')));
    const p = ref.prompts[0]!;
    const c = model.config;
    const before = tf.memory().numTensors;
    const { result, cache } = runWithCache(model, p.input_ids);
    const diffs: Record<string, number> = {};
    const check = (kind: string, ours: tf.Tensor, refName: string) => {
      const want = ref.tensor(refName);
      expect(ours.shape, kind).toEqual(want.shape);
      const d = maxAbsDiff(ours.dataSync(), want.data);
      diffs[kind] = Math.max(diffs[kind] ?? 0, d);
      expect(d, kind).toBeLessThanOrEqual(5e-5);
    };
    for (const [kind, refName] of Object.entries(p.tensors.debug_layer0!)) {
      const [hook, layout] = DEBUG[kind]!;
      const ours = tf.tidy(() => layout(cache.get(hook)));
      check(kind, ours, refName);
      ours.dispose();
    }
    expect(Object.keys(diffs).sort()).toEqual(Object.keys(DEBUG).sort());
    check('embeddings', cache.get('hook_embed'), p.tensors.embeddings!);
    p.tensors.layer_out!.forEach((refName, l) => check('layer_out', cache.get(`blocks.${l}.hook_resid_post`), refName));
    // resid_pre of layer l+1 is the output of layer l.
    for (let l = 1; l < c.numLayers; l++) {
      expect(cache.get(`blocks.${l}.hook_resid_pre`).dataSync()).toEqual(cache.get(`blocks.${l - 1}.hook_resid_post`).dataSync());
    }
    check('final_norm', cache.get('ln_final.hook_normalized'), p.tensors.final_norm!);
    check('logits', cache.get('hook_logits'), p.tensors.logits);
    (p.tensors.router_logits ?? []).forEach((refName, l) => {
      check('router_logits', cache.get(`blocks.${l}.moe.hook_router_logits`), refName);
      // Expert choices exact: the reference's own logits, routed, give our hook's indices.
      const want = ref.tensor(refName);
      const E = c.numExperts!;
      const k = c.numExpertsPerTok!;
      const got = cache.get(`blocks.${l}.moe.hook_expert_indices`).dataSync();
      for (let t = 0; t < p.input_ids.length; t++) {
        expect(Array.from(got.subarray(t * k, (t + 1) * k))).toEqual(routeToken(want.data.subarray(t * E, (t + 1) * E), k).experts);
      }
    });
    if (c.numExperts !== null) expect(diffs.router_logits).toBeDefined();
    cache.dispose();
    disposeResult(result);
    ref.close();
    expect(tf.memory().numTensors).toBe(before);
    measured.push(`  ${name.padEnd(20)} ${Object.entries(diffs).map(([k, d]) => `${k} ${d.toExponential(1)}`).join(', ')}`);
  });
});

describe('caching', () => {
  it('a capture-all cache holds every hook point, and disposing it leaves no tensor behind', () => {
    for (const name of ['mistral-tiny', 'mixtral-tiny']) {
      const model = load(name);
      const before = tf.memory().numTensors;
      const { result, cache } = runWithCache(model, IDS_A);
      expect(cache.names()).toEqual(hookNames(model.config));
      // The cached logits are the result's logits.
      expect(cache.get('hook_logits').dataSync()).toEqual(result.logits.dataSync());
      const stacked = cache.stack('hook_resid_post', model.config.numLayers);
      expect(stacked.shape).toEqual([model.config.numLayers, IDS_A.length, model.config.hiddenSize]);
      stacked.dispose();
      cache.dispose();
      disposeResult(result);
      expect(tf.memory().numTensors).toBe(before);
    }
  });

  it('selects names by list or predicate, and get() of an uncached name says what it has', () => {
    const model = load('mistral-tiny');
    const before = tf.memory().numTensors;
    const a = runWithCache(model, IDS_A, { names: (n) => n.endsWith('hook_pattern') });
    expect(a.cache.names()).toEqual(['blocks.0.attn.hook_pattern', 'blocks.1.attn.hook_pattern', 'blocks.2.attn.hook_pattern']);
    expect(() => a.cache.get('hook_embed')).toThrow(new HookError('no activation "hook_embed" captured (have 3: ' +
      'blocks.0.attn.hook_pattern, blocks.1.attn.hook_pattern, blocks.2.attn.hook_pattern)'));
    a.cache.dispose();
    disposeResult(a.result);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a hook that throws mid-forward leaks nothing, nor does a replacement of the wrong shape', () => {
    const model = load('mixtral-tiny');
    const before = tf.memory().numTensors;
    expect(() => runWithCache(model, IDS_A, { hooks: { 'blocks.1.hook_resid_mid': () => { throw new Error('boom'); } } })).toThrow('boom');
    expect(() => runWithHooks(model, IDS_A, { 'blocks.0.hook_attn_out': (t) => tf.zeros([t.shape[0]!, 3]) }))
      .toThrow(new HookError(`hook blocks.0.hook_attn_out returned shape [${IDS_A.length},3], expected [${IDS_A.length},64]`));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('on resident weights too, where the layers before the hook ran on arrays: a throw leaks nothing', () => {
    const model = Transformer.load(modelDir('mistral-tiny'), { weights: 'resident' });
    try {
      const before = tf.memory().numTensors;
      // only layer 1 is watched: layer 0 runs on arrays, layer 1 gets a tensor made from them
      expect(() => runWithHooks(model, IDS_A, { 'blocks.1.hook_resid_mid': () => { throw new Error('boom'); } })).toThrow('boom');
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      model.dispose();
    }
  });
});

describe('patching and ablation', () => {
  it.each(['mistral-tiny', 'mixtral-tiny'])('%s: patching with its own value leaves the logits bitwise unchanged', (name) => {
    const model = load(name);
    const before = tf.memory().numTensors;
    const clean = runWithCache(model, IDS_A);
    const want = clean.result.logits.dataSync();
    // Every hook point at once, each replaced by its own cached value.
    const all = runWithHooks(model, IDS_A, { '*': (_t, n) => tf.clone(clean.cache.get(n)) });
    expect(all.logits.dataSync()).toEqual(want);
    for (const hook of ['blocks.1.hook_resid_pre', 'blocks.0.attn.hook_pattern', 'blocks.2.hook_mlp_out']) {
      const r = runWithHooks(model, IDS_A, { [hook]: replaceWith(clean.cache.get(hook)) });
      expect(r.logits.dataSync()).toEqual(want);
      disposeResult(r);
    }
    // The caller's tensors survive the forward that used them.
    expect(clean.cache.get('blocks.1.hook_resid_pre').isDisposed).toBe(false);
    disposeResult(all);
    clean.cache.dispose();
    disposeResult(clean.result);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('patching the whole residual with another prompt\'s gives that prompt\'s logits bitwise', () => {
    const model = load('mistral-tiny');
    const a = runWithCache(model, IDS_A, { names: ['blocks.1.hook_resid_pre'] });
    const b = runWithCache(model, IDS_B, { names: ['blocks.1.hook_resid_pre'] });
    const patched = runWithHooks(model, IDS_A, { 'blocks.1.hook_resid_pre': replaceWith(b.cache.get('blocks.1.hook_resid_pre')) });
    expect(patched.logits.dataSync()).toEqual(b.result.logits.dataSync());
    expect(maxAbsDiff(patched.logits.dataSync(), a.result.logits.dataSync())).toBeGreaterThan(0.1);
    for (const r of [a, b]) { r.cache.dispose(); disposeResult(r.result); }
    disposeResult(patched);
  });

  it.each(['mistral-tiny', 'mixtral-tiny'])('%s: patching position p from another prompt changes positions ≥ p only (causality)', (name) => {
    const model = load(name);
    const before = tf.memory().numTensors;
    const hook = 'blocks.1.hook_resid_mid';
    const a = runWithCache(model, IDS_A, { names: [hook] });
    const b = runWithCache(model, IDS_B, { names: [hook] });
    const p = 6;
    const { result, cache } = runWithCache(model, IDS_A, { names: [hook], hooks: { [hook]: patchPositions(b.cache.get(hook), [p]) } });
    // The cache holds the patched value: row p from B, the other rows A's own.
    const V = model.config.vocabSize;
    const H = model.config.hiddenSize;
    const rows = (t: tf.Tensor, i: number) => t.dataSync().subarray(i * H, (i + 1) * H);
    expect(rows(cache.get(hook), p)).toEqual(rows(b.cache.get(hook), p));
    expect(rows(cache.get(hook), p - 1)).toEqual(rows(a.cache.get(hook), p - 1));
    const got = result.logits.dataSync();
    const clean = a.result.logits.dataSync();
    expect(got.subarray(0, p * V)).toEqual(clean.subarray(0, p * V));
    for (const t of [p, p + 1, IDS_A.length - 1]) {
      expect(maxAbsDiff(got.subarray(t * V, (t + 1) * V), clean.subarray(t * V, (t + 1) * V)), `position ${t}`).toBeGreaterThan(1e-3);
    }
    for (const r of [a, b, { result, cache }]) { r.cache.dispose(); disposeResult(r.result); }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('zeroing a head\'s z removes exactly its o_proj contribution and changes the logits', () => {
    const model = load('mistral-tiny');
    const before = tf.memory().numTensors;
    const { numHeads: Hn, headDim: D } = model.config;
    const names = ['blocks.1.attn.hook_z', 'blocks.1.hook_attn_out'];
    const clean = runWithCache(model, IDS_A, { names });
    const head = 2;
    const ablated = runWithCache(model, IDS_A, { names, hooks: { 'blocks.1.attn.hook_z': zeroHead(head) } });
    const z = ablated.cache.get('blocks.1.attn.hook_z').arraySync() as number[][][];
    const zClean = clean.cache.get('blocks.1.attn.hook_z').arraySync() as number[][][];
    for (let t = 0; t < IDS_A.length; t++) {
      for (let h = 0; h < Hn; h++) expect(z[t]![h]).toEqual(h === head ? new Array(D).fill(0) : zClean[t]![h]);
    }
    // attn_out(clean) − attn_out(ablated) = o_proj(z with only head 2 kept).
    const diff = tf.tidy(() => {
      const onlyHead = tf.sub(clean.cache.get('blocks.1.attn.hook_z'), ablated.cache.get('blocks.1.attn.hook_z'));
      const contribution = linear(tf.reshape(onlyHead, [IDS_A.length, Hn * D]) as tf.Tensor2D, model.weights.layer(1).attn.o);
      const removed = tf.sub(clean.cache.get('blocks.1.hook_attn_out'), ablated.cache.get('blocks.1.hook_attn_out'));
      return tf.max(tf.abs(tf.sub(removed, contribution))).dataSync()[0]!;
    });
    expect(diff).toBeLessThan(1e-5);
    expect(maxAbsDiff(ablated.result.logits.dataSync(), clean.result.logits.dataSync())).toBeGreaterThan(1e-2);
    for (const r of [clean, ablated]) { r.cache.dispose(); disposeResult(r.result); }
    expect(tf.memory().numTensors).toBe(before);
  });

  it('zeroHead on the pattern and mapActivation work on any hook; bad heads and positions are HookErrors', () => {
    const model = load('mistral-tiny');
    const before = tf.memory().numTensors;
    const { result, cache } = runWithCache(model, IDS_A, {
      names: ['blocks.0.attn.hook_pattern', 'blocks.0.hook_resid_mid'],
      hooks: { 'blocks.0.attn.hook_pattern': zeroHead(1), 'blocks.0.hook_resid_mid': mapActivation((t) => tf.mul(t, 0)) },
    });
    const pattern = cache.get('blocks.0.attn.hook_pattern').arraySync() as number[][][];
    expect(pattern[1]!.flat().every((x) => x === 0)).toBe(true);
    expect(pattern[0]![0]![0]).toBe(1);
    expect(cache.get('blocks.0.hook_resid_mid').dataSync().every((x) => x === 0)).toBe(true);
    cache.dispose();
    disposeResult(result);
    expect(() => runWithHooks(model, IDS_A, { 'blocks.0.attn.hook_z': zeroHead(4) }))
      .toThrow(new HookError('head 4 is outside [0, 4) for blocks.0.attn.hook_z [12,4,16]'));
    expect(() => runWithHooks(model, IDS_A, { 'blocks.0.hook_resid_pre': zeroHead(0) }))
      .toThrow(/blocks.0.hook_resid_pre has no head axis/);
    const other = tf.zeros([3, 64]);
    expect(() => runWithHooks(model, IDS_A, { 'blocks.0.hook_resid_pre': patchPositions(other, [0]) }))
      .toThrow(new HookError('patch for blocks.0.hook_resid_pre has shape [3,64], the activation has [12,64]'));
    other.dispose();
    expect(tf.memory().numTensors).toBe(before);
  });

  it('replacing moe.hook_expert_indices re-routes the tokens (Mixtral)', () => {
    const model = load('mixtral-tiny');
    const before = tf.memory().numTensors;
    const T = IDS_A.length;
    const { result: forced, routing: forcedRouting } = forwardWithRouting(model, IDS_A, { hooks: {
      'blocks.0.moe.hook_expert_indices': () => tf.tidy(() => tf.tile(tf.tensor2d([[3, 1]], [1, 2], 'int32'), [T, 1])),
    } });
    expect(Array.from(forcedRouting[0]!.experts)).toEqual(Array.from({ length: T }, () => [3, 1]).flat());
    const { result: plain, routing: plainRouting } = forwardWithRouting(model, IDS_A);
    expect(Array.from(plainRouting[0]!.experts)).not.toEqual(Array.from(forcedRouting[0]!.experts));
    expect(maxAbsDiff(forced.logits.dataSync(), plain.logits.dataSync())).toBeGreaterThan(1e-2);
    disposeResult(forced);
    disposeResult(plain);
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('on the wasm backend', () => {
  it('patching, ablation and a capture-all cache behave the same, without leaks', async () => {
    await useBackend('wasm');
    try {
      const model = Transformer.load(modelDir('mixtral-tiny'));
      const before = tf.memory().numTensors;
      const hook = 'blocks.0.hook_resid_post';
      const a = runWithCache(model, IDS_A);
      expect(a.cache.names()).toEqual(hookNames(model.config));
      const b = runWithCache(model, IDS_B, { names: [hook] });
      const p = 4;
      const V = model.config.vocabSize;
      const patched = runWithHooks(model, IDS_A, { [hook]: patchPositions(b.cache.get(hook), [p]) });
      const clean = a.result.logits.dataSync();
      expect(patched.logits.dataSync().subarray(0, p * V)).toEqual(clean.subarray(0, p * V));
      expect(maxAbsDiff(patched.logits.dataSync().subarray(p * V), clean.subarray(p * V))).toBeGreaterThan(1e-3);
      const same = runWithHooks(model, IDS_A, { '*': (_t, n) => tf.clone(a.cache.get(n)) });
      expect(same.logits.dataSync()).toEqual(clean);
      const ablated = runWithHooks(model, IDS_A, { 'blocks.2.attn.hook_z': zeroHead(0) });
      expect(maxAbsDiff(ablated.logits.dataSync(), clean)).toBeGreaterThan(1e-3);
      for (const r of [a, b]) { r.cache.dispose(); disposeResult(r.result); }
      for (const r of [patched, same, ablated]) disposeResult(r);
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    } finally {
      await useBackend('cpu');
    }
  });
});
