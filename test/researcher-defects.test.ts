/**
 * The seven defects of issue 13, each as it was seen: per-head work on wasm, invalid
 * expert indices, aliasing through hooks, missing exports, gradients, the wasm error
 * report, hooks in generation and batches.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import * as api from '../src/index.js';
import { generateWithHooks, runWithCache, runWithHooks } from '../src/inspect/activations.js';
import { weightMatrix } from '../src/inspect/weights.js';
import { generateSync } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { HookError } from '../src/model/hooks.js';
import { InputError } from '../src/model/errors.js';
import { disposeResult } from '../src/model/transformer.js';
import { ROOT, withModel } from './helpers/fixtures.js';

const IDS = [1, 269, 505, 717, 918, 977, 694, 348];
const DEMO_IDS = [1, 24, 27, 21, 23, 28, 30, 25]; // the demo's vocabulary has 99 ids
const maxDiff = (a: tf.Tensor, b: tf.Tensor) => tf.tidy(() => tf.max(tf.abs(tf.sub(a, b))).dataSync()[0]!);

beforeAll(async () => { await useBackend('cpu'); });

describe('defect 1: per-head work is the same on every backend', () => {
  for (const backend of ['cpu', 'wasm'] as const) {
    for (const weights of ['eager', 'resident'] as const) {
      it(`${backend}, ${weights}: each head's z times its W_O slice sums to attn_out, and hook_result is those products`, async () => {
        await withModel('mistral-demo', { backend, weights }, (m) => {
          const c = m.config;
          const names = ['blocks.1.attn.hook_z', 'blocks.1.hook_attn_out', 'blocks.1.attn.hook_result'];
          const { result, cache } = runWithCache(m, DEMO_IDS, { names });
          tf.tidy(() => {
            const wO = weightMatrix(m, 'W_O', 1); // [heads, headDim, hidden]
            expect(wO.shape).toEqual([c.numHeads, c.headDim, c.hiddenSize]);
            const z = cache.get('blocks.1.attn.hook_z'); // [T, heads, headDim]
            // Σ_h z[:, h, :] · W_O[h]: [heads, T, headDim] × [heads, headDim, hidden] → [heads, T, hidden]
            const perHead = tf.matMul(tf.transpose(z, [1, 0, 2]) as tf.Tensor3D, wO as tf.Tensor3D);
            expect(maxDiff(tf.sum(perHead, 0), cache.get('blocks.1.hook_attn_out'))).toBeLessThan(1e-5);
            expect(maxDiff(tf.transpose(perHead, [1, 0, 2]), cache.get('blocks.1.attn.hook_result'))).toBeLessThan(1e-5);
          });
          cache.dispose();
          disposeResult(result);
        });
      });
    }
  }
});

describe('defect 2: invalid expert indices are refused', () => {
  const cases: Array<[string, (T: number) => tf.Tensor, string]> = [
    ['an expert past the last', (T) => tf.tensor2d(Array.from({ length: T }, () => [7, 0]), [T, 2], 'int32'),
      'blocks.0.moe.hook_expert_indices: expert 7 for token 0 is outside [0, 4)'],
    ['a negative expert', (T) => tf.tensor2d(Array.from({ length: T }, () => [-1, 0]), [T, 2], 'int32'),
      'blocks.0.moe.hook_expert_indices: expert -1 for token 0 is outside [0, 4)'],
    ['float indices', (T) => tf.tensor2d(Array.from({ length: T }, () => [1, 0]), [T, 2], 'float32'),
      'hook blocks.0.moe.hook_expert_indices returned dtype float32, expected int32'],
    ['a duplicate', (T) => tf.tensor2d(Array.from({ length: T }, () => [1, 1]), [T, 2], 'int32'),
      'blocks.0.moe.hook_expert_indices: token 0 is routed to [1,1], expected 2 distinct experts'],
  ];
  it.each(cases)('%s is a HookError', async (_what, make, message) => {
    await withModel('mixtral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      const run = () => runWithHooks(m, IDS, { 'blocks.0.moe.hook_expert_indices': (t) => make(t.shape[0]!) });
      expect(run).toThrow(HookError);
      expect(run).toThrow(message);
    });
  });
});

describe('defect 3: hooks cannot alias the forward', () => {
  it.each(['hook_embed', 'blocks.1.hook_resid_post', 'blocks.0.hook_attn_out'])('returning a cached %s as is, twice, leaves it intact', async (name) => {
    await withModel('mistral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      const { result, cache } = runWithCache(m, IDS, { names: [name] });
      const kept = cache.get(name);
      const a = runWithHooks(m, IDS, { [name]: () => kept });
      const b = runWithHooks(m, IDS, { [name]: () => kept }); // failed with "reading 'backend'" before
      expect(kept.isDisposed).toBe(false);
      expect(maxDiff(a.logits, result.logits)).toBe(0);
      expect(maxDiff(b.logits, result.logits)).toBe(0);
      [a, b, result].forEach(disposeResult);
      cache.dispose();
    });
  });

  it('a replacement of another shape or dtype is a HookError naming both', async () => {
    await withModel('mistral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      expect(() => runWithHooks(m, IDS, { 'blocks.0.hook_resid_mid': (t) => tf.zeros([1, t.shape[1]!]) }))
        .toThrow(`hook blocks.0.hook_resid_mid returned shape [1,64], expected [${IDS.length},64]`);
      expect(() => runWithHooks(m, IDS, { 'blocks.0.attn.hook_z': (t) => tf.zeros(t.shape, 'int32') }))
        .toThrow('hook blocks.0.attn.hook_z returned dtype int32, expected float32');
    });
  });

  it('tensors a hook creates are freed with the forward unless tf.keep keeps them', async () => {
    await withModel('mistral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      let freed: tf.Tensor | null = null;
      let kept: tf.Tensor | null = null;
      disposeResult(runWithHooks(m, IDS, {
        'blocks.0.hook_resid_mid': (t) => { freed = tf.mul(t, 2); kept = tf.keep(tf.mul(t, 2)); },
      }));
      expect(freed!.isDisposed).toBe(true);
      expect(kept!.isDisposed).toBe(false);
      kept!.dispose();
    });
  });
});

describe('defect 4: the documented helpers are exported from the package root', () => {
  it.each(['attentionPicture', 'routerPicture', 'logitLensPicture', 'svgToPng', 'rmsNorm', 'tokenLabel', 'weightMatrix', 'generateWithHooks'])('%s', (name) => {
    expect(typeof (api as Record<string, unknown>)[name]).toBe('function');
  });
});

describe('defect 5: gradients through a forward', () => {
  for (const [backend, name] of [['cpu', 'mistral-tiny'], ['wasm', 'mistral-tiny'], ['wasm', 'mixtral-tiny']] as const) {
    it(`tf.grad through ${name} on ${backend} (chained ops, Sub, and gather's UnsortedSegmentSum on wasm)`, async () => {
      await withModel(name, { backend, weights: 'eager' }, (m) => {
        const delta = tf.zeros([IDS.length, m.config.hiddenSize]);
        const g = tf.grad((d: tf.Tensor) => {
          const r = m.forward(IDS, { hooks: new Map([['blocks.1.hook_resid_pre', (t: tf.Tensor) => tf.add(t, d)]]) });
          const last = r.logits.gather(IDS.length - 1); // a chained op
          return tf.sub(last.gather(3), last.gather(7)) as tf.Scalar;
        })(delta);
        expect(g.shape).toEqual([IDS.length, m.config.hiddenSize]);
        expect(Array.from(g.dataSync()).every(Number.isFinite)).toBe(true);
        expect(tf.tidy(() => tf.max(tf.abs(g)).dataSync()[0]!)).toBeGreaterThan(0);
        tf.dispose([g, delta]);
      });
    });
  }
});

describe('defect 6: a script error under wasm is reported as node reports it', () => {
  it('no page of minified emscripten on stderr', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'wasm-error-'));
    const script = path.join(dir, 'boom.mts');
    fs.writeFileSync(script, `import { useBackend } from ${JSON.stringify(path.join(ROOT, 'src/kernels/backend.ts'))};\n` +
      "await useBackend('wasm');\nsetTimeout(() => { throw new Error('boom from the script'); });\n");
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, encoding: 'utf8' });
    fs.rmSync(dir, { recursive: true });
    expect(r.status).not.toBe(0);
    expect(r.stderr).toContain('Error: boom from the script');
    expect(r.stderr.length).toBeLessThan(2000); // was ≈ 39 KB
  });
});

describe('defect 7: generate takes hooks; forward takes batches', () => {
  it('hooks run in every forward of generation and see absolute positions', async () => {
    await withModel('mistral-demo', { backend: 'cpu', weights: 'eager' }, (m) => {
      const prompt = [1, 24, 27, 21, 23, 28, 30];
      const seen: number[][] = [];
      const plain = generateSync(m, prompt, { maxNewTokens: 4, stopAtEos: false }).map((t) => t.id);
      const observed = [...generateWithHooks(m, prompt, { 'blocks.0.hook_resid_pre': (_t, _n, ctx) => { seen.push([...ctx.positions]); } }, { maxNewTokens: 4, stopAtEos: false })].map((t) => t.id);
      expect(observed).toEqual(plain);
      // the prefill (one chunk), then one forward per fed token: 3 steps for 4 tokens
      expect(seen).toEqual([[0, 1, 2, 3, 4, 5, 6], [7], [8], [9]]);
      const zeroed = generateSync(m, prompt, { maxNewTokens: 4, stopAtEos: false, hooks: new Map([['blocks.0.hook_resid_pre', (t: tf.Tensor) => tf.zerosLike(t)]]) });
      expect(zeroed.map((t) => t.id)).not.toEqual(plain);
    });
  });

  it('unknown generate and forward options are InputErrors', async () => {
    await withModel('mistral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      expect(() => generateSync(m, IDS, { hoks: new Map() } as never)).toThrow(InputError);
      expect(() => generateSync(m, IDS, { hoks: new Map() } as never)).toThrow('unknown generate option "hoks"');
      expect(() => m.forward(IDS, { hiddenState: true } as never)).toThrow('unknown forward option "hiddenState"');
    });
  });

  it('forward([a, b]) gives each prompt its own logits, bit for bit', async () => {
    await withModel('mistral-tiny', { backend: 'cpu', weights: 'eager' }, (m) => {
      const other = [1, 42, 17, 99, 500, 3, 640, 811];
      const batch = m.forward([IDS, other]);
      expect(batch.logits.shape).toEqual([2, IDS.length, m.config.vocabSize]);
      const a = m.forward(IDS);
      const b = m.forward(other);
      tf.tidy(() => {
        const [ra, rb] = tf.unstack(batch.logits);
        expect(maxDiff(ra!, a.logits)).toBe(0);
        expect(maxDiff(rb!, b.logits)).toBe(0);
      });
      [a, b].forEach(disposeResult);
      batch.logits.dispose();
      // With a cache per row: a batched prefill, then a batched step, equal to each row alone.
      const caches = [m.createCache(), m.createCache()];
      const solo = [m.createCache(), m.createCache()];
      tf.dispose(m.forward([IDS.slice(0, 6), other.slice(0, 6)], { caches }).logits);
      const step = m.forward([IDS.slice(6), other.slice(6)], { caches, lastOnly: true });
      expect(step.logits.shape).toEqual([2, 1, m.config.vocabSize]);
      [IDS, other].forEach((ids, b) => {
        disposeResult(m.forward(ids.slice(0, 6), { cache: solo[b]! }));
        const one = m.forward(ids.slice(6), { cache: solo[b]!, lastOnly: true });
        expect(tf.tidy(() => maxDiff(tf.gather(step.logits, b), one.logits))).toBe(0);
        disposeResult(one);
      });
      step.logits.dispose();
      [...caches, ...solo].forEach((c) => c.dispose());
      expect(() => m.forward([IDS, other], { caches: [caches[0]!] })).toThrow('1 caches for a batch of 2 prompts: give one cache per row');
      expect(() => m.forward([IDS, other.slice(1)])).toThrow('batch row 1 has 7 tokens, row 0 has 8: a batch needs equal-length prompts');
      expect(() => m.forward([IDS, 5] as never)).toThrow('ids[0] is an array');
    });
  });
});
