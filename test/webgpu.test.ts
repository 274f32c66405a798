/**
 * The webgpu backend (tfjs-backend-webgpu on Dawn) at golden parity, on whatever adapter this
 * machine has: in CI, Mesa's llvmpipe software adapter that scripts/setup-webgpu.sh installs.
 * Without an adapter every test here is skipped, with the reason printed; with
 * MISTRAL_REF_REQUIRE_WEBGPU=1 (set by .ci/run) a missing adapter fails instead.
 *
 * The large-weight tests synthesise a checkpoint whose embedding table and lm_head are
 * [131200, 256] (134.3 MB as float32, over the 128 MiB maxStorageBufferBindingSize of
 * software adapters) in a temporary folder, never committed.
 */
import * as tf from '@tensorflow/tfjs-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Reference } from '../src/io/reference.js';
import { checkParity } from '../src/inspect/parity.js';
import { BackendError, bindingLimitBytes, useBackend, WebGpuDeviceError } from '../src/kernels/backend.js';
import { linear, makeLinear, type Linear } from '../src/kernels/linear.js';
import { probeWebGpu, WebGpuProxyBackend } from '../src/kernels/webgpu.js';
import { Transformer } from '../src/model/transformer.js';
import { runCli } from './helpers/cli.js';
import { GOLDEN_MODELS, modelDir, refFile } from './helpers/fixtures.js';
import { expectGoldenPass } from './helpers/golden.js';
import { tempDir } from './helpers/safetensors-builder.js';

const probe = await probeWebGpu();
const missing = 'problem' in probe ? probe.problem.message : null;
const adapter = 'info' in probe ? probe.info : null;
if (missing !== null) {
  console.log(`webgpu tests SKIPPED: ${missing}. On a machine without a GPU, run scripts/setup-webgpu.sh as root.`);
}
const required = process.env.MISTRAL_REF_REQUIRE_WEBGPU === '1';

it.runIf(missing !== null && required)('a WebGPU adapter is available (MISTRAL_REF_REQUIRE_WEBGPU=1)', () => {
  expect.fail(`MISTRAL_REF_REQUIRE_WEBGPU=1 but ${missing}`);
});

/** Tensors alive in the webgpu worker. */
const workerTensors = () => (tf.backend() as WebGpuProxyBackend).workerTensors();

/** The golden README's rule. */
const tolerance = (ref: Float32Array): number => 5e-5 + 1e-6 * ref.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
const maxAbsDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);

describe.skipIf(missing !== null)('webgpu backend', () => {
  const measured: string[] = [];
  afterAll(() => console.log(`webgpu golden parity, max |Δ| (logits / layer_out / step_logits):\n${measured.join('\n')}`));

  it('names its adapter and limits', async () => {
    await useBackend('webgpu');
    expect(tf.getBackend()).toBe('webgpu');
    expect(adapter).not.toBeNull();
    expect(bindingLimitBytes()).toBe(adapter!.limits.maxStorageBufferBindingSize);
  });

  it.each(GOLDEN_MODELS)('$model reproduces refs/$ref', async ({ model, ref }) => {
    await useBackend('webgpu');
    const before = tf.memory().numTensors;
    const inWorker = workerTensors();
    const m = Transformer.load(modelDir(model), { weights: 'eager' });
    const r = Reference.open(refFile(ref));
    let report;
    try {
      report = checkParity(m, r);
    } finally {
      m.dispose();
      r.close();
    }
    expect(tf.memory().numTensors).toBe(before);
    // The device side frees as much: every tensor the worker holds is one this thread holds.
    expect(workerTensors()).toEqual(inWorker);
    expect(inWorker.held).toBe(inWorker.tensors);
    expectGoldenPass(report, model);
    const d = report.max_abs_diff;
    measured.push(`  ${model.padEnd(20)} ${d.logits!.toExponential(1)} / ${d.layer_out!.toExponential(1)} / ${d.step_logits!.toExponential(1)}`);
  });

  it.each(['mistral-tiny-bf16', 'mixtral-tiny'])('%s reproduces its reference with --weights stream', async (model) => {
    await useBackend('webgpu');
    const before = tf.memory().numTensors;
    const inWorker = workerTensors();
    const m = Transformer.load(modelDir(model), { weights: 'stream', kernels: 'tfjs' });
    const r = Reference.open(refFile(model));
    try {
      expectGoldenPass(checkParity(m, r), model);
    } finally {
      m.dispose();
      r.close();
    }
    expect(tf.memory().numTensors).toBe(before);
    expect(workerTensors()).toEqual(inWorker);
  });

  it('parity --backend webgpu passes through the CLI (exit 0, JSON)', async () => {
    const run = await runCli(['parity', '--model', modelDir('mixtral-tiny'), '--reference', refFile('mixtral-tiny'), '--backend', 'webgpu', '--json']);
    expect(run.stderr).toBe('');
    expect(run.code).toBe(0);
    expect(JSON.parse(run.stdout).pass).toBe(true);
  });

  it('backends --json reports webgpu with its adapter and limits', async () => {
    const run = await runCli(['backends', '--json']);
    expect(run.code).toBe(0);
    const { backends } = JSON.parse(run.stdout) as { backends: Array<Record<string, any>> };
    expect(backends.map((b) => b.name)).toEqual(['cpu', 'wasm', 'tensorflow', 'webgpu']);
    expect(backends.find((b) => b.name === 'cpu')).toEqual({ name: 'cpu', available: true });
    const w = backends.find((b) => b.name === 'webgpu')!;
    expect(w.available).toBe(true);
    expect(w.adapter.name).toBe(adapter!.device || adapter!.description);
    expect(w.adapter.limits).toEqual(adapter!.limits);
    const t = backends.find((b) => b.name === 'tensorflow')!;
    if (!t.available) expect(t.reason).toMatch(/^backend "tensorflow" needs an optional package/);
  });

  describe('weights over maxStorageBufferBindingSize', () => {
    const limit = adapter?.limits.maxStorageBufferBindingSize ?? 0;
    const cols = 256;
    const rows = Math.floor(limit / (4 * cols)) + 128; // just over the limit: two row blocks
    let data: Float32Array;
    let x: Float32Array;
    let expected: Float32Array;
    beforeAll(async () => {
      // Deterministic values whose products are exact-ish to compare: small integers / 64.
      data = new Float32Array(rows * cols);
      for (let i = 0; i < data.length; i++) data[i] = ((i * 7919) % 17 - 8) / 64;
      x = new Float32Array(3 * cols);
      for (let i = 0; i < x.length; i++) x[i] = ((i * 104729) % 13 - 6) / 8;
      await useBackend('cpu');
      const l = makeLinear(data, rows, cols);
      expected = tf.tidy(() => linear(tf.tensor2d(x, [3, cols]), l).dataSync() as Float32Array);
      tf.dispose((l as { weight: tf.Tensor }).weight);
    });

    it('an unsplit binding over the limit raises WebGpuDeviceError instead of returning numbers', async () => {
      await useBackend('webgpu');
      const before = tf.memory().numTensors;
      const whole = makeLinear(data, rows, cols, true, Infinity);
      expect(whole.kind).toBe('tensor');
      try {
        expect(() => tf.tidy(() => linear(tf.tensor2d(x, [3, cols]), whole).dataSync())).toThrow(WebGpuDeviceError);
        // A WebGpuDeviceError is a BackendError: the CLI prints it on one line, exit 2.
        expect(() => tf.tidy(() => linear(tf.tensor2d(x, [3, cols]), whole).dataSync()))
          .toThrow(/^the WebGPU device reported an error, so the result is not returned: validation error: Binding size \(\d+\) .* is larger than the maximum storage buffer binding size \(\d+\)/);
        expect(new WebGpuDeviceError('x')).toBeInstanceOf(BackendError);
      } finally {
        tf.dispose((whole as { weight: tf.Tensor }).weight);
      }
      // The device is still usable afterwards.
      expect(Array.from(tf.tidy(() => tf.add(tf.scalar(1), 2).dataSync()))).toEqual([3]);
      expect(tf.memory().numTensors).toBe(before);
    });

    it('split by rows, the product matches the cpu backend', async () => {
      await useBackend('webgpu');
      const before = tf.memory().numTensors;
      const l: Linear = makeLinear(data, rows, cols);
      try {
        expect(l.kind).toBe('split');
        if (l.kind !== 'split') return;
        expect(l.blocks.map((b) => b.outFeatures)).toEqual([rows - 128, 128]);
        const got = tf.tidy(() => linear(tf.tensor2d(x, [3, cols]), l).dataSync() as Float32Array);
        expect(got.length).toBe(expected.length);
        expect(maxAbsDiff(got, expected)).toBeLessThanOrEqual(tolerance(expected));
      } finally {
        if (l.kind === 'split') for (const b of l.blocks) b.weight.dispose();
      }
      expect(tf.memory().numTensors).toBe(before);
    });

    it('a synthesised model with a [131200, 256] embedding and lm_head matches the cpu backend', async () => {
      const { dir, cleanup } = tempDir('mistral-ref-webgpu-');
      try {
        const out = `${dir}/big`;
        const synth = await runCli(['synth', '--preset', 'mistral-7b-v0.1', '--out', out, '--layers', '1', '--dtype', 'bf16',
          '--hidden', '256', '--intermediate', '512', '--heads', '4', '--kv-heads', '2', '--vocab', '131200', '--seed', '3']);
        expect(synth.stderr).toBe('');
        expect(synth.code).toBe(0);
        // Ids on both sides of the block boundary (131072), in an order that interleaves them.
        const ids = [1, 131199, 5, 131072, 131071, 42, 131100, 7];
        const logitsOn = async (backend: 'cpu' | 'webgpu'): Promise<Float32Array> => {
          await useBackend(backend);
          const before = tf.memory().numTensors;
          const m = Transformer.load(out, { weights: 'eager' });
          try {
            if (backend === 'webgpu') {
              const head = m.weights.lmHead();
              expect(head.kind).toBe('split');
            }
            return tf.tidy(() => {
              const r = m.forward(ids, { hiddenStates: true });
              return Float32Array.from([...r.embeddings!.dataSync(), ...r.logits.dataSync()]);
            });
          } finally {
            m.dispose();
            expect(tf.memory().numTensors).toBe(before);
          }
        };
        const want = await logitsOn('cpu');
        const got = await logitsOn('webgpu');
        const embedLen = ids.length * 256;
        // Embedding rows are copies: exact.
        expect(maxAbsDiff(got.subarray(0, embedLen), want.subarray(0, embedLen))).toBe(0);
        const wantLogits = want.subarray(embedLen);
        expect(maxAbsDiff(got.subarray(embedLen), wantLogits)).toBeLessThanOrEqual(tolerance(wantLogits));
      } finally {
        cleanup();
      }
    });
  });
});

describe('webgpu backend errors', () => {
  it.runIf(missing !== null)('--backend webgpu without an adapter is one line, exit 2', async () => {
    const run = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--backend', 'webgpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/^mistral-ref parity: backend "webgpu" is not available: .+\n$/);
  });

  it('an unknown backend names webgpu among the choices', async () => {
    const run = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--backend', 'gpu']);
    expect(run.code).toBe(2);
    expect(run.stderr).toBe('mistral-ref parity: --backend must be one of cpu, wasm, tensorflow, webgpu, got "gpu"\n');
  });
});
