import { CheckpointError } from '../io/errors.js';
import { BackendError } from '../kernels/backend.js';
import { InputError, NonFiniteError } from '../model/errors.js';
import { HookError } from '../model/hooks.js';
import { TokenizerError } from '../tokenizer/errors.js';

/** Bad command-line usage: unknown flag, missing value, malformed number. */
export class UsageError extends Error {
  override readonly name = 'UsageError';
}

/**
 * Errors that describe bad input rather than a bug: the CLI prints their message on one
 * line and exits 2. Modules that stand alone (src/tokenizer) register theirs here.
 */
export const USER_ERRORS: Array<abstract new (...args: never[]) => Error> = [
  UsageError, CheckpointError, InputError, NonFiniteError, BackendError, HookError, TokenizerError,
];

export function isUserError(e: unknown): e is Error {
  return USER_ERRORS.some((cls) => e instanceof cls);
}
