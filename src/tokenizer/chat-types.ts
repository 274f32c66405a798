/**
 * A conversation in the OpenAI / Mistral chat-completions shape, as mistral-common reads it.
 *
 *   { messages: [ {role: 'system', content}, {role: 'user', content},
 *                 {role: 'assistant', tool_calls: [{id, type: 'function', function: {name, arguments}}]},
 *                 {role: 'tool', tool_call_id, name, content}, … ],
 *     tools: [ {type: 'function', function: {name, description, parameters: <JSON Schema>}} ] }
 */

/** A function the model may call; `parameters` is a JSON Schema object. */
export interface Tool {
  readonly type?: 'function';
  readonly function: {
    readonly name: string;
    readonly description?: string | null;
    readonly parameters?: Record<string, unknown> | null;
  };
}

export interface ToolCall {
  /** v3 and later: 9 characters a-z A-Z 0-9 ("null" or absent: no id). */
  readonly id?: string;
  readonly type?: 'function';
  readonly function: {
    readonly name: string;
    /** A JSON string, as in the OpenAI API (an object is accepted too). */
    readonly arguments: string | Record<string, unknown>;
  };
}

export type ChatMessage =
  | { readonly role: 'system'; readonly content: string }
  | { readonly role: 'user'; readonly content: string }
  | {
    readonly role: 'assistant';
    readonly content?: string | null;
    readonly tool_calls?: readonly ToolCall[] | null;
    /** The start of an answer the model should continue: no EOS after it (last message only). */
    readonly prefix?: boolean;
  }
  | { readonly role: 'tool'; readonly content: string; readonly tool_call_id?: string | null; readonly name?: string | null };

export interface ChatRequest {
  readonly messages: readonly ChatMessage[];
  readonly tools?: readonly Tool[] | null;
}

/** A tool call as the parser returns it: always with an id, arguments as a JSON string. */
export interface ParsedToolCall {
  readonly id: string;
  readonly type: 'function';
  readonly function: { readonly name: string; readonly arguments: string };
}

/** What the model generated, as an assistant message. */
export interface AssistantOutput {
  readonly role: 'assistant';
  /** The text before `[TOOL_CALLS]` (or all of it); null when empty. */
  readonly content: string | null;
  readonly tool_calls: ParsedToolCall[] | null;
}
