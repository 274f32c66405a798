import * as fs from 'node:fs';
import * as path from 'node:path';
import { svgToPng } from '../../inspect/svg.js';
import { logitDiffMetric, patchSweep, sweepPicture, SWEEP_BY, SWEEP_HOOKS, type SweepBy, type SweepHook } from '../../inspect/sweep.js';
import { oneOf, parse } from '../args.js';
import { loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';
import { optionalTokenizer, promptIds, tokenArg, tokenName } from '../research.js';

export const summary = 'activation patching sweep: which layer, position or head restores the clean answer';

export const usage = `usage: mistral-ref patch --model DIR (--clean TEXT | --clean-ids LIST) (--corrupt TEXT | --corrupt-ids LIST)
                        --answer A --wrong B --hook resid_pre|attn_out|mlp_out|z
                        --by position|head|head_position [--out DIR] [--json]

Runs the corrupted prompt with one piece of one activation taken from the clean run, for
every layer and every position (or head, or head × position), and measures
logit(A) − logit(B) at the last position. Prints the normalised grid:
(patched − corrupted) / (clean − corrupted), 1 = fully restores the clean answer, 0 = no effect.

${MODEL_USAGE}
  --clean TEXT           the clean prompt (text, with the model's tokenizer, BOS first)
  --clean-ids LIST       or as comma-separated token ids
  --corrupt TEXT         the corrupted prompt, the same number of tokens
  --corrupt-ids LIST     or as ids
  --answer A             the clean answer: a token id, or with a tokenizer a vocabulary piece
  --wrong B              the competing token (same forms)
  --hook NAME            resid_pre, attn_out, mlp_out (by position), or z (by position,
                         head or head_position)
  --by AXIS              position: grid[layer][position]; head: grid[layer][head];
                         head_position: grid[layer][head][position]
  --out DIR              write the heatmap there as patch-HOOK-BY.svg and .png
  --json                 print {"hook": …, "by": …, "clean": x, "corrupt": y, "grid": …}

exit: 0 ok, 2 bad input (one line on stderr)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    clean: { type: 'string' },
    'clean-ids': { type: 'string' },
    corrupt: { type: 'string' },
    'corrupt-ids': { type: 'string' },
    answer: { type: 'string' },
    wrong: { type: 'string' },
    hook: { type: 'string' },
    by: { type: 'string' },
    out: { type: 'string' },
    json: { type: 'boolean' },
  });
  if (values.hook === undefined) throw new UsageError(`--hook is required (${SWEEP_HOOKS.join(', ')})`);
  if (values.by === undefined) throw new UsageError(`--by is required (${SWEEP_BY.join(', ')})`);
  const hook = oneOf<SweepHook>(values.hook as string, '--hook', SWEEP_HOOKS, 'resid_pre');
  const by = oneOf<SweepBy>(values.by as string, '--by', SWEEP_BY, 'position');
  if (by !== 'position' && hook !== 'z') throw new UsageError(`--by ${by} needs --hook z (the only hook with heads), got --hook ${hook}`);
  const outDir = values.out as string | undefined;
  if (outDir === '') throw new UsageError('--out expects a folder');

  const model = await loadModelFromArgs(values, io);
  try {
    const dir = model.checkpoint.dir;
    const tok = await optionalTokenizer(dir);
    const clean = promptIds(values, 'clean', 'clean-ids', tok, dir);
    const corrupt = promptIds(values, 'corrupt', 'corrupt-ids', tok, dir);
    if (clean.length !== corrupt.length) {
      throw new UsageError(`the clean and corrupted prompts must have the same number of tokens, got ${clean.length} and ${corrupt.length}`);
    }
    model.checkIds(clean);
    model.checkIds(corrupt);
    const answer = tokenArg(values.answer as string | undefined, '--answer', tok, model.config.vocabSize);
    const wrong = tokenArg(values.wrong as string | undefined, '--wrong', tok, model.config.vocabSize);
    const r = patchSweep(model, clean, corrupt, logitDiffMetric(answer, wrong), { hook, by });
    if (r.clean === r.corrupt) {
      throw new UsageError(`the clean and corrupted prompts give the same logit difference (${r.clean}): there is nothing to restore`);
    }
    const files: string[] = [];
    if (outDir !== undefined) {
      fs.mkdirSync(outDir, { recursive: true });
      const labels = tok === null ? clean.map(String) : clean.map((id) => tok.idToPiece(id));
      const svg = sweepPicture(r, { tokens: labels });
      const base = path.join(outDir, `patch-${hook}-${by}`);
      fs.writeFileSync(`${base}.svg`, svg);
      fs.writeFileSync(`${base}.png`, svgToPng(svg));
      files.push(`${base}.svg`, `${base}.png`);
    }
    if (values.json === true) {
      io.stdout(JSON.stringify({ hook, by, clean: r.clean, corrupt: r.corrupt, grid: r.grid }) + '\n');
      return 0;
    }
    io.stdout(`logit(${tokenName(answer, tok)}) − logit(${tokenName(wrong, tok)}): clean ${r.clean.toFixed(4)}, corrupted ${r.corrupt.toFixed(4)}\n`);
    io.stdout(`patching ${hook} by ${by.replace('_', ' × ')} (1 = restores clean, 0 = no effect):\n\n`);
    const row = (label: string, xs: number[]) => `${label.padEnd(10)}${xs.map((x) => x.toFixed(2).padStart(7)).join('')}\n`;
    const cols = by === 'head' ? 'head' : 'position';
    const width = by === 'head_position' ? (r.grid as number[][][])[0]![0]!.length : (r.grid as number[][])[0]!.length;
    io.stdout(row(cols, []).trimEnd() + Array.from({ length: width }, (_, i) => String(i).padStart(7)).join('') + '\n');
    if (by === 'head_position') {
      (r.grid as number[][][]).forEach((heads, l) => heads.forEach((xs, h) => io.stdout(row(`L${l} H${h}`, xs))));
    } else {
      (r.grid as number[][]).forEach((xs, l) => io.stdout(row(`layer ${l}`, xs)));
    }
    if (files.length > 0) io.stdout(`\nwrote ${files.join(', ')}\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
