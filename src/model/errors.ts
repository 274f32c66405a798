import { CheckpointError } from '../io/errors.js';

/** A config.json / params.json that is missing a value, ambiguous or inconsistent. */
export class ConfigError extends CheckpointError {
  override readonly name = 'ConfigError';
  /** The config key at fault. */
  readonly key: string;

  constructor(file: string, key: string, message: string) {
    super(file, `${key}: ${message}`);
    this.key = key;
  }
}

/** A checkpoint tensor that is missing or does not fit the config. */
export class WeightError extends CheckpointError {
  override readonly name = 'WeightError';
}

/** Bad input to a forward pass: token ids out of range, empty or over-long prompts. */
export class InputError extends Error {
  override readonly name = 'InputError';
}

/**
 * A forward whose activations became NaN or ±Inf (float32 overflow, or a hook that wrote
 * one): names the first layer whose output holds one, instead of sampling from NaN logits.
 */
export class NonFiniteError extends Error {
  override readonly name = 'NonFiniteError';
  /** The first decoder layer whose output is non-finite; null when every layer's is finite and the head's is not. */
  readonly layer: number | null;

  constructor(layer: number | null) {
    super(layer === null
      ? 'activations became non-finite (NaN or ±Inf) in the final norm or the unembedding; every layer\'s output was finite'
      : `activations became non-finite (NaN or ±Inf) in layer ${layer} (hook point blocks.${layer}.hook_resid_post); ` +
        'the layers before it are finite: the weights or the input overflow float32');
    this.layer = layer;
  }
}
