/** Options and steps several commands share. */
import * as os from 'node:os';
import { openCheckpoint } from '../io/checkpoint.js';
import { useBackend, type BackendName } from '../kernels/backend.js';
import { Transformer } from '../model/transformer.js';
import { chooseResidency, type Residency } from '../model/weights.js';
import { randomSeed } from '../generate/index.js';
import { findTokenizerFile } from '../tokenizer/index.js';
import { backend, number, oneOf, required, type Parsed } from './args.js';
import { UsageError } from './errors.js';
import type { CliIO } from './io.js';

/** parseArgs option specs shared by the commands that load a model. */
export const MODEL_OPTIONS = {
  model: { type: 'string' },
  backend: { type: 'string' },
  weights: { type: 'string' },
} as const;

export const MODEL_USAGE = `  --model DIR            checkpoint folder: HF (config.json + model.safetensors, or sharded
                         with model.safetensors.index.json) or native (params.json + consolidated.safetensors)
  --backend NAME         cpu (default, the readable reference), wasm (fast), tensorflow
                         (needs the optional @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node)
  --weights MODE         auto (default: eager when the float32 weights fit in half the free
                         memory, else stream), eager (all weights resident as float32; fastest)
                         or stream (each layer read from disk when the forward reaches it, then freed)`;

/**
 * Selects the backend, then loads the model named by --model with the residency --weights
 * asks for. `auto` weighs the checkpoint's float32 size (from its headers) against free
 * memory, and says on stderr (when it is a terminal) when it chose to stream.
 */
export async function loadModelFromArgs(values: Parsed['values'], io?: CliIO): Promise<Transformer> {
  const name = backend(values.backend as string | undefined);
  await useBackend(name);
  const dir = required(values.model as string | undefined, '--model');
  const mode = oneOf<Residency | 'auto'>(values.weights as string | undefined, '--weights', ['auto', 'eager', 'stream'], 'auto');
  let weights: Residency;
  if (mode === 'auto') {
    const choice = autoResidency(dir, name);
    weights = choice.weights;
    const note = residencyNote(choice);
    if (io?.interactive && note !== null) io.stderr(note);
  } else {
    weights = mode;
  }
  return Transformer.load(dir, { weights });
}

/** The line `auto` prints: only for streaming, which explains why a big model runs slowly. */
export function residencyNote(choice: ReturnType<typeof chooseResidency>): string | null {
  return choice.weights === 'stream' ? `weights: stream (${choice.reason}; --weights eager|stream overrides)\n` : null;
}

/** The `--weights auto` decision for a checkpoint folder (reads its headers only). */
export function autoResidency(dir: string, backendName: BackendName, freeBytes = os.freemem()): ReturnType<typeof chooseResidency> {
  const ckpt = openCheckpoint(dir);
  let elements = 0;
  try {
    for (const n of ckpt.store.names()) elements += ckpt.store.info(n).shape.reduce((a, b) => a * b, 1);
  } finally {
    ckpt.store.close();
  }
  return chooseResidency(4 * elements, freeBytes, backendName);
}

/** Formats a max |Δ| for tables: 3 significant digits, or "inf". */
export function fmt(x: number): string {
  return Number.isFinite(x) ? x.toExponential(2) : String(x);
}

/** Left-aligned text table. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd();
  return [line(header), line(widths.map((w) => '-'.repeat(w))), ...rows.map(line)].join('\n') + '\n';
}

/** Whether `dir` holds a tokenizer file that loadTokenizer can read (a missing folder has none). */
export function hasTokenizer(dir: string): boolean {
  try {
    findTokenizerFile(dir);
    return true;
  } catch {
    return false;
  }
}

/** The tokenizer files a model folder may hold, for messages. */
export const TOKENIZER_FILES = 'tokenizer.model.v*, tokenizer.model or tokenizer.json';

/** parseArgs option specs of the sampling flags (generate, chat). */
export const SAMPLING_OPTIONS = {
  temperature: { type: 'string' },
  'top-k': { type: 'string' },
  'top-p': { type: 'string' },
  seed: { type: 'string' },
} as const;

/** --temperature, --top-k, --top-p and --seed, checked; a random seed when sampling without one. */
export function samplingFromArgs(values: Parsed['values']): { temperature: number; topK?: number; topP?: number; seed: number } {
  const str = (k: string) => values[k] as string | undefined;
  const temperature = number(str('temperature'), '--temperature', 0, { min: 0 });
  const topK = str('top-k') === undefined ? undefined : number(str('top-k'), '--top-k', 0, { min: 1, integer: true });
  const topP = str('top-p') === undefined ? undefined : number(str('top-p'), '--top-p', 1, { min: 0, max: 1 });
  if (topP === 0) throw new UsageError('--top-p expects a number > 0 and ≤ 1, got "0"');
  const seed = number(str('seed'), '--seed', temperature > 0 ? randomSeed() : 0, { min: 0, max: 2 ** 32 - 1, integer: true });
  return { temperature, ...(topK === undefined ? {} : { topK }), ...(topP === undefined ? {} : { topP }), seed };
}
