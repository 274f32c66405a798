/**
 * mistral-common's request validation (its default "test" mode), so that a conversation
 * mistral-common would refuse is refused here too, with a one-line error naming the message:
 *
 *   order     system → user | assistant | system;  user → assistant | system | user;
 *             assistant → assistant | user | tool;  tool → assistant | tool
 *   last      user or tool (the model answers next), or an assistant message with prefix: true
 *   assistant text or tool calls, not both (v7: both allowed); each call answered by one tool message
 *   names     function names 1–64 of a-z A-Z 0-9 _ -;  v3 and later: call ids 9 of a-z A-Z 0-9
 */
import type { ChatRequest, ToolCall } from './chat-types.js';
import { ChatFormatError, excerpt } from './errors.js';
import type { InstructVersion } from './instruct.js';

const NAME = /^[a-zA-Z0-9_-]{1,64}$/;
const CALL_ID = /^[a-zA-Z0-9]{9}$/;

/** Throws ChatFormatError when the request breaks one of the rules above. */
export function validateChat(request: ChatRequest, version: InstructVersion): void {
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
