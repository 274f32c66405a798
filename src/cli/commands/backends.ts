import { BACKENDS, useBackend, webgpuAdapter, type BackendName } from '../../kernels/backend.js';
import type { WebGpuAdapterInfo } from '../../kernels/webgpu.js';
import { parse } from '../args.js';
import { table } from '../common.js';
import type { CliIO } from '../io.js';

export const summary = 'which backends work here (for webgpu: the adapter and its limits)';

export const usage = `usage: mistral-ref backends [--json]

Starts each backend (cpu, wasm, tensorflow, webgpu) and reports whether it works here, and
the reason when it does not; for webgpu, the adapter Dawn found (a GPU, or Mesa's llvmpipe
software adapter after scripts/setup-webgpu.sh) and the limits that decide how weights are
laid out (a weight over maxStorageBufferBindingSize is split by rows).

  --json                 one JSON object on stdout:
                         {"backends":[{"name","available","reason"?,"adapter"?}]}

exit: 0 (the report is the answer, whatever it says), 2 bad usage
`;

export interface BackendReport {
  readonly name: BackendName;
  readonly available: boolean;
  /** Why not, when not available. */
  readonly reason?: string;
  /** webgpu only: the adapter in use. */
  readonly adapter?: WebGpuAdapterInfo & { readonly name: string };
}

/** Tries every backend in this process. */
export async function backendReports(): Promise<BackendReport[]> {
  const reports: BackendReport[] = [];
  for (const name of BACKENDS) {
    try {
      await useBackend(name);
      const a = name === 'webgpu' ? webgpuAdapter() : null;
      reports.push({ name, available: true, ...(a ? { adapter: { name: a.device || a.description, ...a } } : {}) });
    } catch (e) {
      reports.push({ name, available: false, reason: (e as Error).message.split('\n')[0]! });
    }
  }
  await useBackend('cpu');
  return reports;
}

export async function run(args: string[], io: CliIO): Promise<number> {
  const { values } = parse(args, { json: { type: 'boolean' } });
  const reports = await backendReports();
  if (values.json) {
    io.stdout(JSON.stringify({ backends: reports }) + '\n');
    return 0;
  }
  const rows = reports.map((r) => [r.name, r.available ? 'yes' : 'no', r.available
    ? (r.adapter ? `${r.adapter.name} (${r.adapter.description}; ${r.adapter.route}); maxStorageBufferBindingSize ` +
      `${r.adapter.limits.maxStorageBufferBindingSize}, maxBufferSize ${r.adapter.limits.maxBufferSize}` : '')
    : r.reason!]);
  io.stdout(table(['backend', 'available', 'details'], rows));
  return 0;
}
