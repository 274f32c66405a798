/**
 * The server through the real npm clients, @mistralai/mistralai and openai, on loopback, over
 * the bundled demo model (mistral-v1 format: tools travel as text, see src/serve/chat.ts).
 *
 * What is checked against what:
 * - answers equal the library's greedy generation from prompt ids written out here by hand
 *   in the v1 format (`<s>[INST] … [/INST]`, one id per character with the demo tokenizer);
 * - prompt_tokens equal those hand-written prompts' lengths;
 * - a streamed answer equals the same request unstreamed;
 * - forced tool calls parse, name the tool and match its parameters' schema, and the round
 *   trip (call → tool result → answer) sends the model the conversation token for token;
 * - embeddings equal the pooling computed here from the model's final normalised hidden states.
 */
import { Mistral } from '@mistralai/mistralai';
import OpenAI from 'openai';
import { beforeAll, describe, expect, it } from 'vitest';
import { generateSync } from '../src/generate/index.js';
import { runWithCache } from '../src/inspect/activations.js';
import { disposeResult } from '../src/model/transformer.js';
import { serveDemo } from './helpers/serve.js';

const KEY = 'sdk-key';
const t = serveDemo({ apiKey: KEY });
let mistral: Mistral;
let openai: OpenAI;
beforeAll(() => {
  mistral = new Mistral({ apiKey: KEY, serverURL: t.url });
  openai = new OpenAI({ apiKey: KEY, baseURL: `${t.url}/v1` });
});

/** Greedy answer of the library from a prompt given as text (one id per character), BOS first. */
function expected(promptText: string, maxNewTokens: number, between: number[][] = []): string {
  const ids = [t.tok.bosId!, ...t.tok.encode(promptText)];
  for (const extra of between) ids.push(...extra);
  const out = generateSync(t.model, ids, { maxNewTokens, stopIds: [t.tok.eosId!] }).map((x) => x.id);
  return t.tok.decode(out);
}

const TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_model_benchmark',
    description: 'Get the benchmark score of a model',
    parameters: {
      type: 'object',
      properties: { model_name: { type: 'string', maxLength: 12 }, metric: { type: 'string', enum: ['mmlu', 'gsm8k'] } },
      required: ['model_name', 'metric'],
    },
  },
};

/** An independent check of a call's arguments against TOOL's parameters. */
function argsMatch(args: string): boolean {
  const a = JSON.parse(args) as Record<string, unknown>;
  return Object.keys(a).join() === 'model_name,metric' && typeof a.model_name === 'string' && a.model_name.length <= 12 && ['mmlu', 'gsm8k'].includes(a.metric as string);
}

describe('@mistralai/mistralai', () => {
  it('models.list names the served model', async () => {
    const list = await mistral.models.list();
    expect(list.data?.map((m) => (m as { id: string }).id)).toEqual(['mistral-demo']);
  });

  it('chat.complete: the library\'s answer to the v1 prompt, with usage', async () => {
    const r = await mistral.chat.complete({ model: 'mistral-demo', messages: [{ role: 'user', content: '47+38=' }], temperature: 0, maxTokens: 12 });
    expect(r.id).toMatch(/^chatcmpl-/);
    expect(r.model).toBe('mistral-demo');
    expect(r.object).toBe('chat.completion');
    const want = expected('[INST] 47+38= [/INST]', 12);
    expect(r.choices[0]!.message!.content).toBe(want);
    expect(r.choices[0]!.finishReason).toBe(want.length === 12 ? 'length' : 'stop');
    expect(r.usage.promptTokens).toBe(1 + '[INST] 47+38= [/INST]'.length);
    expect(r.usage.completionTokens).toBe(12);
    expect(r.usage.totalTokens).toBe(r.usage.promptTokens! + 12);
  });

  it('chat.stream: the same answer in pieces, ending with the finish reason and usage', async () => {
    const req = { model: 'mistral-demo', messages: [{ role: 'system' as const, content: 'Add.' }, { role: 'user' as const, content: '12+30=' }], maxTokens: 10 };
    const whole = await mistral.chat.complete(req);
    let text = '';
    let finish: string | null | undefined;
    let events = 0;
    for await (const e of await mistral.chat.stream(req)) {
      events++;
      const c = e.data.choices[0]!;
      if (typeof c.delta.content === 'string') text += c.delta.content;
      if (c.finishReason !== null) finish = c.finishReason;
      if (e.data.usage) expect(e.data.usage.promptTokens).toBe(1 + '[INST] Add.\n\n12+30= [/INST]'.length);
    }
    expect(events).toBeGreaterThan(2);
    expect(text).toBe(whole.choices[0]!.message!.content);
    expect(finish).toBe(whole.choices[0]!.finishReason);
  });

  it('a forced tool call, its result, and the answer: the round trip', async () => {
    const question = 'What is the mmlu of mistral?';
    const first = await mistral.chat.complete({
      model: 'mistral-demo', messages: [{ role: 'user', content: question }], tools: [TOOL], toolChoice: 'any', maxTokens: 200,
    });
    const choice = first.choices[0]!;
    expect(choice.finishReason).toBe('tool_calls');
    const calls = choice.message!.toolCalls!;
    expect(calls).toHaveLength(1);
    const call = calls[0]!;
    expect(call.function.name).toBe('get_model_benchmark');
    expect(call.id).toMatch(/^[a-zA-Z0-9]{9}$/);
    const args = call.function.arguments as string;
    expect(argsMatch(args), args).toBe(true);
    const turn1 = `[INST] [AVAILABLE_TOOLS]${JSON.stringify([TOOL])}[/AVAILABLE_TOOLS]${question} [/INST]`;
    expect(first.usage.promptTokens).toBe(1 + turn1.length);

    const result = '{"score": 81.2}';
    const second = await mistral.chat.complete({
      model: 'mistral-demo',
      messages: [
        { role: 'user', content: question },
        { role: 'assistant', content: '', toolCalls: [{ id: call.id, type: 'function', function: { name: call.function.name, arguments: args } }] },
        { role: 'tool', name: 'get_model_benchmark', toolCallId: call.id!, content: result },
      ],
      tools: [TOOL],
      toolChoice: 'none',
      maxTokens: 16,
    });
    const callText = `[TOOL_CALLS]${JSON.stringify([{ name: call.function.name, arguments: JSON.parse(args), id: call.id }])}`;
    const turn2 = `[INST] [TOOL_RESULTS]${JSON.stringify({ content: result, call_id: call.id })}[/TOOL_RESULTS] [/INST]`;
    expect(second.usage.promptTokens).toBe(1 + turn1.length + callText.length + 1 + turn2.length);
    const want = expected(turn1 + callText, 16, [[t.tok.eosId!], t.tok.encode(turn2)]);
    expect(second.choices[0]!.message!.content).toBe(want);
    expect(second.choices[0]!.message!.toolCalls ?? null).toBeNull();
  });

  it('a named function and response_format json_schema are followed', async () => {
    const named = await mistral.chat.complete({
      model: 'mistral-demo', messages: [{ role: 'user', content: 'x' }], tools: [TOOL],
      toolChoice: { type: 'function', function: { name: 'get_model_benchmark' } }, maxTokens: 200,
    });
    expect(named.choices[0]!.message!.toolCalls![0]!.function.name).toBe('get_model_benchmark');
    const schema = { type: 'object', properties: { sum: { type: 'integer' }, op: { enum: ['+', '-'] } }, required: ['sum', 'op'] };
    const json = await mistral.chat.complete({
      model: 'mistral-demo', messages: [{ role: 'user', content: '47+38=' }], maxTokens: 60,
      responseFormat: { type: 'json_schema', jsonSchema: { name: 'sum', schemaDefinition: schema } },
    });
    const value = JSON.parse(json.choices[0]!.message!.content as string) as Record<string, unknown>;
    expect(Object.keys(value)).toEqual(['sum', 'op']);
    expect(Number.isInteger(value.sum)).toBe(true);
    expect(['+', '-']).toContain(value.op);
  });

  it('embeddings.create: unit vectors of the hidden size, mean of the final normalised states', async () => {
    const r = await mistral.embeddings.create({ model: 'mistral-demo', inputs: ['abc', '47+38='] });
    expect(r.data).toHaveLength(2);
    expect(r.usage.promptTokens).toBe(4 + 7); // <s> + one id per character
    ['abc', '47+38='].forEach((text, i) => {
      const got = r.data[i]!.embedding!;
      expect(got).toHaveLength(128);
      const { result, cache } = runWithCache(t.model, [t.tok.bosId!, ...t.tok.encode(text)], { names: ['ln_final.hook_normalized'] });
      const h = cache.get('ln_final.hook_normalized').arraySync() as number[][];
      disposeResult(result);
      cache.dispose();
      const mean = h[0]!.map((_, j) => h.reduce((s, row) => s + row[j]!, 0) / h.length);
      const norm = Math.hypot(...mean);
      mean.forEach((x, j) => expect(got[j]!).toBeCloseTo(x / norm, 6));
    });
  });

  it('a wrong key is a 401 the client reports', async () => {
    const bad = new Mistral({ apiKey: 'wrong', serverURL: t.url });
    await expect(bad.models.list()).rejects.toMatchObject({ statusCode: 401 });
  });
});

describe('openai', () => {
  it('chat.completions.create with tools: a required call, then a named one', async () => {
    for (const tool_choice of ['required', { type: 'function', function: { name: 'get_model_benchmark' } }] as const) {
      const r = await openai.chat.completions.create({
        model: 'mistral-demo', messages: [{ role: 'user', content: 'benchmark?' }], tools: [TOOL], tool_choice, max_tokens: 200,
      });
      const c = r.choices[0]!;
      expect(c.finish_reason).toBe('tool_calls');
      const call = c.message.tool_calls![0]!;
      expect(call.type).toBe('function');
      if (call.type !== 'function') throw new Error('not a function call');
      expect(call.function.name).toBe('get_model_benchmark');
      expect(argsMatch(call.function.arguments), call.function.arguments).toBe(true);
    }
  });

  it('with two tools, each call matches its own tool\'s parameters (the model\'s choice, then a named one)', async () => {
    const other = { type: 'function' as const, function: { name: 'add', parameters: { type: 'object', properties: { a: { type: 'integer' }, b: { type: 'integer' } }, required: ['a', 'b'] } } };
    const call = async (tool_choice: 'required' | { type: 'function'; function: { name: string } }) => {
      const r = await openai.chat.completions.create({
        model: 'mistral-demo', messages: [{ role: 'user', content: '47+38=' }], tools: [other, TOOL], tool_choice, max_tokens: 200,
      });
      const c = r.choices[0]!.message.tool_calls![0]!;
      if (c.type !== 'function') throw new Error('not a function call');
      return c.function;
    };
    const chosen = await call('required'); // greedy: the demo model goes for "g…"
    expect(chosen.name).toBe('get_model_benchmark');
    expect(argsMatch(chosen.arguments), chosen.arguments).toBe(true);
    const add = await call({ type: 'function', function: { name: 'add' } });
    expect(add.name).toBe('add');
    const args = JSON.parse(add.arguments) as Record<string, unknown>;
    expect(Object.keys(args)).toEqual(['a', 'b']);
    expect(Number.isInteger(args.a) && Number.isInteger(args.b)).toBe(true);
  });

  it('stream: true gives the unstreamed answer in chunks', async () => {
    const req = { model: 'mistral-demo', messages: [{ role: 'user' as const, content: 'abcde|' }], max_tokens: 8, seed: 3 };
    const whole = await openai.chat.completions.create(req);
    let text = '';
    let finish: string | null = null;
    for await (const chunk of await openai.chat.completions.create({ ...req, stream: true })) {
      text += chunk.choices[0]?.delta.content ?? '';
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(text).toBe(whole.choices[0]!.message.content);
    expect(finish).toBe(whole.choices[0]!.finish_reason);
    expect(whole.choices[0]!.message.content).toBe(expected('[INST] abcde| [/INST]', 8));
  });

  it('streams a forced tool call as a tool_calls delta', async () => {
    const calls: OpenAI.Chat.Completions.ChatCompletionChunk.Choice.Delta.ToolCall[] = [];
    let finish: string | null = null;
    for await (const chunk of await openai.chat.completions.create({
      model: 'mistral-demo', messages: [{ role: 'user', content: 'x' }], tools: [TOOL], tool_choice: 'required', max_tokens: 200, stream: true,
    })) {
      calls.push(...(chunk.choices[0]?.delta.tool_calls ?? []));
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    expect(finish).toBe('tool_calls');
    expect(calls.map((c) => c.function?.name)).toEqual(['get_model_benchmark']);
    expect(argsMatch(calls[0]!.function!.arguments!)).toBe(true);
  });

  it('stop strings end the answer before them, streamed or not', async () => {
    const full = expected('[INST] 47+38= [/INST]', 20);
    expect(full).toContain('9'); // (so that the stop string below is met)
    const req = { model: 'mistral-demo', messages: [{ role: 'user' as const, content: '47+38=' }], max_tokens: 20, stop: ['9'] };
    const r = await openai.chat.completions.create(req);
    expect(r.choices[0]!.message.content).toBe(full.slice(0, full.indexOf('9')));
    expect(r.choices[0]!.finish_reason).toBe('stop');
    let text = '';
    for await (const chunk of await openai.chat.completions.create({ ...req, stop: ['99'], stream: true })) text += chunk.choices[0]?.delta.content ?? '';
    expect(text).toBe(full.slice(0, full.indexOf('99')));
  });

  it('a seed makes sampling repeatable: the library\'s draw from the same seed', async () => {
    const req = { model: 'mistral-demo', messages: [{ role: 'developer' as const, content: 'x' }, { role: 'user' as const, content: 'hello>' }], max_tokens: 10, temperature: 1, seed: 7 };
    const a = await openai.chat.completions.create(req);
    const b = await openai.chat.completions.create(req);
    expect(a.choices[0]!.message.content).toBe(b.choices[0]!.message.content);
    const ids = [t.tok.bosId!, ...t.tok.encode('[INST] x\n\nhello> [/INST]')];
    const lib = generateSync(t.model, ids, { maxNewTokens: 10, temperature: 1, seed: 7, stopIds: [t.tok.eosId!] }).map((x) => x.id);
    expect(a.choices[0]!.message.content).toBe(t.tok.decode(lib));
  });

  it('embeddings.create (base64 on the wire, as the client asks) equals the float vectors', async () => {
    const viaOpenai = await openai.embeddings.create({ model: 'mistral-demo', input: 'abc' });
    const viaMistral = await mistral.embeddings.create({ model: 'mistral-demo', inputs: 'abc' });
    expect(viaOpenai.data[0]!.embedding).toEqual(viaMistral.data[0]!.embedding);
    expect(viaOpenai.usage.prompt_tokens).toBe(4);
  });

  it('a bad field is a BadRequestError naming it', async () => {
    await expect(openai.chat.completions.create({ model: 'mistral-demo', messages: [{ role: 'user', content: 'x' }], temperature: 5 }))
      .rejects.toMatchObject({ status: 400, param: 'temperature', message: '400 temperature: must be a number in [0, 2], got 5' });
  });
});
