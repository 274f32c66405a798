/**
 * Hostile inputs (issue 14), one case per finding: each is exit 2 with one line that names
 * the file, tensor or flag — never a hang, never unbounded memory, never a confident wrong
 * answer. Cases start from a copy of the bundled demo model and break one thing.
 */
import { execFileSync, spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { textLines } from '../src/cli/io.js';
import { useBackend } from '../src/kernels/backend.js';
import { Reference } from '../src/io/reference.js';
import { firstNonFinite, SafetensorsFile } from '../src/io/safetensors.js';
import { NonFiniteError } from '../src/model/errors.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { runWithCache } from '../src/inspect/activations.js';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile, ROOT } from './helpers/fixtures.js';
import { buildSafetensors, tempDir } from './helpers/safetensors-builder.js';

const tmp = tempDir('hostile-test-');
afterAll(tmp.cleanup);
beforeAll(async () => { await useBackend('cpu'); });
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

/** Overwrites elements of an F32 tensor in a safetensors file in place (parsing the header here, not with src/io). */
function poke(file: string, tensor: string, values: (n: number) => Iterable<[number, number]>): void {
  const bytes = fs.readFileSync(file);
  const len = Number(bytes.readBigUInt64LE(0));
  const header = JSON.parse(bytes.subarray(8, 8 + len).toString('utf8')) as Record<string, { dtype: string; data_offsets: [number, number] }>;
  const t = header[tensor]!;
  expect(t.dtype).toBe('F32');
  const base = 8 + len + t.data_offsets[0];
  for (const [i, v] of values((t.data_offsets[1] - t.data_offsets[0]) / 4)) bytes.writeFloatLE(v, base + 4 * i);
  fs.writeFileSync(file, bytes);
}

describe('2: non-finite weights are rejected where they are read', () => {
  const dir = copyOf('mistral-demo');
  const file = path.join(dir, 'model.safetensors');
  poke(file, 'lm_head.weight', () => [[130, NaN]]); // row 1, column 2 of [vocab, 128]

  for (const weights of ['eager', 'resident', 'stream']) {
    it(`generate --weights ${weights}: exit 2 naming tensor and element, not "0 0 0 0 0"`, async () => {
      const r = await runCli(['generate', '--model', dir, '--ids', '1,20,25', '--max-tokens', '5', '--weights', weights]);
      expectOneLine(r, `${file} [lm_head.weight]: holds NaN at element 130 (row 1, column 2); weights must be finite`);
      expect(r.stdout).toBe('');
    });
  }

  it('trace and chat likewise', async () => {
    expectOneLine(await runCli(['trace', '--model', dir, '--ids', '1,20', '--out', path.join(tmp.dir, 'trace-nan')]), '[lm_head.weight]: holds NaN');
    expectOneLine(await runCli(['chat', '--model', dir], ['hi']), '[lm_head.weight]: holds NaN');
  });

  it('stream mode checks the embedding rows it reads', async () => {
    const d = copyOf('mistral-demo');
    poke(path.join(d, 'model.safetensors'), 'model.embed_tokens.weight', () => [[20 * 128 + 5, -Infinity]]);
    const r = await runCli(['generate', '--model', d, '--ids', '1,20', '--max-tokens', '1', '--weights', 'stream']);
    expectOneLine(r, '[model.embed_tokens.weight]: holds -Infinity at element 2565 (row 20, column 5)');
  });

  it('bf16 weights in resident memory: found by the SIMD scan, and in the last bytes it leaves to JS', async () => {
    for (const at of ['middle', 'tail'] as const) {
      const d = copyOf('mistral-tiny-bf16');
      const file = path.join(d, 'model.safetensors');
      const bytes = fs.readFileSync(file);
      const len = Number(bytes.readBigUInt64LE(0));
      const header = JSON.parse(bytes.subarray(8, 8 + len).toString('utf8')) as Record<string, { dtype: string; shape: number[]; data_offsets: [number, number] }>;
      const t = header['model.layers.1.self_attn.q_proj.weight']!;
      expect(t.dtype).toBe('BF16');
      const n = (t.data_offsets[1] - t.data_offsets[0]) / 2;
      const i = at === 'middle' ? 1001 : n - 3;
      bytes.writeUInt16LE(0xff80, 8 + len + t.data_offsets[0] + 2 * i); // -Inf
      fs.writeFileSync(file, bytes);
      const r = await runCli(['generate', '--model', d, '--ids', '1,2', '--max-tokens', '1', '--weights', 'resident']);
      expectOneLine(r, `[model.layers.1.self_attn.q_proj.weight]: holds -Infinity at element ${i} (row ${Math.floor(i / t.shape[1]!)}, column ${i % t.shape[1]!})`);
    }
  });

  it('firstNonFinite finds the first NaN / Inf in f32, bf16 and f16 bits, at any position', () => {
    for (let n = 1; n < 9; n++) {
      for (let at = 0; at < n; at++) {
        const f32 = new Float32Array(n).fill(1.5);
        f32[at] = Infinity;
        expect(firstNonFinite(new Uint8Array(f32.buffer), 'F32')).toBe(at);
        const bf16 = new Uint16Array(n).fill(0x3fc0); // 1.5
        bf16[at] = 0x7fc0; // NaN
        expect(firstNonFinite(new Uint8Array(bf16.buffer), 'BF16')).toBe(at);
        const f16 = new Uint16Array(n).fill(0x3e00); // 1.5
        f16[at] = 0xfc00; // -Inf
        expect(firstNonFinite(new Uint8Array(f16.buffer), 'F16')).toBe(at);
      }
    }
    // The largest finite values are not flagged (exponent bits one short of all ones).
    expect(firstNonFinite(new Uint8Array(new Uint16Array([0x7f7f, 0xff7f, 0x7bff, 0x0080]).buffer), 'BF16')).toBe(-1);
    expect(firstNonFinite(new Uint8Array(new Uint16Array([0x7bff, 0xfbff, 0x3c00]).buffer), 'F16')).toBe(-1);
    expect(firstNonFinite(new Uint8Array(new Float32Array([3.4e38, -3.4e38]).buffer), 'F32')).toBe(-1);
  });
});

describe('2: activations that overflow stop with a typed error naming the first layer', () => {
  const dir = copyOf('mistral-demo');
  // Finite weights whose products overflow float32 in layer 2's MLP.
  poke(path.join(dir, 'model.safetensors'), 'model.layers.2.mlp.down_proj.weight', (n) => Array.from({ length: n }, (_, i): [number, number] => [i, 3e38]));

  it.each(['eager', 'resident'] as const)('Transformer.forward (%s weights) throws NonFiniteError(layer 2) and leaks nothing', (weights) => {
    const model = Transformer.load(dir, { weights });
    try {
      const before = tf.memory().numTensors;
      let caught: unknown;
      try {
        model.forward([1, 20, 25]);
      } catch (e) {
        caught = e;
      }
      expect(caught).toBeInstanceOf(NonFiniteError);
      expect((caught as NonFiniteError).layer).toBe(2);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      model.dispose();
    }
  });

  it('generate: exit 2 before any token', async () => {
    const r = await runCli(['generate', '--model', dir, '--ids', '1,20,25', '--max-tokens', '5']);
    expectOneLine(r, 'activations became non-finite (NaN or ±Inf) in layer 2');
    expect(r.stdout).toBe('');
  });
});

describe('3: trace --out paths that cannot be written are exit 2, never a hang', () => {
  const trace = (out: string, ...more: string[]) =>
    runCli(['trace', '--model', modelDir('mistral-demo'), '--ids', '1,20,25', '--no-png', '--out', out, ...more]);

  it('an existing file, a path under a file, a path under /proc', async () => {
    const file = path.join(tmp.dir, `file-${counter++}`);
    fs.writeFileSync(file, 'x');
    expectOneLine(await trace(file), `--out ${file}: exists and is not a folder`);
    expectOneLine(await trace(path.join(file, 'sub', 'dir')), `--out ${path.join(file, 'sub', 'dir')}: ${file} is not a folder`);
    expectOneLine(await trace('/proc/x'), '--out /proc/x: cannot create /proc/x.partial');
    // A folder we may not write to (tests run as root, which passes permission bits: sysfs refuses even root).
    if (fs.existsSync('/sys/kernel')) {
      expectOneLine(await trace('/sys/kernel/x'), '--out /sys/kernel/x: cannot create /sys/kernel/x.partial (operation not permitted, EPERM)');
    }
  });

  it('a second run replaces the first run\'s files as a whole: no stale pictures', async () => {
    const out = path.join(tmp.dir, `trace-${counter++}`);
    expect((await trace(out)).code).toBe(0);
    expect(fs.readdirSync(out)).toContain('attention-layer-3.svg');
    expect((await trace(out, '--layers', '0')).code).toBe(0);
    expect(fs.readdirSync(out).sort()).toEqual(['attention-layer-0.svg', 'layers.json', 'layers.md', 'logit-lens.svg']);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
  });

  it('a folder with files trace did not write is refused and left alone', async () => {
    const out = path.join(tmp.dir, `trace-${counter++}`);
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'notes.txt'), 'mine');
    expectOneLine(await trace(out), `--out ${out}: exists and holds "notes.txt", not a trace`);
    expect(fs.readdirSync(out)).toEqual(['notes.txt']);
  });
});

describe('6: synth writes atomically', () => {
  const SMALL = ['--preset', 'mistral-7b-v0.1', '--layers', '4', '--hidden', '512', '--intermediate', '2048', '--vocab', '1000', '--heads', '8', '--kv-heads', '2'];

  it('two concurrent runs into one folder: one writes, the other exits 2', async () => {
    const out = path.join(tmp.dir, `synth-${counter++}`);
    const [a, b] = await Promise.all([runCli(['synth', ...SMALL, '--out', out]), runCli(['synth', ...SMALL, '--seed', '1', '--out', out])]);
    expect(a.code, a.stderr).toBe(0);
    expectOneLine(b, `--out ${out}: ${out}.partial exists: another run is writing a checkpoint there`);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
    // Run again after the first finished: the folder is not empty, nothing is overwritten.
    expectOneLine(await runCli(['synth', ...SMALL, '--out', out]), 'exists and holds "config.json", not a checkpoint');
  });

  it('Ctrl-C removes the partial output and leaves no folder behind', async () => {
    const out = path.join(tmp.dir, `synth-${counter++}`);
    const child = spawn(process.execPath, ['--import', 'tsx', path.join(ROOT, 'src', 'cli', 'bin.ts'), 'synth',
      '--preset', 'mistral-7b-v0.1', '--layers', '2', '--out', out], { cwd: ROOT, stdio: 'ignore' });
    const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
    for (let i = 0; i < 600 && !fs.existsSync(`${out}.partial`); i++) await new Promise((r) => setTimeout(r, 50));
    expect(fs.existsSync(`${out}.partial`)).toBe(true);
    await new Promise((r) => setTimeout(r, 300)); // writing by now
    child.kill('SIGINT');
    expect(await exited).toBe(130);
    expect(fs.existsSync(`${out}.partial`)).toBe(false);
    expect(fs.existsSync(out)).toBe(false);
  });
});

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

describe('7: a tokenizer/model vocabulary mismatch is found before the first token', () => {
  const dir = copyOf('mistral-demo');
  // Drop the tokenizer's last id: 98 ids for a model of 99.
  editJson(path.join(dir, 'tokenizer.json'), (j) => {
    const vocab = (j.model as { vocab: Record<string, number> }).vocab;
    const last = Object.entries(vocab).find(([, id]) => id === 98)![0];
    delete vocab[last];
  });
  const line = `the tokenizer ${path.join(dir, 'tokenizer.json')} has 98 ids but the model's vocab_size is 99 (${path.join(dir, 'config.json')}); they must match`;

  it('generate, trace and chat: exit 2, nothing streamed', async () => {
    const g = await runCli(['generate', '--model', dir, '--prompt', '47+38=', '--max-tokens', '3']);
    expectOneLine(g, line);
    expect(g.stdout).toBe('');
    expectOneLine(await runCli(['trace', '--model', dir, '--prompt', '47+38=', '--out', path.join(tmp.dir, `t-${counter++}`)]), line);
    const c = await runCli(['chat', '--model', dir], ['hello']);
    expectOneLine(c, line);
    expect(c.stdout).toBe('');
  });
});

describe('9: no silent leniency', () => {
  const config = (edit: (j: Record<string, unknown>) => void) => {
    const dir = copyOf('mistral-demo');
    editJson(path.join(dir, 'config.json'), edit);
    return dir;
  };
  const gen = (dir: string, ...more: string[]) => runCli(['generate', '--model', dir, '--ids', '1,20,25', '--max-tokens', '2', ...more]);

  it.each([
    ['rope_scaling', { type: 'linear', factor: 2 }, 'rope_scaling: {"type":"linear","factor":2} changes the computation and is not implemented (only null is)'],
    ['attention_bias', true, 'attention_bias: true changes the computation and is not implemented (only false is)'],
    ['quantization_config', { quant_method: 'gptq' }, 'quantization_config: {"quant_method":"gptq"} changes the computation'],
    ['some_new_knob', 3, 'some_new_knob: unknown key, not known to be safe to ignore'],
    ['tie_word_embeddings', 'true', 'tie_word_embeddings: expected true or false, got "true"'],
    ['eos_token_id', 5000, 'eos_token_id: 5000 is outside the vocabulary of 99'],
  ])('config %s = %j is rejected with the key named', async (key, value, message) => {
    const dir = config((j) => { j[key] = value; });
    expectOneLine(await gen(dir), `${path.join(dir, 'config.json')}: ${message}`);
  });

  it('keys known to be harmless, and neutral values, still load', async () => {
    const dir = config((j) => { Object.assign(j, { rope_scaling: null, attention_bias: false, _name_or_path: 'x', pad_token_id: null }); });
    expect((await gen(dir)).code).toBe(0);
  });

  it('a tensor the config does not use is an error (generate and parity), a derived inv_freq is not', async () => {
    const dir = copyOf('mistral-demo');
    const file = path.join(dir, 'model.safetensors');
    const f = SafetensorsFile.open(file);
    const tensors = [...f.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: f.readBytes(t.name) }));
    f.close();
    fs.writeFileSync(file, buildSafetensors([...tensors, { name: 'model.layers.4.mlp.up_proj.weight', shape: [2, 2] }]));
    const msg = `${file} [model.layers.4.mlp.up_proj.weight]: tensor not used by this config: a different architecture, or a config that does not describe these files?`;
    expectOneLine(await gen(dir), msg);
    expectOneLine(await runCli(['parity', '--model', dir, '--reference', refFile('mistral-demo')]), msg);
    fs.writeFileSync(file, buildSafetensors([...tensors, { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [16] }]));
    expect((await gen(dir)).code).toBe(0);
  });

  it('--ids takes decimal digits only', async () => {
    expectOneLine(await gen(modelDir('mistral-demo'), '--ids', '0x10,1e1'), '--ids expects comma-separated non-negative integers, got "0x10,1e1"');
    expectOneLine(await runCli(['generate', '--model', modelDir('mistral-demo'), '--ids', '1, 2.0', '--max-tokens', '1']), '--ids expects');
  });

  it('a prompt character outside a tokenizer without byte fallback is an error, not a silent <unk>', async () => {
    const r = await runCli(['generate', '--model', modelDir('mistral-demo'), '--prompt', '47+é8=', '--max-tokens', '2']);
    expectOneLine(r, `--prompt: character "é" at index 3 is outside the vocabulary of ${path.join(modelDir('mistral-demo'), 'tokenizer.json')} (it would become <unk>, id 0)`);
  });
});

describe('4: a library error after useBackend(\'wasm\') is Node\'s own report (exit 1), not exit 7', () => {
  it('the wasm glue\'s rethrowing process handlers are removed', () => {
    const script = path.join(tmp.dir, `wasm-throw-${counter++}.mts`);
    fs.writeFileSync(script, `import { useBackend, Transformer } from ${JSON.stringify(path.join(ROOT, 'src', 'index.ts'))};\n` +
      "await useBackend('wasm');\nTransformer.load('no-such-model-folder');\n");
    const r = spawnSync(process.execPath, ['--import', 'tsx', script], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    expect(r.status, r.stderr).toBe(1);
    expect(r.stderr).toContain('CheckpointError: no-such-model-folder: not a directory: nothing exists at this path');
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

  it('a reference whose logits have the wrong shape names both shapes, not "max |Δ| Infinity"', async () => {
    const golden = Reference.open(refFile('mistral-demo'));
    const p = golden.prompts[0]!;
    const logits = golden.tensor(p.tensors.logits);
    golden.close();
    const dir = path.join(tmp.dir, `ref-${counter++}`);
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'r.safetensors'), buildSafetensors([{ name: 'x.logits', shape: logits.shape, values: logits.data }]));
    fs.writeFileSync(path.join(dir, 'r.json'), JSON.stringify({
      schema: 'mistral-golden-ref/1', tensors_file: 'r.safetensors',
      prompts: [{ name: 'x', input_ids: p.input_ids.slice(0, -1), tensors: { logits: 'x.logits' } }],
    }));
    const T = p.input_ids.length;
    const r = await runCli(['parity', '--model', modelDir('mistral-demo'), '--reference', path.join(dir, 'r.json')]);
    expectOneLine(r, `${path.join(dir, 'r.safetensors')} [x.logits]: reference tensor has shape [${T}, 99], the model's logits for these input_ids has shape [${T - 1}, 99]`);
  });

  it("docs/hooks.md's runWithCache snippet runs: stack() over names it captured", () => {
    const md = fs.readFileSync(path.join(ROOT, 'docs', 'hooks.md'), 'utf8');
    expect(md).toContain("names: (name) => name === 'blocks.0.attn.hook_pattern' || name.endsWith('.hook_resid_post'),");
    const model = Transformer.load(modelDir('mistral-demo'));
    try {
      const { result, cache } = runWithCache(model, [1, 20, 25], {
        names: (name) => name === 'blocks.0.attn.hook_pattern' || name.endsWith('.hook_resid_post'),
      });
      expect(cache.get('blocks.0.attn.hook_pattern').shape).toEqual([4, 3, 3]);
      const resid = cache.stack('hook_resid_post', model.config.numLayers);
      expect(resid.shape).toEqual([4, 3, 128]);
      resid.dispose();
      cache.dispose();
      disposeResult(result);
    } finally {
      model.dispose();
    }
  });

  it('synth under /proc names the folder it cannot create, not "needs 0.1 MB, 0.0 MB free"', async () => {
    const r = await runCli(['synth', '--preset', 'mistral-7b-v0.1', '--layers', '1', '--hidden', '64', '--intermediate', '128', '--vocab', '100', '--out', '/proc/x']);
    expectOneLine(r, '--out /proc/x: cannot create /proc/x.partial');
  });

  it('bare mistral-ref prints the usage on stderr (exit 2); --help on stdout (exit 0)', async () => {
    const bare = await runCli([]);
    expect(bare.code).toBe(2);
    expect(bare.stdout).toBe('');
    expect(bare.stderr).toContain('usage: mistral-ref <command> [options]');
    const help = await runCli(['--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: mistral-ref <command> [options]');
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

