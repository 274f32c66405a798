/**
 * Row-split weights (what webgpu needs for a weight over maxStorageBufferBindingSize), on cpu
 * with a small binding limit: the split product and the split gather equal the whole ones.
 */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { bindingLimitBytes, useBackend } from '../src/kernels/backend.js';
import { disposeLinear, gatherRows, linear, linearBytes, makeLinear, rowBlocks, rowsPerBlock } from '../src/kernels/linear.js';

const rows = 37;
const cols = 12;
const data = Float32Array.from({ length: rows * cols }, (_, i) => Math.sin(i * 0.37) * 3);
const x = Float32Array.from({ length: 5 * cols }, (_, i) => Math.cos(i * 0.11));

describe('row-split weights', () => {
  beforeAll(async () => {
    await useBackend('cpu');
  });

  it('no limit on cpu and wasm', async () => {
    expect(bindingLimitBytes()).toBe(Infinity);
    await useBackend('wasm');
    expect(bindingLimitBytes()).toBe(Infinity);
    await useBackend('cpu');
  });

  it('rowsPerBlock keeps each block within the limit, and refuses a row that cannot fit', () => {
    expect(rowsPerBlock(12, 4 * 12 * 10)).toBe(10);
    expect(rowsPerBlock(12, 4 * 12 * 10 + 47)).toBe(10);
    expect(() => rowsPerBlock(12, 47)).toThrow('one row of 12 float32 values is more than the backend binds at once (47 bytes)');
  });

  it('a split Linear gives the unsplit product, bit for bit', () => {
    const before = tf.memory().numTensors;
    const whole = makeLinear(data, rows, cols, true, Infinity);
    const split = makeLinear(data, rows, cols, true, 4 * cols * 10); // blocks of 10, 10, 10, 7 rows
    expect(whole.kind).toBe('tensor');
    expect(split.kind).toBe('split');
    if (split.kind !== 'split') return;
    expect(split.blocks.map((b) => b.outFeatures)).toEqual([10, 10, 10, 7]);
    expect(linearBytes(split)).toBe(linearBytes(whole));
    const [a, b] = tf.tidy(() => {
      const t = tf.tensor2d(x, [5, cols]);
      return [linear(t, whole).arraySync(), linear(t, split).arraySync()];
    });
    expect(b).toEqual(a);
    disposeLinear(whole);
    disposeLinear(split);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('gatherRows over blocks gives exactly the table rows, in the ids order', () => {
    const before = tf.memory().numTensors;
    const blocks = rowBlocks(data, rows, cols, 4 * cols * 8); // 8, 8, 8, 8, 5 rows
    expect(blocks.map((b) => b.shape[0])).toEqual([8, 8, 8, 8, 5]);
    const ids = [36, 0, 9, 35, 8, 7, 16, 36, 1];
    const got = tf.tidy(() => gatherRows(blocks, ids).arraySync());
    expect(got).toEqual(ids.map((id) => Array.from(data.subarray(id * cols, (id + 1) * cols))));
    const one = rowBlocks(data, rows, cols);
    expect(one).toHaveLength(1);
    expect(tf.tidy(() => gatherRows(one, ids).arraySync())).toEqual(got);
    tf.dispose([...blocks, ...one]);
    expect(tf.memory().numTensors).toBe(before);
  });
});
