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
