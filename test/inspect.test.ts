/**
 * The inspection helpers: logit lens, attention patterns and entropy, Mixtral routing
 * table and load, and the SVG / PNG pictures.
 */
import * as fs from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import { linear } from '../src/kernels/linear.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { runWithCache } from '../src/inspect/activations.js';
import { lensHookNames, logitLens } from '../src/inspect/lens.js';
import { maxAbsDiff } from '../src/inspect/parity.js';
import { attentionEntropy, attentionPattern, entropy, headOf } from '../src/inspect/patterns.js';
import { attentionPicture, logitLensPicture, routerPicture, tokenLabel } from '../src/inspect/pictures.js';
import { expertLoad, routerProbs, routingFromCache, routingTable } from '../src/inspect/routing.js';
import { colour, escapeXml, heatmapSvg, svgToPng } from '../src/inspect/svg.js';
import { readableJson } from '../src/inspect/trace.js';
import { useBackend } from '../src/kernels/backend.js';
import { HookError } from '../src/model/hooks.js';
import type { Routing } from '../src/model/moe.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { modelDir, refFile, sharedModels } from './helpers/fixtures.js';

const load = sharedModels();
beforeAll(() => useBackend('cpu'));

const IDS = [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913, 118];

/** The demo models' character vocabulary, read from tokenizer.json (no tokenizer code needed). */
function demoVocab(name: string): { encode: (s: string) => number[]; piece: (id: number) => string } {
  const vocab = JSON.parse(fs.readFileSync(`${modelDir(name)}/tokenizer.json`, 'utf8')).model.vocab as Record<string, number>;
  const pieces = new Map(Object.entries(vocab).map(([p, id]) => [id, p]));
  return { encode: (s) => [1, ...[...s].map((ch) => vocab[ch]!)], piece: (id) => pieces.get(id)! };
}

/** Width and height from a PNG's IHDR chunk. */
function pngSize(png: Uint8Array): [number, number] {
  const view = new DataView(png.buffer, png.byteOffset, png.byteLength);
  return [view.getUint32(16), view.getUint32(20)];
}

describe('logit lens', () => {
  it.each(['mistral-tiny', 'mixtral-tiny'])('%s: the last row is the model\'s own prediction; rows are embed, 0 … L−1', (name) => {
    const model = load(name);
    const before = tf.memory().numTensors;
    const lens = logitLens(model, IDS, { topK: 3 });
    expect(tf.memory().numTensors).toBe(before);
    const L = model.config.numLayers;
    expect(lens.rows.map((r) => r.label)).toEqual(['embed', ...Array.from({ length: L }, (_, l) => String(l))]);
    expect(lens.rows.map((r) => r.layer)).toEqual([-1, ...Array.from({ length: L }, (_, l) => l)]);
    const result = model.forward(IDS);
    const probs = tf.tidy(() => tf.softmax(result.logits).arraySync()) as number[][];
    disposeResult(result);
    const last = lens.rows[L]!;
    IDS.forEach((_, t) => {
      const row = probs[t]!;
      const order = row.map((_, i) => i).sort((a, b) => row[b]! - row[a]!);
      const cell = last.positions[t]!;
      expect(cell.ids).toEqual(order.slice(0, 3));
      expect(cell.probs).toEqual(cell.ids.map((id) => Math.fround(row[id]!)));
      expect(lens.finalIds[t]).toBe(order[0]);
      expect(cell.finalProb).toBe(cell.probs[0]);
    });
    // Every row: probabilities sorted, and finalProb is that row's probability of the final id.
    for (const r of lens.rows) {
      for (const c of r.positions) {
        expect(c.probs[0]!).toBeGreaterThanOrEqual(c.probs[1]!);
        expect(c.finalProb).toBeLessThanOrEqual(c.probs[0]!);
      }
    }
  });

  it('reads the embed row through the final norm too, and accepts a cache it does not own', () => {
    const model = load('mistral-tiny');
    const { result, cache } = runWithCache(model, IDS, { names: lensHookNames(model.config.numLayers) });
    const lens = logitLens(model, cache, { topK: 2 });
    // By hand for the embeddings at position 4: rmsNorm → lm_head → argmax.
    const byHand = tf.tidy(() => {
      const x = tf.slice(cache.get('hook_embed'), [4, 0], [1, -1]);
      const normed = tf.mul(tf.mul(x, tf.rsqrt(tf.add(tf.mean(tf.square(x), -1, true), model.config.rmsNormEps))), model.weights.finalNorm());
      return tf.argMax(linear(normed as tf.Tensor2D, model.weights.lmHead()), 1).dataSync()[0]!;
    });
    expect(lens.rows[0]!.positions[4]!.ids[0]).toBe(byHand);
    expect(cache.names()).toHaveLength(model.config.numLayers + 1); // still usable: the lens did not dispose it
    cache.dispose();
    disposeResult(result);
  });

  it('worked example: mistral-demo on <s>47+38= says "7" until the last layer commits to "8"', () => {
    const model = load('mistral-demo');
    const v = demoVocab('mistral-demo');
    const lens = logitLens(model, v.encode('47+38='), { topK: 2 });
    const lastTop = lens.rows.map((r) => v.piece(r.positions.at(-1)!.ids[0]!));
    expect(lastTop.slice(1)).toEqual(['7', '7', '7', '8']);
    expect(lens.rows.at(-1)!.positions.at(-1)!.probs[0]).toBeGreaterThan(0.99);
    expect(lens.rows.map((r) => r.positions.at(-1)!.finalProb).slice(1).map((p) => Number(p.toFixed(2)))).toEqual([0.17, 0.19, 0.35, 1]);
  });

  it('works with streamed weights and leaves them released', () => {
    const model = Transformer.load(modelDir('mistral-tiny'), { weights: 'stream', kernels: 'tfjs' });
    const eager = load('mistral-tiny');
    const before = tf.memory().numTensors;
    const a = logitLens(model, IDS);
    expect(tf.memory().numTensors).toBe(before);
    expect(a).toEqual(logitLens(eager, IDS));
    model.dispose();
  });
});

describe('attention patterns', () => {
  it('one head\'s pattern is the golden attn_probs of that head', () => {
    const model = load('mistral-tiny');
    const ref = Reference.open(refFile('mistral-tiny'));
    const p = ref.prompts[0]!;
    const want = ref.tensor('p0.debug.layer0.attn_probs'); // [heads, T, T]
    const T = p.input_ids.length;
    for (const head of [0, 3]) {
      const got = attentionPattern(model, p.input_ids, 0, head);
      expect(got).toHaveLength(T);
      expect(maxAbsDiff(got.flat(), want.data.subarray(head * T * T, (head + 1) * T * T))).toBeLessThan(5e-5);
      for (const row of got) expect(row.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 5);
    }
    ref.close();
  });

  it('reads from a cache, and names an impossible head', () => {
    const model = load('mistral-tiny');
    const { result, cache } = runWithCache(model, IDS, { names: ['blocks.2.attn.hook_pattern'] });
    expect(attentionPattern(model, cache, 2, 1)).toEqual(headOf(cache.get('blocks.2.attn.hook_pattern'), 1));
    expect(() => attentionPattern(model, cache, 2, 9)).toThrow(new HookError('head 9 is outside [0, 4)'));
    cache.dispose();
    disposeResult(result);
  });

  it('entropy: 0 on one key, ln n spread over n, and the first query of a causal pattern has 0', () => {
    expect(entropy([0, 1, 0])).toBe(0);
    expect(entropy([0.25, 0.25, 0.25, 0.25])).toBeCloseTo(Math.log(4), 12);
    expect(entropy([0.5, 0.5, 0])).toBeCloseTo(Math.log(2), 12);
    const pattern = tf.tensor3d([[[1, 0], [0.5, 0.5]], [[1, 0], [1, 0]]]); // [heads 2, T 2, S 2]
    const h = attentionEntropy(pattern);
    expect(h.perRow).toEqual([[0, entropy([0.5, 0.5])], [0, 0]]);
    expect(h.perHead).toEqual([Math.log(2) / 2, 0]);
    pattern.dispose();
    // Golden pattern: query 0 sees only BOS, so every head's first row has entropy 0, and
    // no row exceeds ln(visible keys) = ln(min(i + 1, W)).
    const ref = Reference.open(refFile('mistral-tiny'));
    const probs = ref.tensor('p0.debug.layer0.attn_probs');
    ref.close();
    const t = tf.tensor3d(probs.data, probs.shape as [number, number, number]);
    const golden = attentionEntropy(t);
    t.dispose();
    for (const rows of golden.perRow) {
      expect(rows[0]).toBe(0);
      rows.forEach((x, i) => expect(x).toBeLessThanOrEqual(Math.log(Math.min(i + 1, 8)) + 1e-6));
    }
  });
});

describe('Mixtral routing', () => {
  /** The worked example of routing.ts: k = 2 of 4 experts, 3 tokens. */
  const example: Routing = {
    logits: new Float32Array(12),
    experts: Int32Array.from([2, 0, 3, 2, 0, 3]),
    weights: Float32Array.from([0.71, 0.29, 0.55, 0.45, 0.8, 0.2]),
    numExperts: 4,
    k: 2,
  };

  it('worked example: table and load', () => {
    expect(routingTable([example])[0]!.map((r) => [r.position, r.experts, r.weights.map((w) => Number(w.toFixed(2)))])).toEqual([
      [0, [2, 0], [0.71, 0.29]], [1, [3, 2], [0.55, 0.45]], [2, [0, 3], [0.8, 0.2]],
    ]);
    const load = expertLoad(example);
    expect(load.tokens).toEqual([2, 0, 2, 2]);
    expect(load.share.map((s) => Number(s.toFixed(2)))).toEqual([0.33, 0, 0.33, 0.33]);
    expect(load.weight.map((w) => Number(w.toFixed(2)))).toEqual([1.09, 0, 1.16, 0.75]);
  });

  it.each(['mixtral-tiny', 'mixtral-demo'])('%s: the hooks, the table and the load agree with forward().routing', (name) => {
    const model = load(name);
    const { numLayers: L, numExperts: E, numExpertsPerTok: k } = model.config;
    const before = tf.memory().numTensors;
    const { result, cache } = runWithCache(model, IDS.map((id) => id % model.config.vocabSize), { names: (n) => n.includes('.moe.') });
    const routing = result.routing!;
    expect(routing).toHaveLength(L);
    expect(routingFromCache(cache, model.config)).toEqual(routing);
    const table = routingTable(routing);
    for (let l = 0; l < L; l++) {
      const r = routing[l]!;
      table[l]!.forEach((row, t) => {
        expect(row.experts).toEqual(routeTokenExperts(r.logits.subarray(t * E!, (t + 1) * E!), k!));
        expect(row.weights.reduce((a, b) => a + b, 0)).toBeCloseTo(1, 6);
      });
      const load = expertLoad(r);
      expect(load.tokens.reduce((a, b) => a + b, 0)).toBe(IDS.length * k!);
      expect(load.weight.reduce((a, b) => a + b, 0)).toBeCloseTo(IDS.length, 5);
      // Load counted from the table by hand.
      const byHand = new Array<number>(E!).fill(0);
      for (const row of table[l]!) for (const e of row.experts) byHand[e]! += 1;
      expect(load.tokens).toEqual(byHand);
      // Router probabilities: softmax rows, and the chosen weights are them renormalised.
      const probs = routerProbs(r);
      table[l]!.forEach((row, t) => {
        const p = row.experts.map((e) => probs[t * E! + e]!);
        const s = p.reduce((a, b) => a + b, 0);
        row.weights.forEach((w, j) => expect(w).toBeCloseTo(p[j]! / s, 5));
      });
    }
    cache.dispose();
    disposeResult(result);
    expect(tf.memory().numTensors).toBe(before);
    expect(() => routingFromCache(cache, load('mistral-tiny').config)).toThrow(HookError);
  });
});

/** Top-k experts by logit, ties to the lower index (independent of moe.ts). */
function routeTokenExperts(logits: ArrayLike<number>, k: number): number[] {
  return Array.from(logits, (x, e) => [x, e] as const).sort((a, b) => b[0] - a[0] || a[1] - b[1]).slice(0, k).map(([, e]) => e);
}

describe('pictures', () => {
  it('heatmapSvg draws one rect per cell, blank for NaN, escapes labels, and has a legend', () => {
    const svg = heatmapSvg({
      title: 'A <test> & "more"',
      panels: [{ title: 'p', rowLabels: ['a', 'b'], colLabels: ['x', 'y', 'z'], values: [0, 0.5, 1, NaN, 0.25, 2], text: (r, c) => (r === 0 && c === 2 ? 'hi' : undefined) }],
      scale: { min: 0, max: 1, label: 'prob' },
    });
    expect(svg.startsWith('<svg xmlns="http://www.w3.org/2000/svg"')).toBe(true);
    expect(svg).toContain('A &lt;test&gt; &amp; &quot;more&quot;');
    expect(svg.match(/<rect [^>]*fill="#[0-9a-f]{6}"><title>/g)).toHaveLength(5);
    expect(svg.match(/fill="#fff" stroke="#eee"/g)).toHaveLength(1); // the NaN cell
    expect(svg).toContain(`fill="${colour(1)}"><title>b × z: 2</title>`); // clamped to the scale
    expect(svg).toContain('>hi</text>');
    expect(svg).toContain('linearGradient');
    expect(svg).toContain('>prob</text>');
    expect(escapeXml(`<'&">`)).toBe('&lt;&apos;&amp;&quot;&gt;');
    expect([colour(0), colour(1)]).toEqual(['#440154', '#fde725']);
  });

  it('renders to a PNG of the SVG\'s size', () => {
    const svg = heatmapSvg({ title: 't', panels: [{ title: '', rowLabels: ['a'], colLabels: ['b'], values: [0.5] }], scale: { min: 0, max: 1, label: 'v' } });
    const png = svgToPng(svg);
    expect(Array.from(png.subarray(0, 8))).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    const [w, h] = [Number(/width="(\d+)"/.exec(svg)![1]), Number(/height="(\d+)"/.exec(svg)![1])];
    expect(pngSize(png)).toEqual([w, h]);
  });

  it('tokenLabel makes whitespace visible and keeps labels short', () => {
    expect(tokenLabel(' ')).toBe('␣');
    expect(tokenLabel('a\nb\t')).toBe('a↵b⇥');
    expect(tokenLabel('\x01')).toBe('\\x01');
    expect(tokenLabel('▁understanding')).toBe('▁unders…'); // 8 characters with the ellipsis
    expect(tokenLabel('<s>')).toBe('<s>');
  });

  it('attention: a panel per head, masked keys blank (causal + window), labels from the tokens', () => {
    const model = load('mistral-tiny'); // W = 8
    const ids = Array.from({ length: 10 }, (_, t) => 1 + t * 37);
    const { result, cache } = runWithCache(model, ids, { names: ['blocks.0.attn.hook_pattern', 'blocks.0.attn.hook_attn_scores'] });
    const svg = attentionPicture(cache.get('blocks.0.attn.hook_pattern'), {
      layer: 0, queries: ids.map(String), scores: cache.get('blocks.0.attn.hook_attn_scores'),
    });
    // Visible pairs per head: Σ_i min(i + 1, 8) = 1+…+8 + 8 + 8 = 52 of 100.
    expect(svg.match(/<title>/g)).toHaveLength(4 * 52);
    expect(svg.match(/stroke="#eee"/g)).toHaveLength(4 * 48);
    for (const h of [0, 1, 2, 3]) expect(svg).toContain(`>head ${h}</text>`);
    expect(svg).toContain('>9 334</text>');
    cache.dispose();
    disposeResult(result);
  });

  it('router: a panel per layer, the chosen experts outlined with their weights', () => {
    const model = load('mixtral-tiny');
    const result = model.forward(IDS);
    const svg = routerPicture(result.routing!, IDS.map(String));
    const { numLayers: L, numExperts: E, numExpertsPerTok: k } = model.config;
    expect(svg.match(/stroke="#e8175d"/g)).toHaveLength(L * IDS.length * k!);
    expect(svg.match(/<title>/g)).toHaveLength(L * IDS.length * E!);
    const w = result.routing![0]!.weights[0]!;
    expect(svg).toContain(`>${w.toFixed(2).replace(/^0/, '')}</text>`);
    disposeResult(result);
  });

  it('logit lens: the grid writes each cell\'s top-1 token', () => {
    const model = load('mistral-demo');
    const v = demoVocab('mistral-demo');
    const ids = v.encode('47+38=');
    const lens = logitLens(model, ids);
    const svg = logitLensPicture(lens, ids.map((id) => tokenLabel(v.piece(id))), v.piece);
    expect(svg.match(/<title>/g)).toHaveLength((model.config.numLayers + 1) * ids.length);
    expect(svg).toContain('>layer 3 × 6 =: 1</title>');
    expect(svg).toContain('>&lt;/s&gt;</text>'); // a predicted "</s>", escaped
    const png = svgToPng(svg);
    expect(pngSize(png)[0]).toBeGreaterThan(300);
  });

  it('layers.json is written readably: flat arrays on one line, and it parses back to the same value', () => {
    const value = { a: [1, 2.5, -3e-7], s: ['x, y', '"]', '\n'], nested: [{ b: [] as number[], c: null, d: undefined }], e: {} };
    const text = readableJson(value);
    expect(JSON.parse(text)).toEqual(JSON.parse(JSON.stringify(value)));
    expect(text).toContain('"a": [1, 2.5, -3e-7]');
    expect(text).toContain('"s": ["x, y", "\\"]", "\\n"]');
  });
});
