import { performance } from 'node:perf_hooks';
import { DEFAULT_MAX_NEW_TOKENS, generate, jsonConstraint, TextStream, type StopReason } from '../../generate/index.js';
import { readJsonFile } from '../../io/files.js';
import { loadTokenizer, type LoadedTokenizer } from '../../tokenizer/index.js';
import { idList, number, parse } from '../args.js';
import { checkVocabulary, encodePrompt, hasTokenizer, loadModelFromArgs, MODEL_OPTIONS, MODEL_USAGE, SAMPLING_OPTIONS, samplingFromArgs, TOKENIZER_FILES } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';

export const summary = 'generate text or ids from a prompt, streaming';

export const usage = `usage: mistral-ref generate --model DIR (--prompt TEXT | --ids 1,2,3) [options]

Prefills the prompt (in chunks of the sliding window W), then generates one token at a
time and prints it as soon as it is chosen: text when the model folder has a tokenizer,
else the ids separated by spaces. Greedy unless --temperature > 0. Stops at the model's
end-of-sequence id, at a --stop-ids id, after --max-tokens, or, for a model without a
sliding window, at max_position_embeddings.

${MODEL_USAGE}
  --prompt TEXT          text, encoded with the model's tokenizer, BOS first
  --ids LIST             the prompt as comma-separated token ids (no tokenizer needed)
  --max-tokens N         most tokens to generate (default ${DEFAULT_MAX_NEW_TOKENS})
  --temperature T        0 = greedy (default); sampling divides the logits by T
  --top-k K              sample among the K most likely tokens only
  --top-p P              sample among the most likely tokens whose probability reaches P
  --seed S               seed for sampling, 0 ≤ S < 2^32 (default: random, shown by --json)
  --stop-ids LIST        also stop after any of these ids
  --ignore-eos           do not stop at the end-of-sequence id
  --chunk N              prompt tokens per prefill forward (default W, or the whole prompt)
  --json-schema FILE     constrain the output to JSON matching this JSON Schema (needs the
                         tokenizer; see docs/serve.md for the keywords it follows)
  --json                 print one JSON object at the end: prompt_ids, generated_ids, text (with
                         a tokenizer), stop_reason, seed, tokens_per_second, seconds, prefill_seconds,
                         prefill_tokens_per_second (prompt tokens / prefill_seconds) and
                         decode_tokens_per_second (tokens after the first / the time after the
                         prefill; 0 when fewer than 2 tokens were generated)

On a terminal, stderr gets the speed: a final line with tokens/s, and with --json (when
stdout stays quiet) a progress line updated every second.

exit: 0 ok, 2 bad input (ids outside the vocabulary, an empty or too long prompt)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, {
    ...MODEL_OPTIONS,
    prompt: { type: 'string' },
    ids: { type: 'string' },
    'max-tokens': { type: 'string' },
    ...SAMPLING_OPTIONS,
    'stop-ids': { type: 'string' },
    'ignore-eos': { type: 'boolean' },
    chunk: { type: 'string' },
    json: { type: 'boolean' },
    'json-schema': { type: 'string' },
  });
  const text = values.prompt;
  const idsArg = values.ids;
  if ((text === undefined) === (idsArg === undefined)) throw new UsageError('give the prompt as --prompt TEXT or as --ids 1,2,3 (one of them)');
  const maxNewTokens = number(values['max-tokens'], '--max-tokens', DEFAULT_MAX_NEW_TOKENS, { min: 0, integer: true });
  const sampling = samplingFromArgs(values);
  const stopIds = values['stop-ids'] === undefined ? [] : idList(values['stop-ids'], '--stop-ids');
  const prefillChunk = values.chunk === undefined ? undefined : number(values.chunk, '--chunk', 0, { min: 1, integer: true });
  const json = values.json === true;
  const givenIds = idsArg === undefined ? null : idList(idsArg, '--ids');
  const schemaFile = values['json-schema'];
  const schema = schemaFile === undefined ? undefined : readSchema(schemaFile);

  const model = await loadModelFromArgs(values, io);
  try {
    const dir = model.checkpoint.dir;
    const found = hasTokenizer(dir);
    if (text !== undefined && !found) throw new UsageError(`--prompt needs a tokenizer in ${dir} (${TOKENIZER_FILES}); give token ids with --ids`);
    if (schema !== undefined && !found) throw new UsageError(`--json-schema needs a tokenizer in ${dir} (${TOKENIZER_FILES})`);
    const tokenizer: LoadedTokenizer | null = found ? await loadTokenizer(dir) : null;
    if (tokenizer !== null) checkVocabulary(tokenizer, model);
    const constraint = schema === undefined ? undefined
      : jsonConstraint(tokenizer!, schema, { endIds: model.config.eosTokenIds, vocabLimit: model.config.vocabSize });
    const promptIds = givenIds ?? encodePrompt(tokenizer!, text!, '--prompt', true);
    const stream = tokenizer === null ? null : new TextStream((ids) => tokenizer.decode(ids), promptIds.slice(-1));
    const progress = new Progress(io, json);

    const generated: number[] = [];
    let stopReason: StopReason = 'length';
    const t0 = performance.now();
    let prefillSeconds = 0;
    for await (const t of generate(model, promptIds, {
      maxNewTokens, ...sampling, stopIds, stopAtEos: values['ignore-eos'] !== true, prefillChunk, ...(constraint ? { constraint } : {}),
    })) {
      if (t.index === 0) prefillSeconds = (performance.now() - t0) / 1000;
      generated.push(t.id);
      if (t.stopReason !== undefined) stopReason = t.stopReason;
      const piece = stream !== null ? stream.push(t.id) : `${t.index > 0 ? ' ' : ''}${t.id}`;
      if (!json) io.stdout(piece);
      progress.update(generated.length, (performance.now() - t0) / 1000);
    }
    const seconds = (performance.now() - t0) / 1000;
    const tokensPerSecond = seconds > 0 ? generated.length / seconds : 0;
    // Prefill ends when the first generated token is chosen; decode is everything after it.
    // Both are 0 (not null) when there is nothing to divide, like tokens_per_second.
    const prefillTokensPerSecond = generated.length > 0 && prefillSeconds > 0 ? promptIds.length / prefillSeconds : 0;
    const decodeSeconds = seconds - prefillSeconds;
    const decodeTokensPerSecond = generated.length >= 2 && decodeSeconds > 0 ? (generated.length - 1) / decodeSeconds : 0;

    if (json) {
      io.stdout(JSON.stringify({
        prompt_ids: promptIds,
        generated_ids: generated,
        ...(stream !== null ? { text: stream.text } : {}),
        stop_reason: stopReason,
        ...(sampling.temperature > 0 ? { seed: sampling.seed } : {}),
        tokens_per_second: tokensPerSecond,
        seconds,
        prefill_seconds: prefillSeconds,
        prefill_tokens_per_second: prefillTokensPerSecond,
        decode_tokens_per_second: decodeTokensPerSecond,
      }) + '\n');
    } else {
      io.stdout((stream?.flush() ?? '') + '\n');
    }
    progress.done(`generate: ${generated.length} tokens in ${seconds.toFixed(2)} s, ${tokensPerSecond.toFixed(1)} tokens/s ` +
      `(prompt ${promptIds.length} tokens in ${prefillSeconds.toFixed(2)} s; stopped: ${stopReason})`);
    return 0;
  } finally {
    model.dispose();
  }
}

/**
 * Speed on stderr, for a person watching a terminal. While text streams to stdout on the
 * same terminal, a line rewritten in place would tear it, so the running line is shown
 * only with --json; the final line always.
 */
class Progress {
  private lastShown = 0;
  private width = 0;

  constructor(private readonly io: CliIO, private readonly running: boolean) {}

  update(tokens: number, seconds: number): void {
    if (!this.io.interactive || !this.running || seconds - this.lastShown < 1) return;
    this.lastShown = seconds;
    this.show(`generate: ${tokens} tokens, ${(tokens / seconds).toFixed(1)} tokens/s`);
  }

  done(line: string): void {
    if (!this.io.interactive) return;
    if (this.width > 0) this.show(line);
    else this.io.stderr(line);
    this.io.stderr('\n');
  }

  private show(line: string): void {
    this.io.stderr(`\r${line.padEnd(this.width)}`);
    this.width = line.length;
  }
}

/** A schema is KB; this bounds what --json-schema may make us parse. */
const MAX_SCHEMA_BYTES = 1_000_000;

function readSchema(file: string): unknown {
  try {
    return readJsonFile(file, MAX_SCHEMA_BYTES);
  } catch (e) {
    throw new UsageError(`--json-schema ${(e as Error).message}`);
  }
}
