/**
 * A minimal reader for the protobuf wire format, enough to read SentencePiece model files.
 *
 * Why hand-written: a SentencePiece `.model` file is one serialized `ModelProto`, and no
 * maintained pure-JS SentencePiece model reader exists. A general protobuf library would
 * need the .proto schema compiled in, for the half-dozen fields we read (the pieces with
 * their score and type, and a few trainer / normalizer flags). The wire format itself is
 * small: a message is a sequence of (tag, value) records, tag = fieldNumber << 3 | wireType.
 *
 *   wire type 0  varint            int32, bool, enum (7 bits per byte, high bit = more)
 *   wire type 1  64-bit            fixed64, double (skipped here)
 *   wire type 2  length-delimited  string, bytes, embedded message: varint length, then bytes
 *   wire type 5  32-bit            float (little endian)
 *
 * Unknown fields are skipped, so newer model files with extra fields still load.
 */

export class ProtobufError extends Error {
  override readonly name = 'ProtobufError';
}

/** One record of a message: its field number and its raw value. */
export type Field =
  | { readonly field: number; readonly wire: 0; readonly value: bigint }
  | { readonly field: number; readonly wire: 1; readonly value: Uint8Array }
  | { readonly field: number; readonly wire: 2; readonly value: Uint8Array }
  | { readonly field: number; readonly wire: 5; readonly value: Uint8Array };

/** Iterates over the records of one serialized message. */
export function* fields(bytes: Uint8Array): Generator<Field> {
  let pos = 0;
  const varint = (): bigint => {
    let result = 0n;
    let shift = 0n;
    for (;;) {
      if (pos >= bytes.length) throw new ProtobufError(`truncated varint at byte ${pos}`);
      const b = bytes[pos++]!;
      result |= BigInt(b & 0x7f) << shift;
      if ((b & 0x80) === 0) return result;
      shift += 7n;
      if (shift > 63n) throw new ProtobufError(`varint longer than 10 bytes at byte ${pos}`);
    }
  };
  const take = (n: number): Uint8Array => {
    if (n < 0 || pos + n > bytes.length) throw new ProtobufError(`field of ${n} bytes at byte ${pos} runs past the end (${bytes.length} bytes)`);
    const out = bytes.subarray(pos, pos + n);
    pos += n;
    return out;
  };
  while (pos < bytes.length) {
    const tag = varint();
    const field = Number(tag >> 3n);
    const wire = Number(tag & 7n);
    if (field === 0) throw new ProtobufError(`field number 0 at byte ${pos}`);
    switch (wire) {
      case 0: yield { field, wire, value: varint() }; break;
      case 1: yield { field, wire, value: take(8) }; break;
      case 2: yield { field, wire, value: take(Number(varint())) }; break;
      case 5: yield { field, wire, value: take(4) }; break;
      default: throw new ProtobufError(`unsupported wire type ${wire} (field ${field}) at byte ${pos}`);
    }
  }
}

// ignoreBOM: a piece may be U+FEFF itself (v1 has one), which the default decoder would drop.
const utf8 = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true });

/** Typed views of a record's value; each checks the wire type it expects. */
export const read = {
  string(f: Field): string {
    if (f.wire !== 2) throw new ProtobufError(`field ${f.field}: expected a string, got wire type ${f.wire}`);
    try {
      return utf8.decode(f.value);
    } catch {
      throw new ProtobufError(`field ${f.field}: string is not valid UTF-8`);
    }
  },
  message(f: Field): Uint8Array {
    if (f.wire !== 2) throw new ProtobufError(`field ${f.field}: expected a message, got wire type ${f.wire}`);
    return f.value;
  },
  float(f: Field): number {
    if (f.wire !== 5) throw new ProtobufError(`field ${f.field}: expected a float, got wire type ${f.wire}`);
    return new DataView(f.value.buffer, f.value.byteOffset, 4).getFloat32(0, true);
  },
  /** int32 and enum: negative values are sign-extended to 64 bits on the wire. */
  int32(f: Field): number {
    if (f.wire !== 0) throw new ProtobufError(`field ${f.field}: expected a varint, got wire type ${f.wire}`);
    return Number(BigInt.asIntN(32, f.value));
  },
  bool(f: Field): boolean {
    if (f.wire !== 0) throw new ProtobufError(`field ${f.field}: expected a bool, got wire type ${f.wire}`);
    return f.value !== 0n;
  },
};
