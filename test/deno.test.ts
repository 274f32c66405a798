/**
 * The notebooks run on Deno's kernel: the model, with the wasm kernels on their worker
 * threads, must run under Deno too and give the logits it gives under Node. (Deno's eval
 * workers declare `module` themselves; a worker source that declared it again died at start.)
 */
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { useBackend } from '../src/kernels/backend.js';
import { setThreads } from '../src/kernels/simd/pool.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { ROOT } from './helpers/fixtures.js';

const DENO = path.join(ROOT, 'node_modules', '.bin', 'deno');
const IDS = [1, 24, 27, 15, 23, 28, 33]; // <s>47+38=
fs.mkdirSync(path.join(ROOT, '.tmp'), { recursive: true }); // git ignores .tmp/
const dir = fs.mkdtempSync(path.join(ROOT, '.tmp', 'deno-'));
afterAll(() => fs.rmSync(dir, { recursive: true }));

describe.skipIf(!fs.existsSync(DENO))('under Deno', () => {
  it('mistral-demo on the simd kernels with 2 threads gives the logits Node computes', async () => {
    const script = path.join(dir, 'forward.ts');
    fs.writeFileSync(script, `
      import { useBackend, setThreads, Transformer } from '../../src/index.ts';
      await useBackend('cpu');
      setThreads(2);
      const m = Transformer.load('models/mistral-demo', { weights: 'resident' });
      const r = m.forward(${JSON.stringify(IDS)});
      console.log(JSON.stringify(Array.from(r.logits.dataSync())));
      m.dispose();
    `);
    // --sloppy-imports: the sources import './x.js' for x.ts (the built package does not need it).
    const out = execFileSync(DENO, ['run', '-A', '--sloppy-imports', '--quiet', script],
      { cwd: ROOT, encoding: 'utf8', timeout: 60_000, env: { ...process.env, NO_COLOR: '1' } });
    const deno = JSON.parse(out.trim().split('\n').pop()!) as number[];

    await useBackend('cpu');
    setThreads(2);
    const model = Transformer.load(path.join(ROOT, 'models', 'mistral-demo'), { weights: 'resident' });
    const r = model.forward(IDS);
    const node = Array.from(r.logits.dataSync());
    disposeResult(r);
    model.dispose();

    expect(deno).toHaveLength(node.length);
    const worst = Math.max(...deno.map((v, i) => Math.abs(v - node[i]!)));
    expect(worst).toBeLessThan(1e-5);
  });
});
