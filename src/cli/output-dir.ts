/**
 * Output folders written atomically (synth, trace): everything goes into a temporary
 * sibling `<out>.partial`, renamed to `<out>` at the end. So a folder is either absent or
 * complete: an interrupted run (an error, Ctrl-C, SIGTERM) removes its partial output, and
 * a second run into the same folder while one writes fails at once (the sibling exists).
 *
 *   await writeOutputDir('runs/7b', '--out', { replace: 'empty' }, async (tmp) => { ... });
 */
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError } from './errors.js';

export interface OutputDirOptions {
  /**
   * When `out` already exists: `empty` accepts only an empty folder (synth never
   * overwrites); a predicate accepts a folder whose every entry it approves (trace
   * replaces its own earlier output, not stale pictures mixed with new ones).
   */
  readonly replace: 'empty' | ((entry: string) => boolean);
  /** What the folder's files are, for messages ("a trace"). */
  readonly what: string;
}

/** The temporary sibling a run writes into. */
export function partialDir(out: string): string {
  return `${path.resolve(out)}.partial`;
}

/**
 * Runs `write` into a fresh temporary sibling of `out`, then renames it to `out`.
 * @throws UsageError naming `flag` for a path that cannot be written (a file in the way,
 *   no permission, another run writing); the partial folder is removed on every failure
 */
export async function writeOutputDir<T>(out: string, flag: string, opts: OutputDirOptions,
  write: (tmp: string) => Promise<T> | T): Promise<T> {
  const target = path.resolve(out);
  checkExisting(target, out, flag, opts);
  makeParents(path.dirname(target), out, flag);
  const tmp = partialDir(out);
  try {
    fs.mkdirSync(tmp); // exclusive: the lock against a second writer
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') {
      throw new UsageError(`${flag} ${out}: ${tmp} exists: another run is writing ${opts.what} there (or one was killed; then remove it)`);
    }
    throw new UsageError(`${flag} ${out}: cannot create ${tmp} (${errnoText(e)})`);
  }
  const remove = () => fs.rmSync(tmp, { recursive: true, force: true });
  const onSignal = (signal: NodeJS.Signals) => {
    remove();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    const result = await write(tmp);
    checkExisting(target, out, flag, opts); // still true? (written meanwhile by something else)
    replaceWith(tmp, target, out, flag);
    return result;
  } catch (e) {
    remove();
    throw e;
  } finally {
    process.removeListener('SIGINT', onSignal);
    process.removeListener('SIGTERM', onSignal);
  }
}

function checkExisting(target: string, out: string, flag: string, opts: OutputDirOptions): void {
  let st: fs.Stats;
  try {
    st = fs.statSync(target);
  } catch (e) {
    if (isMissing(e)) return; // an ancestor that is a file is reported by makeParents
    throw new UsageError(`${flag} ${out}: cannot read (${errnoText(e)})`);
  }
  if (!st.isDirectory()) throw new UsageError(`${flag} ${out}: exists and is not a folder`);
  const entries = fs.readdirSync(target);
  const { replace } = opts;
  if (replace === 'empty' ? entries.length > 0 : !entries.every(replace)) {
    const stranger = replace === 'empty' ? entries[0] : entries.find((e) => !replace(e));
    throw new UsageError(`${flag} ${out}: exists and holds ${JSON.stringify(stranger)}, not ${opts.what}; ` +
      `give an absent or empty folder${replace === 'empty' ? '' : ` or one with an earlier ${opts.what}`}`);
  }
}

/**
 * Creates the missing ancestors of an output folder, one level at a time from the deepest
 * existing one (Node's recursive mkdir loops forever under /proc).
 */
function makeParents(dir: string, out: string, flag: string): void {
  const missing: string[] = [];
  let at = dir;
  for (;;) {
    let st: fs.Stats | undefined;
    try {
      st = fs.statSync(at);
    } catch (e) {
      if (!isMissing(e)) throw new UsageError(`${flag} ${out}: cannot use ${at} (${errnoText(e)})`);
    }
    if (st !== undefined) {
      if (!st.isDirectory()) throw new UsageError(`${flag} ${out}: ${at} is not a folder`);
      break;
    }
    missing.unshift(at);
    const up = path.dirname(at);
    if (up === at) break;
    at = up;
  }
  for (const d of missing) {
    try {
      fs.mkdirSync(d);
    } catch (e) {
      throw new UsageError(`${flag} ${out}: cannot create ${d} (${errnoText(e)})`);
    }
  }
}

/** Moves the finished `tmp` to `target`; an earlier output there is removed after the swap. */
function replaceWith(tmp: string, target: string, out: string, flag: string): void {
  let old: string | null = null;
  if (fs.existsSync(target)) {
    old = `${target}.old-${process.pid}`;
    fs.renameSync(target, old);
  }
  try {
    fs.renameSync(tmp, target);
  } catch (e) {
    if (old !== null) fs.renameSync(old, target);
    throw new UsageError(`${flag} ${out}: cannot rename ${tmp} to it (${errnoText(e)})`);
  }
  if (old !== null) fs.rmSync(old, { recursive: true, force: true });
}

/** Nothing at this path (ENOTDIR: a file where a folder on the way should be; found walking up). */
function isMissing(e: unknown): boolean {
  const code = (e as NodeJS.ErrnoException).code;
  return code === 'ENOENT' || code === 'ENOTDIR';
}

/** "permission denied (EACCES)" from a Node fs error. */
function errnoText(e: unknown): string {
  const err = e as NodeJS.ErrnoException;
  const text: Record<string, string> = {
    EACCES: 'permission denied', EPERM: 'operation not permitted', EROFS: 'read-only file system',
    ENOTDIR: 'a part of the path is not a folder', ENOSPC: 'no space left', ENOENT: 'no such file or folder',
    EEXIST: 'already exists',
  };
  return err.code !== undefined ? `${text[err.code] ?? err.code}, ${err.code}` : err.message;
}
