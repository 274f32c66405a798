import { Reference } from '../../io/reference.js';
import { checkParity, type ParityReport } from '../../inspect/parity.js';
import { number, parse, required } from '../args.js';
import { fmt, loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE, table } from '../common.js';
import type { CliIO } from '../io.js';

export const summary = 'compare a checkpoint with a reference file';

export const usage = `usage: mistral-ref parity --model DIR --reference refs/NAME.json [options]

Runs every prompt of a reference file (schema mistral-golden-ref/1; its tensors_file sits
next to the JSON) and compares logits, embeddings, every layer's output, the final norm,
the layer-0 debug tensors, Mixtral router logits and expert choices, and a 16-token greedy
generation (step logits and ids), whichever the reference has. A tensor passes when
max |Δ| ≤ atol + rtol · max|ref|; ids and expert choices must match exactly.

${MODEL_USAGE}
  --reference FILE       reference JSON (e.g. fixtures/refs/mistral-tiny.json)
  --atol X               absolute tolerance (default 5e-5)
  --rtol X               relative tolerance, times max|ref| of each tensor (default 1e-6)
  --per-layer            print max |Δ| of every layer's output and the first layer beyond tolerance
  --json                 one JSON object on stdout: pass, atol, rtol, checked, max_abs_diff,
                         tolerance, failures, per_layer, first_divergent_layer, prompts

exit: 0 all within tolerance, 1 some check failed, 2 bad input
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    reference: { type: 'string' },
    atol: { type: 'string' },
    rtol: { type: 'string' },
    'per-layer': { type: 'boolean' },
    json: { type: 'boolean' },
  });
  const refFile = required(values.reference, '--reference');
  const atol = number(values.atol, '--atol', 5e-5, { min: 0 });
  const rtol = number(values.rtol, '--rtol', 1e-6, { min: 0 });
  const ref = Reference.open(refFile);
  try {
    const model = await loadModelFromArgs(values, io);
    try {
      const report = checkParity(model, ref, {
        atol,
        rtol,
        onPrompt: (name, i, n) => { if (io.interactive && !values.json) io.stderr(`parity: prompt ${name} (${i + 1}/${n})\n`); },
      });
      io.stdout(values.json ? JSON.stringify(report) + '\n' : render(report, values['per-layer'] === true));
      return report.pass ? 0 : 1;
    } finally {
      model.dispose();
    }
  } finally {
    ref.close();
  }
}

function render(r: ParityReport, perLayer: boolean): string {
  const out: string[] = [];
  out.push(`model      ${r.model}\nreference  ${r.reference}\nbackend    ${r.backend}\ntolerance  |Δ| ≤ ${r.atol} + ${r.rtol}·max|ref|\n\n`);
  const rows = Object.keys(r.max_abs_diff).map((kind) => {
    const d = r.max_abs_diff[kind]!;
    return [kind, fmt(d), fmt(r.tolerance[kind]!), r.failures.includes(kind) ? 'FAIL' : 'ok'];
  });
  out.push(table(['tensor', 'max |Δ|', 'allowed', ''], rows));
  const exact = r.prompts.map((p) => [
    p.name, String(p.length),
    p.generated_ids_equal === undefined ? '-' : p.generated_ids_equal ? 'identical' : 'DIFFERENT',
    p.expert_choices_equal === undefined ? '-' : p.expert_choices_equal ? 'identical' : 'DIFFERENT',
  ]);
  out.push('\n' + table(['prompt', 'tokens', 'greedy ids', 'expert choices'], exact));
  if (perLayer) {
    out.push('\n' + table(['layer', 'max |Δ| of output'], r.per_layer.map((d, l) => [String(l), fmt(d)])));
    out.push(r.first_divergent_layer === null
      ? 'no layer beyond tolerance\n'
      : `first layer beyond tolerance: ${r.first_divergent_layer}\n`);
  }
  out.push(`\n${r.pass ? 'PASS' : `FAIL (${r.failures.join(', ')})`}\n`);
  return out.join('');
}
