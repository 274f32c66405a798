/**
 * Attention masks as predicates over absolute positions, so prefill, chunked prefill and
 * the rolling cache all share one rule.
 *
 * Sliding window W: query i sees key j iff  i − W < j ≤ i  (W keys, the query's own
 * included). This is Mistral's and transformers 4.47's convention; some releases of both
 * used W + 1 keys by mistake (docs/parity.md, "Sliding-window semantics"). Example, W = 3, six tokens:
 *
 *        key j: 0 1 2 3 4 5
 *   query 0     x . . . . .
 *   query 1     x x . . . .
 *   query 2     x x x . . .
 *   query 3     . x x x . .
 *   query 4     . . x x x .
 *   query 5     . . . x x x
 */

/** Marks an empty cache slot: no query may attend it. */
export const EMPTY_SLOT = -1;

export function canAttend(query: number, key: number, window: number | null): boolean {
  if (key === EMPTY_SLOT || key > query) return false; // causal
  return window === null || query - window < key; // sliding window, W keys
}

/**
 * Additive bias for the scores: 0 where allowed, −∞ where masked.
 * @returns row-major [queries, keys]
 */
export function maskBias(queryPositions: readonly number[], keyPositions: readonly number[],
  window: number | null): Float32Array {
  const bias = new Float32Array(queryPositions.length * keyPositions.length);
  queryPositions.forEach((i, r) => {
    keyPositions.forEach((j, c) => {
      if (!canAttend(i, j, window)) bias[r * keyPositions.length + c] = -Infinity;
    });
  });
  return bias;
}
