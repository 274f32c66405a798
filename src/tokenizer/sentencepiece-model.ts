/**
 * Reads a SentencePiece `.model` file: one serialized `ModelProto` (sentencepiece_model.proto).
 * Only the fields the encoder and decoder use are kept; field numbers are the proto's.
 *
 *   ModelProto      1 pieces (repeated SentencePiece)   2 trainer_spec   3 normalizer_spec
 *   SentencePiece   1 piece (string)   2 score (float)   3 type (enum, default NORMAL)
 *   TrainerSpec     3 model_type   4 vocab_size   24 treat_whitespace_as_suffix   25 split_digits
 *                   35 byte_fallback   40 unk_id   41 bos_id   42 eos_id   43 pad_id   44 unk_surface
 *   NormalizerSpec  1 name   2 precompiled_charsmap   3 add_dummy_prefix   4 remove_extra_whitespaces
 *                   5 escape_whitespaces
 *
 * Mistral's tokenizer.model.v1 / .v3 / .v7 are all BPE, byte fallback, identity normalizer
 * (no NFKC), dummy prefix on, extra whitespace kept.
 */
import { TokenizerError } from './errors.js';
import { readTokenizerFile } from './read-file.js';
import { fields, ProtobufError, read, type Field } from './protobuf.js';

/** ModelProto.SentencePiece.Type */
export enum PieceType {
  Normal = 1,
  /** `<unk>`; decodes to the trainer's unk_surface (" ⁇ "). */
  Unknown = 2,
  /** `<s>`, `</s>`, `[INST]`…: never produced from text, decode to nothing. */
  Control = 3,
  /** Matched whole in text before anything else (`[REFERENCE_DOC_0]` in v3). */
  UserDefined = 4,
  /** In the vocabulary but never output: re-split into the pieces it was merged from. */
  Unused = 5,
  /** `<0x00>`…`<0xFF>`: byte fallback for characters outside the vocabulary. */
  Byte = 6,
}

export interface Piece {
  readonly piece: string;
  readonly score: number;
  readonly type: PieceType;
}

export interface TrainerSpec {
  /** 1 unigram, 2 BPE, 3 word, 4 char. */
  readonly modelType: number;
  readonly vocabSize: number;
  readonly byteFallback: boolean;
  readonly splitDigits: boolean;
  readonly treatWhitespaceAsSuffix: boolean;
  readonly unkId: number;
  readonly bosId: number;
  readonly eosId: number;
  readonly padId: number;
  readonly unkSurface: string;
}

export interface NormalizerSpec {
  readonly name: string;
  readonly precompiledCharsmapBytes: number;
  readonly addDummyPrefix: boolean;
  readonly removeExtraWhitespaces: boolean;
  readonly escapeWhitespaces: boolean;
}

export interface SentencePieceModel {
  readonly pieces: readonly Piece[];
  readonly trainer: TrainerSpec;
  readonly normalizer: NormalizerSpec;
}

export const MODEL_TYPES: Readonly<Record<number, string>> = { 1: 'unigram', 2: 'BPE', 3: 'word', 4: 'char' };

function parsePiece(bytes: Uint8Array, index: number): Piece {
  let piece: string | undefined;
  let score = 0;
  let type = PieceType.Normal;
  for (const f of fields(bytes)) {
    if (f.field === 1) piece = read.string(f);
    else if (f.field === 2) score = read.float(f);
    else if (f.field === 3) type = read.int32(f);
  }
  if (piece === undefined || piece === '') throw new ProtobufError(`piece ${index} has no text`);
  if (!(type in PieceType)) throw new ProtobufError(`piece ${index} (${JSON.stringify(piece)}) has unknown type ${type}`);
  return { piece, score, type };
}

function parseTrainer(bytes: Uint8Array | undefined): TrainerSpec {
  // Defaults are the proto's.
  const t = {
    modelType: 1, vocabSize: 8000, byteFallback: false, splitDigits: false, treatWhitespaceAsSuffix: false,
    unkId: 0, bosId: 1, eosId: 2, padId: -1, unkSurface: ' \u2047 ',
  };
  for (const f of bytes === undefined ? [] : fields(bytes)) {
    switch (f.field) {
      case 3: t.modelType = read.int32(f); break;
      case 4: t.vocabSize = read.int32(f); break;
      case 24: t.treatWhitespaceAsSuffix = read.bool(f); break;
      case 25: t.splitDigits = read.bool(f); break;
      case 35: t.byteFallback = read.bool(f); break;
      case 40: t.unkId = read.int32(f); break;
      case 41: t.bosId = read.int32(f); break;
      case 42: t.eosId = read.int32(f); break;
      case 43: t.padId = read.int32(f); break;
      case 44: t.unkSurface = read.string(f); break;
    }
  }
  return t;
}

function parseNormalizer(bytes: Uint8Array | undefined): NormalizerSpec {
  const n = { name: '', precompiledCharsmapBytes: 0, addDummyPrefix: true, removeExtraWhitespaces: true, escapeWhitespaces: true };
  for (const f of bytes === undefined ? [] : fields(bytes)) {
    switch (f.field) {
      case 1: n.name = read.string(f); break;
      case 2: n.precompiledCharsmapBytes = read.message(f).length; break;
      case 3: n.addDummyPrefix = read.bool(f); break;
      case 4: n.removeExtraWhitespaces = read.bool(f); break;
      case 5: n.escapeWhitespaces = read.bool(f); break;
    }
  }
  return n;
}

/** Parses the bytes of a `.model` file; `file` names it in errors. */
export function parseSentencePieceModel(bytes: Uint8Array, file: string): SentencePieceModel {
  const pieces: Piece[] = [];
  let trainer: Uint8Array | undefined;
  let normalizer: Uint8Array | undefined;
  try {
    for (const f of fields(bytes) as Iterable<Field>) {
      if (f.field === 1) pieces.push(parsePiece(read.message(f), pieces.length));
      else if (f.field === 2) trainer = read.message(f);
      else if (f.field === 3) normalizer = read.message(f);
    }
    const model = { pieces, trainer: parseTrainer(trainer), normalizer: parseNormalizer(normalizer) };
    if (pieces.length === 0) throw new ProtobufError('no pieces (is this a SentencePiece model file?)');
    return model;
  } catch (e) {
    if (e instanceof ProtobufError) throw new TokenizerError(`not a readable SentencePiece model: ${e.message}`, file);
    throw e;
  }
}

export function readSentencePieceModel(file: string): SentencePieceModel {
  const bytes = readTokenizerFile(file);
  return parseSentencePieceModel(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), file);
}
