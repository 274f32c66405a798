/** Small helpers over node:util parseArgs that turn every parsing problem into a UsageError. */
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { BACKENDS, type BackendName } from '../kernels/backend.js';
import { UsageError } from './errors.js';

export type Options = NonNullable<ParseArgsConfig['options']>;

/**
 * The values of an options spec, typed from it: a `string` flag gives string | undefined, a
 * `boolean` flag boolean | undefined. Commands read `values.model`, never cast.
 */
export type Values<O extends Options> = { readonly [K in keyof O]?: O[K] extends { type: 'boolean' } ? boolean : string };

export interface Parsed<O extends Options> {
  readonly values: Values<O>;
  readonly positionals: string[];
}

/**
 * node:util parseArgs, strict, with every problem a UsageError. The spec is a literal
 * (`const O`), so `Values<O>` knows each flag's type; a command adds its own flags to the
 * shared ones by spreading them (`{ ...MODEL_OPTIONS, prompt: { type: 'string' } }`).
 */
export function parse<const O extends Options>(args: string[], options: O, allowPositionals = false): Parsed<O> {
  try {
    const { values, positionals } = parseArgs({ args, options, allowPositionals, strict: true });
    return { values: values as Values<O>, positionals };
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/\. To specify a positional argument.*$/, ''));
  }
}

export function required(value: string | undefined, flag: string): string {
  if (value === undefined || value === '') throw new UsageError(`${flag} is required`);
  return value;
}

/** A finite number, optionally bounded. */
export function number(value: string | undefined, flag: string, fallback: number, opts: { min?: number; max?: number; integer?: boolean } = {}): number {
  if (value === undefined) return fallback;
  const n = Number(value);
  const { min = -Infinity, max = Infinity, integer = false } = opts;
  if (value.trim() === '' || !Number.isFinite(n) || n < min || n > max || (integer && !Number.isInteger(n))) {
    const range = `${min === -Infinity ? '' : `≥ ${min}`}${min !== -Infinity && max !== Infinity ? ' and ' : ''}${max === Infinity ? '' : `≤ ${max}`}`;
    throw new UsageError(`${flag} expects ${integer ? 'an integer' : 'a number'}${range ? ` ${range}` : ''}, got ${JSON.stringify(value)}`);
  }
  return n;
}

export function backend(value: string | undefined): BackendName {
  const b = value ?? 'cpu';
  if (!(BACKENDS as readonly string[]).includes(b)) throw new UsageError(`--backend must be one of ${BACKENDS.join(', ')}, got ${JSON.stringify(b)}`);
  return b as BackendName;
}

export function oneOf<T extends string>(value: string | undefined, flag: string, allowed: readonly T[], fallback: T): T {
  const v = value ?? fallback;
  if (!(allowed as readonly string[]).includes(v)) throw new UsageError(`${flag} must be one of ${allowed.join(', ')}, got ${JSON.stringify(v)}`);
  return v as T;
}

/** "1,2,3" → [1, 2, 3] */
export function idList(value: string, flag: string): number[] {
  const parts = value.split(',').map((s) => s.trim()).filter((s) => s !== '');
  const ids = parts.map(Number);
  // Decimal digits only: Number() would also read "0x10" as 16 and "1e1" as 10.
  if (parts.length === 0 || parts.some((p) => !/^\d+$/.test(p)) || ids.some((x) => !Number.isSafeInteger(x))) {
    throw new UsageError(`${flag} expects comma-separated non-negative integers, got ${JSON.stringify(value)}`);
  }
  return ids;
}
