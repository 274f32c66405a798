/**
 * A validating, positional safetensors reader.
 *
 * Why it is written here: the npm package `safetensors` reads the whole file into one
 * buffer and checks nothing. Real shards are 5–10 GB (Node caps a Buffer at 4 GiB) and a
 * file from the internet must not be trusted, so this reader parses and validates the
 * header once, then reads each tensor by byte range with positional reads.
 *
 * Format (https://github.com/huggingface/safetensors):
 *
 *   [8 bytes: N, little-endian u64] [N bytes: JSON header] [data buffer]
 *
 * The header maps tensor names to `{dtype, shape, data_offsets: [begin, end]}` with offsets
 * relative to the data buffer, plus an optional `__metadata__` string→string map. The
 * buffer must be covered exactly: tensors contiguous, in offset order, no gaps, no overlap.
 * Data are little-endian; typed-array views use the platform's order, which is little-endian
 * on every platform Node supports.
 */
import * as fs from 'node:fs';
import { CheckpointError, SafetensorsFormatError } from './errors.js';
import { openRegularFile } from './files.js';

/**
 * Bytes per element of every whole-byte dtype the format defines. Looked up with
 * `dtypeSize` only: a plain `DTYPE_SIZES[name]` would find `constructor` on the prototype.
 */
export const DTYPE_SIZES: Readonly<Record<string, number>> = Object.freeze({
  F64: 8, F32: 4, F16: 2, BF16: 2,
  I64: 8, I32: 4, I16: 2, I8: 1,
  U64: 8, U32: 4, U16: 2, U8: 1,
  BOOL: 1, F8_E4M3: 1, F8_E5M2: 1, F8_E8M0: 1, C64: 8,
});

/** Element size of `dtype`, or undefined for a name the format does not define. */
export function dtypeSize(dtype: string): number | undefined {
  return Object.hasOwn(DTYPE_SIZES, dtype) ? DTYPE_SIZES[dtype] : undefined;
}

export function isFloatDType(dtype: string): dtype is FloatDType {
  return (FLOAT_DTYPES as readonly string[]).includes(dtype);
}

/** The dtypes this reader converts to float32 (exactly: each is a subset of float32). */
export const FLOAT_DTYPES = ['F32', 'F16', 'BF16'] as const;
export type FloatDType = (typeof FLOAT_DTYPES)[number];

/** Headers above this size are refused before being read (the format's own limit). */
export const MAX_HEADER_BYTES = 100_000_000;

/** One entry of a safetensors header, with offsets made absolute in the file. */
export interface TensorInfo {
  readonly name: string;
  readonly dtype: string;
  readonly shape: readonly number[];
  /** Absolute byte range [begin, end) in the file. */
  readonly begin: number;
  readonly end: number;
  readonly file: string;
}

/** Reads at most this many bytes per `readSync` call (the syscall caps one read near 2 GiB). */
const READ_CHUNK = 1 << 28;

export class SafetensorsFile {
  readonly path: string;
  readonly metadata: Readonly<Record<string, string>>;
  /** Tensors in file order. */
  readonly tensors: ReadonlyMap<string, TensorInfo>;
  /** Size of the file in bytes. */
  readonly byteLength: number;
  private fd: number | null;

  private constructor(path: string, fd: number, byteLength: number,
    metadata: Record<string, string>, tensors: Map<string, TensorInfo>) {
    this.path = path;
    this.fd = fd;
    this.byteLength = byteLength;
    this.metadata = metadata;
    this.tensors = tensors;
  }

  /** Opens and validates a file; reads only its header. */
  static open(path: string): SafetensorsFile {
    // Opened without blocking and checked before reading: a FIFO must not hang the open.
    const { fd, size } = openRegularFile(path, SafetensorsFormatError);
    try {
      const { metadata, tensors } = readHeader(path, fd, size);
      return new SafetensorsFile(path, fd, size, metadata, tensors);
    } catch (e) {
      fs.closeSync(fd);
      throw e;
    }
  }

  has(name: string): boolean {
    return this.tensors.has(name);
  }

  info(name: string): TensorInfo {
    const t = this.tensors.get(name);
    if (t === undefined) throw new SafetensorsFormatError(this.path, 'no such tensor in this file', name);
    return t;
  }

  /** The raw bytes of one tensor, read by byte range. */
  readBytes(name: string): Uint8Array {
    const t = this.info(name);
    return this.readRange(t.begin, t.end - t.begin, name);
  }

  /**
   * Reads a tensor's raw bytes straight into `out` (which must be exactly its size), e.g.
   * into kernel memory, so that a 2-byte weight never exists as a second copy.
   */
  readInto(name: string, out: Uint8Array): void {
    const t = this.info(name);
    if (out.length !== t.end - t.begin) {
      throw new RangeError(`readInto: ${name} has ${t.end - t.begin} bytes, the destination ${out.length}`);
    }
    if (this.fd === null) throw new CheckpointError(this.path, 'file already closed', name);
    readFully(this.path, this.fd, out, t.begin, name);
  }

  /**
   * Reads `count` elements starting at element `start` of a tensor (row slices of an
   * embedding, say) and converts them to float32. With `finite`, a NaN or ±Inf is a
   * CheckpointError naming the element, found in the same pass as the conversion.
   */
  readFloat32(name: string, start = 0, count?: number, opts: { finite?: boolean } = {}): Float32Array {
    const t = this.info(name);
    if (!isFloatDType(t.dtype)) {
      throw new SafetensorsFormatError(this.path,
        `dtype ${t.dtype} cannot be read as float32 (supported: ${FLOAT_DTYPES.join(', ')})`, name);
    }
    const size = dtypeSize(t.dtype)!;
    const total = (t.end - t.begin) / size;
    const n = count ?? total - start;
    if (!Number.isSafeInteger(start) || !Number.isSafeInteger(n) || start < 0 || n < 0 || start + n > total) {
      throw new SafetensorsFormatError(this.path, `element range ${start}+${n} outside 0..${total}`, name);
    }
    const position = t.begin + start * size;
    if (t.dtype === 'F32') {
      // Read straight into the result's bytes: no second copy of a 700 MB tensor.
      const bytes = this.readRange(position, n * 4, name);
      if (opts.finite) throwIfNonFinite(t, bytes, 'F32', start);
      return new Float32Array(bytes.buffer);
    }
    // Half precision: read in chunks through one small scratch buffer and widen each
    // chunk while it is in cache, so a 14336×4096 bf16 matrix never exists twice.
    const out = new Float32Array(n);
    if (this.fd === null) throw new CheckpointError(this.path, 'file already closed', name);
    const chunk = Math.min(n, CONVERT_CHUNK);
    const scratch = new Uint8Array(chunk * 2);
    for (let i = 0; i < n; i += chunk) {
      const m = Math.min(chunk, n - i);
      const bytes = scratch.subarray(0, m * 2);
      readFully(this.path, this.fd, bytes, position + i * 2, name);
      const flagged = widenInto(new Uint16Array(scratch.buffer, 0, m), t.dtype, out.subarray(i, i + m));
      if (opts.finite && flagged) throwIfNonFinite(t, bytes, t.dtype, start + i);
    }
    return out;
  }

  close(): void {
    if (this.fd !== null) {
      fs.closeSync(this.fd);
      this.fd = null;
    }
  }

  private readRange(position: number, length: number, tensor: string): Uint8Array {
    if (this.fd === null) throw new CheckpointError(this.path, 'file already closed', tensor);
    // A fresh ArrayBuffer keeps the result aligned for typed-array views.
    const out = new Uint8Array(length);
    readFully(this.path, this.fd, out, position, tensor);
    return out;
  }
}

/**
 * Fills `out` from byte `position`, in chunks (one read returns at most ~2 GiB, and may
 * return less). A file that shrank since its header was validated, or an I/O error, is a
 * typed error rather than a short buffer of zeros.
 */
function readFully(path: string, fd: number, out: Uint8Array, position: number, tensor?: string): void {
  let done = 0;
  while (done < out.length) {
    let n: number;
    try {
      n = fs.readSync(fd, out, done, Math.min(READ_CHUNK, out.length - done), position + done);
    } catch (e) {
      throw new CheckpointError(path, `read of ${out.length} bytes at ${position} failed: ${(e as Error).message}`, tensor);
    }
    if (n === 0) throw new SafetensorsFormatError(path, `file ended while reading ${out.length} bytes at ${position}`, tensor);
    done += n;
  }
}

/** Converts little-endian F32/F16/BF16 bytes to float32, exactly. */
export function toFloat32(bytes: Uint8Array, dtype: FloatDType): Float32Array {
  const size = dtypeSize(dtype)!;
  if (bytes.byteLength % size !== 0) {
    throw new RangeError(`toFloat32: ${bytes.byteLength} bytes is not a whole number of ${dtype} elements`);
  }
  // Typed-array views need aligned offsets; a fresh copy from readRange always is.
  const aligned = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  if (dtype === 'F32') return new Float32Array(aligned.buffer, aligned.byteOffset, aligned.byteLength / 4).slice();
  const n = aligned.byteLength / 2;
  const out = new Float32Array(n);
  widenInto(new Uint16Array(aligned.buffer, aligned.byteOffset, n), dtype, out);
  return out;
}

/** Elements widened per chunk by readFloat32 (8 MB of bf16 scratch). */
const CONVERT_CHUNK = 1 << 22;

/**
 * Widens little-endian F16/BF16 elements into `out` (same length), exactly. Returns whether
 * one of them is NaN or ±Inf (the exponent test of NONFINITE_BITS, folded into the same loop).
 */
function widenInto(halves: Uint16Array, dtype: 'F16' | 'BF16', out: Float32Array): boolean {
  const n = halves.length;
  let acc = 0;
  if (dtype === 'BF16') {
    // bf16 is the top half of a float32: shifting the bits back is exact.
    const bits = new Int32Array(out.buffer, out.byteOffset, n);
    for (let i = 0; i < n; i++) {
      const h = halves[i]!;
      bits[i] = h << 16;
      acc |= (h & 0x7f80) + 0x0080;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const h = halves[i]!;
      out[i] = halfToFloat(h);
      acc |= (h & 0x7c00) + 0x0400;
    }
  }
  return (acc & 0x8000) !== 0;
}

/**
 * Throws a CheckpointError at the first NaN / ±Inf of `bytes`, elements from `start` of
 * tensor `t` as stored (nothing when there is none).
 */
export function throwIfNonFinite(t: TensorInfo, bytes: Uint8Array, dtype: FloatDType, start: number): void {
  const i = firstNonFinite(bytes, dtype);
  if (i < 0) return;
  const at = start + i;
  const cols = t.shape.length === 2 ? t.shape[1]! : 0;
  const value = toFloat32(bytes.slice(i * dtypeSize(dtype)!, (i + 1) * dtypeSize(dtype)!), dtype)[0]!;
  throw new CheckpointError(t.file, `holds ${value} at element ${at}${cols > 0 ? ` (row ${Math.floor(at / cols)}, column ${at % cols})` : ''}; ` +
    'weights must be finite', t.name);
}

/** The exponent test of firstNonFinite per dtype, on 32-bit words (also the kernels' `nonfinite`). */
export const NONFINITE_BITS: Readonly<Record<FloatDType, { mask: number; add: number; flag: number }>> = {
  F32: { mask: 0x7f800000, add: 0x00800000, flag: 0x80000000 | 0 },
  BF16: { mask: 0x7f807f80, add: 0x00800080, flag: 0x80008000 | 0 },
  F16: { mask: 0x7c007c00, add: 0x04000400, flag: 0x80008000 | 0 },
};

/**
 * Index of the first NaN or ±Inf among little-endian `dtype` elements in `bytes`, or -1.
 * Tests the exponent bits without converting: masked to its exponent, an element whose
 * exponent is all ones (non-finite) carries into the bit above it when the exponent's
 * lowest bit is added, a finite one never does. Half-precision elements are tested two to
 * a 32-bit word (no carry crosses from one half into the other); for F32 the carry lands
 * in the sign bit.
 */
export function firstNonFinite(bytes: Uint8Array, dtype: FloatDType): number {
  if (bytes.byteOffset % 4 !== 0) return firstNonFiniteSlow(bytes.slice(), dtype);
  // Int32 views keep every value a small integer for the JIT; blocks are OR-reduced without
  // a branch per element and only a flagged block is searched element by element.
  const words = new Int32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
  const { mask, add, flag } = NONFINITE_BITS[dtype];
  const BLOCK = 4096;
  for (let b = 0; b < words.length; b += BLOCK) {
    const end = Math.min(words.length, b + BLOCK);
    let acc = 0;
    for (let i = b; i < end; i++) acc |= (words[i]! & mask) + add;
    if ((acc & flag) !== 0) {
      const per = dtype === 'F32' ? 1 : 2;
      const i = firstNonFiniteSlow(bytes.subarray(4 * b, 4 * end), dtype);
      return per * b + i;
    }
  }
  // Half precision: a trailing odd element is not in any word.
  const tail = (bytes.byteLength & ~3);
  if (tail < bytes.byteLength && dtype !== 'F32') {
    const i = firstNonFiniteSlow(bytes.subarray(tail), dtype);
    if (i >= 0) return tail / 2 + i;
  }
  return -1;
}

/** firstNonFinite element by element (a flagged block, an unaligned buffer, a tail). */
function firstNonFiniteSlow(bytes: Uint8Array, dtype: FloatDType): number {
  if (dtype === 'F32') {
    const u = new Uint32Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 2);
    for (let i = 0; i < u.length; i++) if ((u[i]! & 0x7f800000) === 0x7f800000) return i;
    return -1;
  }
  const exp = dtype === 'BF16' ? 0x7f80 : 0x7c00;
  const h = new Uint16Array(bytes.buffer, bytes.byteOffset, bytes.byteLength >> 1);
  for (let i = 0; i < h.length; i++) if ((h[i]! & exp) === exp) return i;
  return -1;
}

/** IEEE 754 binary16 → number (every half is exactly representable in float32). */
export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24; // subnormal or zero
  if (exp === 31) return frac === 0 ? sign * Infinity : NaN;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

type Fail = (message: string, tensor?: string) => never;

function readHeader(path: string, fd: number, size: number) {
  const fail: Fail = (msg, tensor) => {
    throw new SafetensorsFormatError(path, msg, tensor);
  };
  if (size < 8) fail(`file is ${size} bytes, too short for the 8-byte header length`);
  const lenBytes = Buffer.alloc(8);
  readFully(path, fd, lenBytes, 0);
  const headerLen = lenBytes.readBigUInt64LE(0);
  // Both bounds are checked before anything is allocated: a corrupt length must not
  // become a 2^63-byte allocation.
  if (headerLen > BigInt(MAX_HEADER_BYTES)) {
    fail(`header length ${headerLen} exceeds the ${MAX_HEADER_BYTES}-byte limit`);
  }
  const n = Number(headerLen);
  if (8 + n > size) fail(`header length ${n} runs past the end of the file (${size} bytes)`);
  if (n < 2) fail(`header length ${n} is too short for a JSON object`);

  const raw = Buffer.alloc(n);
  readFully(path, fd, raw, 8);
  if (raw[0] !== 0x7b) fail(`header does not start with "{" (byte 0x${raw[0]!.toString(16).padStart(2, '0')}): not a safetensors file?`);
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true }).decode(raw);
  } catch {
    return fail('header is not valid UTF-8');
  }
  let header: unknown;
  try {
    header = JSON.parse(text);
  } catch (e) {
    return fail(`header is not valid JSON (${(e as Error).message.slice(0, 200)})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) {
    fail('header is not a JSON object');
  }
  const dup = firstDuplicateTopLevelKey(text);
  if (dup !== null) fail('tensor name appears twice in the header', dup);

  const dataStart = 8 + n;
  const dataLen = size - dataStart;
  const entries: TensorInfo[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, value] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      metadata = parseMetadata(value, fail);
      continue;
    }
    entries.push(parseEntry(name, value, dataStart, dataLen, path, fail));
  }

  // The data buffer must be covered exactly: sorted by offset, each tensor starts where
  // the previous one ended. JSON order does not matter (writers sort names, not offsets).
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let cursor = dataStart;
  for (const t of entries) {
    if (t.begin < cursor) fail(`data_offsets overlap the previous tensor (starts at ${t.begin - dataStart}, previous ends at ${cursor - dataStart})`, t.name);
    if (t.begin > cursor) fail(`gap in the data buffer before this tensor (starts at ${t.begin - dataStart}, previous ends at ${cursor - dataStart})`, t.name);
    cursor = t.end;
  }
  if (cursor - dataStart !== dataLen) fail(`${dataLen - (cursor - dataStart)} trailing bytes after the last tensor`);
  // Keep file order (offset order): sequential reads are the fast path for streaming.
  return { metadata, tensors: new Map(entries.map((t) => [t.name, t])) };
}

function parseMetadata(value: unknown, fail: Fail): Record<string, string> {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('__metadata__ is not an object');
  for (const [k, v] of Object.entries(value as object)) {
    if (typeof v !== 'string') fail(`__metadata__.${k} is not a string`);
  }
  return value as Record<string, string>;
}

function parseEntry(name: string, value: unknown, dataStart: number, dataLen: number, path: string, fail: Fail): TensorInfo {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) fail('entry is not an object', name);
  const { dtype, shape, data_offsets: offsets } = value as Record<string, unknown>;
  if (typeof dtype !== 'string') fail('dtype missing or not a string', name);
  const size = dtypeSize(dtype as string);
  if (size === undefined) fail(`unknown dtype ${JSON.stringify(dtype)}`, name);
  const isCount = (x: unknown): x is number => Number.isSafeInteger(x) && (x as number) >= 0;
  if (!Array.isArray(shape) || !shape.every(isCount)) fail(`shape ${JSON.stringify(shape)?.slice(0, 100)} is not a list of non-negative integers`, name);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    fail(`data_offsets ${JSON.stringify(offsets)?.slice(0, 100)} is not [begin, end] with non-negative integers`, name);
  }
  const [begin, end] = offsets as [number, number];
  if (end < begin) fail(`data_offsets [${begin}, ${end}] end before they begin`, name);
  if (end > dataLen) {
    fail(`data_offsets [${begin}, ${end}] run past the end of the data buffer (${dataLen} bytes; file truncated?)`, name);
  }
  // Products of large dims can exceed 2^53; an unsafe product never equals a byte count we can read.
  const elements = (shape as number[]).reduce((a, b) => a * b, 1);
  const expected = elements * size!;
  if (!Number.isSafeInteger(expected) || end - begin !== expected) {
    const want = Number.isSafeInteger(expected) ? `${expected} bytes` : 'too many bytes';
    fail(`byte count ${end - begin} does not match shape [${(shape as number[]).join(', ').slice(0, 100)}] × ${dtype} (${want})`, name);
  }
  return { name, dtype: dtype as string, shape: shape as number[], begin: dataStart + begin, end: dataStart + end, file: path };
}

/**
 * JSON.parse keeps the last of two equal keys silently; a header naming a tensor twice
 * is ambiguous, so scan the top-level keys ourselves. Only called on text JSON.parse
 * accepted, so strings are well formed. Returns the first duplicate or null.
 */
export function firstDuplicateTopLevelKey(json: string): string | null {
  const seen = new Set<string>();
  let depth = 0;
  let expectKey = false;
  for (let i = 0; i < json.length; i++) {
    const c = json[i];
    if (c === '"') {
      let j = i + 1;
      while (j < json.length && json[j] !== '"') j += json[j] === '\\' ? 2 : 1;
      if (depth === 1 && expectKey) {
        const key = JSON.parse(json.slice(i, j + 1)) as string;
        if (seen.has(key)) return key;
        seen.add(key);
        expectKey = false;
      }
      i = j;
    } else if (c === '{' || c === '[') {
      depth++;
      if (depth === 1) expectKey = true;
    } else if (c === '}' || c === ']') {
      depth--;
    } else if (c === ',' && depth === 1) {
      expectKey = true;
    }
  }
  return null;
}
