/** Builds the wasm kernels before any test runs, so tests never see a stale build. */
import { execFileSync } from 'node:child_process';
import * as path from 'node:path';

export default function setup(): void {
  const root = path.resolve(import.meta.dirname, '..', '..');
  execFileSync(process.execPath, ['--import', 'tsx', path.join('scripts', 'build-kernels.ts')], { cwd: root, stdio: 'ignore' });
}
