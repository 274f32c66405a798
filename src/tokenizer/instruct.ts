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
import type { ChatMessage, ChatRequest, Tool, ToolCall } from './chat-types.js';
import { validateChat } from './chat-validate.js';
import { ChatFormatError } from './errors.js';
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

const JOIN = '\n\n';

/** A conversation → prompt ids (BOS first) in format `version`. */
export function encodeInstruct(tok: InstructTokenizer, request: ChatRequest, version: InstructVersion): number[] {
  validateChat(request, version);
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
