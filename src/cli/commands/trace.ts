import * as path from 'node:path';
import { resolveModelDir } from '../../io/bundled.js';
import { traceModel, writeTrace, layerTable } from '../../inspect/trace.js';
import { loadTokenizer, type LoadedTokenizer } from '../../tokenizer/index.js';
import { idList, number, parse, required } from '../args.js';
import { checkVocabulary, encodePrompt, hasTokenizer, loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE, TOKENIZER_FILES } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';
import { writeOutputDir } from '../output-dir.js';

/** The files trace writes: an existing --out folder may hold these only (an earlier trace), and they are replaced. */
const TRACE_FILE = /^(layers\.(md|json)|(attention-layer-\d+|router|logit-lens)\.(svg|png))$/;

export const summary = 'per-layer table and pictures (attention, routing, logit lens) for a prompt';

export const usage = `usage: mistral-ref trace --model DIR (--ids 1,2,3 | --prompt TEXT) --out DIR [options]

Runs one prompt and writes, to --out:
  layers.md, layers.json     per layer: mean residual norm, what attention and the MLP write,
                             the logit lens's top tokens at the last position, attention
                             entropy per head, Mixtral expert load (layers.json also holds
                             the full logit-lens grid and the routing table)
  attention-layer-L.svg/.png attention pattern of every head of layer L
  router.svg/.png            Mixtral: router probabilities per token and expert, chosen outlined
  logit-lens.svg/.png        top-1 next token of every layer at every position
and prints the table. Labels are the tokenizer's pieces when the model folder has one, else ids.

${MODEL_USAGE}
  --ids LIST             comma-separated token ids
  --prompt TEXT          text, encoded with the model folder's tokenizer (BOS prepended)
  --no-bos               with --prompt: do not prepend BOS
  --out DIR              where to write (created if missing; an existing folder may only hold
                         an earlier trace, which is replaced as a whole)
  --top-k N              tokens listed by the logit lens per layer (default 5)
  --layers LIST          layers to draw attention pictures for (default all)
  --no-png               write the SVGs only

exit: 0 written, 2 bad input
`;


export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    ids: { type: 'string' },
    prompt: { type: 'string' },
    'no-bos': { type: 'boolean' },
    out: { type: 'string' },
    'top-k': { type: 'string' },
    layers: { type: 'string' },
    'no-png': { type: 'boolean' },
  });
  const modelDir = resolveModelDir(required(values.model, '--model'));
  const outDir = required(values.out, '--out');
  const idsArg = values.ids;
  const prompt = values.prompt;
  if ((idsArg === undefined) === (prompt === undefined)) throw new UsageError('give exactly one of --ids and --prompt');
  const topK = number(values['top-k'], '--top-k', 5, { min: 1, max: 100, integer: true });
  const layers = values.layers === undefined ? undefined : idList(values.layers, '--layers');

  const found = hasTokenizer(modelDir);
  let tokenizer: LoadedTokenizer | null = null;
  if (prompt !== undefined) {
    if (!found) throw new UsageError(`--prompt needs a tokenizer in ${modelDir} (${TOKENIZER_FILES}); give --ids instead`);
    tokenizer = await loadTokenizer(modelDir);
  } else if (found) {
    try {
      tokenizer = await loadTokenizer(modelDir);
    } catch (e) {
      io.stderr(`trace: labels are ids (the tokenizer did not load: ${(e as Error).message.split('\n')[0]})\n`);
    }
  }
  const ids = prompt !== undefined ? encodePrompt(tokenizer!, prompt, '--prompt', values['no-bos'] !== true) : idList(idsArg!, '--ids');

  const model = await loadModelFromArgs(values, io);
  try {
    if (tokenizer !== null) checkVocabulary(tokenizer, model);
    const bad = layers?.find((l) => l >= model.config.numLayers);
    if (bad !== undefined) throw new UsageError(`--layers: layer ${bad} does not exist (the model has ${model.config.numLayers})`);
    const { report, pictures } = traceModel(model, ids, {
      topK,
      ...(tokenizer ? { pieceOf: (id: number) => tokenizer!.idToPiece(id) } : {}),
      ...(layers ? { attentionLayers: layers } : {}),
    });
    // Written into <out>.partial, then swapped in: the folder never mixes this run's pictures with an earlier run's.
    const files = await writeOutputDir(outDir, '--out', { replace: (f) => TRACE_FILE.test(f), what: 'a trace' },
      (tmp) => writeTrace(tmp, report, pictures, { png: values['no-png'] !== true }));
    io.stdout(`${report.ids.length} tokens: ${report.tokens.join(' ')}\n\n`);
    io.stdout(layerTable(report));
    io.stdout(`\nwrote ${files.length} files to ${outDir}: ${files.map((f) => path.basename(f)).join(', ')}\n`);
    return 0;
  } finally {
    model.dispose();
  }
}
