import { directLogitAttribution } from '../../inspect/attribution.js';
import { parse } from '../args.js';
import { loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE } from '../common.js';
import type { CliIO } from '../io.js';
import { optionalTokenizer, promptIds, tokenArg, tokenName } from '../research.js';

export const summary = 'direct logit attribution of logit(A) − logit(B) by embedding, layer and head';

export const usage = `usage: mistral-ref attribute --model DIR (--prompt TEXT | --ids LIST) --answer A --wrong B [--json]

Splits logit(A) − logit(B) at the last position into what each part of the model wrote
to the residual stream: the embedding, every attention head, every MLP (or mixture of
experts), each read through the final RMSNorm with the divisor the run used. The parts
sum to the logit difference (up to float32 rounding).

${MODEL_USAGE}
  --prompt TEXT          text, encoded with the model's tokenizer, BOS first
  --ids LIST             the prompt as comma-separated token ids
  --answer A             the token whose logit counts positively: a token id, or with a
                         tokenizer a vocabulary piece (looked up first)
  --wrong B              the token whose logit counts negatively (same forms)
  --json                 print {"logit_diff": x, "parts": [{"name": "blocks.3.attn.head.1",
                         "value": v}, …], "sum": s}; names: embed, blocks.L.attn.head.H,
                         blocks.L.mlp (blocks.L.moe for Mixtral)

exit: 0 ok, 2 bad input (one line on stderr)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    prompt: { type: 'string' },
    ids: { type: 'string' },
    answer: { type: 'string' },
    wrong: { type: 'string' },
    json: { type: 'boolean' },
  });
  const model = await loadModelFromArgs(values, io);
  try {
    const dir = model.checkpoint.dir;
    const tok = await optionalTokenizer(dir);
    const ids = promptIds(values, 'prompt', 'ids', tok, dir);
    const answer = tokenArg(values.answer as string | undefined, '--answer', tok, model.config.vocabSize);
    const wrong = tokenArg(values.wrong as string | undefined, '--wrong', tok, model.config.vocabSize);
    const dla = directLogitAttribution(model, ids, answer, wrong);
    if (values.json === true) {
      io.stdout(JSON.stringify({ logit_diff: dla.logitDiff, parts: dla.parts, sum: dla.sum }) + '\n');
      return 0;
    }
    io.stdout(`logit(${tokenName(answer, tok)}) − logit(${tokenName(wrong, tok)}) at position ${dla.position}: ` +
      `${dla.logitDiff.toFixed(4)}   (sum of the parts: ${dla.sum.toFixed(4)})\n\n`);
    const width = Math.max(...dla.parts.map((p) => p.name.length)) + 2;
    const layer = (l: number) => dla.parts.filter((p) => p.name.startsWith(`blocks.${l}.attn.`)).reduce((a, p) => a + p.value, 0);
    let shown = -1;
    for (const p of dla.parts) {
      const l = /^blocks\.(\d+)\.attn\./.exec(p.name);
      if (l !== null && Number(l[1]) !== shown) {
        shown = Number(l[1]);
        io.stdout(`${`blocks.${shown}.attn`.padEnd(width)}${fmtValue(layer(shown))}\n`);
      }
      io.stdout(`${(l !== null ? '  ' + p.name : p.name).padEnd(width + (l !== null ? 2 : 0))}${fmtValue(p.value)}\n`);
    }
    return 0;
  } finally {
    model.dispose();
  }
}

function fmtValue(x: number): string {
  return (x >= 0 ? ' ' : '') + x.toFixed(4);
}
