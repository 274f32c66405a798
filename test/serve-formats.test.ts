/**
 * The server with Mistral's real tokenizers (SentencePiece v3 and v7, with tool control
 * tokens; Mistral-7B-v0.1's tokenizer.json in format v1, tools as text, and with a chat template), over a tiny synthetic model of their vocabulary size (random weights, so only the
 * shape of what it writes is meaningful): the prompt is exactly the tokenizer's own
 * encodeChat of the conversation, a forced call starts with [TOOL_CALLS] (the control token,
 * or the text marker) and is read back by the tokenizer's parser, and tool_choice "none" never lets it call.
 *
 * Needs ../shared/golden/tokenizers (or $MISTRAL_REF_TOKENIZERS); skipped, with a warning, without.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { planSynth, synthesize } from '../src/cli/synthetic.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { ChatServer } from '../src/serve/server.js';
import { loadTokenizer, type ChatMessage, type LoadedTokenizer } from '../src/tokenizer/index.js';
import { ROOT } from './helpers/fixtures.js';
import { tempDir } from './helpers/safetensors-builder.js';

const GOLDEN = process.env.MISTRAL_REF_TOKENIZERS ?? path.resolve(ROOT, '../shared/golden/tokenizers');
const HAVE = fs.existsSync(path.join(GOLDEN, 'mistral_instruct_tokenizer_240323.model.v3')) && fs.existsSync(path.join(GOLDEN, 'hf-mistral-7b-v0.1'));
if (!HAVE) console.warn(`Mistral tokenizers not found in ${GOLDEN}: the server's v3/v7 format tests SKIPPED (set MISTRAL_REF_TOKENIZERS)`);

const TOOL = {
  type: 'function' as const,
  function: {
    name: 'get_model_benchmark',
    description: 'Get the benchmark score of a model',
    parameters: {
      type: 'object',
      properties: { model_name: { type: 'string', maxLength: 6 }, metric: { enum: ['mmlu', 'gsm8k'] } },
      required: ['model_name', 'metric'],
    },
  },
};

const tmp = tempDir('mistral-ref-serve-formats-');
afterAll(() => tmp.cleanup());

const HF = path.join(GOLDEN, 'hf-mistral-7b-v0.1');
/** A chat template written for this test: [U]…[/U] turns, tools ignored. */
const TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m.role == 'user' %}[U]{{ m.content }}[/U]{% elif m.role == 'assistant' %}{{ m.content }}{{ eos_token }}{% endif %}{% endfor %}";

const CASES = [
  { label: 'SentencePiece v3', copy: [['mistral_instruct_tokenizer_240323.model.v3', 'tokenizer.model.v3']], format: 'mistral-v3' },
  { label: 'SentencePiece v7', copy: [['mistral_instruct_tokenizer_241114.model.v7', 'tokenizer.model.v7']], format: 'mistral-v7' },
  { label: 'tokenizer.json (v1: tools as text)', copy: [['hf-mistral-7b-v0.1/tokenizer.json', 'tokenizer.json'], ['hf-mistral-7b-v0.1/tokenizer_config.json', 'tokenizer_config.json']], format: 'mistral-v1' },
  { label: 'tokenizer.json with a chat_template', copy: [['hf-mistral-7b-v0.1/tokenizer.json', 'tokenizer.json']], template: TEMPLATE, format: 'chat-template' },
] as const;

describe.skipIf(!HAVE).each(CASES)('the server with the $label tokenizer', (c) => {
  const version = c.label.replace(/\W+/g, '-');
  let model: Transformer;
  let tok: LoadedTokenizer;
  let server: ChatServer;
  let url: string;
  beforeAll(async () => {
    await useBackend('cpu');
    const dir = path.join(tmp.dir, version);
    fs.mkdirSync(dir);
    for (const [from, to] of c.copy) fs.copyFileSync(path.join(GOLDEN, from), path.join(dir, to));
    if ('template' in c) {
      const config = JSON.parse(fs.readFileSync(path.join(HF, 'tokenizer_config.json'), 'utf8')) as Record<string, unknown>;
      fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...config, chat_template: c.template }));
    }
    tok = await loadTokenizer(dir);
    expect(tok.chatFormat).toBe(c.format);
    const weights = path.join(tmp.dir, `${version}-model`);
    synthesize(planSynth({
      preset: 'mistral-7b-v0.3', layers: 1, dtype: 'F32', seed: 3,
      overrides: { hidden_size: 32, intermediate_size: 48, num_attention_heads: 2, num_key_value_heads: 1, vocab_size: tok.vocabSize },
    }), weights);
    model = Transformer.load(weights, { weights: 'eager' });
    server = new ChatServer({ model, tok, id: 'synthetic', maxTokens: 300 }, { port: 0 });
    url = await server.listen();
  });
  afterAll(async () => {
    await server?.close();
    model?.dispose();
  });

  const post = async (body: Record<string, unknown>) => {
    const r = await fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'synthetic', ...body }) });
    expect(r.status).toBe(200);
    return await r.json() as {
      choices: { message: { content: string | null; tool_calls?: { id: string; function: { name: string; arguments: string } }[] }; finish_reason: string }[];
      usage: { prompt_tokens: number };
    };
  };

  it('a forced call: the prompt is the tokenizer\'s own, the call is read back by its parser', async () => {
    const messages: ChatMessage[] = [{ role: 'system', content: 'Be brief.' }, { role: 'user', content: 'Score of mistral?' }];
    const r = await post({ messages, tools: [TOOL], tool_choice: 'any', max_tokens: 300 });
    // v1 has no tool tokens: the tools travel as text before the last user message (docs/serve.md).
    const asText = c.format === 'mistral-v1'
      ? [messages[0]!, { role: 'user' as const, content: `[AVAILABLE_TOOLS]${JSON.stringify([TOOL])}[/AVAILABLE_TOOLS]Score of mistral?` }]
      : messages;
    expect(r.usage.prompt_tokens).toBe(tok.encodeChat({ messages: asText, tools: c.format === 'mistral-v1' ? [] : [TOOL] }).length);
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe('tool_calls');
    expect(choice.message.tool_calls).toHaveLength(1);
    const call = choice.message.tool_calls![0]!;
    expect(call.function.name).toBe('get_model_benchmark');
    expect(call.id).toMatch(/^[a-zA-Z0-9]{9}$/);
    const args = JSON.parse(call.function.arguments) as Record<string, unknown>;
    expect(Object.keys(args)).toEqual(['model_name', 'metric']);
    expect(typeof args.model_name === 'string' && args.model_name.length <= 6).toBe(true);
    expect(['mmlu', 'gsm8k']).toContain(args.metric);

    // The round trip: the call and its result go back in the format's own tokens.
    const next: ChatMessage[] = [...messages, { role: 'assistant', content: null, tool_calls: [call as never] }, { role: 'tool', tool_call_id: call.id, name: call.function.name, content: '{"score": 1}' }];
    const r2 = await post({ messages: next, tools: [TOOL], tool_choice: 'none', max_tokens: 5 });
    if (c.format !== 'mistral-v1') expect(r2.usage.prompt_tokens).toBe(tok.encodeChat({ messages: next, tools: [TOOL] }).length);
    expect(r2.choices[0]!.message.tool_calls).toBeUndefined();
  });

  it('response_format json_object writes an object', async () => {
    const r = await post({ messages: [{ role: 'user', content: 'JSON please' }], response_format: { type: 'json_object' }, max_tokens: 300 });
    const choice = r.choices[0]!;
    expect(choice.finish_reason).toBe('stop');
    const v = JSON.parse(choice.message.content!) as unknown;
    expect(typeof v === 'object' && v !== null && !Array.isArray(v)).toBe(true);
  });
});
