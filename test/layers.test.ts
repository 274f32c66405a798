/** Unit tests per layer: mask predicate, RoPE, grouped-query heads, the native q/k permutation. */
import * as tf from '@tensorflow/tfjs-core';
import type { Linear } from '../src/kernels/linear.js';
import { DTYPE_BYTES } from '../src/kernels/simd/matmul.js';
import { beforeAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { runWithCache } from '../src/inspect/activations.js';
import { maxAbsDiff } from '../src/inspect/parity.js';
import { useBackend } from '../src/kernels/backend.js';
import { parseHfConfig } from '../src/model/config.js';
import { canAttend, maskBias } from '../src/model/mask.js';
import { rmsNorm } from '../src/model/rmsnorm.js';
import { applyRope, ropeTables } from '../src/model/rope.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { nativeName, permuteHfToNative, permuteNativeToHf } from '../src/model/layout.js';
import { modelDir, refFile } from './helpers/fixtures.js';

beforeAll(() => useBackend('cpu'));

/** Renders the allowed (query, key) pairs as rows of x and . for readable expectations. */
const picture = (n: number, window: number | null) =>
  Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => (canAttend(i, j, window) ? 'x' : '.')).join(''));

describe('mask predicate', () => {
  it('is causal without a window', () => {
    expect(picture(4, null)).toEqual(['x...', 'xx..', 'xxx.', 'xxxx']);
  });

  it('keeps W keys including the query itself (i − W < j ≤ i)', () => {
    expect(picture(6, 3)).toEqual(['x.....', 'xx....', 'xxx...', '.xxx..', '..xxx.', '...xxx']);
    // W = 1: each token sees only itself.
    expect(picture(3, 1)).toEqual(['x..', '.x.', '..x']);
  });

  it('masks empty cache slots and builds the additive bias from positions', () => {
    expect(canAttend(5, -1, null)).toBe(false);
    const bias = maskBias([4, 5], [2, 3, 4, 5, -1], 3);
    expect(Array.from(bias)).toEqual([0, 0, 0, -Infinity, -Infinity, -Infinity, 0, 0, 0, -Infinity]);
  });

  it('matches the window visible in the golden attention probabilities', () => {
    const ref = Reference.open(refFile('mistral-tiny'));
    const probs = ref.tensor('p0.debug.layer0.attn_probs'); // [heads, T, T]
    ref.close();
    const [H, T] = probs.shape as [number, number, number];
    for (let h = 0; h < H; h++) {
      for (let i = 0; i < T; i++) {
        for (let j = 0; j < T; j++) {
          expect(probs.data[(h * T + i) * T + j]! > 0).toBe(canAttend(i, j, 8));
        }
      }
    }
  });
});

describe('RMSNorm', () => {
  it('computes w · x / sqrt(mean(x²) + eps)', () => {
    const x = tf.tensor2d([[3, 4], [1, -1]]);
    const w = tf.tensor1d([1, 2]);
    const y = rmsNorm(x, w, 1e-5).arraySync();
    const s0 = 1 / Math.sqrt(12.5 + 1e-5);
    const s1 = 1 / Math.sqrt(1 + 1e-5);
    expect(y[0]![0]).toBeCloseTo(3 * s0, 6);
    expect(y[0]![1]).toBeCloseTo(8 * s0, 6);
    expect(y[1]![1]).toBeCloseTo(-2 * s1, 6);
    tf.dispose([x, w]);
  });
});

describe('RoPE', () => {
  for (const model of ['mistral-tiny', 'mistral-nowindow', 'mixtral-tiny']) {
    it(`rotates the golden q/k projections into the golden q_rope/k_rope (${model})`, () => {
      const config = parseHfConfig(openCheckpoint(modelDir(model)).configJson);
      const ref = Reference.open(refFile(model));
      const T = ref.prompts[0]!.input_ids.length;
      const D = config.headDim;
      const rope = ropeTables(Array.from({ length: T }, (_, t) => t), D, config.ropeTheta);
      for (const [proj, heads] of [['q', config.numHeads], ['k', config.numKvHeads]] as const) {
        const raw = ref.tensor(`p0.debug.layer0.${proj}`); // [T, heads·D]
        const want = ref.tensor(`p0.debug.layer0.${proj}_rope`); // [heads, T, D]
        const got = tf.tidy(() => tf.transpose(applyRope(tf.tensor3d(raw.data, [T, heads, D]), rope), [1, 0, 2]));
        expect(maxAbsDiff(got.dataSync(), want.data)).toBeLessThan(5e-6);
        got.dispose();
      }
      tf.dispose([rope.cos, rope.sin]);
      ref.close();
    });
  }

  it('leaves position 0 unrotated and depends on rope_theta', () => {
    const a = ropeTables([0, 7], 4, 1e4);
    const b = ropeTables([7], 4, 1e6);
    expect(Array.from(a.cos.dataSync().slice(0, 4))).toEqual([1, 1, 1, 1]);
    expect(Array.from(a.sin.dataSync().slice(0, 4))).toEqual([0, 0, 0, 0]);
    // The first pair spins at frequency 1 whatever theta; the second does not.
    expect(a.cos.dataSync()[4]).toBeCloseTo(Math.cos(7), 6);
    expect(a.cos.dataSync()[5]).not.toBeCloseTo(b.cos.dataSync()[1]!, 3);
    tf.dispose([a.cos, a.sin, b.cos, b.sin]);
  });
});

describe('grouped-query attention', () => {
  it('query head h reads kv head ⌊h / (heads / kvHeads)⌋', () => {
    const model = Transformer.load(modelDir('mistral-tiny'));
    const ids = [1, 269, 505, 717, 918, 977, 694, 348, 713, 946, 913];
    const names = ['hook_rot_q', 'hook_rot_k', 'hook_v', 'hook_pattern', 'hook_z'].map((n) => `blocks.1.attn.${n}`);
    const { result, cache } = runWithCache(model, ids, { names });
    const [q, k, v, pattern, z] = names.map((n) => cache.get(n).arraySync()) as [number[][][], number[][][], number[][][], number[][][], number[][][]];
    const { numHeads: H, numKvHeads: KV, headDim: D, slidingWindow: W } = model.config;
    const T = ids.length;
    let maxPattern = 0;
    let maxZ = 0;
    for (let h = 0; h < H; h++) {
      const kv = Math.floor(h / (H / KV));
      for (let i = 0; i < T; i++) {
        const scores = Array.from({ length: T }, (_, j) =>
          canAttend(i, j, W) ? q[i]![h]!.reduce((s, qd, d) => s + qd * k[j]![kv]![d]!, 0) / Math.sqrt(D) : -Infinity);
        const top = Math.max(...scores);
        const e = scores.map((s) => Math.exp(s - top));
        const sum = e.reduce((a, b) => a + b, 0);
        for (let j = 0; j < T; j++) maxPattern = Math.max(maxPattern, Math.abs(e[j]! / sum - pattern[h]![i]![j]!));
        for (let d = 0; d < D; d++) {
          const zd = e.reduce((s, ej, j) => s + (ej / sum) * v[j]![kv]![d]!, 0);
          maxZ = Math.max(maxZ, Math.abs(zd - z[i]![h]![d]!));
        }
      }
    }
    expect(maxPattern).toBeLessThan(1e-6);
    expect(maxZ).toBeLessThan(1e-5);
    cache.dispose();
    disposeResult(result);
    model.dispose();
  });
});

describe('native checkpoint adapter', () => {
  it('maps names one to one', () => {
    expect(nativeName('model.embed_tokens.weight')).toBe('tok_embeddings.weight');
    expect(nativeName('lm_head.weight')).toBe('output.weight');
    expect(nativeName('model.layers.2.self_attn.q_proj.weight')).toBe('layers.2.attention.wq.weight');
    expect(nativeName('model.layers.0.mlp.gate_proj.weight')).toBe('layers.0.feed_forward.w1.weight');
    expect(nativeName('model.layers.0.mlp.down_proj.weight')).toBe('layers.0.feed_forward.w2.weight');
    expect(nativeName('model.layers.1.post_attention_layernorm.weight')).toBe('layers.1.ffn_norm.weight');
    expect(nativeName('model.layers.1.block_sparse_moe.gate.weight')).toBe('layers.1.feed_forward.gate.weight');
    expect(nativeName('model.layers.1.block_sparse_moe.experts.3.w2.weight')).toBe('layers.1.feed_forward.experts.3.w2.weight');
  });

  it('permutes q/k rows: worked example and round trip', () => {
    // One head of size 4, one column: native rows (x0, x1, x2, x3) pair (x0,x1) and (x2,x3);
    // rotate-half pairs (x0, x2) and (x1, x3), so HF order is (x0, x2, x1, x3).
    expect(Array.from(permuteNativeToHf(Float32Array.from([0, 1, 2, 3]), 1, 4, 1))).toEqual([0, 2, 1, 3]);
    const data = Float32Array.from({ length: 3 * 8 * 5 }, (_, i) => i);
    const there = permuteNativeToHf(data, 3, 8, 5);
    expect(there).not.toEqual(data);
    expect(permuteHfToNative(there, 3, 8, 5)).toEqual(data);
  });

  it('turns the native checkpoint into exactly the HF weights', () => {
    for (const [hf, native] of [['mistral-tiny', 'mistral-tiny-native'], ['mixtral-tiny', 'mixtral-tiny-native']]) {
      const a = Transformer.load(modelDir(hf!), { weights: 'stream', kernels: 'tfjs' });
      const b = Transformer.load(modelDir(native!), { weights: 'stream', kernels: 'tfjs' });
      const wa = a.weights.layer(1);
      const wb = b.weights.layer(1);
      for (const key of ['q', 'k', 'v', 'o'] as const) {
        expect(tensorWeight(wb.attn[key]).dataSync()).toEqual(tensorWeight(wa.attn[key]).dataSync());
      }
      a.dispose();
      b.dispose();
    }
  });

  it('turns the native checkpoint into exactly the HF weights when resident at stored width', () => {
    for (const [hf, native] of [['mistral-tiny', 'mistral-tiny-native'], ['mixtral-tiny', 'mixtral-tiny-native']]) {
      const a = Transformer.load(modelDir(hf!), { weights: 'resident' });
      const b = Transformer.load(modelDir(native!), { weights: 'resident' });
      const wa = a.weights.layer(1);
      const wb = b.weights.layer(1);
      for (const key of ['q', 'k', 'v', 'o'] as const) {
        const [ma, mb] = [wa.attn[key], wb.attn[key]].map((l) => {
          if (l.kind !== 'stored') throw new Error('expected a stored weight');
          return l.matrix;
        });
        const bytes = (m: typeof ma) => m!.arena.bytes(m!.ptr, m!.rows * m!.cols * DTYPE_BYTES[m!.dtype]).slice();
        expect(mb!.dtype).toBe(ma!.dtype);
        expect(bytes(mb!)).toEqual(bytes(ma!));
      }
      a.dispose();
      b.dispose();
    }
  });
});

/** The float32 tensor of a tfjs-path Linear. */
function tensorWeight(l: Linear): tf.Tensor2D {
  if (l.kind !== 'tensor') throw new Error('expected a tensor weight');
  return l.weight;
}
