/**
 * Prefill and decode speed of `generate()`, from the demo model to 7B-shaped slices, next to
 * the ceiling this machine's memory bandwidth puts on decoding.
 *
 *   node --import tsx bench/speed.ts [--backend wasm|cpu] [--weights resident|eager|stream]
 *        [--threads 1,2] [--workloads demo,h512,7b,mixtral] [--decode N] [--reps N] [--full] [--json FILE] [--markdown]
 *
 * Workloads (synthetic checkpoints are written once into bench/out/, gitignored, and reused):
 *   demo    models/mistral-demo (739k parameters, F32, W = 16)
 *   h512    mistral-7b-v0.1 shrunk to hidden 512, 8 layers, 8 heads / 2 kv heads, intermediate
 *           1536 (57M parameters, BF16); run as stored (W = 4096) and loaded with W = 128
 *   7b      mistral-7b-v0.1 at full width with 2 and with 4 layers (BF16, 1.4 and 2.3 GB)
 *   mixtral mixtral-8x7b at full width with 2 layers (BF16, 6.3 GB), in stream mode, once on
 *           the simd kernels (experts at stored width in kernel memory) and once on the tfjs
 *           kernels (float32 tensors, cpu backend: a 7B-wide expert and the packed copy XNNPACK
 *           makes of it crowd tfjs-wasm's 4 GiB heap). The expert cache gets the share of the
 *           experts a whole Mixtral 8x7B would get in this machine's free memory (so the hit
 *           rate is the full model's, not that of 16 experts that all fit); reported: the hit
 *           rate, and decode against the bytes it reads from the files per token ÷ their read rate
 *   --full  the whole 32-layer mistral-7b-v0.1 (BF16, 14.5 GB): also load time against the
 *           disk read rate of its files, and peak RSS
 *
 * Timing is `generate --json`'s: prefill = prompt tokens ÷ time to the first token; decode =
 * tokens after the first ÷ time after the first token, generated after the 64-token prompt
 * (and, as `decode@512`, after the 512-token one). Every workload runs once per --threads
 * count (default: 1 and every core), so the ratios come from one run.
 * Each model is warmed up once on a short prompt first (first calls compile and tier up).
 * Each figure is the median of --reps runs (default 3 for the small models, 1 for 7B shapes).
 *
 * Ceilings, measured in the same run with the kernels' own probes (src/kernels/simd/probe.ts)
 * on as many threads as the row uses: decode reads every projection matrix once (q k v o,
 * gate up down, lm_head) at its stored width, so tokens/s ≤ read rate ÷ those bytes; prefill
 * does 2 float32 operations per weight per token, so tokens/s ≤ SIMD probe ÷ (2 · weights).
 * The probes run before the workloads and again after them, and each ceiling is the higher
 * of the two: a shared host can be slower for the seconds of one probe than for the minutes
 * of a workload (one run: 30.7 GFLOP/s on one thread before a 7-minute 7B workload, against
 * 52–55 in other runs), and a ceiling measured in a slow moment puts the fractions above 100 %.
 *
 * --full: the load time is set against a plain read of the same files just before, which
 * leaves them page-cached if they fit in RAM; the report says what fincore saw cached.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import { checkpointSize } from '../src/cli/common.js';
import { generate } from '../src/generate/index.js';
import { planSynth, synthesize, type SynthOptions, type SynthPlan } from '../src/cli/synthetic.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { useBackend, type BackendName } from '../src/kernels/backend.js';
import type { KernelsName } from '../src/kernels/linear.js';
import { kernelVariant } from '../src/kernels/simd/arena.js';
import { defaultThreads, setThreads } from '../src/kernels/simd/pool.js';
import { measureReadRate, measureSimdFlops } from '../src/kernels/simd/probe.js';
import { parseConfig, type ModelConfig } from '../src/model/config.js';
import { defaultExpertCacheBytes, residencyProblem, storedStreamPlan, type Residency } from '../src/model/residency.js';
import { Transformer } from '../src/model/transformer.js';

const USAGE = 'usage: node --import tsx bench/speed.ts [--workloads demo,h512,7b,mixtral] [--threads 1,2] [--decode N] [--reps N] ' +
  '[--weights resident|eager|stream] [--backend wasm|cpu] [--full] [--markdown] [--json FILE]';
const fail = (msg: string): never => {
  process.stderr.write(`speed: ${msg}\n${USAGE}\n`);
  process.exit(2);
};

const options = {
  backend: { type: 'string', default: 'wasm' },
  weights: { type: 'string', default: 'resident' },
  workloads: { type: 'string', default: 'demo,h512,7b,mixtral' },
  threads: { type: 'string' },
  decode: { type: 'string' },
  reps: { type: 'string' },
  full: { type: 'boolean', default: false },
  json: { type: 'string' },
  markdown: { type: 'boolean', default: false },
  help: { type: 'boolean', default: false },
} as const;
let parsed: ReturnType<typeof parseArgs<{ options: typeof options }>>;
try {
  parsed = parseArgs({ options });
} catch (e) {
  parsed = fail((e as Error).message);
}
const { values } = parsed;
if (values.help) {
  process.stdout.write(`${USAGE}\n`);
  process.exit(0);
}
const backend = values.backend as BackendName;
if (backend !== 'wasm' && backend !== 'cpu') fail(`--backend must be wasm or cpu, got ${backend}`);
const weightsArg = values.weights as Residency;
if (!['resident', 'eager', 'stream'].includes(weightsArg)) fail(`--weights must be resident, eager or stream, got ${weightsArg}`);
const chosen = values.workloads.split(',').filter((w) => w !== '');
for (const w of chosen) if (!['demo', 'h512', '7b', 'mixtral'].includes(w)) fail(`unknown workload ${w} (expected demo, h512, 7b, mixtral)`);
const decodeArg = values.decode === undefined ? null : Number(values.decode);
if (decodeArg !== null && !(Number.isInteger(decodeArg) && decodeArg >= 2)) fail(`--decode must be an integer ≥ 2, got ${values.decode}`);
const threadCounts = (values.threads ?? [...new Set([1, defaultThreads()])].join(',')).split(',').map(Number);
for (const n of threadCounts) if (!(Number.isInteger(n) && n >= 1 && n <= 64)) fail(`--threads takes a list of integers from 1 to 64, got ${values.threads}`);
const repsArg = values.reps === undefined ? null : Number(values.reps);
if (repsArg !== null && !(Number.isInteger(repsArg) && repsArg >= 1)) fail(`--reps must be an integer ≥ 1, got ${values.reps}`);

const OUT = fileURLToPath(new URL('./out', import.meta.url));
const REPO = fileURLToPath(new URL('..', import.meta.url));
const GB = 1e9;
const log = (s: string) => process.stderr.write(`[speed] ${s}\n`);
const nThreads = (n: number) => `${n} thread${n > 1 ? 's' : ''}`;

// ── workloads ────────────────────────────────────────────────────────────────────────────

interface Workload {
  readonly name: string;
  /** The checkpoint folder (synthesized first if needed; `fresh`: written by this run), or why to skip. */
  readonly prepare: () => { dir: string; fresh: boolean } | { skip: string };
  readonly overrides?: Partial<ModelConfig>;
  readonly decode: number;
  /** Timed runs; each figure is their median. */
  readonly reps: number;
  /** The full model: also measure load time against the disk read rate. */
  readonly full?: boolean;
  /** Residency, kernels and backend of this workload, when not the command line's (mixtral: stream). */
  readonly weights?: Residency;
  readonly kernels?: KernelsName;
  readonly backend?: BackendName;
  /** Stream mode: size the expert cache as for this many layers of the same model (see mixtral). */
  readonly expertCacheAsLayers?: number;
  /** Decode only, after a prompt of this many tokens (for workloads too slow to prefill 512). */
  readonly decodeOnlyAfter?: number;
}

const H512: SynthOptions = {
  preset: 'mistral-7b-v0.1', layers: 8, dtype: 'BF16',
  overrides: { hidden_size: 512, intermediate_size: 1536, num_attention_heads: 8, num_key_value_heads: 2 },
};
const sevenB = (layers?: number): SynthOptions => ({ preset: 'mistral-7b-v0.1', dtype: 'BF16', ...(layers ? { layers } : {}) });

// Small models run in milliseconds, so their figures are noisy: medians of 3. A 7B-shaped
// prefill of 512 tokens takes a minute: once.
const small = { decode: decodeArg ?? 32, reps: repsArg ?? 3 };
const large = { decode: decodeArg ?? 8, reps: repsArg ?? 1 };
const workloads: Workload[] = [];
if (chosen.includes('demo')) workloads.push({ name: 'demo', prepare: () => ({ dir: path.join(REPO, 'models/mistral-demo'), fresh: false }), ...small });
if (chosen.includes('h512')) {
  workloads.push({ name: 'h512', prepare: () => synthOnce('h512', H512), ...small });
  // The rolling cache returns only the slots in use, so W = 128 should change little.
  workloads.push({ name: 'h512', prepare: () => synthOnce('h512', H512), overrides: { slidingWindow: 128 }, ...small });
}
if (chosen.includes('7b')) {
  workloads.push({ name: '7b-2L', prepare: () => synthOnce('7b-2L', sevenB(2)), ...large });
  workloads.push({ name: '7b-4L', prepare: () => synthOnce('7b-4L', sevenB(4)), ...large });
}
if (chosen.includes('mixtral')) {
  const mixtral = { prepare: () => synthOnce('mixtral-2L', { preset: 'mixtral-8x7b', dtype: 'BF16', layers: 2 }),
    decode: decodeArg ?? 6, reps: 1, weights: 'stream', decodeOnlyAfter: 8, expertCacheAsLayers: 32 } as const;
  workloads.push({ name: 'mixtral-2L', ...mixtral, kernels: 'simd' });
  workloads.push({ name: 'mixtral-2L', ...mixtral, kernels: 'tfjs', backend: 'cpu' });
}
if (values.full) workloads.push({ name: '7b-32L', prepare: () => synthOnce('7b-32L', sevenB(), true), ...large, full: true });

/** Whether `dir` holds exactly what `plan` writes: the same config and every file at its size. */
function complete(dir: string, plan: SynthPlan): boolean {
  try {
    const config = JSON.parse(fs.readFileSync(path.join(dir, 'config.json'), 'utf8'));
    if (JSON.stringify(config) !== JSON.stringify(plan.configJson)) return false;
    if (plan.shards.length > 1 && !fs.existsSync(path.join(dir, 'model.safetensors.index.json'))) return false;
    return plan.shards.every((s) => fs.statSync(path.join(dir, s.file)).size === s.bytes);
  } catch {
    return false;
  }
}

/**
 * The checkpoint of `opts` in bench/out/NAME, written unless a complete one is there. It is
 * written into NAME.partial and renamed when done, so an interrupted run leaves no folder
 * that looks complete.
 */
function synthOnce(name: string, opts: SynthOptions, checkDisk = false): { dir: string; fresh: boolean } | { skip: string } {
  const dir = path.join(OUT, name);
  const plan = planSynth(opts);
  const bytes = plan.shards.reduce((a, s) => a + s.bytes, 0);
  if (complete(dir, plan)) {
    log(`${name}: reusing ${path.relative(REPO, dir)} (${(bytes / GB).toFixed(2)} GB)`);
    return { dir, fresh: false };
  }
  fs.mkdirSync(OUT, { recursive: true });
  if (checkDisk) {
    const st = fs.statfsSync(OUT);
    const free = st.bavail * st.bsize;
    const need = bytes + 2 * 2 ** 30; // and some room to spare
    if (free < need) {
      const msg = `not enough disk space for the ${name} checkpoint: it needs ${(bytes / GB).toFixed(1)} GB (+2 GiB spare) ` +
        `in ${path.relative(REPO, OUT)}, only ${(free / GB).toFixed(1)} GB free`;
      log(msg);
      return { skip: msg };
    }
  }
  const tmp = `${dir}.partial`;
  fs.rmSync(tmp, { recursive: true, force: true });
  fs.rmSync(dir, { recursive: true, force: true });
  log(`${name}: synthesizing ${(plan.parameters / 1e6).toFixed(0)}M parameters, ${(bytes / GB).toFixed(2)} GB, into ${path.relative(REPO, dir)}`);
  const t0 = performance.now();
  let shown = 0;
  synthesize(plan, tmp, (p) => {
    const now = performance.now();
    if (now - shown < 5000 && p.written < p.total) return; // a line every 5 s
    shown = now;
    log(`${name}: ${(p.written / GB).toFixed(2)} / ${(p.total / GB).toFixed(2)} GB written (shard ${p.shard}/${p.shards}), ${((now - t0) / 1000).toFixed(0)} s`);
  });
  fs.renameSync(tmp, dir);
  return { dir, fresh: true };
}

// ── measuring ────────────────────────────────────────────────────────────────────────────

/**
 * The expert cache a model of `layers` layers (same shape as the one in `dir`) would get in
 * this machine's free memory, scaled down to the layers `dir` has: the cache then holds the
 * same share of the experts as it would for the whole model.
 */
function expertShare(dir: string, layers: number, kernels: KernelsName): number {
  const ckpt = openCheckpoint(dir); // the config alone: no weights
  let c: ModelConfig;
  try {
    c = parseConfig(ckpt);
  } finally {
    ckpt.store.close();
  }
  const size = checkpointSize(dir);
  const whole = kernels === 'simd'
    ? storedStreamPlan({ ...c, numLayers: layers }, size.storedBytes / (size.float32Bytes / 4)).expertCacheBytes
    : defaultExpertCacheBytes({ ...c, numLayers: layers });
  return (whole * c.numLayers) / layers;
}

/** Deterministic ids inside the vocabulary, BOS first (the demo has 99 ids, 7B 32000). */
const promptOf = (n: number, vocab: number) => [1, ...Array.from({ length: n - 1 }, (_, i) => 3 + ((i * 7919) % (vocab - 3)))];
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/**
 * One greedy generate(): seconds to the first token, and from it to the last; bytes read
 * from the checkpoint files after the first token (stream mode).
 */
async function timeGenerate(model: Transformer, ids: number[], maxNewTokens: number): Promise<{ first: number; rest: number; decodeBytesRead: number }> {
  const t0 = performance.now();
  let first = t0;
  let bytes0 = model.weights.bytesRead;
  for await (const t of generate(model, ids, { maxNewTokens, stopAtEos: false })) {
    if (t.index === 0) {
      first = performance.now();
      bytes0 = model.weights.bytesRead;
    }
  }
  return { first: (first - t0) / 1000, rest: (performance.now() - first) / 1000, decodeBytesRead: model.weights.bytesRead - bytes0 };
}

/**
 * Bytes one decoded token reads: every projection at its stored width, lm_head included.
 * The embedding lookup reads one row, left out; a tied table is the lm_head, counted once.
 */
function decodeBytes(c: ModelConfig, bytesPerParam: number): number {
  return bytesPerParam * (c.numLayers * layerWeightsPerToken(c) + c.vocabSize * c.hiddenSize);
}

/** Projection weights one token meets in a layer: q and o, k and v, the routed experts and the router. */
function layerWeightsPerToken(c: ModelConfig): number {
  const H = c.hiddenSize;
  const attn = 2 * (c.numHeads + c.numKvHeads) * c.headDim * H;
  const mlp = 3 * c.intermediateSize * H * (c.numExpertsPerTok ?? 1) + (c.numExperts ?? 0) * H;
  return attn + mlp;
}

/**
 * Float32 operations of one prefill token: 2 per projection weight, the lm_head left out
 * (a prefill computes logits for its last position only), attention left out (a few % at 512).
 * Of a dense model's last layer only k and v count: a prefill runs the rest of it for its
 * last two tokens (src/model/simd-block.ts, simdLastRows), so the fraction of the probe
 * stays one of work done.
 */
function prefillFlops(c: ModelConfig): number {
  const lastLayer = c.numExperts === null ? 2 * c.numKvHeads * c.headDim * c.hiddenSize : layerWeightsPerToken(c);
  return 2 * ((c.numLayers - 1) * layerWeightsPerToken(c) + lastLayer);
}

/** Bytes of `files` in the page cache now, from util-linux `fincore`; null without it. */
function cachedBytes(files: string[]): number | null {
  const r = spawnSync('fincore', ['--bytes', '--noheadings', '--output', 'RES', ...files], { encoding: 'utf8' });
  if (r.error !== undefined || r.status !== 0) return null;
  return r.stdout.trim().split('\n').reduce((a, line) => a + Number(line.trim()), 0);
}

/**
 * Empties the page cache (root only, Linux), so that reading a checkpoint measures the disk and
 * not memory; false when that is not allowed here.
 */
function dropCaches(): boolean {
  try {
    spawnSync('sync');
    fs.writeFileSync('/proc/sys/vm/drop_caches', '1');
    return true;
  } catch {
    return false;
  }
}

/**
 * Reads every safetensors file of `dir` once in 64 MiB chunks: bytes, seconds, and the share
 * of them that was in the page cache before (then the rate is memory's, not the disk's).
 */
function readFiles(dir: string): { bytes: number; seconds: number; cachedBefore: number | null } {
  const files = fs.readdirSync(dir).filter((n) => n.endsWith('.safetensors')).map((n) => path.join(dir, n));
  const cached = cachedBytes(files);
  const buf = Buffer.alloc(64 << 20); // alloc, not allocUnsafe: its pages are mapped before the clock starts
  let bytes = 0;
  const t0 = performance.now();
  for (const f of files) {
    const fd = fs.openSync(f, 'r');
    try {
      for (let n; (n = fs.readSync(fd, buf, 0, buf.length, null)) > 0;) bytes += n;
    } finally {
      fs.closeSync(fd);
    }
  }
  return { bytes, seconds: (performance.now() - t0) / 1000, cachedBefore: cached === null ? null : Math.min(1, cached / bytes) };
}

interface FullStats {
  loadSeconds: number;
  fileBytes: number;
  readBytesPerSecond: number;
  /** Share of the file bytes in the page cache before the read (fincore), null when unknown. */
  cachedBefore: number | null;
  probablyCached: string | null;
  readSeconds: number;
  loadOverRead: number;
  peakRssBytes: number;
}

interface Row {
  workload: string;
  weights: string;
  window: string;
  threads: number;
  prefill64?: number;
  prefill512?: number;
  /** After the 64-token prompt. */
  decode?: number;
  /** After the 512-token prompt. */
  decode512?: number;
  /** prefill-512 as a share of the SIMD probe's operations at this thread count. */
  prefillFraction?: number;
  /** float32 operations per prompt token (prefillFlops). */
  flopsPerToken?: number;
  decodeTokens: number;
  reps: number;
  bytesPerToken?: number;
  limit?: number;
  fraction?: number;
  loadSeconds?: number;
  full?: FullStats;
  /** Stream mode with experts: the expert cache over the timed runs. */
  experts?: { hitRate: number; budgetBytes: number; fileBytesPerToken: number; readBytesPerSecond: number; fileLimit: number; fileFraction: number };
  skipped?: string;
  error?: string;
}

interface Probe {
  readonly threads: number;
  /** Bytes per second. */
  readonly read: number;
  /** float32 operations per second. */
  readonly flops: number;
}

/** Runs w on each thread count; limits and fractions are set later, against the probes (ceilings). */
async function runWorkload(w: Workload, threadCounts: readonly number[]): Promise<Row[]> {
  const window = w.overrides?.slidingWindow !== undefined ? `${w.overrides.slidingWindow} (override)` : '';
  const weights = w.weights ?? weightsArg;
  await useBackend(w.backend ?? backend);
  const row: Row = { workload: w.name, weights: [weights, ...(w.kernels ? [w.kernels] : []), ...(w.backend ? [w.backend] : [])].join(', '),
    window, threads: threadCounts[0]!, decodeTokens: w.decode, reps: w.reps };
  const ready = w.prepare();
  if ('skip' in ready) return [{ ...row, skipped: ready.skip }];
  const size = checkpointSize(ready.dir);
  // The library's own check: eager 7B slices do not fit tfjs-wasm's heap, for one.
  const problem = residencyProblem(weights, size, os.freemem(), w.backend ?? backend);
  if (problem !== null) {
    log(`${w.name}: skipped: ${problem}`);
    return [{ ...row, skipped: problem }];
  }

  let read: ReturnType<typeof readFiles> | null = null;
  if (w.full || weights === 'stream') {
    // The full model: both the read and the load start from an empty page cache, so that
    // load ÷ read compares two reads from the disk (a file just written is cached).
    const cold = w.full === true && dropCaches();
    // Stream mode reads the files again every token: measure the rate in the state decode will
    // see. A first read leaves files that fit in RAM page-cached (a partly cached file would
    // otherwise measure the disk, then decode from the cache).
    if (!w.full && size.storedBytes < os.totalmem() / 2) readFiles(ready.dir);
    log(`${w.name}: reading the files once to measure the disk read rate${cold ? ' (page cache emptied first)' : ''}`);
    read = readFiles(ready.dir);
    if (cold) dropCaches();
    log(`${w.name}: read ${(read.bytes / GB).toFixed(2)} GB in ${read.seconds.toFixed(1)} s`);
  }

  const tensorsBefore = tf.memory().numTensors;
  log(`${w.name}: loading (${weights}${window ? `, W = ${window}` : ''})`);
  const t0 = performance.now();
  let shown = 0;
  const model = Transformer.load(ready.dir, {
    weights,
    ...(w.kernels ? { kernels: w.kernels } : {}),
    ...(w.expertCacheAsLayers ? { expertCacheBytes: expertShare(ready.dir, w.expertCacheAsLayers, w.kernels ?? 'simd') } : {}),
    ...(w.overrides ? { overrides: w.overrides } : {}),
    onProgress: (loaded) => {
      if (size.storedBytes < 2 ** 30 || (loaded - shown < size.storedBytes / 10 && loaded < size.storedBytes)) return;
      shown = loaded;
      log(`${w.name}: loaded ${(loaded / GB).toFixed(2)} / ${(size.storedBytes / GB).toFixed(2)} GB`);
    },
  });
  const loadSeconds = (performance.now() - t0) / 1000;
  try {
    const c = model.config;
    row.window = `${c.slidingWindow ?? 'none'}${w.overrides?.slidingWindow !== undefined ? ' (override)' : ''}`;
    row.loadSeconds = loadSeconds;
    log(`${w.name}: loaded in ${loadSeconds.toFixed(1)} s; warming up`);
    // A few chunks of prefill and decode steps, so the JIT has seen both paths. Small models
    // spend a third of a step in JavaScript, which keeps tiering up for tens of steps (h512,
    // 2 threads: 113 tok/s on the first timed run after 8 warm-up steps, ~150 from the fifth):
    // they warm up on 64 steps.
    await timeGenerate(model, promptOf(w.decodeOnlyAfter ?? 32, c.vocabSize), w.decodeOnlyAfter !== undefined ? 2 : w.reps > 1 ? 64 : 8);

    const rows: Row[] = [];
    for (const threads of threadCounts) {
      setThreads(threads);
      const r: Row = { ...row, threads };
      const runs = { p64: [] as number[], p512: [] as number[], d64: [] as number[], d512: [] as number[] };
      const cache0 = { ...model.weights.expertCache };
      let decodeFileBytes = 0;
      let decodeTokens = 0;
      for (let rep = 0; rep < w.reps; rep++) {
        const of = `${nThreads(threads)}${w.reps > 1 ? `, run ${rep + 1}/${w.reps}` : ''}`;
        const short = w.decodeOnlyAfter ?? 64;
        log(`${w.name}: prefill ${short}, then ${w.decode} tokens (${of})`);
        const a = await timeGenerate(model, promptOf(short, c.vocabSize), w.decode);
        if (w.decodeOnlyAfter === undefined) runs.p64.push(64 / a.first);
        runs.d64.push((w.decode - 1) / a.rest);
        decodeFileBytes += a.decodeBytesRead;
        decodeTokens += w.decode - 1;
        if (w.decodeOnlyAfter !== undefined) continue;
        log(`${w.name}: prefill 512, then ${w.decode} tokens (${of})`);
        const b = await timeGenerate(model, promptOf(512, c.vocabSize), w.decode);
        runs.p512.push(512 / b.first);
        runs.d512.push((w.decode - 1) / b.rest);
      }
      const med = (xs: number[]) => (xs.length === 0 ? undefined : median(xs));
      r.prefill64 = med(runs.p64);
      r.prefill512 = med(runs.p512);
      r.decode = median(runs.d64);
      r.decode512 = med(runs.d512);
      const bytesPerParam = size.storedBytes / (size.float32Bytes / 4); // 2 for BF16, 4 for F32
      r.bytesPerToken = decodeBytes(c, bytesPerParam);
      r.flopsPerToken = prefillFlops(c);
      const stats = model.weights.expertCache;
      if (weights === 'stream' && c.numExperts !== null && read !== null) {
        const lookups = stats.hits + stats.misses - cache0.hits - cache0.misses;
        const perToken = decodeFileBytes / decodeTokens;
        const rate = read.bytes / read.seconds;
        r.experts = {
          hitRate: lookups > 0 ? (stats.hits - cache0.hits) / lookups : 0, budgetBytes: stats.budgetBytes,
          fileBytesPerToken: perToken, readBytesPerSecond: rate, fileLimit: rate / perToken, fileFraction: r.decode / (rate / perToken),
        };
      }
      rows.push(r);
    }
    if (read !== null && w.full) {
      const rate = read.bytes / read.seconds;
      // fincore says what was cached; without it, guess from what makes a cache hit likely.
      const c0 = read.cachedBefore;
      const cached = c0 !== null ? (c0 > 0.5 ? `${(100 * c0).toFixed(0)}% of it was in the page cache before the read (fincore)` : null)
        : ready.fresh && read.bytes < os.totalmem() ? 'written by this run and smaller than RAM'
          : rate > 2 * GB ? 'faster than 2 GB/s' : null;
      rows[0]!.full = {
        loadSeconds, fileBytes: read.bytes, readBytesPerSecond: rate, readSeconds: read.seconds, cachedBefore: c0, probablyCached: cached,
        loadOverRead: loadSeconds / (read.bytes / rate), peakRssBytes: process.resourceUsage().maxRSS * 1024, // maxRSS is KiB
      };
    }
    log(`${w.name}: done`);
    return rows;
  } finally {
    model.dispose();
    const left = tf.memory().numTensors - tensorsBefore;
    if (left !== 0) {
      log(`${w.name}: ${left} tfjs tensors leaked`);
      throw new Error(`${left} tfjs tensors leaked`);
    }
  }
}

// ── run and report ───────────────────────────────────────────────────────────────────────

const started = performance.now();
await useBackend(backend);
const describeProbe = (p: Probe) => `${nThreads(p.threads)} read ${(p.read / GB).toFixed(1)} GB/s, SIMD ${(p.flops / 1e9).toFixed(1)} GFLOP/s`;
/** The read and arithmetic probes on each thread count. */
function measureProbes(when: string): Probe[] {
  return threadCounts.map((threads) => {
    log(`measuring the memory read rate and SIMD arithmetic on ${nThreads(threads)} (${when})`);
    const p = { threads, read: measureReadRate(threads), flops: measureSimdFlops(threads) };
    log(describeProbe(p));
    return p;
  });
}
const probesBefore = measureProbes('before the workloads');

const rows: Row[] = [];
for (const w of workloads) {
  try {
    rows.push(...(await runWorkload(w, threadCounts)));
  } catch (e) {
    // Report and go on: one failing workload should not hide the others' numbers.
    const err = e as Error;
    log(`${w.name}: FAILED: ${err.stack ?? err.message}`);
    rows.push({ workload: w.name, weights: w.weights ?? weightsArg, window: '', threads: 0, decodeTokens: w.decode, reps: w.reps, error: `${err.name}: ${err.message}` });
  }
}
const probesAfter = measureProbes('after the workloads');
// The ceilings: the higher of the two measurements at each thread count.
const probes: Probe[] = probesBefore.map((b, i) => {
  const a = probesAfter[i]!;
  return { threads: b.threads, read: Math.max(b.read, a.read), flops: Math.max(b.flops, a.flops) };
});
for (const r of rows) {
  const probe = probes.find((p) => p.threads === r.threads);
  if (probe === undefined || r.decode === undefined || r.bytesPerToken === undefined) continue;
  r.limit = probe.read / r.bytesPerToken;
  r.fraction = r.decode / r.limit;
  if (r.prefill512 !== undefined && r.flopsPerToken !== undefined) r.prefillFraction = (r.prefill512 * r.flopsPerToken) / probe.flops;
}
const seconds = (performance.now() - started) / 1000;

const speed = (x: number | undefined) => (x === undefined ? '–' : x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
const pct = (x: number | undefined) => (x === undefined ? '–' : `${(100 * x).toFixed(0)}%`);
const header = ['workload', 'weights', 'W', 'threads', 'prefill-64 tok/s', 'prefill-512 tok/s', 'prefill ÷ SIMD probe', 'decode tok/s',
  'decode@512 tok/s', 'limit tok/s', 'decode ÷ limit'];
const body = rows.map((r) => {
  const note = r.skipped ? `skipped: ${r.skipped}` : r.error ? `error: ${r.error}` : null;
  if (note !== null && r.decode === undefined) return [r.workload, r.weights, r.window || '–', String(r.threads || '–'), note, '', '', '', '', '', ''];
  return [r.workload, r.weights, r.window, String(r.threads), speed(r.prefill64), speed(r.prefill512), pct(r.prefillFraction), speed(r.decode),
    speed(r.decode512), speed(r.limit), pct(r.fraction) + (note ? ` (${note})` : '')];
});
const summary = `${backend} backend, ${weightsArg} weights, kernels: ${kernelVariant()}, ${os.availableParallelism()} cores; probes (the higher of ` +
  `before and after the workloads): ${probes.map(describeProbe).join('; ')} (before: ${probesBefore.map(describeProbe).join('; ')}; ` +
  `after: ${probesAfter.map(describeProbe).join('; ')})` +
  `; decode: ${[...new Set(rows.map((r) => r.decodeTokens))].join(' or ')} tokens after the 64-token (and the 512-token) prompt; ` +
  `runs per figure (median): ${[...new Set(rows.map((r) => r.reps))].join(' or ')}; limit = read rate ÷ projection bytes per token at stored width`;

if (values.markdown) {
  const cells = (c: string[]) => `| ${c.map((x) => x.replace(/\|/g, '\\|')).join(' | ')} |`;
  console.log([cells(header), cells(header.map((_, i) => (i < 3 ? '---' : '---:'))), ...body.map(cells)].join('\n'));
  console.log(`\n${summary}.`);
} else {
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((r) => (r[i]!.length > 40 ? 0 : r[i]!.length))));
  const line = (cells: string[]) => cells.map((c, i) => (i < 3 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!))).join('  ').trimEnd();
  console.log(`${summary}\n`);
  console.log([line(header), line(widths.map((w) => '-'.repeat(w))), ...body.map(line)].join('\n'));
}
for (const r of rows.filter((x) => x.full)) {
  const f = r.full!;
  console.log(`\n${r.workload}: load ${f.loadSeconds.toFixed(1)} s; files ${(f.fileBytes / GB).toFixed(2)} GB read at ` +
    `${(f.readBytesPerSecond / GB).toFixed(2)} GB/s (fs.readSync, 64 MiB chunks; ` +
    `${f.probablyCached ? `probably page-cached: ${f.probablyCached}` : f.cachedBefore !== null ? `from disk: ${(100 * f.cachedBefore).toFixed(0)}% was cached before (fincore)` : 'cache state unknown'}) ` +
    `= ${f.readSeconds.toFixed(1)} s; load ÷ read = ${f.loadOverRead.toFixed(2)}; peak RSS of the process ${(f.peakRssBytes / 2 ** 30).toFixed(2)} GiB`);
}
for (const r of rows.filter((x) => x.experts)) {
  const e = r.experts!;
  console.log(`\n${r.workload} (${nThreads(r.threads)}): expert cache hit rate ${(100 * e.hitRate).toFixed(0)}% ` +
    `(budget ${(e.budgetBytes / GB).toFixed(1)} GB); decode reads ${(e.fileBytesPerToken / GB).toFixed(2)} GB a token from the files, ` +
    `which read at ${(e.readBytesPerSecond / GB).toFixed(2)} GB/s: limit ${speed(e.fileLimit)} tok/s, decode at ${(100 * e.fileFraction).toFixed(0)}% of it`);
}
console.log(`\ntotal ${seconds.toFixed(0)} s`);

if (values.json) {
  fs.writeFileSync(values.json, JSON.stringify({
    date: new Date().toISOString(), backend, weights: weightsArg, kernels: kernelVariant(), probes, probesBefore, probesAfter, seconds, rows,
  }, null, 2) + '\n');
}
if (rows.some((r) => r.error)) process.exitCode = 1;
