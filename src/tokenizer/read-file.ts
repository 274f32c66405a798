/**
 * The tokenizer's file reader (this module stands alone, so it does not borrow io's):
 * refuses anything but a regular file of bounded size before reading, so a FIFO cannot
 * block and /dev/zero cannot fill memory.
 */
import * as fs from 'node:fs';
import { TokenizerError } from './errors.js';

/** tokenizer.json of a 131k vocabulary is ~17 MB; a tokenizer.model ~1 MB. */
export const MAX_TOKENIZER_BYTES = 100_000_000;

export function readTokenizerFile(file: string, maxBytes = MAX_TOKENIZER_BYTES): Buffer {
  let fd: number;
  try {
    // O_NONBLOCK: opening a FIFO returns at once instead of waiting for a writer.
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    throw new TokenizerError(`cannot read: ${(e as Error).message}`, file);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new TokenizerError('not a regular file', file);
    if (st.size > maxBytes) throw new TokenizerError(`is ${st.size} bytes; a tokenizer file is at most ${maxBytes}`, file);
    return fs.readFileSync(fd);
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    throw new TokenizerError(`cannot read: ${(e as Error).message}`, file);
  } finally {
    fs.closeSync(fd);
  }
}

/** A tokenizer file as text; invalid UTF-8 is an error, not U+FFFD. */
export function readTokenizerText(file: string): string {
  try {
    return new TextDecoder('utf-8', { fatal: true }).decode(readTokenizerFile(file));
  } catch (e) {
    if (e instanceof TokenizerError) throw e;
    throw new TokenizerError('is not valid UTF-8', file);
  }
}
