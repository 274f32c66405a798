/** A server on loopback over a bundled demo model, for the serve tests. */
import { afterAll, beforeAll } from 'vitest';
import { useBackend } from '../../src/kernels/backend.js';
import { Transformer } from '../../src/model/transformer.js';
import { ChatServer, type ServerOptions } from '../../src/serve/server.js';
import { loadTokenizer, type LoadedTokenizer } from '../../src/tokenizer/index.js';
import { modelDir } from './fixtures.js';

export interface TestServer {
  server: ChatServer;
  url: string;
  model: Transformer;
  tok: LoadedTokenizer;
}

/** Starts a server (port 0) before the file's tests and closes it after; `maxTokens` caps completions. */
export function serveDemo(opts: ServerOptions & { maxTokens?: number; name?: string } = {}): TestServer {
  const t = {} as TestServer;
  beforeAll(async () => {
    await useBackend('cpu');
    t.model = Transformer.load(modelDir(opts.name ?? 'mistral-demo'));
    t.tok = await loadTokenizer(modelDir(opts.name ?? 'mistral-demo'));
    t.server = new ChatServer({ model: t.model, tok: t.tok, id: opts.name ?? 'mistral-demo', maxTokens: opts.maxTokens ?? 256 }, { port: 0, ...opts });
    t.url = await t.server.listen();
  });
  afterAll(async () => {
    await t.server?.close();
    t.model?.dispose();
  });
  return t;
}
