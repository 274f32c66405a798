import { readJsonFile } from '../../io/files.js';
import { ConversationCache, TextStream } from '../../generate/index.js';
import {
  loadTokenizer, TokenizerError,
  type ChatFormat, type ChatMessage, type LoadedTokenizer, type ParsedToolCall, type Tool,
} from '../../tokenizer/index.js';
import { number, oneOf, parse } from '../args.js';
import { checkVocabulary, loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE, SAMPLING_OPTIONS, samplingFromArgs } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';

export const summary = 'interactive instruct chat';

const FORMATS: readonly ChatFormat[] = ['mistral-v1', 'mistral-v3', 'mistral-v7', 'chat-template'];

export const usage = `usage: mistral-ref chat --model DIR [options]

An instruct chat: every line on stdin is a user message, the answer streams to stdout.
The prompt format follows the tokenizer: Mistral's v1 / v3 / v7 formats for SentencePiece
tokenizer.model.v* files (and for tokenizer.json files without a chat template), the
chat_template of tokenizer_config.json when there is one. Each turn re-encodes the whole
conversation; the KV cache is reused for the part of the prompt that did not change.

${MODEL_USAGE}
  --tokenizer FILE|DIR   the tokenizer (default: the model folder's)
  --format NAME          ${FORMATS.join(', ')} (default: from the tokenizer)
  --system TEXT          a system prompt
  --tools FILE           a JSON file with the tools the model may call (a list of
                         {"type": "function", "function": {name, description, parameters}}; v3 / v7)
  --max-tokens N         most tokens per answer (default 256)
  --temperature T        0 = greedy (default); sampling divides the logits by T
  --top-k K, --top-p P   sampling filters
  --seed S               seed for sampling (default: random)
  --show-ids             print each prompt's ids on stderr

Lines that are commands:
  /tool TEXT             the result of the oldest pending tool call (one line per call)
  /reset                 forget the conversation (the system prompt and tools stay)
  /exit                  quit (so does the end of stdin)

When the model calls tools, the calls are printed as one line "tool_calls: [...]" (JSON, in the
OpenAI shape); answer each with /tool. A line the format rejects is reported on stderr and
the turn is undone.

exit: 0 at the end of the input or /exit, 2 bad input (options, model, tokenizer)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    tokenizer: { type: 'string' },
    format: { type: 'string' },
    system: { type: 'string' },
    tools: { type: 'string' },
    'max-tokens': { type: 'string' },
    ...SAMPLING_OPTIONS,
    'show-ids': { type: 'boolean' },
  });
  if (values.model === undefined) throw new UsageError('--model is required');
  const format = values.format === undefined ? undefined : oneOf(values.format, '--format', FORMATS, 'mistral-v1');
  const maxNewTokens = number(values['max-tokens'], '--max-tokens', 256, { min: 1, integer: true });
  const sampling = samplingFromArgs(values);
  const tools = values.tools === undefined ? [] : readTools(values.tools);
  const system = values.system;

  const model = await loadModelFromArgs(values, io);
  const conversation = new ConversationCache(model);
  try {
    const tok = await loadTokenizer(values.tokenizer ?? model.checkpoint.dir);
    checkVocabulary(tok, model);
    const chat = new Conversation(tok, system, tools, format);
    if (io.interactive) io.stderr(`chat: format ${chat.format}; /tool, /reset, /exit\n> `);

    for await (const raw of io.stdin()) {
      const line = raw.trim();
      if (line === '') continue;
      if (line === '/exit') break;
      if (line === '/reset') {
        chat.reset();
        conversation.reset();
      } else {
        let ids: number[] | null;
        try {
          ids = chat.add(line);
        } catch (e) {
          if (!(e instanceof TokenizerError)) throw e;
          io.stderr(`chat: ${e.message}\n`);
          ids = null;
        }
        if (ids !== null) {
          if (values['show-ids'] === true) io.stderr(`prompt ids (${ids.length}): ${JSON.stringify(ids)}\n`);
          // The KV cache is reused for the part of the prompt that did not change.
          const generated: number[] = [];
          const stream = new TextStream((x) => tok.decode(x));
          const toolCallsId = tok.specialId('[TOOL_CALLS]');
          let calling = false;
          for await (const t of conversation.generate(ids, {
            maxNewTokens, ...sampling,
            stopIds: tok.eosId !== null && tok.eosId < model.config.vocabSize ? [tok.eosId] : [],
          })) {
            generated.push(t.id);
            if (t.id === toolCallsId) calling = true;
            if (!calling) io.stdout(stream.push(t.id));
          }
          if (!calling) io.stdout(stream.flush());
          io.stdout('\n');
          const calls = chat.answer(generated, (e) => io.stderr(`chat: ${e}\n`));
          if (calls.length > 0) io.stdout(`tool_calls: ${JSON.stringify(calls)}\n`);
        }
      }
      if (io.interactive) io.stderr(chat.pending > 0 ? `(${chat.pending} tool call${chat.pending > 1 ? 's' : ''} to answer with /tool)\n> ` : '> ');
    }
    return 0;
  } finally {
    conversation.dispose();
    model.dispose();
  }
}

/** The conversation so far, and the tool calls that wait for a result. */
class Conversation {
  private messages: ChatMessage[] = [];
  private calls: ParsedToolCall[] = [];
  readonly format: ChatFormat;

  constructor(private readonly tok: LoadedTokenizer, private readonly system: string | undefined,
    private readonly tools: readonly Tool[], format: ChatFormat | undefined) {
    this.format = format ?? tok.chatFormat;
    this.reset();
  }

  get pending(): number {
    return this.calls.length;
  }

  reset(): void {
    this.messages = this.system === undefined ? [] : [{ role: 'system', content: this.system }];
    this.calls = [];
  }

  /** A user line (or `/tool RESULT`) → the prompt ids; null while more tool results are due. Undone on error. */
  add(line: string): number[] | null {
    const before = [...this.messages];
    const calls = [...this.calls];
    try {
      if (line.startsWith('/tool')) {
        const call = this.calls.shift();
        if (call === undefined) throw new TokenizerError('no tool call is waiting for a result');
        this.messages.push({ role: 'tool', tool_call_id: call.id, name: call.function.name, content: line.slice('/tool'.length).trim() });
        if (this.calls.length > 0) return null;
      } else {
        if (this.calls.length > 0) throw new TokenizerError(`answer the ${this.calls.length} pending tool call(s) with /tool first`);
        this.messages.push({ role: 'user', content: line });
      }
      return this.tok.encodeChat({ messages: this.messages, tools: this.tools }, { format: this.format });
    } catch (e) {
      this.messages = before;
      this.calls = calls;
      throw e;
    }
  }

  /** Records the generated answer; returns its tool calls (reported through `warn` when unreadable). */
  answer(ids: readonly number[], warn: (message: string) => void): ParsedToolCall[] {
    let content: string | null;
    let calls: ParsedToolCall[] = [];
    try {
      const out = this.tok.parseAssistant(ids);
      content = out.content;
      calls = out.tool_calls ?? [];
    } catch (e) {
      if (!(e instanceof TokenizerError)) throw e;
      warn(e.message);
      content = this.tok.decode(ids);
    }
    // v1–v3 take text or tool calls in one message, not both: the calls win.
    const text = calls.length > 0 && this.format !== 'mistral-v7' ? null : content?.trim() || null;
    if (text !== null || calls.length > 0) this.messages.push({ role: 'assistant', content: text, tool_calls: calls.length > 0 ? calls : null });
    this.calls = [...calls];
    return calls;
  }
}

/** A tools list is KB; this bounds what --tools may make us parse. */
const MAX_TOOLS_BYTES = 10_000_000;

function readTools(file: string): Tool[] {
  let tools: unknown;
  try {
    tools = readJsonFile(file, MAX_TOOLS_BYTES);
  } catch (e) {
    throw new UsageError(`--tools ${(e as Error).message}`);
  }
  if (!Array.isArray(tools)) throw new UsageError(`--tools ${file}: expected a JSON list of tools`);
  return tools as Tool[];
}
