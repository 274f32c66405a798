/**
 * Builds safetensors bytes by hand for tests, independently of src/io: valid files to
 * read back, and malformed ones (any header JSON, any length prefix, any data length).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

export interface TensorDef {
  readonly name: string;
  /** Default F32. */
  readonly dtype?: string;
  readonly shape: readonly number[];
  /** F32 values (encoded little-endian), or raw bytes for any dtype. */
  readonly values?: readonly number[] | Float32Array;
  readonly bytes?: Uint8Array;
}

export interface BuildOptions {
  readonly metadata?: Record<string, unknown>;
  /** Edit the header object before it is serialised (to make it wrong). */
  readonly editHeader?: (header: Record<string, unknown>) => void;
  /** Use this exact header text instead. */
  readonly headerText?: string;
  /** Use these exact header bytes instead (invalid UTF-8, say). */
  readonly headerBytes?: Uint8Array;
  /** Write this in the 8-byte length prefix instead of the true length. */
  readonly headerLength?: bigint;
  /** Bytes appended after the data (or a negative number: bytes cut from the end). */
  readonly extra?: number;
}

const SIZES: Record<string, number> = { F32: 4, F16: 2, BF16: 2, F64: 8, I32: 4, I64: 8, U8: 1, I8: 1, BOOL: 1 };

function dataOf(t: TensorDef): Uint8Array {
  if (t.bytes !== undefined) return t.bytes;
  const n = t.shape.reduce((a, b) => a * b, 1);
  const size = SIZES[t.dtype ?? 'F32'] ?? 4;
  const out = new Uint8Array(n * size);
  if ((t.dtype ?? 'F32') === 'F32') {
    const view = new DataView(out.buffer);
    for (let i = 0; i < n; i++) view.setFloat32(4 * i, t.values === undefined ? i : t.values[i]!, true);
  }
  return out;
}

/** The header object a correct writer would produce for `tensors`, laid out in order. */
export function headerFor(tensors: readonly TensorDef[], metadata?: Record<string, unknown>): Record<string, unknown> {
  const header: Record<string, unknown> = {};
  if (metadata !== undefined) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const n = dataOf(t).length;
    header[t.name] = { dtype: t.dtype ?? 'F32', shape: [...t.shape], data_offsets: [offset, offset + n] };
    offset += n;
  }
  return header;
}

export function buildSafetensors(tensors: readonly TensorDef[], opts: BuildOptions = {}): Uint8Array {
  const header = headerFor(tensors, opts.metadata);
  opts.editHeader?.(header);
  const headerBytes = opts.headerBytes ?? new TextEncoder().encode(opts.headerText ?? JSON.stringify(header));
  const data = tensors.map(dataOf);
  const dataLen = data.reduce((n, d) => n + d.length, 0);
  const total = 8 + headerBytes.length + dataLen;
  const out = new Uint8Array(total + Math.max(0, opts.extra ?? 0));
  new DataView(out.buffer).setBigUint64(0, opts.headerLength ?? BigInt(headerBytes.length), true);
  out.set(headerBytes, 8);
  let at = 8 + headerBytes.length;
  for (const d of data) {
    out.set(d, at);
    at += d.length;
  }
  return opts.extra !== undefined && opts.extra < 0 ? out.subarray(0, total + opts.extra) : out;
}

/** A fresh temporary folder, removed by the returned cleanup. */
export function tempDir(prefix = 'mistral-ref-'): { dir: string; cleanup: () => void } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), prefix));
  return { dir, cleanup: () => fs.rmSync(dir, { recursive: true, force: true }) };
}

/** Writes `bytes` to `dir/name` and returns the path. */
export function writeFile(dir: string, name: string, bytes: Uint8Array | string): string {
  const file = path.join(dir, name);
  fs.writeFileSync(file, bytes);
  return file;
}
