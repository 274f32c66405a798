/** `mistral-ref tokenize` and `mistral-ref chat`, run in-process through main(). */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, describe, expect, it } from 'vitest';
import { generateSync } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const DEMO = path.join(ROOT, 'models', 'mistral-demo');
const GOLDEN = process.env.MISTRAL_REF_TOKENIZERS ?? path.resolve(ROOT, '../shared/golden/tokenizers');
const HAVE_GOLDEN = fs.existsSync(path.join(GOLDEN, 'corpus.json'));
if (!HAVE_GOLDEN) console.warn(`tokenizer goldens not found in ${GOLDEN}: the golden tokenize CLI test is SKIPPED (set MISTRAL_REF_TOKENIZERS)`);

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-tokcli-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The demo tokenizer: one id per character, id = code point − 28, "\n" = 3. */
const chars = (s: string) => [...s].map((c) => (c === '\n' ? 3 : c.codePointAt(0)! - 28));

describe('mistral-ref tokenize', () => {
  it('--jsonl: one JSON array of ids per JSON string line, BOS only with --bos', async () => {
    const r = await runCli(['tokenize', '--tokenizer', DEMO, '--jsonl'], [JSON.stringify('47+38='), JSON.stringify('a b\n'), '""']);
    expect(r).toEqual({ code: 0, stdout: `${JSON.stringify(chars('47+38='))}\n${JSON.stringify(chars('a b\n'))}\n[]\n`, stderr: '' });
    const b = await runCli(['tokenize', '--tokenizer', path.join(DEMO, 'tokenizer.json'), '--jsonl', '--bos'], ['"47+38="']);
    expect(b.stdout).toBe('[1,24,27,15,23,28,33]\n');
  });

  it('with texts as arguments: each text, its count, and a table of ids and pieces', async () => {
    const r = await runCli(['tokenize', '--tokenizer', DEMO, '--bos', 'a=1', 'z']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe([
      '"a=1": 4 tokens', 'id  piece', '--  -----', '1   "<s>"', '69  "a"', '33  "="', '21  "1"', '',
      '"z": 2 tokens', 'id  piece', '--  -----', '1   "<s>"', '94  "z"', '',
    ].join('\n'));
  });

  it('bad input: one line on stderr, exit 2', async () => {
    const cases: [string[], string[], string][] = [
      [['tokenize', 'x'], [], 'mistral-ref tokenize: --tokenizer is required\n'],
      [['tokenize', '--tokenizer', DEMO], [], 'mistral-ref tokenize: give the texts to encode as arguments, or --jsonl to read them from stdin\n'],
      [['tokenize', '--tokenizer', DEMO, '--jsonl', 'x'], [], 'mistral-ref tokenize: --jsonl reads the texts from stdin: give no TEXT arguments\n'],
      [['tokenize', '--tokenizer', DEMO, '--jsonl'], ['"ok"', 'not json'], 'mistral-ref tokenize: stdin line 2: expected a JSON string, got "not json"\n'],
      [['tokenize', '--tokenizer', DEMO, '--jsonl'], ['[1]'], 'mistral-ref tokenize: stdin line 1: expected a JSON string, got "[1]"\n'],
      [['tokenize', '--tokenizer', path.join(tmp, 'none'), 'x'], [], `mistral-ref tokenize: ${path.join(tmp, 'none')}: no such file or folder\n`],
    ];
    for (const [argv, stdin, stderr] of cases) {
      const r = await runCli(argv, stdin);
      expect([r.code, r.stderr], argv.join(' ')).toEqual([2, stderr]);
    }
  });

  it.skipIf(!HAVE_GOLDEN)('--jsonl gives python sentencepiece\'s ids for every corpus line (v3)', async () => {
    const model = 'mistral_instruct_tokenizer_240323.model.v3';
    const golden = JSON.parse(fs.readFileSync(path.join(GOLDEN, 'goldens', `${model}.json`), 'utf8'));
    const r = await runCli(['tokenize', '--tokenizer', path.join(GOLDEN, model), '--jsonl', '--bos'], golden.cases.map((c: { text: string }) => JSON.stringify(c.text)));
    expect(r.code).toBe(0);
    expect(r.stdout.trimEnd().split('\n').map((l) => JSON.parse(l))).toEqual(golden.cases.map((c: { ids: number[] }) => [1, ...c.ids]));
  });
});

describe('mistral-ref chat', () => {
  it('--help prints the usage', async () => {
    const r = await runCli(['chat', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^usage: mistral-ref chat --model DIR/);
  });

  it('bad input: one line on stderr, exit 2', async () => {
    const cases: [string[], string][] = [
      [['chat'], 'mistral-ref chat: --model is required\n'],
      [['chat', '--model', DEMO, '--format', 'v9'], 'mistral-ref chat: --format must be one of mistral-v1, mistral-v3, mistral-v7, chat-template, got "v9"\n'],
      [['chat', '--model', DEMO, '--max-tokens', '0'], 'mistral-ref chat: --max-tokens expects an integer ≥ 1, got "0"\n'],
      [['chat', '--model', DEMO, '--tools', path.join(tmp, 'missing.json')], `mistral-ref chat: --tools ${path.join(tmp, 'missing.json')}: not found\n`],
      [['chat', '--model', DEMO, '--tokenizer', path.join(tmp, 'none')], `mistral-ref chat: ${path.join(tmp, 'none')}: no such file or folder\n`],
    ];
    for (const [argv, stderr] of cases) {
      const r = await runCli(argv, ['hi']);
      expect([r.code, r.stderr], argv.join(' ')).toEqual([2, stderr]);
    }
  });

  it('chats with the demo model: the v1 prompt of the whole conversation, greedy answers, no tensor left behind', async () => {
    await useBackend('cpu');
    const before = tf.memory().numTensors;
    const r = await runCli(['chat', '--model', DEMO, '--max-tokens', '6', '--show-ids'], ['47+38=', '/tool 5', '', 'hi', '/exit', 'never read']);
    expect(r.code).toBe(0);
    expect(tf.memory().numTensors).toBe(before);

    // What the answers must be: the same prompts through generate() directly.
    const model = Transformer.load(DEMO);
    try {
      const prompt1 = [1, ...chars('[INST] 47+38= [/INST]')];
      const answer1 = generateSync(model, prompt1, { maxNewTokens: 6, stopIds: [2] }).map((t) => t.id);
      const text1 = answer1.filter((id) => id > 2).map((id) => String.fromCharCode(id + 28)).join('');
      const prompt2 = [...prompt1, ...chars(text1.trim()), 2, ...chars('[INST] hi [/INST]')];
      const answer2 = generateSync(model, prompt2, { maxNewTokens: 6, stopIds: [2] }).map((t) => t.id);
      const text2 = answer2.filter((id) => id > 2).map((id) => String.fromCharCode(id + 28)).join('');
      expect(r.stdout).toBe(`${text1}\n${text2}\n`);
      expect(r.stderr).toBe([
        `prompt ids (${prompt1.length}): ${JSON.stringify(prompt1)}`,
        'chat: no tool call is waiting for a result',
        `prompt ids (${prompt2.length}): ${JSON.stringify(prompt2)}`,
        '',
      ].join('\n'));
    } finally {
      model.dispose();
    }
  });

  it('reports a turn the format rejects and goes on', async () => {
    const tools = path.join(tmp, 'tools.json');
    fs.writeFileSync(tools, JSON.stringify([{ type: 'function', function: { name: 'f', parameters: {} } }]));
    const r = await runCli(['chat', '--model', DEMO, '--tools', tools, '--max-tokens', '1'], ['hi']);
    expect(r.code).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toBe('chat: format mistral-v1 has no tool calling: tools need mistral-v3 or mistral-v7\n');
  });
});
