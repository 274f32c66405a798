import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { resolveModelDir } from '../../io/bundled.js';
import { openCheckpoint, type Checkpoint } from '../../io/checkpoint.js';
import { CheckpointError } from '../../io/errors.js';
import { parameterCount, parseConfig, type ModelConfig } from '../../model/config.js';
import { chooseResidency, estimateMemory, type MemoryEstimate } from '../../model/residency.js';
import { tensorProblems, type TensorProblem } from '../../model/schema.js';
import { parse, required } from '../args.js';
import { table } from '../common.js';
import type { CliIO } from '../io.js';

export const summary = 'describe a checkpoint: layout, config, tensors, memory';

export const usage = `usage: mistral-ref inspect --model DIR [--json]

Describes a checkpoint folder from its headers (no weights are read): layout, config,
tensor count, dtypes, parameter count, the memory each residency mode needs (resident:
every weight at its stored width; eager: every weight as float32; stream: one float32
layer or the head at a time), what --weights auto
would choose here, and every inconsistency between config and tensors (missing, extra,
wrong shape, unreadable dtype) or in the config itself, all of them, not just the first.

  --model DIR            checkpoint folder (HF, HF sharded or native)
  --json                 one JSON object on stdout

exit: 0 consistent, 1 problems found (listed), 2 unreadable (one line on stderr)
`;

/** Problems printed in text mode; --json lists them all. */
const SHOWN = 20;

export interface InspectReport {
  readonly model: string;
  readonly layout: Checkpoint['layout'];
  readonly config_file: string;
  readonly config: ModelConfig | null;
  readonly files: Array<{ file: string; bytes: number; tensors: number }>;
  readonly tensors: number;
  readonly dtypes: Record<string, number>;
  /** Elements over all tensors in the files. */
  readonly parameters: number;
  /** What the config implies (null without a valid config). */
  readonly parameters_expected: number | null;
  readonly bytes_on_disk: number;
  /** float32 bytes; from the config, or from the tensors when the config is invalid. */
  readonly memory: (MemoryEstimate | { eager: number }) & { resident: number };
  readonly auto: { cpu: string; wasm: string; free_bytes: number };
  readonly problems: Array<Omit<TensorProblem, 'kind'> & { kind: TensorProblem['kind'] | 'config' }>;
}

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, { model: { type: 'string' }, json: { type: 'boolean' } });
  const dir = resolveModelDir(required(values.model, '--model'));
  const ckpt = openCheckpoint(dir);
  try {
    const report = inspect(ckpt);
    io.stdout(values.json ? JSON.stringify(report) + '\n' : render(report));
    return report.problems.length === 0 ? 0 : 1;
  } finally {
    ckpt.store.close();
  }
}

export function inspect(ckpt: Checkpoint): InspectReport {
  const store = ckpt.store;
  const problems: InspectReport['problems'] = [];
  let config: ModelConfig | null = null;
  try {
    config = parseConfig(ckpt);
  } catch (e) {
    if (!(e instanceof CheckpointError)) throw e;
    problems.push({ kind: 'config', tensor: '', file: ckpt.configFile, message: e.message });
  }

  const dtypes: Record<string, number> = {};
  const perFile = new Map(store.files.map((f) => [f, 0]));
  let parameters = 0;
  let storedBytes = 0;
  for (const name of store.names()) {
    const info = store.info(name);
    storedBytes += info.end - info.begin;
    dtypes[info.dtype] = (dtypes[info.dtype] ?? 0) + 1;
    perFile.set(info.file, (perFile.get(info.file) ?? 0) + 1);
    parameters += info.shape.reduce((a, b) => a * b, 1);
  }
  const files = [...perFile].map(([file, tensors]) => ({ file: path.basename(file), bytes: fs.statSync(file).size, tensors }));
  if (config !== null) problems.push(...tensorProblems(ckpt, config));

  const free = os.freemem();
  const auto = (backend: string) => {
    const c = chooseResidency({ storedBytes, float32Bytes: 4 * parameters }, free, backend);
    return `${c.weights} (${c.reason})`;
  };
  return {
    model: ckpt.dir,
    layout: ckpt.layout,
    config_file: ckpt.configFile,
    config,
    files,
    tensors: store.names().length,
    dtypes,
    parameters,
    parameters_expected: config === null ? null : parameterCount(config),
    bytes_on_disk: files.reduce((n, f) => n + f.bytes, 0),
    memory: { resident: storedBytes, ...(config === null ? { eager: 4 * parameters } : estimateMemory(config)) },
    auto: { cpu: auto('cpu'), wasm: auto('wasm'), free_bytes: free },
    problems,
  };
}

function render(r: InspectReport): string {
  const c = r.config;
  const out: string[] = [];
  const row = (k: string, v: string) => out.push(`${k.padEnd(12)}${v}\n`);
  row('model', r.model);
  row('layout', `${r.layout} (${r.files.length} file${r.files.length === 1 ? '' : 's'}, ${bytes(r.bytes_on_disk)})`);
  row('config', c === null
    ? `${r.config_file}: INVALID (see problems)`
    : `${path.basename(r.config_file)}: ${c.arch}, ${c.numLayers} layers, hidden ${c.hiddenSize}, intermediate ${c.intermediateSize}, ` +
      `${c.numHeads} heads / ${c.numKvHeads} kv × ${c.headDim}, vocab ${c.vocabSize}` +
      (c.numExperts === null ? '' : `, ${c.numExperts} experts top-${c.numExpertsPerTok}`));
  if (c !== null) {
    row('', `sliding_window ${c.slidingWindow ?? 'none'}, rope_theta ${c.ropeTheta}, rms_norm_eps ${c.rmsNormEps}, ` +
      `max_position_embeddings ${c.maxPositionEmbeddings ?? 'unstated'}, tie_word_embeddings ${c.tieWordEmbeddings}`);
  }
  row('tensors', `${r.tensors} (${Object.entries(r.dtypes).map(([d, n]) => `${d} ${n}`).join(', ')})`);
  row('parameters', `${r.parameters.toLocaleString('en-US')}` +
    (r.parameters_expected === null ? '' : r.parameters_expected === r.parameters ? ' (as the config implies)' : ` (the config implies ${r.parameters_expected.toLocaleString('en-US')})`));
  const m = r.memory;
  row('memory', `resident ${bytes(m.resident)} of weights at their stored width`);
  if ('stream' in m) {
    row('', `eager ${bytes(m.eager)} of float32 weights`);
    row('', `stream ≈ ${bytes(m.stream)} peak (largest layer ${bytes(m.layer)}, head ${bytes(m.head)}, one tensor in flight ${bytes(m.largestTensor)})`);
  } else {
    row('', `eager ${bytes(m.eager)} of float32 weights`);
  }
  row('auto', `cpu: ${r.auto.cpu}`);
  row('', `wasm: ${r.auto.wasm}`);
  if (r.files.length > 1) out.push('\n' + table(['file', 'bytes', 'tensors'], r.files.map((f) => [f.file, bytes(f.bytes), String(f.tensors)])));
  if (r.problems.length === 0) {
    out.push('\nno problems: config and tensors agree\n');
  } else {
    out.push(`\n${r.problems.length} problem${r.problems.length === 1 ? '' : 's'}:\n`);
    for (const p of r.problems.slice(0, SHOWN)) {
      out.push(p.kind === 'config' ? `  config   ${p.message}\n` : `  ${p.kind.padEnd(8)} ${p.tensor}: ${p.message}${p.kind === 'missing' ? '' : ` (${path.basename(p.file)})`}\n`);
    }
    if (r.problems.length > SHOWN) out.push(`  ... and ${r.problems.length - SHOWN} more (--json lists all)\n`);
  }
  return out.join('');
}

function bytes(n: number): string {
  return n >= 1e9 ? `${(n / 1e9).toFixed(2)} GB` : n >= 1e6 ? `${(n / 1e6).toFixed(1)} MB` : `${(n / 1e3).toFixed(1)} KB`;
}
