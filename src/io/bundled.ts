/**
 * The models this package ships (models/<name>) and the references they are proven
 * against (fixtures/refs/<name>.json), found from the installed package, whatever the
 * current folder: `Transformer.load(bundledModel('mistral-demo'))` works in any project.
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { CheckpointError } from './errors.js';

export const BUNDLED_MODELS = ['mistral-demo', 'mixtral-demo'] as const;
export type BundledModelName = (typeof BUNDLED_MODELS)[number];

/** The package root: this file is src/io/bundled.ts, or dist/io/bundled.js once built. */
export const PACKAGE_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export function isBundledModel(name: string): name is BundledModelName {
  return (BUNDLED_MODELS as readonly string[]).includes(name);
}

/** Absolute folder of a bundled model: `bundledModel('mixtral-demo')`. */
export function bundledModel(name: string): string {
  if (!isBundledModel(name)) {
    throw new CheckpointError(name, `not a bundled model (bundled: ${BUNDLED_MODELS.join(', ')})`);
  }
  return path.join(PACKAGE_ROOT, 'models', name);
}

/** The reference file shipped for a model of this name (fixtures/refs/<name>.json; bundled models' ship with the package). */
export function bundledReference(name: string): string {
  return path.join(PACKAGE_ROOT, 'fixtures', 'refs', `${name}.json`);
}

/**
 * What `--model VALUE` names: an existing path as given, else a bundled model's name
 * (`--model mistral-demo` from any folder), else VALUE unchanged (reported when opened).
 */
export function resolveModelDir(value: string): string {
  if (fs.existsSync(value) || !isBundledModel(value)) return value;
  return bundledModel(value);
}
