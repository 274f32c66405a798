/** The notebooks run as written, and their hand-computed steps agree with the model. */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures.js';

describe('notebooks', () => {
  it('01-one-token-through-mistral computes layer 0 by hand, equal to the model, and answers 85', () => {
    const out = execFileSync(process.execPath, ['--import', 'tsx', path.join('notebooks', '01-one-token-through-mistral.ts')],
      { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });
    const deltas = [...out.matchAll(/max \|Δ\| vs the model: (\S+)/g)].map((m) => Number(m[1]));
    expect(deltas).toHaveLength(7);
    for (const d of deltas) expect(d).toBeLessThan(1e-5);
    expect(out).toContain('query 16 (=) sees: · 1 2 +'); // the window drops BOS for the 17th token
    expect(out).toMatch(/^12\+34=46<\/s><s>47\+38=85$/m);
    expect(out.trimEnd().endsWith('tensors left: 0')).toBe(true);
  });
});
