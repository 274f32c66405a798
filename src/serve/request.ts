/**
 * Reading a chat-completions or embeddings body, in Mistral's or OpenAI's shape, into one
 * checked record. Every problem is a 400 that names the field (`messages[2].tool_call_id`).
 *
 * The two shapes differ in names only: `random_seed` / `seed`, `tool_choice: "any"` /
 * `"required"`; message content may be a string or a list of `{type: "text", text}` chunks.
 * Fields the server does not use but clients send harmlessly are ignored (listed in IGNORED);
 * any other unknown field is refused, so a request never silently loses a setting.
 */
import type { ChatMessage, Tool, ToolCall } from '../tokenizer/index.js';
import { badField } from './errors.js';

export type ToolChoice =
  | { readonly kind: 'auto' }
  | { readonly kind: 'none' }
  /** `any` (Mistral) or `required` (OpenAI): some call must be made. */
  | { readonly kind: 'any' }
  | { readonly kind: 'function'; readonly name: string };

export type ResponseFormat =
  | { readonly kind: 'text' }
  | { readonly kind: 'json_object' }
  | { readonly kind: 'json_schema'; readonly schema: unknown };

export interface ChatBody {
  readonly model: string;
  readonly messages: ChatMessage[];
  readonly tools: Tool[];
  readonly toolChoice: ToolChoice;
  readonly temperature: number;
  readonly topP: number | undefined;
  readonly maxTokens: number | undefined;
  readonly seed: number | undefined;
  readonly stop: string[];
  readonly stream: boolean;
  readonly responseFormat: ResponseFormat;
  /** A forced call may be several calls (one unless the request says true). */
  readonly parallelToolCalls: boolean;
}

export interface EmbeddingsBody {
  readonly model: string;
  readonly input: string[];
  readonly encodingFormat: 'float' | 'base64';
}

const CHAT_FIELDS = new Set(['model', 'messages', 'tools', 'tool_choice', 'temperature', 'top_p', 'max_tokens', 'max_completion_tokens',
  'random_seed', 'seed', 'stop', 'stream', 'response_format', 'n', 'parallel_tool_calls']);
/** Accepted and ignored: they change nothing a local reference server does. */
const IGNORED = new Set(['safe_prompt', 'user', 'metadata', 'stream_options', 'prompt_mode', 'presence_penalty',
  'frequency_penalty', 'logprobs', 'store', 'service_tier', 'prompt_cache_key']);

type Json = Record<string, unknown>;

const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);
const show = (v: unknown): string => {
  const s = JSON.stringify(v) ?? String(v);
  return s.length > 60 ? `${s.slice(0, 57)}...` : s;
};

function checkFields(body: Json, known: Set<string>): void {
  for (const k of Object.keys(body)) {
    if (!known.has(k) && !IGNORED.has(k)) throw badField(k, 'unknown field');
  }
}

function optionalNumber(body: Json, key: string, check: (n: number) => boolean, what: string): number | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v) || !check(v)) throw badField(key, `must be ${what}, got ${show(v)}`);
  return v;
}

function booleanOf(body: Json, key: string): boolean | undefined {
  const v = body[key];
  if (v === undefined || v === null) return undefined;
  if (typeof v !== 'boolean') throw badField(key, `must be true or false, got ${show(v)}`);
  return v;
}

function modelOf(body: Json): string {
  if (typeof body.model !== 'string' || body.model === '') throw badField('model', `must be a model id string, got ${show(body.model)}`);
  return body.model;
}

/** Message content: a string, or text chunks joined (null for an assistant without text). */
function contentOf(v: unknown, at: string, nullable: boolean): string | null {
  if (typeof v === 'string') return v;
  if ((v === null || v === undefined) && nullable) return null;
  if (Array.isArray(v)) {
    return v.map((chunk, i) => {
      if (!isObject(chunk) || chunk.type !== 'text' || typeof chunk.text !== 'string') {
        throw badField(`${at}[${i}]`, `only text chunks {"type": "text", "text": ...} are supported, got ${show(chunk)}`);
      }
      return chunk.text;
    }).join('');
  }
  throw badField(at, `must be a string or a list of text chunks, got ${show(v)}`);
}

function toolCallsOf(v: unknown, at: string): ToolCall[] | null {
  if (v === undefined || v === null) return null;
  if (!Array.isArray(v)) throw badField(at, `must be a list, got ${show(v)}`);
  return v.map((c, j) => {
    const f = isObject(c) ? c.function : undefined;
    if (!isObject(c) || !isObject(f)) throw badField(`${at}[${j}]`, `must be {"id", "type": "function", "function": {"name", "arguments"}}, got ${show(c)}`);
    if (typeof f.name !== 'string') throw badField(`${at}[${j}].function.name`, `must be a string, got ${show(f.name)}`);
    const args = f.arguments ?? '{}';
    if (typeof args !== 'string' && !isObject(args)) throw badField(`${at}[${j}].function.arguments`, `must be a JSON string or an object, got ${show(args)}`);
    if (c.id !== undefined && c.id !== null && typeof c.id !== 'string') throw badField(`${at}[${j}].id`, `must be a string, got ${show(c.id)}`);
    return { ...(typeof c.id === 'string' ? { id: c.id } : {}), type: 'function', function: { name: f.name, arguments: args as string | Record<string, unknown> } };
  });
}

function messagesOf(v: unknown): ChatMessage[] {
  if (!Array.isArray(v) || v.length === 0) throw badField('messages', `must be a non-empty list of messages, got ${show(v)}`);
  return v.map((m, i): ChatMessage => {
    const at = `messages[${i}]`;
    if (!isObject(m)) throw badField(at, `must be an object, got ${show(m)}`);
    switch (m.role) {
      case 'system':
      case 'developer': // OpenAI's newer name for system
        return { role: 'system', content: contentOf(m.content, `${at}.content`, false)! };
      case 'user':
        return { role: 'user', content: contentOf(m.content, `${at}.content`, false)! };
      case 'assistant': {
        const toolCalls = toolCallsOf(m.tool_calls, `${at}.tool_calls`);
        return {
          role: 'assistant',
          content: contentOf(m.content, `${at}.content`, true),
          ...(toolCalls !== null && toolCalls.length > 0 ? { tool_calls: toolCalls } : {}),
          ...(m.prefix === true ? { prefix: true } : {}),
        };
      }
      case 'tool': {
        if (typeof m.tool_call_id !== 'string') throw badField(`${at}.tool_call_id`, `must be the id of the call this answers, got ${show(m.tool_call_id)}`);
        if (m.name !== undefined && m.name !== null && typeof m.name !== 'string') throw badField(`${at}.name`, `must be a string, got ${show(m.name)}`);
        return { role: 'tool', content: contentOf(m.content, `${at}.content`, false)!, tool_call_id: m.tool_call_id, ...(typeof m.name === 'string' ? { name: m.name } : {}) };
      }
      default:
        throw badField(`${at}.role`, `must be system, user, assistant or tool, got ${show(m.role)}`);
    }
  });
}

function toolsOf(v: unknown): Tool[] {
  if (v === undefined || v === null) return [];
  if (!Array.isArray(v)) throw badField('tools', `must be a list of tools, got ${show(v)}`);
  return v.map((t, i) => {
    const at = `tools[${i}]`;
    if (!isObject(t) || (t.type !== undefined && t.type !== 'function') || !isObject(t.function)) {
      throw badField(at, `must be {"type": "function", "function": {"name", "description", "parameters"}}, got ${show(t)}`);
    }
    const f = t.function;
    if (typeof f.name !== 'string' || !/^[a-zA-Z0-9_-]{1,64}$/.test(f.name)) throw badField(`${at}.function.name`, `must be 1-64 characters a-z A-Z 0-9 _ -, got ${show(f.name)}`);
    if (f.parameters !== undefined && f.parameters !== null && !isObject(f.parameters)) throw badField(`${at}.function.parameters`, 'must be a JSON Schema object');
    if (f.description !== undefined && f.description !== null && typeof f.description !== 'string') throw badField(`${at}.function.description`, 'must be a string');
    return {
      type: 'function',
      function: {
        name: f.name,
        ...(typeof f.description === 'string' ? { description: f.description } : {}),
        ...(isObject(f.parameters) ? { parameters: f.parameters } : {}),
      },
    };
  });
}

function toolChoiceOf(v: unknown, tools: readonly Tool[]): ToolChoice {
  if (v === undefined || v === null) return { kind: 'auto' };
  if (v === 'auto' || v === 'none') return { kind: v };
  if (v === 'any' || v === 'required') {
    if (tools.length === 0) throw badField('tool_choice', `"${v}" needs at least one tool in tools`);
    return { kind: 'any' };
  }
  const name = isObject(v) && isObject(v.function) ? v.function.name : undefined;
  if (typeof name !== 'string') throw badField('tool_choice', `must be "auto", "none", "any", "required" or {"type": "function", "function": {"name"}}, got ${show(v)}`);
  if (!tools.some((t) => t.function.name === name)) throw badField('tool_choice.function.name', `names no tool in tools: ${show(name)}`);
  return { kind: 'function', name };
}

function responseFormatOf(v: unknown): ResponseFormat {
  if (v === undefined || v === null) return { kind: 'text' };
  if (!isObject(v)) throw badField('response_format', `must be an object, got ${show(v)}`);
  switch (v.type ?? 'text') {
    case 'text': return { kind: 'text' };
    case 'json_object': return { kind: 'json_object' };
    case 'json_schema': {
      const js = v.json_schema;
      if (!isObject(js) || !isObject(js.schema)) throw badField('response_format.json_schema.schema', `must be a JSON Schema object, got ${show(isObject(js) ? js.schema : js)}`);
      return { kind: 'json_schema', schema: js.schema };
    }
    default:
      throw badField('response_format.type', `must be text, json_object or json_schema, got ${show(v.type)}`);
  }
}

function stopOf(v: unknown): string[] {
  if (v === undefined || v === null) return [];
  const list = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(list) || list.some((s) => typeof s !== 'string' || s === '')) throw badField('stop', `must be a non-empty string or a list of them, got ${show(v)}`);
  return list as string[];
}

/** A parsed JSON body → a checked chat request. */
export function parseChatBody(body: unknown): ChatBody {
  if (!isObject(body)) throw badField('body', `must be a JSON object, got ${show(body)}`);
  checkFields(body, CHAT_FIELDS);
  const tools = toolsOf(body.tools);
  if (body.n !== undefined && body.n !== null && body.n !== 1) throw badField('n', `only 1 choice per request is supported, got ${show(body.n)}`);
  const seedKey = body.random_seed !== undefined && body.random_seed !== null ? 'random_seed' : 'seed';
  const maxKey = body.max_tokens !== undefined && body.max_tokens !== null ? 'max_tokens' : 'max_completion_tokens';
  return {
    model: modelOf(body),
    messages: messagesOf(body.messages),
    tools,
    toolChoice: toolChoiceOf(body.tool_choice, tools),
    temperature: optionalNumber(body, 'temperature', (n) => n >= 0 && n <= 2, 'a number in [0, 2]') ?? 0,
    topP: optionalNumber(body, 'top_p', (n) => n > 0 && n <= 1, 'a number in (0, 1]'),
    maxTokens: optionalNumber(body, maxKey, (n) => Number.isInteger(n) && n >= 1, 'an integer ≥ 1'),
    seed: optionalNumber(body, seedKey, (n) => Number.isInteger(n) && n >= 0 && n < 2 ** 32, 'an integer in [0, 2^32)'),
    stop: stopOf(body.stop),
    stream: booleanOf(body, 'stream') ?? false,
    responseFormat: responseFormatOf(body.response_format),
    parallelToolCalls: booleanOf(body, 'parallel_tool_calls') ?? false,
  };
}

/** A parsed JSON body → a checked embeddings request (`input`, or Mistral's older `inputs`). */
export function parseEmbeddingsBody(body: unknown): EmbeddingsBody {
  if (!isObject(body)) throw badField('body', `must be a JSON object, got ${show(body)}`);
  checkFields(body, new Set(['model', 'input', 'inputs', 'encoding_format', 'output_dtype', 'dimensions', 'output_dimension']));
  const key = body.input !== undefined ? 'input' : 'inputs';
  const v = body[key];
  const input = typeof v === 'string' ? [v] : v;
  if (!Array.isArray(input) || input.length === 0 || input.some((s) => typeof s !== 'string' || s === '')) {
    throw badField('input', `must be a non-empty string or a non-empty list of them, got ${show(v)}`);
  }
  const format = body.encoding_format ?? 'float';
  if (format !== 'float' && format !== 'base64') throw badField('encoding_format', `must be float or base64, got ${show(format)}`);
  for (const k of ['output_dtype', 'dimensions', 'output_dimension']) {
    const d = body[k];
    if (d !== undefined && d !== null && d !== 'float') throw badField(k, `is not supported (vectors are float32 of the model's hidden size), got ${show(d)}`);
  }
  return { model: modelOf(body), input: input as string[], encodingFormat: format };
}
