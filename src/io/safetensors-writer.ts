/**
 * A streaming safetensors writer: the header is known from the shapes alone, so it is
 * written first and each tensor's data follows in chunks that a callback fills. A 10 GB
 * shard is written with a few MB of memory.
 *
 * Layout written (the format of safetensors.ts):
 *
 *   [u64 LE: N] [N bytes: JSON header, space-padded to a multiple of 8] [tensor data...]
 *
 * with tensors in the order given and contiguous data_offsets, as the reader requires.
 */
import * as fs from 'node:fs';
import { CheckpointError } from './errors.js';
import { dtypeSize } from './safetensors.js';

export type WritableDType = 'F32' | 'BF16';

export interface TensorSpec {
  readonly name: string;
  readonly shape: readonly number[];
}

/** Fills `out` with elements [start, start + out.length) of tensor `name`, row-major. */
export type Fill = (name: string, start: number, out: Float32Array) => void;

/** Elements per chunk: 4 MB of float32 at a time. */
const CHUNK = 1 << 20;

export function elementCount(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

/** Bytes `specs` take in the data buffer. */
export function dataBytes(specs: readonly TensorSpec[], dtype: WritableDType): number {
  const size = dtypeSize(dtype)!;
  return specs.reduce((n, s) => n + size * elementCount(s.shape), 0);
}

/** The header bytes (length prefix included) for `specs` stored contiguously in order. */
export function headerBytes(specs: readonly TensorSpec[], dtype: WritableDType, metadata: Record<string, string> = { format: 'pt' }): Buffer {
  const size = dtypeSize(dtype)!;
  const header: Record<string, unknown> = { __metadata__: metadata };
  let offset = 0;
  for (const s of specs) {
    const n = size * elementCount(s.shape);
    header[s.name] = { dtype, shape: s.shape, data_offsets: [offset, offset + n] };
    offset += n;
  }
  let json = JSON.stringify(header);
  // The Rust reference pads with spaces so the data buffer starts 8-byte aligned.
  json += ' '.repeat((8 - (Buffer.byteLength(json) % 8)) % 8);
  const body = Buffer.from(json, 'utf8');
  const out = Buffer.alloc(8 + body.length);
  out.writeBigUInt64LE(BigInt(body.length), 0);
  body.copy(out, 8);
  return out;
}

/**
 * float32 → bfloat16 bits, rounding to nearest even (as torch's `.to(torch.bfloat16)`).
 * The 16 bits dropped decide: above half rounds up, below down, exactly half to even.
 */
export function toBf16Bits(src: Float32Array, out: Uint16Array): void {
  const bits = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const b = bits[i]!;
    if ((b & 0x7f800000) === 0x7f800000 && (b & 0x007fffff) !== 0) {
      out[i] = (b >>> 16) | 0x0040; // NaN stays a (quiet) NaN
    } else {
      out[i] = (b + 0x7fff + ((b >>> 16) & 1)) >>> 16;
    }
  }
}

/**
 * Writes one safetensors file, streaming: memory stays at one chunk whatever the size.
 * @param onBytes called after each chunk with the bytes of data written so far
 */
export function writeSafetensors(path: string, specs: readonly TensorSpec[], dtype: WritableDType, fill: Fill,
  onBytes?: (written: number) => void): void {
  for (const _ of writeSafetensorsSteps(path, specs, dtype, fill, onBytes));
}

/** writeSafetensors one chunk per step: the caller may yield to the event loop between steps. */
export function* writeSafetensorsSteps(path: string, specs: readonly TensorSpec[], dtype: WritableDType, fill: Fill,
  onBytes?: (written: number) => void): Generator<void, void, undefined> {
  let fd: number;
  try {
    fd = fs.openSync(path, 'w');
  } catch (e) {
    throw new CheckpointError(path, `cannot write: ${(e as Error).message}`);
  }
  try {
    try {
      fs.writeSync(fd, headerBytes(specs, dtype));
    } catch (e) {
      throw new CheckpointError(path, `write failed: ${(e as Error).message}`);
    }
    const f32 = new Float32Array(CHUNK);
    const bf16 = new Uint16Array(CHUNK);
    let written = 0;
    for (const s of specs) {
      const total = elementCount(s.shape);
      for (let start = 0; start < total; start += CHUNK) {
        const n = Math.min(CHUNK, total - start);
        const chunk = f32.subarray(0, n);
        fill(s.name, start, chunk);
        let bytes: Uint8Array;
        if (dtype === 'F32') {
          bytes = new Uint8Array(chunk.buffer, 0, 4 * n);
        } else {
          toBf16Bits(chunk, bf16);
          bytes = new Uint8Array(bf16.buffer, 0, 2 * n);
        }
        let done = 0;
        try {
          while (done < bytes.length) done += fs.writeSync(fd, bytes, done, bytes.length - done);
        } catch (e) {
          throw new CheckpointError(path, `write failed after ${written + done} data bytes: ${(e as Error).message}`, s.name);
        }
        written += bytes.length;
        onBytes?.(written);
        yield;
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}
