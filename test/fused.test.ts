/**
 * The fused elementwise steps of the simd path against their composite tfjs twins, on
 * random data of model-like shapes: equal within float32 rounding (a few ulps).
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { rmsNormFused, ropeFused, swigluFused } from '../src/kernels/fused.js';
import { useBackend } from '../src/kernels/backend.js';
import { rmsNorm } from '../src/model/rmsnorm.js';
import { applyRope, ropeTables } from '../src/model/rope.js';

function random(shape: number[], seed: number, scale = 1): tf.Tensor {
  let s = seed;
  const n = shape.reduce((a, b) => a * b, 1);
  return tf.tensor(Float32Array.from({ length: n }, () => ((s = (Math.imul(s, 1664525) + 1013904223) >>> 0) / 2 ** 31 - 1) * scale), shape);
}

/** max |a − b| / (1 + max |b|) */
function relDiff(a: tf.Tensor, b: tf.Tensor): number {
  const x = a.dataSync();
  const y = b.dataSync();
  expect(a.shape).toEqual(b.shape);
  let d = 0;
  let m = 0;
  for (let i = 0; i < x.length; i++) {
    d = Math.max(d, Math.abs(x[i]! - y[i]!));
    m = Math.max(m, Math.abs(y[i]!));
  }
  return d / (1 + m);
}

beforeAll(async () => {
  await useBackend('cpu');
});

describe('fused steps equal their composite twins', () => {
  it.each([[1, 64], [7, 512], [3, 4096]])('RMSNorm [%i, %i]', (T, H) => {
    tf.tidy(() => {
      const x = random([T, H], T * H, 30) as tf.Tensor2D;
      const w = random([H], H) as tf.Tensor1D;
      expect(relDiff(rmsNormFused(x, w, 1e-5), rmsNorm(x, w, 1e-5))).toBeLessThan(4e-7);
    });
  });

  it.each([[1, 8, 64, 0], [5, 4, 128, 4090], [3, 2, 24, 7]])('RoPE [%i tokens, %i heads, %i] from position %i', (T, Hn, D, start) => {
    tf.tidy(() => {
      const x = random([T, Hn, D], T + Hn + D, 4) as tf.Tensor3D;
      const rope = ropeTables(Array.from({ length: T }, (_, i) => start + i), D, 1e6);
      // identical float32 operations in the same order: bit for bit
      expect(Array.from(ropeFused(x, rope.cosData, rope.sinData).dataSync())).toEqual(Array.from(applyRope(x, rope).dataSync()));
    });
  });

  it.each([[1, 1536], [9, 14336]])('SwiGLU gating [%i, %i]', (T, I) => {
    tf.tidy(() => {
      const g = random([T, I], I, 8) as tf.Tensor2D;
      const u = random([T, I], I + 1, 8) as tf.Tensor2D;
      expect(relDiff(swigluFused(g, u), tf.mul(tf.mul(g, tf.sigmoid(g)), u))).toBeLessThan(4e-7);
    });
  });
});
