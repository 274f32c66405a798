/**
 * One chat completion: the request's conversation → prompt ids (the project's instruct
 * formats, token-exact with mistral-common), generation (constrained when the request forces
 * a tool call or asks for JSON), and the answer read back with the project's tool-call parser.
 *
 * Formats without tool tokens (mistral-v1, e.g. the bundled demo models) cannot express
 * tools. For them the server writes tools, calls and results as plain text with the v3
 * markers, the way v1 writes `[INST]` as plain text:
 *
 *   [INST] [AVAILABLE_TOOLS][{"type":"function","function":{…}}][/AVAILABLE_TOOLS]question [/INST]
 *   [TOOL_CALLS][{"name":"f","arguments":{…},"id":"abcDEF123"}]</s>                 (the assistant's call)
 *   [INST] [TOOL_RESULTS]{"content":"…","call_id":"abcDEF123"}[/TOOL_RESULTS] [/INST]   (a tool result: a user turn)
 *
 * This is the server's own convention (mistral-common refuses tools in v1), documented in docs/serve.md.
 */
import { generate, jsonConstraint, TextStream, type StopReason, type TokenConstraint } from '../generate/index.js';
import { compileSchema, type SchemaNode } from '../generate/json-schema.js';
import { InputError } from '../model/errors.js';
import type { Transformer } from '../model/transformer.js';
import {
  parseToolCalls, TokenizerError,
  type ChatMessage, type LoadedTokenizer, type ParsedToolCall, type Tool,
} from '../tokenizer/index.js';
import { ApiError, badField } from './errors.js';
import type { ChatBody } from './request.js';

/** The model a server holds, with what it needs to answer. */
export interface Served {
  readonly model: Transformer;
  readonly tok: LoadedTokenizer;
  /** The model id clients name ("mistral-demo"). */
  readonly id: string;
  /** Most tokens a completion may generate when the request says nothing (and at most). */
  readonly maxTokens: number;
}

export type FinishReason = 'stop' | 'length' | 'tool_calls';

export interface Completion {
  readonly content: string | null;
  readonly toolCalls: ParsedToolCall[] | null;
  readonly finishReason: FinishReason;
  readonly promptTokens: number;
  readonly completionTokens: number;
}

/** What a running completion reports as it goes (streaming). */
export interface CompletionSink {
  /** New answer text (never text of a tool call). */
  text(delta: string): void;
  /** True once the client has gone: generation stops at the next token. */
  cancelled(): boolean;
  /** Called once the prompt is built and checked, before the first token (a stream's headers go out then). */
  started?(): void;
}

const MARKER = '[TOOL_CALLS]';

/** Whether the tokenizer's format has tool tokens; if not, tools travel as text (see above). */
function toolsAsText(tok: LoadedTokenizer): boolean {
  return tok.specialId(MARKER) === undefined;
}

/** The conversation with tools, calls and results written as v1 text. */
function textTools(messages: readonly ChatMessage[], tools: readonly Tool[]): ChatMessage[] {
  const lastUser = messages.map((m) => m.role).lastIndexOf('user');
  return messages.map((m, i): ChatMessage => {
    if (m.role === 'user' && i === lastUser && tools.length > 0) {
      return { role: 'user', content: `[AVAILABLE_TOOLS]${JSON.stringify(tools)}[/AVAILABLE_TOOLS]${m.content}` };
    }
    if (m.role === 'assistant' && (m.tool_calls ?? []).length > 0) {
      const calls = m.tool_calls!.map((c) => ({
        name: c.function.name,
        arguments: typeof c.function.arguments === 'string' ? parseOr(c.function.arguments) : c.function.arguments,
        ...(c.id !== undefined ? { id: c.id } : {}),
      }));
      return { role: 'assistant', content: `${m.content ?? ''}${MARKER}${JSON.stringify(calls)}` };
    }
    if (m.role === 'tool') {
      return { role: 'user', content: `[TOOL_RESULTS]${JSON.stringify({ content: m.content, call_id: m.tool_call_id })}[/TOOL_RESULTS]` };
    }
    return m;
  });
}

function parseOr(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** The prompt ids of a request, in the tokenizer's chat format. */
export function promptIds(s: Served, body: ChatBody): number[] {
  const hasTools = body.tools.length > 0 || body.messages.some((m) => m.role === 'tool' || (m.role === 'assistant' && (m.tool_calls ?? []).length > 0));
  const asText = hasTools && toolsAsText(s.tok) && s.tok.chatFormat !== 'chat-template';
  const messages = asText ? textTools(body.messages, body.tools) : body.messages;
  try {
    return s.tok.encodeChat({ messages, tools: asText ? [] : body.tools });
  } catch (e) {
    if (e instanceof TokenizerError) throw badField('messages', e.message);
    throw e;
  }
}

/** The constraint a request implies: a forced tool call, JSON output, or none. */
export function constraintFor(s: Served, body: ChatBody): TokenConstraint | undefined {
  const { tok } = s;
  const eos = tok.eosId;
  const base = { endIds: eos === null ? [] : [eos], vocabLimit: s.model.config.vocabSize };
  const choice = body.toolChoice;
  if (choice.kind === 'any' || choice.kind === 'function') {
    const marker = tok.specialId(MARKER);
    const tools = body.tools.map((t, i) => [t, i] as const).filter(([t]) => choice.kind === 'any' || t.function.name === choice.name);
    const node: SchemaNode = {
      kind: 'array',
      minItems: 1,
      maxItems: body.parallelToolCalls ? Infinity : 1,
      items: {
        kind: 'anyOf',
        options: tools.map(([t, i]) => ({
          kind: 'object',
          properties: [
            ['name', { kind: 'literals', texts: [JSON.stringify(t.function.name)] }],
            ['arguments', schemaOf(t.function.parameters ?? { type: 'object' }, `tools[${i}].function.parameters`)],
          ],
          required: new Set(['name', 'arguments']),
          additional: null,
        })),
      },
    };
    return jsonConstraint(tok, node, { ...base, ...(marker === undefined ? { textPrefix: MARKER } : { prefixIds: [marker] }) });
  }
  const format = body.responseFormat;
  if (format.kind === 'json_object') return jsonConstraint(tok, { kind: 'object', properties: [], required: new Set(), additional: { kind: 'any' } }, base);
  if (format.kind === 'json_schema') return jsonConstraint(tok, schemaOf(format.schema, 'response_format.json_schema.schema'), base);
  const marker = tok.specialId(MARKER);
  if (!toolsOn(body) && marker !== undefined) return banned([marker]); // no tools, or "none": no call
  return undefined;
}

function schemaOf(schema: unknown, param: string): SchemaNode {
  try {
    return compileSchema(schema, param);
  } catch (e) {
    if (e instanceof InputError) throw new ApiError(400, e.message, param);
    throw e;
  }
}

/** Whether the model may call tools in this request. */
function toolsOn(body: ChatBody): boolean {
  return body.tools.length > 0 && body.toolChoice.kind !== 'none';
}

/** A constraint that only forbids some ids (tool_choice "none": no [TOOL_CALLS]). */
function banned(ids: readonly number[]): TokenConstraint {
  return {
    mask(logits) {
      const out = Float32Array.from(logits);
      for (const id of ids) if (id < out.length) out[id] = -Infinity;
      return out;
    },
    accept() {},
  };
}

/**
 * Runs one completion to its end (or until the sink is cancelled). Text streams through the
 * sink as it becomes final; a stop string is never sent (text that might begin one is held back).
 */
export async function complete(s: Served, body: ChatBody, sink: CompletionSink): Promise<Completion> {
  const { model, tok } = s;
  const ids = promptIds(s, body);
  const constraint = constraintFor(s, body);
  const maxNewTokens = Math.min(body.maxTokens ?? s.maxTokens, s.maxTokens);
  // Calls are looked for only when the request offers tools (and does not say "none").
  const markerId = toolsOn(body) ? tok.specialId(MARKER) : undefined;
  const textMarker = toolsOn(body) && markerId === undefined;
  const eos = tok.eosId !== null && tok.eosId < model.config.vocabSize ? [tok.eosId] : [];
  try {
    model.checkIds(ids); // a prompt the model cannot take is the request's fault: 400 before any output
  } catch (e) {
    if (e instanceof InputError) throw new ApiError(400, `the prompt: ${e.message}`, 'messages');
    throw e;
  }
  sink.started?.();

  const generated: number[] = [];
  const stream = new TextStream((x) => tok.decode(x));
  let text = ''; // answer text so far (before any tool call)
  let sent = 0;
  let calling = false;
  let stopReason: StopReason | 'stop-text' = 'length';
  try {
    for await (const t of generate(model, ids, {
      maxNewTokens, temperature: body.temperature, ...(body.topP !== undefined ? { topP: body.topP } : {}),
      ...(body.seed !== undefined ? { seed: body.seed } : {}), stopIds: eos, ...(constraint ? { constraint } : {}),
    })) {
      if (sink.cancelled()) break;
      generated.push(t.id);
      if (t.stopReason !== undefined) stopReason = t.stopReason;
      if (t.id === markerId) calling = true;
      if (calling || eos.includes(t.id)) continue;
      text += stream.push(t.id);
      if (textMarker && text.trimStart().startsWith(MARKER)) {
        calling = true;
        continue;
      }
      const hit = firstStop(text, body.stop);
      if (hit !== null) {
        text = text.slice(0, hit);
        stopReason = 'stop-text';
        break;
      }
      // Hold back what could still become a stop string or the text marker.
      const hold = Math.max(heldBack(text, body.stop), textMarker && MARKER.startsWith(text.trimStart()) ? text.length : 0);
      if (text.length - hold > sent) {
        sink.text(text.slice(sent, text.length - hold));
        sent = text.length - hold;
      }
    }
  } catch (e) {
    // The prompt was checked above: what is left to fail is the constraint (a vocabulary without a piece it needs).
    const param = body.toolChoice.kind === 'any' || body.toolChoice.kind === 'function' ? 'tool_choice' : body.responseFormat.kind !== 'text' ? 'response_format' : null;
    if (e instanceof InputError) throw new ApiError(400, e.message, param);
    throw e;
  }
  if (!calling && stopReason !== 'stop-text') {
    text += stream.flush();
    if (text.length > sent) sink.text(text.slice(sent));
  }

  let content: string | null = calling ? (text.trimStart().startsWith(MARKER) ? '' : text) : text;
  let toolCalls: ParsedToolCall[] | null = null;
  if (calling) {
    try {
      if (textMarker) {
        const all = tok.decode(generated);
        toolCalls = parseToolCalls(all.slice(all.indexOf(MARKER) + MARKER.length));
      } else {
        const out = tok.parseAssistant(generated);
        content = out.content;
        toolCalls = out.tool_calls;
      }
    } catch (e) {
      if (!(e instanceof TokenizerError)) throw e;
      content = tok.decode(generated); // an unfinished or malformed call: give the text back as it is
      toolCalls = null;
    }
  }
  const finishReason: FinishReason = toolCalls !== null && toolCalls.length > 0 ? 'tool_calls'
    : stopReason === 'length' || stopReason === 'context' ? 'length' : 'stop';
  return {
    content: content === '' && toolCalls !== null ? null : content,
    toolCalls: toolCalls !== null && toolCalls.length > 0 ? toolCalls : null,
    finishReason,
    promptTokens: ids.length,
    completionTokens: generated.length,
  };
}

/** Index of the earliest stop string in `text`, or null. */
function firstStop(text: string, stops: readonly string[]): number | null {
  let best: number | null = null;
  for (const s of stops) {
    const i = text.indexOf(s);
    if (i >= 0 && (best === null || i < best)) best = i;
  }
  return best;
}

/** Length of the longest end of `text` that begins some stop string. */
function heldBack(text: string, stops: readonly string[]): number {
  let hold = 0;
  for (const s of stops) {
    for (let n = Math.min(s.length - 1, text.length); n > hold; n--) {
      if (text.endsWith(s.slice(0, n))) {
        hold = n;
        break;
      }
    }
  }
  return hold;
}
