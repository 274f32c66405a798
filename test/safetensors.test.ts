/**
 * The safetensors reader: exact dtype conversion, byte-range reads, and one typed,
 * one-line error naming file and tensor for every way a file can break the format.
 * Files are built byte by byte by test/helpers/safetensors-builder.ts.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointError, SafetensorsFormatError } from '../src/io/errors.js';
import { headerBytes, toBf16Bits, writeSafetensors } from '../src/io/safetensors-writer.js';
import { MAX_HEADER_BYTES, SafetensorsFile, toFloat32 } from '../src/io/safetensors.js';
import { buildSafetensors, tempDir, writeFile, type BuildOptions, type TensorDef } from './helpers/safetensors-builder.js';

const tmp = tempDir('st-test-');
afterAll(tmp.cleanup);
let counter = 0;

/** Writes a built file and returns its path. */
function file(tensors: readonly TensorDef[], opts: BuildOptions = {}): string {
  return writeFile(tmp.dir, `f${counter++}.safetensors`, buildSafetensors(tensors, opts));
}

/** The error opening `p` throws (fails the test when it opens). */
function openError(p: string): Error {
  try {
    SafetensorsFile.open(p).close();
  } catch (e) {
    return e as Error;
  }
  throw new Error(`${p} opened without error`);
}

function expectFormatError(p: string, message: string, tensor?: string): void {
  const e = openError(p);
  expect(e).toBeInstanceOf(SafetensorsFormatError);
  expect(e.message).toBe(`${p}${tensor === undefined ? '' : ` [${tensor}]`}: ${message}`);
  expect((e as SafetensorsFormatError).file).toBe(p);
  expect((e as SafetensorsFormatError).tensor).toBe(tensor);
  expect(e.message).not.toContain('\n');
}

const u16 = (bits: number[]) => new Uint8Array(Uint16Array.from(bits).buffer);
const A = { name: 'a', shape: [2, 2], values: [1, 2, 3, 4] };
const B = { name: 'b', shape: [3], values: [-1, 0.5, 1e-30] };

describe('reading valid files', () => {
  it('reads shapes, metadata and float32 values, in file order', () => {
    const p = file([A, B], { metadata: { format: 'pt' } });
    const f = SafetensorsFile.open(p);
    try {
      expect([...f.tensors.keys()]).toEqual(['a', 'b']);
      expect(f.info('a')).toMatchObject({ dtype: 'F32', shape: [2, 2], file: p });
      expect(f.metadata).toEqual({ format: 'pt' });
      expect(Array.from(f.readFloat32('a'))).toEqual([1, 2, 3, 4]);
      expect(Array.from(f.readFloat32('b'))).toEqual([-1, 0.5, Math.fround(1e-30)]);
      // A byte range inside a tensor: elements 1..2 of `a` (one embedding row, say).
      expect(Array.from(f.readFloat32('a', 1, 2))).toEqual([2, 3]);
      expect(Array.from(f.readFloat32('a', 4, 0))).toEqual([]);
    } finally {
      f.close();
    }
  });

  it('accepts JSON order different from offset order, space padding and empty tensors', () => {
    const p = file([A, { name: 'empty', shape: [0, 5] }, B], {
      editHeader: (h) => {
        const a = h.a;
        delete h.a;
        h.a = a; // now last in the JSON, first in the data buffer
      },
    });
    const text = fs.readFileSync(p);
    const len = Number(text.readBigUInt64LE(0));
    const padded = Buffer.concat([Buffer.from(new BigUint64Array([BigInt(len + 3)]).buffer), text.subarray(8, 8 + len), Buffer.from('   '), text.subarray(8 + len)]);
    fs.writeFileSync(p, padded);
    const f = SafetensorsFile.open(p);
    try {
      expect([...f.tensors.keys()]).toEqual(['a', 'empty', 'b']);
      expect(f.readFloat32('empty').length).toBe(0);
      expect(Array.from(f.readFloat32('b'))).toEqual([-1, 0.5, Math.fround(1e-30)]);
    } finally {
      f.close();
    }
  });

  it('converts F16 exactly: normal, subnormal, signed zero, infinities, NaN', () => {
    // bits → value, from the IEEE 754 binary16 definition
    const cases: Array<[number, number]> = [
      [0x3c00, 1], [0xc000, -2], [0x7bff, 65504], [0x3555, 0.333251953125],
      [0x0001, 2 ** -24], [0x03ff, 1023 * 2 ** -24], [0x0400, 2 ** -14],
      [0x8000, -0], [0x7c00, Infinity], [0xfc00, -Infinity],
    ];
    const p = file([
      { name: 'h', dtype: 'F16', shape: [cases.length], bytes: u16(cases.map((c) => c[0])) },
      { name: 'nan', dtype: 'F16', shape: [1], bytes: u16([0x7e00]) },
    ]);
    const f = SafetensorsFile.open(p);
    try {
      expect(Array.from(f.readFloat32('h'))).toEqual(cases.map((c) => c[1]));
      expect(Object.is(f.readFloat32('h')[7], -0)).toBe(true);
      expect(Number.isNaN(f.readFloat32('nan')[0])).toBe(true);
      expect(Array.from(f.readFloat32('h', 2, 2))).toEqual([65504, 0.333251953125]);
    } finally {
      f.close();
    }
  });

  it('converts BF16 exactly (the top 16 bits of a float32)', () => {
    const cases: Array<[number, number]> = [
      [0x3f80, 1], [0xc049, -3.140625], [0x7f7f, 3.3895313892515355e38],
      [0x0001, 2 ** -133], [0x8000, -0], [0x7f80, Infinity], [0xff80, -Infinity],
    ];
    const p = file([{ name: 'w', dtype: 'BF16', shape: [cases.length], bytes: u16(cases.map((c) => c[0])) }]);
    const f = SafetensorsFile.open(p);
    try {
      expect(Array.from(f.readFloat32('w'))).toEqual(cases.map((c) => c[1]));
      expect(Array.from(f.readFloat32('w', 1, 1))).toEqual([-3.140625]);
    } finally {
      f.close();
    }
  });

  it('widens a tensor larger than one conversion chunk, across chunk boundaries', () => {
    const n = (1 << 22) + 5; // one 4 Mi-element chunk and a bit
    const halves = new Uint16Array(n);
    for (let i = 0; i < n; i++) halves[i] = 0x3f80 + (i % 97) - 48; // values around 1, both signs of the step
    const p = file([{ name: 'big', dtype: 'BF16', shape: [n], bytes: new Uint8Array(halves.buffer) }]);
    const f = SafetensorsFile.open(p);
    try {
      const expected = (i: number) => {
        const v = new DataView(new ArrayBuffer(4));
        v.setUint32(0, halves[i]! * 65536);
        return v.getFloat32(0);
      };
      const all = f.readFloat32('big');
      expect(all.length).toBe(n);
      for (const i of [0, 1, (1 << 22) - 1, 1 << 22, n - 1]) expect(all[i]).toBe(expected(i));
      const across = f.readFloat32('big', (1 << 22) - 2, 6);
      expect(Array.from(across)).toEqual([0, 1, 2, 3, 4, 5].map((k) => expected((1 << 22) - 2 + k)));
    } finally {
      f.close();
    }
  });

  it('toFloat32 accepts unaligned input and refuses a partial element', () => {
    const bytes = new Uint8Array([0, 0x00, 0x3c, 0x00, 0xc0]).subarray(1); // F16 [1, -2] at offset 1
    expect(Array.from(toFloat32(bytes, 'F16'))).toEqual([1, -2]);
    expect(() => toFloat32(new Uint8Array(3), 'BF16')).toThrow(/not a whole number of BF16 elements/);
  });

  it('refuses to read non-float dtypes and element ranges outside the tensor', () => {
    const p = file([{ name: 'ids', dtype: 'I32', shape: [2], bytes: new Uint8Array(8) }, A]);
    const f = SafetensorsFile.open(p);
    try {
      expect(() => f.readFloat32('ids')).toThrow(new SafetensorsFormatError(p, 'dtype I32 cannot be read as float32 (supported: F32, F16, BF16)', 'ids'));
      expect(() => f.readFloat32('a', 3, 2)).toThrow(new SafetensorsFormatError(p, 'element range 3+2 outside 0..4', 'a'));
      expect(() => f.readFloat32('a', 0.5, 1)).toThrow(SafetensorsFormatError);
      expect(() => f.readFloat32('nope')).toThrow(new SafetensorsFormatError(p, 'no such tensor in this file', 'nope'));
    } finally {
      f.close();
    }
    expect(() => f.readFloat32('a')).toThrow(new CheckpointError(p, 'file already closed', 'a'));
  });
});

describe('malformed files: one typed error naming file and tensor', () => {
  it('a file shorter than the length prefix', () => {
    expectFormatError(writeFile(tmp.dir, 'short.safetensors', new Uint8Array(5)), 'file is 5 bytes, too short for the 8-byte header length');
  });

  it('a header length above 100 MB is refused before anything is allocated', () => {
    expectFormatError(file([A], { headerLength: BigInt(MAX_HEADER_BYTES) + 1n }), 'header length 100000001 exceeds the 100000000-byte limit');
    expectFormatError(file([A], { headerLength: 2n ** 64n - 1n }), 'header length 18446744073709551615 exceeds the 100000000-byte limit');
  });

  it('a header length larger than the file', () => {
    const p = file([A], { headerLength: 5000n });
    expectFormatError(p, `header length 5000 runs past the end of the file (${fs.statSync(p).size} bytes)`);
  });

  it('a header length too short for JSON', () => {
    expectFormatError(file([], { headerText: '{}', headerLength: 1n }), 'header length 1 is too short for a JSON object');
  });

  it('a header that is not a JSON object, not UTF-8, or not JSON', () => {
    expectFormatError(file([], { headerText: '[1, 2]' }), 'header does not start with "{" (byte 0x5b): not a safetensors file?');
    expectFormatError(file([], { headerBytes: new Uint8Array([0x7b, 0xff, 0xfe, 0x7d]) }), 'header is not valid UTF-8');
    const e = openError(file([], { headerText: '{"a": {"dtype":\n"F32"' }));
    expect(e).toBeInstanceOf(SafetensorsFormatError);
    expect(e.message).toMatch(/: header is not valid JSON \(.+\)$/);
    expect(e.message).not.toContain('\n');
  });

  it('unknown dtypes, including names on Object.prototype', () => {
    expectFormatError(file([{ name: 'w', dtype: 'Q4_K', shape: [4], bytes: new Uint8Array(4) }]), 'unknown dtype "Q4_K"', 'w');
    expectFormatError(file([{ name: 'w', dtype: 'constructor', shape: [4], bytes: new Uint8Array(4) }]), 'unknown dtype "constructor"', 'w');
    expectFormatError(file([A], { editHeader: (h) => { delete (h.a as Record<string, unknown>).dtype; } }), 'dtype missing or not a string', 'a');
  });

  it('shapes that are not lists of non-negative integers', () => {
    const withShape = (shape: unknown) => file([A], { editHeader: (h) => { (h.a as Record<string, unknown>).shape = shape; } });
    expectFormatError(withShape([-4]), 'shape [-4] is not a list of non-negative integers', 'a');
    expectFormatError(withShape([2, 1.5]), 'shape [2,1.5] is not a list of non-negative integers', 'a');
    expectFormatError(withShape('4'), 'shape "4" is not a list of non-negative integers', 'a');
    expectFormatError(withShape(undefined), 'shape undefined is not a list of non-negative integers', 'a');
  });

  it('data_offsets that are malformed, reversed or out of range', () => {
    const withOffsets = (offsets: unknown) => file([A], { editHeader: (h) => { (h.a as Record<string, unknown>).data_offsets = offsets; } });
    expectFormatError(withOffsets([0]), 'data_offsets [0] is not [begin, end] with non-negative integers', 'a');
    expectFormatError(withOffsets([-16, 0]), 'data_offsets [-16,0] is not [begin, end] with non-negative integers', 'a');
    expectFormatError(withOffsets([16, 0]), 'data_offsets [16, 0] end before they begin', 'a');
    expectFormatError(withOffsets([0, 32]), 'data_offsets [0, 32] run past the end of the data buffer (16 bytes; file truncated?)', 'a');
    // Beyond 2^53 offsets are not exact integers any more: refused, not rounded.
    expectFormatError(withOffsets([2 ** 60, 2 ** 60 + 16]), 'data_offsets [1152921504606847000,1152921504606847000] is not [begin, end] with non-negative integers', 'a');
  });

  it('a truncated file', () => {
    expectFormatError(file([A, B], { extra: -4 }), 'data_offsets [16, 28] run past the end of the data buffer (24 bytes; file truncated?)', 'b');
  });

  it('overlapping tensors, gaps, and trailing bytes', () => {
    const overlap = file([A, { name: 'b', shape: [2], values: [5, 6] }], {
      editHeader: (h) => { (h.b as Record<string, unknown>).data_offsets = [8, 16]; },
      extra: -8,
    });
    expectFormatError(overlap, 'data_offsets overlap the previous tensor (starts at 8, previous ends at 16)', 'b');
    const gap = file([A, { name: 'b', shape: [1], values: [5] }], {
      editHeader: (h) => { (h.b as Record<string, unknown>).data_offsets = [20, 24]; },
      extra: 4,
    });
    expectFormatError(gap, 'gap in the data buffer before this tensor (starts at 20, previous ends at 16)', 'b');
    expectFormatError(file([A], { extra: 4 }), '4 trailing bytes after the last tensor');
  });

  it('a byte count that does not match the shape', () => {
    expectFormatError(file([A], { editHeader: (h) => { (h.a as Record<string, unknown>).shape = [2, 3]; } }),
      'byte count 16 does not match shape [2, 3] × F32 (24 bytes)', 'a');
    expectFormatError(file([A], { editHeader: (h) => { (h.a as Record<string, unknown>).shape = [2 ** 30, 2 ** 30, 2 ** 30]; } }),
      'byte count 16 does not match shape [1073741824, 1073741824, 1073741824] × F32 (too many bytes)', 'a');
  });

  it('a tensor named twice', () => {
    const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
    const p = file([{ name: 'x', shape: [1] }], { headerText: `{"x":${entry},"x":${entry}}` });
    expectFormatError(p, 'tensor name appears twice in the header', 'x');
  });

  it('bad __metadata__ and entries that are not objects', () => {
    expectFormatError(file([A], { metadata: { format: 1 } }), '__metadata__.format is not a string');
    expectFormatError(file([A], { editHeader: (h) => { h.__metadata__ = ['pt']; } }), '__metadata__ is not an object');
    expectFormatError(file([A], { editHeader: (h) => { h.a = 'F32'; } }), 'entry is not an object', 'a');
  });

  it('names with control characters stay on one line', () => {
    const p = file([{ name: 'evil\nname', dtype: 'Q4', shape: [1], bytes: new Uint8Array(1) }]);
    const e = openError(p);
    expect(e.message).toBe(`${p} [evil\\nname]: unknown dtype "Q4"`);
  });

  it('a folder or a missing path', () => {
    const e = openError(tmp.dir);
    expect(e).toBeInstanceOf(SafetensorsFormatError);
    expect(e.message).toBe(`${tmp.dir}: not a regular file (a directory)`);
    const missing = path.join(tmp.dir, 'absent.safetensors');
    expect(openError(missing).message).toBe(`${missing}: not found`);
  });
});

describe('the streaming writer', () => {
  it('writes what the reader reads back, in F32 and BF16', () => {
    const specs = [{ name: 'm', shape: [3, 5] }, { name: 'v', shape: [7] }];
    const fill = (name: string, start: number, out: Float32Array) => {
      for (let i = 0; i < out.length; i++) out[i] = (name === 'm' ? 1 : -1) * (start + i + 0.25);
    };
    for (const dtype of ['F32', 'BF16'] as const) {
      const p = path.join(tmp.dir, `w-${dtype}.safetensors`);
      writeSafetensors(p, specs, dtype, fill);
      const f = SafetensorsFile.open(p);
      try {
        expect(f.info('m')).toMatchObject({ dtype, shape: [3, 5] });
        expect(f.metadata).toEqual({ format: 'pt' });
        // 0.25 + i is exact in bf16 for i < 32 (8 significant bits)
        expect(Array.from(f.readFloat32('m'))).toEqual(Array.from({ length: 15 }, (_, i) => i + 0.25));
        expect(Array.from(f.readFloat32('v'))).toEqual(Array.from({ length: 7 }, (_, i) => -(i + 0.25)));
        // The data buffer starts 8-byte aligned, as the Rust writer pads it.
        expect((headerBytes(specs, dtype).length - 8) % 8).toBe(0);
      } finally {
        f.close();
      }
    }
  });

  it('rounds float32 to bf16 to nearest, ties to even', () => {
    const x = Float32Array.from([1, 1 + 2 ** -8, 1 + 3 * 2 ** -8, 1 + 2 ** -8 + 2 ** -20, -2.5, Infinity, 3.4028234663852886e38, NaN]);
    const out = new Uint16Array(x.length);
    toBf16Bits(x, out);
    expect(Array.from(out.subarray(0, 7))).toEqual([0x3f80, 0x3f80, 0x3f82, 0x3f81, 0xc020, 0x7f80, 0x7f80]);
    expect(out[7]! & 0x7f80).toBe(0x7f80);
    expect(out[7]! & 0x007f).not.toBe(0);
  });
});
