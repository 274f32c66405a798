/**
 * Typed errors for everything read from disk. Each names the file, and the tensor
 * where there is one, so a user with a 10 GB shard knows exactly what to look at.
 *
 * Messages are always one line: names and JSON snippets come from untrusted files, so
 * control characters (a newline in a tensor name, say) are written as escapes. The CLI
 * prints the message as its one line on stderr.
 */
export class CheckpointError extends Error {
  override readonly name: string = 'CheckpointError';
  /** Path of the file at fault. */
  readonly file: string;
  /** Tensor name, when the problem belongs to one tensor. */
  readonly tensor: string | undefined;

  constructor(file: string, message: string, tensor?: string) {
    super(oneLine(`${file}${tensor === undefined ? '' : ` [${tensor}]`}: ${message}`));
    this.file = file;
    this.tensor = tensor;
  }
}

/** A safetensors file whose bytes break the format. */
export class SafetensorsFormatError extends CheckpointError {
  override readonly name = 'SafetensorsFormatError';
}

/** Escapes control characters (\n → "\\n", \u0000 → "\\u0000") so text stays on one line. */
export function oneLine(text: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g,
    (c) => named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}
