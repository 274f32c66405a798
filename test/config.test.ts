/** One typed config from config.json or params.json; ambiguity is an error. */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parameterCount, parseHfConfig, parseNativeParams } from '../src/model/config.js';
import { ConfigError } from '../src/model/errors.js';
import { modelDir } from './helpers/fixtures.js';

const hf = (model: string) => JSON.parse(fs.readFileSync(path.join(modelDir(model), 'config.json'), 'utf8'));
const native = (model: string) => JSON.parse(fs.readFileSync(path.join(modelDir(model), 'params.json'), 'utf8'));

function error(fn: () => unknown): ConfigError {
  try {
    fn();
  } catch (e) {
    expect(e).toBeInstanceOf(ConfigError);
    return e as ConfigError;
  }
  throw new Error('expected a ConfigError');
}

describe('config', () => {
  it('parses HF and native files of the same model to the same config', () => {
    const a = parseHfConfig(hf('mistral-tiny'));
    const b = parseNativeParams(native('mistral-tiny-native'));
    for (const key of ['vocabSize', 'hiddenSize', 'intermediateSize', 'numLayers', 'numHeads', 'numKvHeads', 'headDim', 'slidingWindow', 'ropeTheta', 'rmsNormEps'] as const) {
      expect(b[key]).toEqual(a[key]);
    }
    expect(a).toMatchObject({ arch: 'mistral', slidingWindow: 8, headDim: 16, numExperts: null, eosTokenIds: [2] });
    const m = parseNativeParams(native('mixtral-tiny-native'));
    expect(m).toMatchObject({ arch: 'mixtral', numExperts: 4, numExpertsPerTok: 2, ropeTheta: 1e6 });
    expect(parseHfConfig(hf('mixtral-tiny'))).toMatchObject({ arch: 'mixtral', numExperts: 4, numExpertsPerTok: 2 });
    expect(Object.isFrozen(a)).toBe(true);
  });

  it('honours an explicit head_dim that differs from hidden / heads', () => {
    expect(parseHfConfig(hf('mistral-nowindow'))).toMatchObject({ headDim: 24, hiddenSize: 64, numHeads: 4, slidingWindow: null });
  });

  it('tells a missing sliding_window from null', () => {
    const c = hf('mistral-tiny');
    expect(parseHfConfig({ ...c, sliding_window: null }).slidingWindow).toBeNull();
    delete c.sliding_window;
    // transformers' MistralConfig default; MixtralConfig's is None.
    expect(parseHfConfig(c).slidingWindow).toBe(4096);
    const m = hf('mixtral-tiny');
    delete m.sliding_window;
    expect(parseHfConfig(m).slidingWindow).toBeNull();
    const n = native('mistral-tiny-native');
    delete n.sliding_window;
    expect(parseNativeParams(n).slidingWindow).toBeNull();
  });

  it('requires rope_theta and says what each release uses', () => {
    const n = native('mistral-tiny-native');
    delete n.rope_theta;
    const e = error(() => parseNativeParams(n, 'x/params.json'));
    expect(e.message).toContain('x/params.json: rope_theta: missing');
    expect(e.message).toContain('1000000');
    expect(e.message).toContain('10000 (Mistral 7B v0.1/v0.2)');
    const c = hf('mistral-tiny');
    delete c.rope_theta;
    expect(error(() => parseHfConfig(c)).key).toBe('rope_theta');
  });

  it.each([
    ['num_key_value_heads', 3, '4 attention heads are not divisible by 3 key/value heads'],
    ['head_dim', 15, 'head_dim must be even, got 15'],
    ['hidden_size', 0, 'expected an integer ≥ 1, got 0'],
    ['num_hidden_layers', -2, 'expected an integer ≥ 1, got -2'],
    ['vocab_size', 10.5, 'expected an integer ≥ 1, got 10.5'],
    ['rope_theta', 0, 'expected a positive number, got 0'],
    ['rms_norm_eps', 'small', 'expected a positive number, got "small"'],
    ['sliding_window', 0, 'expected an integer ≥ 1, got 0'],
    ['model_type', 'llama', 'expected "mistral" or "mixtral", got "llama"'],
    ['hidden_act', 'gelu', 'only "silu" (SwiGLU) is implemented'],
  ])('rejects %s = %j', (key, value, message) => {
    const e = error(() => parseHfConfig({ ...hf('mistral-tiny'), [key]: value }, 'm/config.json'));
    expect(e.key).toBe(key);
    expect(e.message).toContain(message);
    expect(e.file).toBe('m/config.json');
  });

  it('rejects more chosen experts than exist, and non-objects', () => {
    expect(error(() => parseHfConfig({ ...hf('mixtral-tiny'), num_experts_per_tok: 5 })).message).toContain('5 chosen experts but only 4 exist');
    expect(error(() => parseHfConfig([1, 2])).message).toContain('expected a JSON object');
  });

  it('counts parameters like the golden README (demo models)', () => {
    expect(parameterCount(parseHfConfig(hf('mistral-demo')))).toBe(739_200);
    expect(parameterCount(parseHfConfig(hf('mixtral-demo')))).toBe(716_672);
  });
});
