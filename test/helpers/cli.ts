/** Runs the CLI in-process and captures what it prints. */
import { main } from '../../src/cli/main.js';
import type { CliIO } from '../../src/cli/io.js';

export interface CliRun {
  readonly code: number;
  readonly stdout: string;
  readonly stderr: string;
}

export async function runCli(argv: string[], stdinLines: string[] = []): Promise<CliRun> {
  let stdout = '';
  let stderr = '';
  const io: CliIO = {
    stdout: (t) => { stdout += t; },
    stderr: (t) => { stderr += t; },
    interactive: false,
    stdin: async function* () { yield* stdinLines; },
  };
  const code = await main(argv, io);
  return { code, stdout, stderr };
}
