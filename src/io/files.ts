/**
 * Reading a whole small file (a config, an index, a reference JSON) safely: the path is
 * opened without blocking and checked to be a regular file of bounded size before a byte
 * is read. A FIFO would otherwise block the open forever, and /dev/zero would be read
 * until memory runs out.
 */
import * as fs from 'node:fs';
import { CheckpointError } from './errors.js';

/** JSON configs, indexes and reference files are KB to MB; anything past this is not one. */
export const MAX_JSON_BYTES = 50_000_000;

/**
 * Opens `file` for reading without blocking (O_NONBLOCK: a FIFO opens at once instead of
 * waiting for a writer) and checks that it is a regular file. The caller closes the fd.
 * @throws `Err` (a CheckpointError) naming the file
 */
export function openRegularFile(file: string, Err: typeof CheckpointError = CheckpointError): { fd: number; size: number } {
  let fd: number;
  try {
    fd = fs.openSync(file, fs.constants.O_RDONLY | fs.constants.O_NONBLOCK);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new Err(file, code === 'ENOENT' ? 'not found' : `cannot open: ${(e as Error).message}`);
  }
  try {
    const st = fs.fstatSync(fd);
    if (!st.isFile()) throw new Err(file, `not a regular file (${kindOf(st)})`);
    return { fd, size: st.size };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Reads a regular file of at most `maxBytes`; every failure is a CheckpointError naming the file. */
export function readBoundedFile(file: string, maxBytes = MAX_JSON_BYTES): Buffer {
  const { fd, size } = openRegularFile(file);
  try {
    if (size > maxBytes) throw new CheckpointError(file, `is ${size} bytes; expected at most ${maxBytes}`);
    const out = Buffer.alloc(size);
    let done = 0;
    while (done < size) {
      const n = fs.readSync(fd, out, done, size - done, done);
      if (n === 0) throw new CheckpointError(file, `file shrank while being read (${done} of ${size} bytes)`);
      done += n;
    }
    return out;
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(file, `cannot read: ${(e as Error).message}`);
  } finally {
    fs.closeSync(fd);
  }
}

/** A small JSON file, parsed; not UTF-8 or not JSON is a CheckpointError naming the file. */
export function readJsonFile(file: string, maxBytes = MAX_JSON_BYTES): unknown {
  const raw = readBoundedFile(file, maxBytes);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    throw new CheckpointError(file, 'is not valid UTF-8');
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new CheckpointError(file, `not valid JSON (${(e as Error).message.slice(0, 200)})`);
  }
}

/** "a FIFO", "a directory", ... for messages. */
export function kindOf(st: fs.Stats): string {
  return st.isDirectory() ? 'a directory' : st.isFIFO() ? 'a FIFO' : st.isCharacterDevice() ? 'a character device'
    : st.isBlockDevice() ? 'a block device' : st.isSocket() ? 'a socket' : 'not a file';
}
