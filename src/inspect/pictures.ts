/**
 * Pictures of what the model does, as SVG (svg.ts; `svgToPng` for PNG):
 *
 * - attention: one heatmap per head of a layer, query rows × key columns, masked keys blank;
 * - router (Mixtral): token rows × expert columns per layer, colour = router probability,
 *   the chosen experts outlined with their mixing weight;
 * - logit lens: layer rows × position columns, each cell the lens's top-1 next token,
 *   coloured by its probability.
 */
import type * as tf from '@tensorflow/tfjs-core';
import type { Routing } from '../model/moe.js';
import type { LogitLens } from './lens.js';
import { routerProbs } from './routing.js';
import { heatmapSvg, type Panel } from './svg.js';

/** A token piece made visible and short: spaces, newlines and control bytes get symbols. */
export function tokenLabel(piece: string, max = 8): string {
  const visible = [...piece].map((ch) => {
    if (ch === ' ') return '␣';
    if (ch === '\n') return '↵';
    if (ch === '\t') return '⇥';
    const code = ch.codePointAt(0)!;
    return code < 0x20 || code === 0x7f ? `\\x${code.toString(16).padStart(2, '0')}` : ch;
  }).join('');
  const chars = [...visible];
  return chars.length > max ? chars.slice(0, max - 1).join('') + '…' : visible;
}

/** Labels "position token", thinned to about `most` shown when there are many. */
function axisLabels(tokens: readonly string[], most = 48): string[] {
  const every = Math.ceil(tokens.length / most);
  return tokens.map((s, i) => (i % every === 0 ? `${i} ${s}` : ''));
}

/** Cell size that keeps long sequences on a page. */
function cellFor(n: number): number {
  return n > 96 ? 6 : n > 48 ? 10 : 16;
}

export interface AttentionPictureOptions {
  readonly layer: number;
  /** Token labels of the queries (rows) and keys (columns); keys default to the queries. */
  readonly queries: readonly string[];
  readonly keys?: readonly string[];
  /** hook_attn_scores of the layer: keys scored −∞ are drawn blank (masked), not as 0. */
  readonly scores?: tf.Tensor;
  /** Heads to draw (default all). */
  readonly heads?: readonly number[];
}

/** Attention patterns of one layer, a panel per head. @param pattern [heads, tokens, keys] */
export function attentionPicture(pattern: tf.Tensor, opts: AttentionPictureOptions): string {
  const [H, T, S] = pattern.shape as [number, number, number];
  const p = pattern.dataSync();
  const masked = opts.scores?.dataSync();
  const heads = opts.heads ?? Array.from({ length: H }, (_, h) => h);
  const rows = axisLabels(opts.queries);
  const cols = axisLabels(opts.keys ?? opts.queries);
  const panels: Panel[] = heads.map((h) => {
    const values = new Float32Array(T * S);
    for (let i = 0; i < T * S; i++) values[i] = masked !== undefined && masked[h * T * S + i] === -Infinity ? NaN : p[h * T * S + i]!;
    return { title: `head ${h}`, rowLabels: rows, colLabels: cols, values };
  });
  return heatmapSvg({
    title: `Attention patterns, layer ${opts.layer}`,
    subtitle: `${H} heads, ${T} queries × ${S} keys; each row sums to 1; blank = masked (causal / sliding window)`,
    panels,
    scale: { min: 0, max: 1, label: 'attention' },
    columns: Math.min(4, heads.length),
    cell: cellFor(Math.max(T, S)),
    rowAxis: 'query',
    colAxis: 'key',
  });
}

/** Router probabilities of every Mixtral layer, a panel per layer; chosen experts outlined. */
export function routerPicture(routing: readonly Routing[], tokens: readonly string[]): string {
  const rows = axisLabels(tokens);
  const panels: Panel[] = routing.map((r, l) => {
    const E = r.numExperts;
    const chosen = new Map<number, number>(); // t·E + e → weight
    r.experts.forEach((e, i) => chosen.set(Math.floor(i / r.k) * E + e, r.weights[i]!));
    return {
      title: `layer ${l}`,
      rowLabels: rows,
      colLabels: Array.from({ length: E }, (_, e) => `e${e}`),
      values: routerProbs(r),
      outline: (t, e) => chosen.has(t * E + e),
      text: tokens.length <= 48 ? (t, e) => {
        const w = chosen.get(t * E + e);
        return w === undefined ? undefined : w.toFixed(2).replace(/^0/, '');
      } : undefined,
    };
  });
  const k = routing[0]?.k ?? 0;
  return heatmapSvg({
    title: 'Mixtral routing: token → experts',
    subtitle: `colour = router softmax over all experts; outlined = the top-${k} chosen, with their mixing weight`,
    panels,
    scale: { min: 0, max: 1, label: 'router probability' },
    columns: Math.min(4, panels.length),
    cell: cellFor(tokens.length),
    rowAxis: 'token',
    colAxis: 'expert',
  });
}

/**
 * The logit-lens grid. Column t is input token t; its cells are what each layer's
 * residual at t predicts as token t + 1.
 */
export function logitLensPicture(lens: LogitLens, tokens: readonly string[], pieceOf: (id: number) => string): string {
  const T = tokens.length;
  const values = new Float32Array(lens.rows.length * T);
  lens.rows.forEach((row, r) => row.positions.forEach((cell, t) => { values[r * T + t] = cell.probs[0]!; }));
  const showText = T <= 64;
  return heatmapSvg({
    title: 'Logit lens: top-1 next token of every layer',
    subtitle: 'each layer\'s residual → final RMSNorm → lm_head; cell = most probable next token, colour = its probability',
    panels: [{
      title: '',
      rowLabels: lens.rows.map((r) => (r.layer < 0 ? 'embed' : `layer ${r.layer}`)),
      colLabels: axisLabels(tokens, 64),
      values,
      text: showText ? (r, t) => tokenLabel(pieceOf(lens.rows[r]!.positions[t]!.ids[0]!), 6) : undefined,
    }],
    scale: { min: 0, max: 1, label: 'probability' },
    cell: showText ? 18 : cellFor(T),
    rowAxis: 'depth',
    colAxis: 'input token',
  });
}
