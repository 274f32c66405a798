/**
 * The server over plain HTTP: what it answers to bad requests (400 naming the field, 401,
 * 404, 405, 413, 429), that a client going away cancels its request, that close() drains,
 * and `mistral-ref serve` itself: the start-up line and Ctrl-C → exit 130.
 */
import { spawn } from 'node:child_process';
import * as net from 'node:net';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { runWithCache } from '../src/inspect/activations.js';
import { disposeResult } from '../src/model/transformer.js';
import { ChatServer } from '../src/serve/server.js';
import { modelDir, ROOT } from './helpers/fixtures.js';
import { serveDemo } from './helpers/serve.js';

const KEY = 'test-key-16';
const t = serveDemo({ apiKey: KEY, maxBodyBytes: 4096, parallel: 1, queue: 1, maxTokens: 100_000 });

const auth = { authorization: `Bearer ${KEY}`, 'content-type': 'application/json' };
const post = (p: string, body: unknown, headers: Record<string, string> = auth, signal?: AbortSignal) =>
  fetch(`${t.url}${p}`, { method: 'POST', headers, body: typeof body === 'string' ? body : JSON.stringify(body), ...(signal ? { signal } : {}) });
const chat = (extra: Record<string, unknown> = {}) => ({ model: 'mistral-demo', messages: [{ role: 'user', content: '47+38=' }], max_tokens: 4, ...extra });

async function error(r: Response): Promise<{ status: number; message: string; param: string | null }> {
  const body = await r.json() as { object: string; message: string; param: string | null; error: { message: string; param: string | null } };
  expect(body.object).toBe('error'); // Mistral's shape …
  expect(body.error.message).toBe(body.message); // … and OpenAI's
  return { status: r.status, message: body.message, param: body.param };
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('bad requests', () => {
  it('401 without the Bearer key or with a wrong one', async () => {
    expect(await error(await fetch(`${t.url}/v1/models`))).toEqual({ status: 401, message: 'missing API key: send "Authorization: Bearer <key>"', param: null });
    expect(await error(await fetch(`${t.url}/v1/models`, { headers: { authorization: 'Bearer nope' } }))).toEqual({ status: 401, message: 'invalid API key', param: null });
  });

  it('400 naming the field', async () => {
    const cases: Array<[unknown, string, string]> = [
      ['{"model": ', 'body', 'the request body is not valid JSON'],
      [chat({ messages: [] }), 'messages', 'messages: must be a non-empty list of messages, got []'],
      [chat({ temperature: -1 }), 'temperature', 'temperature: must be a number in [0, 2], got -1'],
      [chat({ max_tokens: 0 }), 'max_tokens', 'max_tokens: must be an integer ≥ 1, got 0'],
      [chat({ top_p: 0 }), 'top_p', 'top_p: must be a number in (0, 1], got 0'],
      [chat({ random_seed: 1.5 }), 'random_seed', 'random_seed: must be an integer in [0, 2^32), got 1.5'],
      [chat({ stop: [''] }), 'stop', 'stop: must be a non-empty string or a list of them, got [""]'],
      [chat({ frobnicate: 1 }), 'frobnicate', 'frobnicate: unknown field'],
      [chat({ n: 2 }), 'n', 'n: only 1 choice per request is supported, got 2'],
      [chat({ messages: [{ role: 'robot', content: 'x' }] }), 'messages[0].role', 'messages[0].role: must be system, user, assistant or tool, got "robot"'],
      [chat({ messages: [{ role: 'user', content: [{ type: 'image_url', image_url: 'x' }] }] }), 'messages[0].content[0]', 'messages[0].content[0]: only text chunks {"type": "text", "text": ...} are supported, got {"type":"image_url","image_url":"x"}'],
      [chat({ messages: [{ role: 'user', content: 'a' }, { role: 'tool', content: 'r' }] }), 'messages[1].tool_call_id', 'messages[1].tool_call_id: must be the id of the call this answers, got undefined'],
      [chat({ messages: [{ role: 'assistant', content: 'hi' }] }), 'messages', 'messages: message 0 (assistant): a conversation must start with a user or system message'],
      [chat({ tool_choice: 'any' }), 'tool_choice', 'tool_choice: "any" needs at least one tool in tools'],
      [chat({ tools: [{ type: 'function', function: { name: 'f' } }], tool_choice: { type: 'function', function: { name: 'g' } } }), 'tool_choice.function.name', 'tool_choice.function.name: names no tool in tools: "g"'],
      [chat({ tools: [{ type: 'function', function: { name: 'bad name' } }] }), 'tools[0].function.name', 'tools[0].function.name: must be 1-64 characters a-z A-Z 0-9 _ -, got "bad name"'],
      [chat({ response_format: { type: 'xml' } }), 'response_format.type', 'response_format.type: must be text, json_object or json_schema, got "xml"'],
      [chat({ response_format: { type: 'json_schema', json_schema: { name: 'x', schema: { type: 'string', pattern: 'a' } } } }), 'response_format.json_schema.schema',
        'response_format.json_schema.schema: the keyword "pattern" is not supported by constrained decoding'],
      [chat({ tools: [{ type: 'function', function: { name: 'f', parameters: { type: 'object', properties: { a: { $ref: '#/x' } } } } }], tool_choice: 'any' }),
        'tools[0].function.parameters', 'tools[0].function.parameters.properties.a: the keyword "$ref" is not supported by constrained decoding'],
    ];
    for (const [body, param, message] of cases) {
      const e = await error(await post('/v1/chat/completions', body));
      expect(e.status, message).toBe(400);
      expect(e.param).toBe(param);
      expect(e.message.startsWith(message), `${e.message} ≠ ${message}`).toBe(true);
    }
    const e = await error(await post('/v1/embeddings', { model: 'mistral-demo', input: [] }));
    expect(e).toEqual({ status: 400, param: 'input', message: 'input: must be a non-empty string or a non-empty list of them, got []' });
  });

  it('404 for another model or an unknown path, 405 for a wrong method', async () => {
    expect(await error(await post('/v1/chat/completions', chat({ model: 'gpt-4' }))))
      .toEqual({ status: 404, param: 'model', message: 'model "gpt-4" does not exist; this server serves "mistral-demo"' });
    expect((await error(await fetch(`${t.url}/v1/completions`, { headers: auth }))).status).toBe(404);
    expect(await error(await fetch(`${t.url}/v1/models/other`, { headers: auth })))
      .toEqual({ status: 404, param: 'model', message: 'model "other" does not exist; this server serves "mistral-demo"' });
    const card = await (await fetch(`${t.url}/v1/models/mistral-demo`, { headers: auth })).json() as { id: string; object: string };
    expect([card.id, card.object]).toEqual(['mistral-demo', 'model']);
    expect(await error(await fetch(`${t.url}/v1/chat/completions`, { headers: auth })))
      .toEqual({ status: 405, param: null, message: '/v1/chat/completions takes POST, got GET' });
  });

  it('413 for a body over the limit', async () => {
    const e = await error(await post('/v1/chat/completions', chat({ messages: [{ role: 'user', content: 'x'.repeat(5000) }] })));
    expect(e.status).toBe(413);
    expect(e.message).toMatch(/^request body of \d+ bytes is over the limit of 4096 bytes$/);
    expect((await fetch(`${t.url}/v1/models`, { headers: auth })).status).toBe(200); // and the server goes on
  });
});

describe('what else a client may send', () => {
  it('a malformed HTTP request gets 400 and the server goes on', async () => {
    const { port } = new URL(t.url);
    const reply = await new Promise<string>((resolve, reject) => {
      const s = net.connect(Number(port), '127.0.0.1', () => s.write('NOT HTTP AT ALL\r\n\r\n'));
      let got = '';
      s.on('data', (d) => { got += d; });
      s.on('end', () => resolve(got));
      s.on('error', reject);
    });
    expect(reply.startsWith('HTTP/1.1 400 Bad Request')).toBe(true);
    expect((await fetch(`${t.url}/v1/models`, { headers: auth })).status).toBe(200);
  });

  it('--pooling last: the final normalised state of the </s> after the text', async () => {
    const server = new ChatServer({ model: t.model, tok: t.tok, id: 'mistral-demo', maxTokens: 8 }, { port: 0, pooling: 'last' });
    const url = await server.listen();
    try {
      const r = await fetch(`${url}/v1/embeddings`, { method: 'POST', body: JSON.stringify({ model: 'mistral-demo', input: 'abc' }) });
      const body = await r.json() as { data: { embedding: number[] }[]; usage: { prompt_tokens: number } };
      expect(body.usage.prompt_tokens).toBe(5); // <s> a b c </s>
      const { result, cache } = runWithCache(t.model, [1, ...t.tok.encode('abc'), 2], { names: ['ln_final.hook_normalized'] });
      const last = (cache.get('ln_final.hook_normalized').arraySync() as number[][])[4]!;
      disposeResult(result);
      cache.dispose();
      const norm = Math.hypot(...last);
      last.forEach((x, j) => expect(body.data[0]!.embedding[j]!).toBeCloseTo(x / norm, 6));
    } finally {
      await server.close();
    }
  });
});

describe('turns, cancelling and draining', () => {
  it('429 when the queue is full; a client that leaves frees its turn and its cache', async () => {
    const tensors = tf.memory().numTensors;
    const long = chat({ max_tokens: 100_000, stream: true });
    const a = new AbortController();
    const b = new AbortController();
    const first = await post('/v1/chat/completions', long, auth, a.signal); // running (headers sent once it starts)
    expect(first.status).toBe(200);
    const reader = first.body!.getReader();
    expect(new TextDecoder().decode((await reader.read()).value)).toMatch(/^data: \{"id":"chatcmpl-/);
    const second = post('/v1/chat/completions', long, auth, b.signal).catch(() => null); // waiting: the queue holds 1
    await until(() => t.server.inFlight === 2);
    const third = await post('/v1/chat/completions', chat());
    expect(third.status).toBe(429);
    expect((await error(third)).message).toBe('the server is busy: 1 running and 1 waiting (the queue holds 1); retry later');

    b.abort(); // the waiting one leaves …
    await second;
    await until(() => t.server.inFlight === 1);
    a.abort(); // … then the running one, mid-stream
    await until(() => t.server.inFlight === 0);
    expect(tf.memory().numTensors).toBe(tensors);
    const after = await post('/v1/chat/completions', chat()); // the turn is free again
    expect(after.status).toBe(200);
  });

  it('close() lets the running request finish, then refuses connections', async () => {
    const server = new ChatServer({ model: t.model, tok: t.tok, id: 'mistral-demo', maxTokens: 64 }, { port: 0 });
    const url = await server.listen();
    const running = fetch(`${url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify(chat({ max_tokens: 64 })) });
    await until(() => server.inFlight === 1);
    await server.close();
    const r = await running;
    expect(r.status).toBe(200);
    expect((await r.json() as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
    await expect(fetch(`${url}/v1/models`)).rejects.toThrow();
  });
});

describe('mistral-ref serve', () => {
  it('prints the URL and the model, answers, and on Ctrl-C finishes what runs and exits 130', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src/cli/bin.ts'), 'serve', '--model', modelDir('mistral-demo'), '--port', '0', '--backend', 'cpu'],
      { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { err += d; });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    await until(() => out.includes('\n'), 60_000);
    const m = /^mistral-ref serve: (http:\/\/127\.0\.0\.1:\d+)\/v1 serving mistral-demo \(mistral-v1, mistral, vocabulary 99\); Ctrl-C to stop\n$/.exec(out);
    expect(m, out).not.toBeNull();
    const models = await (await fetch(`${m![1]}/v1/models`)).json() as { data: { id: string }[] };
    expect(models.data.map((d) => d.id)).toEqual(['mistral-demo']);
    // Ctrl-C while a stream runs: it is finished, then the process exits.
    const r = await fetch(`${m![1]}/v1/chat/completions`, { method: 'POST', body: JSON.stringify(chat({ max_tokens: 300, stream: true })) });
    const reader = r.body!.getReader();
    let stream = new TextDecoder().decode((await reader.read()).value);
    child.kill('SIGINT');
    for (let c = await reader.read(); !c.done; c = await reader.read()) stream += new TextDecoder().decode(c.value);
    expect(stream.endsWith('data: [DONE]\n\n')).toBe(true);
    expect(stream).toContain('"usage":{"prompt_tokens":22,"completion_tokens":300,"total_tokens":322}');
    expect(await exited).toBe(130);
    expect(err).toBe('mistral-ref serve: stopping; waiting for 1 request(s)\n');
  });

  it('refuses bad options in one line, exit 2', async () => {
    const { runCli } = await import('./helpers/cli.js');
    const r = await runCli(['serve', '--model', modelDir('mistral-demo'), '--pooling', 'max']);
    expect(r).toEqual({ code: 2, stdout: '', stderr: 'mistral-ref serve: --pooling must be one of mean, last, got "max"\n' });
    const { port } = new URL(t.url);
    const taken = await runCli(['serve', '--model', modelDir('mistral-demo'), '--port', port]);
    expect(taken).toEqual({ code: 2, stdout: '', stderr: `mistral-ref serve: cannot listen on 127.0.0.1:${port}: listen EADDRINUSE: address already in use 127.0.0.1:${port}\n` });
  });
});
