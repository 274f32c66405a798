/**
 * Mistral's instruct prompt formats, token for token as mistral-common builds them
 * (`InstructRequestNormalizer` + `InstructTokenizerV1/V3/V7`; checked against the
 * mistral-common test samples for v1 and v3).
 *
 * Each piece of text is encoded on its own (with the SentencePiece dummy prefix, hence
 * the "▁" after every control token) and the control ids are inserted between:
 *
 *   v1  <s>▁[INST]▁Hi▁[/INST]▁Hello!</s>▁[INST]▁…            brackets are plain text
 *   v3  <s>[INST]▁Hi[/INST]▁Hello!</s>[AVAILABLE_TOOLS]▁[{"type":▁"function",▁…}][/AVAILABLE_TOOLS]
 *       [INST]▁<system>\n\n<last user message>[/INST][TOOL_CALLS]▁[{"name":▁…,▁"arguments":▁{…},▁"id":▁"abcDEF123"}]</s>
 *       [TOOL_RESULTS]▁{"content":▁…,▁"call_id":▁"abcDEF123"}[/TOOL_RESULTS]
 *   v7  like v3, but each system message stays in place as [SYSTEM_PROMPT]▁…[/SYSTEM_PROMPT],
 *       and a tool result is [TOOL_RESULTS]▁<call id>[TOOL_CONTENT]▁<content>[/TOOL_RESULTS]
 *
 * Before encoding, the conversation is normalized: consecutive messages of one role are
 * merged (texts joined by "\n\n"), tool-call arguments and (v1–v3) tool results are
 * re-serialized with Python's json.dumps, and in v1–v3 all system messages are joined
 * into one system prompt, prepended to the first (v1) or last (v3) user message. The
 * tools are listed just before the last user message.
 */
import { randomInt } from 'node:crypto';
import type { AssistantOutput, ChatMessage, ChatRequest, ParsedToolCall, Tool, ToolCall } from './chat-types.js';
import { TokenizerError, excerpt } from './errors.js';
import { dumps, fromJs, loads, PyDict, PyJsonError, type PyValue } from './pyjson.js';

export type InstructVersion = 'v1' | 'v3' | 'v7';

/** What the formats need from a tokenizer. */
export interface InstructTokenizer {
  readonly source: string;
  readonly bosId: number | null;
  readonly eosId: number | null;
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
  specialId(text: string): number | undefined;
}

/** A request that does not fit the format: names the message at fault. */
export class ChatFormatError extends TokenizerError {
  override readonly name = 'ChatFormatError';
}

/** The model's [TOOL_CALLS] output could not be read back. */
export class ToolCallParseError extends TokenizerError {
  override readonly name = 'ToolCallParseError';
}

interface NormalizedCall {
  readonly id: string; // "null" when absent, as in mistral-common
  readonly name: string;
  /** Normalized JSON text (json.dumps of json.loads), or the raw text when it is not JSON. */
  readonly arguments: string;
}

type Normalized =
  | { readonly role: 'user'; readonly content: string }
  | { readonly role: 'system'; readonly content: string }
  | { readonly role: 'assistant'; readonly content: string; readonly toolCalls: readonly NormalizedCall[]; readonly prefix: boolean }
  | { readonly role: 'tool'; readonly content: string; readonly toolCallId: string | null };

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const CALL_ID = /^[a-zA-Z0-9]{9}$/;
const JOIN = '\n\n';

/** A conversation → prompt ids (BOS first) in format `version`. */
export function encodeInstruct(tok: InstructTokenizer, request: ChatRequest, version: InstructVersion): number[] {
  validate(request, version);
  const tools = request.tools ?? [];
  const systemPrompt = version === 'v7' ? null : joinSystemPrompts(request.messages);
  const messages = aggregate(request.messages, version);

  const special = (text: string): number => {
    const id = tok.specialId(text);
    if (id === undefined) throw new ChatFormatError(`format mistral-${version} needs the control token ${text}, which this tokenizer does not have`, tok.source);
    return id;
  };
  const bos = tok.bosId;
  const eos = tok.eosId;
  if (bos === null || eos === null) throw new ChatFormatError(`format mistral-${version} needs BOS and EOS ids`, tok.source);

  const userIdx = messages.flatMap((m, i) => (m.role === 'user' ? [i] : []));
  const firstUser = userIdx[0] ?? -1;
  const lastUser = userIdx.at(-1) ?? -1;
  const ids = [bos];
  messages.forEach((m, i) => {
    switch (m.role) {
      case 'user': {
        if (version === 'v1') {
          const content = i === firstUser && systemPrompt ? systemPrompt + JOIN + m.content : m.content;
          ids.push(...tok.encode(`[INST] ${content} [/INST]`));
          break;
        }
        if (i === lastUser && tools.length > 0) {
          ids.push(special('[AVAILABLE_TOOLS]'), ...tok.encode(dumps(toolsValue(tools))), special('[/AVAILABLE_TOOLS]'));
        }
        const content = i === lastUser && systemPrompt ? systemPrompt + JOIN + m.content : m.content;
        ids.push(special('[INST]'), ...tok.encode(content), special('[/INST]'));
        break;
      }
      case 'system':
        ids.push(special('[SYSTEM_PROMPT]'), ...tok.encode(m.content), special('[/SYSTEM_PROMPT]'));
        break;
      case 'assistant': {
        if (version === 'v1') {
          ids.push(...tok.encode(m.content));
        } else {
          // v2 and later strip trailing spaces from the answer text.
          if (m.content !== '') ids.push(...tok.encode(m.content.replace(/ +$/, '')));
          if (m.toolCalls.length > 0) ids.push(special('[TOOL_CALLS]'), ...tok.encode(dumps(m.toolCalls.map(callValue))));
        }
        if (!m.prefix) ids.push(eos);
        break;
      }
      case 'tool':
        if (version === 'v7') {
          ids.push(special('[TOOL_RESULTS]'), ...tok.encode(m.toolCallId!), special('[TOOL_CONTENT]'), ...tok.encode(m.content), special('[/TOOL_RESULTS]'));
        } else {
          const result = new PyDict(new Map<string, PyValue>([['content', jsonOrText(m.content)], ['call_id', m.toolCallId!]]));
          ids.push(special('[TOOL_RESULTS]'), ...tok.encode(dumps(result)), special('[/TOOL_RESULTS]'));
        }
        break;
    }
  });
  return ids;
}

/** `[{"type": "function", "function": {"name", "description", "parameters"}}]`, as pydantic dumps a Tool. */
function toolsValue(tools: readonly Tool[]): PyValue {
  return tools.map((t) => new PyDict(new Map<string, PyValue>([
    ['type', 'function'],
    ['function', new PyDict(new Map<string, PyValue>([
      ['name', t.function.name],
      ['description', t.function.description ?? ''],
      ['parameters', fromJs(t.function.parameters ?? {})],
    ]))],
  ])));
}

/** `{"name", "arguments", "id"}`; the id only when there is one (not "null"). */
function callValue(c: NormalizedCall): PyValue {
  const entries = new Map<string, PyValue>([['name', c.name], ['arguments', jsonOrText(c.arguments)]]);
  if (c.id !== '' && c.id !== 'null') entries.set('id', c.id);
  return new PyDict(entries);
}

/** json.loads(text), or null when the text is not JSON. */
function tryLoads(text: string): { value: PyValue } | null {
  try {
    return { value: loads(text) };
  } catch (e) {
    if (e instanceof PyJsonError) return null;
    throw e;
  }
}

/** mistral-common's `_parse_json_content`: the parsed JSON, or the text itself when it is not JSON. */
function jsonOrText(text: string): PyValue {
  const parsed = tryLoads(text);
  return parsed === null ? text : parsed.value; // JSON null stays null
}

/** `_normalize_json_content`: empty → "{}", JSON → json.dumps(json.loads(text)), else unchanged. */
function normalizeJson(text: string | Record<string, unknown> | null | undefined): string {
  if (text === null || text === undefined || text === '') return '{}';
  if (typeof text !== 'string') return dumps(fromJs(text));
  const parsed = tryLoads(text);
  return parsed === null ? text : dumps(parsed.value);
}

function joinSystemPrompts(messages: readonly ChatMessage[]): string | null {
  const parts = messages.flatMap((m) => (m.role === 'system' && m.content ? [m.content] : []));
  return parts.length > 0 ? parts.join(JOIN) : null;
}

/** Texts of one run of messages, empty ones skipped, joined by "\n\n". */
function joinTexts(texts: readonly (string | null | undefined)[]): string {
  return texts.filter((t): t is string => !!t).join(JOIN);
}

/**
 * Merges consecutive messages of one role (a system message ends a run). v1–v3 drop the
 * system messages here (they became the system prompt) and make sure the conversation
 * starts with a user message; v7 keeps them in place.
 */
function aggregate(messages: readonly ChatMessage[], version: InstructVersion): Normalized[] {
  const out: Normalized[] = [];
  const runs: ChatMessage[][] = [];
  for (const m of messages) {
    const run = runs.at(-1);
    if (run !== undefined && run[0]!.role === m.role) run.push(m);
    else runs.push([m]);
  }
  for (const run of runs) {
    const role = run[0]!.role;
    if (role === 'user') {
      out.push({ role, content: joinTexts(run.map((m) => m.content as string)) });
    } else if (role === 'system') {
      if (version === 'v7') for (const m of run) out.push({ role, content: m.content as string });
    } else if (role === 'tool') {
      for (const m of run as Extract<ChatMessage, { role: 'tool' }>[]) {
        out.push({ role, content: version === 'v7' ? m.content : normalizeJson(m.content), toolCallId: m.tool_call_id ?? null });
      }
    } else {
      const msgs = run as Extract<ChatMessage, { role: 'assistant' }>[];
      out.push({
        role,
        content: joinTexts(msgs.map((m) => m.content)),
        toolCalls: msgs.flatMap((m) => (m.tool_calls ?? []).map((c: ToolCall) => ({
          id: c.id ?? 'null', name: c.function.name, arguments: normalizeJson(c.function.arguments),
        }))),
        prefix: msgs.some((m) => m.prefix === true),
      });
    }
  }
  if (out.length === 0 || (version !== 'v7' && out[0]!.role !== 'user')) out.unshift({ role: 'user', content: '' });
  for (const m of out) {
    if (m.role === 'assistant' && version === 'v3' && m.content !== '' && m.toolCalls.length > 0) {
      throw new ChatFormatError('consecutive assistant messages combine text and tool calls, which mistral-v3 cannot encode in one message');
    }
  }
  return out;
}

/** mistral-common's request validation (its default "test" mode), with one-line errors naming the message. */
function validate(request: ChatRequest, version: InstructVersion): void {
  const messages = request?.messages;
  if (!Array.isArray(messages) || messages.length === 0) throw new ChatFormatError('a conversation needs at least one message');
  const fail = (i: number, what: string): never => {
    throw new ChatFormatError(`message ${i} (${messages[i]?.role ?? 'no role'}): ${what}`);
  };
  const tools = request.tools ?? [];
  if (!Array.isArray(tools)) throw new ChatFormatError('tools must be an array');
  if (version === 'v1' && tools.length > 0) throw new ChatFormatError('format mistral-v1 has no tool calling: tools need mistral-v3 or mistral-v7');
  tools.forEach((t, i) => {
    if (typeof t?.function?.name !== 'string' || !NAME.test(t.function.name)) {
      throw new ChatFormatError(`tool ${i}: function name ${excerpt(String(t?.function?.name))} must be 1–64 characters a-z A-Z 0-9 _ -`);
    }
    const p = t.function.parameters;
    if (p !== undefined && p !== null && (typeof p !== 'object' || Array.isArray(p))) throw new ChatFormatError(`tool ${i} (${t.function.name}): parameters must be a JSON Schema object`);
  });

  const allowed: Record<string, readonly string[]> = {
    system: ['user', 'assistant', 'system'],
    user: ['assistant', 'system', 'user'],
    assistant: ['assistant', 'user', 'tool'],
    tool: ['assistant', 'tool'],
  };
  let pendingResults = 0;
  messages.forEach((m, i) => {
    if (m === null || typeof m !== 'object' || !(m.role in allowed)) fail(i, `role must be system, user, assistant or tool, got ${JSON.stringify((m as { role?: unknown })?.role)}`);
    const prev = messages[i - 1];
    if (prev !== undefined && !allowed[prev.role]!.includes(m.role)) fail(i, `a ${m.role} message cannot follow a ${prev.role} message`);
    const last = i === messages.length - 1;
    switch (m.role) {
      case 'system':
      case 'user':
        if (typeof m.content !== 'string') fail(i, 'content must be a string');
        break;
      case 'tool':
        if (version === 'v1') fail(i, 'format mistral-v1 has no tool results: use mistral-v3 or mistral-v7');
        if (typeof m.content !== 'string') fail(i, 'content must be a string');
        if (m.name !== undefined && m.name !== null && !NAME.test(m.name)) fail(i, `name ${excerpt(m.name)} must be 1–64 characters a-z A-Z 0-9 _ -`);
        if (typeof m.tool_call_id !== 'string') fail(i, 'tool_call_id is required (the id of the call this answers)');
        if (!CALL_ID.test(m.tool_call_id!)) fail(i, `tool_call_id ${excerpt(m.tool_call_id!)} must be 9 characters a-z A-Z 0-9`);
        pendingResults--;
        break;
      case 'assistant': {
        const calls: readonly ToolCall[] = m.tool_calls ?? [];
        const hasText = typeof m.content === 'string' && m.content !== '';
        if (m.content !== undefined && m.content !== null && typeof m.content !== 'string') fail(i, 'content must be a string or null');
        if (!Array.isArray(calls)) fail(i, 'tool_calls must be an array');
        if (version === 'v1' && calls.length > 0) fail(i, 'format mistral-v1 has no tool calls: use mistral-v3 or mistral-v7');
        if (version === 'v7' ? !hasText && calls.length === 0 : hasText === calls.length > 0) {
          fail(i, version === 'v7' ? 'needs content or tool_calls' : 'needs either content or tool_calls, not both and not neither');
        }
        if (m.prefix === true && !last) fail(i, 'only the last message can be a prefix');
        calls.forEach((c: ToolCall, j: number) => {
          const name = c?.function?.name;
          if (typeof name !== 'string' || !NAME.test(name)) fail(i, `tool call ${j}: function name ${excerpt(String(name))} must be 1–64 characters a-z A-Z 0-9 _ -`);
          const args = c.function.arguments;
          if (args !== undefined && args !== null && typeof args !== 'string' && (typeof args !== 'object' || Array.isArray(args))) {
            fail(i, `tool call ${j} (${name}): arguments must be a JSON string or an object`);
          }
          if (c.id !== undefined && c.id !== 'null' && !CALL_ID.test(c.id)) fail(i, `tool call ${j} (${name}): id ${excerpt(c.id)} must be 9 characters a-z A-Z 0-9`);
        });
        if (prev !== undefined && pendingResults !== 0) fail(i, 'the tool calls before it do not have one tool result each');
        pendingResults = calls.length;
        break;
      }
    }
  });
  const last = messages.at(-1)!;
  if (messages.length === 1 && last.role !== 'user' && last.role !== 'system') fail(0, 'a conversation must start with a user or system message');
  if (messages.length > 1 && last.role !== 'user' && last.role !== 'tool' && !(last.role === 'assistant' && last.prefix === true)) {
    fail(messages.length - 1, 'the last message must be user or tool (or an assistant prefix), so that the model answers next');
  }
}

/**
 * Generated ids → the assistant message: the text, and the tool calls after each
 * `[TOOL_CALLS]`. Generation stops at EOS; anything after it is ignored.
 */
export function parseAssistantIds(tok: InstructTokenizer, ids: readonly number[], makeId: () => string = randomCallId): AssistantOutput {
  const eosAt = tok.eosId === null ? -1 : ids.indexOf(tok.eosId);
  const body = eosAt < 0 ? ids : ids.slice(0, eosAt);
  const marker = tok.specialId('[TOOL_CALLS]');
  const segments: number[][] = [[]];
  for (const id of body) {
    if (id === marker) segments.push([]);
    else segments.at(-1)!.push(id);
  }
  const text = tok.decode(segments[0]!);
  const calls = segments.slice(1).flatMap((s) => parseToolCalls(tok.decode(s), makeId));
  return { role: 'assistant', content: text === '' ? null : text, tool_calls: segments.length > 1 ? calls : null };
}

/**
 * The JSON after `[TOOL_CALLS]` → tool calls. The model writes
 * `[{"name": "f", "arguments": {…}, "id": "abcDEF123"}, …]` (v3/v7; one object instead of
 * a list is accepted too). `arguments` come back as a JSON string, serialized the way
 * mistral-common writes it, so re-encoding the call gives the same tokens. A call
 * without an id gets one from `makeId` (9 random letters and digits by default).
 */
export function parseToolCalls(text: string, makeId: () => string = randomCallId): ParsedToolCall[] {
  let value: PyValue;
  try {
    value = loads(text);
  } catch (e) {
    if (e instanceof PyJsonError) throw new ToolCallParseError(`tool call output is not valid JSON: ${e.message} in ${excerpt(text.trim())}`);
    throw e;
  }
  const list = value instanceof PyDict ? [value] : value;
  if (!Array.isArray(list)) throw new ToolCallParseError(`tool call output must be a JSON list of calls, got ${excerpt(text.trim())}`);
  return list.map((call, i) => {
    if (!(call instanceof PyDict)) throw new ToolCallParseError(`tool call ${i} must be a JSON object, got ${excerpt(dumps(call))}`);
    const name = call.entries.get('name');
    if (typeof name !== 'string' || name === '') throw new ToolCallParseError(`tool call ${i} has no "name" string: ${excerpt(dumps(call))}`);
    const args = call.entries.get('arguments');
    if (args !== undefined && args !== null && !(args instanceof PyDict) && typeof args !== 'string') {
      throw new ToolCallParseError(`tool call ${i} (${name}): "arguments" must be an object, got ${excerpt(dumps(args))}`);
    }
    const id = call.entries.get('id');
    if (id !== undefined && typeof id !== 'string') throw new ToolCallParseError(`tool call ${i} (${name}): "id" must be a string, got ${excerpt(dumps(id))}`);
    return {
      id: id ?? makeId(),
      type: 'function',
      function: { name, arguments: args === undefined || args === null ? '{}' : typeof args === 'string' ? args : dumps(args) },
    };
  });
}

/** 9 random characters a-z A-Z 0-9, the shape v3 tool-call ids must have. */
export function randomCallId(): string {
  const alphabet = 'abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789';
  return Array.from({ length: 9 }, () => alphabet[randomInt(alphabet.length)]).join('');
}
