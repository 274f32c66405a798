import { loadTokenizer } from '../../tokenizer/index.js';
import { parse, required } from '../args.js';
import { table } from '../common.js';
import { UsageError } from '../errors.js';
import type { CliIO } from '../io.js';

export const summary = 'encode text with tokenizer.json or a SentencePiece tokenizer.model';

export const usage = `usage: mistral-ref tokenize --tokenizer FILE|DIR [--bos] [--jsonl] [TEXT...]

Encodes text. FILE is a SentencePiece tokenizer.model* (Mistral's tokenizer.model.v1/.v3/.v7)
or a Hugging Face tokenizer.json; DIR is a model folder (tokenizer.model.v* first, then
tokenizer.model, then tokenizer.json).

  --tokenizer FILE|DIR   the tokenizer
  --bos                  prepend the BOS id (default: no BOS)
  --jsonl                read stdin: every line is one JSON string; write for each the JSON
                         array of its ids on one line (nothing else on stdout)

Without --jsonl, each TEXT argument is printed with its ids and pieces.

exit: 0 ok, 2 bad input (no tokenizer, a stdin line that is not a JSON string)
`;

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values, positionals } = parse(args, {
    tokenizer: { type: 'string' },
    bos: { type: 'boolean' },
    jsonl: { type: 'boolean' },
  }, true);
  const file = required(values.tokenizer, '--tokenizer');
  const bos = values.bos === true;
  if (values.jsonl === true && positionals.length > 0) throw new UsageError('--jsonl reads the texts from stdin: give no TEXT arguments');
  if (values.jsonl !== true && positionals.length === 0) throw new UsageError('give the texts to encode as arguments, or --jsonl to read them from stdin');
  const tok = await loadTokenizer(file);

  if (values.jsonl === true) {
    let n = 0;
    for await (const line of io.stdin()) {
      n++;
      let text: unknown;
      try {
        text = JSON.parse(line);
      } catch {
        text = undefined;
      }
      if (typeof text !== 'string') {
        throw new UsageError(`stdin line ${n}: expected a JSON string, got ${JSON.stringify(line.length > 40 ? `${line.slice(0, 40)}…` : line)}`);
      }
      io.stdout(JSON.stringify(tok.encode(text, { bos })) + '\n');
      await io.drain?.(); // output to a slow reader waits, instead of piling up in memory
    }
    return 0;
  }

  positionals.forEach((text, i) => {
    const ids = tok.encode(text, { bos });
    if (i > 0) io.stdout('\n');
    io.stdout(`${JSON.stringify(text)}: ${ids.length} token${ids.length === 1 ? '' : 's'}\n`);
    io.stdout(table(['id', 'piece'], ids.map((id) => [String(id), JSON.stringify(tok.idToPiece(id))])));
  });
  return 0;
}
