/**
 * Executes the notebooks in notebooks/*.ipynb headless and writes their outputs back, so
 * the committed notebooks read well on a code host. `npm run notebooks` runs it; a failing
 * cell fails the command (and CI). Names on the command line run just those notebooks.
 *
 * What it needs, installed if absent (so a second run does nothing but execute):
 * - Debian's Jupyter (`jupyter-nbconvert`, `python3-nbclient`, `jupyter-client`,
 *   `python3-ipykernel`), run by Debian's /usr/bin/python3, not whatever python is on PATH;
 * - the Deno kernel, from the `deno` npm package (a devDependency); its kernelspec is
 *   written under node_modules/.cache, never into the user's Jupyter folders;
 * - the package's build in dist/: the notebooks import `mistral-ref` as a user would, and
 *   Deno resolves that name to dist/index.js through package.json's "exports".
 *
 * execute-notebook.py runs each one and makes its outputs portable (no ANSI colour codes,
 * no machine paths). A notebook with no picture among its outputs, or one that took over a
 * minute, is an error.
 */
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const NOTEBOOKS = path.join(ROOT, 'notebooks');
const PYTHON = '/usr/bin/python3';
const DEBIAN_PACKAGES = ['jupyter-nbconvert', 'python3-nbclient', 'jupyter-client', 'python3-ipykernel'];
/** Seconds a notebook may take on the project's 2-core machine. */
const BUDGET_S = 60;

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv = process.env): void {
  const r = spawnSync(cmd, args, { stdio: 'inherit', env, cwd: ROOT });
  if (r.error) throw r.error;
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')} exited with ${r.status ?? r.signal}`);
}

function hasJupyter(): boolean {
  if (!fs.existsSync(PYTHON)) return false;
  const r = spawnSync(PYTHON, ['-c', 'import nbconvert, nbclient, jupyter_client, ipykernel'], { stdio: 'ignore' });
  return r.status === 0;
}

/** Debian's Jupyter, through apt-get as root (or sudo). */
function ensureJupyter(): void {
  if (hasJupyter()) return;
  const root = process.getuid?.() === 0;
  const sudo = root ? [] : ['sudo'];
  if (!root && spawnSync('sudo', ['-n', 'true'], { stdio: 'ignore' }).status !== 0) {
    throw new Error(`Jupyter is missing; install the Debian packages ${DEBIAN_PACKAGES.join(' ')} (as root), then run again`);
  }
  console.log(`notebooks: installing ${DEBIAN_PACKAGES.join(' ')} with apt-get`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  const apt = (...args: string[]) => (sudo.length ? run('sudo', ['-E', 'apt-get', ...args], env) : run('apt-get', args, env));
  apt('update', '-qq');
  apt('install', '-y', '-qq', '--no-install-recommends', ...DEBIAN_PACKAGES);
  if (!hasJupyter()) throw new Error('apt-get installed Jupyter, but /usr/bin/python3 still cannot import nbconvert');
}

/** The Deno binary the npm package ships (its bin entry is the binary, or a .cjs launcher if npm skipped its postinstall). */
function denoCommand(): string[] {
  const bin = path.join(ROOT, 'node_modules', '.bin', 'deno');
  if (!fs.existsSync(bin)) throw new Error('node_modules/.bin/deno is missing: run npm ci (deno is a devDependency)');
  const real = fs.realpathSync(bin);
  return real.endsWith('.cjs') ? [process.execPath, real] : [real];
}

/** A kernelspec of our own, found through JUPYTER_PATH; returns that folder. */
function writeKernelspec(): string {
  const dir = path.join(ROOT, 'node_modules', '.cache', 'mistral-ref-notebooks', 'jupyter');
  const spec = path.join(dir, 'kernels', 'deno');
  fs.mkdirSync(spec, { recursive: true });
  const kernel = {
    argv: [...denoCommand(), 'jupyter', '--kernel', '--conn', '{connection_file}'],
    display_name: 'Deno',
    language: 'typescript',
  };
  fs.writeFileSync(path.join(spec, 'kernel.json'), JSON.stringify(kernel, null, 2) + '\n');
  return dir;
}

/** dist/ is what `mistral-ref` resolves to: rebuild when any source is newer. */
function ensureBuild(): void {
  const built = path.join(ROOT, 'dist', 'index.js');
  const stamp = fs.existsSync(built) ? fs.statSync(built).mtimeMs : 0;
  const newer = (dir: string): boolean => fs.readdirSync(dir, { withFileTypes: true }).some((e) => {
    const p = path.join(dir, e.name);
    return e.isDirectory() ? newer(p) : e.name.endsWith('.ts') && fs.statSync(p).mtimeMs > stamp;
  });
  if (stamp === 0 || newer(path.join(ROOT, 'src'))) {
    console.log('notebooks: building dist/');
    run('npm', ['run', '--silent', 'build']);
  }
}

function main(): void {
  const wanted = process.argv.slice(2).map((a) => path.basename(a));
  const files = fs.readdirSync(NOTEBOOKS).filter((f) => f.endsWith('.ipynb') && (wanted.length === 0 || wanted.includes(f))).sort();
  if (files.length === 0) throw new Error(`no notebooks${wanted.length ? ` named ${wanted.join(', ')}` : ''} in notebooks/`);

  ensureJupyter();
  ensureBuild();
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    JUPYTER_PATH: writeKernelspec(),
    NO_COLOR: '1', // Deno's console.log and warnings without colour codes
    PYDEVD_DISABLE_FILE_VALIDATION: '1',
  };
  const failed: string[] = [];
  for (const f of files) {
    const file = path.join(NOTEBOOKS, f);
    const start = performance.now();
    const r = spawnSync(PYTHON, [path.join(ROOT, 'scripts', 'execute-notebook.py'), file, ROOT], { cwd: NOTEBOOKS, env, encoding: 'utf8' });
    const seconds = (performance.now() - start) / 1000;
    if (r.status !== 0) {
      process.stderr.write(r.stderr ?? '');
      failed.push(`${f}: a cell failed`);
      continue;
    }
    const pictures = Number(r.stdout.trim().split('\n').pop());
    console.log(`notebooks: ${f}  ${seconds.toFixed(1)} s, ${pictures} picture${pictures === 1 ? '' : 's'}`);
    if (pictures === 0) failed.push(`${f}: no picture among its outputs`);
    if (seconds > BUDGET_S) failed.push(`${f}: took ${seconds.toFixed(0)} s, over the ${BUDGET_S} s budget`);
  }
  if (failed.length > 0) {
    console.error(`notebooks: ${failed.length} of ${files.length} failed:\n  ${failed.join('\n  ')}`);
    process.exit(1);
  }
  console.log(`notebooks: all ${files.length} ran, every cell green`);
}

try {
  main();
} catch (e) {
  console.error(`notebooks: ${(e as Error).message}`);
  process.exit(1);
}
