/** ConversationCache: multi-turn generation reuses the KV cache and gives what a fresh run gives. */
import * as tf from '@tensorflow/tfjs-core';
import { beforeAll, describe, expect, it } from 'vitest';
import { ConversationCache, generateSync } from '../src/generate/index.js';
import { useBackend } from '../src/kernels/backend.js';
import { Transformer } from '../src/model/transformer.js';
import { loadTokenizerSync } from '../src/tokenizer/index.js';
import { modelDir } from './helpers/fixtures.js';

beforeAll(async () => { await useBackend('cpu'); });

async function collect(it: AsyncIterable<{ id: number }>, limit = Infinity): Promise<number[]> {
  const out: number[] = [];
  for await (const t of it) {
    out.push(t.id);
    if (out.length >= limit) break;
  }
  return out;
}

describe('ConversationCache', () => {
  // Window 16 on the demo model: the conversation outgrows it, so the rolling cache is exercised too.
  it('turn after turn: the same tokens as a fresh generation over the whole conversation, the prefix reused', async () => {
    const model = Transformer.load(modelDir('mistral-demo'));
    const tok = loadTokenizerSync(modelDir('mistral-demo'));
    const before = tf.memory().numTensors;
    const conv = new ConversationCache(model);
    try {
      let prompt = tok.encode('47+38=', { bos: true });
      for (const next of ['12+30=', 'abcde|', '471+382=']) {
        const answer = await collect(conv.generate(prompt, { maxNewTokens: 6, stopAtEos: false }));
        const fresh = generateSync(model, prompt, { maxNewTokens: 6, stopAtEos: false }).map((t) => t.id);
        expect(answer).toEqual(fresh);
        expect(conv.length).toBe(prompt.length + answer.length);
        prompt = [...prompt, ...answer, ...tok.encode(next)];
      }
      expect(conv.reused).toBeGreaterThan(20); // the last turn ran only its new tokens
      const last = await collect(conv.generate(prompt, { maxNewTokens: 4, stopAtEos: false }));
      expect(last).toEqual(generateSync(model, prompt, { maxNewTokens: 4, stopAtEos: false }).map((t) => t.id));
    } finally {
      conv.dispose();
      expect(tf.memory().numTensors).toBe(before);
      model.dispose();
    }
  });

  it('a prompt that does not extend the cache starts over; breaking out early keeps what was yielded', async () => {
    const model = Transformer.load(modelDir('mistral-demo'));
    const conv = new ConversationCache(model);
    try {
      const a = [1, 24, 27, 15, 23, 28, 33];
      const first = await collect(conv.generate(a, { maxNewTokens: 8, stopAtEos: false }), 2);
      expect(conv.length).toBe(a.length + 2);
      expect(conv.reused).toBe(0);
      await collect(conv.generate([...a, ...first, 25], { maxNewTokens: 1 }));
      expect(conv.reused).toBe(a.length + 2);
      await collect(conv.generate([1, 25, 26], { maxNewTokens: 1 }));
      expect(conv.reused).toBe(0);
    } finally {
      conv.dispose();
      model.dispose();
    }
  });
});
