/**
 * The tokenizer contract. `Tokenizer` is what the rest of mistral-ref codes against;
 * `LoadedTokenizer` adds the vocabulary and chat members both implementations share
 * (SentencePiece `.model` files and Hugging Face `tokenizer.json`).
 */
import type { AssistantOutput, ChatRequest } from './chat-types.js';

export interface Tokenizer {
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  /** Text → ids; `bos` prepends the BOS id. */
  encode(text: string, opts?: { bos?: boolean }): number[];
  /** Ids → text; control/special tokens are dropped unless `skipSpecial` is false. */
  decode(ids: readonly number[], opts?: { skipSpecial?: boolean }): string;
  /** The vocabulary piece of one id (for tables: "▁Hello", "<0x0A>"). */
  idToPiece(id: number): string;
}

/**
 * How a conversation becomes ids.
 * - `mistral-v1`: `<s>▁[INST]▁…▁[/INST]▁answer</s>`, the brackets as plain text (Mistral 7B v0.1/v0.2, Mixtral 8x7B).
 * - `mistral-v3`: control tokens `[INST]`, `[/INST]`, tools, tool calls and results (Mistral 7B v0.3, Mixtral 8x22B).
 * - `mistral-v7`: v3 plus `[SYSTEM_PROMPT]` messages in place and `[TOOL_CONTENT]` results.
 * - `chat-template`: the Jinja `chat_template` of tokenizer_config.json, rendered with @huggingface/jinja.
 */
export type ChatFormat = 'mistral-v1' | 'mistral-v3' | 'mistral-v7' | 'chat-template';

export interface LoadedTokenizer extends Tokenizer {
  /** `sentencepiece` for tokenizer.model* files, `huggingface` for tokenizer.json. */
  readonly kind: 'sentencepiece' | 'huggingface';
  /** The file it was read from. */
  readonly source: string;
  /** The prompt format `encodeChat` uses by default. */
  readonly chatFormat: ChatFormat;
  /** Vocabulary lookup: "▁Hello" → 23325; undefined when absent. */
  pieceToId(piece: string): number | undefined;
  /** Id of a control / special token by its text ("[INST]" → 3); undefined when the vocabulary has none. */
  specialId(text: string): number | undefined;
  /** Whether an id is a control / special token (dropped by `decode`). */
  isSpecial(id: number): boolean;
  /** A conversation (messages, tools) → prompt ids, BOS first, ready for generation. */
  encodeChat(request: ChatRequest, opts?: { format?: ChatFormat }): number[];
  /** Generated ids (after the prompt) → the assistant message: text, or tool calls after `[TOOL_CALLS]`. */
  parseAssistant(ids: readonly number[]): AssistantOutput;
}
