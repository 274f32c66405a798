/**
 * One typed, readonly model config, parsed from Hugging Face `config.json` or Mistral's
 * native `params.json` by one function each (`parseConfig` picks by layout). Ambiguity is rejected rather than guessed:
 * a missing `rope_theta` differs between Mistral releases, so it is an error.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { ConfigError } from './errors.js';

export interface ModelConfig {
  readonly arch: 'mistral' | 'mixtral';
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /** SwiGLU inner size (per expert for Mixtral). */
  readonly intermediateSize: number;
  readonly numLayers: number;
  readonly numHeads: number;
  readonly numKvHeads: number;
  /** May differ from hiddenSize / numHeads (Mistral Nemo: 128 with hidden 5120, 32 heads). */
  readonly headDim: number;
  /** W: query i sees key j iff i − W < j ≤ i. null = full causal attention. */
  readonly slidingWindow: number | null;
  readonly ropeTheta: number;
  readonly rmsNormEps: number;
  /** Longest sequence the config allows; null when the file states none (native layout). */
  readonly maxPositionEmbeddings: number | null;
  readonly tieWordEmbeddings: boolean;
  readonly bosTokenId: number | null;
  readonly eosTokenIds: readonly number[];
  /** Mixtral only: experts per layer and experts chosen per token. */
  readonly numExperts: number | null;
  readonly numExpertsPerTok: number | null;
}

type Json = Record<string, unknown>;

class Reader {
  constructor(readonly file: string, readonly json: Json) {}

  fail(key: string, msg: string): never {
    throw new ConfigError(this.file, key, msg);
  }

  has(key: string): boolean {
    return Object.prototype.hasOwnProperty.call(this.json, key);
  }

  /** A positive integer (or non-negative with `min: 0`). */
  int(key: string, fallback?: number, min = 1): number {
    const v = this.has(key) ? this.json[key] : fallback;
    if (v === undefined) this.fail(key, 'missing');
    if (!Number.isSafeInteger(v) || (v as number) < min) {
      this.fail(key, `expected an integer ≥ ${min}, got ${JSON.stringify(v)}`);
    }
    return v as number;
  }

  positive(key: string, fallback?: number): number {
    const v = this.has(key) ? this.json[key] : fallback;
    if (v === undefined) this.fail(key, 'missing');
    if (typeof v !== 'number' || !Number.isFinite(v) || v <= 0) {
      this.fail(key, `expected a positive number, got ${JSON.stringify(v)}`);
    }
    return v;
  }

  bool(key: string, fallback: boolean): boolean {
    const v = this.has(key) ? this.json[key] : fallback;
    if (typeof v !== 'boolean') this.fail(key, `expected true or false, got ${JSON.stringify(v)}`);
    return v;
  }

  /**
   * Every key is read by the parser (`handled`), known not to change the forward pass
   * (`ignored`), or at the value that means "off" (`neutral`); anything else is rejected
   * by name rather than silently computing a different model.
   */
  onlyKnownKeys(handled: readonly string[], ignored: readonly string[], neutral: Readonly<Record<string, unknown>>): void {
    for (const [key, value] of Object.entries(this.json)) {
      if (handled.includes(key) || ignored.includes(key)) continue;
      if (Object.hasOwn(neutral, key)) {
        if (value === neutral[key] || (value === null && neutral[key] === false)) continue;
        this.fail(key, `${JSON.stringify(value)?.slice(0, 100)} changes the computation and is not implemented (only ${JSON.stringify(neutral[key])} is)`);
      }
      this.fail(key, 'unknown key, not known to be safe to ignore (see docs/checkpoints.md)');
    }
  }

  /** An integer, an explicit null, or (when missing) `whenMissing`. */
  intOrNull(key: string, whenMissing: number | null): number | null {
    if (!this.has(key)) return whenMissing;
    return this.json[key] === null ? null : this.int(key);
  }
}

function finish(r: Reader, c: ModelConfig): ModelConfig {
  if (c.numHeads % c.numKvHeads !== 0) {
    r.fail('num_key_value_heads', `${c.numHeads} attention heads are not divisible by ${c.numKvHeads} key/value heads`);
  }
  if (c.headDim % 2 !== 0) r.fail('head_dim', `RoPE rotates pairs, so head_dim must be even, got ${c.headDim}`);
  if (c.numExperts !== null && c.numExpertsPerTok !== null && c.numExpertsPerTok > c.numExperts) {
    r.fail('num_experts_per_tok', `${c.numExpertsPerTok} chosen experts but only ${c.numExperts} exist`);
  }
  if (c.bosTokenId !== null && c.bosTokenId >= c.vocabSize) r.fail('bos_token_id', `${c.bosTokenId} is outside the vocabulary of ${c.vocabSize}`);
  const eos = c.eosTokenIds.find((id) => id >= c.vocabSize);
  if (eos !== undefined) r.fail('eos_token_id', `${eos} is outside the vocabulary of ${c.vocabSize}`);
  return Object.freeze(c);
}

function headDimOf(r: Reader, key: string, hidden: number, heads: number): number {
  if (r.has(key) && r.json[key] !== null) return r.int(key);
  if (hidden % heads !== 0) r.fail(key, `missing, and hidden size ${hidden} is not divisible by ${heads} heads`);
  return hidden / heads;
}

function asObject(file: string, json: unknown): Json {
  if (typeof json !== 'object' || json === null || Array.isArray(json)) {
    throw new ConfigError(file, '(root)', 'expected a JSON object');
  }
  return json as Json;
}

/** config.json keys parseHfConfig reads. */
const HF_HANDLED = ['model_type', 'hidden_act', 'rope_theta', 'hidden_size', 'num_attention_heads', 'eos_token_id', 'vocab_size',
  'intermediate_size', 'num_hidden_layers', 'num_key_value_heads', 'head_dim', 'sliding_window', 'rms_norm_eps',
  'max_position_embeddings', 'tie_word_embeddings', 'bos_token_id', 'num_local_experts', 'num_experts_per_tok'];

/**
 * config.json keys safe to ignore: bookkeeping, and settings of training only (dropout,
 * the router's jitter and auxiliary loss) or of outputs we do not produce.
 */
export const HF_IGNORED_KEYS: readonly string[] = ['architectures', '_name_or_path', 'torch_dtype', 'transformers_version',
  'use_cache', 'initializer_range', 'attention_dropout', 'pad_token_id', 'output_router_logits', 'router_aux_loss_coef',
  'router_jitter_noise', 'output_attentions', 'output_hidden_states', 'return_dict', 'torchscript', 'is_decoder',
  'id2label', 'label2id', 'tokenizer_class'];

/** config.json keys that change the computation, accepted at their "off" value only. */
const HF_NEUTRAL: Readonly<Record<string, unknown>> = { rope_scaling: null, attention_bias: false, mlp_bias: false, quantization_config: null };

/** Parses a transformers `MistralConfig` / `MixtralConfig` as written by `save_pretrained`. */
export function parseHfConfig(json: unknown, file = 'config.json'): ModelConfig {
  const r = new Reader(file, asObject(file, json));
  r.onlyKnownKeys(HF_HANDLED, HF_IGNORED_KEYS, HF_NEUTRAL);
  const type = r.json.model_type;
  if (type !== 'mistral' && type !== 'mixtral') {
    r.fail('model_type', `expected "mistral" or "mixtral", got ${JSON.stringify(type)}`);
  }
  const act = r.json.hidden_act ?? 'silu';
  if (act !== 'silu') r.fail('hidden_act', `only "silu" (SwiGLU) is implemented, got ${JSON.stringify(act)}`);
  if (!r.has('rope_theta')) {
    r.fail('rope_theta', 'missing; state it explicitly (Mistral 7B v0.1/v0.2: 10000; v0.3 and Mixtral 8x7B: 1000000)');
  }
  const hidden = r.int('hidden_size');
  const heads = r.int('num_attention_heads');
  const mixtral = type === 'mixtral';
  const eos = r.json.eos_token_id;
  const eosIds = eos === undefined || eos === null ? [] : Array.isArray(eos) ? eos : [eos];
  if (!eosIds.every((x) => Number.isSafeInteger(x) && x >= 0)) r.fail('eos_token_id', `expected an id or a list of ids, got ${JSON.stringify(eos)}`);
  return finish(r, {
    arch: type as 'mistral' | 'mixtral',
    vocabSize: r.int('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: r.int('intermediate_size'),
    numLayers: r.int('num_hidden_layers'),
    numHeads: heads,
    numKvHeads: r.int('num_key_value_heads', heads),
    headDim: headDimOf(r, 'head_dim', hidden, heads),
    // transformers' own defaults when the key is absent: MistralConfig 4096, MixtralConfig None.
    slidingWindow: r.intOrNull('sliding_window', mixtral ? null : 4096),
    ropeTheta: r.positive('rope_theta'),
    rmsNormEps: r.positive('rms_norm_eps', 1e-6),
    maxPositionEmbeddings: r.int('max_position_embeddings', 4096 * 32),
    tieWordEmbeddings: r.bool('tie_word_embeddings', false),
    bosTokenId: r.intOrNull('bos_token_id', 1) ?? null,
    eosTokenIds: eosIds as number[],
    numExperts: mixtral ? r.int('num_local_experts') : null,
    numExpertsPerTok: mixtral ? r.int('num_experts_per_tok') : null,
  });
}

const NATIVE_HANDLED = ['dim', 'n_layers', 'head_dim', 'hidden_dim', 'n_heads', 'n_kv_heads', 'norm_eps', 'vocab_size',
  'rope_theta', 'sliding_window', 'max_seq_len', 'moe'];
/** params.json keys safe to ignore (the batch size mistral-inference allocates for). */
export const NATIVE_IGNORED_KEYS: readonly string[] = ['max_batch_size', 'model_type'];
const NATIVE_NEUTRAL: Readonly<Record<string, unknown>> = { quantization: null, lora: null, vision_encoder: null };

/** Parses Mistral's native `params.json` (keys as in mistral-inference's `ModelArgs`). */
export function parseNativeParams(json: unknown, file = 'params.json'): ModelConfig {
  const r = new Reader(file, asObject(file, json));
  r.onlyKnownKeys(NATIVE_HANDLED, NATIVE_IGNORED_KEYS, NATIVE_NEUTRAL);
  if (!r.has('rope_theta')) {
    r.fail('rope_theta', 'missing, and Mistral releases disagree on its default: mistral-inference assumes 1000000 ' +
      '(Mistral 7B v0.3, Mixtral), the 2023 reference code and the HF converter 10000 (Mistral 7B v0.1/v0.2); add it to params.json');
  }
  const hidden = r.int('dim');
  const heads = r.int('n_heads');
  const moe = r.json.moe;
  if (moe !== undefined && (typeof moe !== 'object' || moe === null)) r.fail('moe', `expected an object, got ${JSON.stringify(moe)}`);
  const moeReader = moe ? new Reader(file, moe as Json) : null;
  return finish(r, {
    arch: moe ? 'mixtral' : 'mistral',
    vocabSize: r.int('vocab_size'),
    hiddenSize: hidden,
    intermediateSize: r.int('hidden_dim'),
    numLayers: r.int('n_layers'),
    numHeads: heads,
    numKvHeads: r.int('n_kv_heads', heads),
    headDim: headDimOf(r, 'head_dim', hidden, heads),
    // Mistral's ModelArgs: a missing sliding_window means full attention.
    slidingWindow: r.intOrNull('sliding_window', null),
    ropeTheta: r.positive('rope_theta'),
    rmsNormEps: r.positive('norm_eps'),
    maxPositionEmbeddings: r.has('max_seq_len') ? r.int('max_seq_len') : null,
    tieWordEmbeddings: false,
    bosTokenId: 1,
    eosTokenIds: [2],
    numExperts: moeReader ? moeReader.int('num_experts') : null,
    numExpertsPerTok: moeReader ? moeReader.int('num_experts_per_tok') : null,
  });
}

/** The config of an opened checkpoint, whichever its layout: params.json (native) or config.json. */
export function parseConfig(ckpt: Pick<Checkpoint, 'layout' | 'configJson' | 'configFile'>): ModelConfig {
  return ckpt.layout === 'native'
    ? parseNativeParams(ckpt.configJson, ckpt.configFile)
    : parseHfConfig(ckpt.configJson, ckpt.configFile);
}

/** Number of parameters the config implies (embeddings and head counted separately). */
export function parameterCount(c: ModelConfig): number {
  const attn = c.hiddenSize * c.headDim * (2 * c.numHeads + 2 * c.numKvHeads);
  const mlp = 3 * c.hiddenSize * c.intermediateSize * (c.numExperts ?? 1) + (c.numExperts ?? 0) * c.hiddenSize;
  const perLayer = attn + mlp + 2 * c.hiddenSize;
  const embed = c.vocabSize * c.hiddenSize;
  return c.numLayers * perLayer + embed * (c.tieWordEmbeddings ? 1 : 2) + c.hiddenSize;
}
