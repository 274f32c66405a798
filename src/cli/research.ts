/** What the research commands (attribute, patch) share: prompts, answer tokens, labels. */
import { loadTokenizer, type LoadedTokenizer } from '../tokenizer/index.js';
import { idList } from './args.js';
import { encodePrompt, hasTokenizer, TOKENIZER_FILES } from './common.js';
import { UsageError } from './errors.js';

/** The model folder's tokenizer, or null when it has none. */
export async function optionalTokenizer(dir: string): Promise<LoadedTokenizer | null> {
  return hasTokenizer(dir) ? loadTokenizer(dir) : null;
}

/** A prompt given as text (`textFlag`, encoded with BOS) or as ids (`idsFlag`): exactly one. */
export function promptIds(values: Readonly<Record<string, string | boolean | undefined>>, textFlag: string, idsFlag: string,
  tok: LoadedTokenizer | null, dir: string): number[] {
  const text = values[textFlag] as string | undefined;
  const ids = values[idsFlag] as string | undefined;
  if ((text === undefined) === (ids === undefined)) throw new UsageError(`give exactly one of --${textFlag} and --${idsFlag}`);
  if (ids !== undefined) return idList(ids, `--${idsFlag}`);
  if (tok === null) throw new UsageError(`--${textFlag} needs a tokenizer in ${dir} (${TOKENIZER_FILES}); give --${idsFlag} instead`);
  return encodePrompt(tok, text!, `--${textFlag}`, true);
}

/**
 * `--answer` / `--wrong`: with a tokenizer, a vocabulary piece is looked up first (so `8`
 * is the digit's token in a model that has one); otherwise an integer is a token id.
 */
export function tokenArg(value: string | undefined, flag: string, tok: LoadedTokenizer | null, vocabSize: number): number {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required (a token id${tok ? ' or a vocabulary piece' : ''})`);
  const piece = tok?.pieceToId(value);
  if (piece !== undefined) return piece;
  const id = Number(value);
  if (!/^\d+$/.test(value.trim()) || !Number.isSafeInteger(id)) {
    throw new UsageError(tok ? `${flag}: ${JSON.stringify(value)} is neither a piece of the tokenizer's vocabulary nor a token id`
      : `${flag} expects a token id (the model folder has no tokenizer to look pieces up in), got ${JSON.stringify(value)}`);
  }
  if (id >= vocabSize) throw new UsageError(`${flag}: token id ${id} is outside the vocabulary [0, ${vocabSize})`);
  return id;
}

/** How a token shows in text output: `8 ("8")`, or the id alone. */
export function tokenName(id: number, tok: LoadedTokenizer | null): string {
  return tok === null ? String(id) : `${id} (${JSON.stringify(tok.idToPiece(id))})`;
}
