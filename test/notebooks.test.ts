/**
 * The committed notebooks, as a reader sees them on a code host: every code cell executed
 * without error, a picture in each, outputs free of colour codes and machine paths, the
 * package imported by its name, and notebook 1's hand-made steps equal to the model.
 * (`npm run notebooks` executes them; CI runs it, so a failing cell fails CI.)
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures.js';

interface Output { output_type: string; text?: string[]; data?: Record<string, unknown> }
interface Cell { cell_type: string; source: string[]; execution_count?: number | null; outputs?: Output[] }
interface Notebook { cells: Cell[]; metadata: { kernelspec?: { name: string } } }

const DIR = path.join(ROOT, 'notebooks');
const files = fs.readdirSync(DIR).filter((f) => f.endsWith('.ipynb')).sort();
const read = (f: string) => JSON.parse(fs.readFileSync(path.join(DIR, f), 'utf8')) as Notebook;
const stdout = (nb: Notebook) => nb.cells.flatMap((c) => c.outputs ?? []).filter((o) => o.output_type === 'stream').map((o) => o.text!.join('')).join('');

describe('notebooks', () => {
  it('are the six of the course, in order', () => {
    expect(files.map((f) => f.slice(0, 3))).toEqual(['01-', '02-', '03-', '04-', '05-', '06-']);
  });

  it.each(files)('%s: executed on the Deno kernel, no errors, at least one picture, portable outputs, imports the package by name', (f) => {
    const nb = read(f);
    expect(nb.metadata.kernelspec?.name).toBe('deno');
    const code = nb.cells.filter((c) => c.cell_type === 'code');
    expect(code.length).toBeGreaterThan(2);
    for (const c of code) expect(c.execution_count, c.source.join('')).toBeGreaterThan(0);
    const outputs = code.flatMap((c) => c.outputs ?? []);
    expect(outputs.filter((o) => o.output_type === 'error')).toEqual([]);
    expect(outputs.some((o) => o.data !== undefined && ('image/svg+xml' in o.data || 'image/png' in o.data))).toBe(true);
    const text = JSON.stringify(outputs);
    expect(text).not.toMatch(/\\u001b\[/); // ANSI colour codes
    for (const p of [ROOT, path.dirname(ROOT), '/root/', '/home/', '/tmp/']) expect(text).not.toContain(p);
    const sources = code.map((c) => c.source.join('')).join('\n');
    expect(sources).toMatch(/from 'mistral-ref'/);
    expect(sources).not.toMatch(/from '\.\.?\/(src|dist)\//);
    expect(stdout(nb).trimEnd()).not.toMatch(/tensors left: [1-9]/);
  });

  it('01 computes layer 0 by hand, equal to the model, and answers 85', () => {
    const out = stdout(read('01-one-token-through-mistral.ipynb'));
    const deltas = [...out.matchAll(/max \|Δ\| vs the model: (\S+)/g)].map((m) => Number(m[1]));
    expect(deltas).toHaveLength(10);
    for (const d of deltas) expect(d).toBeLessThan(1e-5);
    expect(out).toContain('query 16 (=) sees: · 1 2 +'); // the window drops BOS for the 17th token
    expect(out).toMatch(/^12\+34=46<\/s><s>47\+38=85$/m);
    expect(out.trimEnd().endsWith('tensors left: 0')).toBe(true);
  });

  it('02, 04 and 05 report the checks their cells enforce', () => {
    expect(stdout(read('02-sliding-window-and-rolling-cache.ipynb'))).toMatch(/one at a time: max \|Δ logits\| vs the full forward = \d\.\de-\d/);
    const inside = stdout(read('04-looking-inside.ipynb'));
    expect(inside).toMatch(/sum of the parts (\S+), the model's logit difference \1/);
    expect(inside).toMatch(/MLP at "=": by hand (\S+), logitAttrs \1/); // one part by hand, against the library
    expect(inside).toMatch(/\("="\): by hand (\S+), patchSweep \1/); // one patch by hand, against the sweep
    const parity = stdout(read('05-parity.ipynb'));
    expect(parity).toContain('pass: true\n');
    expect(parity).toMatch(/broken \(×1\.01, layer 2 MLP\)\s+pass: false first divergent layer: 2/);
  });
});
