/**
 * Activation patching sweeps (Meng et al. 2022; Wang et al. 2022): run the corrupted prompt
 * with one piece of one activation taken from the clean run, for every layer and every
 * position, head, or head × position, and see how much of the clean answer comes back.
 *
 *   const r = patchSweep(model, cleanIds, corruptIds, logitDiffMetric(answer, wrong), { hook: 'resid_pre', by: 'position' });
 *   r.grid[layer][position];   // 1 = patching restores the clean metric, 0 = no effect
 *   fs.writeFileSync('sweep.svg', sweepPicture(r));
 *
 * Each layer's patches run as one batched forward of the corrupted prompt, one row per patch.
 */
import * as tf from '@tensorflow/tfjs-core';
import { InputError } from '../model/errors.js';
import { HookError, type HookFn } from '../model/hooks.js';
import type { Transformer } from '../model/transformer.js';
import { disposeResult, runWithCache } from './activations.js';
import { headAxis, tokenAxis } from './patching.js';
import { heatmapSvg, type Panel } from './svg.js';

export const SWEEP_HOOKS = ['resid_pre', 'attn_out', 'mlp_out', 'z'] as const;
export type SweepHook = (typeof SWEEP_HOOKS)[number];
export const SWEEP_BY = ['position', 'head', 'head_position'] as const;
export type SweepBy = (typeof SWEEP_BY)[number];

/**
 * A scalar from a forward's logits, [tokens, vocab] (e.g. a logit difference), written
 * with tfjs ops so that attribution patching can differentiate it.
 */
export type Metric = (logits: tf.Tensor2D) => tf.Scalar;

/** logit(answer) − logit(wrong) at `position` (default the last). */
export function logitDiffMetric(answer: number, wrong: number, position?: number): Metric {
  return (logits) => tf.tidy(() => {
    const row = tf.gather(logits, position ?? logits.shape[0] - 1); // [vocab]
    return tf.sub(tf.gather(row, answer), tf.gather(row, wrong)) as tf.Scalar;
  });
}

/** The metric's value as a number (its tensors freed). */
export function metricValue(metric: Metric, logits: tf.Tensor2D): number {
  return tf.tidy(() => metric(logits).dataSync()[0]!);
}

export interface SweepResult {
  readonly hook: SweepHook;
  readonly by: SweepBy;
  /** The metric of the clean and of the corrupted run. */
  readonly clean: number;
  readonly corrupt: number;
  /** (patched − corrupt) / (clean − corrupt): grid[layer][position], [layer][head] or [layer][head][position]. */
  readonly grid: number[][] | number[][][];
  /** The patched metrics themselves, same layout. */
  readonly raw: number[][] | number[][][];
}

/** The hook name of a sweep hook in layer l. */
export function sweepHookName(hook: SweepHook, l: number): string {
  return hook === 'z' ? `blocks.${l}.attn.hook_z` : `blocks.${l}.hook_${hook}`;
}

/**
 * Patches every layer's `hook` activation from `clean` into `corrupt` (equal lengths), one
 * piece at a time, and returns the metric grid, raw and normalised.
 */
export function patchSweep(model: Transformer, clean: readonly number[], corrupt: readonly number[], metric: Metric,
  opts: { hook: SweepHook; by: SweepBy }): SweepResult {
  const { hook, by } = opts;
  checkSweep(clean, corrupt, hook, by);
  const c = model.config;
  const T = clean.length;
  const names = Array.from({ length: c.numLayers }, (_, l) => sweepHookName(hook, l));
  const cleanRun = runWithCache(model, clean, { names });
  try {
    const cleanMetric = metricValue(metric, cleanRun.result.logits);
    const corruptRun = model.forward(corrupt);
    const corruptMetric = metricValue(metric, corruptRun.logits);
    disposeResult(corruptRun);
    const pieces = sweepPieces(by, c.numHeads, T);
    const raw = names.map((name) => {
      const value = cleanRun.cache.get(name);
      const patch: HookFn = (t, n, ctx) => patchPiece(t, value, n, pieces[ctx.batch!]!);
      const batch = model.forward(pieces.map(() => corrupt as number[]), { hooks: new Map([[name, patch]]) });
      try {
        return tf.unstack(batch.logits).map((row) => {
          try {
            return metricValue(metric, row as tf.Tensor2D);
          } finally {
            row.dispose();
          }
        });
      } finally {
        batch.logits.dispose();
      }
    });
    return sweepResult(hook, by, cleanMetric, corruptMetric, raw, c.numHeads, T, corruptMetric);
  } finally {
    cleanRun.cache.dispose();
    disposeResult(cleanRun.result);
  }
}

/** Throws InputError unless the sweep makes sense. */
export function checkSweep(clean: readonly number[], corrupt: readonly number[], hook: SweepHook, by: SweepBy): void {
  if (!SWEEP_HOOKS.includes(hook)) throw new InputError(`sweep hook must be one of ${SWEEP_HOOKS.join(', ')}, got ${JSON.stringify(hook)}`);
  if (!SWEEP_BY.includes(by)) throw new InputError(`sweep by must be one of ${SWEEP_BY.join(', ')}, got ${JSON.stringify(by)}`);
  if (by !== 'position' && hook !== 'z') throw new InputError(`a sweep by ${by} needs a hook with heads (z), got ${hook}`);
  if (clean.length !== corrupt.length) {
    throw new InputError(`clean and corrupted prompts must have equal lengths, got ${clean.length} and ${corrupt.length} tokens`);
  }
}

/** One patch: heads and/or positions (null: every index of that axis). */
export interface Piece {
  readonly heads: number[] | null;
  readonly positions: number[] | null;
}

/** The pieces of one layer, in grid order: by position, by head, or head-major head × position. */
export function sweepPieces(by: SweepBy, heads: number, T: number): Piece[] {
  return by === 'position' ? Array.from({ length: T }, (_, p) => ({ heads: null, positions: [p] }))
    : by === 'head' ? Array.from({ length: heads }, (_, h) => ({ heads: [h], positions: null }))
      : Array.from({ length: heads * T }, (_, i) => ({ heads: [Math.floor(i / T)], positions: [i % T] }));
}

/**
 * Shapes per-layer rows of piece values into a SweepResult; `zero` is the value that means
 * "no effect" (the corrupted metric for a sweep, 0 for estimated differences).
 */
export function sweepResult(hook: SweepHook, by: SweepBy, clean: number, corrupt: number, raw: number[][],
  heads: number, T: number, zero: number): SweepResult {
  const span = clean - corrupt;
  const norm = (x: number) => (x === zero ? 0 : (x - zero) / span); // no -0 when span < 0
  const shape = (row: number[]) => (by === 'head_position' ? Array.from({ length: heads }, (_, h) => row.slice(h * T, (h + 1) * T)) : row);
  return {
    hook, by, clean, corrupt,
    raw: raw.map(shape) as number[][] | number[][][],
    grid: raw.map((row) => shape(row.map(norm))) as number[][] | number[][][],
  };
}

/** True on the piece's heads and/or positions of a `name`-shaped activation (broadcastable bool). */
export function pieceMask(shape: readonly number[], name: string, piece: Piece): tf.Tensor {
  return tf.tidy(() => {
    const mask = (axis: number, on: number[]) => {
      const m = new Uint8Array(shape[axis]!);
      for (const i of on) m[i] = 1;
      return tf.tensor(m, shape.map((d, a) => (a === axis ? d : 1)), 'bool');
    };
    const parts = [
      ...(piece.positions ? [mask(tokenAxis(name), piece.positions)] : []),
      ...(piece.heads ? [mask(headAxis(name), piece.heads)] : []),
    ];
    return parts.reduce((a, b) => tf.logicalAnd(a, b));
  });
}

/** `t` with the piece taken from `value`. */
export function patchPiece(t: tf.Tensor, value: tf.Tensor, name: string, piece: Piece): tf.Tensor {
  if (value.shape.some((d, i) => d !== t.shape[i])) throw new HookError(`patch for ${name} has shape [${value.shape}], the activation has [${t.shape}]`);
  return tf.tidy(() => tf.where(pieceMask(t.shape, name, piece), value, t));
}

/**
 * Mean ablation: a hook that replaces an activation with its mean over the tokens of
 * `prompts` (a reference distribution), for every token, or only for some heads of a
 * head-shaped hook. The mean is computed now; the HookFn holds it until `dispose()`.
 */
export function meanAblate(model: Transformer, prompts: readonly (readonly number[])[], name: string,
  opts: { heads?: readonly number[] } = {}): HookFn & { dispose(): void } {
  if (prompts.length === 0) throw new InputError('meanAblate needs at least one prompt to average over');
  const axis = tokenAxis(name);
  const sums = prompts.map((ids) => {
    const { result, cache } = runWithCache(model, ids, { names: [name] });
    disposeResult(result);
    const s = tf.tidy(() => tf.sum(cache.get(name), axis, true));
    cache.dispose();
    return s;
  });
  const count = prompts.reduce((a, p) => a + p.length, 0);
  const mean = tf.tidy(() => tf.div(tf.addN(sums), count)); // the activation's shape with T = 1
  tf.dispose(sums);
  const heads = opts.heads;
  const fn: HookFn = (t, n) => tf.tidy(() => {
    const full = tf.broadcastTo(mean, t.shape);
    if (heads === undefined) return full;
    const hAxis = headAxis(n);
    const on = new Uint8Array(t.shape[hAxis]!);
    for (const h of heads) on[h] = 1;
    return tf.where(tf.tensor(on, t.shape.map((d, a) => (a === hAxis ? d : 1)), 'bool'), full, t);
  });
  return Object.assign(fn, { dispose: () => mean.dispose() });
}

/**
 * Patches one head's z (attn.hook_z) from another run (`value`, the same hook cached from a
 * prompt of the same length), at every position or the given ones.
 */
export function patchHead(value: tf.Tensor, head: number, positions?: readonly number[]): HookFn {
  return (t, name) => {
    const H = t.shape[headAxis(name)]!;
    if (!Number.isInteger(head) || head < 0 || head >= H) throw new HookError(`head ${head} is outside [0, ${H}) for ${name}`);
    return patchPiece(t, value, name, { heads: [head], positions: positions ? [...positions] : null });
  };
}

/** The sweep as a heatmap (SVG): layers × positions or heads; a panel per layer for head × position. */
export function sweepPicture(r: SweepResult, opts: { tokens?: readonly string[]; title?: string } = {}): string {
  const grid = r.grid;
  const flat = (grid as unknown[]).flat(2) as number[];
  const finite = flat.filter(Number.isFinite);
  const scale = { min: Math.min(0, ...finite), max: Math.max(1, ...finite), label: 'restored' };
  const positions = (n: number) => Array.from({ length: n }, (_, p) => (opts.tokens ? `${p} ${opts.tokens[p] ?? ''}` : String(p)));
  const text = (v: number) => (Number.isFinite(v) ? v.toFixed(2) : '');
  let panels: Panel[];
  if (r.by === 'head_position') {
    const g = grid as number[][][];
    panels = g.map((heads, l) => ({
      title: `layer ${l}`,
      rowLabels: heads.map((_, h) => `head ${h}`),
      colLabels: positions(heads[0]?.length ?? 0),
      values: heads.flat(),
    }));
  } else {
    const g = grid as number[][];
    const cols = g[0]?.length ?? 0;
    panels = [{
      title: '',
      rowLabels: g.map((_, l) => `layer ${l}`),
      colLabels: r.by === 'head' ? Array.from({ length: cols }, (_, h) => `head ${h}`) : positions(cols),
      values: g.flat(),
      text: (row, col) => text(g[row]![col]!),
    }];
  }
  return heatmapSvg({
    title: opts.title ?? `activation patching: ${r.hook} by ${r.by.replace('_', ' × ')}`,
    subtitle: `metric clean ${r.clean.toFixed(3)}, corrupted ${r.corrupt.toFixed(3)}; 1 = restores the clean metric, 0 = no effect`,
    panels,
    scale,
    rowAxis: 'layer',
    colAxis: r.by === 'head' ? 'head' : 'position',
  });
}
