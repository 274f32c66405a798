/**
 * JSON as Python's `json` module reads and writes it — because Mistral's chat formats put
 * `json.dumps(…, ensure_ascii=False)` output into the prompt, and every character counts.
 *
 * Where JavaScript's JSON differs from Python's:
 *   separators       Python writes `{"a": 1, "b": [1, 2]}` (", " and ": "); JSON.stringify writes none
 *   floats           json.loads("1.0") is the float 1.0 and is written back "1.0"; JSON.parse gives 1 → "1".
 *                    Python writes repr(float): 1e-05, 1e+16, 0.0001, 1234.5
 *   big integers     Python ints are exact at any size; here an integer keeps its digits
 *   key order        Python dicts keep insertion order; JS objects put integer-like keys ("2") first
 *   escapes          ensure_ascii=False: only `"`, `\` and U+0000–U+001F are escaped (\n \r \t \b \f or \u00XX)
 *
 * So parsed JSON is kept as `PyValue`: objects as ordered entry lists, numbers as the text
 * Python would print for them.
 */

/** A number as Python prints it ("5", "1.0", "1e-05"). */
export class PyNumber {
  constructor(readonly repr: string) {}
}

/** A dict, in insertion order. */
export class PyDict {
  constructor(readonly entries: ReadonlyMap<string, PyValue>) {}
}

export type PyValue = null | boolean | string | PyNumber | PyDict | readonly PyValue[];

export class PyJsonError extends Error {
  override readonly name = 'PyJsonError';
  constructor(message: string, readonly position: number) {
    super(`${message} at position ${position}`);
  }
}

/** `json.loads(text)`; throws PyJsonError. */
export function loads(text: string): PyValue {
  let pos = 0;
  const ws = () => {
    while (pos < text.length && ' \t\n\r'.includes(text[pos]!)) pos++;
  };
  const fail = (what: string): never => {
    throw new PyJsonError(pos < text.length ? `${what}, got ${JSON.stringify(text[pos])}` : `${what}, got the end of the text`, pos);
  };
  const value = (): PyValue => {
    ws();
    const c = text[pos];
    if (c === '{') return object();
    if (c === '[') return array();
    if (c === '"') return string();
    if (c === '-' || (c !== undefined && c >= '0' && c <= '9')) return number();
    for (const [word, v] of [['true', true], ['false', false], ['null', null]] as const) {
      if (text.startsWith(word, pos)) {
        pos += word.length;
        return v;
      }
    }
    return fail('expected a JSON value');
  };
  const object = (): PyDict => {
    pos++; // {
    const entries = new Map<string, PyValue>();
    ws();
    if (text[pos] === '}') {
      pos++;
      return new PyDict(entries);
    }
    for (;;) {
      ws();
      if (text[pos] !== '"') fail('expected a property name in double quotes');
      const key = string();
      ws();
      if (text[pos] !== ':') fail("expected ':'");
      pos++;
      entries.set(key, value()); // a repeated key keeps its first place and takes the last value, as in a dict
      ws();
      if (text[pos] === ',') { pos++; continue; }
      if (text[pos] === '}') { pos++; return new PyDict(entries); }
      fail("expected ',' or '}'");
    }
  };
  const array = (): PyValue[] => {
    pos++; // [
    const items: PyValue[] = [];
    ws();
    if (text[pos] === ']') {
      pos++;
      return items;
    }
    for (;;) {
      items.push(value());
      ws();
      if (text[pos] === ',') { pos++; continue; }
      if (text[pos] === ']') { pos++; return items; }
      fail("expected ',' or ']'");
    }
  };
  const string = (): string => {
    pos++; // "
    let out = '';
    for (;;) {
      const c = text[pos];
      if (c === undefined) fail('unterminated string');
      if (c === '"') { pos++; return out; }
      if (c! < ' ') fail('control character in a string');
      if (c !== '\\') { out += c; pos++; continue; }
      const e = text[pos + 1];
      const simple: Record<string, string> = { '"': '"', '\\': '\\', '/': '/', b: '\b', f: '\f', n: '\n', r: '\r', t: '\t' };
      if (e !== undefined && e in simple) { out += simple[e]; pos += 2; continue; }
      if (e === 'u' && /^[0-9a-fA-F]{4}$/.test(text.slice(pos + 2, pos + 6))) {
        out += String.fromCharCode(parseInt(text.slice(pos + 2, pos + 6), 16));
        pos += 6;
        continue;
      }
      pos++;
      fail('invalid escape');
    }
  };
  const number = (): PyNumber => {
    const m = /^-?(?:0|[1-9]\d*)(\.\d+)?([eE][+-]?\d+)?/.exec(text.slice(pos));
    if (m === null) return fail('invalid number');
    pos += m[0].length;
    if (m[1] === undefined && m[2] === undefined) return new PyNumber(BigInt(m[0]).toString()); // an int: "-0" → "0"
    return new PyNumber(floatRepr(Number(m[0])));
  };
  const v = value();
  ws();
  if (pos < text.length) fail('extra data after the JSON value');
  return v;
}

/** Python's repr(float): the shortest digits that round-trip, scientific below 1e-4 and from 1e16. */
export function floatRepr(x: number): string {
  if (Number.isNaN(x)) return 'NaN';
  if (!Number.isFinite(x)) return x > 0 ? 'Infinity' : '-Infinity';
  if (x === 0) return Object.is(x, -0) ? '-0.0' : '0.0';
  const [mantissa, exp] = x.toExponential().split('e') as [string, string];
  const e = Number(exp);
  if (e < -4 || e >= 16) {
    return `${mantissa}e${e < 0 ? '-' : '+'}${String(Math.abs(e)).padStart(2, '0')}`;
  }
  const digits = mantissa.replace('-', '').replace('.', '');
  const sign = x < 0 ? '-' : '';
  if (e < 0) return `${sign}0.${'0'.repeat(-e - 1)}${digits}`;
  const intPart = digits.slice(0, e + 1).padEnd(e + 1, '0');
  const frac = digits.slice(e + 1);
  return `${sign}${intPart}.${frac === '' ? '0' : frac}`;
}

/**
 * A plain JS value → PyValue. JS numbers have no int/float distinction: an integral number
 * is written as a Python int (5), any other as a float (0.5).
 */
export function fromJs(v: unknown): PyValue {
  if (v === null || typeof v === 'boolean' || typeof v === 'string') return v;
  if (v instanceof PyNumber || v instanceof PyDict) return v;
  if (typeof v === 'number') {
    if (!Number.isFinite(v)) throw new TypeError(`${v} has no JSON form`);
    return new PyNumber(Number.isInteger(v) ? BigInt(v).toString() : floatRepr(v));
  }
  if (typeof v === 'bigint') return new PyNumber(v.toString());
  if (Array.isArray(v)) return v.map(fromJs);
  if (typeof v === 'object') {
    return new PyDict(new Map(Object.entries(v as object).filter(([, x]) => x !== undefined).map(([k, x]) => [k, fromJs(x)])));
  }
  throw new TypeError(`a ${typeof v} has no JSON form`);
}

/** `json.dumps(value, ensure_ascii=False)`. */
export function dumps(value: PyValue): string {
  if (value === null) return 'null';
  if (value === true) return 'true';
  if (value === false) return 'false';
  if (typeof value === 'string') return quote(value);
  if (value instanceof PyNumber) return value.repr;
  if (value instanceof PyDict) return `{${[...value.entries].map(([k, v]) => `${quote(k)}: ${dumps(v)}`).join(', ')}}`;
  return `[${value.map(dumps).join(', ')}]`;
}

/** A PyValue → plain JS (dicts become objects, numbers JS numbers). */
export function toJs(value: PyValue): unknown {
  if (value instanceof PyNumber) return Number(value.repr);
  if (value instanceof PyDict) return Object.fromEntries([...value.entries].map(([k, v]) => [k, toJs(v)]));
  if (Array.isArray(value)) return value.map(toJs);
  return value;
}

function quote(s: string): string {
  const named: Record<string, string> = { '"': '\\"', '\\': '\\\\', '\n': '\\n', '\r': '\\r', '\t': '\\t', '\b': '\\b', '\f': '\\f' };
  // eslint-disable-next-line no-control-regex
  return `"${s.replace(/["\\\u0000-\u001f]/g, (c) => named[c] ?? `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`)}"`;
}
