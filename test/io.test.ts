/**
 * Bad checkpoints, one case each: a typed error from Transformer.load whose message names
 * the file, the tensor or the config key, and the same message as the CLI's one line with
 * exit 2 (`parity`, `generate`, `inspect` on the folder). Each case starts from a copy of
 * a golden checkpoint and breaks one thing.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { CheckpointError, SafetensorsFormatError } from '../src/io/errors.js';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { ConfigError, WeightError } from '../src/model/errors.js';
import { Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile, ROOT } from './helpers/fixtures.js';
import { buildSafetensors, tempDir, type TensorDef } from './helpers/safetensors-builder.js';

const tmp = tempDir('io-test-');
afterAll(tmp.cleanup);
let counter = 0;

/** A private copy of a golden checkpoint folder. */
function copyOf(model: string): string {
  const dir = path.join(tmp.dir, `${model}-${counter++}`);
  fs.cpSync(modelDir(model), dir, { recursive: true });
  return dir;
}

/** Rewrites a safetensors file through `edit`, keeping the bytes of untouched tensors. */
function rewrite(file: string, edit: (tensors: TensorDef[]) => TensorDef[]): void {
  const f = SafetensorsFile.open(file);
  const tensors = [...f.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: t.shape, bytes: f.readBytes(t.name) }));
  f.close();
  fs.writeFileSync(file, buildSafetensors(edit(tensors)));
}

function editJson(file: string, edit: (json: Record<string, unknown>) => void): void {
  const json = JSON.parse(fs.readFileSync(file, 'utf8')) as Record<string, unknown>;
  edit(json);
  fs.writeFileSync(file, JSON.stringify(json));
}

const config = (dir: string, edit: (json: Record<string, unknown>) => void) => editJson(path.join(dir, 'config.json'), edit);
const weightsFile = (dir: string) => path.join(dir, 'model.safetensors');

interface Case {
  readonly name: string;
  readonly model: string;
  readonly make: (dir: string) => void;
  readonly error: abstract new (...a: never[]) => Error;
  /** The exact message, given the folder (a JSON parse error ends in V8's own wording, matched loosely). */
  readonly message: (dir: string) => string;
  /** Whether `inspect` still reads the folder and lists the problem (exit 1) rather than failing (exit 2). */
  readonly inspectLists?: boolean;
}

const CASES: Case[] = [
  // --- tensors against the config
  {
    name: 'a missing tensor',
    model: 'mistral-tiny',
    make: (d) => rewrite(weightsFile(d), (ts) => ts.filter((t) => t.name !== 'model.layers.1.mlp.up_proj.weight')),
    error: WeightError,
    message: (d) => `${weightsFile(d)} [model.layers.1.mlp.up_proj.weight]: missing tensor (expected shape [176,64] from ${d}/config.json)`,
    inspectLists: true,
  },
  {
    name: 'a tensor whose shape does not fit the config',
    model: 'mistral-tiny',
    make: (d) => rewrite(weightsFile(d), (ts) => ts.map((t) => (t.name === 'model.layers.2.self_attn.o_proj.weight' ? { ...t, shape: [128, 32] } : t))),
    error: WeightError,
    message: (d) => `${weightsFile(d)} [model.layers.2.self_attn.o_proj.weight]: shape [128,32] does not fit the config: expected [64,64]`,
    inspectLists: true,
  },
  {
    name: 'a tensor of a dtype that is not a float',
    model: 'mistral-tiny',
    make: (d) => rewrite(weightsFile(d), (ts) => ts.map((t) => (t.name === 'model.norm.weight' ? { ...t, dtype: 'I32' } : t))),
    error: WeightError,
    message: (d) => `${weightsFile(d)} [model.norm.weight]: dtype I32 cannot be read as float32 (supported: F32, F16, BF16)`,
    inspectLists: true,
  },
  {
    name: 'a config with fewer heads than its tensors (native layout)',
    model: 'mistral-tiny-native',
    make: (d) => editJson(path.join(d, 'params.json'), (j) => { j.n_heads = 2; j.head_dim = 16; }),
    error: WeightError,
    message: (d) => `${d}/consolidated.safetensors [layers.0.attention.wq.weight]: shape [64,64] does not fit the config: expected [32,64]`,
    inspectLists: true,
  },
  // --- malformed safetensors
  {
    name: 'a truncated shard',
    model: 'mistral-tiny',
    make: (d) => fs.truncateSync(weightsFile(d), fs.statSync(weightsFile(d)).size - 10),
    error: SafetensorsFormatError,
    message: (d) => `${weightsFile(d)} [lm_head.weight]: data_offsets [810752, 1066752] run past the end of the data buffer (1066742 bytes; file truncated?)`,
  },
  {
    name: 'a header length beyond the file',
    model: 'mistral-tiny',
    make: (d) => { const fd = fs.openSync(weightsFile(d), 'r+'); fs.writeSync(fd, Buffer.from(new BigUint64Array([1n << 40n]).buffer), 0, 8, 0); fs.closeSync(fd); },
    error: SafetensorsFormatError,
    message: (d) => `${weightsFile(d)}: header length 1099511627776 exceeds the 100000000-byte limit`,
  },
  {
    name: 'a duplicate tensor name',
    model: 'mistral-tiny',
    make: (d) => {
      const entry = '{"dtype":"F32","shape":[1],"data_offsets":[0,4]}';
      fs.writeFileSync(weightsFile(d), buildSafetensors([{ name: 'x', shape: [1] }], { headerText: `{"model.norm.weight":${entry},"model.norm.weight":${entry}}` }));
    },
    error: SafetensorsFormatError,
    message: (d) => `${weightsFile(d)} [model.norm.weight]: tensor name appears twice in the header`,
  },
  // --- sharded checkpoints
  {
    name: 'a shard named in the index but absent',
    model: 'mistral-tiny-sharded',
    make: (d) => fs.rmSync(path.join(d, 'model-00002-of-00002.safetensors')),
    error: CheckpointError,
    message: (d) => `${d}/model-00002-of-00002.safetensors: shard named in model.safetensors.index.json is absent`,
  },
  {
    name: 'a tensor in two shards',
    model: 'mistral-tiny-sharded',
    make: (d) => {
      const first = path.join(d, 'model-00001-of-00002.safetensors');
      rewrite(first, (ts) => [...ts, { name: 'model.norm.weight', shape: [64], bytes: new Uint8Array(256) }]);
    },
    error: CheckpointError,
    message: (d) => `${d}/model-00002-of-00002.safetensors [model.norm.weight]: tensor also present in ${d}/model-00001-of-00002.safetensors`,
  },
  {
    name: 'an index that puts a tensor in the wrong shard',
    model: 'mistral-tiny-sharded',
    make: (d) => editJson(path.join(d, 'model.safetensors.index.json'), (j) => {
      (j.weight_map as Record<string, string>)['lm_head.weight'] = 'model-00001-of-00002.safetensors';
    }),
    error: CheckpointError,
    message: (d) => `${d}/model.safetensors.index.json [lm_head.weight]: index says this tensor is in model-00001-of-00002.safetensors, but it is in model-00002-of-00002.safetensors`,
  },
  {
    name: 'an index naming a tensor no shard has',
    model: 'mistral-tiny-sharded',
    make: (d) => editJson(path.join(d, 'model.safetensors.index.json'), (j) => {
      (j.weight_map as Record<string, string>)['model.layers.9.extra'] = 'model-00001-of-00002.safetensors';
    }),
    error: CheckpointError,
    message: (d) => `${d}/model.safetensors.index.json [model.layers.9.extra]: index says this tensor is in model-00001-of-00002.safetensors, but no shard has it`,
  },
  {
    name: 'an index pointing outside the folder',
    model: 'mistral-tiny-sharded',
    make: (d) => editJson(path.join(d, 'model.safetensors.index.json'), (j) => {
      (j.weight_map as Record<string, string>)['lm_head.weight'] = '../../etc/passwd.safetensors';
    }),
    error: CheckpointError,
    message: (d) => `${d}/model.safetensors.index.json [lm_head.weight]: weight_map entry "../../etc/passwd.safetensors" is not a .safetensors file name in this folder`,
  },
  {
    name: 'an index that is not JSON',
    model: 'mistral-tiny-sharded',
    make: (d) => fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '{"weight_map": {'),
    error: CheckpointError,
    message: (d) => `${d}/model.safetensors.index.json: not valid JSON (…)`,
  },
  {
    name: 'an index without weight_map',
    model: 'mistral-tiny-sharded',
    make: (d) => fs.writeFileSync(path.join(d, 'model.safetensors.index.json'), '[]'),
    error: CheckpointError,
    message: (d) => `${d}/model.safetensors.index.json: has no "weight_map" object`,
  },
  // --- config values: zero, negative, inconsistent, unreadable
  ...([
    ['num_hidden_layers zero', (j: Record<string, unknown>) => { j.num_hidden_layers = 0; }, 'num_hidden_layers: expected an integer ≥ 1, got 0'],
    ['hidden_size negative', (j: Record<string, unknown>) => { j.hidden_size = -64; }, 'hidden_size: expected an integer ≥ 1, got -64'],
    ['vocab_size not an integer', (j: Record<string, unknown>) => { j.vocab_size = '1000'; }, 'vocab_size: expected an integer ≥ 1, got "1000"'],
    ['rms_norm_eps zero', (j: Record<string, unknown>) => { j.rms_norm_eps = 0; }, 'rms_norm_eps: expected a positive number, got 0'],
    ['rope_theta negative', (j: Record<string, unknown>) => { j.rope_theta = -1; }, 'rope_theta: expected a positive number, got -1'],
    ['sliding_window zero', (j: Record<string, unknown>) => { j.sliding_window = 0; }, 'sliding_window: expected an integer ≥ 1, got 0'],
    ['heads not divisible by kv heads', (j: Record<string, unknown>) => { j.num_key_value_heads = 3; }, 'num_key_value_heads: 4 attention heads are not divisible by 3 key/value heads'],
    ['an odd head_dim', (j: Record<string, unknown>) => { j.head_dim = 15; }, 'head_dim: RoPE rotates pairs, so head_dim must be even, got 15'],
    ['hidden not divisible by heads, no head_dim', (j: Record<string, unknown>) => { delete j.head_dim; j.num_attention_heads = 6; j.num_key_value_heads = 2; }, 'head_dim: missing, and hidden size 64 is not divisible by 6 heads'],
    ['rope_theta missing', (j: Record<string, unknown>) => { delete j.rope_theta; }, 'rope_theta: missing; state it explicitly (Mistral 7B v0.1/v0.2: 10000; v0.3 and Mixtral 8x7B: 1000000)'],
    ['an unknown model_type', (j: Record<string, unknown>) => { j.model_type = 'llama'; }, 'model_type: expected "mistral" or "mixtral", got "llama"'],
  ] as const).map(([name, edit, msg]): Case => ({
    name: `config: ${name}`,
    model: 'mistral-tiny',
    make: (d) => config(d, edit),
    error: ConfigError,
    message: (d) => `${d}/config.json: ${msg}`,
    inspectLists: true,
  })),
  {
    name: 'config: a billion layers (checked against the files, not enumerated)',
    model: 'mistral-tiny',
    make: (d) => config(d, (j) => { j.num_hidden_layers = 1_000_000_000; }),
    error: WeightError,
    message: (d) => `${weightsFile(d)} [model.layers.3…999999999]: config says 1000000000 layers, the files hold 3`,
    inspectLists: true,
  },
  {
    name: 'config: more experts than the files hold',
    model: 'mixtral-tiny',
    make: (d) => config(d, (j) => { j.num_local_experts = 2 ** 40; }),
    error: WeightError,
    message: (d) => `${weightsFile(d)} [experts.4…1099511627775]: config says 1099511627776 experts per layer, the files hold 4`,
    inspectLists: true,
  },
  {
    name: 'config: more experts per token than experts',
    model: 'mixtral-tiny',
    make: (d) => config(d, (j) => { j.num_experts_per_tok = 5; }),
    error: ConfigError,
    message: (d) => `${d}/config.json: num_experts_per_tok: 5 chosen experts but only 4 exist`,
    inspectLists: true,
  },
  {
    name: 'config: not valid UTF-8',
    model: 'mistral-tiny',
    make: (d) => fs.writeFileSync(path.join(d, 'config.json'), Buffer.from([0x7b, 0xc3, 0x28, 0x7d])),
    error: CheckpointError,
    message: (d) => `${d}/config.json: is not valid UTF-8`,
  },
  {
    name: 'config: not JSON',
    model: 'mistral-tiny',
    make: (d) => fs.writeFileSync(path.join(d, 'config.json'), '{"hidden_size": 64,}'),
    error: CheckpointError,
    message: (d) => `${d}/config.json: not valid JSON (…)`,
  },
  // --- not a safetensors checkpoint at all
  ...(['pytorch_model.bin', 'consolidated.00.pth', 'model.pt'].map((pickle): Case => ({
    name: `a PyTorch pickle (${pickle})`,
    model: 'mistral-tiny',
    make: (d) => { fs.rmSync(weightsFile(d)); fs.writeFileSync(path.join(d, pickle), 'PK\x03\x04'); },
    error: CheckpointError,
    message: (d) => `${d}/${pickle}: PyTorch pickle checkpoints are not read (unpickling can run arbitrary code); only safetensors is. ` +
      'Convert once in Python: `from safetensors.torch import save_file; save_file(torch.load(f), "model.safetensors")`, ' +
      'or `AutoModelForCausalLM.from_pretrained(dir).save_pretrained(out, safe_serialization=True)`',
  }))),
  {
    name: 'a folder without weights',
    model: 'mistral-tiny',
    make: (d) => fs.rmSync(weightsFile(d)),
    error: CheckpointError,
    message: (d) => `${d}: no .safetensors files in this folder`,
  },
  {
    name: 'a folder without config.json',
    model: 'mistral-tiny',
    make: (d) => fs.rmSync(path.join(d, 'config.json')),
    error: CheckpointError,
    message: (d) => `${d}/config.json: missing (an HF checkpoint needs config.json; a native one params.json)`,
  },
];

/** Exact equality, except that "(…)" stands for any parenthesised text on the same line. */
function expectMessage(actual: string, expected: string): void {
  if (!expected.includes('(…)')) return void expect(actual).toBe(expected);
  const [head, tail] = expected.split('(…)') as [string, string];
  expect(actual.startsWith(head + '(') && actual.endsWith(')' + tail) && !actual.slice(0, -1).includes('\n'), actual).toBe(true);
}

const made = new Map<string, string>();
function folder(c: Case): string {
  let dir = made.get(c.name);
  if (dir === undefined) {
    dir = copyOf(c.model);
    c.make(dir);
    made.set(c.name, dir);
  }
  return dir;
}

describe('loading a bad checkpoint throws one typed error', () => {
  it.each(CASES)('$name', (c) => {
    const dir = folder(c);
    let error: unknown;
    try {
      Transformer.load(dir).dispose();
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(c.error);
    expect(error).toBeInstanceOf(CheckpointError);
    expectMessage((error as Error).message, c.message(dir));
  });
});

const generateAvailable = fs.existsSync(path.join(ROOT, 'src/generate/index.ts'));

describe('the CLI answers each with exit 2 and one line', () => {
  it.each(CASES)('parity: $name', async (c) => {
    const dir = folder(c);
    const r = await runCli(['parity', '--model', dir, '--reference', refFile(c.model.startsWith('mixtral') ? 'mixtral-tiny' : 'mistral-tiny')]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expectMessage(r.stderr, `mistral-ref parity: ${c.message(dir)}\n`);
  });

  it.skipIf(!generateAvailable).each(CASES.filter((c) => !c.name.startsWith('config')))('generate: $name', async (c) => {
    const dir = folder(c);
    const r = await runCli(['generate', '--model', dir, '--ids', '1,5,9', '--max-tokens', '2']);
    expect(r.code).toBe(2);
    expectMessage(r.stderr, `mistral-ref generate: ${c.message(dir)}\n`);
  });

  it.each(CASES.filter((c) => !c.inspectLists))('inspect: $name', async (c) => {
    const dir = folder(c);
    const r = await runCli(['inspect', '--model', dir]);
    expect(r.code).toBe(2);
    expect(r.stdout).toBe('');
    expectMessage(r.stderr, `mistral-ref inspect: ${c.message(dir)}\n`);
  });

  it('--model naming a pickle file directly', async () => {
    const file = path.join(tmp.dir, 'pytorch_model.bin');
    fs.writeFileSync(file, 'x');
    const r = await runCli(['inspect', '--model', file]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(new RegExp(`^mistral-ref inspect: ${file}: PyTorch pickle checkpoints are not read .*only safetensors is\\. Convert once in Python: .*\\n$`));
    const missing = await runCli(['inspect', '--model', path.join(tmp.dir, 'nowhere')]);
    expect(missing.stderr).toBe(`mistral-ref inspect: ${tmp.dir}/nowhere: not a directory: nothing exists at this path\n`);
  });
});

describe('inspect', () => {
  it.each(CASES.filter((c) => c.inspectLists))('lists the problem and exits 1: $name', async (c) => {
    const dir = folder(c);
    const r = await runCli(['inspect', '--model', dir, '--json']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as { problems: Array<{ kind: string; tensor: string; file: string; message: string }> };
    const p = report.problems[0]!;
    // The load error's message is `file [tensor]: message` or, for the config, the whole line.
    expect(p.kind === 'config' ? p.message : `${p.file} [${p.tensor}]: ${p.message}`).toBe(c.message(dir));
  });

  it('reports every problem, not just the first, in text and JSON', async () => {
    const dir = copyOf('mistral-tiny');
    rewrite(weightsFile(dir), (ts) => [
      ...ts.filter((t) => t.name !== 'model.layers.0.mlp.up_proj.weight' && t.name !== 'lm_head.weight')
        .map((t) => (t.name === 'model.layers.1.self_attn.k_proj.weight' ? { ...t, shape: [64, 32] } : t)),
      { name: 'model.layers.0.self_attn.rotary_emb.inv_freq', shape: [8] },
    ]);
    const text = await runCli(['inspect', '--model', dir]);
    expect(text.code).toBe(1);
    expect(text.stdout).toContain('\n4 problems:\n' +
      '  missing  model.layers.0.mlp.up_proj.weight: missing tensor (expected shape [176,64] from ' + dir + '/config.json)\n' +
      '  shape    model.layers.1.self_attn.k_proj.weight: shape [64,32] does not fit the config: expected [32,64] (model.safetensors)\n' +
      '  missing  lm_head.weight: missing tensor (expected shape [1000,64] from ' + dir + '/config.json)\n' +
      '  extra    model.layers.0.self_attn.rotary_emb.inv_freq: tensor not used by this config (model.safetensors)\n');
    const json = JSON.parse((await runCli(['inspect', '--model', dir, '--json'])).stdout) as { problems: Array<{ kind: string; tensor: string }> };
    expect(json.problems.map((p) => `${p.kind} ${p.tensor}`)).toEqual([
      'missing model.layers.0.mlp.up_proj.weight',
      'shape model.layers.1.self_attn.k_proj.weight',
      'missing lm_head.weight',
      'extra model.layers.0.self_attn.rotary_emb.inv_freq',
    ]);
  });

  it('still describes the tensors when the config is invalid', async () => {
    const dir = copyOf('mistral-tiny');
    config(dir, (j) => { j.num_key_value_heads = 3; });
    const r = await runCli(['inspect', '--model', dir, '--json']);
    expect(r.code).toBe(1);
    const report = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ layout: 'hf', config: null, tensors: 30, dtypes: { F32: 30 }, parameters: 266_688, parameters_expected: null });
    expect(report.problems).toEqual([{ kind: 'config', tensor: '', file: `${dir}/config.json`, message: `${dir}/config.json: num_key_value_heads: 4 attention heads are not divisible by 3 key/value heads` }]);
  });

  it.each([
    // model, layout, tensors, dtypes, parameters (counted by hand from the golden README's table)
    ['mistral-tiny', 'hf', 30, { F32: 30 }, 266_688],
    ['mistral-tiny-bf16', 'hf', 30, { BF16: 30 }, 266_688],
    ['mistral-tiny-sharded', 'hf-sharded', 30, { F32: 30 }, 266_688],
    ['mistral-tiny-native', 'native', 30, { F32: 30 }, 266_688],
    ['mixtral-tiny', 'hf', 60, { F32: 60 }, 460_992],
  ] as const)('describes %s', async (model, layout, tensors, dtypes, parameters) => {
    const r = await runCli(['inspect', '--model', modelDir(model), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(report).toMatchObject({ layout, tensors, dtypes, parameters, parameters_expected: parameters, problems: [] });
    expect((report.memory as { eager: number }).eager).toBe(4 * parameters);
    const text = await runCli(['inspect', '--model', modelDir(model)]);
    expect(text.stdout).toContain(`parameters  ${parameters.toLocaleString('en-US')} (as the config implies)\n`);
    expect(text.stdout).toContain('no problems: config and tensors agree\n');
  });

  it('opens headers only', () => {
    const ckpt = openCheckpoint(modelDir('mistral-tiny-sharded'));
    try {
      expect(ckpt.layout).toBe('hf-sharded');
      expect(ckpt.store.files.map((f) => path.basename(f))).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    } finally {
      ckpt.store.close();
    }
  });
});
