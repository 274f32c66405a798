/**
 * Checkpoint directories: which layout a folder holds, its config file, and one
 * `TensorStore` over all of its safetensors files.
 *
 *   hf          config.json + model.safetensors
 *   hf-sharded  config.json + model.safetensors.index.json + model-0000k-of-0000n.safetensors
 *   native      params.json + consolidated*.safetensors   (Mistral's own layout)
 *
 * This module knows file formats only; mapping tensor names between layouts belongs to
 * the model (src/model/layout.ts).
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from './errors.js';
import { readJsonFile as readJson } from './files.js';
import { SafetensorsFile, type TensorInfo } from './safetensors.js';

export type Layout = 'hf' | 'hf-sharded' | 'native';

/** Read access to the tensors of one checkpoint, whatever the number of files. */
export interface TensorStore {
  /** Every safetensors file behind the store. */
  readonly files: readonly string[];
  names(): string[];
  has(name: string): boolean;
  info(name: string): TensorInfo;
  /** float32 copy of a tensor, or of `count` elements from element `start`; `finite`: NaN / ±Inf is an error. */
  readFloat32(name: string, start?: number, count?: number, opts?: { finite?: boolean }): Float32Array;
  /** A tensor's raw bytes (its stored dtype) into `out`, exactly its size. */
  readInto(name: string, out: Uint8Array): void;
  close(): void;
}

export interface Checkpoint {
  readonly dir: string;
  readonly layout: Layout;
  /** config.json (HF) or params.json (native). */
  readonly configFile: string;
  readonly configJson: unknown;
  readonly store: TensorStore;
}

/** Tensors spread over several files, each name living in exactly one. */
export class MultiFileStore implements TensorStore {
  private readonly where = new Map<string, SafetensorsFile>();
  private readonly opened: SafetensorsFile[];

  constructor(files: SafetensorsFile[], weightMap?: ReadonlyMap<string, string>, indexFile?: string) {
    this.opened = files;
    for (const f of files) {
      for (const name of f.tensors.keys()) {
        const other = this.where.get(name);
        if (other !== undefined) {
          this.close();
          throw new CheckpointError(f.path, `tensor also present in ${other.path}`, name);
        }
        this.where.set(name, f);
      }
    }
    if (weightMap !== undefined) {
      for (const [name, file] of weightMap) {
        const f = this.where.get(name);
        if (f === undefined || path.basename(f.path) !== file) {
          this.close();
          throw new CheckpointError(indexFile ?? file, `index says this tensor is in ${file}, but ${f === undefined ? 'no shard has it' : `it is in ${path.basename(f.path)}`}`, name);
        }
      }
    }
  }

  get files(): readonly string[] {
    return this.opened.map((f) => f.path);
  }

  names(): string[] {
    return [...this.where.keys()];
  }

  has(name: string): boolean {
    return this.where.has(name);
  }

  info(name: string): TensorInfo {
    return this.file(name).info(name);
  }

  readFloat32(name: string, start?: number, count?: number, opts?: { finite?: boolean }): Float32Array {
    return this.file(name).readFloat32(name, start, count, opts);
  }

  readInto(name: string, out: Uint8Array): void {
    this.file(name).readInto(name, out);
  }

  close(): void {
    for (const f of this.opened) f.close();
  }

  private file(name: string): SafetensorsFile {
    const f = this.where.get(name);
    if (f === undefined) throw new CheckpointError(this.opened[0]?.path ?? '(no files)', 'missing tensor', name);
    return f;
  }
}

function openAll(files: string[]): SafetensorsFile[] {
  const opened: SafetensorsFile[] = [];
  try {
    for (const f of files) opened.push(SafetensorsFile.open(f));
  } catch (e) {
    for (const f of opened) f.close();
    throw e;
  }
  return opened;
}

function openShardIndex(dir: string, indexFile: string): MultiFileStore {
  const index = readJson(indexFile);
  const map = typeof index === 'object' && index !== null ? (index as { weight_map?: unknown }).weight_map : undefined;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) {
    throw new CheckpointError(indexFile, 'has no "weight_map" object');
  }
  const weightMap = new Map<string, string>();
  for (const [name, file] of Object.entries(map)) {
    // Shard names are plain file names in this folder: no paths out of it.
    if (typeof file !== 'string' || file.includes('/') || file.includes('\\') || file.startsWith('.') || !file.endsWith('.safetensors')) {
      throw new CheckpointError(indexFile, `weight_map entry ${JSON.stringify(file)?.slice(0, 100)} is not a .safetensors file name in this folder`, name);
    }
    weightMap.set(name, file);
  }
  if (weightMap.size === 0) throw new CheckpointError(indexFile, 'weight_map is empty');
  const shards = [...new Set(weightMap.values())].sort();
  for (const s of shards) {
    if (!fs.existsSync(path.join(dir, s))) {
      throw new CheckpointError(path.join(dir, s), `shard named in ${path.basename(indexFile)} is absent`);
    }
  }
  return new MultiFileStore(openAll(shards.map((s) => path.join(dir, s))), weightMap, indexFile);
}

/** PyTorch pickles (`pytorch_model.bin`, `consolidated.00.pth`, ...). */
const PICKLE = /\.(bin|pt|pth|ckpt)$/;

function pickleError(file: string): CheckpointError {
  return new CheckpointError(file,
    'PyTorch pickle checkpoints are not read (unpickling can run arbitrary code); only safetensors is. ' +
    'Convert once in Python: `from safetensors.torch import save_file; save_file(torch.load(f), "model.safetensors")`, ' +
    'or `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`');
}

/** Detects the layout of `dir` and opens its tensors (headers only; no weights are read). */
export function openCheckpoint(dir: string): Checkpoint {
  let entries: string[];
  try {
    if (!fs.statSync(dir).isDirectory()) {
      if (PICKLE.test(dir)) throw pickleError(dir);
      throw new CheckpointError(dir, 'not a directory (--model takes the checkpoint folder, with config.json or params.json)');
    }
    entries = fs.readdirSync(dir);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    const code = (e as NodeJS.ErrnoException).code;
    throw new CheckpointError(dir, code === 'ENOENT' ? 'not a directory: nothing exists at this path' : `cannot read: ${(e as Error).message}`);
  }
  const has = (f: string) => entries.includes(f);
  const safetensors = entries.filter((f) => f.endsWith('.safetensors')).sort();

  if (safetensors.length === 0) {
    const pickled = entries.filter((f) => PICKLE.test(f)).sort();
    if (pickled.length > 0) throw pickleError(path.join(dir, pickled[0]!));
    throw new CheckpointError(dir, 'no .safetensors files in this folder');
  }

  if (has('params.json') && !has('config.json')) {
    const files = safetensors.filter((f) => f.startsWith('consolidated'));
    if (files.length === 0) throw new CheckpointError(dir, 'params.json found but no consolidated*.safetensors');
    const configFile = path.join(dir, 'params.json');
    const configJson = readJson(configFile);
    return { dir, layout: 'native', configFile, configJson, store: new MultiFileStore(openAll(files.map((f) => path.join(dir, f)))) };
  }

  const configFile = path.join(dir, 'config.json');
  if (!has('config.json')) throw new CheckpointError(configFile, 'missing (an HF checkpoint needs config.json; a native one params.json)');
  const configJson = readJson(configFile);
  if (has('model.safetensors.index.json')) {
    const store = openShardIndex(dir, path.join(dir, 'model.safetensors.index.json'));
    return { dir, layout: 'hf-sharded', configFile, configJson, store };
  }
  const file = has('model.safetensors') ? 'model.safetensors' : safetensors.length === 1 ? safetensors[0]! : undefined;
  if (file === undefined) {
    throw new CheckpointError(dir, `several safetensors files (${safetensors.join(', ')}) but no model.safetensors.index.json`);
  }
  return { dir, layout: 'hf', configFile, configJson, store: new MultiFileStore(openAll([path.join(dir, file)])) };
}
