import { UsageError } from './errors.js';

/** Where a command writes; tests pass their own to capture output in-process. */
export interface CliIO {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress lines are shown only then, unless forced). */
  readonly interactive: boolean;
  /** Standard input as text lines (tokenize --jsonl, chat). */
  readonly stdin: () => AsyncIterable<string>;
  /** Resolves when stdout has taken what was written (a slow pipe must not make us buffer without bound). */
  readonly drain?: () => Promise<void>;
}

export const processIO: CliIO = {
  stdout: (t) => { process.stdout.write(t); },
  stderr: (t) => { process.stderr.write(t); },
  interactive: process.stderr.isTTY === true,
  stdin: () => textLines(process.stdin),
  drain: () => (process.stdout.writableNeedDrain ? new Promise((resolve) => process.stdout.once('drain', resolve)) : Promise.resolve()),
};

/** A stdin line longer than this is refused (`tokenize --jsonl < /dev/zero` must not fill memory). */
export const MAX_LINE_BYTES = 64 * 2 ** 20;

/**
 * Splits a byte stream into text lines ("\n" or "\r\n"), strictly: a line that is not valid
 * UTF-8 or longer than MAX_LINE_BYTES is a UsageError naming the line, never U+FFFD or an
 * unbounded buffer.
 */
export async function* textLines(input: AsyncIterable<Uint8Array>, maxBytes = MAX_LINE_BYTES): AsyncGenerator<string> {
  const decoder = new TextDecoder('utf-8', { fatal: true });
  let parts: Buffer[] = [];
  let held = 0;
  let n = 0;
  const line = (bytes: Buffer): string => {
    n++;
    const end = bytes.length > 0 && bytes[bytes.length - 1] === 0x0d ? bytes.length - 1 : bytes.length;
    try {
      return decoder.decode(bytes.subarray(0, end));
    } catch {
      throw new UsageError(`stdin line ${n}: not valid UTF-8`);
    }
  };
  for await (const chunk of input) {
    let buf = Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
    for (let nl = buf.indexOf(0x0a); nl >= 0; nl = buf.indexOf(0x0a)) {
      const bytes = parts.length === 0 ? buf.subarray(0, nl) : Buffer.concat([...parts, buf.subarray(0, nl)]);
      parts = [];
      held = 0;
      if (bytes.length > maxBytes) throw new UsageError(`stdin line ${n + 1}: longer than ${maxBytes} bytes`);
      yield line(bytes);
      buf = buf.subarray(nl + 1);
    }
    if (buf.length > 0) {
      held += buf.length;
      if (held > maxBytes) throw new UsageError(`stdin line ${n + 1}: longer than ${maxBytes} bytes`);
      parts.push(Buffer.from(buf)); // a copy: the stream may reuse its chunk
    }
  }
  if (parts.length > 0) yield line(Buffer.concat(parts));
}

/** A command module: src/cli/commands/<name>.ts */
export interface Command {
  /** One line for `mistral-ref --help`. */
  readonly summary: string;
  /** Full usage text for `mistral-ref <name> --help`. */
  readonly usage: string;
  /** Returns the exit code: 0 ok, 1 a check failed, 2 bad input. */
  run(args: string[], io: CliIO): Promise<number>;
}
