/** The quick start's main job: the bundled model answers, layer by layer, and passes its parity. */
import { spawn } from 'node:child_process';
import * as path from 'node:path';
import { describe, expect, it } from 'vitest';
import { runCli } from './helpers/cli.js';
import { modelDir, ROOT } from './helpers/fixtures.js';

describe('mistral-ref demo', () => {
  it('answers 47+38= with 85 and passes parity against the bundled reference', async () => {
    const r = await runCli(['demo']);
    expect(r.stderr).toBe('');
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('prompt "47+38=" → ids [1, 24, 27, 15, 23, 28, 33]');
    expect(r.stdout).toMatch(/^47\+38=85 {4}\(greedy/m);
    // The logit lens: the last layer commits to "8".
    expect(r.stdout).toMatch(/^3\s+[\d.]+\s+"8"\s+0\.99\d$/m);
    expect(r.stdout).toMatch(/greedy ids identical — PASS$/m);
  });

  it('runs the Mixtral twin on wasm, expert choices included', async () => {
    const r = await runCli(['demo', '--model', modelDir('mixtral-demo'), '--prompt', '471+382=', '--backend', 'wasm']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('4 experts top-2');
    expect(r.stdout).toMatch(/^471\+382=853 /m);
    expect(r.stdout).toContain('expert choices identical — PASS');
  });

  it('says plainly when a prompt has characters outside the vocabulary', async () => {
    const r = await runCli(['demo', '--prompt', '47+38=é']);
    expect(r.stdout).toContain('ids [1, 24, 27, 15, 23, 28, 33, 0]');
    expect(r.stderr).toBe("demo: 1 character(s) of the prompt are outside this model's vocabulary and became <unk> (id 0)\n");
  });

  it('rejects a bad flag with one line and exit 2', async () => {
    const r = await runCli(['demo', '--max-tokens', '0']);
    expect(r.code).toBe(2);
    expect(r.stderr).toBe('mistral-ref demo: --max-tokens expects an integer ≥ 1, got "0"\n');
  });

  it('ends quietly when its reader closes the pipe early (`| head`)', async () => {
    const child = spawn(process.execPath, ['--import', 'tsx', path.join('src', 'cli', 'bin.ts'), 'demo'], { cwd: ROOT });
    let stderr = '';
    child.stderr.on('data', (d) => { stderr += d; });
    child.stdout.once('data', () => child.stdout.destroy());
    const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
    expect(stderr).toBe('');
    expect(code).toBe(0);
  });
});
