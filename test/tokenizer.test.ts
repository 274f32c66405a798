/**
 * Tokenizers against python sentencepiece's goldens (corpus.json, goldens/*.json), the HF
 * tokenizer.json against the same goldens, the demo models' character tokenizer, and the
 * BPE rules on a hand-made model whose answers are worked out by hand.
 *
 * The tokenizer files are not in the repository: they are read from ../shared/golden/tokenizers
 * or from $MISTRAL_REF_TOKENIZERS; without them the golden tests are skipped (with a warning).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTokenizer, PieceType, SentencePieceTokenizer, TokenizerError } from '../src/tokenizer/index.js';
import { parseSentencePieceModel } from '../src/tokenizer/sentencepiece-model.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GOLDEN = process.env.MISTRAL_REF_TOKENIZERS ?? path.resolve(ROOT, '../shared/golden/tokenizers');
const HAVE_GOLDEN = fs.existsSync(path.join(GOLDEN, 'corpus.json'));
if (!HAVE_GOLDEN) {
  console.warn(`tokenizer goldens not found in ${GOLDEN}: golden tokenizer tests SKIPPED (set MISTRAL_REF_TOKENIZERS to the folder with tokenizer.model.v1 and goldens/)`);
}

const MODELS = ['tokenizer.model.v1', 'mistral_instruct_tokenizer_240323.model.v3', 'mistral_instruct_tokenizer_241114.model.v7'] as const;

interface GoldenCase { i: number; text: string; ids: number[]; pieces: string[]; byte_fallback_ids: number[]; decoded: string; roundtrip: boolean }
interface Golden {
  info: {
    vocab_size: number; bos_id: number; eos_id: number; unk_id: number;
    piece_type_counts: Record<string, number>; control_pieces: [number, string][]; user_defined_pieces: [number, string][];
  };
  cases: GoldenCase[];
  decode_cases: { label: string; ids: number[]; decoded: string }[];
}
const golden = (model: string): Golden => JSON.parse(fs.readFileSync(path.join(GOLDEN, 'goldens', `${model}.json`), 'utf8'));
const corpusLines = (): string[] => JSON.parse(fs.readFileSync(path.join(GOLDEN, 'corpus.json'), 'utf8')).lines;

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-tok-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe.skipIf(!HAVE_GOLDEN)('SentencePiece tokenizer.model files = python sentencepiece', () => {
  for (const model of MODELS) {
    describe(model, () => {
      const load = () => loadTokenizer(path.join(GOLDEN, model)) as Promise<SentencePieceTokenizer>;

      it('encodes every corpus line to the golden ids and pieces', async () => {
        const tok = await load();
        const g = golden(model);
        expect(g.cases.map((c) => c.text)).toEqual(corpusLines());
        expect(g.cases).toHaveLength(63);
        const wrong = g.cases.filter((c) => {
          const got = tok.encodePieces(c.text);
          return JSON.stringify(got.map((p) => p.id)) !== JSON.stringify(c.ids) || JSON.stringify(got.map((p) => p.piece)) !== JSON.stringify(c.pieces);
        });
        expect(wrong.map((c) => c.i)).toEqual([]);
      });

      it('uses byte fallback exactly where sentencepiece does', async () => {
        const tok = await load();
        for (const c of golden(model).cases) {
          expect(tok.encode(c.text).filter((id) => tok.pieceType(id) === PieceType.Byte), `line ${c.i}`).toEqual(c.byte_fallback_ids);
        }
      });

      it('decodes every golden id list to the golden text, round-tripping where sentencepiece does', async () => {
        const tok = await load();
        for (const c of golden(model).cases) {
          expect(tok.decode(c.ids), `line ${c.i}`).toBe(c.decoded);
          expect(tok.decode(tok.encode(c.text)) === c.text, `line ${c.i} round trip`).toBe(c.roundtrip);
        }
      });

      it('decodes the decode edge cases (control ids, <unk>, bytes, invalid UTF-8, lone ▁)', async () => {
        const tok = await load();
        const cases = golden(model).decode_cases;
        expect(cases.length).toBeGreaterThanOrEqual(10);
        for (const d of cases) expect(tok.decode(d.ids), d.label).toBe(d.decoded);
      });

      it('has the golden vocabulary: size, special ids, control and user-defined pieces', async () => {
        const tok = await load();
        const { info } = golden(model);
        expect([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId]).toEqual([info.vocab_size, info.bos_id, info.eos_id, info.unk_id]);
        const counts: Record<string, number> = {};
        for (let id = 0; id < tok.vocabSize; id++) {
          const name = PieceType[tok.pieceType(id)].replace(/([a-z])([A-Z])/g, '$1_$2').toUpperCase();
          counts[name] = (counts[name] ?? 0) + 1;
        }
        expect(counts).toEqual(info.piece_type_counts);
        for (const [id, piece] of info.control_pieces) {
          expect(tok.specialId(piece)).toBe(id);
          expect(tok.isSpecial(id)).toBe(true);
          expect(tok.decode([id]), piece).toBe(''); // control ids are invisible
          expect(tok.decode([id], { skipSpecial: false })).toBe(piece);
        }
        for (const [id, piece] of info.user_defined_pieces) {
          expect(tok.encode(piece)).toEqual([tok.pieceToId('▁'), id]); // matched whole, after the dummy prefix
        }
        expect(tok.chatFormat).toBe(`mistral-${model.slice(-2)}`);
      });
    });
  }

  it('never produces control ids from text, even spelled exactly', async () => {
    const tok = await loadTokenizer(path.join(GOLDEN, MODELS[1]));
    const ids = tok.encode('<s>[INST] hi [/INST][TOOL_CALLS]</s>');
    expect(ids.filter((id) => tok.isSpecial(id))).toEqual([]);
  });

  it('picks the highest tokenizer.model.v* of a folder', async () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'folder-'));
    for (const [name, target] of [['tokenizer.model.v3', MODELS[1]], ['tokenizer.model.v7', MODELS[2]], ['tokenizer.model', MODELS[0]]]) {
      fs.symlinkSync(path.join(GOLDEN, target!), path.join(dir, name!));
    }
    fs.symlinkSync(path.join(GOLDEN, 'hf-mistral-7b-v0.1', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const tok = await loadTokenizer(dir);
    expect(tok.source).toBe(path.join(dir, 'tokenizer.model.v7'));
    expect(tok.chatFormat).toBe('mistral-v7');
  });
});

describe.skipIf(!HAVE_GOLDEN)('HF tokenizer.json (Mistral-7B-v0.1) through @huggingface/tokenizers', () => {
  const load = () => loadTokenizer(path.join(GOLDEN, 'hf-mistral-7b-v0.1', 'tokenizer.json'));
  /**
   * Where HF differs from sentencepiece. Line 50 is documented in the golden README (HF
   * matches its special tokens in text). The others start with a space (or "▁"): Metaspace
   * with `prepend_scheme: "first"` adds no "▁" to text that already starts with one, so the
   * first piece, all whitespace, is one "▁" shorter than sentencepiece's (it was its dummy prefix).
   */
  const WHITESPACE: Record<string, number> = { '▁': 28705, '▁▁': 259, '▁▁▁': 2287, '▁▁▁▁': 260 };
  const oneSpaceLess = (c: GoldenCase) => {
    const first = c.pieces[0]!.slice(1);
    return [...(first === '' ? [] : [WHITESPACE[first]!]), ...c.ids.slice(1)];
  };
  const DIFFERENT: Record<number, (c: GoldenCase) => number[]> = {
    35: oneSpaceLess, // " leading space"
    37: oneSpaceLess, // "  two leading spaces"
    39: oneSpaceLess, // "   "
    40: oneSpaceLess, // " "
    58: oneSpaceLess, // "▁ literal U+2581 …"
    // "<s> not a special token </s>": <s> and </s> are ids 1 and 2; the text between them is
    // not at the start, so it gets no prefix: ▁not ▁a ▁special ▁token ▁ (sentencepiece: ▁< s > ▁not … ▁</ s >)
    50: (c) => [1, ...c.ids.slice(3, 7), WHITESPACE['▁']!, 2],
  };

  it('has exactly tokenizer.model.v1\'s vocabulary', async () => {
    const hf = await load();
    for (const [piece, id] of Object.entries(WHITESPACE)) expect(hf.pieceToId(piece)).toBe(id);
    const sp = await loadTokenizer(path.join(GOLDEN, MODELS[0]));
    expect(hf.vocabSize).toBe(32000);
    for (let id = 0; id < sp.vocabSize; id++) if (hf.idToPiece(id) !== sp.idToPiece(id)) expect(hf.idToPiece(id), `id ${id}`).toBe(sp.idToPiece(id));
    expect([hf.bosId, hf.eosId, hf.specialId('<s>'), hf.specialId('</s>'), hf.specialId('<unk>')]).toEqual([1, 2, 1, 2, 0]);
  });

  it('encodes 57 of 63 corpus lines as sentencepiece does, and the other 6 as documented', async () => {
    const hf = await load();
    const { cases } = golden(MODELS[0]);
    const same = cases.filter((c) => !(c.i in DIFFERENT));
    expect(same).toHaveLength(57);
    for (const c of same) expect(hf.encode(c.text), `line ${c.i}`).toEqual(c.ids);
    for (const [i, expected] of Object.entries(DIFFERENT)) {
      const c = cases[Number(i)]!;
      expect(c.pieces[0]!.startsWith('▁')).toBe(true);
      expect(hf.encode(c.text), `line ${i} ${JSON.stringify(c.text)}`).toEqual(expected(c));
      expect(hf.encode(c.text)).not.toEqual(c.ids);
    }
  });

  it('decodes every golden id list to the golden text', async () => {
    const hf = await load();
    for (const c of golden(MODELS[0]).cases) expect(hf.decode(c.ids), `line ${c.i}`).toBe(c.decoded);
  });

  it('decodes special ids as HF does: dropped by default, written out with skipSpecial false; <unk> is special', async () => {
    const hf = await load();
    expect(hf.decode([1, 22557, 1526, 2])).toBe('Hello world');
    expect(hf.decode([1, 22557, 1526, 2], { skipSpecial: false })).toBe('<s> Hello world</s>');
    expect(hf.decode([0])).toBe(''); // sentencepiece: " ⁇ "
    expect(hf.decode([])).toBe('');
    expect(hf.encode('Hello world', { bos: true })).toEqual([1, 22557, 1526]);
  });
});

describe('the demo models\' character tokenizer (tokenizer.json, WordLevel)', () => {
  for (const model of ['mistral-demo', 'mixtral-demo']) {
    it(`${model}: one id per character, id = code point − 28, <s> = 1`, async () => {
      const tok = await loadTokenizer(path.join(ROOT, 'models', model));
      expect(tok.kind).toBe('huggingface');
      expect(tok.encode('47+38=', { bos: true })).toEqual([1, 24, 27, 15, 23, 28, 33]);
      expect(tok.encode('47+38=')).toEqual([24, 27, 15, 23, 28, 33]);
      expect(tok.decode([1, 24, 27, 15, 23, 28, 33])).toBe('47+38=');
      expect(tok.decode([1, 24, 27, 15, 23, 28, 33], { skipSpecial: false })).toBe('<s>47+38=');
      const ascii = Array.from({ length: 95 }, (_, i) => String.fromCharCode(32 + i)).join('');
      expect(tok.encode(`${ascii}\n`)).toEqual([...Array.from({ length: 95 }, (_, i) => 4 + i), 3]);
      expect(tok.decode(tok.encode(`${ascii}\n`))).toBe(`${ascii}\n`);
      expect([tok.vocabSize, tok.bosId, tok.eosId, tok.idToPiece(69), tok.pieceToId('a')]).toEqual([99, 1, 2, 'a', 69]);
      expect(tok.encode('')).toEqual([]);
      expect(tok.chatFormat).toBe('mistral-v1');
    });
  }
});

describe('errors name the file and what is wrong', () => {
  const message = async (p: Promise<unknown> | (() => unknown)) => {
    try {
      await (typeof p === 'function' ? p() : p);
    } catch (e) {
      expect(e).toBeInstanceOf(TokenizerError);
      return (e as Error).message;
    }
    throw new Error('expected a TokenizerError');
  };

  it('a missing path, an empty folder, a tekken.json', async () => {
    expect(await message(loadTokenizer(path.join(tmp, 'nope')))).toBe(`${path.join(tmp, 'nope')}: no such file or folder`);
    const empty = fs.mkdtempSync(path.join(tmp, 'empty-'));
    expect(await message(loadTokenizer(empty))).toBe(`${empty}: no tokenizer here (looked for tokenizer.model.v*, tokenizer.model, tokenizer.json)`);
    fs.writeFileSync(path.join(empty, 'tekken.json'), '{}');
    expect(await message(loadTokenizer(empty))).toBe(`${path.join(empty, 'tekken.json')}: tekken.json (Tekken, tiktoken-based) tokenizers are not supported`);
  });

  it('a file that is not a SentencePiece model, truncated or empty', async () => {
    const f = path.join(tmp, 'tokenizer.model');
    fs.writeFileSync(f, 'hello, not protobuf');
    // 'h' = 0x68: field 13, varint; 'e' its value; 'l' = 0x6c: field 13, wire type 4 (a group, long obsolete)
    expect(await message(loadTokenizer(f))).toBe(`${f}: not a readable SentencePiece model: unsupported wire type 4 (field 13) at byte 3`);
    fs.writeFileSync(f, Buffer.from([0x0a, 0x05, 0x0a, 0x01]));
    expect(await message(loadTokenizer(f))).toBe(`${f}: not a readable SentencePiece model: field of 5 bytes at byte 2 runs past the end (4 bytes)`);
    fs.writeFileSync(f, Buffer.alloc(0));
    expect(await message(loadTokenizer(f))).toBe(`${f}: not a readable SentencePiece model: no pieces (is this a SentencePiece model file?)`);
  });

  it('a tokenizer.json that is not JSON', async () => {
    const f = path.join(fs.mkdtempSync(path.join(tmp, 'json-')), 'tokenizer.json');
    fs.writeFileSync(f, '{"model": ');
    expect(await message(loadTokenizer(f))).toMatch(/^.*tokenizer\.json: not valid JSON: /);
  });

  it('ids outside the vocabulary', async () => {
    const tok = await loadTokenizer(path.join(ROOT, 'models', 'mistral-demo'));
    const src = path.join(ROOT, 'models', 'mistral-demo', 'tokenizer.json');
    expect(await message(() => tok.decode([1, 99]))).toBe(`${src}: token id 99 is outside the vocabulary [0, 99)`);
    expect(await message(() => tok.idToPiece(-1))).toBe(`${src}: token id -1 is outside the vocabulary [0, 99)`);
    const sp = handMade();
    expect(await message(() => sp.decode([2.5]))).toBe('hand-made: token id 2.5 is outside the vocabulary [0, 18)');
  });
});

// --- A hand-made model, to test the BPE rules on cases small enough to work out by hand. ---

const varint = (n: number): number[] => {
  const out: number[] = [];
  let v = BigInt.asUintN(64, BigInt(n));
  do {
    const b = Number(v & 0x7fn);
    v >>= 7n;
    out.push(v > 0n ? b | 0x80 : b);
  } while (v > 0n);
  return out;
};
const field = (n: number, wire: number) => varint((n << 3) | wire);
const bytesField = (n: number, b: readonly number[]) => [...field(n, 2), ...varint(b.length), ...b];
const strField = (n: number, s: string) => bytesField(n, [...Buffer.from(s, 'utf8')]);
const intField = (n: number, v: number) => [...field(n, 0), ...varint(v)];
const floatField = (n: number, x: number) => {
  const b = Buffer.alloc(4);
  b.writeFloatLE(x);
  return [...field(n, 5), ...b];
};

/** [piece, score, type] */
const PIECES: [string, number, PieceType][] = [
  ['<unk>', 0, PieceType.Unknown], ['<s>', 0, PieceType.Control], ['</s>', 0, PieceType.Control], ['[CTRL]', 0, PieceType.Control],
  ['[U]', 0, PieceType.UserDefined], ['<0xC3>', 0, PieceType.Byte], ['<0xA9>', 0, PieceType.Byte], ['<0x0A>', 0, PieceType.Byte],
  ['▁', -10, PieceType.Normal], ['a', -10, PieceType.Normal], ['b', -10, PieceType.Normal], ['c', -10, PieceType.Normal], ['d', -10, PieceType.Normal],
  ['ab', -2, PieceType.Normal], ['bc', -1, PieceType.Normal], ['cd', -1, PieceType.Normal], ['abc', -3, PieceType.Normal],
  ['bcd', 0, PieceType.Unused],
];
const ID = Object.fromEntries(PIECES.map(([p], i) => [p, i]));

function handMade(opts: { modelType?: number; normalizer?: string; removeExtraWhitespaces?: boolean } = {}): SentencePieceTokenizer {
  const bytes = [
    ...PIECES.flatMap(([piece, score, type]) => bytesField(1, [...strField(1, piece), ...floatField(2, score), ...intField(3, type)])),
    ...bytesField(2, [...intField(3, opts.modelType ?? 2), ...intField(4, PIECES.length), ...intField(35, 1), ...intField(43, -1)]),
    ...bytesField(3, [...strField(1, opts.normalizer ?? 'identity'), ...intField(3, 1), ...intField(4, opts.removeExtraWhitespaces ? 1 : 0), ...intField(5, 1)]),
  ];
  return new SentencePieceTokenizer(parseSentencePieceModel(new Uint8Array(bytes), 'hand-made'), 'hand-made');
}

describe('SentencePiece BPE rules on a hand-made model', () => {
  const pieces = (text: string) => handMade().encodePieces(text).map((p) => p.piece);

  it('reads the model: pieces, types, trainer and normalizer flags', () => {
    const tok = handMade();
    expect([tok.vocabSize, tok.bosId, tok.eosId, tok.unkId]).toEqual([18, 1, 2, 0]);
    expect(tok.model.trainer.padId).toBe(-1); // a negative int32 is a 10-byte varint
    expect(tok.model.pieces[ID['ab']!]).toEqual({ piece: 'ab', score: -2, type: PieceType.Normal });
    expect(tok.model.normalizer).toMatchObject({ name: 'identity', addDummyPrefix: true, removeExtraWhitespaces: false });
  });

  it('merges the highest-scoring pair first: ▁ a b c → ▁ a bc → ▁ abc', () => {
    // bc (−1) beats ab (−2); then a+bc = abc (−3) is in the vocabulary, ▁+abc is not.
    expect(pieces('abc')).toEqual(['▁', 'abc']);
  });

  it('breaks score ties to the left, and splits an UNUSED piece back into the pair it came from', () => {
    // ▁ b c d: bc and cd both score −1, bc is further left → ▁ bc d → bc+d = bcd (UNUSED, 0)
    // → output as its parts bc, d. Taking cd first would give b+cd and output b, cd.
    expect(pieces('bcd')).toEqual(['▁', 'bc', 'd']);
  });

  it('matches user-defined pieces whole and never merges across them; control pieces are not matched', () => {
    expect(pieces('ab[U]ab')).toEqual(['▁', 'ab', '[U]', 'ab']);
    expect(handMade().encode('[CTRL]')).toEqual([ID['▁'], 0, 0, 0, 0, 0, 0]); // six characters, none in the vocabulary, no byte pieces for them
  });

  it('falls back to UTF-8 byte pieces, and decodes them back', () => {
    const tok = handMade();
    const ids = tok.encode('é\n');
    expect(ids).toEqual([ID['▁'], ID['<0xC3>'], ID['<0xA9>'], ID['<0x0A>']]);
    expect(tok.decode(ids)).toBe('é\n'); // "▁" is the dummy prefix
    expect(tok.decode([ID['<0xC3>']])).toBe('\uFFFD');
    expect(tok.decode([ID['<0xA9>'], ID['a']])).toBe('\uFFFDa');
  });

  it('decodes: dummy prefix stripped once, <unk> as " ⁇ ", controls invisible', () => {
    const tok = handMade();
    expect(tok.decode([ID['<s>']!, ID['▁']!, ID['a']!, ID['▁']!, ID['b']!])).toBe('a b');
    expect(tok.decode([ID['▁']!, ID['▁']!, ID['a']!])).toBe(' a');
    expect(tok.decode([ID['a']!, ID['[CTRL]']!, ID['▁']!, ID['b']!])).toBe('a b');
    expect(tok.decode([0, ID['▁']!, ID['a']!])).toBe(' \u2047  a');
  });

  it('removes extra whitespace when the normalizer asks for it', () => {
    const tok = handMade({ removeExtraWhitespaces: true });
    expect(tok.encodePieces('  a   b ').map((p) => p.piece)).toEqual(['▁', 'a', '▁', 'b']);
    expect(tok.encode('   ')).toEqual([]);
    expect(tok.decode([ID['▁']!, ID['▁']!, ID['a']!])).toBe('a'); // that mode strips every leading space
  });

  it('rejects models it would get wrong: unigram, a non-identity normalizer', () => {
    expect(() => handMade({ modelType: 1 })).toThrow(new TokenizerError('only BPE SentencePiece models are supported, this one is unigram', 'hand-made'));
    expect(() => handMade({ normalizer: 'nmt_nfkc' })).toThrow(new TokenizerError('only the identity normalizer is supported, this model uses "nmt_nfkc"', 'hand-made'));
  });
});
