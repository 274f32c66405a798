/**
 * Property-based fuzzing of everything read from disk: valid files are mutated (cut,
 * bytes flipped, header fields replaced by arbitrary JSON, length prefix rewritten) and
 * opened and read in full. Whatever the bytes, the only error allowed out is a
 * CheckpointError (never a RangeError, TypeError or a crash), reads return exactly the
 * elements the header declares, and every run finishes quickly.
 */
import * as fc from 'fast-check';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { CheckpointError } from '../src/io/errors.js';
import { isFloatDType, SafetensorsFile } from '../src/io/safetensors.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { modelDir } from './helpers/fixtures.js';
import { buildSafetensors, headerFor, tempDir, type TensorDef } from './helpers/safetensors-builder.js';

const tmp = tempDir('fuzz-test-');
afterAll(tmp.cleanup);
const RUNS = 250;
const SEED = 20240607; // fixed: a failure reproduces; fast-check prints the counterexample

const u16 = (bits: number[]) => new Uint8Array(Uint16Array.from(bits).buffer);
const TENSORS: TensorDef[] = [
  { name: 'w', shape: [2, 3], values: [1, -2, 3.5, 0, 1e-3, 7] },
  { name: 'h', dtype: 'F16', shape: [2, 2], bytes: u16([0x3c00, 0xc000, 0x7bff, 0x0001]) },
  { name: 'b', dtype: 'BF16', shape: [4], bytes: u16([0x3f80, 0xc049, 0x7f80, 0x0001]) },
  { name: 'ids', dtype: 'I32', shape: [3], bytes: new Uint8Array(12) },
  { name: 'empty', shape: [0, 4] },
];
const VALID = buildSafetensors(TENSORS, { metadata: { format: 'pt' } });
const HEADER_LEN = Number(new DataView(VALID.buffer).getBigUint64(0, true));

let counter = 0;
function save(bytes: Uint8Array): string {
  const p = path.join(tmp.dir, `f${counter++ % 8}.safetensors`);
  fs.writeFileSync(p, bytes);
  return p;
}

/** Opens and reads every tensor; returns normally or with a CheckpointError, anything else fails the property. */
function readAll(bytes: Uint8Array): 'ok' | 'rejected' {
  const p = save(bytes);
  let f: SafetensorsFile;
  try {
    f = SafetensorsFile.open(p);
  } catch (e) {
    if (e instanceof CheckpointError) {
      expect(e.message.startsWith(p)).toBe(true);
      expect(e.message).not.toContain('\n');
      return 'rejected';
    }
    throw e;
  }
  try {
    for (const t of f.tensors.values()) {
      const n = t.shape.reduce((a, b) => a * b, 1);
      expect(f.readBytes(t.name).length).toBe(t.end - t.begin);
      if (isFloatDType(t.dtype)) {
        expect(f.readFloat32(t.name).length).toBe(n);
      } else {
        expect(() => f.readFloat32(t.name)).toThrow(CheckpointError);
      }
    }
    return 'ok';
  } finally {
    f.close();
  }
}

type Entry = Record<string, unknown>;
/** The entry of `name` when it is still an object (an earlier edit may have replaced it). */
const entryOf = (h: Entry, name: string): Entry => {
  const e = h[name];
  return typeof e === 'object' && e !== null ? (e as Entry) : {};
};

/** Header edits: any JSON value in place of any field, entry, or the metadata. */
const headerEdit = fc.oneof(
  fc.record({ tensor: fc.constantFrom(...TENSORS.map((t) => t.name)), field: fc.constantFrom('dtype', 'shape', 'data_offsets'), value: fc.jsonValue({ maxDepth: 2 }) })
    .map(({ tensor, field, value }) => (h: Entry) => { entryOf(h, tensor)[field] = value; }),
  fc.record({ tensor: fc.constantFrom(...TENSORS.map((t) => t.name)), field: fc.constantFrom('dtype', 'shape', 'data_offsets') })
    .map(({ tensor, field }) => (h: Entry) => { delete entryOf(h, tensor)[field]; }),
  fc.record({ tensor: fc.constantFrom(...TENSORS.map((t) => t.name)), i: fc.nat(3), delta: fc.integer({ min: -64, max: 64 }) })
    .map(({ tensor, i, delta }) => (h: Record<string, unknown>) => {
      const arr = entryOf(h, tensor)[i < 2 ? 'data_offsets' : 'shape'];
      const k = i % 2;
      if (Array.isArray(arr) && typeof arr[k] === 'number') arr[k] += delta;
    }),
  fc.record({ key: fc.string({ maxLength: 8 }), value: fc.jsonValue({ maxDepth: 2 }) })
    .map(({ key, value }) => (h: Record<string, unknown>) => { h[key] = value; }),
  fc.constantFrom('F64', 'I8', 'BOOL', 'F8_E4M3', 'C64', 'Q4', '', 'toString', '__proto__')
    .map((dtype) => (h: Entry) => { entryOf(h, 'w').dtype = dtype; }),
  fc.jsonValue({ maxDepth: 2 }).map((value) => (h: Record<string, unknown>) => { h.__metadata__ = value; }),
);

describe('fuzzing the safetensors reader', () => {
  it('the unmodified file reads back', () => {
    expect(readAll(VALID)).toBe('ok');
  });

  it('truncated anywhere: rejected with a typed error', () => {
    fc.assert(fc.property(fc.nat(VALID.length - 1), (cut) => {
      expect(readAll(VALID.subarray(0, cut))).toBe('rejected');
    }), { numRuns: RUNS, seed: SEED });
  });

  it('bytes flipped anywhere: typed error or a consistent read', () => {
    fc.assert(fc.property(fc.array(fc.record({ at: fc.nat(VALID.length - 1), xor: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 6 }), (flips) => {
      const bytes = VALID.slice();
      for (const { at, xor } of flips) bytes[at]! ^= xor;
      readAll(bytes);
    }), { numRuns: RUNS, seed: SEED });
  });

  it('header bytes flipped: typed error or a consistent read', () => {
    fc.assert(fc.property(fc.nat(HEADER_LEN - 1), fc.integer({ min: 0, max: 255 }), (at, value) => {
      const bytes = VALID.slice();
      bytes[8 + at] = value;
      readAll(bytes);
    }), { numRuns: RUNS, seed: SEED });
  });

  it('header fields replaced by arbitrary JSON: typed error or a consistent read', () => {
    fc.assert(fc.property(fc.array(headerEdit, { minLength: 1, maxLength: 3 }), (edits) => {
      readAll(buildSafetensors(TENSORS, { metadata: { format: 'pt' }, editHeader: (h) => edits.forEach((e) => e(h)) }));
    }), { numRuns: RUNS, seed: SEED });
  });

  it('any length prefix: typed error unless it is the true one', () => {
    const big = fc.bigInt({ min: 0n, max: 2n ** 64n - 1n });
    fc.assert(fc.property(fc.oneof(big, fc.bigInt({ min: 0n, max: BigInt(VALID.length + 16) })), (len) => {
      const result = readAll(buildSafetensors(TENSORS, { metadata: { format: 'pt' }, headerLength: len }));
      if (len !== BigInt(HEADER_LEN)) expect(result).toBe('rejected');
    }), { numRuns: RUNS, seed: SEED });
  });

  it('arbitrary header text, with or without data: typed error or a consistent read', () => {
    const entry = fc.record({ dtype: fc.constantFrom('F32', 'F16', 'BF16', 'I32', 'X'), shape: fc.array(fc.integer({ min: -2, max: 4 }), { maxLength: 3 }), data_offsets: fc.array(fc.integer({ min: -4, max: 80 }), { maxLength: 3 }) });
    const text = fc.oneof(
      fc.string({ maxLength: 200 }),
      fc.dictionary(fc.string({ maxLength: 6 }), entry, { maxKeys: 4 }).map((h) => JSON.stringify(h)),
      fc.jsonValue().map((v) => JSON.stringify(v) ?? ''),
    );
    fc.assert(fc.property(text, fc.nat(80), (headerText, extra) => {
      readAll(buildSafetensors([], { headerText, extra }));
    }), { numRuns: RUNS, seed: SEED });
  });

  it('the valid header with inserted or deleted data bytes: rejected', () => {
    fc.assert(fc.property(fc.integer({ min: -16, max: 16 }).filter((d) => d !== 0), (delta) => {
      const base = buildSafetensors(TENSORS, { metadata: { format: 'pt' } });
      const bytes = delta > 0 ? new Uint8Array([...base, ...new Uint8Array(delta)]) : base.subarray(0, base.length + delta);
      expect(readAll(bytes)).toBe('rejected');
    }), { numRuns: 64, seed: SEED });
  });
});

describe('fuzzing checkpoint folders', () => {
  const KEYS = ['vocab_size', 'hidden_size', 'intermediate_size', 'num_hidden_layers', 'num_attention_heads', 'num_key_value_heads',
    'head_dim', 'sliding_window', 'rope_theta', 'rms_norm_eps', 'max_position_embeddings', 'tie_word_embeddings', 'model_type',
    'num_local_experts', 'num_experts_per_tok', 'eos_token_id', 'bos_token_id', 'hidden_act'];
  const value = fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.integer({ min: -3, max: 300 }), fc.constantFrom(0, -1, 1e9, 2 ** 53, 1.5, null, 'mixtral'));

  it.each(['mistral-tiny', 'mixtral-tiny'])('%s with config values replaced: loads, or a typed error', async (model) => {
    await useBackend('cpu');
    const dir = path.join(tmp.dir, `${model}-config`);
    fs.cpSync(modelDir(model), dir, { recursive: true });
    const original = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    fc.assert(fc.property(fc.array(fc.tuple(fc.constantFrom(...KEYS), value), { minLength: 1, maxLength: 3 }), (edits) => {
      const json = { ...original };
      for (const [k, v] of edits) json[k] = v;
      fs.writeFileSync(path.join(dir, 'config.json'), JSON.stringify(json));
      try {
        Transformer.load(dir, { weights: 'stream' }).dispose();
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw e;
      }
    }), { numRuns: 150, seed: SEED });
  });

  it('mistral-tiny-sharded with index entries replaced: opens, or a typed error', () => {
    const dir = path.join(tmp.dir, 'sharded-index');
    fs.cpSync(modelDir('mistral-tiny-sharded'), dir, { recursive: true });
    const indexFile = path.join(dir, 'model.safetensors.index.json');
    const original = fs.readFileSync(indexFile, 'utf8');
    const names = Object.keys((JSON.parse(original) as { weight_map: object }).weight_map);
    const file = fc.oneof(fc.jsonValue({ maxDepth: 1 }), fc.constantFrom('model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors', 'absent.safetensors', '../x.safetensors', 'config.json', ''));
    fc.assert(fc.property(fc.constantFrom(...names, 'new.tensor'), file, fc.boolean(), (name, shard, whole) => {
      const index = JSON.parse(original) as Record<string, unknown>;
      if (whole) index.weight_map = shard;
      else (index.weight_map as Record<string, unknown>)[name] = shard;
      fs.writeFileSync(indexFile, JSON.stringify(index));
      try {
        openCheckpoint(dir).store.close();
      } catch (e) {
        if (!(e instanceof CheckpointError)) throw e;
      }
    }), { numRuns: 150, seed: SEED });
  });
});

// Keeps the header builder honest: the fuzzed base file is what a correct writer writes.
it('the base file has the layout the format prescribes', () => {
  const header = headerFor(TENSORS, { format: 'pt' });
  expect(JSON.parse(new TextDecoder().decode(VALID.subarray(8, 8 + HEADER_LEN)))).toEqual(header);
  expect((header.w as { data_offsets: number[] }).data_offsets).toEqual([0, 24]);
  expect((header.empty as { data_offsets: number[] }).data_offsets).toEqual([52, 52]);
});
