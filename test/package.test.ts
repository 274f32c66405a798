/**
 * The published package works as documented outside the repo: `npm pack`, install the
 * tarball into a fresh folder offline (from the npm cache `npm ci` warmed; the lock for
 * the fresh folder is cut from ours, so no registry metadata is needed), then run the CLI
 * on the bundled models by name and the README's library snippet, verbatim.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './helpers/fixtures.js';
import { tempDir } from './helpers/safetensors-builder.js';

const tmp = tempDir('package-test-');
afterAll(tmp.cleanup);
const project = path.join(tmp.dir, 'project');
const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';

interface LockEntry { version?: string; dev?: boolean; [k: string]: unknown }

/** Packs the repo and installs the tarball into `project` without the network. */
function packAndInstall(): void {
  const pkg = JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as Record<string, unknown> & { name: string; version: string };
  // Build dist/ with tsc alone, then pack without scripts: `prepare` would also rewrite the
  // generated kernels file that other test files may be importing right now (global-setup
  // built it before any test ran).
  execFileSync(process.execPath, [path.join(ROOT, 'node_modules', 'typescript', 'bin', 'tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, stdio: 'ignore' });
  const out = execFileSync(npm, ['pack', '--json', '--ignore-scripts', '--pack-destination', tmp.dir], { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] });
  const tgzName = (JSON.parse(out.slice(out.indexOf('['))) as Array<{ filename: string }>)[0]!.filename;
  fs.mkdirSync(project);
  const tgz = path.join(project, tgzName);
  fs.renameSync(path.join(tmp.dir, tgzName), tgz);
  const dependency = { [pkg.name]: `file:${tgzName}` };
  fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'fresh', version: '1.0.0', type: 'module', private: true, dependencies: dependency }));
  // Our lock's runtime (non-dev) entries are exactly what the package needs, at the same paths.
  const lock = JSON.parse(fs.readFileSync(path.join(ROOT, 'package-lock.json'), 'utf8')) as { packages: Record<string, LockEntry> };
  const runtime = Object.fromEntries(Object.entries(lock.packages).filter(([k, v]) => k !== '' && v.dev !== true));
  const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tgz)).digest('base64')}`;
  const self = { version: pkg.version, resolved: `file:${tgzName}`, integrity, license: pkg.license, dependencies: pkg.dependencies,
    peerDependencies: pkg.peerDependencies, peerDependenciesMeta: pkg.peerDependenciesMeta, bin: pkg.bin, engines: pkg.engines };
  fs.writeFileSync(path.join(project, 'package-lock.json'), JSON.stringify({
    name: 'fresh', version: '1.0.0', lockfileVersion: 3, requires: true,
    packages: { '': { name: 'fresh', version: '1.0.0', dependencies: dependency }, [`node_modules/${pkg.name}`]: self, ...runtime },
  }, null, 2));
  execFileSync(npm, ['install', '--offline', '--no-audit', '--no-fund', '--ignore-scripts'], { cwd: project, stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Runs the installed bin from the fresh project (not from the repo). */
function cli(...args: string[]) {
  const bin = path.join(project, 'node_modules', '.bin', 'mistral-ref');
  const r = spawnSync(bin, args, { cwd: project, encoding: 'utf8', timeout: 120_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('the packed package, installed into a fresh folder offline', () => {
  beforeAll(packAndInstall, 300_000);

  it('ships the bundled models and their references, not the test fixtures', () => {
    const root = path.join(project, 'node_modules', 'mistral-ref');
    expect(fs.readdirSync(path.join(root, 'models')).sort()).toEqual(['mistral-demo', 'mixtral-demo']);
    expect(fs.readdirSync(path.join(root, 'fixtures', 'refs')).sort()).toEqual(
      ['mistral-demo.json', 'mistral-demo.safetensors', 'mixtral-demo.json', 'mixtral-demo.safetensors']);
  });

  it('mistral-ref demo checks parity with the shipped reference', () => {
    const r = cli('demo');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('47+38=85');
    expect(r.stdout).toMatch(/parity with node_modules\/mistral-ref\/fixtures\/refs\/mistral-demo\.json .* — PASS\n$/);
  });

  it('demo --model mixtral-demo, on wasm', () => {
    const r = cli('demo', '--model', 'mixtral-demo', '--backend', 'wasm');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain('expert choices identical — PASS');
  });

  it('generate --model mistral-demo finds the bundled model by name', () => {
    const r = cli('generate', '--model', 'mistral-demo', '--prompt', '47+38=', '--max-tokens', '3');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('85\n');
  });

  it('bare mistral-ref prints its usage on stderr and exits 2', () => {
    const r = cli();
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('usage: mistral-ref <command> [options]');
  });

  it("the README's library snippet runs verbatim", () => {
    const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
    const section = readme.slice(readme.indexOf('## As a library'));
    const snippet = /```ts\n([\s\S]*?)```/.exec(section)![1]!;
    fs.writeFileSync(path.join(project, 'snippet.mjs'), snippet);
    const r = spawnSync(process.execPath, ['snippet.mjs'], { cwd: project, encoding: 'utf8', timeout: 120_000 });
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain('85');
  });
});
