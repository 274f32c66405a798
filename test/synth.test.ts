/**
 * `mistral-ref synth`: the published configs and shapes, sharded like the published
 * repositories (checked on the full-size plans, nothing written), and small variants
 * written to disk that load, inspect clean and run in both residency modes.
 */
import * as tf from '@tensorflow/tfjs-core';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { SafetensorsFile } from '../src/io/safetensors.js';
import { planSynth } from '../src/cli/synthetic.js';
import { useBackend } from '../src/kernels/backend.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';
import { tempDir } from './helpers/safetensors-builder.js';
import { forwardWithRouting } from '../src/inspect/routing.js';

const tmp = tempDir('synth-test-');
afterAll(tmp.cleanup);
let counter = 0;
const outDir = () => path.join(tmp.dir, `out-${counter++}`);

const TINY = ['--hidden', '64', '--heads', '4', '--kv-heads', '2', '--intermediate', '96', '--vocab', '256'];

async function synth(args: string[]): Promise<string> {
  const out = outDir();
  const r = await runCli(['synth', ...args, '--out', out]);
  expect(r.code, r.stderr).toBe(0);
  expect(r.stderr).toBe(''); // progress only when interactive
  return out;
}

function shapesOf(plan: ReturnType<typeof planSynth>): Map<string, readonly number[]> {
  return new Map(plan.shards.flatMap((s) => s.tensors.map((t) => [t.name, t.shape] as const)));
}

describe('full-size plans match the published checkpoints', () => {
  it('Mistral 7B v0.1: config, shapes, 2 shards of 9.94 + 4.54 GB', () => {
    const plan = planSynth({ preset: 'mistral-7b-v0.1' });
    expect(plan.configJson).toMatchObject({
      model_type: 'mistral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32, num_attention_heads: 32,
      num_key_value_heads: 8, vocab_size: 32000, sliding_window: 4096, rope_theta: 10000, max_position_embeddings: 32768,
      rms_norm_eps: 1e-5, tie_word_embeddings: false, torch_dtype: 'bfloat16',
    });
    expect(plan.parameters).toBe(7_241_732_096);
    expect(plan.shards.map((s) => s.file)).toEqual(['model-00001-of-00002.safetensors', 'model-00002-of-00002.safetensors']);
    expect(plan.shards.map((s) => (s.bytes / 1e9).toFixed(2))).toEqual(['9.94', '4.54']);
    const shapes = shapesOf(plan);
    expect(shapes.size).toBe(32 * 9 + 3);
    expect(shapes.get('model.embed_tokens.weight')).toEqual([32000, 4096]);
    expect(shapes.get('model.layers.31.self_attn.q_proj.weight')).toEqual([4096, 4096]);
    expect(shapes.get('model.layers.31.self_attn.k_proj.weight')).toEqual([1024, 4096]);
    expect(shapes.get('model.layers.31.self_attn.v_proj.weight')).toEqual([1024, 4096]);
    expect(shapes.get('model.layers.31.self_attn.o_proj.weight')).toEqual([4096, 4096]);
    expect(shapes.get('model.layers.0.mlp.gate_proj.weight')).toEqual([14336, 4096]);
    expect(shapes.get('model.layers.0.mlp.up_proj.weight')).toEqual([14336, 4096]);
    expect(shapes.get('model.layers.0.mlp.down_proj.weight')).toEqual([4096, 14336]);
    expect(shapes.get('model.norm.weight')).toEqual([4096]);
    expect(shapes.get('lm_head.weight')).toEqual([32000, 4096]);
  });

  it('Mistral 7B v0.3: vocab 32768, no window, rope 1e6, 3 shards', () => {
    const plan = planSynth({ preset: 'mistral-7b-v0.3' });
    expect(plan.configJson).toMatchObject({ vocab_size: 32768, sliding_window: null, rope_theta: 1e6, max_position_embeddings: 32768 });
    expect(plan.config.slidingWindow).toBeNull();
    expect(plan.parameters).toBe(7_248_023_552);
    expect(plan.shards.map((s) => (s.bytes / 1e9).toFixed(2))).toEqual(['4.95', '5.00', '4.55']);
  });

  it('Mixtral 8x7B: 8 experts top-2, 46.7 B parameters, 19 shards', () => {
    const plan = planSynth({ preset: 'mixtral-8x7b' });
    expect(plan.configJson).toMatchObject({
      model_type: 'mixtral', num_local_experts: 8, num_experts_per_tok: 2, intermediate_size: 14336, vocab_size: 32000,
      rope_theta: 1e6, sliding_window: null, max_position_embeddings: 32768,
    });
    expect(plan.parameters).toBe(46_702_792_704);
    expect(plan.totalSize).toBe(2 * 46_702_792_704);
    expect(plan.shards.length).toBe(19);
    expect(plan.shards.at(-1)!.file).toBe('model-00019-of-00019.safetensors');
    expect(plan.shards.every((s) => s.bytes <= 5e9 + 1e6)).toBe(true);
    const shapes = shapesOf(plan);
    expect(shapes.get('model.layers.7.block_sparse_moe.gate.weight')).toEqual([8, 4096]);
    expect(shapes.get('model.layers.7.block_sparse_moe.experts.7.w1.weight')).toEqual([14336, 4096]);
    expect(shapes.get('model.layers.7.block_sparse_moe.experts.7.w2.weight')).toEqual([4096, 14336]);
    expect(shapes.get('model.layers.7.block_sparse_moe.experts.7.w3.weight')).toEqual([14336, 4096]);
  });

  it('--dry-run prints the plan and writes nothing', async () => {
    const out = outDir();
    const r = await runCli(['synth', '--preset', 'mixtral-8x7b', '--layers', '4', '--dry-run', '--out', out]);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('shape       4 layers, hidden 4096, intermediate 14336, 32 heads / 8 kv, vocab 32000, 8 experts top-2\n');
    expect(r.stdout).toContain('  model-00001-of-00003.safetensors  ');
    expect(fs.existsSync(out)).toBe(false);
  });
});

describe('written checkpoints', () => {
  it('a sharded tiny Mistral: index, shards, clean inspect, stream = eager, finite logits', async () => {
    const out = await synth(['--preset', 'mistral-7b-v0.1', '--layers', '2', ...TINY, '--shard-size', '60000']);
    const files = fs.readdirSync(out).sort();
    // Greedy in module order, 60 000 bytes a shard (BF16): [embed 32768 + layer 0 norms,
    // q, k, v, o 24832] [layer 0 SwiGLU 36864 + layer 1 norms, q, k, v 16640]
    // [layer 1 o 8192 + SwiGLU 36864 + final norm 128] [lm_head 32768]
    expect(files).toEqual(['config.json', 'model-00001-of-00004.safetensors', 'model-00002-of-00004.safetensors',
      'model-00003-of-00004.safetensors', 'model-00004-of-00004.safetensors', 'model.safetensors.index.json']);
    const mapped = (name: string) => (JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> }).weight_map[name];
    expect(mapped('model.layers.0.self_attn.o_proj.weight')).toBe('model-00001-of-00004.safetensors');
    expect(mapped('model.layers.1.self_attn.v_proj.weight')).toBe('model-00002-of-00004.safetensors');
    expect(mapped('model.norm.weight')).toBe('model-00003-of-00004.safetensors');
    expect(mapped('lm_head.weight')).toBe('model-00004-of-00004.safetensors');
    const index = JSON.parse(fs.readFileSync(path.join(out, 'model.safetensors.index.json'), 'utf8')) as { metadata: { total_size: number }; weight_map: Record<string, string> };
    const names = Object.keys(index.weight_map);
    expect(names).toEqual([...names].sort());
    expect(names.length).toBe(2 * 9 + 3);
    // BF16: 2 bytes a parameter; 256·64 embedding and head, 64 final norm, 2 layers of
    // 64·64 + 2·32·64 + 64·64 + 3·64·96 + 2·64
    expect(index.metadata.total_size).toBe(2 * (2 * 256 * 64 + 64 + 2 * (4096 + 4096 + 4096 + 18432 + 128)));

    const inspect = await runCli(['inspect', '--model', out, '--json']);
    expect(inspect.code, inspect.stdout).toBe(0);
    expect(JSON.parse(inspect.stdout)).toMatchObject({ layout: 'hf-sharded', dtypes: { BF16: 21 }, problems: [] });

    await useBackend('cpu');
    const before = tf.memory().numTensors;
    const logits = (weights: 'eager' | 'stream') => {
      const m = Transformer.load(out, { weights, kernels: 'tfjs' });
      try {
        expect(m.config).toMatchObject({ hiddenSize: 64, numLayers: 2, slidingWindow: 4096, ropeTheta: 10000, vocabSize: 256 });
        const r = m.forward([1, 17, 200, 3, 99]);
        const v = r.logits.dataSync().slice();
        disposeResult(r);
        return v;
      } finally {
        m.dispose();
      }
    };
    const eager = logits('eager');
    expect(eager.every(Number.isFinite)).toBe(true);
    expect(Math.max(...eager.map(Math.abs))).toBeGreaterThan(0.1); // not all zero
    expect(Array.from(logits('stream'))).toEqual(Array.from(eager));
    expect(tf.memory().numTensors).toBe(before);
  });

  it('a tiny Mixtral in one file (model.safetensors) runs and routes', async () => {
    const out = await synth(['--preset', 'mixtral-8x7b', '--layers', '1', ...TINY, '--experts', '4', '--dtype', 'f32']);
    expect(fs.readdirSync(out).sort()).toEqual(['config.json', 'model.safetensors']);
    await useBackend('cpu');
    const m = Transformer.load(out, { weights: 'stream' });
    try {
      expect(m.config).toMatchObject({ arch: 'mixtral', numExperts: 4, numExpertsPerTok: 2, slidingWindow: null, ropeTheta: 1e6 });
      const { result: r, routing } = forwardWithRouting(m, [5, 6, 7]);
      expect(r.logits.dataSync().every(Number.isFinite)).toBe(true);
      expect(routing[0]!.experts.length).toBe(3 * 2);
      disposeResult(r);
    } finally {
      m.dispose();
    }
  });

  it('values depend on seed and tensor name only; bf16 is f32 rounded', async () => {
    const a = await synth(['--preset', 'mistral-7b-v0.3', '--layers', '1', ...TINY, '--seed', '7', '--dtype', 'f32']);
    const b = await synth(['--preset', 'mistral-7b-v0.3', '--layers', '3', ...TINY, '--seed', '7', '--dtype', 'f32', '--shard-size', '50000']);
    const c = await synth(['--preset', 'mistral-7b-v0.3', '--layers', '1', ...TINY, '--seed', '8', '--dtype', 'f32']);
    const h = await synth(['--preset', 'mistral-7b-v0.3', '--layers', '1', ...TINY, '--seed', '7']);
    const read = (dir: string, name: string) => {
      const index = path.join(dir, 'model.safetensors.index.json');
      const file = fs.existsSync(index) ? (JSON.parse(fs.readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map[name]! : 'model.safetensors';
      const f = SafetensorsFile.open(path.join(dir, file));
      try {
        return f.readFloat32(name);
      } finally {
        f.close();
      }
    };
    for (const name of ['model.embed_tokens.weight', 'model.layers.0.mlp.down_proj.weight', 'lm_head.weight']) {
      expect(read(b, name)).toEqual(read(a, name)); // other layer count, other sharding: same values
      expect(read(c, name)).not.toEqual(read(a, name));
      const f32 = read(a, name);
      const bf16 = read(h, name);
      const bits = new Uint32Array(bf16.buffer);
      for (let i = 0; i < f32.length; i++) {
        expect(bits[i]! & 0xffff).toBe(0); // a bf16 value
        expect(Math.abs(bf16[i]! - f32[i]!)).toBeLessThanOrEqual(Math.abs(f32[i]!) * 2 ** -8);
      }
    }
    // Uniform on ±√(3/fan_in): variance 1/fan_in. down_proj has fan_in 96.
    const w = read(a, 'model.layers.0.mlp.down_proj.weight');
    const bound = Math.sqrt(3 / 96);
    expect(Math.max(...w.map(Math.abs))).toBeLessThanOrEqual(bound);
    const variance = w.reduce((s, x) => s + x * x, 0) / w.length;
    expect(variance * 96).toBeGreaterThan(0.9);
    expect(variance * 96).toBeLessThan(1.1);
    expect(Array.from(read(a, 'model.layers.0.input_layernorm.weight'))).toEqual(new Array(64).fill(1));
  });
});

describe('bad synth options', () => {
  it.each([
    [['--preset', 'llama-7b', '--out', '/tmp/x'], '--preset must be one of mistral-7b-v0.1, mistral-7b-v0.3, mixtral-8x7b, got "llama-7b"'],
    [['--preset', 'mistral-7b-v0.1'], '--out is required'],
    [['--preset', 'mistral-7b-v0.1', '--layers', '0', '--out', '/tmp/x'], '--layers expects an integer ≥ 1 and ≤ 1024, got "0"'],
    [['--preset', 'mistral-7b-v0.1', '--dtype', 'f16', '--out', '/tmp/x'], '--dtype must be one of bf16, f32, got "f16"'],
    [['--preset', 'mistral-7b-v0.1', '--experts', '4', '--out', '/tmp/x'], '--experts applies to the mixtral-8x7b preset only'],
    [['--preset', 'mistral-7b-v0.1', '--kv-heads', '5', '--out', '/tmp/x'], 'mistral-7b-v0.1 config: num_key_value_heads: 32 attention heads are not divisible by 5 key/value heads'],
  ])('%j', async (args, message) => {
    const r = await runCli(['synth', ...args]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mistral-ref synth: ${message}\n`);
  });

  it('a folder it cannot create is exit 2, one line', async () => {
    const file = path.join(tmp.dir, 'a-file');
    fs.writeFileSync(file, '');
    const out = path.join(file, 'model');
    const r = await runCli(['synth', '--preset', 'mistral-7b-v0.1', '--layers', '1', ...TINY, '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mistral-ref synth: --out ${out}: ${file} is not a folder\n`);
  });

  it('refuses to write into a folder that is not empty', async () => {
    const out = outDir();
    fs.mkdirSync(out);
    fs.writeFileSync(path.join(out, 'keep.txt'), 'mine');
    const r = await runCli(['synth', '--preset', 'mistral-7b-v0.1', '--layers', '1', ...TINY, '--out', out]);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe(`mistral-ref synth: --out ${out}: exists and holds "keep.txt", not a checkpoint; give an absent or empty folder\n`);
    expect(fs.readdirSync(out)).toEqual(['keep.txt']);
  });
});
