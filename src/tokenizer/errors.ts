/**
 * The tokenizer's one error class. src/tokenizer stands alone (it imports nothing else of
 * the project), so it has its own; the CLI lists it among the user errors (exit 2).
 *
 * Messages are one line: they quote text from files and from users, so control
 * characters are written as escapes.
 */
export class TokenizerError extends Error {
  override readonly name: string = 'TokenizerError';
  /** The file at fault, when there is one. */
  readonly file: string | undefined;

  constructor(message: string, file?: string) {
    super(escapeControls(file === undefined ? message : `${file}: ${message}`));
    this.file = file;
  }
}

/** "\n" → "\\n", U+0000 → "\\u0000": keeps a message on one line. */
export function escapeControls(text: string): string {
  const named: Record<string, string> = { '\n': '\\n', '\r': '\\r', '\t': '\\t' };
  // eslint-disable-next-line no-control-regex
  return text.replace(/[\u0000-\u001f\u007f\u2028\u2029]/g,
    (c) => named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
}

/** A short, quoted excerpt of untrusted text for an error message. */
export function excerpt(text: string, max = 60): string {
  return JSON.stringify(text.length > max ? `${text.slice(0, max)}…` : text);
}

/** A request that does not fit the format: names the message at fault. */
export class ChatFormatError extends TokenizerError {
  override readonly name = 'ChatFormatError';
}

/** The model's [TOOL_CALLS] output could not be read back. */
export class ToolCallParseError extends TokenizerError {
  override readonly name = 'ToolCallParseError';
}
