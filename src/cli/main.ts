/**
 * `mistral-ref <command> [options]`. Exit codes: 0 success, 1 a check failed (parity
 * beyond tolerance), 2 bad input (one line on stderr), 3 an internal error (a bug).
 */
import { fromWasmRuntimeError } from '../kernels/backend.js';
import { isUserError } from './errors.js';
import { processIO, type CliIO, type Command } from './io.js';

/** Command name → one-line summary. */
export const COMMANDS: Readonly<Record<string, string>> = {
  demo: 'run the bundled demo model: a prompt, layer by layer, with its parity',
  parity: 'compare a checkpoint with a reference file (logits, hidden states, generation)',
  generate: 'generate text or ids from a prompt, streaming',
  tokenize: 'encode text with tokenizer.json or a SentencePiece tokenizer.model',
  chat: 'interactive instruct chat',
  trace: 'per-layer table and pictures (attention, routing, logit lens) for a prompt',
  inspect: 'describe a checkpoint: layout, config, tensors, memory',
  synth: 'write a synthetic full-size checkpoint (Mistral 7B, Mixtral 8x7B shapes)',
  backends: 'which backends work here (for webgpu: the adapter and its limits)',
  serve: 'a Mistral/OpenAI-compatible HTTP server: chat completions, tools, JSON, embeddings',
  attribute: 'direct logit attribution of logit(A) − logit(B) by embedding, layer and head',
  patch: 'activation patching sweep: which layer, position or head restores the clean answer',
};

/** Each command lives in ./commands/<name>.ts and is loaded only when run. */
const LOADERS: Readonly<Record<string, () => Promise<Command>>> = {
  demo: () => import('./commands/demo.js'),
  parity: () => import('./commands/parity.js'),
  generate: () => import('./commands/generate.js'),
  tokenize: () => import('./commands/tokenize.js'),
  chat: () => import('./commands/chat.js'),
  trace: () => import('./commands/trace.js'),
  inspect: () => import('./commands/inspect.js'),
  synth: () => import('./commands/synth.js'),
  backends: () => import('./commands/backends.js'),
  serve: () => import('./commands/serve.js'),
  attribute: () => import('./commands/attribute.js'),
  patch: () => import('./commands/patch.js'),
};

function help(): string {
  const width = Math.max(...Object.keys(COMMANDS).map((c) => c.length));
  return [
    'usage: mistral-ref <command> [options]   (mistral-ref <command> --help for its options)',
    '',
    ...Object.entries(COMMANDS).map(([c, s]) => `  ${c.padEnd(width)}  ${s}`),
    '',
    'exit codes: 0 ok, 1 check failed, 2 bad input, 3 internal error',
    '',
  ].join('\n');
}

/** Runs one command line; never throws. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined) {
    io.stderr(help()); // no command is a usage error: the usage goes where errors go
    return 2;
  }
  if (name === '--help' || name === '-h' || name === 'help') {
    io.stdout(help());
    return 0;
  }
  if (name === '--version') {
    io.stdout('mistral-ref 0.1.0\n');
    return 0;
  }
  if (!Object.hasOwn(COMMANDS, name)) {
    io.stderr(`mistral-ref: unknown command ${JSON.stringify(name)} (commands: ${Object.keys(COMMANDS).join(', ')})\n`);
    return 2;
  }
  try {
    const command = await LOADERS[name]!();
    if (args.includes('--help') || args.includes('-h')) {
      io.stdout(command.usage.endsWith('\n') ? command.usage : command.usage + '\n');
      return 0;
    }
    return await command.run(args, io);
  } catch (caught) {
    // A wasm trap ("RuntimeError: memory access out of bounds") is the wasm heap running
    // out, not a bug: one line with advice, exit 2, like any bad-input error.
    const e = fromWasmRuntimeError(caught) ?? caught;
    if (isUserError(e)) {
      io.stderr(`mistral-ref ${name}: ${e.message.split('\n')[0]}\n`);
      return 2;
    }
    const err = e as Error;
    io.stderr(`mistral-ref ${name}: internal error: ${err?.message ?? String(e)}` +
      (process.env.MISTRAL_REF_DEBUG ? `\n${err?.stack ?? ''}` : ' (set MISTRAL_REF_DEBUG=1 for the stack trace)') + '\n');
    return 3;
  }
}
