/**
 * The tensors a config implies, by canonical (Hugging Face) name and shape, and the
 * diagnostics that hold a checkpoint against them.
 *
 * `tensorProblems` lists every disagreement (for `inspect`); `validateTensors` throws the
 * first one before a byte of weights is read. Both read headers only, and both compare
 * layer and expert counts first, so a config claiming 10^9 layers costs nothing.
 */
import type { Checkpoint } from '../io/checkpoint.js';
import { FLOAT_DTYPES, isFloatDType } from '../io/safetensors.js';
import type { ModelConfig } from './config.js';
import { WeightError } from './errors.js';
import { nativeName, type TensorSource } from './layout.js';

/** Every canonical tensor name the config implies, with its expected shape. */
export function expectedTensors(c: ModelConfig): Map<string, number[]> {
  const m = new Map<string, number[]>();
  const H = c.hiddenSize;
  m.set('model.embed_tokens.weight', [c.vocabSize, H]);
  for (let l = 0; l < c.numLayers; l++) {
    const p = `model.layers.${l}.`;
    m.set(p + 'input_layernorm.weight', [H]);
    m.set(p + 'post_attention_layernorm.weight', [H]);
    m.set(p + 'self_attn.q_proj.weight', [c.numHeads * c.headDim, H]);
    m.set(p + 'self_attn.k_proj.weight', [c.numKvHeads * c.headDim, H]);
    m.set(p + 'self_attn.v_proj.weight', [c.numKvHeads * c.headDim, H]);
    m.set(p + 'self_attn.o_proj.weight', [H, c.numHeads * c.headDim]);
    if (c.numExperts === null) {
      m.set(p + 'mlp.gate_proj.weight', [c.intermediateSize, H]);
      m.set(p + 'mlp.up_proj.weight', [c.intermediateSize, H]);
      m.set(p + 'mlp.down_proj.weight', [H, c.intermediateSize]);
    } else {
      m.set(p + 'block_sparse_moe.gate.weight', [c.numExperts, H]);
      for (let e = 0; e < c.numExperts; e++) {
        m.set(p + `block_sparse_moe.experts.${e}.w1.weight`, [c.intermediateSize, H]);
        m.set(p + `block_sparse_moe.experts.${e}.w3.weight`, [c.intermediateSize, H]);
        m.set(p + `block_sparse_moe.experts.${e}.w2.weight`, [H, c.intermediateSize]);
      }
    }
  }
  m.set('model.norm.weight', [H]);
  if (!c.tieWordEmbeddings) m.set('lm_head.weight', [c.vocabSize, H]);
  return m;
}

/** One way a checkpoint's tensors disagree with its config. */
export interface TensorProblem {
  readonly kind: 'missing' | 'shape' | 'dtype' | 'extra';
  /** Name as stored in the checkpoint. */
  readonly tensor: string;
  /** The file that holds it (all files of the store for a missing one). */
  readonly file: string;
  readonly message: string;
}

/**
 * Every disagreement between the tensors and the config, in checkpoint order: missing
 * tensors, wrong shapes, dtypes that cannot become float32, and tensors the model never
 * reads (`extra`; harmless, reported by `inspect` only). Reads headers only.
 */
export function tensorProblems(ckpt: Checkpoint, c: ModelConfig): TensorProblem[] {
  const problems: TensorProblem[] = [];
  const store = ckpt.store;
  const stored = (name: string) => (ckpt.layout === 'native' ? nativeName(name) : name);
  const all = store.files.join(', ');

  // A config may claim 10^9 layers or experts: compare counts first, so the work below
  // stays bounded by what the files hold, not by what the config says.
  const names = store.names();
  const layers = distinct(names, /^(?:model\.)?layers\.(\d+)\./);
  const experts = distinct(names, /\.experts\.(\d+)\./);
  let checked = c;
  if (c.numLayers > layers) {
    problems.push({ kind: 'missing', tensor: stored(`model.layers.${layers}`) + (c.numLayers - 1 > layers ? `…${c.numLayers - 1}` : ''), file: all,
      message: `config says ${c.numLayers} layers, the files hold ${layers}` });
    checked = { ...checked, numLayers: layers };
  }
  if (c.numExperts !== null && c.numExperts > experts) {
    problems.push({ kind: 'missing', tensor: `experts.${experts}` + (c.numExperts - 1 > experts ? `…${c.numExperts - 1}` : ''), file: all,
      message: `config says ${c.numExperts} experts per layer, the files hold ${experts}` });
    checked = { ...checked, numExperts: experts };
  }

  const wanted = new Set<string>();
  for (const [name, want] of expectedTensors(checked)) {
    const key = stored(name);
    wanted.add(key);
    if (!store.has(key)) {
      problems.push({ kind: 'missing', tensor: key, file: all, message: `missing tensor (expected shape [${want}] from ${ckpt.configFile})` });
      continue;
    }
    const info = store.info(key);
    const got = info.shape;
    if (got.length !== want.length || got.some((d, i) => d !== want[i])) {
      problems.push({ kind: 'shape', tensor: key, file: info.file, message: `shape [${got}] does not fit the config: expected [${want}]` });
    } else if (!isFloatDType(info.dtype)) {
      problems.push({ kind: 'dtype', tensor: key, file: info.file, message: `dtype ${info.dtype} cannot be read as float32 (supported: ${FLOAT_DTYPES.join(', ')})` });
    }
  }
  for (const key of names) {
    if (!wanted.has(key)) {
      problems.push({ kind: 'extra', tensor: key, file: store.info(key).file, message: 'tensor not used by this config' });
    }
  }
  return problems;
}

/** Number of distinct values of the first group of `re` over `names`. */
function distinct(names: readonly string[], re: RegExp): number {
  const seen = new Set<string>();
  for (const n of names) {
    const m = re.exec(n);
    if (m) seen.add(m[1]!);
  }
  return seen.size;
}

/**
 * Extra tensors known to be derived, not learned: old transformers checkpoints store each
 * layer's RoPE frequencies (`rotary_emb.inv_freq`), which we compute from rope_theta.
 */
const DERIVED_TENSOR = /(^|\.)rotary_emb\.inv_freq$/;

/**
 * Checks presence, shape and dtype of every tensor before a byte of weights is read;
 * throws a WeightError for the first problem. A tensor the config does not use is one
 * too (a checkpoint of another architecture, or a config that says fewer layers or
 * experts than the files hold), except derived ones (DERIVED_TENSOR).
 */
export function validateTensors(ckpt: Checkpoint, c: ModelConfig, _src?: TensorSource): void {
  const p = tensorProblems(ckpt, c).find((x) => x.kind !== 'extra' || !DERIVED_TENSOR.test(x.tensor));
  if (p !== undefined) {
    throw new WeightError(p.file, p.kind === 'extra' ? `${p.message}: a different architecture, or a config that does not describe these files?` : p.message, p.tensor);
  }
}
