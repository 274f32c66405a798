/** Where a command writes; tests pass their own to capture output in-process. */
export interface CliIO {
  readonly stdout: (text: string) => void;
  readonly stderr: (text: string) => void;
  /** Whether stderr is a terminal (progress lines are shown only then, unless forced). */
  readonly interactive: boolean;
  /** Standard input as text lines (tokenize --jsonl, chat). */
  readonly stdin: () => AsyncIterable<string>;
}

export const processIO: CliIO = {
  stdout: (t) => { process.stdout.write(t); },
  stderr: (t) => { process.stderr.write(t); },
  interactive: process.stderr.isTTY === true,
  stdin: async function* () {
    const { createInterface } = await import('node:readline');
    yield* createInterface({ input: process.stdin, crlfDelay: Infinity });
  },
};

/** A command module: src/cli/commands/<name>.ts */
export interface Command {
  /** One line for `mistral-ref --help`. */
  readonly summary: string;
  /** Full usage text for `mistral-ref <name> --help`. */
  readonly usage: string;
  /** Returns the exit code: 0 ok, 1 a check failed, 2 bad input. */
  run(args: string[], io: CliIO): Promise<number>;
}
