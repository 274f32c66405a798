/** Options and steps several commands share. */
import { useBackend } from '../kernels/backend.js';
import { Transformer } from '../model/transformer.js';
import type { Residency } from '../model/weights.js';
import { backend, oneOf, required, type Parsed } from './args.js';

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
  --weights MODE         eager (all weights resident as float32) or stream (layer by layer from disk)`;

/** Selects the backend, then loads the model named by --model. */
export async function loadModelFromArgs(values: Parsed['values']): Promise<Transformer> {
  await useBackend(backend(values.backend as string | undefined));
  const weights = oneOf<Residency>(values.weights as string | undefined, '--weights', ['eager', 'stream'], 'eager');
  return Transformer.load(required(values.model as string | undefined, '--model'), { weights });
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
