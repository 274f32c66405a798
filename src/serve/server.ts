/**
 * The HTTP server: Mistral's and OpenAI's chat-completions, models and embeddings
 * endpoints over one model, on node:http.
 *
 *   GET  /v1/models                 the one model
 *   GET  /v1/models/{id}
 *   POST /v1/chat/completions       JSON, or server-sent events with "stream": true
 *   POST /v1/embeddings
 *
 * Requests take turns on the model: `parallel` run at once (their tokens interleave, each
 * with its own KV cache), up to `queue` more wait, and any beyond get 429. A client that
 * goes away cancels its request (waiting or running) at the next token. Bad requests get
 * 400 naming the field, a missing or wrong Bearer key 401, a body over `maxBodyBytes` 413;
 * nothing a request does can take the process down (an unexpected error is a 500 for that
 * request alone). `close()` stops accepting and resolves when every request has finished.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { InputError } from '../model/errors.js';
import { complete, type Served } from './chat.js';
import { embed, type Pooling } from './embeddings.js';
import { ApiError } from './errors.js';
import { parseChatBody, parseEmbeddingsBody } from './request.js';

export type { Served } from './chat.js';
export { POOLINGS, type Pooling } from './embeddings.js';

export interface ServerOptions {
  readonly host?: string;
  /** 0 = any free port. */
  readonly port?: number;
  /** When set, every request needs `Authorization: Bearer <key>`. */
  readonly apiKey?: string;
  /** Largest request body in bytes (default 1 MiB). */
  readonly maxBodyBytes?: number;
  /** Requests that run at once (default 1). */
  readonly parallel?: number;
  /** Requests that may wait for a turn (default 32); more get 429. */
  readonly queue?: number;
  readonly pooling?: Pooling;
}

export const DEFAULT_MAX_BODY = 1 << 20;
export const DEFAULT_QUEUE = 32;

/** Turns on the model: `parallel` at once, `capacity` waiting, the rest refused. */
class Turns {
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(private readonly parallel: number, private readonly capacity: number) {}

  get busy(): number {
    return this.running + this.waiting.length;
  }

  /** Resolves with a release function when it is this request's turn; 429 when the queue is full. */
  async take(gone: Promise<void>): Promise<(() => void) | null> {
    if (this.running < this.parallel) {
      this.running++;
      return this.releaser();
    }
    if (this.waiting.length >= this.capacity) throw new ApiError(429, `the server is busy: ${this.running} running and ${this.waiting.length} waiting (the queue holds ${this.capacity}); retry later`);
    let wake!: () => void;
    const turn = new Promise<void>((resolve) => { wake = resolve; });
    this.waiting.push(wake);
    const left = await Promise.race([turn.then(() => false), gone.then(() => true)]);
    if (left) {
      const i = this.waiting.indexOf(wake);
      if (i >= 0) this.waiting.splice(i, 1);
      else this.releaser()(); // woken at the same moment it left: pass the turn on
      return null;
    }
    return this.releaser();
  }

  private releaser(): () => void {
    let done = false;
    return () => {
      if (done) return;
      done = true;
      const next = this.waiting.shift();
      if (next !== undefined) next(); // the turn passes on: running stays the same
      else this.running--;
    };
  }
}

export class ChatServer {
  readonly created = Math.floor(Date.now() / 1000);
  private readonly server: http.Server;
  private readonly turns: Turns;
  private active = 0;
  private draining = false;
  private idle: (() => void) | null = null;

  constructor(readonly served: Served, private readonly opts: ServerOptions = {}) {
    this.turns = new Turns(opts.parallel ?? 1, opts.queue ?? DEFAULT_QUEUE);
    this.server = http.createServer((req, res) => { void this.handle(req, res); });
    this.server.on('clientError', (_e, socket) => {
      if (socket.writable) socket.end('HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n');
      else socket.destroy();
    });
  }

  /** Starts listening; resolves with the base URL (`http://127.0.0.1:8080`). */
  listen(): Promise<string> {
    return new Promise((resolve, reject) => {
      this.server.once('error', reject);
      this.server.listen(this.opts.port ?? 8080, this.opts.host ?? '127.0.0.1', () => {
        this.server.off('error', reject);
        resolve(this.url);
      });
    });
  }

  get url(): string {
    const a = this.server.address() as AddressInfo;
    const host = a.family === 'IPv6' ? `[${a.address}]` : a.address;
    return `http://${host}:${a.port}`;
  }

  /** Requests being answered or waiting. */
  get inFlight(): number {
    return this.active;
  }

  /** Stops taking requests (new ones get 503), waits for the ones in flight, then closes. */
  async close(): Promise<void> {
    this.draining = true;
    const closed = new Promise<void>((resolve) => this.server.close(() => resolve()));
    this.server.closeIdleConnections();
    if (this.active > 0) await new Promise<void>((resolve) => { this.idle = resolve; });
    this.server.closeAllConnections();
    await closed;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    this.active++;
    let gone!: () => void;
    const left = new Promise<void>((resolve) => { gone = resolve; });
    res.on('close', () => { if (!res.writableFinished) gone(); });
    req.on('error', () => gone());
    res.on('error', () => gone());
    try {
      await this.route(req, res, left);
    } catch (e) {
      const err = e instanceof ApiError ? e : new ApiError(500, `internal error: ${(e as Error)?.message ?? String(e)}`);
      if (!res.headersSent) sendJson(res, err.status, err.body());
      else if (!res.writableEnded) res.end(`data: ${JSON.stringify(err.body())}\n\n`);
    } finally {
      if (!res.writableEnded) res.end();
      if (--this.active === 0 && this.idle !== null) this.idle();
    }
  }

  private async route(req: http.IncomingMessage, res: http.ServerResponse, left: Promise<void>): Promise<void> {
    if (this.draining) throw new ApiError(503, 'the server is shutting down');
    this.authorize(req);
    const path = new URL(req.url ?? '/', 'http://localhost').pathname.replace(/\/+$/, '');
    const method = req.method ?? 'GET';
    const expect = (m: string) => {
      if (method !== m) throw new ApiError(405, `${path} takes ${m}, got ${method}`);
    };
    if (path === '/v1/models') {
      expect('GET');
      return sendJson(res, 200, { object: 'list', data: [this.modelCard()] });
    }
    if (path.startsWith('/v1/models/')) {
      expect('GET');
      this.checkModel(decodeURIComponent(path.slice('/v1/models/'.length)));
      return sendJson(res, 200, this.modelCard());
    }
    if (path === '/v1/chat/completions') {
      expect('POST');
      return this.chat(await readJson(req, this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY), res, left);
    }
    if (path === '/v1/embeddings') {
      expect('POST');
      return this.embeddings(await readJson(req, this.opts.maxBodyBytes ?? DEFAULT_MAX_BODY), res, left);
    }
    throw new ApiError(404, `no such endpoint: ${method} ${path} (endpoints: GET /v1/models, POST /v1/chat/completions, POST /v1/embeddings)`, null, 'invalid_request_error', 'not_found');
  }

  private authorize(req: http.IncomingMessage): void {
    const key = this.opts.apiKey;
    if (key === undefined) return;
    const m = /^Bearer\s+(.+)$/i.exec(req.headers.authorization ?? '');
    const given = Buffer.from(m?.[1]?.trim() ?? '');
    const want = Buffer.from(key);
    if (given.length !== want.length || !timingSafeEqual(given, want)) {
      throw new ApiError(401, m === null ? 'missing API key: send "Authorization: Bearer <key>"' : 'invalid API key', null, 'authentication_error', 'invalid_api_key');
    }
  }

  private checkModel(model: string): void {
    if (model !== this.served.id) {
      throw new ApiError(404, `model ${JSON.stringify(model)} does not exist; this server serves ${JSON.stringify(this.served.id)}`, 'model', 'invalid_request_error', 'model_not_found');
    }
  }

  private modelCard(): Record<string, unknown> {
    const c = this.served.model.config;
    return {
      id: this.served.id,
      object: 'model',
      type: 'base',
      created: this.created,
      owned_by: 'mistral-ref',
      capabilities: { completion_chat: true, function_calling: true, completion_fim: false, fine_tuning: false, vision: false, classification: false },
      max_context_length: c.slidingWindow === null ? c.maxPositionEmbeddings ?? 0 : c.maxPositionEmbeddings ?? c.slidingWindow,
      description: `mistral-ref serving ${this.served.id} (${c.arch}, ${c.numLayers} layers, hidden ${c.hiddenSize}, vocabulary ${c.vocabSize})`,
    };
  }

  private async chat(raw: unknown, res: http.ServerResponse, left: Promise<void>): Promise<void> {
    const body = parseChatBody(raw);
    this.checkModel(body.model);
    const release = await this.turns.take(left);
    if (release === null) return; // the client left while waiting
    let cancelled = false;
    void left.then(() => { cancelled = true; });
    const id = `chatcmpl-${randomBytes(12).toString('hex')}`;
    const created = Math.floor(Date.now() / 1000);
    const head = { id, created, model: this.served.id };
    try {
      if (!body.stream) {
        const c = await complete(this.served, body, { text: () => {}, cancelled: () => cancelled });
        if (cancelled) return;
        sendJson(res, 200, {
          ...head,
          object: 'chat.completion',
          choices: [{
            index: 0,
            message: { role: 'assistant', content: c.content, ...(c.toolCalls !== null ? { tool_calls: c.toolCalls } : {}) },
            finish_reason: c.finishReason,
            logprobs: null,
          }],
          usage: usage(c.promptTokens, c.completionTokens),
        });
        return;
      }
      const chunk = (delta: Record<string, unknown>, finish: string | null, extra: Record<string, unknown> = {}) =>
        `data: ${JSON.stringify({ ...head, object: 'chat.completion.chunk', choices: [{ index: 0, delta, finish_reason: finish, logprobs: null }], ...extra })}\n\n`;
      let started = false;
      const start = () => {
        if (started) return;
        started = true;
        res.writeHead(200, { 'content-type': 'text/event-stream; charset=utf-8', 'cache-control': 'no-cache', connection: 'keep-alive' });
        res.write(chunk({ role: 'assistant', content: '' }, null));
      };
      const c = await complete(this.served, body, {
        text: (delta) => { start(); res.write(chunk({ content: delta }, null)); },
        cancelled: () => cancelled,
        started: start,
      });
      if (cancelled) return;
      start();
      if (c.toolCalls !== null) {
        res.write(chunk({ tool_calls: c.toolCalls.map((call, index) => ({ index, ...call })) }, null));
      }
      res.write(chunk({}, c.finishReason, { usage: usage(c.promptTokens, c.completionTokens) }));
      res.end('data: [DONE]\n\n');
    } finally {
      release();
    }
  }

  private async embeddings(raw: unknown, res: http.ServerResponse, left: Promise<void>): Promise<void> {
    const body = parseEmbeddingsBody(raw);
    this.checkModel(body.model);
    const release = await this.turns.take(left);
    if (release === null) return;
    try {
      let tokens = 0;
      const data: Record<string, unknown>[] = [];
      for (const [index, text] of body.input.entries()) {
        let e: ReturnType<typeof embed>;
        try {
          e = embed(this.served.model, this.served.tok, text, this.opts.pooling ?? 'mean');
        } catch (err) {
          if (err instanceof InputError) throw new ApiError(400, `input[${index}]: ${err.message}`, `input[${index}]`);
          throw err;
        }
        tokens += e.tokens;
        const embedding = body.encodingFormat === 'base64' ? Buffer.from(e.vector.buffer, e.vector.byteOffset, e.vector.byteLength).toString('base64') : Array.from(e.vector);
        data.push({ object: 'embedding', embedding, index });
        await new Promise<void>((resolve) => setImmediate(resolve)); // let other requests and disconnects through
      }
      sendJson(res, 200, {
        id: `embd-${randomBytes(12).toString('hex')}`,
        object: 'list',
        data,
        model: this.served.id,
        usage: { prompt_tokens: tokens, completion_tokens: 0, total_tokens: tokens },
      });
    } finally {
      release();
    }
  }
}

function usage(prompt: number, completion: number): Record<string, number> {
  return { prompt_tokens: prompt, completion_tokens: completion, total_tokens: prompt + completion };
}

function sendJson(res: http.ServerResponse, status: number, body: unknown): void {
  const text = JSON.stringify(body);
  res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/**
 * The request body as JSON. Over `limit` bytes: 413 (the rest of the body is read and
 * dropped, so the client sees the answer rather than a reset connection).
 */
async function readJson(req: http.IncomingMessage, limit: number): Promise<unknown> {
  const declared = Number(req.headers['content-length'] ?? NaN);
  const chunks: Buffer[] = [];
  let size = 0;
  let over = declared > limit;
  for await (const c of req as AsyncIterable<Buffer>) {
    size += c.length;
    if (size > limit) over = true;
    if (!over) chunks.push(c);
  }
  if (over) throw new ApiError(413, `request body of ${Number.isFinite(declared) ? declared : size} bytes is over the limit of ${limit} bytes`, null, 'invalid_request_error', 'request_too_large');
  const text = Buffer.concat(chunks).toString('utf8');
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new ApiError(400, `the request body is not valid JSON: ${(e as Error).message}`, 'body');
  }
}
