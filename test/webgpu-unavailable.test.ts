/**
 * When webgpu cannot be had, the error says what is missing, on one line, exit 2: the
 * optional packages (resolution simulated), or an adapter (made unreachable: only the
 * OpenGL ES route, with EGL pointed at a Wayland display that does not exist).
 */
import * as tf from '@tensorflow/tfjs-core';
import { describe, expect, it } from 'vitest';
import { BackendError, useBackend, webgpuAdapter } from '../src/kernels/backend.js';
import { packagePaths } from '../src/kernels/webgpu.js';
import { runCli } from './helpers/cli.js';
import { modelDir, refFile } from './helpers/fixtures.js';

describe('webgpu unavailable', () => {
  it('names the optional packages that are not installed', () => {
    const without = (absent: string[]) => packagePaths((spec) => (absent.includes(spec) ? null : `/x/${spec}.js`));
    expect(without(['webgpu'])).toEqual({ problem: { kind: 'missing',
      message: 'backend "webgpu" needs the optional package webgpu@0.6.2: `npm install webgpu@0.6.2`' } });
    expect(without(['webgpu', '@tensorflow/tfjs-backend-webgpu'])).toEqual({ problem: { kind: 'missing',
      message: 'backend "webgpu" needs the optional packages webgpu@0.6.2 and @tensorflow/tfjs-backend-webgpu@4.22.0: ' +
        '`npm install webgpu@0.6.2 @tensorflow/tfjs-backend-webgpu@4.22.0`' } });
    expect(without([])).toHaveProperty('paths.webgpu', '/x/webgpu.js');
  });

  it('without an adapter, --backend webgpu is one line naming what is missing, exit 2', async () => {
    process.env.MISTRAL_REF_WEBGPU_ROUTE = 'opengles';
    process.env.EGL_PLATFORM = 'wayland';
    delete process.env.WAYLAND_DISPLAY;
    delete process.env.XDG_RUNTIME_DIR;
    const run = await runCli(['parity', '--model', modelDir('mistral-tiny'), '--reference', refFile('mistral-tiny'), '--backend', 'webgpu']);
    expect(run.stdout).toBe('');
    expect(run.stderr).toBe('mistral-ref parity: backend "webgpu" is not available: no WebGPU adapter (opengles: no adapter) ' +
      '(on a machine without a GPU, run scripts/setup-webgpu.sh as root)\n');
    expect(run.code).toBe(2);
    await expect(useBackend('webgpu')).rejects.toThrow(BackendError);
    expect(webgpuAdapter()).toBeNull();
    expect(tf.getBackend()).not.toBe('webgpu');
  });

  it('backends --json says why webgpu is not available', async () => {
    const run = await runCli(['backends', '--json']);
    expect(run.code).toBe(0);
    const { backends } = JSON.parse(run.stdout) as { backends: Array<Record<string, unknown>> };
    expect(backends.find((b) => b.name === 'webgpu')).toEqual({ name: 'webgpu', available: false,
      reason: 'backend "webgpu" is not available: no WebGPU adapter (opengles: no adapter) (on a machine without a GPU, run scripts/setup-webgpu.sh as root)' });
    expect(backends.find((b) => b.name === 'wasm')).toEqual({ name: 'wasm', available: true });
  });
});
