/**
 * Prefill and decode speed of `generate` on the bundled demo models, cpu vs wasm, in one
 * process so the ratio compares like with like.
 *
 *   node --import tsx bench/generate.ts [--models models/mistral-demo,models/mixtral-demo]
 *                                        [--prompt 96] [--new 64] [--reps 3]
 *
 * prefill: a prompt of --prompt tokens into a fresh cache (default chunks: W), timed to the
 *          first generated token (prefill + one sampling).
 * decode:  --new greedy tokens after an 8-token prompt, timed from the first token to the
 *          last, so prefill is excluded: (new − 1) single-token forwards.
 * Each figure is the median of --reps runs after one warm-up run per backend and model.
 */
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';
import { generateTokens } from '../src/generate/index.js';
import { useBackend, type BackendName } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';

const { values } = parseArgs({
  options: {
    models: { type: 'string', default: 'models/mistral-demo,models/mixtral-demo' },
    prompt: { type: 'string', default: '96' },
    new: { type: 'string', default: '64' },
    reps: { type: 'string', default: '3' },
  },
});
const models = values.models.split(',');
const promptLength = Number(values.prompt);
const newTokens = Number(values.new);
const reps = Number(values.reps);
const BACKENDS: BackendName[] = ['cpu', 'wasm'];

/** Deterministic ids inside the vocabulary, BOS first. */
const promptOf = (n: number, vocab: number) => [1, ...Array.from({ length: n - 1 }, (_, i) => 3 + ((i * 7919) % (vocab - 3)))];

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Seconds to the first token, and from the first to the last. */
function timeRun(model: Transformer, prompt: number[], n: number): { prefill: number; decode: number } {
  const t0 = performance.now();
  let first = t0;
  for (const t of generateTokens(model, prompt, { maxNewTokens: n, stopAtEos: false })) {
    if (t.index === 0) first = performance.now();
  }
  const end = performance.now();
  return { prefill: (first - t0) / 1000, decode: (end - first) / 1000 };
}

interface Row { model: string; backend: string; prefill: number; decode: number }
const rows: Row[] = [];
for (const dir of models) {
  for (const backend of BACKENDS) {
    await useBackend(backend);
    const model = Transformer.load(dir);
    try {
      const vocab = model.config.vocabSize;
      const long = promptOf(promptLength, vocab);
      const short = promptOf(8, vocab);
      timeRun(model, long, 2); // warm-up: kernels, weight layouts
      const prefill = median(Array.from({ length: reps }, () => promptLength / timeRun(model, long, 1).prefill));
      const decode = median(Array.from({ length: reps }, () => (newTokens - 1) / timeRun(model, short, newTokens).decode));
      rows.push({ model: dir.split('/').pop()!, backend, prefill, decode });
    } finally {
      model.dispose();
    }
  }
}

const header = ['model', 'backend', 'prefill tokens/s', 'decode tokens/s'];
const body = rows.map((r) => [r.model, r.backend, r.prefill.toFixed(0), r.decode.toFixed(1)]);
for (const dir of models) {
  const name = dir.split('/').pop()!;
  const cpu = rows.find((r) => r.model === name && r.backend === 'cpu')!;
  const wasm = rows.find((r) => r.model === name && r.backend === 'wasm')!;
  body.push([name, 'wasm / cpu', `${(wasm.prefill / cpu.prefill).toFixed(2)}×`, `${(wasm.decode / cpu.decode).toFixed(2)}×`]);
}
const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => r[i]!.length)));
const line = (cells: string[]) => cells.map((c, i) => (i < 2 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ');
console.log(`prompt ${promptLength} tokens (prefill), ${newTokens} new tokens after an 8-token prompt (decode), median of ${reps}\n`);
console.log([line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n'));
