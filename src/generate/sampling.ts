/**
 * Choosing the next token from one row of logits: greedy, or sampling with temperature,
 * top-k and top-p (nucleus), in that order (transformers' order of logits warpers).
 *
 * Everything here runs in float64 JavaScript on a `Float32Array` copied off the backend,
 * with our own seeded generator, so a seed gives the same tokens on every run and on every
 * backend that produces the same logits (cpu and wasm agree to ~1e-6; a draw can only
 * differ if it lands within that distance of a boundary between two tokens).
 *
 * Worked example, logits [2, 1, 1, 0] (ids 0–3), temperature 1, top-k 3, top-p 0.6:
 *   top-k 3    keeps ids 0, 1, 2 (a tie at the cut goes to the lower id)
 *   softmax    over the kept: 0.576, 0.212, 0.212
 *   top-p 0.6  keeps the shortest prefix whose mass reaches 0.6: ids 0, 1 (0.576 + 0.212)
 *   draw       u ∈ [0, 1) against the renormalised 0.731, 0.269: u < 0.731 → id 0, else id 1
 */
import { sumExp } from '../kernels/simd/elementwise.js';
import { InputError } from '../model/errors.js';

export interface SamplingOptions {
  /** 0 (default) = greedy: the highest logit, ties to the lowest id. */
  readonly temperature?: number;
  /** Keep only the k most likely tokens (unset = all). */
  readonly topK?: number;
  /** Keep the smallest set of most likely tokens whose probability reaches p (unset or 1 = all). */
  readonly topP?: number;
}

/**
 * A small seeded generator (mulberry32: 32-bit state, period 2³²). Not for cryptography;
 * chosen because it is short, fast and identical in every JavaScript engine.
 */
export class SeededRandom {
  private state: number;

  /** @param seed an integer in [0, 2³²) */
  constructor(readonly seed: number) {
    if (!Number.isInteger(seed) || seed < 0 || seed >= 2 ** 32) {
      throw new InputError(`seed must be an integer in [0, 2^32), got ${seed}`);
    }
    this.state = seed >>> 0;
  }

  /** A float in [0, 1). */
  next(): number {
    this.state = (this.state + 0x6d2b79f5) >>> 0;
    let t = this.state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 2 ** 32;
  }
}

/** Rejects options that cannot describe a distribution (one message per option). */
export function checkSamplingOptions(o: SamplingOptions): void {
  const t = o.temperature ?? 0;
  if (!Number.isFinite(t) || t < 0) throw new InputError(`temperature must be a finite number ≥ 0, got ${t}`);
  if (o.topK !== undefined && (!Number.isInteger(o.topK) || o.topK < 1)) {
    throw new InputError(`topK must be an integer ≥ 1, got ${o.topK}`);
  }
  if (o.topP !== undefined && !(o.topP > 0 && o.topP <= 1)) throw new InputError(`topP must be in (0, 1], got ${o.topP}`);
}

/** Index of the largest value; ties go to the lowest index (as transformers' argmax). */
export function argmax(logits: ArrayLike<number>): number {
  let best = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[best]!) best = i;
  return best;
}

/** log softmax(logits)[id], the model's own log-probability of `id` (temperature 1, no filtering). */
export function logProbability(logits: ArrayLike<number>, id: number): number {
  // Called for every generated token over the whole vocabulary: plain loops, no Math.max calls.
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) {
    const v = logits[i]!;
    if (v > max || Number.isNaN(v)) max = v;
  }
  let sum = 0;
  // A vocabulary of float32 logits (every decode step): the sum in the kernels, float64 lanes,
  // 0.19 ms for 32k logits against 0.4 ms for this loop. Anything else (a short array, float64
  // values, a max that is not finite) takes the loop.
  if (logits instanceof Float32Array && n >= 1024 && Number.isFinite(max)) sum = sumExp(logits, max);
  else for (let i = 0; i < n; i++) sum += Math.exp(logits[i]! - max);
  return logits[id]! - max - Math.log(sum);
}

/**
 * The candidate tokens and their probabilities after temperature, top-k and top-p,
 * most likely first. Exposed for tests and for tools that show the distribution.
 */
export function candidates(logits: ArrayLike<number>, o: SamplingOptions): { ids: number[]; probs: number[] } {
  const t = o.temperature ?? 0;
  if (t === 0) return { ids: [argmax(logits)], probs: [1] };
  // Most likely first; equal logits in id order, so every cut below is deterministic.
  let ids = Array.from({ length: logits.length }, (_, i) => i).sort((a, b) => logits[b]! - logits[a]! || a - b);
  if (o.topK !== undefined) ids = ids.slice(0, o.topK);

  const top = logits[ids[0]!]! / t;
  const weights = ids.map((i) => Math.exp(logits[i]! / t - top));
  const total = weights.reduce((a, b) => a + b, 0);
  let probs = weights.map((w) => w / total);

  if (o.topP !== undefined && o.topP < 1) {
    let mass = 0;
    let keep = 0;
    while (keep < probs.length && mass < o.topP) mass += probs[keep++]!; // at least one token
    ids = ids.slice(0, keep);
    probs = probs.slice(0, keep).map((p) => p / mass);
  }
  return { ids, probs };
}

/** Picks the next token: greedy when temperature is 0, else one draw from `rng`. */
export function sampleToken(logits: ArrayLike<number>, o: SamplingOptions, rng: SeededRandom): number {
  if ((o.temperature ?? 0) === 0) return argmax(logits);
  const { ids, probs } = candidates(logits, o);
  const u = rng.next();
  let cumulative = 0;
  for (let i = 0; i < ids.length; i++) {
    cumulative += probs[i]!;
    if (u < cumulative) return ids[i]!;
  }
  return ids[ids.length - 1]!; // u just below 1 and rounding left the sum a hair under it
}
