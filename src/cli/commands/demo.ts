/**
 * The quick start: the bundled trained model answers `47+38=`, layer by layer, and proves
 * itself against the bundled reference computed by transformers.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { generate } from '../../generate/index.js';
import { checkParity } from '../../inspect/parity.js';
import { traceModel } from '../../inspect/trace.js';
import { bundledReference, resolveModelDir } from '../../io/bundled.js';
import { Reference } from '../../io/reference.js';
import { parameterCount } from '../../model/config.js';
import type { Transformer } from '../../model/transformer.js';
import { loadTokenizer } from '../../tokenizer/index.js';
import { number, parse } from '../args.js';
import { fmt, loadModelFromArgs, MODEL_OPTIONS, table } from '../common.js';
import type { CliIO } from '../io.js';


export const summary = 'run the bundled demo model: a prompt, layer by layer, with its parity';

export const usage = `usage: mistral-ref demo [--prompt TEXT] [--model DIR] [--reference FILE] [--backend cpu|wasm]

Loads the bundled trained model (models/mistral-demo: 4 layers, hidden 128, a character
tokenizer; it adds 2–3 digit numbers, copies and reverses strings), runs the prompt through
it layer by layer (residual-stream size and the logit lens at the last position), generates
the answer, then checks the model against the bundled reference outputs of transformers.

  --prompt TEXT      default "47+38=" (BOS is added); try "471+382=", "abcde|", "hello>"
  --model NAME|DIR   default mistral-demo (mixtral-demo is the MoE twin); or a checkpoint folder
  --reference FILE   default: the shipped reference of a bundled model
  --max-tokens N     default 12; generation stops at </s>
  --backend NAME     cpu (default) or wasm
  --weights MODE     auto (default), resident, eager or stream (see mistral-ref generate --help)
  --kernels NAME     simd (default) or tfjs
  --threads N        threads for the simd kernels (default: every core)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    prompt: { type: 'string' },
    reference: { type: 'string' },
    'max-tokens': { type: 'string' },
  });
  const name = values.model ?? 'mistral-demo';
  const dir = resolveModelDir(name);
  const prompt = values.prompt ?? '47+38=';
  const maxTokens = number(values['max-tokens'], '--max-tokens', 12, { min: 1, integer: true });
  const refFile = values.reference ?? bundledReference(path.basename(dir));

  const model = await loadModelFromArgs({ ...values, model: dir }, io);
  try {
    const tokenizer = await loadTokenizer(dir);
    const c = model.config;
    io.stdout(`${path.basename(dir)}: ${c.arch}, ${c.numLayers} layers, hidden ${c.hiddenSize}, ${c.numHeads} heads ` +
      `(${c.numKvHeads} kv), head_dim ${c.headDim}, window ${c.slidingWindow ?? 'none'}, vocab ${c.vocabSize}` +
      `${c.numExperts ? `, ${c.numExperts} experts top-${c.numExpertsPerTok}` : ''}; ` +
      `${parameterCount(c).toLocaleString('en-US')} parameters; backend ${tf.getBackend()}\n`);
    const ids = tokenizer.encode(prompt, { bos: true });
    io.stdout(`prompt ${JSON.stringify(prompt)} → ids [${ids.join(', ')}]\n\n`);
    const unknown = ids.filter((id) => id === 0).length;
    if (unknown > 0) io.stderr(`demo: ${unknown} character(s) of the prompt are outside this model's vocabulary and became <unk> (id 0)\n`);

    io.stdout(`layer by layer at the last position (${JSON.stringify(tokenizer.idToPiece(ids.at(-1)!))}):\n`);
    io.stdout(layerTable(model, ids, (id) => tokenizer.idToPiece(id)));

    const out: number[] = [];
    const t0 = performance.now();
    for await (const tok of generate(model, ids, { maxNewTokens: maxTokens })) out.push(tok.id);
    const ms = performance.now() - t0;
    io.stdout(`\n${prompt}${tokenizer.decode(out)}    (greedy, ${out.length} tokens in ${ms.toFixed(0)} ms)\n`);

    // No reference is a skipped check; a broken one is bad input like any other.
    if (values.reference === undefined && !fs.existsSync(refFile)) {
      io.stdout(`\nno reference at ${refFile}: parity not checked\n`);
      return 0;
    }
    const ref = Reference.open(refFile);
    try {
      const r = checkParity(model, ref);
      const d = r.max_abs_diff;
      io.stdout(`\nparity with ${path.relative(process.cwd(), refFile)} (transformers 4.47.1, float32): ` +
        `logits max|Δ| ${fmt(d.logits!)}, layer outputs ${fmt(d.layer_out!)}, greedy ids ` +
        `${r.prompts.every((p) => p.generated_ids_equal) ? 'identical' : 'DIFFERENT'}` +
        `${r.checked.includes('expert_choices') ? `, expert choices ${r.prompts.every((p) => p.expert_choices_equal) ? 'identical' : 'DIFFERENT'}` : ''}` +
        ` — ${r.pass ? 'PASS' : `FAIL (${r.failures.join(', ')})`}\n`);
      return r.pass ? 0 : 1;
    } finally {
      ref.close();
    }
  } finally {
    model.dispose();
  }
}

/** Per layer: the residual stream's mean norm and the logit lens's top token at the last position. */
function layerTable(model: Transformer, ids: number[], piece: (id: number) => string): string {
  const { report } = traceModel(model, ids, { topK: 1, pieceOf: piece, attentionLayers: [] });
  const row = (label: string, norm: string, top: { piece: string; prob: number }) => [label, norm, JSON.stringify(top.piece), top.prob.toFixed(3)];
  return table(['layer', '‖resid‖', 'logit lens top-1', 'p'], [
    row('embed', '', report.embed_lens_top[0]!),
    ...report.layers.map((l) => row(String(l.layer), l.resid_norm.toFixed(1), l.lens_top[0]!)),
  ]);
}
