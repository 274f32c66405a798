/**
 * Typed errors for everything read from disk. Each names the file, and the tensor
 * where there is one, so a user with a 10 GB shard knows exactly what to look at.
 */
export class CheckpointError extends Error {
  override readonly name: string = 'CheckpointError';
  /** Path of the file at fault. */
  readonly file: string;
  /** Tensor name, when the problem belongs to one tensor. */
  readonly tensor: string | undefined;

  constructor(file: string, message: string, tensor?: string) {
    super(`${file}${tensor === undefined ? '' : ` [${tensor}]`}: ${message}`);
    this.file = file;
    this.tensor = tensor;
  }
}

/** A safetensors file whose bytes break the format. */
export class SafetensorsFormatError extends CheckpointError {
  override readonly name = 'SafetensorsFormatError';
}
