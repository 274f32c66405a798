/**
 * The decoder layer of block.ts on the simd kernels, as one function over the residual
 * stream as a Float32Array: what the forward runs (transformer.ts) for a layer whose
 * projections are all stored ones and that no hook watches. Same steps, same float32
 * roundings as block.ts with its fused steps; what differs is where the data lives: no
 * tfjs op within or between such layers (for a hidden-512 decode step their bookkeeping
 * was a third of the time), q|k|v and gate|up each one product when their weights lie one
 * after the other (resident mode loads them so), and SwiGLU's gate in a wasm kernel.
 * Tested against the composite path (test/simd-block.test.ts).
 */
import * as tf from '@tensorflow/tfjs-core';
import { float32, rmsNormInto, ropeInPlace } from '../kernels/fused.js';
import type { Linear, StoredLinear } from '../kernels/linear.js';
import { feedForward, feedForwardFits, normThenProduct, productThenAdd } from '../kernels/simd/chain.js';
import { swigluKernel } from '../kernels/simd/elementwise.js';
import { concatenated, matmul, matmulConcat, type StoredMatrix } from '../kernels/simd/matmul.js';
import { fusedAttentionStep, fusedHeadsFit } from './attention.js';
import type { LayerCache } from './cache.js';
import type { ModelConfig } from './config.js';
import { NO_HOOKS } from './hooks.js';
import { mixtureOfExperts } from './moe.js';
import type { RopeTables } from './rope.js';
import type { LayerWeights } from './weights.js';

const stored = (l: Linear | undefined): l is StoredLinear => l?.kind === 'stored';

/** Whether simdBlockInPlace serves this layer: its projections are stored ones and the fused attention takes its heads. */
export function simdBlockFits(w: LayerWeights, cfg: ModelConfig): boolean {
  const { q, k, v, o } = w.attn;
  return fusedHeadsFit(cfg) && [q, k, v, o].every(stored) &&
    (w.mlp === undefined || [w.mlp.gate, w.mlp.up, w.mlp.down].every(stored));
}

/**
 * The layer's activations, reused from layer to layer and forward to forward: fresh arrays
 * of megabytes (a hidden-512 prefill of 512 tokens made 13 MB of them a layer) cost a page
 * fault per 4 KiB when first written, ~1 ms a megabyte on a VM, and the collector's work
 * after. An array here never outlives the call that asked for it (the forward is
 * synchronous), so one set serves every model; each keeps the size of the largest call.
 */
class Activations {
  private readonly arrays = new Map<string, Float32Array<ArrayBuffer>>();

  /** The array for `role`, of exactly n floats (its contents are whatever was there). */
  get(role: string, n: number): Float32Array<ArrayBuffer> {
    let a = this.arrays.get(role);
    if (a === undefined || a.length < n) this.arrays.set(role, (a = new Float32Array(n)));
    return a.subarray(0, n);
  }
}

const act = new Activations();

/** Norm weights as arrays, read once per tensor. */
const normData = new WeakMap<tf.Tensor, Float32Array>();

function normArray(t: tf.Tensor1D): Float32Array {
  let a = normData.get(t);
  if (a === undefined) normData.set(t, (a = float32(t).slice()));
  return a;
}

/**
 * Rows a last-rows layer (simdLastRows) computes: two, so that its products run the
 * matrix-matrix kernel, whose sums for a token are those of the whole prompt's product (one
 * token alone would go to the matrix-vector kernel, which sums in another order).
 */
export const LAST_ROWS = 2;

/** A layer's SwiGLU MLP as one feedForward chain (gate|up stored as one matrix, down beside it), or null. */
function mlpChain(w: LayerWeights): { gateUp: StoredMatrix; down: StoredMatrix } | null {
  if (w.mlp === undefined) return null;
  const { gate, up, down } = w.mlp as { gate: StoredLinear; up: StoredLinear; down: StoredLinear };
  const gateUp = concatenated([gate.matrix, up.matrix]);
  return gateUp !== null && feedForwardFits(gateUp, down.matrix) ? { gateUp, down: down.matrix } : null;
}

/** Whether simdLastRows serves this layer: simdBlockInPlace's, with k|v one product and the MLP one chain. */
export function simdLastRowsFits(w: LayerWeights, cfg: ModelConfig): boolean {
  if (!simdBlockFits(w, cfg)) return false;
  const { k, v } = w.attn as { k: StoredLinear; v: StoredLinear };
  return concatenated([k.matrix, v.matrix]) !== null && mlpChain(w) !== null;
}

/**
 * The last layer of a forward that needs its last token's logits only (a prefill): every
 * token's keys and values go into the cache, as in simdBlockInPlace, but the queries, the
 * attention, o_proj and the MLP run for the last LAST_ROWS tokens only, since the other
 * rows' outputs feed nothing. For hidden-512 (8 layers) that is an eighth of a prefill's
 * work. Those rows of `resid` then hold the layer's output, bit for bit what
 * simdBlockInPlace writes there (a row's products, norms and attention come out alike
 * however many rows come with it); the rows before them are left as they were.
 * @param resid [tokens, hidden], tokens ≥ LAST_ROWS
 */
export function simdLastRows(resid: Float32Array, T: number, w: LayerWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null): void {
  const { numHeads: NH, numKvHeads: KV, headDim: D, hiddenSize: H, rmsNormEps: eps } = cfg;
  const { q, k, v, o } = w.attn as { q: StoredLinear; k: StoredLinear; v: StoredLinear; o: StoredLinear };
  const mlp = mlpChain(w)!;
  const n = LAST_ROWS;
  const first = T - n;
  const norm = normArray(w.inputNorm);
  const kv = act.get('k|v', T * 2 * KV * D); // [tokens, 2·kvHeads·headDim]
  normThenProduct(resid, T, norm, eps, concatenated([k.matrix, v.matrix])!, kv,
    { cos: rope.cosData, sin: rope.sinData, heads: KV, headDim: D });
  const qs = act.get('q', n * NH * D); // [rows, heads, headDim]
  normThenProduct(resid.subarray(first * H), n, norm, eps, q.matrix, qs,
    { cos: rope.cosData.subarray(first * D), sin: rope.sinData.subarray(first * D), heads: NH, headDim: D });
  const ks = act.get('k', KV * T * D);
  const vs = act.get('v', KV * T * D);
  byKvHead(kv, T, 2 * KV * D, 0, KV, D, ks, vs);
  const z = fusedAttentionStep(qs, ks, vs, positions, cfg, cache, act.get('z', n * NH * D), n);
  const last = resid.subarray(first * H);
  productThenAdd(z, n, o.matrix, last);
  feedForward(last, n, normArray(w.postNorm), eps, mlp.gateUp, mlp.down);
}

/**
 * Keys and values out of rows of products into the cache's order: token t's kv head g key
 * at rows[t·stride + at + g·D], its value kvHeads heads later.
 * @param ks [kvHeads, tokens, headDim], written; vs likewise
 */
function byKvHead(rows: Float32Array, T: number, stride: number, at: number, KV: number, D: number, ks: Float32Array,
  vs: Float32Array): void {
  for (let t = 0; t < T; t++) {
    const row = t * stride + at;
    for (let g = 0; g < KV; g++) {
      ks.set(rows.subarray(row + g * D, row + (g + 1) * D), (g * T + t) * D);
      vs.set(rows.subarray(row + (KV + g) * D, row + (KV + g + 1) * D), (g * T + t) * D);
    }
  }
}

/**
 * mid = x + attention(rmsNorm(x)); out = mid + ffn(rmsNorm(mid)), as decoderBlock, on the
 * residual stream in place.
 * @param resid [tokens, hidden]
 */
export function simdBlockInPlace(resid: Float32Array, T: number, w: LayerWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null): void {
  const H = cfg.hiddenSize;
  const eps = cfg.rmsNormEps;
  attentionPart(resid, T, w, cfg, rope, positions, cache);
  const chain = mlpChain(w);
  if (chain !== null) {
    feedForward(resid, T, normArray(w.postNorm), eps, chain.gateUp, chain.down);
  } else if (w.mlp !== undefined) {
    const { gate, up, down } = w.mlp as { gate: StoredLinear; up: StoredLinear; down: StoredLinear };
    const I = gate.outFeatures;
    const normed = act.get('normed', T * H);
    rmsNormInto(resid, T, H, normArray(w.postNorm), eps, normed);
    const gu = matmulConcat(normed, T, [gate.matrix, up.matrix], act.get('gate|up', T * 2 * I)); // [tokens, 2·inter]
    const h = swigluKernel(gu, gu, T, I, 0, I, 2 * I, act.get('swiglu', T * I));
    addInto(resid, matmul(h, T, down.matrix, act.get('out', T * H)));
  } else {
    const normed = act.get('normed', T * H);
    rmsNormInto(resid, T, H, normArray(w.postNorm), eps, normed);
    const moe = tf.tidy(() => mixtureOfExperts(tf.tensor2d(normed, [T, H]), w.moe!, cfg.numExpertsPerTok!, NO_HOOKS));
    addInto(resid, float32(moe));
    moe.dispose();
  }
}

/**
 * The final norm and lm_head on the stream as an array (the forward's top, as
 * Transformer.finalNorm and unembed compute it, without a tensor between them).
 * @param resid [tokens, hidden]
 * @param lastOnly the last token's logits only
 * @returns logits [tokens or 1, vocab]
 */
export function simdHead(resid: Float32Array, T: number, norm: tf.Tensor1D, head: StoredLinear, cfg: ModelConfig,
  lastOnly: boolean): Float32Array {
  const H = cfg.hiddenSize;
  const rows = lastOnly ? 1 : T;
  const normed = act.get('normed', rows * H);
  rmsNormInto(resid.subarray((T - rows) * H), rows, H, normArray(norm), cfg.rmsNormEps, normed);
  return matmul(normed, rows, head.matrix);
}

/**
 * Whether every value is finite (x·0 is 0 for those, NaN for ±Inf and NaN). Four sums, so
 * the additions do not wait on one another (a prefill checks a layer's whole stream).
 */
export function allFiniteArray(x: Float32Array): boolean {
  let a = 0, b = 0, c = 0, d = 0;
  const n4 = x.length & ~3;
  for (let i = 0; i < n4; i += 4) {
    a += x[i]! * 0;
    b += x[i + 1]! * 0;
    c += x[i + 2]! * 0;
    d += x[i + 3]! * 0;
  }
  for (let i = n4; i < x.length; i++) a += x[i]! * 0;
  return a + b + c + d === 0;
}

/**
 * resid += o_proj(attention(rmsNorm(resid))): q|k|v and RoPE on q and k, the cache update
 * and the fused attention, o_proj and the residual add.
 * @param resid [tokens, hidden]
 */
function attentionPart(resid: Float32Array, T: number, w: LayerWeights, cfg: ModelConfig, rope: RopeTables,
  positions: readonly number[], cache: LayerCache | null): void {
  const { numHeads: NH, numKvHeads: KV, headDim: D, hiddenSize: H } = cfg;
  const { q, k, v, o } = w.attn as { q: StoredLinear; k: StoredLinear; v: StoredLinear; o: StoredLinear };
  const stride = (NH + 2 * KV) * D;
  const qkv = act.get('qkv', T * stride); // [tokens, (heads + 2·kvHeads)·headDim]
  const qkvWeights = concatenated([q.matrix, k.matrix, v.matrix]);
  const norm = normArray(w.inputNorm);
  if (qkvWeights !== null) {
    // RoPE on q's heads and k's, which lie side by side at the start of each row
    normThenProduct(resid, T, norm, cfg.rmsNormEps, qkvWeights, qkv,
      { cos: rope.cosData, sin: rope.sinData, heads: NH + KV, headDim: D });
  } else {
    const normed = act.get('normed', T * H);
    rmsNormInto(resid, T, H, norm, cfg.rmsNormEps, normed);
    matmulConcat(normed, T, [q.matrix, k.matrix, v.matrix], qkv);
    ropeInPlace(qkv, T, NH, D, rope.cosData, rope.sinData, stride, 0);
    ropeInPlace(qkv, T, KV, D, rope.cosData, rope.sinData, stride, NH * D);
  }
  const qs = act.get('q', T * NH * D); // [tokens, heads, headDim]
  const ks = act.get('k', KV * T * D); // [kvHeads, tokens, headDim]: the cache's order
  const vs = act.get('v', KV * T * D);
  for (let t = 0; t < T; t++) qs.set(qkv.subarray(t * stride, t * stride + NH * D), t * NH * D);
  byKvHead(qkv, T, stride, NH * D, KV, D, ks, vs);
  const z = fusedAttentionStep(qs, ks, vs, positions, cfg, cache, act.get('z', T * NH * D));
  productThenAdd(z, T, o.matrix, resid);
}

/** resid += d, rounded to float32 as tf.add rounds. */
function addInto(resid: Float32Array, d: Float32Array): void {
  for (let i = 0; i < resid.length; i++) resid[i] = resid[i]! + d[i]!;
}
