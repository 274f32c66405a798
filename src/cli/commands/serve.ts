import * as path from 'node:path';
import { loadTokenizer } from '../../tokenizer/index.js';
import { ChatServer, DEFAULT_MAX_BODY, DEFAULT_QUEUE, POOLINGS, type Pooling } from '../../serve/server.js';
import { number, oneOf, parse } from '../args.js';
import { loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';

export const summary = 'a Mistral/OpenAI-compatible HTTP server: chat completions, tools, JSON, embeddings';

export const usage = `usage: mistral-ref serve --model DIR [options]

Serves the model over HTTP with Mistral's and OpenAI's API shapes (see docs/serve.md):
GET /v1/models, POST /v1/chat/completions (tools, tool_choice, response_format, stream)
and POST /v1/embeddings. Prints the URL and the model when it is ready; Ctrl-C stops
taking requests, lets the running ones finish, and exits 130.

${MODEL_USAGE}
  --tokenizer FILE|DIR   the tokenizer (default: the model folder's)
  --host HOST            address to bind (default 127.0.0.1: this machine only)
  --port N               port (default 8080; 0 = any free port)
  --api-key KEY          require "Authorization: Bearer KEY" (default: no key)
  --name ID              the model id clients use (default: the model folder's name)
  --max-tokens N         most tokens a completion may generate (default 512)
  --parallel N           requests generating at once (default 1)
  --queue N              requests that may wait (default ${DEFAULT_QUEUE}); more get 429
  --max-body BYTES       largest request body (default ${DEFAULT_MAX_BODY}); larger gets 413
  --pooling NAME         embeddings: mean (default) or last (see docs/serve.md)

exit: 130 after Ctrl-C, 2 bad input (options, model, tokenizer, the port taken)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    tokenizer: { type: 'string' },
    host: { type: 'string' },
    port: { type: 'string' },
    'api-key': { type: 'string' },
    name: { type: 'string' },
    'max-tokens': { type: 'string' },
    parallel: { type: 'string' },
    queue: { type: 'string' },
    'max-body': { type: 'string' },
    pooling: { type: 'string' },
  });
  if (values.model === undefined) throw new UsageError('--model is required');
  const port = number(values.port, '--port', 8080, { min: 0, max: 65535, integer: true });
  const maxTokens = number(values['max-tokens'], '--max-tokens', 512, { min: 1, integer: true });
  const parallel = number(values.parallel, '--parallel', 1, { min: 1, integer: true });
  const queue = number(values.queue, '--queue', DEFAULT_QUEUE, { min: 0, integer: true });
  const maxBodyBytes = number(values['max-body'], '--max-body', DEFAULT_MAX_BODY, { min: 1, integer: true });
  const pooling = oneOf<Pooling>(values.pooling, '--pooling', POOLINGS, 'mean');
  const apiKey = values['api-key'];
  if (apiKey === '') throw new UsageError('--api-key must not be empty');

  const model = await loadModelFromArgs(values, io);
  try {
    const tok = await loadTokenizer(values.tokenizer ?? model.checkpoint.dir);
    if (tok.vocabSize > model.config.vocabSize) throw new UsageError(`the tokenizer has ${tok.vocabSize} ids but the model only ${model.config.vocabSize}`);
    const id = values.name ?? path.basename(path.resolve(model.checkpoint.dir));
    const server = new ChatServer({ model, tok, id, maxTokens }, {
      host: values.host ?? '127.0.0.1', port, ...(apiKey !== undefined ? { apiKey } : {}), parallel, queue, maxBodyBytes, pooling,
    });
    let url: string;
    try {
      url = await server.listen();
    } catch (e) {
      throw new UsageError(`cannot listen on ${values.host ?? '127.0.0.1'}:${port}: ${(e as Error).message}`);
    }
    io.stdout(`mistral-ref serve: ${url}/v1 serving ${id} (${tok.chatFormat}, ${model.config.arch}, vocabulary ${model.config.vocabSize})` +
      `${apiKey !== undefined ? ', Bearer key required' : ''}; Ctrl-C to stop\n`);
    await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
    // A second Ctrl-C while draining stops at once.
    const again = () => process.exit(130);
    process.once('SIGINT', again);
    io.stderr(`mistral-ref serve: stopping; waiting for ${server.inFlight} request(s)\n`);
    await server.close();
    process.off('SIGINT', again);
    return 130;
  } finally {
    model.dispose();
  }
}
