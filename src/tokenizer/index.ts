/**
 * Tokenizers: Mistral's SentencePiece `tokenizer.model*` files (read directly, exact to
 * python sentencepiece) and Hugging Face `tokenizer.json` (through @huggingface/tokenizers),
 * with Mistral's instruct formats and function calling on top.
 *
 *   const tok = await loadTokenizer('models/mistral-demo');       // a folder or a file
 *   tok.encode('47+38=', { bos: true });                          // [1, 24, 27, 15, 23, 28, 33]
 *   tok.encodeChat({ messages: [{ role: 'user', content: 'Hi' }] });
 *   tok.parseAssistant(generatedIds);                             // {content, tool_calls}
 *
 * This module stands alone: it imports nothing else of mistral-ref.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TokenizerError } from './errors.js';
import { HuggingFaceTokenizer } from './huggingface.js';
import type { InstructVersion } from './instruct.js';
import { SentencePieceTokenizer } from './sentencepiece.js';
import { readSentencePieceModel } from './sentencepiece-model.js';
import type { LoadedTokenizer } from './types.js';

export type { ChatFormat, LoadedTokenizer, Tokenizer } from './types.js';
export type { AssistantOutput, ChatMessage, ChatRequest, ParsedToolCall, Tool, ToolCall } from './chat-types.js';
export { ChatFormatError, TokenizerError, ToolCallParseError } from './errors.js';
export type { InstructVersion } from './instruct.js';
export { parseToolCalls, randomCallId } from './tool-calls.js';
export { HuggingFaceTokenizer } from './huggingface.js';
export { SentencePieceTokenizer } from './sentencepiece.js';
export { PieceType } from './sentencepiece-model.js';

/** `tokenizer.model.v7` → "v7"; the version selects the instruct format. */
function versionOf(file: string): InstructVersion | undefined {
  const m = /\.model\.(v\d+)$/.exec(file);
  if (m === null) return undefined;
  if (m[1] === 'v1' || m[1] === 'v3' || m[1] === 'v7') return m[1];
  throw new TokenizerError(`instruct format ${m[1]} is not implemented (v1, v3 and v7 are)`, file);
}

/**
 * The tokenizer file of a model folder, in order of preference: Mistral's own versioned
 * `tokenizer.model.v*` (the highest version), a plain `tokenizer.model`, then `tokenizer.json`.
 * SentencePiece files come first because they define Mistral's instruct formats exactly.
 */
export function findTokenizerFile(dir: string): string {
  const names = fs.readdirSync(dir);
  const versioned = names
    .filter((n) => /^tokenizer\.model\.v\d+$/.test(n) || /^mistral_instruct_tokenizer_.*\.model\.v\d+$/.test(n))
    .sort((a, b) => Number(/v(\d+)$/.exec(b)![1]) - Number(/v(\d+)$/.exec(a)![1]));
  const pick = versioned[0] ?? ['tokenizer.model', 'tokenizer.json'].find((n) => names.includes(n));
  if (pick !== undefined) return path.join(dir, pick);
  if (names.includes('tekken.json')) throw new TokenizerError('tekken.json (Tekken, tiktoken-based) tokenizers are not supported', path.join(dir, 'tekken.json'));
  throw new TokenizerError('no tokenizer here (looked for tokenizer.model.v*, tokenizer.model, tokenizer.json)', dir);
}

/** Loads a tokenizer file, or the tokenizer of a model folder. */
export async function loadTokenizer(file: string): Promise<LoadedTokenizer> {
  return loadTokenizerSync(file);
}

export function loadTokenizerSync(file: string): LoadedTokenizer {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(file);
  } catch {
    throw new TokenizerError('no such file or folder', file);
  }
  const target = stat.isDirectory() ? findTokenizerFile(file) : file;
  const base = path.basename(target);
  if (base.endsWith('.json')) {
    if (base === 'tekken.json') throw new TokenizerError('tekken.json (Tekken, tiktoken-based) tokenizers are not supported', target);
    return HuggingFaceTokenizer.fromFile(target);
  }
  return new SentencePieceTokenizer(readSentencePieceModel(target), target, versionOf(base));
}
