import * as tf from '@tensorflow/tfjs-core';

/**
 * RMSNorm (Zhang & Sennrich 2019): y = w · x / sqrt(mean(x²) + eps), eps inside the root,
 * in float32. Unlike LayerNorm there is no mean subtraction and no bias.
 *
 * @param x [tokens, hidden]
 * @param weight [hidden]
 */
export function rmsNorm(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number): tf.Tensor2D {
  return tf.tidy(() => {
    const meanSquare = tf.mean(tf.square(x), -1, true); // [tokens, 1]
    return tf.mul(tf.mul(x, tf.rsqrt(tf.add(meanSquare, eps))), weight);
  });
}
