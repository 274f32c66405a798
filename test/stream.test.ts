/**
 * Weight residency: `stream` (each layer read from disk when the forward reaches it, then
 * freed) gives bit-identical results to `eager` (tfjs kernels) and to `resident` (simd
 * kernels) on every golden model, holds at most one layer at a time, and reads a Mixtral
 * expert only when a token is routed to it.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { autoResidency, checkpointSize, residencyNote } from '../src/cli/common.js';
import { main } from '../src/cli/main.js';
import { MultiFileStore } from '../src/io/checkpoint.js';
import { useBackend } from '../src/kernels/backend.js';
import type { HookFn } from '../src/model/hooks.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import type { KernelsName, StoredLinear } from '../src/kernels/linear.js';
import { parseHfConfig } from '../src/model/config.js';
import { chooseResidency, estimateMemory, residencyProblem, storedStreamPlan, type Residency } from '../src/model/residency.js';
import { runCli } from './helpers/cli.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';
import { forwardWithRouting } from '../src/inspect/routing.js';
import { runWithCache } from '../src/inspect/activations.js';

afterEach(() => vi.restoreAllMocks());

const bits = (t: tf.Tensor) => Array.from(new Uint32Array((t.dataSync() as Float32Array).slice().buffer));

/** Every float32 a model produces for one prompt: a full forward with hidden states, then cached decoding. */
function outputs(model: string, weights: Residency, kernels: KernelsName): number[][] {
  const m = Transformer.load(modelDir(model), { weights, kernels });
  try {
    const V = m.config.vocabSize;
    const ids = Array.from({ length: 12 }, (_, t) => (7 * t + 3) % V);
    const out: number[][] = [];
    const { result: full, cache: states } = runWithCache(m, ids, {
      names: ['hook_embed', ...Array.from({ length: m.config.numLayers }, (_, l) => `blocks.${l}.hook_resid_post`), 'ln_final.hook_normalized'],
    });
    out.push(bits(full.logits), ...states.names().map((n) => bits(states.get(n))));
    states.dispose();
    disposeResult(full);
    const cache = m.createCache();
    const prefill = m.forward(ids, { cache, lastOnly: true });
    out.push(bits(prefill.logits));
    disposeResult(prefill);
    for (const id of [5, 11, 2]) {
      const step = m.forward([id % V], { cache, lastOnly: true });
      out.push(bits(step.logits));
      disposeResult(step);
    }
    cache.dispose();
    return out;
  } finally {
    m.dispose();
  }
}

// Stream mode against the mode that holds the same weights the same way: eager (float32
// tensors, tfjs kernels) and resident (stored width, simd kernels).
const AGREE = (['cpu', 'wasm'] as const).flatMap((backend) => [
  { backend, kernels: 'tfjs' as const, other: 'eager' as const },
  { backend, kernels: 'simd' as const, other: 'resident' as const },
]);

describe.each(AGREE)('stream and $other agree bit for bit on the $kernels kernels, $backend', ({ backend, kernels, other }) => {
  it.each(GOLDEN_MODELS)('$model', async ({ model }) => {
    await useBackend(backend);
    const before = tf.memory().numTensors;
    const want = outputs(model, other, kernels);
    const stream = outputs(model, 'stream', kernels);
    expect(stream.length).toBe(want.length);
    stream.forEach((s, i) => expect(s, `output ${i}`).toEqual(want[i]));
    expect(tf.memory().numTensors).toBe(before);
  });
});

describe('stream residency', () => {
  it.each(['tfjs', 'simd'] as const)('holds no weights between forwards and at most one layer during one (%s kernels)', async (kernels) => {
    await useBackend('cpu');
    const m = Transformer.load(modelDir('mistral-tiny'), { weights: 'stream', kernels });
    try {
      const est = estimateMemory(m.config);
      expect(m.weights.residentBytes).toBe(0);
      const seen = new Map<string, number>();
      const record: HookFn = (_t, name) => { seen.set(name, m.weights.residentBytes); };
      const hooks = new Map<string, HookFn>([['blocks.0.hook_resid_post', record], ['blocks.2.hook_resid_post', record], ['hook_logits', record]]);
      const before = tf.memory().numTensors;
      const r = m.forward([1, 2, 3], { hooks });
      disposeResult(r);
      // One layer in full (all layers have the same size), then only the head.
      expect(seen.get('blocks.0.hook_resid_post')).toBe(est.layer);
      expect(seen.get('blocks.2.hook_resid_post')).toBe(est.layer);
      expect(seen.get('hook_logits')).toBe(est.head);
      expect(m.weights.residentBytes).toBe(0);
      expect(tf.memory().numTensors).toBe(before);
    } finally {
      m.dispose();
    }
  });

  it.each(['tfjs', 'simd'] as const)('holds one Mixtral expert at a time with no expert cache, however many the tokens choose (%s kernels)', async (kernels) => {
    await useBackend('cpu');
    const m = Transformer.load(modelDir('mixtral-tiny'), { weights: 'stream', kernels, expertCacheBytes: 0 });
    try {
      let resident = -1;
      const hooks = new Map<string, HookFn>([['blocks.0.hook_mlp_out', () => { resident = m.weights.residentBytes; }]]);
      const { result: r, routing } = forwardWithRouting(m, [3, 14, 15, 92, 65, 35, 89, 79, 323, 84], { hooks });
      const distinct = new Set(routing[0]!.experts).size;
      disposeResult(r);
      expect(distinct).toBeGreaterThan(2); // more experts chosen than one token's k = 2
      // Layer 0 when its MoE is done: attention q 64·64 + k 32·64 + v 32·64 + o 64·64, two
      // norms 2·64, router 4·64, and the last expert only: 3·128·64. float32.
      expect(resident).toBe(4 * (4096 + 2048 + 2048 + 4096 + 128 + 256 + 3 * 128 * 64));
    } finally {
      m.dispose();
    }
  });

  it.each(['tfjs', 'simd'] as const)('keeps recently used experts within the cache budget, least recently used out, with the same results (%s kernels)', async (kernels) => {
    await useBackend('cpu');
    const ids = [3, 14, 15, 92, 65, 35, 89, 79, 323, 84];
    const expertBytes = 4 * 3 * 128 * 64; // mixtral-tiny: w1, w3 [128, 64], w2 [64, 128], float32
    const none = Transformer.load(modelDir('mixtral-tiny'), { weights: 'stream', kernels, expertCacheBytes: 0 });
    const some = Transformer.load(modelDir('mixtral-tiny'), { weights: 'stream', kernels, expertCacheBytes: 3 * expertBytes });
    const all = Transformer.load(modelDir('mixtral-tiny'), { weights: 'stream', kernels, expertCacheBytes: 1e9 });
    try {
      const logits = [none, some, all].map((m) => {
        const out: Float32Array[] = [];
        for (let rep = 0; rep < 2; rep++) {
          const r = m.forward(ids);
          out.push(r.logits.dataSync() as Float32Array);
          disposeResult(r);
          expect(m.weights.expertCache.heldBytes).toBeLessThanOrEqual(Math.max(expertBytes, m.weights.expertCache.budgetBytes));
        }
        return out;
      });
      for (const l of logits.flat()) expect(bits(tf.tensor(l))).toEqual(bits(tf.tensor(logits[0]![0]!)));

      const layers = none.config.numLayers;
      const used = none.weights.expertCache.misses / 2; // expert runs per forward (every one a miss without a cache)
      expect(none.weights.expertCache.hits).toBe(0);
      // Everything fits: the second forward finds every expert it needs.
      expect(all.weights.expertCache.misses).toBeLessThanOrEqual(layers * 4);
      expect(all.weights.expertCache.hits).toBe(2 * used - all.weights.expertCache.misses);
      expect(all.weights.expertCache.hits).toBeGreaterThanOrEqual(used);
      // Three experts' worth: some hits, never more held than the budget.
      expect(some.weights.expertCache.misses).toBeGreaterThan(all.weights.expertCache.misses);
      expect(some.weights.expertCache.heldBytes).toBe(3 * expertBytes);
      expect(some.weights.expertCache.bytesRead).toBe(some.weights.expertCache.misses * expertBytes); // F32 on disk
    } finally {
      for (const m of [none, some, all]) m.dispose();
    }
  });

  it('eager holds every weight from load on', async () => {
    await useBackend('cpu');
    const m = Transformer.load(modelDir('mixtral-tiny'), { weights: 'eager' });
    try {
      expect(m.weights.residentBytes).toBe(estimateMemory(m.config).eager);
    } finally {
      m.dispose();
    }
  });

  it.each(['mixtral-tiny', 'mixtral-tiny-native', 'mixtral-demo'].flatMap((model) => (['tfjs', 'simd'] as const).map((kernels) => [model, kernels] as const)))(
    '%s reads only the experts a token is routed to (%s kernels)', async (model, kernels) => {
    await useBackend('cpu');
    // tfjs kernels read float32 copies, the simd kernels the stored bytes.
    const read = vi.spyOn(MultiFileStore.prototype, kernels === 'tfjs' ? 'readFloat32' : 'readInto');
    const m = Transformer.load(modelDir(model), { weights: 'stream', kernels });
    try {
      expect(read).not.toHaveBeenCalled(); // load reads headers only
      const { result: r, routing } = forwardWithRouting(m, [3]);
      disposeResult(r);
      const E = m.config.numExperts!;
      const k = m.config.numExpertsPerTok!;
      expect(routing.length).toBe(m.config.numLayers);
      // HF: model.layers.L.block_sparse_moe.experts.E.w1.weight; native: layers.L.feed_forward.experts.E.w1.weight
      const loaded = new Set<string>();
      for (const [name] of read.mock.calls) {
        const match = /layers\.(\d+)\.(?:block_sparse_moe|feed_forward)\.experts\.(\d+)\.w[123]\.weight$/.exec(name);
        if (match) loaded.add(`${match[1]}/${match[2]}`);
      }
      const chosen = new Set(routing.flatMap((l, layer) => Array.from(l.experts).map((e) => `${layer}/${e}`)));
      expect(chosen.size).toBe(m.config.numLayers * k); // one token: k distinct experts per layer
      expect([...loaded].sort()).toEqual([...chosen].sort());
      expect(k).toBeLessThan(E); // so some experts were really skipped
      // Each chosen expert read once per matrix (w1, w2, w3), nothing twice.
      const expertReads = read.mock.calls.filter(([name]) => /experts\.\d+\.w[123]\.weight$/.test(name));
      expect(expertReads.length).toBe(3 * chosen.size);
    } finally {
      m.dispose();
    }
  });
});

describe('stream residency on the simd kernels', () => {
  it('Mixtral keeps what is not an expert once read: later tokens read only the experts they miss', async () => {
    await useBackend('cpu');
    const m = Transformer.load(modelDir('mixtral-tiny'), { weights: 'stream', kernels: 'simd', expertCacheBytes: 0 });
    try {
      const c = m.config;
      const first = m.forward([3, 14, 15]);
      disposeResult(first);
      // Everything but the experts and the embedding table (read row by row), float32 on disk:
      // per layer q 64·64 + k 32·64 + v 32·64 + o 64·64 + router 4·64, two norms 2·64; the final
      // norm 64 and the unembedding 1000·64; plus the one expert the budget of 0 keeps, 3·128·64.
      const shared = 4 * (c.numLayers * (4096 + 2048 + 2048 + 4096 + 256 + 128) + 64 + 1000 * 64);
      expect(m.weights.residentBytes).toBe(shared + 4 * 3 * 128 * 64);
      const read0 = m.weights.bytesRead;
      const misses0 = m.weights.expertCache.misses;
      const next = m.forward([92]);
      disposeResult(next);
      // The second forward reads one embedding row and the experts it missed, nothing else.
      expect(m.weights.bytesRead - read0).toBe(4 * 64 + (m.weights.expertCache.misses - misses0) * 4 * 3 * 128 * 64);
    } finally {
      m.dispose();
    }
  });

  it('reuses freed kernel memory: streaming more tokens does not grow it', async () => {
    await useBackend('cpu');
    for (const model of ['mistral-tiny-bf16', 'mixtral-tiny']) {
      const m = Transformer.load(modelDir(model), { weights: 'stream', kernels: 'simd', expertCacheBytes: 0 });
      try {
        const cache = m.createCache();
        disposeResult(m.forward([1, 2, 3, 4], { cache, lastOnly: true }));
        disposeResult(m.forward([5], { cache, lastOnly: true }));
        const settled = m.weights.kernelMemoryBytes;
        expect(settled, model).toBeGreaterThan(0);
        for (let t = 0; t < 6; t++) disposeResult(m.forward([(7 * t + 1) % m.config.vocabSize], { cache, lastOnly: true }));
        expect(m.weights.kernelMemoryBytes, model).toBe(settled);
        cache.dispose();
      } finally {
        m.dispose();
      }
    }
  });

  it('resident 2-byte projections are stored as quads, stream-mode ones row-major (read once, rearranging costs more than it gives)', async () => {
    await useBackend('cpu');
    const layouts = (weights: 'resident' | 'stream') => {
      const m = Transformer.load(modelDir('mistral-tiny-bf16'), { weights, kernels: 'simd' });
      try {
        const { q, o } = m.weights.layer(0).attn as { q: StoredLinear; o: StoredLinear };
        const { down } = m.weights.layer(0).mlp as { down: StoredLinear };
        const head = m.weights.lmHead() as StoredLinear; // untied here; a tied head is the row-major embedding table
        return [q, o, down, head].map((l) => l.matrix.quads === true);
      } finally {
        m.dispose();
      }
    };
    expect(layouts('resident')).toEqual([true, true, true, true]);
    expect(layouts('stream')).toEqual([false, false, false, false]);
  });

  it('plans the memory of a Mixtral 8x7B in bf16 on a 24 GiB machine', () => {
    const config = parseHfConfig({
      model_type: 'mixtral', hidden_size: 4096, intermediate_size: 14336, num_hidden_layers: 32,
      num_attention_heads: 32, num_key_value_heads: 8, vocab_size: 32000, max_position_embeddings: 32768,
      rms_norm_eps: 1e-5, rope_theta: 1e6, sliding_window: null, num_local_experts: 8, num_experts_per_tok: 2,
      tie_word_embeddings: false,
    }, 'config.json');
    const GiB = 2 ** 30;
    // Outside the experts, at 2 bytes: per layer q and o 4096·4096, k and v 1024·4096, router
    // 8·4096 (41 975 808 parameters, × 32 layers), and the unembedding 32000·4096.
    const shared = 2 * (32 * 41_975_808 + 32000 * 4096);
    expect(shared).toBe(2_948_595_712);
    expect(storedStreamPlan(config, 2, 22 * GiB)).toEqual({ keepShared: true, expertCacheBytes: 0.85 * 22 * GiB - shared });
    // Too little memory to keep them: everything streams, and the experts get the whole share.
    expect(storedStreamPlan(config, 2, 6 * GiB)).toEqual({ keepShared: false, expertCacheBytes: 0.85 * 6 * GiB });
    // Dense models have nothing to plan.
    expect(storedStreamPlan({ ...config, numExperts: null }, 2, 22 * GiB)).toEqual({ keepShared: false, expertCacheBytes: 0 });
  });
});

describe('--weights auto', () => {
  const GiB = 2 ** 30;
  const size = (float32: number, stored = float32 / 2) => ({ float32Bytes: float32, storedBytes: stored });

  it('simd kernels: resident when the stored weights fit in 85% of free memory, stream otherwise', () => {
    // Mistral 7B bf16: 14.5 GB stored (13.5 GiB), 29 GB as float32, on a 24 GiB machine with ~22 GiB free
    expect(chooseResidency(size(27 * GiB), 22 * GiB, 'wasm')).toEqual({ weights: 'resident', reason: 'stored weights 13.5 GiB fit in the 22.0 GiB free memory' });
    expect(chooseResidency(size(27 * GiB), 22 * GiB, 'cpu').weights).toBe('resident');
    // Mixtral 8x7B bf16: 87 GiB stored
    expect(chooseResidency(size(174 * GiB), 22 * GiB, 'cpu')).toEqual({ weights: 'stream', reason: 'stored weights 87.0 GiB exceed 85% of the 22.0 GiB free memory' });
    expect(chooseResidency(size(4 * GiB, 0.85 * 10 * GiB), 10 * GiB, 'cpu').weights).toBe('resident');
    expect(chooseResidency(size(4 * GiB, 0.85 * 10 * GiB + 1), 10 * GiB, 'cpu').weights).toBe('stream');
  });

  it('tfjs kernels: eager when the float32 weights fit in half the free memory, stream otherwise', () => {
    expect(chooseResidency(size(4 * GiB), 16 * GiB, 'cpu', 'tfjs')).toEqual({ weights: 'eager', reason: 'float32 weights 4.0 GiB fit in half of the 16.0 GiB free memory' });
    expect(chooseResidency(size(29 * GiB), 20 * GiB, 'cpu', 'tfjs')).toEqual({ weights: 'stream', reason: 'float32 weights 29.0 GiB exceed half of the 20.0 GiB free memory' });
    expect(chooseResidency(size(9 * GiB), 16 * GiB, 'cpu', 'tfjs').weights).toBe('stream');
    // wasm's 32-bit heap cannot hold a 7B model whatever the machine
    expect(chooseResidency(size(3 * GiB), 128 * GiB, 'wasm', 'tfjs')).toEqual({ weights: 'stream', reason: 'float32 weights 3.0 GiB exceed the 2.0 GiB the wasm heap can hold' });
    expect(chooseResidency(size(3 * GiB), 128 * GiB, 'cpu', 'tfjs').weights).toBe('eager');
  });

  it('an explicit mode that cannot fit is refused before loading, naming the size and a mode that fits', () => {
    expect(residencyProblem('eager', size(27 * GiB), 22 * GiB, 'wasm')).toBe(
      '--weights eager needs 27.0 GiB of float32 weights in the wasm heap, which holds 2.0 GiB of them; use --weights resident (13.5 GiB at stored width)');
    expect(residencyProblem('eager', size(27 * GiB), 22 * GiB, 'cpu')).toBe(
      '--weights eager needs 27.0 GiB of float32 weights, more than the 22.0 GiB free memory; use --weights resident (13.5 GiB at stored width)');
    expect(residencyProblem('resident', size(174 * GiB), 22 * GiB, 'cpu')).toBe(
      '--weights resident needs 87.0 GiB for the stored weights, more than the 22.0 GiB free memory; use --weights stream');
    expect(residencyProblem('eager', size(174 * GiB), 22 * GiB, 'wasm')).toMatch(/use --weights stream \(a layer at a time\)$/);
    expect(residencyProblem('stream', size(174 * GiB), 22 * GiB, 'wasm')).toBeNull();
    expect(residencyProblem('resident', size(27 * GiB), 22 * GiB, 'wasm')).toBeNull();
  });

  it('sizes a checkpoint from its headers', () => {
    // mistral-tiny: embedding + head 2·1000·64, final norm 64, and 3 layers of
    // q 64·64 + k 32·64 + v 32·64 + o 64·64 + 3·64·176 (SwiGLU) + 2·64 (norms) = 46 208:
    // 266 688 parameters, 4 bytes each (stored as F32).
    const bytes = 4 * (2 * 1000 * 64 + 64 + 3 * 46_208);
    expect(checkpointSize(modelDir('mistral-tiny'))).toEqual({ storedBytes: bytes, float32Bytes: bytes });
    expect(checkpointSize(modelDir('mistral-tiny-bf16'))).toEqual({ storedBytes: bytes / 2, float32Bytes: bytes });
    expect(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 ** 34, 'tfjs').weights).toBe('eager');
    expect(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 * bytes - 1, 'tfjs').weights).toBe('stream');
    expect(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 * bytes, 'tfjs').weights).toBe('eager');
    expect(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 ** 34).weights).toBe('resident');
  });

  it('says on a terminal when auto chose to stream, and stays quiet when it keeps weights resident', async () => {
    let stderr = '';
    const io = { stdout: () => {}, stderr: (t: string) => { stderr += t; }, interactive: true, stdin: async function* () {} };
    const code = await main(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny')], io);
    expect(code).toBe(0);
    expect(stderr).toBe('parity: prompt p0 (1/3)\nparity: prompt p1 (2/3)\nparity: prompt p2 (3/3)\n'); // progress, no weights line
    expect(residencyNote(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 ** 34))).toBeNull();
    expect(residencyNote(autoResidency(modelDir('mistral-tiny'), 'cpu', 2 ** 20))).toBe(
      'weights: stream (stored weights 1.0 MiB exceed 85% of the 1.0 MiB free memory; --weights resident|eager|stream overrides)\n');
  });

  it('the CLI accepts --weights auto|resident|eager|stream with the kernels that run them, and refuses anything else', async () => {
    for (const args of [['--weights', 'auto'], ['--weights', 'resident'], ['--weights', 'eager'], ['--weights', 'stream'],
      ['--kernels', 'tfjs'], ['--kernels', 'simd'], ['--weights', 'auto', '--kernels', 'tfjs'], ['--weights', 'eager', '--kernels', 'tfjs'],
      ['--weights', 'stream', '--kernels', 'simd'], ['--weights', 'stream', '--kernels', 'tfjs']]) {
      const r = await runCli(['parity', '--model', modelDir('mixtral-tiny'), '--reference', refFile('mixtral-tiny'), ...args]);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toBe(''); // not interactive: auto says nothing
    }
    const bad = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--weights', 'lazy']);
    expect(bad.code).toBe(2);
    expect(bad.stderr).toBe('mistral-ref parity: --weights must be one of auto, resident, eager, stream, got "lazy"\n');
    const clash = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--weights', 'resident', '--kernels', 'tfjs']);
    expect(clash.code).toBe(2);
    expect(clash.stderr).toBe('mistral-ref parity: --weights resident runs on the simd kernels; with --kernels tfjs use --weights eager or stream\n');
    const clash2 = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--weights', 'eager', '--kernels', 'simd']);
    expect(clash2.code).toBe(2);
    expect(clash2.stderr).toMatch(/^mistral-ref parity: --weights eager holds float32 tfjs tensors/);
  });
});
