/**
 * Reading the model's answer back: text, then after `[TOOL_CALLS]` a JSON list of calls
 * (v3 / v7 write `[{"name": …, "arguments": {…}, "id": "abcDEF123"}]`), turned into OpenAI-shaped
 * tool calls `{id, type: "function", function: {name, arguments: "<JSON string>"}}`.
 */
import { randomInt } from 'node:crypto';
import type { AssistantOutput, ParsedToolCall } from './chat-types.js';
import { excerpt, ToolCallParseError } from './errors.js';
import type { InstructTokenizer } from './instruct.js';
import { dumps, loads, PyDict, PyJsonError, type PyValue } from './pyjson.js';

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
