/**
 * Weights in one convention, whatever the backend or the storage: TransformerLens's shapes,
 * read from the checkpoint (HF row order, native q/k rows un-permuted), as float32.
 *
 *   weightMatrix(model, 'W_O', 2)       // [heads, headDim, hidden]: head h writes z_h · W_O[h]
 *   weightMatrix(model, 'W_in', 0, 3)   // Mixtral: expert 3's up projection, [hidden, inter]
 *
 * Inside the model a projection may be `[out, in]` (cpu), `[in, out]` (wasm) or bytes in
 * kernel memory (simd); none of that shows here. Every matrix multiplies from the right:
 * x [tokens, hidden] · W_in [hidden, inter], z_h [tokens, headDim] · W_O[h] [headDim, hidden].
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../model/errors.js';
import { tensorSource } from '../model/layout.js';
import type { Transformer } from '../model/transformer.js';

export const WEIGHT_NAMES = ['W_E', 'W_Q', 'W_K', 'W_V', 'W_O', 'W_gate', 'W_in', 'W_out', 'W_router', 'W_U'] as const;
export type WeightName = (typeof WEIGHT_NAMES)[number];

/**
 * A weight as a new float32 tensor (the caller disposes it):
 *
 * | name | shape | from |
 * |---|---|---|
 * | W_E | [vocab, hidden] | embed_tokens |
 * | W_Q | [heads, hidden, headDim] | q_proj |
 * | W_K, W_V | [kvHeads, hidden, headDim] | k_proj, v_proj |
 * | W_O | [heads, headDim, hidden] | o_proj |
 * | W_gate, W_in | [hidden, inter] | gate_proj (w1), up_proj (w3) |
 * | W_out | [inter, hidden] | down_proj (w2) |
 * | W_router | [hidden, experts] | Mixtral's block_sparse_moe.gate |
 * | W_U | [hidden, vocab] | lm_head (embed_tokens when tied) |
 *
 * @param layer for every weight but W_E and W_U
 * @param expert Mixtral, for W_gate, W_in and W_out
 */
export function weightMatrix(model: Transformer, name: WeightName, layer?: number, expert?: number): tf.Tensor {
  const c = model.config;
  if (!(WEIGHT_NAMES as readonly string[]).includes(name)) {
    throw new InputError(`unknown weight ${JSON.stringify(name)} (expected one of ${WEIGHT_NAMES.join(', ')})`);
  }
  const global = name === 'W_E' || name === 'W_U';
  if (global && layer !== undefined) throw new InputError(`${name} belongs to no layer, got layer ${layer}`);
  if (!global && (layer === undefined || !Number.isInteger(layer) || layer < 0 || layer >= c.numLayers)) {
    throw new InputError(`${name} needs a layer in [0, ${c.numLayers}), got ${layer}`);
  }
  const ffn = name === 'W_gate' || name === 'W_in' || name === 'W_out';
  const moe = c.numExperts !== null;
  if (name === 'W_router' && !moe) throw new InputError('W_router exists only in Mixtral (mixture-of-experts) models');
  if (ffn && moe && (expert === undefined || !Number.isInteger(expert) || expert < 0 || expert >= c.numExperts!)) {
    throw new InputError(`${name} of a Mixtral layer needs an expert in [0, ${c.numExperts}), got ${expert}`);
  }
  if (expert !== undefined && !(ffn && moe)) throw new InputError(`${name} has no experts${moe ? '' : ' (a dense model)'}, got expert ${expert}`);

  const src = tensorSource(model.checkpoint, c);
  const p = `model.layers.${layer}.`;
  const ffnPrefix = moe ? `${p}block_sparse_moe.experts.${expert}.` : `${p}mlp.`;
  const ffnName = (hf: string, native: string) => ffnPrefix + (moe ? native : hf) + '.weight';
  /** The checkpoint's [out, in] matrix as a tensor. */
  const read = (hf: string): tf.Tensor2D => tf.tensor2d(src.read(hf), src.shape(hf) as [number, number]);
  const { numHeads: H, numKvHeads: KV, headDim: D, hiddenSize: hidden } = c;
  return tf.tidy(() => {
    switch (name) {
      case 'W_E': return read('model.embed_tokens.weight');
      case 'W_U': return tf.transpose(read(c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight'));
      // [heads·headDim, hidden] → [heads, headDim, hidden] → [heads, hidden, headDim]
      case 'W_Q': return tf.transpose(tf.reshape(read(p + 'self_attn.q_proj.weight'), [H, D, hidden]), [0, 2, 1]);
      case 'W_K': return tf.transpose(tf.reshape(read(p + 'self_attn.k_proj.weight'), [KV, D, hidden]), [0, 2, 1]);
      case 'W_V': return tf.transpose(tf.reshape(read(p + 'self_attn.v_proj.weight'), [KV, D, hidden]), [0, 2, 1]);
      // [hidden, heads·headDim] → [heads·headDim, hidden] → [heads, headDim, hidden]
      case 'W_O': return tf.reshape(tf.transpose(read(p + 'self_attn.o_proj.weight')), [H, D, hidden]);
      case 'W_gate': return tf.transpose(read(ffnName('gate_proj', 'w1')));
      case 'W_in': return tf.transpose(read(ffnName('up_proj', 'w3')));
      case 'W_out': return tf.transpose(read(ffnName('down_proj', 'w2')));
      case 'W_router': return tf.transpose(read(p + 'block_sparse_moe.gate.weight'));
    }
  });
}

/**
 * Rows of the unembedding for `ids`: [ids, hidden], i.e. columns of W_U, read alone (a 7B
 * model's W_U is 500 MB; a logit difference needs two of its 32000 columns).
 */
export function unembedRows(model: Transformer, ids: readonly number[]): tf.Tensor2D {
  const c = model.config;
  ids.forEach((id) => {
    if (!Number.isInteger(id) || id < 0 || id >= c.vocabSize) throw new InputError(`token id ${id} is outside the vocabulary [0, ${c.vocabSize})`);
  });
  const src = tensorSource(model.checkpoint, c);
  const name = c.tieWordEmbeddings ? 'model.embed_tokens.weight' : 'lm_head.weight';
  const rows = new Float32Array(ids.length * c.hiddenSize);
  ids.forEach((id, i) => rows.set(src.read(name, id * c.hiddenSize, c.hiddenSize), i * c.hiddenSize));
  return tf.tensor2d(rows, [ids.length, c.hiddenSize]);
}
