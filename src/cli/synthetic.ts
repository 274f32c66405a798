/**
 * Synthetic full-size checkpoints: the exact published config and tensor shapes of a
 * real Mistral model, with seeded random weights, written in the HF layout and sharded
 * the way the real repository is. For tests (few layers) and memory benchmarks (full
 * width) without downloading 15–93 GB.
 *
 * It lives with the CLI, a floor above io and model: it writes files (io) in the shapes a
 * config implies (model), and io imports nothing of ours.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { CheckpointError } from '../io/errors.js';
import { dataBytes, elementCount, headerBytes, writeSafetensorsSteps, type TensorSpec, type WritableDType } from '../io/safetensors-writer.js';
import { parseHfConfig, type ModelConfig } from '../model/config.js';
import { expectedTensors } from '../model/schema.js';

export const PRESET_NAMES = ['mistral-7b-v0.1', 'mistral-7b-v0.3', 'mixtral-8x7b'] as const;
export type PresetName = (typeof PRESET_NAMES)[number];

interface Preset {
  /** config.json as published (values, not formatting). */
  readonly config: Readonly<Record<string, unknown>>;
  /** `max_shard_size` the published safetensors were saved with (decimal GB, as transformers counts). */
  readonly maxShardBytes: number;
  readonly source: string;
}

/**
 * The published configs. Each mirrors the config.json of the named Hugging Face repository;
 * shard sizes reproduce its file list: v0.1 ships 2 safetensors shards (9.94 + 4.54 GB,
 * saved with transformers' then-default 10GB), v0.3 3 shards and Mixtral 19 (5GB each).
 */
export const PRESETS: Readonly<Record<PresetName, Preset>> = {
  // https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json
  'mistral-7b-v0.1': {
    source: 'https://huggingface.co/mistralai/Mistral-7B-v0.1/blob/main/config.json',
    maxShardBytes: 10e9,
    config: {
      architectures: ['MistralForCausalLM'],
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 4096,
      initializer_range: 0.02,
      intermediate_size: 14336,
      max_position_embeddings: 32768,
      model_type: 'mistral',
      num_attention_heads: 32,
      num_hidden_layers: 32,
      num_key_value_heads: 8,
      rms_norm_eps: 1e-5,
      rope_theta: 10000.0,
      sliding_window: 4096,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.34.0.dev0',
      use_cache: true,
      vocab_size: 32000,
    },
  },
  // https://huggingface.co/mistralai/Mistral-7B-v0.3/blob/main/config.json
  'mistral-7b-v0.3': {
    source: 'https://huggingface.co/mistralai/Mistral-7B-v0.3/blob/main/config.json',
    maxShardBytes: 5e9,
    config: {
      architectures: ['MistralForCausalLM'],
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 4096,
      initializer_range: 0.02,
      intermediate_size: 14336,
      max_position_embeddings: 32768,
      model_type: 'mistral',
      num_attention_heads: 32,
      num_hidden_layers: 32,
      num_key_value_heads: 8,
      rms_norm_eps: 1e-5,
      rope_theta: 1000000.0,
      sliding_window: null,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.42.0.dev0',
      use_cache: true,
      vocab_size: 32768,
    },
  },
  // https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json
  'mixtral-8x7b': {
    source: 'https://huggingface.co/mistralai/Mixtral-8x7B-v0.1/blob/main/config.json',
    maxShardBytes: 5e9,
    config: {
      architectures: ['MixtralForCausalLM'],
      attention_dropout: 0.0,
      bos_token_id: 1,
      eos_token_id: 2,
      hidden_act: 'silu',
      hidden_size: 4096,
      initializer_range: 0.02,
      intermediate_size: 14336,
      max_position_embeddings: 32768,
      model_type: 'mixtral',
      num_attention_heads: 32,
      num_experts_per_tok: 2,
      num_hidden_layers: 32,
      num_key_value_heads: 8,
      num_local_experts: 8,
      output_router_logits: false,
      rms_norm_eps: 1e-5,
      rope_theta: 1000000.0,
      router_aux_loss_coef: 0.02,
      sliding_window: null,
      tie_word_embeddings: false,
      torch_dtype: 'bfloat16',
      transformers_version: '4.36.0.dev0',
      use_cache: true,
      vocab_size: 32000,
    },
  },
};

/** Config keys a test or experiment may shrink; the result is then no longer the published model. */
export interface SynthOverrides {
  readonly hidden_size?: number;
  readonly intermediate_size?: number;
  readonly vocab_size?: number;
  readonly num_attention_heads?: number;
  readonly num_key_value_heads?: number;
  readonly num_local_experts?: number;
}

export interface SynthOptions {
  readonly preset: PresetName;
  /** Decoder layers to write (default: the published count). */
  readonly layers?: number;
  readonly dtype?: WritableDType;
  readonly seed?: number;
  readonly overrides?: SynthOverrides;
  /** Shard size limit in bytes (default: the published one). */
  readonly maxShardBytes?: number;
}

export interface ShardPlan {
  /** File name in the output folder. */
  readonly file: string;
  readonly tensors: readonly TensorSpec[];
  /** Bytes of the file (header included). */
  readonly bytes: number;
}

export interface SynthPlan {
  readonly configJson: Record<string, unknown>;
  readonly config: ModelConfig;
  readonly dtype: WritableDType;
  readonly seed: number;
  readonly shards: readonly ShardPlan[];
  readonly parameters: number;
  /** Sum of tensor data bytes (the index's metadata.total_size). */
  readonly totalSize: number;
}

/** What `synthesize` would write, without writing it. Validates the resulting config. */
export function planSynth(opts: SynthOptions): SynthPlan {
  const preset = PRESETS[opts.preset];
  const dtype = opts.dtype ?? 'BF16';
  const configJson: Record<string, unknown> = {
    ...preset.config,
    ...opts.overrides,
    num_hidden_layers: opts.layers ?? preset.config.num_hidden_layers,
    torch_dtype: dtype === 'BF16' ? 'bfloat16' : 'float32',
  };
  const config = parseHfConfig(configJson, `${opts.preset} config`);
  const specs: TensorSpec[] = [...expectedTensors(config)].map(([name, shape]) => ({ name, shape }));
  const size = dtype === 'BF16' ? 2 : 4;

  // transformers' sharding: tensors in order, a new shard when the next one would overflow.
  const max = opts.maxShardBytes ?? preset.maxShardBytes;
  const groups: TensorSpec[][] = [[]];
  let current = 0;
  for (const s of specs) {
    const n = size * elementCount(s.shape);
    if (current + n > max && groups.at(-1)!.length > 0) {
      groups.push([]);
      current = 0;
    }
    groups.at(-1)!.push(s);
    current += n;
  }
  const count = groups.length;
  const pad = (k: number) => String(k).padStart(5, '0');
  const shards = groups.map((tensors, i) => ({
    file: count === 1 ? 'model.safetensors' : `model-${pad(i + 1)}-of-${pad(count)}.safetensors`,
    tensors,
    bytes: headerBytes(tensors, dtype).length + dataBytes(tensors, dtype),
  }));
  return {
    configJson,
    config,
    dtype,
    seed: opts.seed ?? 0,
    shards,
    parameters: specs.reduce((a, s) => a + elementCount(s.shape), 0),
    totalSize: dataBytes(specs, dtype),
  };
}

/**
 * The value generator: each tensor has its own stream, seeded by (seed, name), so a
 * tensor's values do not depend on sharding or on how many layers are written.
 *
 * Linear weights are uniform with variance 1/fan_in (±√(3/fan_in)), so each projection
 * keeps activations at unit scale and a 32-layer forward stays finite; the embedding has
 * variance 1; norm weights are 1, as at initialisation.
 */
export function syntheticFill(seed: number, shapes: ReadonlyMap<string, readonly number[]>) {
  return (name: string, start: number, out: Float32Array): void => {
    const shape = shapes.get(name)!;
    if (shape.length === 1) {
      out.fill(1);
      return;
    }
    const fanIn = name === 'model.embed_tokens.weight' ? 1 : shape[1]!;
    const a = Math.sqrt(3 / fanIn);
    // mulberry32 (Tommy Ettinger), advanced to `start` by seeding per 2^16-element block.
    const block = 1 << 16;
    let i = 0;
    while (i < out.length) {
      const index = start + i;
      let state = hash32(`${seed}:${name}:${Math.floor(index / block)}`);
      const skip = index % block;
      for (let s = 0; s < skip; s++) state = (state + 0x6d2b79f5) | 0;
      const end = Math.min(out.length, i + block - skip);
      for (; i < end; i++) {
        state = (state + 0x6d2b79f5) | 0;
        let t = Math.imul(state ^ (state >>> 15), 1 | state);
        t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
        const u = ((t ^ (t >>> 14)) >>> 0) / 4294967296; // [0, 1)
        out[i] = a * (2 * u - 1);
      }
    }
  };
}

/** FNV-1a, 32 bits. */
function hash32(text: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < text.length; i++) h = Math.imul(h ^ text.charCodeAt(i), 0x01000193);
  return h | 0;
}

export interface SynthProgress {
  readonly file: string;
  readonly shard: number;
  readonly shards: number;
  /** Data bytes written so far, over all shards, and in all. */
  readonly written: number;
  readonly total: number;
}

/**
 * Writes the checkpoint of `plan` into `out` (created; must be absent or empty), in one go.
 * The CLI writes through `synthSteps` into a temporary sibling instead (atomic, interruptible).
 */
export function synthesize(plan: SynthPlan, out: string, onProgress?: (p: SynthProgress) => void): void {
  if (fs.existsSync(out) && (!fs.statSync(out).isDirectory() || fs.readdirSync(out).length > 0)) {
    throw new CheckpointError(out, 'exists and is not an empty folder; synth does not overwrite');
  }
  fs.mkdirSync(out, { recursive: true });
  for (const _ of synthSteps(plan, out, onProgress));
}

/**
 * Writes the files of `plan` into the existing folder `out`, one chunk (a few MB) per step,
 * so that a caller can yield to the event loop (and handle Ctrl-C) between steps.
 */
export function* synthSteps(plan: SynthPlan, out: string, onProgress?: (p: SynthProgress) => void): Generator<void, void, undefined> {
  try {
    yield* writeAll(plan, out, onProgress);
  } catch (e) {
    if (e instanceof CheckpointError) throw e;
    throw new CheckpointError(out, `cannot write: ${(e as Error).message}`);
  }
}

function* writeAll(plan: SynthPlan, out: string, onProgress?: (p: SynthProgress) => void): Generator<void, void, undefined> {
  const shapes = new Map(plan.shards.flatMap((s) => s.tensors.map((t) => [t.name, t.shape] as const)));
  const fill = syntheticFill(plan.seed, shapes);
  let before = 0;
  for (const [k, shard] of plan.shards.entries()) {
    let last = 0;
    yield* writeSafetensorsSteps(path.join(out, shard.file), shard.tensors, plan.dtype, fill, (written) => {
      // Report about every 64 MB, not every chunk.
      if (written - last >= 64 << 20 || written === dataBytes(shard.tensors, plan.dtype)) {
        last = written;
        onProgress?.({ file: shard.file, shard: k + 1, shards: plan.shards.length, written: before + written, total: plan.totalSize });
      }
    });
    before += dataBytes(shard.tensors, plan.dtype);
  }
  if (plan.shards.length > 1) {
    const weightMap: Record<string, string> = {};
    const entries = plan.shards.flatMap((s) => s.tensors.map((t) => [t.name, s.file] as const));
    for (const [name, file] of entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) weightMap[name] = file;
    const index = { metadata: { total_size: plan.totalSize }, weight_map: weightMap };
    fs.writeFileSync(path.join(out, 'model.safetensors.index.json'), JSON.stringify(index, null, 2) + '\n');
  }
  fs.writeFileSync(path.join(out, 'config.json'), JSON.stringify(plan.configJson, null, 2) + '\n');
}
