/**
 * Parity against a reference file: run every prompt, compare every tensor the reference
 * has, and report max |Δ| per tensor kind with a pass/fail under
 *
 *   |Δ| ≤ atol + rtol · max|ref|      (per tensor; docs/parity.md)
 *
 * Generated ids and Mixtral expert choices must match exactly: the references were drawn
 * with a margin ≥ 2e-3 on every choice, so a flip is a real difference.
 */
import * as tf from '@tensorflow/tfjs-core';
import { generateSync } from '../generate/index.js';
import { CheckpointError } from '../io/errors.js';
import { Reference, type RefTensor } from '../io/reference.js';
import { routeToken } from '../model/moe.js';
import { disposeResult, type Transformer } from '../model/transformer.js';
import { runWithCache } from './activations.js';
import { routingFromCache, routingHookNames } from './routing.js';

export interface ParityOptions {
  readonly atol?: number;
  readonly rtol?: number;
  /** Called once per prompt, for progress. */
  readonly onPrompt?: (name: string, index: number, total: number) => void;
}

export interface PromptParity {
  readonly name: string;
  readonly length: number;
  readonly max_abs_diff: Record<string, number>;
  readonly generated_ids_equal?: boolean;
  readonly expert_choices_equal?: boolean;
}

export interface ParityReport {
  readonly pass: boolean;
  readonly model: string;
  readonly reference: string;
  readonly backend: string;
  readonly atol: number;
  readonly rtol: number;
  /** Tensor kinds compared (plus the exact checks generated_ids, expert_choices). */
  readonly checked: string[];
  /** Kind → max |Δ| over all prompts (and layers). */
  readonly max_abs_diff: Record<string, number>;
  /** Kind → the largest allowed |Δ| among the compared tensors. */
  readonly tolerance: Record<string, number>;
  /** Kinds whose tolerance was exceeded, and exact checks that failed. */
  readonly failures: string[];
  /** max |Δ| of each layer's output (over prompts). */
  readonly per_layer: number[];
  /** First layer whose output is beyond tolerance, or null. */
  readonly first_divergent_layer: number | null;
  readonly prompts: PromptParity[];
}

/** Layer-0 debug tensors of the reference ↔ hook points (reshaped to the reference's layout). */
const DEBUG_HOOKS: Record<string, string> = {
  attn_norm: 'blocks.0.ln1.hook_normalized',
  q: 'blocks.0.attn.hook_q',
  k: 'blocks.0.attn.hook_k',
  v: 'blocks.0.attn.hook_v',
  q_rope: 'blocks.0.attn.hook_rot_q',
  k_rope: 'blocks.0.attn.hook_rot_k',
  attn_probs: 'blocks.0.attn.hook_pattern',
  attn_out: 'blocks.0.attn.hook_z',
  attn_residual: 'blocks.0.hook_resid_mid',
  ffn_norm: 'blocks.0.ln2.hook_normalized',
  ffn_out: 'blocks.0.hook_mlp_out',
};

/** Our hook tensor in the reference's layout: [tokens, heads·headDim] or [heads, tokens, headDim]. */
function debugLayout(kind: string, t: tf.Tensor): tf.Tensor {
  if (kind === 'q_rope' || kind === 'k_rope') return tf.transpose(t, [1, 0, 2]);
  if (t.rank === 3 && kind !== 'attn_probs') return tf.reshape(t, [t.shape[0]!, -1]);
  return t;
}

export function maxAbsDiff(ours: ArrayLike<number>, ref: ArrayLike<number>): number {
  if (ours.length !== ref.length) return Infinity;
  let m = 0;
  for (let i = 0; i < ref.length; i++) {
    const d = Math.abs(ours[i]! - ref[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

function maxAbs(a: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]!));
  return m;
}

function sameShape(a: readonly number[], b: readonly number[]): boolean {
  return a.length === b.length && a.every((d, i) => d === b[i]);
}

/**
 * Greedy decoding as transformers' generate() made the references: the whole prompt in one
 * prefill, then one token at a time, no EOS stop. Runs the same generator users call.
 */
export function greedySteps(model: Transformer, prompt: readonly number[], steps: number): { ids: number[]; logits: Float32Array } {
  const tokens = generateSync(model, prompt, { maxNewTokens: steps, stopAtEos: false, returnLogits: true, prefillChunk: Infinity });
  const vocab = model.config.vocabSize;
  const logits = new Float32Array(tokens.length * vocab);
  tokens.forEach((t, s) => logits.set(t.logits!, s * vocab));
  return { ids: tokens.map((t) => t.id), logits };
}

/**
 * A reference made for another model is bad input, not a parity failure: compare the sizes
 * its `config` records (when it has one) with the model's.
 */
function checkSameShape(model: Transformer, ref: Reference): void {
  const rc = ref.json.config as Record<string, unknown> | undefined;
  if (rc === undefined || typeof rc !== 'object') return;
  const c = model.config;
  const pairs: Array<[string, unknown, number]> = [
    ['vocab_size', rc.vocab_size, c.vocabSize],
    ['hidden_size', rc.hidden_size, c.hiddenSize],
    ['num_hidden_layers', rc.num_hidden_layers, c.numLayers],
  ];
  const off = pairs.filter(([, want, got]) => want !== undefined && want !== got);
  if (off.length > 0) {
    throw new CheckpointError(ref.file, `reference is for another model: ${off.map(([k, want, got]) => `${k} ${String(want)} in the reference, ${got} in ${model.checkpoint.dir}`).join('; ')}`);
  }
}

/** Compares `model` with every prompt of `ref`. */
export function checkParity(model: Transformer, ref: Reference, opts: ParityOptions = {}): ParityReport {
  checkSameShape(model, ref);
  const atol = opts.atol ?? 5e-5;
  const rtol = opts.rtol ?? 1e-6;
  const maxDiff: Record<string, number> = {};
  const tolerance: Record<string, number> = {};
  const failures = new Set<string>();
  const perLayer: number[] = new Array<number>(model.config.numLayers).fill(0);
  let firstDivergent: number | null = null;
  const prompts: PromptParity[] = [];

  /** Records max |Δ| of one tensor under `kind`; returns its max |Δ| and whether it is within tolerance. */
  const compare = (kind: string, ours: ArrayLike<number>, oursShape: readonly number[], expected: RefTensor,
    into: Record<string, number>): { d: number; ok: boolean } => {
    // A reference of another shape is bad input, not a max |Δ| of Infinity.
    if (!sameShape(oursShape, expected.shape)) {
      throw new CheckpointError(expected.file, `reference tensor has shape [${expected.shape.join(', ')}], ` +
        `the model's ${kind} for these input_ids has shape [${oursShape.join(', ')}]`, expected.name);
    }
    const d = maxAbsDiff(ours, expected.data);
    const tol = atol + rtol * maxAbs(expected.data);
    maxDiff[kind] = Math.max(maxDiff[kind] ?? 0, d);
    into[kind] = Math.max(into[kind] ?? 0, d);
    tolerance[kind] = Math.max(tolerance[kind] ?? 0, tol);
    const ok = d <= tol;
    if (!ok) failures.add(kind);
    return { d, ok };
  };

  ref.prompts.forEach((p, index) => {
    opts.onPrompt?.(p.name, index, ref.prompts.length);
    const diffs: Record<string, number> = {};
    const t = p.tensors;
    const debugNames = Object.keys(t.debug_layer0 ?? {}).filter((k) => DEBUG_HOOKS[k] !== undefined);
    const L = model.config.numLayers;
    const moe = model.config.numExperts !== null;
    const { result, cache } = runWithCache(model, p.input_ids, {
      names: [...debugNames.map((k) => DEBUG_HOOKS[k]!), 'hook_embed', 'ln_final.hook_normalized',
        ...Array.from({ length: L }, (_, l) => `blocks.${l}.hook_resid_post`), ...(moe ? routingHookNames(model.config) : [])],
    });
    try {
      const ours = (name: string) => cache.get(name);
      compare('logits', result.logits.dataSync(), result.logits.shape, ref.tensor(t.logits), diffs);
      if (t.embeddings) compare('embeddings', ours('hook_embed').dataSync(), ours('hook_embed').shape, ref.tensor(t.embeddings), diffs);
      (t.layer_out ?? []).forEach((name, l) => {
        const out = l < L ? ours(`blocks.${l}.hook_resid_post`) : undefined;
        const expected = ref.tensor(name);
        const { d, ok } = out === undefined ? { d: Infinity, ok: false } : compare('layer_out', out.dataSync(), out.shape, expected, diffs);
        perLayer[l] = Math.max(perLayer[l] ?? 0, d);
        if (!ok) {
          failures.add('layer_out');
          if (firstDivergent === null || l < firstDivergent) firstDivergent = l;
        }
      });
      if (t.final_norm) compare('final_norm', ours('ln_final.hook_normalized').dataSync(), ours('ln_final.hook_normalized').shape, ref.tensor(t.final_norm), diffs);
      for (const kind of debugNames) {
        const debug = tf.tidy(() => debugLayout(kind, cache.get(DEBUG_HOOKS[kind]!)));
        compare(`debug.layer0.${kind}`, debug.dataSync(), debug.shape, ref.tensor(t.debug_layer0![kind]!), diffs);
        debug.dispose();
      }
      let expertsEqual: boolean | undefined;
      if (t.router_logits) {
        const routing = moe ? routingFromCache(cache, model.config) : [];
        expertsEqual = routing.length === t.router_logits.length;
        t.router_logits.forEach((name, l) => {
          const r = routing[l];
          const expected = ref.tensor(name);
          if (r === undefined) { failures.add('router_logits'); return; }
          compare('router_logits', r.logits, [p.input_ids.length, r.numExperts], expected, diffs);
          for (let tok = 0; tok < p.input_ids.length; tok++) {
            const want = routeToken(expected.data.subarray(tok * r.numExperts, (tok + 1) * r.numExperts), r.k).experts;
            const got = Array.from(r.experts.subarray(tok * r.k, (tok + 1) * r.k));
            if (want.some((e, i) => e !== got[i])) expertsEqual = false;
          }
        });
        if (!expertsEqual) failures.add('expert_choices');
      }
      let idsEqual: boolean | undefined;
      if (p.greedy) {
        const g = greedySteps(model, p.input_ids, p.greedy.generated_ids.length);
        compare('step_logits', g.logits, [g.ids.length, model.config.vocabSize], ref.tensor(p.greedy.step_logits), diffs);
        idsEqual = g.ids.length === p.greedy.generated_ids.length && g.ids.every((id, i) => id === p.greedy!.generated_ids[i]);
        if (!idsEqual) failures.add('generated_ids');
      }
      prompts.push({
        name: p.name,
        length: p.input_ids.length,
        max_abs_diff: diffs,
        ...(idsEqual === undefined ? {} : { generated_ids_equal: idsEqual }),
        ...(expertsEqual === undefined ? {} : { expert_choices_equal: expertsEqual }),
      });
    } finally {
      disposeResult(result);
      cache.dispose();
    }
  });

  const checked = Object.keys(maxDiff);
  if (prompts.some((p) => p.generated_ids_equal !== undefined)) checked.push('generated_ids');
  if (prompts.some((p) => p.expert_choices_equal !== undefined)) checked.push('expert_choices');
  return {
    pass: failures.size === 0,
    model: model.checkpoint.dir,
    reference: ref.file,
    backend: tf.getBackend(),
    atol,
    rtol,
    checked,
    max_abs_diff: maxDiff,
    tolerance,
    failures: [...failures],
    per_layer: perLayer,
    first_divergent_layer: firstDivergent,
    prompts,
  };
}
