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

/**
 * RMSNorm with its divisor made visible: scale = sqrt(mean(x²) + eps), [tokens, 1], passed
 * through `hookScale` (the `ln*.hook_scale` points), then y = w · x / scale. With the scale
 * held fixed the norm is linear in x, which is what attribution through it relies on.
 * Equal to rmsNorm up to float32 rounding (a division instead of a multiplication by rsqrt).
 */
export function rmsNormWithScale(x: tf.Tensor2D, weight: tf.Tensor1D, eps: number,
  hookScale: (scale: tf.Tensor2D) => tf.Tensor2D): tf.Tensor2D {
  const scale = hookScale(tf.sqrt(tf.add<tf.Tensor2D>(tf.mean(tf.square(x), -1, true), eps))); // [tokens, 1]
  return tf.mul(tf.div(x, scale), weight);
}
