/**
 * The tutorial in docs/hooks.md runs as written: its ```ts snippets, in order, as one script
 * (the imports pointed at src/, the model folder made absolute, run in a scratch folder), and
 * prints what the text says it prints.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures.js';

it('docs/hooks.md tutorial: attribution, sweeps, steering during generation, attribution patching', () => {
  const doc = fs.readFileSync(path.join(ROOT, 'docs/hooks.md'), 'utf8');
  const section = doc.slice(doc.indexOf('## Tutorial'), doc.indexOf('### From the command line'));
  const snippets = [...section.matchAll(/```ts\n([\s\S]*?)```/g)].map((m) => m[1]!);
  expect(snippets.length).toBe(7);
  const script = snippets.join('\n')
    .replace("'./src/index.js'", JSON.stringify(path.join(ROOT, 'src/index.ts')))
    .replaceAll("'models/", `'${ROOT}/models/`);
  // Under the repository (.tmp is ignored) so that node finds tsx and tfjs in node_modules.
  fs.mkdirSync(path.join(ROOT, '.tmp'), { recursive: true });
  const dir = fs.mkdtempSync(path.join(ROOT, '.tmp', 'hooks-tutorial-'));
  fs.writeFileSync(path.join(dir, 'tutorial.mts'), script);
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'tutorial.mts'], { cwd: dir, encoding: 'utf8' });
  const svg = fs.existsSync(path.join(dir, 'sweep.svg')) ? fs.readFileSync(path.join(dir, 'sweep.svg'), 'utf8') : '';
  fs.rmSync(dir, { recursive: true });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const lines = r.stdout.trimEnd().split('\n');
  // Every line the text quotes, in order.
  expect(lines).toEqual([
    'logit diff 5.5264 sum of parts 5.5264',
    'biggest blocks.3.mlp 5.12, blocks.0.mlp 1.09, blocks.3.attn.head.1 -0.89',
    'heads 16 positions 7',
    'clean 5.53 corrupt -11.48',
    'layer 0 0.00 1.00 0.00 0.00 0.00 0.00 0.00',
    'layer 1 0.00 -0.00 -0.00 -0.00 -0.00 -0.00 1.01',
    'layer 2 0.00 -0.00 -0.00 -0.00 0.00 -0.00 1.01',
    'layer 3 0.00 -0.00 -0.00 -0.00 -0.00 -0.00 1.01',
    'layer 0 heads 0.01 -0.00 1.00 -0.00',
    'plain 85',
    'steered 95',
    'estimate layer 0 0.00 0.91 0.00 0.00 0.00 0.00 0.00',
  ]);
  expect(svg).toContain('activation patching: resid_pre by position');
  // The quoted output in the text is the output.
  for (const line of lines.slice(4, 8)) expect(doc).toContain(line);
});
