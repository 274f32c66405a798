/**
 * SentencePiece BPE tokenizer, reading Mistral's `tokenizer.model*` files directly; matches
 * python `sentencepiece` (`encode(text)` / `decode(ids)`) id for id (tested on the goldens).
 *
 * Encoding, worked through on "Hi 👋\n" with tokenizer.model.v1:
 *
 *   normalize     "Hi 👋\n" → "▁Hi▁👋\n"       dummy prefix "▁" in front, every " " → "▁"
 *                                              (identity normalizer: nothing else changes)
 *   segment       ▁Hi  ▁  👋  \n               BPE merges by piece score (bpe.ts)
 *   byte fallback "👋" and "\n" are not pieces → their UTF-8 bytes <0xF0><0x9F><0x91><0x8B> <0x0A>
 *
 * Control pieces (`<s>`, `[INST]`, …) are not in the merge vocabulary, so text never
 * produces them: "[INST]" in text is spelled with ordinary pieces. User-defined pieces
 * (`[REFERENCE_DOC_1]` in v3) are matched whole before merging.
 *
 * Decoding is the reverse, with SentencePiece's rules: "▁" → " ", the first piece that
 * produces text loses its leading space (the dummy prefix), control ids produce nothing,
 * `<unk>` produces " ⁇ ", runs of byte pieces are decoded as UTF-8 with each invalid
 * byte → U+FFFD.
 */
import { bpeSegment, type BpeVocab } from './bpe.js';
import type { AssistantOutput, ChatRequest } from './chat-types.js';
import { encodeInstruct, type InstructVersion } from './instruct.js';
import { parseAssistantIds } from './tool-calls.js';
import { TokenizerError } from './errors.js';
import { MODEL_TYPES, PieceType, type SentencePieceModel } from './sentencepiece-model.js';
import type { ChatFormat, LoadedTokenizer } from './types.js';

const SPACE = '\u2581'; // "▁", SentencePiece's visible space

export class SentencePieceTokenizer implements LoadedTokenizer {
  readonly kind = 'sentencepiece';
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly unkId: number;
  readonly chatFormat: ChatFormat;
  private readonly vocab: BpeVocab;
  /** Every piece → id, control and byte pieces included. */
  private readonly allIds = new Map<string, number>();
  private readonly controlIds = new Map<string, number>();
  /** Byte value → id of its `<0xHH>` piece. */
  private readonly byteIds: (number | undefined)[] = new Array(256);

  constructor(readonly model: SentencePieceModel, readonly source: string, version?: InstructVersion) {
    const { trainer, normalizer, pieces } = model;
    if (trainer.modelType !== 2) {
      throw new TokenizerError(`only BPE SentencePiece models are supported, this one is ${MODEL_TYPES[trainer.modelType] ?? `type ${trainer.modelType}`}`, source);
    }
    if (normalizer.precompiledCharsmapBytes > 0 || (normalizer.name !== '' && normalizer.name !== 'identity')) {
      throw new TokenizerError(`only the identity normalizer is supported, this model uses ${JSON.stringify(normalizer.name)}`, source);
    }
    if (trainer.treatWhitespaceAsSuffix) throw new TokenizerError('treat_whitespace_as_suffix models are not supported', source);
    const check = (what: string, id: number) => {
      if (id >= pieces.length) throw new TokenizerError(`${what} ${id} is outside the vocabulary (${pieces.length} pieces)`, source);
    };
    check('unk_id', trainer.unkId);
    check('bos_id', trainer.bosId);
    check('eos_id', trainer.eosId);

    const ids = new Map<string, number>();
    const userDefined = new Map<string, string[]>();
    pieces.forEach((p, id) => {
      if (!this.allIds.has(p.piece)) this.allIds.set(p.piece, id);
      switch (p.type) {
        case PieceType.Normal:
        case PieceType.Unused:
          ids.set(p.piece, id);
          break;
        case PieceType.UserDefined: {
          ids.set(p.piece, id);
          const first = String.fromCodePoint(p.piece.codePointAt(0)!);
          userDefined.set(first, [...(userDefined.get(first) ?? []), p.piece].sort((a, b) => b.length - a.length));
          break;
        }
        case PieceType.Control:
          this.controlIds.set(p.piece, id);
          break;
        case PieceType.Byte: {
          const m = /^<0x([0-9A-F]{2})>$/.exec(p.piece);
          if (m === null) throw new TokenizerError(`byte piece ${id} is ${JSON.stringify(p.piece)}, expected <0xHH>`, source);
          this.byteIds[parseInt(m[1]!, 16)] = id;
          break;
        }
      }
    });
    this.vocab = {
      ids,
      score: (id) => pieces[id]!.score,
      isUnused: (id) => pieces[id]!.type === PieceType.Unused,
      userDefined,
    };
    this.vocabSize = pieces.length;
    this.bosId = trainer.bosId >= 0 ? trainer.bosId : null;
    this.eosId = trainer.eosId >= 0 ? trainer.eosId : null;
    this.unkId = trainer.unkId;
    this.chatFormat = `mistral-${version ?? inferVersion(this.controlIds)}`;
  }

  /** SentencePiece's normalization with the identity rule: dummy prefix and visible spaces. */
  normalize(text: string): string {
    const { addDummyPrefix, removeExtraWhitespaces, escapeWhitespaces } = this.model.normalizer;
    let s = toWellFormed(text);
    if (removeExtraWhitespaces) s = s.replace(/^ +| +$/g, '').replace(/ {2,}/g, ' ');
    if (s === '') return '';
    if (addDummyPrefix) s = ' ' + s;
    return escapeWhitespaces ? s.replaceAll(' ', SPACE) : s;
  }

  /** Text → pieces with their ids, after byte fallback (no BOS). */
  encodePieces(text: string): { piece: string; id: number }[] {
    const out: { piece: string; id: number }[] = [];
    for (const piece of bpeSegment(this.normalize(text), this.vocab)) {
      const id = this.vocab.ids.get(piece);
      if (id !== undefined) {
        out.push({ piece, id });
      } else if (this.model.trainer.byteFallback) {
        for (const b of new TextEncoder().encode(piece)) {
          const byteId = this.byteIds[b];
          out.push(byteId === undefined ? { piece, id: this.unkId } : { piece: this.model.pieces[byteId]!.piece, id: byteId });
        }
      } else {
        out.push({ piece, id: this.unkId });
      }
    }
    return out;
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = this.encodePieces(text).map((p) => p.id);
    if (opts.bos) {
      if (this.bosId === null) throw new TokenizerError('this tokenizer has no BOS id', this.source);
      ids.unshift(this.bosId);
    }
    return ids;
  }

  /**
   * With `skipSpecial: false`, control pieces are written out as their text ("<s>", "[INST]")
   * instead of being dropped; everything else is unchanged.
   */
  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    const skipSpecial = opts.skipSpecial ?? true;
    const { pieces, trainer, normalizer } = this.model;
    const stripsPrefix = normalizer.addDummyPrefix || normalizer.removeExtraWhitespaces;
    let text = '';
    let bytes: number[] = [];
    // The dummy prefix: while nothing has been written, the first piece that starts with
    // "▁" loses it; once one has (even "▁" alone, which then writes nothing), no other does.
    let atStart = true;
    let prefixTaken = false;
    for (const id of ids) {
      const p = pieces[this.checkId(id)]!;
      if (p.type === PieceType.Byte) {
        bytes.push(parseInt(p.piece.slice(3, 5), 16));
        continue;
      }
      text += decodeUtf8Bytes(bytes);
      bytes = [];
      if (prefixTaken || text !== '') atStart = false;
      prefixTaken = false;
      if (p.type === PieceType.Control) {
        if (!skipSpecial) text += p.piece;
      } else if (p.type === PieceType.Unknown) {
        text += trainer.unkSurface;
      } else {
        let piece = p.piece;
        if (atStart && stripsPrefix && piece.startsWith(SPACE)) {
          piece = piece.slice(SPACE.length);
          prefixTaken = !normalizer.removeExtraWhitespaces; // that mode strips every leading "▁"
        }
        text += piece.replaceAll(SPACE, ' ');
      }
    }
    return text + decodeUtf8Bytes(bytes);
  }

  idToPiece(id: number): string {
    return this.model.pieces[this.checkId(id)]!.piece;
  }

  pieceToId(piece: string): number | undefined {
    return this.allIds.get(piece);
  }

  specialId(text: string): number | undefined {
    return this.controlIds.get(text);
  }

  isSpecial(id: number): boolean {
    return this.model.pieces[this.checkId(id)]!.type === PieceType.Control;
  }

  /** Type of one piece (NORMAL, CONTROL, BYTE, …), for tables and tests. */
  pieceType(id: number): PieceType {
    return this.model.pieces[this.checkId(id)]!.type;
  }

  encodeChat(request: ChatRequest, opts: { format?: ChatFormat } = {}): number[] {
    const format = opts.format ?? this.chatFormat;
    if (format === 'chat-template') throw new TokenizerError('a SentencePiece model has no chat_template; use a mistral-v1/v3/v7 format', this.source);
    return encodeInstruct(this, request, format.slice('mistral-'.length) as InstructVersion);
  }

  parseAssistant(ids: readonly number[]): AssistantOutput {
    return parseAssistantIds(this, ids);
  }

  private checkId(id: number): number {
    if (!Number.isInteger(id) || id < 0 || id >= this.vocabSize) {
      throw new TokenizerError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`, this.source);
    }
    return id;
  }
}

/** v7 has `[SYSTEM_PROMPT]`, v3 `[TOOL_CALLS]` and `[INST]` as control pieces, v1 neither. */
function inferVersion(controls: ReadonlyMap<string, number>): InstructVersion {
  if (controls.has('[SYSTEM_PROMPT]')) return 'v7';
  if (controls.has('[INST]') && controls.has('[TOOL_CALLS]')) return 'v3';
  return 'v1';
}

/** Lone surrogates (which UTF-8 cannot hold) → U+FFFD, as TextEncoder does. */
function toWellFormed(s: string): string {
  return s.replace(/[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g, '\uFFFD');
}

/**
 * UTF-8 bytes → text, SentencePiece's way (`DecodeUTF8`): a well-formed character of 1–4
 * bytes (no overlong forms, no surrogates, ≤ U+10FFFF) is decoded; otherwise ONE byte
 * becomes U+FFFD and decoding resumes at the next byte.
 */
export function decodeUtf8Bytes(bytes: readonly number[]): string {
  let out = '';
  const trail = (i: number) => i < bytes.length && (bytes[i]! & 0xc0) === 0x80;
  for (let i = 0; i < bytes.length;) {
    const b = bytes[i]!;
    let cp = -1;
    let len = 1;
    if (b < 0x80) {
      cp = b;
    } else if ((b & 0xe0) === 0xc0 && trail(i + 1)) {
      cp = ((b & 0x1f) << 6) | (bytes[i + 1]! & 0x3f);
      len = 2;
      if (cp < 0x80) cp = -1;
    } else if ((b & 0xf0) === 0xe0 && trail(i + 1) && trail(i + 2)) {
      cp = ((b & 0x0f) << 12) | ((bytes[i + 1]! & 0x3f) << 6) | (bytes[i + 2]! & 0x3f);
      len = 3;
      if (cp < 0x800 || (cp >= 0xd800 && cp < 0xe000)) cp = -1;
    } else if ((b & 0xf8) === 0xf0 && trail(i + 1) && trail(i + 2) && trail(i + 3)) {
      cp = ((b & 0x07) << 18) | ((bytes[i + 1]! & 0x3f) << 12) | ((bytes[i + 2]! & 0x3f) << 6) | (bytes[i + 3]! & 0x3f);
      len = 4;
      if (cp < 0x10000 || cp > 0x10ffff) cp = -1;
    }
    if (cp < 0) {
      out += '\uFFFD';
      i += 1;
    } else {
      out += String.fromCodePoint(cp);
      i += len;
    }
  }
  return out;
}
