/**
 * Patching sweeps: with clean and corrupted prompts that differ at one position, patching
 * resid_pre of layer 0 restores the clean metric fully at that position and not at all
 * elsewhere; the grids have the documented layouts; meanAblate and patchHead do what they
 * say; nothing leaks.
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { disposeResult, runWithCache, runWithHooks } from '../src/inspect/activations.js';
import { replaceWith } from '../src/inspect/patching.js';
import { logitDiffMetric, meanAblate, patchHead, patchSweep, sweepPicture } from '../src/inspect/sweep.js';
import { withModel } from './helpers/fixtures.js';

const PAIRS: Record<string, { clean: number[]; corrupt: number[]; at: number; answer: number; wrong: number }> = {
  // <s>47+38= vs <s>47+39=: the demo answers 85 vs 86
  'mistral-demo': { clean: [1, 24, 27, 15, 23, 28, 33], corrupt: [1, 24, 27, 15, 23, 29, 33], at: 5, answer: 28, wrong: 26 },
  'mixtral-tiny': { clean: [1, 269, 505, 717, 918, 977, 694], corrupt: [1, 269, 505, 42, 918, 977, 694], at: 3, answer: 5, wrong: 9 },
  'mistral-tiny': { clean: [1, 269, 505, 717, 918, 977, 694], corrupt: [1, 269, 505, 42, 918, 977, 694], at: 3, answer: 5, wrong: 9 },
};

describe.each(['cpu', 'wasm'] as const)('on %s', (backend) => {
  it.each(['mistral-demo', 'mixtral-tiny'])('%s: a resid_pre sweep by position gives 1 where the prompts differ and 0 elsewhere in layer 0', async (name) => {
    await withModel(name, { backend }, (m) => {
      const p = PAIRS[name]!;
      const r = patchSweep(m, p.clean, p.corrupt, logitDiffMetric(p.answer, p.wrong), { hook: 'resid_pre', by: 'position' });
      expect(r.clean).not.toBeCloseTo(r.corrupt, 3);
      const grid = r.grid as number[][];
      expect(grid).toHaveLength(m.config.numLayers);
      grid.forEach((row) => expect(row).toHaveLength(p.clean.length));
      grid[0]!.forEach((x, pos) => expect(x).toBeCloseTo(pos === p.at ? 1 : 0, 5));
      // Positions before the difference see identical inputs in every layer.
      for (const row of grid) for (let pos = 0; pos < p.at; pos++) expect(row[pos]).toBe(0);
    });
  });
});

describe('grids by head and head × position', () => {
  it('z sweeps: [layer][head] and [layer][head][position]; heads are untouched before the difference', async () => {
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      const p = PAIRS['mistral-tiny']!;
      const c = m.config;
      const metric = logitDiffMetric(p.answer, p.wrong);
      const byHead = patchSweep(m, p.clean, p.corrupt, metric, { hook: 'z', by: 'head' });
      expect((byHead.grid as number[][]).map((r) => r.length)).toEqual(Array(c.numLayers).fill(c.numHeads));
      const both = patchSweep(m, p.clean, p.corrupt, metric, { hook: 'z', by: 'head_position' });
      const g = both.grid as number[][][];
      expect(g).toHaveLength(c.numLayers);
      g.forEach((heads) => {
        expect(heads).toHaveLength(c.numHeads);
        heads.forEach((row) => { expect(row).toHaveLength(p.clean.length); for (let pos = 0; pos < p.at; pos++) expect(row[pos]).toBe(0); });
      });
      // raw and grid agree through the normalisation
      const raw = both.raw as number[][][];
      expect(g[1]![2]![5]).toBeCloseTo((raw[1]![2]![5]! - both.corrupt) / (both.clean - both.corrupt), 10);
      const svg = sweepPicture(both);
      expect(svg).toContain('activation patching: z by head × position');
      expect(svg).toContain('layer 2');
    });
  });

  it('bad sweeps are InputErrors', async () => {
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      const p = PAIRS['mistral-tiny']!;
      const metric = logitDiffMetric(p.answer, p.wrong);
      expect(() => patchSweep(m, p.clean, p.corrupt, metric, { hook: 'resid_pre', by: 'head' })).toThrow('a sweep by head needs a hook with heads (z), got resid_pre');
      expect(() => patchSweep(m, p.clean, p.corrupt.slice(1), metric, { hook: 'z', by: 'head' })).toThrow('equal lengths, got 7 and 6 tokens');
    });
  });
});

describe('meanAblate and patchHead', () => {
  it('meanAblate replaces every token with the mean over the reference prompts', async () => {
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      const p = PAIRS['mistral-tiny']!;
      const name = 'blocks.1.hook_resid_pre';
      const ablate = meanAblate(m, [p.clean, p.corrupt], name);
      const a = runWithHooks(m, p.clean, { [name]: ablate });
      // by hand: the mean of both prompts' rows, tiled
      const { result: r1, cache: c1 } = runWithCache(m, p.clean, { names: [name] });
      const { result: r2, cache: c2 } = runWithCache(m, p.corrupt, { names: [name] });
      const tiled = tf.tidy(() => tf.tile(tf.mean(tf.concat([c1.get(name), c2.get(name)], 0), 0, true), [p.clean.length, 1]));
      const b = runWithHooks(m, p.clean, { [name]: replaceWith(tiled) });
      expect(tf.tidy(() => tf.max(tf.abs(tf.sub(a.logits, b.logits))).dataSync()[0])).toBeLessThan(1e-5);
      [a, b, r1, r2].forEach(disposeResult);
      [c1, c2].forEach((c) => c.dispose());
      tiled.dispose();
      ablate.dispose();
    });
  });

  it('patchHead puts one head of the clean run into the corrupted run', async () => {
    await withModel('mistral-tiny', { backend: 'cpu' }, (m) => {
      const p = PAIRS['mistral-tiny']!;
      const name = 'blocks.2.attn.hook_z';
      const clean = runWithCache(m, p.clean, { names: [name] });
      const corrupt = runWithCache(m, p.corrupt, { names: [name] });
      const patched = runWithCache(m, p.corrupt, { names: [name], hooks: { [name]: patchHead(clean.cache.get(name), 1) } });
      tf.tidy(() => {
        const head = (t: tf.Tensor, h: number) => tf.gather(t, h, 1).dataSync();
        expect(Array.from(head(patched.cache.get(name), 1))).toEqual(Array.from(head(clean.cache.get(name), 1)));
        for (const h of [0, 2, 3]) expect(Array.from(head(patched.cache.get(name), h))).toEqual(Array.from(head(corrupt.cache.get(name), h)));
      });
      expect(() => runWithHooks(m, p.corrupt, { [name]: patchHead(clean.cache.get(name), 4) })).toThrow('head 4 is outside [0, 4) for blocks.2.attn.hook_z');
      for (const r of [clean, corrupt, patched]) { r.cache.dispose(); disposeResult(r.result); }
    });
  });
});
