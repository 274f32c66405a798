/**
 * Constrained decoding: before each token is chosen, every piece of the vocabulary that
 * would break the JSON schema gets logit −∞, so whatever the sampler picks keeps the text
 * valid; once the value is complete only the end ids remain.
 *
 *   const c = jsonConstraint(tok, schema, { endIds: [tok.eosId] });
 *   generateSync(model, prompt, { constraint: c });      // c.text parses and matches the schema
 *
 * Candidates are checked on a trie of the pieces' texts, so pieces that share a beginning
 * ("▁{", "▁{\"", …) share the matcher's work, and a dead branch prunes every piece under it.
 * Pieces are read as the text they decode to: "▁" is a space, a byte piece <0x7B> is "{";
 * byte pieces above 0x7F (parts of a UTF-8 character) and special tokens are never allowed
 * inside the JSON (a character outside ASCII is written by a piece that holds it whole).
 */
import { InputError } from '../model/errors.js';
import { canEnd, compileSchema, feedText, isFinished, startState, type MatchState, type SchemaNode } from './json-schema.js';

export { compileSchema, SchemaError, type SchemaNode } from './json-schema.js';

/** What generation asks of a constraint (see GenerateOptions.constraint). */
export interface TokenConstraint {
  /** The logits with every id that may not come next set to −∞ (a copy). */
  mask(logits: Float32Array): Float32Array;
  /** Records the chosen id; throws InputError when it was not allowed. */
  accept(id: number): void;
}

/** What a constraint needs of a tokenizer (both LoadedTokenizer kinds have it). */
export interface PieceSource {
  readonly vocabSize: number;
  idToPiece(id: number): string;
  isSpecial(id: number): boolean;
}

interface Trie {
  readonly children: Map<string, Trie>;
  readonly ids: number[];
}

const tries = new WeakMap<PieceSource, Trie>();

/** The text a piece adds to the output, or null when it may not appear in JSON. */
export function pieceText(tok: PieceSource, id: number): string | null {
  if (tok.isSpecial(id)) return null;
  const piece = tok.idToPiece(id);
  if (piece === '<unk>' || piece === '') return null;
  const byte = /^<0x([0-9A-Fa-f]{2})>$/.exec(piece);
  if (byte !== null) {
    const b = parseInt(byte[1]!, 16);
    return b < 0x80 ? String.fromCharCode(b) : null;
  }
  return piece.replace(/\u2581/g, ' ');
}

function trieOf(tok: PieceSource): Trie {
  let trie = tries.get(tok);
  if (trie !== undefined) return trie;
  trie = { children: new Map(), ids: [] };
  for (let id = 0; id < tok.vocabSize; id++) {
    const text = pieceText(tok, id);
    if (text === null) continue;
    let node = trie;
    for (const ch of text) {
      let next = node.children.get(ch);
      if (next === undefined) node.children.set(ch, (next = { children: new Map(), ids: [] }));
      node = next;
    }
    node.ids.push(id);
  }
  tries.set(tok, trie);
  return trie;
}

export interface JsonConstraintOptions {
  /** Ids that end the text, allowed once the value is complete (the EOS id). */
  readonly endIds: readonly number[];
  /** Ids forced before the JSON, in order (`[TOOL_CALLS]`). */
  readonly prefixIds?: readonly number[];
  /** Text forced before the JSON, written by ordinary pieces (e.g. "[TOOL_CALLS]" in a format without the control token). */
  readonly textPrefix?: string;
  /** Only ids below this are candidates (the model's vocabulary size, when smaller). */
  readonly vocabLimit?: number;
}

/** A constraint that makes generation write one JSON value matching `schema` (a JSON Schema, or a compiled node). */
export function jsonConstraint(tok: PieceSource, schema: unknown, opts: JsonConstraintOptions): JsonConstraint {
  const node = isNode(schema) ? schema : compileSchema(schema);
  return new JsonConstraint(tok, node, opts);
}

function isNode(x: unknown): x is SchemaNode {
  return typeof x === 'object' && x !== null && typeof (x as { kind?: unknown }).kind === 'string';
}

export class JsonConstraint implements TokenConstraint {
  private state: MatchState;
  private readonly trie: Trie;
  private readonly prefixIds: number[];
  private readonly limit: number;
  private ended = false;
  /** The JSON text written so far (after any prefix). */
  private written = '';

  constructor(private readonly tok: PieceSource, node: SchemaNode, private readonly opts: JsonConstraintOptions) {
    this.trie = trieOf(tok);
    this.state = startState(node, opts.textPrefix ?? '');
    this.prefixIds = [...(opts.prefixIds ?? [])];
    this.limit = Math.min(opts.vocabLimit ?? tok.vocabSize, tok.vocabSize);
  }

  /** The text the constraint has accepted (the forced text prefix included). */
  get text(): string {
    return this.written;
  }

  /** Whether the value is complete (an end id may come now). */
  get complete(): boolean {
    return this.prefixIds.length === 0 && canEnd(this.state);
  }

  /** The ids allowed next, ascending. */
  allowedIds(): number[] {
    if (this.ended) return [];
    if (this.prefixIds.length > 0) return [this.prefixIds[0]!];
    const ids: number[] = [];
    if (!isFinished(this.state)) this.walk(this.trie, this.state, ids);
    if (canEnd(this.state)) ids.push(...this.opts.endIds);
    const allowed = [...new Set(ids.filter((id) => id < this.limit))].sort((a, b) => a - b);
    if (allowed.length === 0) {
      throw new InputError(`constrained decoding is stuck after ${JSON.stringify(this.written)}: no piece of the vocabulary continues the JSON`);
    }
    return allowed;
  }

  private walk(node: Trie, state: MatchState, out: number[]): void {
    for (const [ch, child] of node.children) {
      const next = feedText(state, ch);
      if (next.length === 0) continue;
      out.push(...child.ids);
      if (child.children.size > 0) this.walk(child, next, out);
    }
  }

  mask(logits: Float32Array): Float32Array {
    const out = new Float32Array(logits.length).fill(-Infinity);
    for (const id of this.allowedIds()) out[id] = logits[id]!;
    return out;
  }

  accept(id: number): void {
    if (this.ended) throw new InputError(`constrained decoding: id ${id} after the end`);
    if (this.prefixIds.length > 0) {
      if (id !== this.prefixIds[0]) throw new InputError(`constrained decoding: expected id ${this.prefixIds[0]}, got ${id}`);
      this.prefixIds.shift();
      return;
    }
    if (this.opts.endIds.includes(id) && canEnd(this.state)) {
      this.ended = true;
      return;
    }
    const text = id < this.limit ? pieceText(this.tok, id) : null;
    const next = text === null ? [] : feedText(this.state, text);
    if (next.length === 0) throw new InputError(`constrained decoding: id ${id} (${JSON.stringify(text)}) does not continue ${JSON.stringify(this.written)}`);
    this.state = next;
    this.written += text;
  }
}
