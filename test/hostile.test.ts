/**
 * Hostile inputs (issue 14), one case per finding: each is exit 2 with one line that names
 * the file, tensor or flag — never a hang, never unbounded memory, never a confident wrong
 * answer. Cases start from a copy of the bundled demo model and break one thing.
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, describe, expect, it } from 'vitest';
import { textLines } from '../src/cli/io.js';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile } from './helpers/fixtures.js';
import { tempDir } from './helpers/safetensors-builder.js';

const tmp = tempDir('hostile-test-');
afterAll(tmp.cleanup);
let counter = 0;

function copyOf(model: string): string {
  const dir = path.join(tmp.dir, `${model}-${counter++}`);
  fs.cpSync(modelDir(model), dir, { recursive: true });
  return dir;
}

function fifo(name: string): string {
  const file = path.join(tmp.dir, `${name}-${counter++}`);
  execFileSync('mkfifo', [file]);
  return file;
}

/** The CLI's contract for bad input: exit 2, one line on stderr, nothing like a stack. */
function expectOneLine(r: { code: number; stderr: string }, ...parts: string[]): void {
  expect(r.code, r.stderr).toBe(2);
  expect(r.stderr.trimEnd().split('\n')).toHaveLength(1);
  for (const p of parts) expect(r.stderr).toContain(p);
}

describe('5: non-regular files are refused before they are opened for a blocking read', () => {
  it('a FIFO as model.safetensors', async () => {
    const dir = copyOf('mistral-demo');
    const file = path.join(dir, 'model.safetensors');
    fs.rmSync(file);
    execFileSync('mkfifo', [file]);
    const r = await runCli(['generate', '--model', dir, '--ids', '1,2', '--max-tokens', '1']);
    expectOneLine(r, `${file}: not a regular file (a FIFO)`);
  });

  it('a FIFO as --tokenizer', async () => {
    const f = fifo('tok.json');
    const r = await runCli(['tokenize', '--tokenizer', f, 'abc']);
    expectOneLine(r, `${f}: not a regular file`);
  });

  it('/dev/zero as --tokenizer, --reference and --tools', async () => {
    expectOneLine(await runCli(['tokenize', '--tokenizer', '/dev/zero', 'abc']), '/dev/zero: not a regular file');
    expectOneLine(await runCli(['parity', '--model', modelDir('mistral-demo'), '--reference', '/dev/zero']),
      '/dev/zero: not a regular file (a character device)');
    expectOneLine(await runCli(['chat', '--model', modelDir('mistral-demo'), '--tools', '/dev/zero']),
      '--tools /dev/zero: not a regular file (a character device)');
  });

  it('a stdin line without end is refused at the size cap, not buffered without bound', async () => {
    async function* zeros() { for (let i = 0; i < 100; i++) yield new Uint8Array(1000); }
    const lines = textLines(zeros(), 10_000);
    await expect(lines.next()).rejects.toThrow('stdin line 1: longer than 10000 bytes');
  });
});

describe('10: messages', () => {
  it('a config.json that is a folder is "not a regular file", not "not valid JSON (EISDIR)"', async () => {
    const dir = copyOf('mistral-demo');
    fs.rmSync(path.join(dir, 'config.json'));
    fs.mkdirSync(path.join(dir, 'config.json'));
    const r = await runCli(['generate', '--model', dir, '--ids', '1,2']);
    expectOneLine(r, `${path.join(dir, 'config.json')}: not a regular file (a directory)`);
  });

  it('a reference that is absent says so', async () => {
    const r = await runCli(['parity', '--model', modelDir('mistral-demo'), '--reference', path.join(tmp.dir, 'none.json')]);
    expectOneLine(r, 'none.json: not found');
  });
});

describe('9: stdin', () => {
  it('invalid UTF-8 on stdin is an error naming the line, not U+FFFD', async () => {
    const input = Readable.from([Buffer.from('"ok"\n'), Buffer.from([0x22, 0xff, 0x22, 0x0a])]);
    const lines = textLines(input);
    expect((await lines.next()).value).toBe('"ok"');
    await expect(lines.next()).rejects.toThrow('stdin line 2: not valid UTF-8');
  });

  it('CRLF and a last line without newline', async () => {
    const out: string[] = [];
    for await (const l of textLines(Readable.from([Buffer.from('a\r\nb\nc')]))) out.push(l);
    expect(out).toEqual(['a', 'b', 'c']);
  });
});

void refFile;
