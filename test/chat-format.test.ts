/**
 * Instruct formats and function calling: mistral-common's own samples (tokens_v1 / tokens_v3)
 * token for token, tool-call parsing round trips, the v7 layout, the normalization rules,
 * request validation, Jinja chat templates, and Python-compatible JSON.
 *
 * Tokenizer files are read from ../shared/golden/tokenizers or $MISTRAL_REF_TOKENIZERS; the
 * tests that need them are skipped (with a warning) when neither exists.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, describe, expect, it } from 'vitest';
import {
  ChatFormatError, HuggingFaceTokenizer, loadTokenizer, parseToolCalls, ToolCallParseError, TokenizerError,
  type ChatMessage, type ChatRequest, type ToolCall,
} from '../src/tokenizer/index.js';
import { dumps, floatRepr, fromJs, loads } from '../src/tokenizer/pyjson.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const GOLDEN = process.env.MISTRAL_REF_TOKENIZERS ?? path.resolve(ROOT, '../shared/golden/tokenizers');
const HAVE_GOLDEN = fs.existsSync(path.join(GOLDEN, 'corpus.json'));
if (!HAVE_GOLDEN) {
  console.warn(`tokenizer goldens not found in ${GOLDEN}: golden chat-format tests SKIPPED (set MISTRAL_REF_TOKENIZERS to the folder with the tokenizer files and mistral-common-samples/)`);
}
const SAMPLES = path.join(GOLDEN, 'mistral-common-samples');
const V1 = 'tokenizer.model.v1';
const V3 = 'mistral_instruct_tokenizer_240323.model.v3';
const V7 = 'mistral_instruct_tokenizer_241114.model.v7';
const load = (file: string) => loadTokenizer(path.join(GOLDEN, file));
const json = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));
/** Golden ids of corpus line i for one model (python sentencepiece). */
const lineIds = (model: string, i: number): number[] => json(path.join(GOLDEN, 'goldens', `${model}.json`)).cases[i].ids;
const lineText = (i: number): string => json(path.join(GOLDEN, 'corpus.json')).lines[i];

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-chat-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** Control ids of v3 and v7, as the golden README lists them. */
const BOS = 1, EOS = 2, INST = 3, END_INST = 4, TOOL_CALLS = 5, TOOLS = 6, END_TOOLS = 7, RESULTS = 8, END_RESULTS = 9;
const SYSTEM = 16, END_SYSTEM = 17, TOOL_CONTENT = 18;

describe.skipIf(!HAVE_GOLDEN)('mistral-common samples, token for token', () => {
  const cases = (): [string, 'v1' | 'v3'][] => fs.readdirSync(SAMPLES).sort().flatMap((d) =>
    (['v1', 'v3'] as const).filter((v) => fs.existsSync(path.join(SAMPLES, d, `tokens_${v}.json`))).map((v) => [d, v] as [string, 'v1' | 'v3']));

  it('has 7 samples with v1 or v3 tokens (v2 needs a model file that is not provided)', () => {
    expect(cases()).toEqual([
      ['get_weather_full', 'v3'], ['get_weather_no_history', 'v3'], ['get_weather_no_system_prompt', 'v3'],
      ['no_tools', 'v1'], ['no_tools', 'v3'], ['parallel_calls', 'v3'], ['several_calls', 'v3'],
    ]);
  });

  it('encodeChat({messages, tools}) gives every sample\'s tokens, and their pieces spell text_vN.txt', async () => {
    const tok = { v1: await load(V1), v3: await load(V3) };
    for (const [dir, v] of cases()) {
      const sample = json(path.join(SAMPLES, dir, 'sample.json')) as ChatRequest;
      const want: number[] = json(path.join(SAMPLES, dir, `tokens_${v}.json`)).tokens;
      const got = tok[v].encodeChat(sample);
      expect(got, `${dir} ${v}`).toEqual(want);
      expect(got.map((id) => tok[v].idToPiece(id)).join(''), `${dir} ${v}`).toBe(fs.readFileSync(path.join(SAMPLES, dir, `text_${v}.txt`), 'utf8'));
    }
  });

  it('parses every [TOOL_CALLS] … </s> of the v3 samples back into the calls, and re-encodes them to the same tokens', async () => {
    const tok = await load(V3);
    let parsedCalls = 0;
    for (const [dir, v] of cases()) {
      if (v !== 'v3') continue;
      const sample = json(path.join(SAMPLES, dir, 'sample.json')) as ChatRequest;
      const tokens: number[] = json(path.join(SAMPLES, dir, `tokens_${v}.json`)).tokens;
      // The assistant messages with tool calls, in order, and their segments in the tokens.
      const withCalls = sample.messages.filter((m): m is Extract<ChatMessage, { role: 'assistant' }> => m.role === 'assistant' && (m.tool_calls?.length ?? 0) > 0);
      const segments: number[][] = [];
      for (let i = tokens.indexOf(TOOL_CALLS); i >= 0; i = tokens.indexOf(TOOL_CALLS, i + 1)) segments.push(tokens.slice(i, tokens.indexOf(EOS, i) + 1));
      expect(segments.length, dir).toBe(withCalls.length);
      const parsed = segments.map((s) => tok.parseAssistant(s));
      parsed.forEach((p, k) => {
        expect(p.content).toBeNull();
        const want = withCalls[k]!.tool_calls!;
        expect(p.tool_calls!.map((c) => [c.id, c.type, c.function.name, JSON.parse(c.function.arguments)]), dir)
          .toEqual(want.map((c: ToolCall) => [c.id, 'function', c.function.name, JSON.parse(c.function.arguments as string)]));
        parsedCalls += p.tool_calls!.length;
      });
      // Round trip: the parsed calls in place of the sample's give the same tokens.
      let k = 0;
      const again = { ...sample, messages: sample.messages.map((m) => (m.role === 'assistant' && (m.tool_calls?.length ?? 0) > 0 ? { role: 'assistant' as const, tool_calls: parsed[k++]!.tool_calls } : m)) };
      expect(tok.encodeChat(again), dir).toEqual(tokens);
    }
    expect(parsedCalls).toBe(11);
  });
});

describe.skipIf(!HAVE_GOLDEN)('format details (ids built from the README\'s control ids and golden text ids)', () => {
  it('v7: system messages in place, tools before the last user message, tool results with [TOOL_CONTENT]', async () => {
    const tok = await load(V7);
    const g = (i: number) => lineIds(V7, i);
    expect(tok.encodeChat({
      messages: [
        { role: 'system', content: lineText(0) }, { role: 'user', content: lineText(1) },
        { role: 'assistant', content: lineText(2) }, { role: 'user', content: lineText(6) },
      ],
    })).toEqual([BOS, SYSTEM, ...g(0), END_SYSTEM, INST, ...g(1), END_INST, ...g(2), EOS, INST, ...g(6), END_INST]);

    const tools = [{ type: 'function' as const, function: { name: 'f', description: 'd', parameters: { type: 'object' } } }];
    const ids = tok.encodeChat({
      tools,
      messages: [
        { role: 'user', content: lineText(1) },
        { role: 'assistant', content: lineText(2), tool_calls: [{ id: 'abcDEF123', function: { name: 'f', arguments: '{"x":1}' } }] },
        { role: 'tool', tool_call_id: 'abcDEF123', content: lineText(29) },
      ],
    });
    expect(ids).toEqual([
      BOS, TOOLS, ...tok.encode('[{"type": "function", "function": {"name": "f", "description": "d", "parameters": {"type": "object"}}}]'), END_TOOLS,
      INST, ...g(1), END_INST, ...g(2), TOOL_CALLS, ...tok.encode('[{"name": "f", "arguments": {"x": 1}, "id": "abcDEF123"}]'), EOS,
      RESULTS, ...tok.encode('abcDEF123'), TOOL_CONTENT, ...g(29), END_RESULTS,
    ]);
  });

  it('v1 puts the system prompt before the first user message, v3 before the last', async () => {
    const messages: ChatMessage[] = [
      { role: 'system', content: 'Be brief.' }, { role: 'user', content: 'A' }, { role: 'assistant', content: 'B' }, { role: 'user', content: 'C' },
    ];
    const v1 = await load(V1);
    expect(v1.encodeChat({ messages })).toEqual([BOS, ...v1.encode('[INST] Be brief.\n\nA [/INST]'), ...v1.encode('B'), EOS, ...v1.encode('[INST] C [/INST]')]);
    const v3 = await load(V3);
    expect(v3.encodeChat({ messages })).toEqual([BOS, INST, ...v3.encode('A'), END_INST, ...v3.encode('B'), EOS, INST, ...v3.encode('Be brief.\n\nC'), END_INST]);
  });

  it('v3 normalization: runs of one role merge, a system message splits them, answers lose trailing spaces', async () => {
    const tok = await load(V3);
    const e = (t: string) => tok.encode(t);
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'A' }, { role: 'user', content: 'B' }] })).toEqual([BOS, INST, ...e('A\n\nB'), END_INST]);
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'A' }, { role: 'system', content: 'S' }, { role: 'user', content: 'C' }] }))
      .toEqual([BOS, INST, ...e('A'), END_INST, INST, ...e('S\n\nC'), END_INST]);
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'A' }, { role: 'assistant', content: 'B  ' }, { role: 'user', content: 'C' }] }))
      .toEqual([BOS, INST, ...e('A'), END_INST, ...e('B'), EOS, INST, ...e('C'), END_INST]);
    // A conversation that starts with the assistant gets an empty user message first.
    expect(tok.encodeChat({ messages: [{ role: 'assistant', content: 'B' }, { role: 'user', content: 'C' }] }))
      .toEqual([BOS, INST, END_INST, ...e('B'), EOS, INST, ...e('C'), END_INST]);
    // A prefix answer is left open: no EOS.
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'A' }, { role: 'assistant', content: 'Sure', prefix: true }] }))
      .toEqual([BOS, INST, ...e('A'), END_INST, ...e('Sure')]);
  });

  it('v3 tool results and arguments go through Python\'s json.loads / json.dumps', async () => {
    const tok = await load(V3);
    const call = (args: string | Record<string, unknown>) => ({ id: 'abcDEF123', function: { name: 'f', arguments: args } });
    const result = (content: string, args: string | Record<string, unknown> = '{}') => tok.encodeChat({
      messages: [{ role: 'user', content: 'A' }, { role: 'assistant', tool_calls: [call(args)] }, { role: 'tool', tool_call_id: 'abcDEF123', content }],
    });
    const prefix = (args: string) => [BOS, INST, ...tok.encode('A'), END_INST, TOOL_CALLS, ...tok.encode(args), EOS, RESULTS];
    const r = (json: string) => [...tok.encode(json), END_RESULTS];
    const noArgs = prefix('[{"name": "f", "arguments": {}, "id": "abcDEF123"}]');
    expect(result('22')).toEqual([...noArgs, ...r('{"content": 22, "call_id": "abcDEF123"}')]);
    expect(result('Email sent')).toEqual([...noArgs, ...r('{"content": "Email sent", "call_id": "abcDEF123"}')]);
    expect(result('{"t":1.0,"big":123456789012345678901,"é":"\\u00e9","2":null}'))
      .toEqual([...noArgs, ...r('{"content": {"t": 1.0, "big": 123456789012345678901, "é": "é", "2": null}, "call_id": "abcDEF123"}')]);
    expect(result('')).toEqual([...noArgs, ...r('{"content": {}, "call_id": "abcDEF123"}')]);
    expect(result('ok', { b: [1, 0.5], a: 'x' })).toEqual([...prefix('[{"name": "f", "arguments": {"b": [1, 0.5], "a": "x"}, "id": "abcDEF123"}]'), ...r('{"content": "ok", "call_id": "abcDEF123"}')]);
    expect(result('ok', 'not json')).toEqual([...prefix('[{"name": "f", "arguments": "not json", "id": "abcDEF123"}]'), ...r('{"content": "ok", "call_id": "abcDEF123"}')]);
  });

  it('parseAssistant: plain text, text then calls (v7), and output cut at EOS', async () => {
    const tok = await load(V7);
    expect(tok.parseAssistant([...tok.encode('Sure thing'), EOS, 99, 100])).toEqual({ role: 'assistant', content: 'Sure thing', tool_calls: null });
    const out = tok.parseAssistant([...tok.encode('Let me check.'), TOOL_CALLS, ...tok.encode('[{"name": "f", "arguments": {"x": 1}, "id": "abcDEF123"}]'), EOS]);
    expect(out).toEqual({
      role: 'assistant', content: 'Let me check.',
      tool_calls: [{ id: 'abcDEF123', type: 'function', function: { name: 'f', arguments: '{"x": 1}' } }],
    });
  });
});

describe('parsing [TOOL_CALLS] output', () => {
  const id = () => 'generated';

  it('reads a list of calls (or one call), keeping ids, writing arguments as mistral-common does', () => {
    expect(parseToolCalls(' [{"name": "get_weather", "arguments": {"city": "Paris", "days": 3}}, {"name": "g", "arguments": {}, "id": "abcDEF123"}]', id)).toEqual([
      { id: 'generated', type: 'function', function: { name: 'get_weather', arguments: '{"city": "Paris", "days": 3}' } },
      { id: 'abcDEF123', type: 'function', function: { name: 'g', arguments: '{}' } },
    ]);
    expect(parseToolCalls('{"name":"f","arguments":{"t":1.50}}', id)).toEqual([{ id: 'generated', type: 'function', function: { name: 'f', arguments: '{"t": 1.5}' } }]);
    expect(parseToolCalls('[{"name": "f"}]', id)[0]!.function.arguments).toBe('{}');
    expect(parseToolCalls('[{"name": "f"}]')[0]!.id).toMatch(/^[a-zA-Z0-9]{9}$/);
  });

  it('says exactly what is wrong with malformed output', () => {
    const error = (text: string) => {
      try {
        parseToolCalls(text, id);
      } catch (e) {
        expect(e).toBeInstanceOf(ToolCallParseError);
        expect(e).toBeInstanceOf(TokenizerError);
        return (e as Error).message;
      }
      throw new Error('no error');
    };
    expect(error('not json')).toBe('tool call output is not valid JSON: expected a JSON value, got "n" at position 0 in "not json"');
    expect(error('[{"name": "f", "arguments": {"a": 1}')).toBe('tool call output is not valid JSON: expected \',\' or \'}\', got the end of the text at position 36 in "[{\\"name\\": \\"f\\", \\"arguments\\": {\\"a\\": 1}"');
    expect(error('[{"name": "f"}] and more')).toBe('tool call output is not valid JSON: extra data after the JSON value, got "a" at position 16 in "[{\\"name\\": \\"f\\"}] and more"');
    expect(error('"hello"')).toBe('tool call output must be a JSON list of calls, got "\\"hello\\""');
    expect(error('[1]')).toBe('tool call 0 must be a JSON object, got "1"');
    expect(error('[{"arguments": {}}]')).toBe('tool call 0 has no "name" string: "{\\"arguments\\": {}}"');
    expect(error('[{"name": "f", "arguments": [1]}]')).toBe('tool call 0 (f): "arguments" must be an object, got "[1]"');
    expect(error('[{"name": "f", "id": 7}]')).toBe('tool call 0 (f): "id" must be a string, got "7"');
  });
});

describe('request validation (mistral-common\'s rules), one line naming the message', () => {
  const demo = () => loadTokenizer(path.join(ROOT, 'models', 'mistral-demo'));
  const error = async (request: unknown, format: 'mistral-v1' | 'mistral-v3' = 'mistral-v3') => {
    const tok = await demo();
    try {
      tok.encodeChat(request as ChatRequest, { format });
    } catch (e) {
      expect(e).toBeInstanceOf(ChatFormatError);
      return (e as Error).message;
    }
    throw new Error('no error');
  };
  const user = { role: 'user', content: 'hi' };
  const call = { id: 'abcDEF123', function: { name: 'f', arguments: '{}' } };

  it('rejects malformed conversations', async () => {
    expect(await error({ messages: [] })).toBe('a conversation needs at least one message');
    expect(await error({ messages: [{ role: 'bot', content: 'x' }] })).toBe('message 0 (bot): role must be system, user, assistant or tool, got "bot"');
    expect(await error({ messages: [user, { role: 'tool', tool_call_id: 'abcDEF123', content: 'x' }] })).toBe('message 1 (tool): a tool message cannot follow a user message');
    expect(await error({ messages: [user, { role: 'assistant', content: 'x' }] })).toBe('message 1 (assistant): the last message must be user or tool (or an assistant prefix), so that the model answers next');
    expect(await error({ messages: [{ role: 'assistant', content: 'x' }] })).toBe('message 0 (assistant): a conversation must start with a user or system message');
    expect(await error({ messages: [user, { role: 'assistant', content: 'x', tool_calls: [call] }, { role: 'tool', tool_call_id: 'abcDEF123', content: 'r' }] }))
      .toBe('message 1 (assistant): needs either content or tool_calls, not both and not neither');
    expect(await error({ messages: [user, { role: 'assistant', tool_calls: [call] }, { role: 'tool', content: 'r' }] }))
      .toBe('message 2 (tool): tool_call_id is required (the id of the call this answers)');
    expect(await error({ messages: [user, { role: 'assistant', tool_calls: [{ ...call, id: 'call_1' }] }, { role: 'tool', tool_call_id: 'abcDEF123', content: 'r' }] }))
      .toBe('message 1 (assistant): tool call 0 (f): id "call_1" must be 9 characters a-z A-Z 0-9');
    expect(await error({ messages: [user, { role: 'assistant', tool_calls: [{ ...call, function: { name: 'bad name', arguments: '{}' } }] }, { role: 'tool', tool_call_id: 'abcDEF123', content: 'r' }] }))
      .toBe('message 1 (assistant): tool call 0: function name "bad name" must be 1–64 characters a-z A-Z 0-9 _ -');
    expect(await error({ messages: [user, { role: 'assistant', tool_calls: [call, call] }, { role: 'tool', tool_call_id: 'abcDEF123', content: 'r' }, { role: 'assistant', content: 'x' }, user] }))
      .toBe('message 3 (assistant): the tool calls before it do not have one tool result each');
    expect(await error({ messages: [user, { role: 'assistant', content: 'x', prefix: true }, user] })).toBe('message 1 (assistant): only the last message can be a prefix');
    expect(await error({ messages: [user], tools: [{ type: 'function', function: { name: 'f' } }] }, 'mistral-v1'))
      .toBe('format mistral-v1 has no tool calling: tools need mistral-v3 or mistral-v7');
  });

  it('needs the format\'s control tokens', async () => {
    const src = path.join(ROOT, 'models', 'mistral-demo', 'tokenizer.json');
    expect(await error({ messages: [user] })).toBe(`${src}: format mistral-v3 needs the control token [INST], which this tokenizer does not have`);
  });

  it('v1 on a character tokenizer is plain text', async () => {
    const tok = await demo();
    const chars = (s: string) => [...s].map((c) => (c === '\n' ? 3 : c.codePointAt(0)! - 28));
    expect(tok.encodeChat({ messages: [{ role: 'user', content: '47+38=' }] })).toEqual([1, ...chars('[INST] 47+38= [/INST]')]);
  });
});

describe('Jinja chat templates from tokenizer_config.json', () => {
  /** The demo tokenizer.json with a tokenizer_config.json that has `template`, in a temp folder. */
  const withTemplate = (template: unknown) => {
    const dir = fs.mkdtempSync(path.join(tmp, 'template-'));
    fs.copyFileSync(path.join(ROOT, 'models', 'mistral-demo', 'tokenizer.json'), path.join(dir, 'tokenizer.json'));
    const config = json(path.join(ROOT, 'models', 'mistral-demo', 'tokenizer_config.json'));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: template }));
    return loadTokenizer(dir);
  };
  const chars = (s: string) => [...s].map((c) => (c === '\n' ? 3 : c.codePointAt(0)! - 28));

  it('renders messages, bos_token, eos_token and add_generation_prompt, then encodes with special tokens matched', async () => {
    // (As in transformers, a newline right after a block tag is trimmed: the newline is written as {{ '\n' }}.)
    const tok = await withTemplate("{{ bos_token }}{% for m in messages %}{{ m['role'][0] }}:{{ m.content }}{% if m.role == 'assistant' %}{{ eos_token }}{% endif %}{{ '\\n' }}{% endfor %}{% if add_generation_prompt %}a:{% endif %}");
    expect(tok.chatFormat).toBe('chat-template');
    expect(tok.encodeChat({ messages: [{ role: 'user', content: '1+1=' }, { role: 'assistant', content: '2' }, { role: 'user', content: 'ok' }] }))
      .toEqual([1, ...chars('u:1+1=\na:2'), 2, ...chars('\nu:ok\na:')]);
  });

  it('picks the tool_use template when there are tools, and reports template errors in one line', async () => {
    const tok = await withTemplate([{ name: 'default', template: 'D' }, { name: 'tool_use', template: '{{ tools[0].function.name }}' }]);
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'x' }] })).toEqual(chars('D'));
    expect(tok.encodeChat({ messages: [{ role: 'user', content: 'x' }], tools: [{ type: 'function', function: { name: 'fn' } }] })).toEqual(chars('fn'));
    const bad = await withTemplate("{{ raise_exception('roles must alternate') }}");
    expect(() => bad.encodeChat({ messages: [{ role: 'user', content: 'x' }] })).toThrow(/tokenizer\.json: chat_template: roles must alternate$/);
  });

  it.skipIf(!HAVE_GOLDEN)('Mistral-7B-v0.1 tokenizer.json: a template writing v1\'s text, and the built-in v1 format, both give tokens_v1', async () => {
    const hf = await loadTokenizer(path.join(GOLDEN, 'hf-mistral-7b-v0.1')) as HuggingFaceTokenizer;
    expect(hf.chatFormat).toBe('mistral-v1');
    const sample = json(path.join(SAMPLES, 'no_tools', 'sample.json')) as ChatRequest;
    const want = json(path.join(SAMPLES, 'no_tools', 'tokens_v1.json')).tokens;
    expect(hf.encodeChat(sample)).toEqual(want);
    // Spaces before [INST] and before each answer: with them, HF's "first"-only prefix gives sentencepiece's pieces.
    const templated = new HuggingFaceTokenizer(
      json(path.join(GOLDEN, 'hf-mistral-7b-v0.1', 'tokenizer.json')),
      { ...hf.config, chat_template: "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}{{ ' [INST] ' + m.content + ' [/INST]' }}{% else %}{{ ' ' + m.content + eos_token }}{% endif %}{% endfor %}" },
      'templated');
    expect(templated.encodeChat(sample)).toEqual(want);
  });
});

describe('Python-compatible JSON (pyjson)', () => {
  it('writes floats as Python\'s repr', () => {
    const cases: [number, string][] = [
      [0.1, '0.1'], [1, '1.0'], [1e-5, '1e-05'], [1e-4, '0.0001'], [1e16, '1e+16'], [1e15, '1000000000000000.0'],
      [123456.789, '123456.789'], [-1.5e-7, '-1.5e-07'], [2.5e20, '2.5e+20'], [12345678901234567, '1.2345678901234568e+16'],
      [1.7976931348623157e308, '1.7976931348623157e+308'], [5e-324, '5e-324'], [-0, '-0.0'],
    ];
    for (const [x, repr] of cases) expect(floatRepr(x), String(x)).toBe(repr);
  });

  it('json.dumps(json.loads(s), ensure_ascii=False): order, ints, floats, escapes, repeated keys', () => {
    expect(dumps(loads('{"b":1,"2":[1.0,-0,1E2,12345678901234567890,true,null],"s":"é\\u00e9\\n\\u0001\\/\\"","b":3}')))
      .toBe('{"b": 3, "2": [1.0, 0, 100.0, 12345678901234567890, true, null], "s": "éé\\n\\u0001/\\""}');
    expect(dumps(fromJs({ a: [1, 0.5, 'x'], n: null }))).toBe('{"a": [1, 0.5, "x"], "n": null}');
  });

  it('rejects what Python rejects, with the position', () => {
    expect(() => loads('[1, 2')).toThrow("expected ',' or ']', got the end of the text at position 5");
    expect(() => loads('{"a" 1}')).toThrow('expected \':\', got "1" at position 5');
    expect(() => loads('01')).toThrow('extra data after the JSON value, got "1" at position 1');
    expect(() => loads('"a\nb"')).toThrow('control character in a string, got "\\n" at position 2');
  });
});
