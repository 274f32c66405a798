import * as tf from '@tensorflow/tfjs-core';

/**
 * Rotary position embeddings (Su et al. 2021) in the Hugging Face "rotate-half" layout:
 * within a head of size d, element p is paired with element p + d/2 (not with p + 1, as in
 * Mistral's native code; the checkpoint adapter permutes native q/k rows to this layout).
 *
 *   invFreq[p] = 1 / theta^(2p/d),   angle[t, p] = position[t] · invFreq[p],   p < d/2
 *   rope(x) = x · cos(angle) + rotateHalf(x) · sin(angle),   rotateHalf([a, b]) = [−b, a]
 *
 * Angles are rounded to float32 at each step, as transformers computes them.
 */
export interface RopeTables {
  /** [tokens, 1, headDim]: broadcasts over heads. */
  readonly cos: tf.Tensor3D;
  readonly sin: tf.Tensor3D;
  /** The same values as arrays, [tokens, headDim] (for the fused kernel). */
  readonly cosData: Float32Array;
  readonly sinData: Float32Array;
}

/** cos/sin of every (position, frequency) pair, duplicated to cover both halves of a head. */
export function ropeAngles(positions: readonly number[], headDim: number, theta: number) {
  const half = headDim / 2;
  const f = Math.fround;
  const invFreq = Array.from({ length: half }, (_, p) => f(1 / f(theta ** f((2 * p) / headDim))));
  const cos = new Float32Array(positions.length * headDim);
  const sin = new Float32Array(positions.length * headDim);
  positions.forEach((pos, t) => {
    for (let p = 0; p < half; p++) {
      const angle = f(pos * invFreq[p]!);
      const c = Math.cos(angle);
      const s = Math.sin(angle);
      cos[t * headDim + p] = c;
      cos[t * headDim + p + half] = c;
      sin[t * headDim + p] = s;
      sin[t * headDim + p + half] = s;
    }
  });
  return { cos, sin };
}

export function ropeTables(positions: readonly number[], headDim: number, theta: number): RopeTables {
  const { cos, sin } = ropeAngles(positions, headDim, theta);
  const shape: [number, number, number] = [positions.length, 1, headDim];
  return { cos: tf.tensor3d(cos, shape), sin: tf.tensor3d(sin, shape), cosData: cos, sinData: sin };
}

/** [..., d] → [..., d]: (a, b) ↦ (−b, a) on the two halves of the last axis. */
export function rotateHalf(x: tf.Tensor3D): tf.Tensor3D {
  const [a, b] = tf.split(x, 2, -1) as [tf.Tensor3D, tf.Tensor3D];
  return tf.concat([tf.neg(b), a], -1);
}

/**
 * @param x [tokens, heads, headDim]
 * @returns x rotated by each token's position, same shape
 */
export function applyRope(x: tf.Tensor3D, rope: RopeTables): tf.Tensor3D {
  return tf.tidy(() => tf.add<tf.Tensor3D>(tf.mul(x, rope.cos), tf.mul(rotateHalf(x), rope.sin)));
}
