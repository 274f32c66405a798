/**
 * A bounded load test: 200 chat completions, 16 at a time, against one server on the demo
 * model (4 running at once, the rest queued). None may be lost or refused, the tensors come
 * back to where they were, and RSS stays flat after a warm-up. Before it: requests that run
 * at once answer as they do alone. The latency percentiles it
 * prints are the figures quoted in docs/serve.md.
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { serveDemo } from './helpers/serve.js';

const t = serveDemo({ parallel: 4, queue: 16 });

const REQUESTS = 200;
const CONCURRENCY = 16;

async function one(i: number): Promise<number> {
  const t0 = performance.now();
  const r = await fetch(`${t.url}/v1/chat/completions`, {
    method: 'POST',
    body: JSON.stringify({
      model: 'mistral-demo', messages: [{ role: 'user', content: `${10 + (i % 80)}+${i % 50}=` }], max_tokens: 8,
      ...(i % 4 === 3 ? { stream: true } : {}),
    }),
  });
  expect(r.status).toBe(200);
  const text = await r.text();
  if (i % 4 === 3) expect(text.endsWith('data: [DONE]\n\n')).toBe(true);
  else expect((JSON.parse(text) as { usage: { completion_tokens: number } }).usage.completion_tokens).toBeGreaterThan(0);
  return performance.now() - t0;
}

const pct = (sorted: number[], p: number) => sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)]!;

describe('requests that run at once', () => {
  it('give the answers they give alone (each its own KV cache, tokens interleaved)', async () => {
    const ask = async (p: string) => {
      const r = await fetch(`${t.url}/v1/chat/completions`, { method: 'POST', body: JSON.stringify({ model: 'mistral-demo', messages: [{ role: 'user', content: p }], max_tokens: 24 }) });
      return (await r.json() as { choices: { message: { content: string } }[] }).choices[0]!.message.content;
    };
    const prompts = ['47+38=', 'abcde|', 'hello>', '471+382=', 'a=3,k=9;k?', 'zyx>', '12+13=', 'qwert|'];
    const alone: string[] = [];
    for (const p of prompts) alone.push(await ask(p));
    expect(new Set(alone).size).toBeGreaterThan(3); // (different answers, so a mix-up would show)
    expect(await Promise.all(prompts.map(ask))).toEqual(alone);
  });
});

describe('load', () => {
  it(`${REQUESTS} requests, ${CONCURRENCY} at a time: none lost, memory flat`, async () => {
    for (let i = 0; i < 20; i++) await one(i); // warm-up: code paths compiled, pools grown
    const tensors = tf.memory().numTensors;
    const rss0 = process.memoryUsage().rss;
    const latencies: number[] = [];
    let next = 0;
    const t0 = performance.now();
    await Promise.all(Array.from({ length: CONCURRENCY }, async () => {
      while (next < REQUESTS) latencies.push(await one(next++));
    }));
    const seconds = (performance.now() - t0) / 1000;
    const rss1 = process.memoryUsage().rss;
    expect(latencies).toHaveLength(REQUESTS);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(rss1 - rss0).toBeLessThan(64 * 2 ** 20);
    const sorted = [...latencies].sort((a, b) => a - b);
    console.log(`load: ${REQUESTS} requests, ${CONCURRENCY} at a time, in ${seconds.toFixed(1)} s (${(REQUESTS / seconds).toFixed(1)} req/s); ` +
      `latency ms p50 ${pct(sorted, 50).toFixed(0)} p90 ${pct(sorted, 90).toFixed(0)} p99 ${pct(sorted, 99).toFixed(0)} max ${sorted.at(-1)!.toFixed(0)}; ` +
      `RSS ${(rss0 / 2 ** 20).toFixed(0)} → ${(rss1 / 2 ** 20).toFixed(0)} MiB`);
  });
});
