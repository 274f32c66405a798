/**
 * SentencePiece's BPE segmentation of one normalized string (bpe_model.cc, `Model::Encode`).
 *
 * Start from single characters (user-defined pieces are matched whole first and frozen),
 * then repeatedly merge the adjacent pair whose concatenation is the vocabulary piece
 * with the highest score; on equal scores the leftmost pair wins. Unlike GPT-2 style BPE
 * there is no merges list: the piece scores are the merge order.
 *
 *   "▁hello"  symbols ▁ h e l l o
 *             best pair by score: "ll"  → ▁ h e ll o
 *             then "▁h", "ll"+"o", …    → ▁hello      (one piece, if it is in the vocabulary)
 *
 * A heap holds candidate pairs; a pair popped after one of its symbols changed is stale
 * and skipped (lazy deletion, as SentencePiece does).
 */

export interface BpeVocab {
  /** Pieces that may appear in the output: NORMAL, USER_DEFINED and UNUSED ones. */
  readonly ids: ReadonlyMap<string, number>;
  readonly score: (id: number) => number;
  readonly isUnused: (id: number) => boolean;
  /** User-defined pieces by their first code point, longest first. */
  readonly userDefined: ReadonlyMap<string, readonly string[]>;
}

interface Pair {
  readonly left: number;
  readonly right: number;
  readonly score: number;
  /** Length of the merged piece in UTF-16 units: a stale pair no longer sums to it. */
  readonly length: number;
}

/** true when a should be popped before b: higher score, then smaller left index. */
function before(a: Pair, b: Pair): boolean {
  return a.score > b.score || (a.score === b.score && a.left < b.left);
}

/** A binary max-heap ordered by `before`. */
class PairHeap {
  private readonly items: Pair[] = [];

  get size(): number {
    return this.items.length;
  }

  push(p: Pair): void {
    const a = this.items;
    a.push(p);
    let i = a.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!before(a[i]!, a[parent]!)) break;
      [a[i], a[parent]] = [a[parent]!, a[i]!];
      i = parent;
    }
  }

  pop(): Pair {
    const a = this.items;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let best = i;
        if (l < a.length && before(a[l]!, a[best]!)) best = l;
        if (r < a.length && before(a[r]!, a[best]!)) best = r;
        if (best === i) break;
        [a[i], a[best]] = [a[best]!, a[i]!];
        i = best;
      }
    }
    return top;
  }
}

/**
 * Splits `normalized` into vocabulary pieces (strings; a piece missing from the
 * vocabulary comes back as is, for byte fallback).
 */
export function bpeSegment(normalized: string, vocab: BpeVocab): string[] {
  if (normalized === '') return [];
  // Symbols: a doubly linked list over [start, end) ranges of `normalized`.
  const start: number[] = [];
  const end: number[] = [];
  const frozen: boolean[] = [];
  for (let pos = 0; pos < normalized.length;) {
    const cp = normalized.codePointAt(pos)!;
    const ch = String.fromCodePoint(cp);
    const match = vocab.userDefined.get(ch)?.find((p) => normalized.startsWith(p, pos));
    const len = match?.length ?? ch.length;
    start.push(pos);
    end.push(pos + len);
    frozen.push(match !== undefined);
    pos += len;
  }
  const n = start.length;
  const prev = Array.from({ length: n }, (_, i) => i - 1);
  const next = Array.from({ length: n }, (_, i) => (i + 1 < n ? i + 1 : -1));
  const alive = new Array<boolean>(n).fill(true);
  const text = (i: number) => normalized.slice(start[i]!, end[i]!);

  // Pieces of type UNUSED are merged through, then split back at output time into the
  // two symbols they were made of (SentencePiece's `rev_merge`).
  const unusedParts = new Map<string, [string, string]>();
  const heap = new PairHeap();
  const consider = (left: number, right: number) => {
    if (left < 0 || right < 0 || frozen[left] || frozen[right]) return;
    const merged = normalized.slice(start[left]!, end[right]!);
    const id = vocab.ids.get(merged);
    if (id === undefined) return;
    heap.push({ left, right, score: vocab.score(id), length: merged.length });
    if (vocab.isUnused(id)) unusedParts.set(merged, [text(left), text(right)]);
  };
  for (let i = 1; i < n; i++) consider(i - 1, i);

  while (heap.size > 0) {
    const { left, right, length } = heap.pop();
    if (!alive[left] || !alive[right] || next[left] !== right || end[right]! - start[left]! !== length) continue; // stale
    end[left] = end[right]!;
    next[left] = next[right]!;
    if (next[right]! >= 0) prev[next[right]!] = left;
    alive[right] = false;
    consider(prev[left]!, left);
    consider(left, next[left]!);
  }

  const out: string[] = [];
  const emit = (piece: string) => {
    const id = vocab.ids.get(piece);
    const parts = id !== undefined && vocab.isUnused(id) ? unusedParts.get(piece) : undefined;
    if (parts === undefined) out.push(piece);
    else { emit(parts[0]); emit(parts[1]); }
  };
  for (let i = 0; i !== -1; i = next[i]!) emit(text(i));
  return out;
}
