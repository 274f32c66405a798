/**
 * Hugging Face `tokenizer.json` (+ `tokenizer_config.json`) through @huggingface/tokenizers,
 * the maintained pure-JS port of the Rust `tokenizers` library.
 *
 * What it gives, and where it differs from SentencePiece on the same vocabulary
 * (Mistral-7B-v0.1's tokenizer.json against tokenizer.model.v1; see docs/tokenizers.md):
 * - Added special tokens (`<s>`, `</s>`, `<unk>`, and `[INST]`… in v3 files) are matched
 *   in text: "<s>" in a string becomes id 1. SentencePiece never does that.
 * - The Metaspace pre-tokenizer (`prepend_scheme: "first"`) adds the "▁" prefix only when
 *   the text does not already start with a space, so " Hi" is "▁Hi", where SentencePiece
 *   gives "▁" "▁Hi". The Rust library does the same (tokenizers PR #1357).
 *
 * Conventions here: `encode` never runs the post-processor (`add_special_tokens: false`);
 * `{bos: true}` prepends the BOS id itself, so a TemplateProcessing that adds `<s>` and
 * one that does not behave alike. `decode([])` is "" (the library throws on it), and ids
 * outside the vocabulary are an error rather than a silent `<unk>`.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Template } from '@huggingface/jinja';
import { Tokenizer as HfTokenizer } from '@huggingface/tokenizers';
import type { AssistantOutput, ChatRequest } from './chat-types.js';
import { TokenizerError } from './errors.js';
import { encodeInstruct, type InstructVersion } from './instruct.js';
import { readTokenizerText } from './read-file.js';
import { parseAssistantIds } from './tool-calls.js';
import type { ChatFormat, LoadedTokenizer } from './types.js';

type Config = Record<string, unknown>;

/** tokenizer_config.json names tokens either as strings or as `{content: "<s>", …}`. */
function tokenText(v: unknown): string | null {
  if (typeof v === 'string') return v;
  if (v !== null && typeof v === 'object' && typeof (v as { content?: unknown }).content === 'string') return (v as { content: string }).content;
  return null;
}

/** `chat_template` is a string, or a list of `{name, template}` ("default", "tool_use"). */
function pickTemplate(value: unknown, withTools: boolean, file: string): string | null {
  if (value === undefined || value === null) return null;
  if (typeof value === 'string') return value;
  if (Array.isArray(value)) {
    const named = new Map(value.map((t: { name?: unknown; template?: unknown }) => [t?.name, t?.template]));
    const t = (withTools ? named.get('tool_use') : undefined) ?? named.get('default');
    if (typeof t === 'string') return t;
  }
  throw new TokenizerError('chat_template must be a string or a list of {name, template} with a "default"', file);
}

export class HuggingFaceTokenizer implements LoadedTokenizer {
  readonly kind = 'huggingface';
  readonly vocabSize: number;
  readonly bosId: number | null;
  readonly eosId: number | null;
  readonly chatFormat: ChatFormat;
  private readonly lib: HfTokenizer;
  private readonly special = new Map<string, number>();
  private readonly specialIds = new Set<number>();

  constructor(json: Config, readonly config: Config, readonly source: string) {
    try {
      this.lib = new HfTokenizer(json, config);
    } catch (e) {
      throw new TokenizerError(`@huggingface/tokenizers cannot load it: ${(e as Error).message}`, source);
    }
    for (const [id, t] of this.lib.get_added_tokens_decoder()) {
      if (t.special) {
        this.special.set(t.content, id);
        this.specialIds.add(id);
      }
    }
    let maxId = -1;
    for (const id of this.lib.get_vocab(true).values()) maxId = Math.max(maxId, id);
    this.vocabSize = maxId + 1;
    const idOf = (key: string): number | null => {
      const text = tokenText(config[key]);
      return text === null ? null : this.lib.token_to_id(text) ?? null;
    };
    this.bosId = idOf('bos_token');
    this.eosId = idOf('eos_token');
    this.chatFormat = config.chat_template !== undefined && config.chat_template !== null ? 'chat-template'
      : `mistral-${this.special.has('[SYSTEM_PROMPT]') ? 'v7' : this.special.has('[TOOL_CALLS]') && this.special.has('[INST]') ? 'v3' : 'v1'}`;
  }

  /** Reads `tokenizer.json` and the `tokenizer_config.json` beside it (optional). */
  static fromFile(file: string): HuggingFaceTokenizer {
    const json = readJson(file);
    const configFile = path.join(path.dirname(file), 'tokenizer_config.json');
    const config = fs.existsSync(configFile) ? readJson(configFile) : {};
    return new HuggingFaceTokenizer(json, config, file);
  }

  encode(text: string, opts: { bos?: boolean } = {}): number[] {
    const ids = this.lib.encode(text, { add_special_tokens: false }).ids;
    if (opts.bos) {
      if (this.bosId === null) throw new TokenizerError('this tokenizer has no bos_token in tokenizer_config.json', this.source);
      ids.unshift(this.bosId);
    }
    return ids;
  }

  decode(ids: readonly number[], opts: { skipSpecial?: boolean } = {}): string {
    ids.forEach((id) => this.idToPiece(id)); // range check
    if (ids.length === 0) return '';
    return this.lib.decode([...ids], { skip_special_tokens: opts.skipSpecial ?? true });
  }

  idToPiece(id: number): string {
    const piece = Number.isInteger(id) ? this.lib.id_to_token(id) : undefined;
    if (piece === undefined) throw new TokenizerError(`token id ${id} is outside the vocabulary [0, ${this.vocabSize})`, this.source);
    return piece;
  }

  pieceToId(piece: string): number | undefined {
    return this.lib.token_to_id(piece);
  }

  specialId(text: string): number | undefined {
    return this.special.get(text);
  }

  isSpecial(id: number): boolean {
    return this.specialIds.has(id);
  }

  encodeChat(request: ChatRequest, opts: { format?: ChatFormat } = {}): number[] {
    const format = opts.format ?? this.chatFormat;
    if (format !== 'chat-template') return encodeInstruct(this, request, format.slice('mistral-'.length) as InstructVersion);
    return this.encode(this.renderChat(request), { bos: false });
  }

  /**
   * Renders the `chat_template` as transformers' `apply_chat_template` does: messages, tools,
   * the special tokens (bos_token, eos_token, …) and add_generation_prompt = true. The text
   * then goes through `encode` without added specials: the template writes `<s>` itself.
   */
  renderChat(request: ChatRequest, opts: { addGenerationPrompt?: boolean } = {}): string {
    const tools = request.tools ?? undefined;
    const template = pickTemplate(this.config.chat_template, tools !== undefined && tools.length > 0, this.source);
    if (template === null) throw new TokenizerError('tokenizer_config.json has no chat_template', this.source);
    const tokens = Object.fromEntries(['bos_token', 'eos_token', 'unk_token', 'pad_token'].map((k) => [k, tokenText(this.config[k]) ?? undefined]));
    try {
      return new Template(template).render({
        messages: request.messages,
        ...(tools !== undefined && tools.length > 0 ? { tools } : {}),
        ...tokens,
        add_generation_prompt: opts.addGenerationPrompt ?? true,
      });
    } catch (e) {
      throw new TokenizerError(`chat_template: ${(e as Error).message}`, this.source);
    }
  }

  parseAssistant(ids: readonly number[]): AssistantOutput {
    return parseAssistantIds(this, ids);
  }
}

function readJson(file: string): Config {
  const text = readTokenizerText(file);
  try {
    const v = JSON.parse(text) as unknown;
    if (v === null || typeof v !== 'object' || Array.isArray(v)) throw new Error('expected a JSON object');
    return v as Config;
  } catch (e) {
    throw new TokenizerError(`not valid JSON: ${(e as Error).message}`, file);
  }
}
