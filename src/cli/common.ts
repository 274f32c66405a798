/** Options and steps several commands share. */
import * as os from 'node:os';
import { resolveModelDir } from '../io/bundled.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { useBackend, type BackendName } from '../kernels/backend.js';
import { Transformer } from '../model/transformer.js';
import { KERNELS, type KernelsName } from '../kernels/linear.js';
import { defaultThreads, MAX_THREADS, setThreads } from '../kernels/simd/pool.js';
import { chooseResidency, residencyProblem, type CheckpointSize, type Residency } from '../model/residency.js';
import { randomSeed } from '../generate/index.js';
import { findTokenizerFile, type LoadedTokenizer } from '../tokenizer/index.js';
import { backend, number, oneOf, required, type Values } from './args.js';
import { UsageError } from './errors.js';
import type { CliIO } from './io.js';

/** parseArgs option specs shared by the commands that load a model. */
export const MODEL_OPTIONS = {
  model: { type: 'string' },
  backend: { type: 'string' },
  weights: { type: 'string' },
  kernels: { type: 'string' },
  threads: { type: 'string' },
} as const;

export const MODEL_USAGE = `  --model DIR            checkpoint folder: HF (config.json + model.safetensors, or sharded
                         with model.safetensors.index.json) or native (params.json + consolidated.safetensors),
                         or the name of a bundled model (mistral-demo, mixtral-demo)
  --backend NAME         cpu (default, the readable reference), wasm (fast), tensorflow
                         (needs the optional @tensorflow/tfjs-node-gpu or @tensorflow/tfjs-node),
                         webgpu (Dawn: a GPU, or Mesa's software adapter; see mistral-ref backends)
  --weights MODE         auto (default: resident when the stored weights fit in free memory,
                         else stream), resident (every weight kept at its stored width, bf16 at
                         2 bytes, multiplied by the simd kernels; fastest), eager (every weight
                         a float32 tfjs tensor) or stream (each layer read from disk when the
                         forward reaches it, then freed; Mixtral keeps what is not an expert
                         and the recently used experts while memory allows)
  --kernels NAME         simd (default but with --weights eager: the project's wasm SIMD
                         kernels over stored-width weights) or tfjs (tfjs ops over float32
                         tensors, the reference path; the default with --weights eager, and on webgpu)
  --threads N            threads for the simd kernels (default: every core, here ${defaultThreads()})`;

/**
 * Selects the backend, then loads the model named by --model with the residency --weights
 * asks for. `auto` weighs the checkpoint's float32 size (from its headers) against free
 * memory, and says on stderr (when it is a terminal) when it chose to stream.
 */
export async function loadModelFromArgs(values: Values<typeof MODEL_OPTIONS>, io?: CliIO): Promise<Transformer> {
  const name = backend(values.backend);
  await useBackend(name);
  const dir = resolveModelDir(required(values.model, '--model'));
  const mode = oneOf<Residency | 'auto'>(values.weights, '--weights', ['auto', 'resident', 'eager', 'stream'], 'auto');
  // On webgpu the products belong on the device: tfjs kernels over float32 tensors by default.
  const kernels = oneOf<KernelsName>(values.kernels, '--kernels', KERNELS, mode === 'eager' || name === 'webgpu' ? 'tfjs' : 'simd');
  if (kernels === 'tfjs' && mode === 'resident') {
    throw new UsageError('--weights resident runs on the simd kernels; with --kernels tfjs use --weights eager or stream');
  }
  if (kernels === 'simd' && mode === 'eager') {
    throw new UsageError('--weights eager holds float32 tfjs tensors, multiplied by --kernels tfjs; the simd kernels use --weights resident or stream');
  }
  setThreads(number(values.threads, '--threads', defaultThreads(), { min: 1, max: MAX_THREADS, integer: true }));
  const size = checkpointSize(dir);
  const free = os.freemem();
  let weights: Residency;
  if (mode === 'auto') {
    const choice = chooseResidency(size, free, name, kernels);
    weights = choice.weights;
    const note = residencyNote(choice);
    if (io?.interactive && note !== null) io.stderr(note);
  } else {
    weights = mode;
  }
  const problem = residencyProblem(weights, size, free, name);
  if (problem !== null) throw new UsageError(problem);
  // A big checkpoint takes a while to read: show how far it got, on a terminal.
  let shown = 0;
  const onProgress = io?.interactive && size.storedBytes > 2 ** 30
    ? (loaded: number) => {
      if (loaded - shown < 2 ** 28 && loaded < size.storedBytes) return;
      shown = loaded;
      io.stderr(`\rloading weights: ${(loaded / 1e9).toFixed(1)} / ${(size.storedBytes / 1e9).toFixed(1)} GB` + (loaded >= size.storedBytes ? '\n' : ''));
    }
    : undefined;
  return Transformer.load(dir, { weights, kernels, ...(onProgress ? { onProgress } : {}) });
}

/** The line `auto` prints: only for streaming, which explains why a big model runs slowly. */
export function residencyNote(choice: ReturnType<typeof chooseResidency>): string | null {
  return choice.weights === 'stream' ? `weights: stream (${choice.reason}; --weights resident|eager|stream overrides)\n` : null;
}

/** A checkpoint folder's stored and float32 weight bytes (reads its headers only). */
export function checkpointSize(dir: string): CheckpointSize {
  const ckpt = openCheckpoint(dir);
  let elements = 0;
  let storedBytes = 0;
  try {
    for (const n of ckpt.store.names()) {
      const info = ckpt.store.info(n);
      elements += info.shape.reduce((a, b) => a * b, 1);
      storedBytes += info.end - info.begin;
    }
  } finally {
    ckpt.store.close();
  }
  return { storedBytes, float32Bytes: 4 * elements };
}

/** The `--weights auto` decision for a checkpoint folder (reads its headers only). */
export function autoResidency(dir: string, backendName: BackendName, freeBytes = os.freemem(), kernels: KernelsName = 'simd'):
  ReturnType<typeof chooseResidency> {
  return chooseResidency(checkpointSize(dir), freeBytes, backendName, kernels);
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

/**
 * A tokenizer and a model must agree on the vocabulary: checked before the first token,
 * not found when the model generates an id the tokenizer cannot decode mid-answer.
 */
export function checkVocabulary(tok: LoadedTokenizer, model: Transformer): void {
  const m = model.config.vocabSize;
  if (tok.vocabSize !== m) {
    throw new UsageError(`the tokenizer ${tok.source} has ${tok.vocabSize} ids but the model's vocab_size is ${m} ` +
      `(${model.checkpoint.configFile}); they must match`);
  }
}

/**
 * Encodes a prompt; a character the vocabulary lacks (a tokenizer without byte fallback
 * maps it to <unk>) is an error naming it, not a silent <unk> the model then answers.
 */
export function encodePrompt(tok: LoadedTokenizer, text: string, flag: string, bos: boolean): number[] {
  const ids = tok.encode(text, { bos });
  const unk = tok.specialId('<unk>') ?? tok.pieceToId('<unk>');
  if (unk === undefined || !ids.includes(unk) || text.includes('<unk>')) return ids;
  const chars = [...text];
  const at = chars.findIndex((ch) => tok.encode(ch).includes(unk));
  throw new UsageError(`${flag}: character ${JSON.stringify(chars[at] ?? '?')} at index ${at} is outside the vocabulary of ` +
    `${tok.source} (it would become <unk>, id ${unk})`);
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
export function samplingFromArgs(values: Values<typeof SAMPLING_OPTIONS>): { temperature: number; topK?: number; topP?: number; seed: number } {
  const str = (k: keyof typeof SAMPLING_OPTIONS) => values[k];
  const temperature = number(str('temperature'), '--temperature', 0, { min: 0 });
  const topK = str('top-k') === undefined ? undefined : number(str('top-k'), '--top-k', 0, { min: 1, integer: true });
  const topP = str('top-p') === undefined ? undefined : number(str('top-p'), '--top-p', 1, { min: 0, max: 1 });
  if (topP === 0) throw new UsageError('--top-p expects a number > 0 and ≤ 1, got "0"');
  const seed = number(str('seed'), '--seed', temperature > 0 ? randomSeed() : 0, { min: 0, max: 2 ** 32 - 1, integer: true });
  return { temperature, ...(topK === undefined ? {} : { topK }), ...(topP === undefined ? {} : { topP }), seed };
}
