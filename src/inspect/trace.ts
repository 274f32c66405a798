/**
 * One prompt, layer by layer: a table (residual norm, what each sublayer writes, the logit
 * lens's top tokens, attention entropy per head, Mixtral expert load) and the pictures
 * (attention per layer, routing, logit-lens grid). `mistral-ref trace` writes them.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { disposeResult, type Transformer } from '../model/transformer.js';
import { runWithCache } from './activations.js';
import { lensHookNames, logitLens, type LogitLens } from './lens.js';
import { attentionEntropy } from './patterns.js';
import { attentionPicture, logitLensPicture, routerPicture, tokenLabel } from './pictures.js';
import { expertLoad, routingFromCache, routingHookNames, routingTable, type RoutedToken } from './routing.js';
import { short, svgToPng } from './svg.js';

export interface TraceOptions {
  /** Tokens listed per layer by the logit lens (default 5). */
  readonly topK?: number;
  /** The vocabulary piece of an id, for labels (a tokenizer's idToPiece); default the id. */
  readonly pieceOf?: (id: number) => string;
  /** Layers to draw attention pictures for (default every layer). */
  readonly attentionLayers?: readonly number[];
}

export interface TopToken {
  readonly id: number;
  readonly piece: string;
  readonly prob: number;
}

export interface LayerTrace {
  readonly layer: number;
  /** Mean over positions of ‖resid_post‖₂ (the layer's output). */
  readonly resid_norm: number;
  /** Mean ‖attn_out‖₂ and ‖mlp_out‖₂: how much each sublayer writes into the stream. */
  readonly attn_out_norm: number;
  readonly mlp_out_norm: number;
  /** Per head, mean over queries of the pattern's entropy (nats). */
  readonly attn_entropy: number[];
  /** Logit lens at the last position: top-k next tokens of this layer's output. */
  readonly lens_top: TopToken[];
  /** Lens probability of the model's final prediction, at the last position. */
  readonly final_token_prob: number;
  /** Mixtral: slots routed to each expert (sums to tokens · k). */
  readonly expert_load?: number[];
}

export interface TraceReport {
  readonly model: string;
  readonly arch: string;
  readonly backend: string;
  readonly ids: number[];
  /** Token labels (pieces, whitespace made visible) or ids. */
  readonly tokens: string[];
  readonly top_k: number;
  /** The model's own top-k next tokens after the last position. */
  readonly prediction: TopToken[];
  /** Logit lens of the embeddings (before layer 0), last position. */
  readonly embed_lens_top: TopToken[];
  readonly layers: LayerTrace[];
  /** Top-1 id and its probability at every (row, position) of the lens; rows embed, 0, …, L−1. */
  readonly logit_lens: Array<{ label: string; top1: number[]; prob: number[] }>;
  /** Mixtral: token → experts, weights, per layer. */
  readonly routing?: RoutedToken[][];
}

export interface Picture {
  /** File stem, e.g. `attention-layer-0`. */
  readonly name: string;
  readonly svg: string;
}

/** Mean over rows of the L2 norm of each row of a [tokens, hidden] tensor. */
function meanRowNorm(t: tf.Tensor): number {
  return tf.tidy(() => tf.mean(tf.norm(t, 'euclidean', -1)).dataSync()[0]!);
}

/** Runs `ids` once and collects the per-layer table and the pictures. */
export function traceModel(model: Transformer, ids: readonly number[], opts: TraceOptions = {}): { report: TraceReport; pictures: Picture[] } {
  const c = model.config;
  const pieceOf = opts.pieceOf ?? ((id: number) => String(id));
  const tokens = ids.map((id) => tokenLabel(pieceOf(id)));
  const topK = opts.topK ?? 5;
  const drawAttention = new Set(opts.attentionLayers ?? Array.from({ length: c.numLayers }, (_, l) => l));
  const moe = c.numExperts !== null;
  const names = [
    ...lensHookNames(c.numLayers),
    ...(moe ? routingHookNames(c) : []),
    ...Array.from({ length: c.numLayers }, (_, l) => ['hook_attn_out', 'hook_mlp_out', 'attn.hook_pattern', 'attn.hook_attn_scores']
      .map((n) => `blocks.${l}.${n}`)).flat(),
  ];
  const { result, cache } = runWithCache(model, ids, { names });
  try {
    const lens: LogitLens = logitLens(model, cache, { topK });
    const last = ids.length - 1;
    const top = (row: number, t = last): TopToken[] => {
      const cell = lens.rows[row]!.positions[t]!;
      return cell.ids.map((id, i) => ({ id, piece: pieceOf(id), prob: cell.probs[i]! }));
    };
    const routing = moe ? routingFromCache(cache, c) : undefined;
    const pictures: Picture[] = [];
    const layers: LayerTrace[] = Array.from({ length: c.numLayers }, (_, l) => {
      const pattern = cache.get(`blocks.${l}.attn.hook_pattern`);
      if (drawAttention.has(l)) {
        pictures.push({
          name: `attention-layer-${l}`,
          svg: attentionPicture(pattern, { layer: l, queries: tokens, scores: cache.get(`blocks.${l}.attn.hook_attn_scores`) }),
        });
      }
      return {
        layer: l,
        resid_norm: meanRowNorm(cache.get(`blocks.${l}.hook_resid_post`)),
        attn_out_norm: meanRowNorm(cache.get(`blocks.${l}.hook_attn_out`)),
        mlp_out_norm: meanRowNorm(cache.get(`blocks.${l}.hook_mlp_out`)),
        attn_entropy: attentionEntropy(pattern).perHead,
        lens_top: top(l + 1),
        final_token_prob: lens.rows[l + 1]!.positions[last]!.finalProb,
        ...(routing ? { expert_load: expertLoad(routing[l]!).tokens } : {}),
      };
    });
    if (routing) pictures.push({ name: 'router', svg: routerPicture(routing, tokens) });
    pictures.push({ name: 'logit-lens', svg: logitLensPicture(lens, tokens, pieceOf) });
    const report: TraceReport = {
      model: model.checkpoint.dir,
      arch: c.arch,
      backend: tf.getBackend(),
      ids: [...ids],
      tokens,
      top_k: topK,
      prediction: top(c.numLayers),
      embed_lens_top: top(0),
      layers,
      logit_lens: lens.rows.map((r) => ({ label: r.label, top1: r.positions.map((p) => p.ids[0]!), prob: r.positions.map((p) => p.probs[0]!) })),
      ...(routing ? { routing: routingTable(routing) } : {}),
    };
    return { report, pictures };
  } finally {
    disposeResult(result);
    cache.dispose();
  }
}

const topText = (ts: readonly TopToken[]): string => ts.map((t) => `${tokenLabel(t.piece)} ${t.prob.toFixed(2)}`).join(', ');

function entropyText(h: readonly number[]): string {
  if (h.length <= 8) return h.map((x) => x.toFixed(2)).join(' ');
  const mean = h.reduce((a, b) => a + b, 0) / h.length;
  return `${Math.min(...h).toFixed(2)}…${Math.max(...h).toFixed(2)} (mean ${mean.toFixed(2)})`;
}

/** The per-layer table as Markdown (also readable as plain text). */
export function layerTable(r: TraceReport): string {
  const moe = r.layers.some((l) => l.expert_load !== undefined);
  const header = ['layer', '‖resid‖', '‖attn_out‖', '‖mlp_out‖', `logit lens top-${r.top_k} (last position)`, 'p(final)',
    'attn entropy per head (nats)', ...(moe ? ['expert load (tokens)'] : [])];
  const rows = [
    ['embed', '', '', '', topText(r.embed_lens_top), '', '', ...(moe ? [''] : [])],
    ...r.layers.map((l) => [
      String(l.layer), short(l.resid_norm), short(l.attn_out_norm), short(l.mlp_out_norm), topText(l.lens_top),
      l.final_token_prob.toFixed(2), entropyText(l.attn_entropy), ...(moe ? [l.expert_load!.join(' ')] : []),
    ]),
  ];
  const cells = (xs: readonly string[]) => `| ${xs.map((x) => x.replace(/\|/g, '\\|')).join(' | ')} |`;
  return [cells(header), cells(header.map(() => '---')), ...rows.map(cells)].join('\n') + '\n';
}

/** layers.md: the prompt, the prediction, the table and links to the pictures. */
export function traceMarkdown(r: TraceReport, pictures: readonly Picture[]): string {
  return [
    `# Trace of ${path.basename(r.model)}`,
    '',
    `- model: \`${r.model}\` (${r.arch}), backend ${r.backend}`,
    `- ${r.ids.length} tokens: ${r.tokens.map((t) => `\`${t}\``).join(' ')}`,
    `- ids: ${r.ids.join(',')}`,
    `- next token: ${topText(r.prediction)}`,
    '',
    '‖·‖ is the mean over positions of each row\'s L2 norm. The logit lens reads a layer\'s output through',
    'the final RMSNorm and lm_head; p(final) is the probability it gives the model\'s own prediction.',
    'Entropy is −Σ p ln p of each query\'s attention, averaged over queries (0 = one key).',
    '',
    layerTable(r),
    ...pictures.map((p) => `![${p.name}](${p.name}.svg)\n`),
  ].join('\n');
}

/** JSON with one entry per line, except that arrays of numbers or strings stay on one line. */
export function readableJson(v: unknown, indent = ''): string {
  const inner = indent + '  ';
  if (Array.isArray(v)) {
    if (v.every((x) => x === null || typeof x !== 'object')) return `[${v.map((x) => JSON.stringify(x)).join(', ')}]`;
    return `[\n${v.map((x) => inner + readableJson(x, inner)).join(',\n')}\n${indent}]`;
  }
  if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    return `{\n${entries.map(([k, x]) => `${inner}${JSON.stringify(k)}: ${readableJson(x, inner)}`).join(',\n')}\n${indent}}`;
  }
  return JSON.stringify(v);
}

/** Writes layers.md, layers.json and every picture as .svg and (unless `png: false`) .png; returns the paths. */
export function writeTrace(outDir: string, report: TraceReport, pictures: readonly Picture[], opts: { png?: boolean } = {}): string[] {
  fs.mkdirSync(outDir, { recursive: true });
  const written: string[] = [];
  const write = (name: string, data: string | Uint8Array) => {
    const file = path.join(outDir, name);
    fs.writeFileSync(file, data);
    written.push(file);
  };
  write('layers.md', traceMarkdown(report, pictures));
  write('layers.json', readableJson(report) + '\n');
  for (const p of pictures) {
    write(`${p.name}.svg`, p.svg);
    if (opts.png !== false) write(`${p.name}.png`, svgToPng(p.svg));
  }
  return written;
}
