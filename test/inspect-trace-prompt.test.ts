/**
 * `mistral-ref trace --prompt`: how the command uses the tokenizer interface (encode with or
 * without BOS, labels from idToPiece), with a stand-in character tokenizer built from the
 * demo's vocabulary, so this wiring is tested apart from the tokenizer implementation
 * (test/inspect-trace.test.ts runs the real one).
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { afterAll, describe, expect, it, vi } from 'vitest';
import type { TraceReport } from '../src/inspect/trace.js';
import { runCli } from './helpers/cli.js';
import { modelDir } from './helpers/fixtures.js';

const calls: Array<{ text: string; bos: boolean | undefined }> = [];

vi.mock('../src/tokenizer/index.js', () => ({
  loadTokenizer: async (dir: string) => {
    const vocab = JSON.parse(fs.readFileSync(path.join(dir, 'tokenizer.json'), 'utf8')).model.vocab as Record<string, number>;
    const pieces = new Map(Object.entries(vocab).map(([p, id]) => [id, p]));
    return {
      vocabSize: pieces.size, bosId: 1, eosId: 2,
      encode: (text: string, opts?: { bos?: boolean }) => {
        calls.push({ text, bos: opts?.bos });
        return [...(opts?.bos ? [1] : []), ...[...text].map((ch) => vocab[ch]!)];
      },
      decode: (ids: readonly number[]) => ids.map((id) => pieces.get(id)).join(''),
      idToPiece: (id: number) => pieces.get(id)!,
    };
  },
}));

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'mistral-ref-trace-prompt-'));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

describe('mistral-ref trace --prompt (stand-in tokenizer)', () => {
  it('prepends BOS, labels tokens and predictions with pieces', async () => {
    const out = path.join(tmp, 'a');
    const r = await runCli(['trace', '--model', modelDir('mixtral-demo'), '--prompt', '47+38=', '--out', out, '--no-png']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(calls.at(-1)).toEqual({ text: '47+38=', bos: true });
    const report = JSON.parse(fs.readFileSync(path.join(out, 'layers.json'), 'utf8')) as TraceReport;
    expect(report.ids).toEqual([1, 24, 27, 15, 23, 28, 33]);
    expect(report.tokens).toEqual(['<s>', '4', '7', '+', '3', '8', '=']);
    expect(r.stdout).toContain('7 tokens: <s> 4 7 + 3 8 =');
    expect(report.prediction[0]!.piece).toBe('8'); // 47 + 38 = 85
    const svg = fs.readFileSync(path.join(out, 'router.svg'), 'utf8');
    expect(svg).toContain('>0 &lt;s&gt;</text>');
  });

  it('--no-bos encodes without BOS; --ids on a folder with a tokenizer labels with its pieces', async () => {
    const r = await runCli(['trace', '--model', modelDir('mistral-demo'), '--prompt', '1 2', '--no-bos', '--out', path.join(tmp, 'b'), '--no-png']);
    expect(r.code).toBe(0);
    expect(calls.at(-1)).toEqual({ text: '1 2', bos: false });
    expect(r.stdout).toContain('3 tokens: 1 ␣ 2');
    const s = await runCli(['trace', '--model', modelDir('mistral-demo'), '--ids', '1,24,27', '--out', path.join(tmp, 'c'), '--no-png']);
    expect(s.code).toBe(0);
    expect(s.stdout).toContain('3 tokens: <s> 4 7');
  });
});
