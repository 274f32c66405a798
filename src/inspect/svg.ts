/**
 * A small SVG heatmap writer: one or more panels of coloured cells with row and column
 * labels, optional text in the cells, and a colour-scale legend. Plain rects and text,
 * so any browser shows it and resvg turns it into a PNG.
 *
 *   ┌ title ─────────────────────────────────────────────┐
 *   │        panel 0            panel 1          legend  │
 *   │      c0 c1 c2 …         c0 c1 c2 …          ▇ 1.0  │
 *   │  r0  ▇  ▇  ▇        r0  ▇  ▇  ▇             ▇      │
 *   │  r1  ▇  ▇  ▇        r1  ▇  ▇  ▇             ▇ 0.0  │
 *   └────────────────────────────────────────────────────┘
 */
import { Resvg } from '@resvg/resvg-js';

export interface Panel {
  readonly title: string;
  readonly rowLabels: readonly string[];
  readonly colLabels: readonly string[];
  /** [rows, cols] row-major; NaN draws an empty (masked) cell. */
  readonly values: ArrayLike<number>;
  /** Text to write inside a cell, if any. */
  readonly text?: (row: number, col: number) => string | undefined;
  /** Cells to outline (e.g. the experts a token was routed to). */
  readonly outline?: (row: number, col: number) => boolean;
}

export interface Heatmap {
  readonly title: string;
  /** A second, smaller line under the title. */
  readonly subtitle?: string;
  readonly panels: readonly Panel[];
  /** What the colours mean: values are clamped to [min, max]. */
  readonly scale: { readonly min: number; readonly max: number; readonly label: string };
  /** Panels per row of the grid (default: all in one row, at most 4). */
  readonly columns?: number;
  /** Cell size in pixels; cells widen to fit their text. */
  readonly cell?: number;
  /** Label for the row and column axes, e.g. "query" / "key". */
  readonly rowAxis?: string;
  readonly colAxis?: string;
}

const FONT = "DejaVu Sans, Verdana, Arial, sans-serif";

/** Viridis (matplotlib), sampled at 8 points: perceptually even, readable in grey. */
const VIRIDIS: ReadonlyArray<readonly [number, number, number]> = [
  [68, 1, 84], [70, 50, 127], [54, 92, 141], [39, 127, 142],
  [31, 161, 135], [74, 194, 109], [159, 218, 58], [253, 231, 37],
];

/** Colour of x ∈ [0, 1] on the viridis scale, linearly interpolated. */
export function colour(x: number): string {
  const u = Math.min(1, Math.max(0, Number.isFinite(x) ? x : 0)) * (VIRIDIS.length - 1);
  const i = Math.min(VIRIDIS.length - 2, Math.floor(u));
  const f = u - i;
  const [a, b] = [VIRIDIS[i]!, VIRIDIS[i + 1]!];
  const c = a.map((v, j) => Math.round(v + f * (b[j]! - v)));
  return `#${c.map((v) => v.toString(16).padStart(2, '0')).join('')}`;
}

/** Black or white, whichever reads better on `x`'s colour. */
function ink(x: number): string {
  return Math.min(1, Math.max(0, x)) > 0.55 ? '#000' : '#fff';
}

export function escapeXml(s: string): string {
  return s.replace(/[<>&"']/g, (ch) => ({ '<': '&lt;', '>': '&gt;', '&': '&amp;', '"': '&quot;', "'": '&apos;' })[ch]!);
}

/** Approximate width of `s` in DejaVu Sans at `size` px (good enough for layout). */
function textWidth(s: string, size: number): number {
  return [...s].length * size * 0.62;
}

/** Number with at most 3 significant digits, for legends and cell text. */
export function short(x: number): string {
  if (!Number.isFinite(x)) return String(x);
  if (x === 0) return '0';
  const a = Math.abs(x);
  if (a >= 1000 || a < 0.01) return x.toExponential(1);
  return String(Number(x.toPrecision(a >= 1 ? 3 : 2)));
}

/** Renders the heatmap as an SVG document. */
export function heatmapSvg(h: Heatmap): string {
  const labelSize = 11;
  const cellTextSize = 10;
  const maxCellText = Math.max(0, ...h.panels.flatMap((p) => p.rowLabels.flatMap((_, r) =>
    p.colLabels.map((_, c) => textWidth(p.text?.(r, c) ?? '', cellTextSize)))));
  const cw = Math.max(h.cell ?? 16, Math.ceil(maxCellText + 6));
  const ch = Math.max(h.cell ?? 16, maxCellText > 0 ? 18 : 0);
  const rowLabelW = Math.ceil(Math.max(20, ...h.panels.flatMap((p) => p.rowLabels.map((s) => textWidth(s, labelSize))))) + 8;
  const colLabelH = Math.ceil(Math.max(20, ...h.panels.flatMap((p) => p.colLabels.map((s) => textWidth(s, labelSize))))) + 8;
  const panelTitleH = h.panels.some((p) => p.title !== '') ? 20 : 4;
  const gap = 24;
  const titleH = h.subtitle ? 48 : 32;
  const axisH = h.colAxis ? 16 : 0;
  const axisW = h.rowAxis ? 16 : 0;

  const nCols = Math.max(1, Math.min(h.columns ?? 4, h.panels.length));
  const pw = axisW + rowLabelW + cw * Math.max(...h.panels.map((p) => p.colLabels.length));
  const ph = panelTitleH + axisH + colLabelH + ch * Math.max(...h.panels.map((p) => p.rowLabels.length));
  const legendW = Math.max(90, Math.ceil(textWidth(h.scale.label, 11)) + 16);
  const gridRows = Math.ceil(h.panels.length / nCols);
  const width = Math.ceil(Math.max(16 + nCols * pw + (nCols - 1) * gap + gap + legendW,
    textWidth(h.title, 16) + 32, textWidth(h.subtitle ?? '', 12) + 32));
  const height = titleH + gridRows * ph + (gridRows - 1) * gap + 16;

  const out: string[] = [];
  out.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" viewBox="0 0 ${width} ${height}" font-family="${FONT}">`);
  out.push(`<rect width="100%" height="100%" fill="#fff"/>`);
  out.push(`<text x="16" y="22" font-size="16" font-weight="bold">${escapeXml(h.title)}</text>`);
  if (h.subtitle) out.push(`<text x="16" y="40" font-size="12" fill="#444">${escapeXml(h.subtitle)}</text>`);

  const span = h.scale.max - h.scale.min || 1;
  const unit = (v: number) => (v - h.scale.min) / span;
  h.panels.forEach((p, i) => {
    const x0 = 16 + (i % nCols) * (pw + gap);
    const y0 = titleH + Math.floor(i / nCols) * (ph + gap);
    const gx = x0 + axisW + rowLabelW; // grid origin
    const gy = y0 + panelTitleH + axisH + colLabelH;
    const R = p.rowLabels.length;
    const C = p.colLabels.length;
    out.push(`<g>`);
    if (p.title) out.push(`<text x="${gx}" y="${y0 + 14}" font-size="13" font-weight="bold">${escapeXml(p.title)}</text>`);
    if (h.colAxis) out.push(`<text x="${gx + (cw * C) / 2}" y="${y0 + panelTitleH + 11}" font-size="11" fill="#555" text-anchor="middle">${escapeXml(h.colAxis)} →</text>`);
    if (h.rowAxis) {
      out.push(`<text transform="translate(${x0 + 11},${gy + (ch * R) / 2}) rotate(-90)" font-size="11" fill="#555" text-anchor="middle">${escapeXml(h.rowAxis)} →</text>`);
    }
    p.colLabels.forEach((s, c) => {
      const x = gx + c * cw + cw / 2 + 4;
      out.push(`<text transform="translate(${x},${gy - 4}) rotate(-90)" font-size="${labelSize}">${escapeXml(s)}</text>`);
    });
    p.rowLabels.forEach((s, r) => {
      out.push(`<text x="${gx - 4}" y="${gy + r * ch + ch / 2 + 4}" font-size="${labelSize}" text-anchor="end">${escapeXml(s)}</text>`);
    });
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        const v = p.values[r * C + c]!;
        const x = gx + c * cw;
        const y = gy + r * ch;
        if (Number.isNaN(v)) {
          out.push(`<rect x="${x}" y="${y}" width="${cw}" height="${ch}" fill="#fff" stroke="#eee" stroke-width="0.5"/>`);
          continue;
        }
        out.push(`<rect x="${x}" y="${y}" width="${cw}" height="${ch}" fill="${colour(unit(v))}"><title>${escapeXml(`${p.rowLabels[r]} × ${p.colLabels[c]}: ${short(v)}`)}</title></rect>`);
        const t = p.text?.(r, c);
        if (t) {
          out.push(`<text x="${x + cw / 2}" y="${y + ch / 2 + 3.5}" font-size="${cellTextSize}" text-anchor="middle" fill="${ink(unit(v))}">${escapeXml(t)}</text>`);
        }
      }
    }
    for (let r = 0; r < R; r++) {
      for (let c = 0; c < C; c++) {
        if (p.outline?.(r, c)) {
          out.push(`<rect x="${gx + c * cw + 1}" y="${gy + r * ch + 1}" width="${cw - 2}" height="${ch - 2}" fill="none" stroke="#e8175d" stroke-width="2"/>`);
        }
      }
    }
    out.push(`<rect x="${gx}" y="${gy}" width="${cw * C}" height="${ch * R}" fill="none" stroke="#999" stroke-width="0.5"/>`);
    out.push(`</g>`);
  });

  // Legend: a vertical gradient from max (top) to min (bottom).
  const lx = width - legendW + 8;
  const ly = titleH + 20;
  const lh = Math.min(200, Math.max(80, height - ly - 40));
  const stops = VIRIDIS.map((_, i) => {
    const f = i / (VIRIDIS.length - 1); // offset from the top
    return `<stop offset="${f.toFixed(3)}" stop-color="${colour(1 - f)}"/>`;
  });
  out.push(`<defs><linearGradient id="scale" x1="0" y1="0" x2="0" y2="1">${stops.join('')}</linearGradient></defs>`);
  out.push(`<text x="${lx}" y="${ly - 8}" font-size="11">${escapeXml(h.scale.label)}</text>`);
  out.push(`<rect x="${lx}" y="${ly}" width="14" height="${lh}" fill="url(#scale)" stroke="#999" stroke-width="0.5"/>`);
  for (const f of [0, 0.5, 1]) {
    const y = ly + (1 - f) * lh;
    out.push(`<line x1="${lx + 14}" y1="${y}" x2="${lx + 18}" y2="${y}" stroke="#333"/>`);
    out.push(`<text x="${lx + 21}" y="${y + 4}" font-size="11">${escapeXml(short(h.scale.min + f * span))}</text>`);
  }
  out.push('</svg>');
  return out.join('\n') + '\n';
}

/** Renders an SVG to PNG with the system fonts (DejaVu Sans when present). */
export function svgToPng(svg: string): Uint8Array {
  const r = new Resvg(svg, { font: { loadSystemFonts: true, defaultFontFamily: 'DejaVu Sans' }, background: '#fff' });
  return r.render().asPng();
}
