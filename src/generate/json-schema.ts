/**
 * An incremental JSON-schema matcher: it reads JSON one character at a time and says, after
 * each one, whether the text so far can still become a value the schema accepts. Constrained
 * decoding (constrain.ts) asks it about every candidate piece of the vocabulary.
 *
 *   let s = startState(compileSchema({ type: 'object', properties: { n: { type: 'integer' } }, required: ['n'] }));
 *   s = feed(s, '{')   // alive
 *   s = feed(s, '"')   // alive: only the key "n" can follow
 *   feed(s, 'x')       // [] — dead: no key starts with x
 *
 * A state is a set of alternatives (an NFA: `anyOf` and type lists try each option), each a
 * stack of frames, innermost last. States are immutable, so forking one per candidate piece
 * costs a few small arrays. An empty stack is a finished value.
 *
 * What is matched, and what is not (documented in docs/serve.md):
 * - types `object`, `array`, `string`, `number`, `integer`, `boolean`, `null`, lists of types,
 *   `enum`, `const`, `anyOf`, `properties` + `required`, `items`, `minItems`, `maxItems`,
 *   `minLength`, `maxLength`; numbers have at most MAX_DIGITS digits in each part;
 *   an object with `properties` takes those keys only, in the order written (a required key
 *   cannot be skipped); an object without them takes any keys (values of `additionalProperties`,
 *   or any JSON);
 * - whitespace: none, except one optional space after `:` and `,` (as Python's json.dumps
 *   writes it, and Mistral's tool calls) and leading spaces before the value;
 * - keywords that only annotate (`title`, `description`, `default`, `examples`, `format`, `$schema`)
 *   are ignored; other validation keywords (`pattern`, `minimum`, `$ref`, …) are refused.
 */
import { InputError } from '../model/errors.js';

/** A schema the matcher cannot follow. */
export class SchemaError extends InputError {}

export type SchemaNode =
  | { readonly kind: 'any' }
  | { readonly kind: 'anyOf'; readonly options: readonly SchemaNode[] }
  | { readonly kind: 'string'; readonly minLength: number; readonly maxLength: number }
  | { readonly kind: 'number'; readonly integer: boolean }
  /** Exact JSON texts: enum, const, true/false, null. */
  | { readonly kind: 'literals'; readonly texts: readonly string[] }
  | {
    readonly kind: 'object';
    readonly properties: readonly (readonly [key: string, value: SchemaNode])[];
    readonly required: ReadonlySet<string>;
    /** Schema of keys beyond `properties`; only for objects without `properties`. */
    readonly additional: SchemaNode | null;
  }
  | { readonly kind: 'array'; readonly items: SchemaNode; readonly minItems: number; readonly maxItems: number };

const ANNOTATIONS = new Set(['title', 'description', 'default', 'examples', 'format', '$schema', '$id', '$comment', 'strict', 'name']);
const HANDLED = new Set(['type', 'enum', 'const', 'anyOf', 'properties', 'required', 'additionalProperties', 'items', 'minItems', 'maxItems',
  'minLength', 'maxLength']);
/** Most digits a number's integer part, fraction or exponent may have (beyond float64's precision anyway). */
export const MAX_DIGITS = 16;

/** Any JSON value; built once, its containers refer back to it. */
const ANY: SchemaNode = { kind: 'any' };
const ANY_OBJECT: SchemaNode = { kind: 'object', properties: [], required: new Set(), additional: ANY };
const ANY_ARRAY: SchemaNode = { kind: 'array', items: ANY, minItems: 0, maxItems: Infinity };
const ANY_STRING: SchemaNode = { kind: 'string', minLength: 0, maxLength: Infinity };
const ANY_OPTIONS: readonly SchemaNode[] = [
  ANY_OBJECT, ANY_ARRAY, ANY_STRING, { kind: 'number', integer: false }, { kind: 'literals', texts: ['true', 'false', 'null'] },
];

const TYPES = ['object', 'array', 'string', 'number', 'integer', 'boolean', 'null'] as const;

/** A JSON schema (a parsed JSON value) → the matcher's tree. `at` names the place for errors. */
export function compileSchema(schema: unknown, at = 'schema'): SchemaNode {
  if (schema === true) return ANY;
  if (schema === null || typeof schema !== 'object' || Array.isArray(schema)) {
    throw new SchemaError(`${at} must be a JSON object (a schema), got ${JSON.stringify(schema)}`);
  }
  const s = schema as Record<string, unknown>;
  for (const k of Object.keys(s)) {
    if (!HANDLED.has(k) && !ANNOTATIONS.has(k)) throw new SchemaError(`${at}: the keyword "${k}" is not supported by constrained decoding`);
  }
  if (s.const !== undefined) return { kind: 'literals', texts: [JSON.stringify(s.const)] };
  if (s.enum !== undefined) {
    if (!Array.isArray(s.enum) || s.enum.length === 0) throw new SchemaError(`${at}.enum must be a non-empty list`);
    return { kind: 'literals', texts: s.enum.map((v) => JSON.stringify(v)) };
  }
  if (s.anyOf !== undefined) {
    if (!Array.isArray(s.anyOf) || s.anyOf.length === 0) throw new SchemaError(`${at}.anyOf must be a non-empty list`);
    return { kind: 'anyOf', options: s.anyOf.map((o, i) => compileSchema(o, `${at}.anyOf[${i}]`)) };
  }
  const type = s.type;
  if (type === undefined) {
    if (s.properties !== undefined || s.additionalProperties !== undefined) return compileType('object', s, at);
    if (s.items !== undefined) return compileType('array', s, at);
    return ANY;
  }
  const types = Array.isArray(type) ? type : [type];
  for (const t of types) {
    if (!(TYPES as readonly unknown[]).includes(t)) throw new SchemaError(`${at}.type must be one of ${TYPES.join(', ')}, got ${JSON.stringify(t)}`);
  }
  const nodes = types.map((t) => compileType(t as (typeof TYPES)[number], s, at));
  return nodes.length === 1 ? nodes[0]! : { kind: 'anyOf', options: nodes };
}

function compileType(type: (typeof TYPES)[number], s: Record<string, unknown>, at: string): SchemaNode {
  switch (type) {
    case 'string': {
      const minLength = count(s, 'minLength', 0, at);
      const maxLength = count(s, 'maxLength', Infinity, at);
      if (maxLength < minLength) throw new SchemaError(`${at}: maxLength ${maxLength} is below minLength ${minLength}`);
      return { kind: 'string', minLength, maxLength };
    }
    case 'number': return { kind: 'number', integer: false };
    case 'integer': return { kind: 'number', integer: true };
    case 'boolean': return { kind: 'literals', texts: ['true', 'false'] };
    case 'null': return { kind: 'literals', texts: ['null'] };
    case 'array': {
      const minItems = count(s, 'minItems', 0, at);
      const maxItems = count(s, 'maxItems', Infinity, at);
      if (maxItems < minItems) throw new SchemaError(`${at}: maxItems ${maxItems} is below minItems ${minItems}`);
      return { kind: 'array', items: s.items === undefined ? ANY : compileSchema(s.items, `${at}.items`), minItems, maxItems };
    }
    case 'object': {
      const props = s.properties ?? {};
      if (props === null || typeof props !== 'object' || Array.isArray(props)) throw new SchemaError(`${at}.properties must be an object`);
      const required = s.required ?? [];
      if (!Array.isArray(required) || required.some((r) => typeof r !== 'string')) throw new SchemaError(`${at}.required must be a list of strings`);
      const properties = Object.entries(props as Record<string, unknown>).map(([k, v]) => [k, compileSchema(v, `${at}.properties.${k}`)] as const);
      for (const r of required as string[]) {
        if (!properties.some(([k]) => k === r)) throw new SchemaError(`${at}.required names "${r}", which is not among its properties`);
      }
      const extra = s.additionalProperties;
      const additional = properties.length > 0 || extra === false ? null
        : extra === undefined || extra === true ? ANY : compileSchema(extra, `${at}.additionalProperties`);
      return { kind: 'object', properties, required: new Set(required as string[]), additional };
    }
  }
}

/** A count keyword (minItems, maxLength, …): an integer ≥ 0. */
function count(s: Record<string, unknown>, k: string, fallback: number, at: string): number {
  const v = s[k];
  if (v === undefined) return fallback;
  if (!Number.isInteger(v) || (v as number) < 0) throw new SchemaError(`${at}.${k} must be an integer ≥ 0, got ${JSON.stringify(v)}`);
  return v as number;
}

// ---------------------------------------------------------------------------------------
// The matcher.

type Frame =
  /** A value is expected; `space`: one leading space may come first (after ":" or ","); `lead`: any number may (the top). */
  | { readonly t: 'value'; readonly node: SchemaNode; readonly space: boolean; readonly lead?: boolean }
  /**
   * Inside a string, after its opening quote; `hex` = \u digits still due, `esc` = just read
   * a backslash; `len` = characters so far (an escape counts one), held within [min, max].
   */
  | { readonly t: 'string'; readonly esc: boolean; readonly hex: number; readonly len: number; readonly min: number; readonly max: number }
  | { readonly t: 'literals'; readonly texts: readonly string[]; readonly typed: string }
  /** `digits`: digits in the current part (integer, fraction or exponent), at most MAX_DIGITS. */
  | { readonly t: 'number'; readonly integer: boolean; readonly phase: NumberPhase; readonly digits: number }
  | {
    readonly t: 'object';
    readonly node: Extract<SchemaNode, { kind: 'object' }>;
    /** Index of the first property that may still come. */
    readonly next: number;
    readonly phase: 'open' | 'key' | 'colon' | 'after' | 'comma';
    /** In phase 'key' (schema keys): the key's characters so far. */
    readonly typed: string;
    /** The schema of the value after the colon. */
    readonly value: SchemaNode | null;
  }
  | { readonly t: 'array'; readonly node: Extract<SchemaNode, { kind: 'array' }>; readonly count: number; readonly phase: 'open' | 'after' };

type NumberPhase = 'start' | 'minus' | 'zero' | 'int' | 'dot' | 'frac' | 'e' | 'esign' | 'exp';
const NUMBER_ENDS: ReadonlySet<NumberPhase> = new Set(['zero', 'int', 'frac', 'exp']);

type Stack = readonly Frame[];
/** The matcher's state: the alternatives still alive (none = the text cannot match). */
export type MatchState = readonly Stack[];

/** The state before the first character: a value of `node`, leading spaces allowed. */
export function startState(node: SchemaNode, prefix = ''): MatchState {
  const root: Frame = { t: 'value', node, space: false, lead: true };
  return [prefix === '' ? [root] : [root, { t: 'literals', texts: [prefix], typed: '' }]];
}

/** The state after one more character ([] when the text can no longer match). */
export function feed(state: MatchState, ch: string): MatchState {
  const out: Stack[] = [];
  for (const stack of state) out.push(...feedStack(stack, ch));
  return out;
}

/** The state after a piece of text. */
export function feedText(state: MatchState, text: string): MatchState {
  let s = state;
  for (const ch of text) {
    s = feed(s, ch);
    if (s.length === 0) break;
  }
  return s;
}

/** Whether the text so far is a complete value (a number may still grow: "12" ends here or goes on). */
export function canEnd(state: MatchState): boolean {
  return state.some((stack) => {
    let s = stack;
    while (s.length > 0) {
      const top = s.at(-1)!;
      if (!frameCanEnd(top)) return false;
      s = s.slice(0, -1);
    }
    return true;
  });
}

/** Whether nothing but the end can follow (every alternative finished). */
export function isFinished(state: MatchState): boolean {
  return state.length > 0 && state.every((s) => s.length === 0);
}

function frameCanEnd(f: Frame): boolean {
  return (f.t === 'number' && NUMBER_ENDS.has(f.phase)) || (f.t === 'literals' && f.texts.includes(f.typed));
}

const isDigit = (c: string) => c >= '0' && c <= '9';
const isHex = (c: string) => isDigit(c) || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F');

function feedStack(stack: Stack, c: string): Stack[] {
  const top = stack.at(-1);
  if (top === undefined) return []; // a finished value takes nothing more
  const below = stack.slice(0, -1);
  const replace = (...frames: Frame[]): Stack[] => [[...below, ...frames]];
  switch (top.t) {
    case 'value': {
      if (c === ' ' && (top.space || top.lead)) return replace({ ...top, space: false });
      return startValue(below, top.node, c);
    }
    case 'string': {
      if (top.hex > 0) return isHex(c) ? replace({ ...top, hex: top.hex - 1 }) : [];
      if (top.esc) {
        if (c === 'u') return replace({ ...top, esc: false, hex: 4 });
        return '"\\/bfnrt'.includes(c) ? replace({ ...top, esc: false }) : [];
      }
      if (c === '"') return top.len >= top.min ? [below] : [];
      if (c < ' ' || top.len >= top.max) return []; // control characters must be escaped
      return replace({ ...top, len: top.len + 1, esc: c === '\\' });
    }
    case 'literals': {
      const typed = top.typed + c;
      const texts = top.texts.filter((t) => t.startsWith(typed));
      const out: Stack[] = texts.length > 0 ? replace({ t: 'literals', texts, typed }) : [];
      // A finished literal that a longer one extends (enum [1, 12]): it may also end here.
      if (top.texts.includes(top.typed)) out.push(...feedStack(below, c));
      return out;
    }
    case 'number': {
      const phase = numberStep(top.phase, c, top.integer);
      const digits = phase === top.phase ? top.digits + 1 : isDigit(c) ? 1 : 0;
      if (phase !== null && digits <= MAX_DIGITS) return replace({ ...top, phase, digits });
      return NUMBER_ENDS.has(top.phase) ? feedStack(below, c) : [];
    }
    case 'object':
      return feedObject(below, top, c);
    case 'array': {
      const { node, count } = top;
      if (top.phase === 'open') {
        if (c === ']') return node.minItems === 0 ? [below] : [];
        if (node.maxItems === 0) return [];
        return startValue([...below, { ...top, phase: 'after', count: 1 }], node.items, c);
      }
      if (c === ']') return count >= node.minItems ? [below] : [];
      if (c === ',' && count < node.maxItems) return replace({ ...top, count: count + 1 }, { t: 'value', node: node.items, space: true });
      return [];
    }
  }
}

/** The first character of a value of `node`, with `below` underneath. */
function startValue(below: Stack, node: SchemaNode, c: string): Stack[] {
  switch (node.kind) {
    case 'any':
      return ANY_OPTIONS.flatMap((o) => startValue(below, o, c));
    case 'anyOf':
      return node.options.flatMap((o) => startValue(below, o, c));
    case 'string':
      return c === '"' ? [[...below, openString(node.minLength, node.maxLength)]] : [];
    case 'literals':
      return feedStack([...below, { t: 'literals', texts: node.texts, typed: '' }], c);
    case 'number':
      return feedStack([...below, { t: 'number', integer: node.integer, phase: 'start', digits: 0 }], c);
    case 'object':
      return c === '{' ? [[...below, { t: 'object', node, next: 0, phase: 'open', typed: '', value: null }]] : [];
    case 'array':
      return c === '[' ? [[...below, { t: 'array', node, count: 0, phase: 'open' }]] : [];
  }
}

function openString(min = 0, max = Infinity): Frame {
  return { t: 'string', esc: false, hex: 0, len: 0, min, max };
}

function numberStep(p: NumberPhase, c: string, integer: boolean): NumberPhase | null {
  const d = isDigit(c);
  switch (p) {
    case 'start': return c === '-' ? 'minus' : c === '0' ? 'zero' : d ? 'int' : null;
    case 'minus': return c === '0' ? 'zero' : d ? 'int' : null;
    case 'zero':
    case 'int':
      if (d) return p === 'int' ? 'int' : null; // no leading zeros
      if (integer) return null;
      return c === '.' ? 'dot' : c === 'e' || c === 'E' ? 'e' : null;
    case 'dot': return d ? 'frac' : null;
    case 'frac': return d ? 'frac' : c === 'e' || c === 'E' ? 'e' : null;
    case 'e': return c === '+' || c === '-' ? 'esign' : d ? 'exp' : null;
    case 'esign': return d ? 'exp' : null;
    case 'exp': return d ? 'exp' : null;
  }
}

type ObjectFrame = Extract<Frame, { t: 'object' }>;

/**
 * The keys that may come next: properties from `next` on, up to and including the first
 * required one (a required key cannot be skipped). [index, key] pairs.
 */
function nextKeys(f: ObjectFrame): [number, string][] {
  const out: [number, string][] = [];
  const props = f.node.properties;
  for (let i = f.next; i < props.length; i++) {
    out.push([i, props[i]![0]]);
    if (f.node.required.has(props[i]![0])) break;
  }
  return out;
}

/** Whether the object may close: no required property is left. */
function objectMayClose(f: ObjectFrame): boolean {
  return f.node.properties.slice(f.next).every(([k]) => !f.node.required.has(k));
}

function feedObject(below: Stack, f: ObjectFrame, c: string): Stack[] {
  const free = f.node.additional !== null; // any keys (an object without properties)
  const keyStart = (): Stack[] => {
    if (free) return [[...below, { ...f, phase: 'colon', value: f.node.additional }, openString()]];
    return nextKeys(f).length > 0 ? [[...below, { ...f, phase: 'key', typed: '' }]] : [];
  };
  switch (f.phase) {
    case 'open':
      if (c === '}') return objectMayClose(f) ? [below] : [];
      return c === '"' ? keyStart() : [];
    case 'comma':
      if (c === ' ' && f.typed === '') return [[...below, { ...f, typed: ' ' }]];
      return c === '"' ? keyStart() : [];
    case 'key': {
      // Keys are compared as their JSON text without quotes (a key with a quote in it is escaped).
      const keys = nextKeys(f).map(([i, k]) => [i, JSON.stringify(k).slice(1, -1)] as const);
      if (c === '"') {
        const hit = keys.find(([, k]) => k === f.typed);
        return hit === undefined ? [] : [[...below, { ...f, phase: 'colon', next: hit[0] + 1, value: f.node.properties[hit[0]]![1] }]];
      }
      const typed = f.typed + c;
      return keys.some(([, k]) => k.startsWith(typed)) ? [[...below, { ...f, typed }]] : [];
    }
    case 'colon':
      return c === ':' ? [[...below, { ...f, phase: 'after', typed: '', value: null }, { t: 'value', node: f.value!, space: true }]] : [];
    case 'after':
      if (c === '}') return objectMayClose(f) ? [below] : [];
      if (c === ',') return free || nextKeys(f).length > 0 ? [[...below, { ...f, phase: 'comma', typed: '' }]] : [];
      return [];
  }
}
