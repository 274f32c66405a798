/**
 * Builds the project's wasm SIMD kernels (src/kernels/simd/) from WebAssembly text written
 * here, with the `wabt` npm package: nothing is downloaded, no native compiler is needed.
 * Run by `npm run build` / `prepare` / `pretest`; writes src/kernels/simd/kernels.generated.ts
 * (the module's bytes as base64, so tsc carries it into dist/ and it loads from either).
 *
 * Why hand-written wasm: tfjs has no bf16 dtype, and its wasm backend keeps a packed
 * float32 copy of every weight in one 4 GiB heap. These kernels read weights at their
 * stored width (bf16, f16 or f32) from memories the project owns, and widen inside.
 *
 * Layout conventions shared with src/kernels/simd/matmul.ts:
 * - A weight is row-major [rows, K] at its stored width (as in the checkpoint).
 * - For 2-byte weights, each block of 8 columns is read as one v128 and split into its
 *   even and odd elements without shuffles (bf16: `shl 16` gives the even ones as f32,
 *   `and 0xffff0000` the odd ones). So x is passed with each 8-block permuted to
 *   [x0 x2 x4 x6 x1 x3 x5 x7]; the K mod 8 tail stays in natural order.
 * - Products accumulate in float32, four lanes, summed across lanes at the end of a row.
 */
import { writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { buildGradients } from './build-gradients.js';

type DType = 'bf16' | 'f16' | 'f32';

/**
 * Whether the module being generated uses relaxed SIMD's fused multiply-add (one instruction
 * for c + a·b; fused or not is up to the hardware, within float32 rounding either way). Both
 * variants are built; src/kernels/simd/arena.ts picks the relaxed one where V8 accepts it.
 */
let RELAXED = false;
const madd = (a: string, b: string, c: string) =>
  (RELAXED ? `(f32x4.relaxed_madd ${a} ${b} ${c})` : `(f32x4.add ${c} (f32x4.mul ${a} ${b}))`);
const DTYPES: DType[] = ['bf16', 'f16', 'f32'];
const SIZE: Record<DType, number> = { bf16: 2, f16: 2, f32: 4 };

/** Code that leaves the 8 elements at address `p` as two f32x4 in locals `e` and `o`. */
function load8(d: DType, p: string, e: string, o: string, offset = 0): string {
  if (d === 'f32') {
    return `(local.set ${e} (v128.load offset=${offset} ${p})) (local.set ${o} (v128.load offset=${offset + 16} ${p}))`;
  }
  if (d === 'bf16') {
    return `(local.set $v (v128.load offset=${offset} ${p}))
      (local.set ${e} (i32x4.shl (local.get $v) (i32.const 16)))
      (local.set ${o} (v128.and (local.get $v) (v128.const i32x4 0xffff0000 0xffff0000 0xffff0000 0xffff0000)))`;
  }
  return `(local.set $v (v128.load offset=${offset} ${p}))
      (local.set ${e} (call $half4 (v128.and (local.get $v) (v128.const i32x4 0xffff 0xffff 0xffff 0xffff))))
      (local.set ${o} (call $half4 (i32x4.shr_u (local.get $v) (i32.const 16))))`;
}

/** One element at byte address `p`, as f32. */
function load1(d: DType, p: string): string {
  if (d === 'f32') return `(f32.load ${p})`;
  if (d === 'bf16') return `(f32.reinterpret_i32 (i32.shl (i32.load16_u ${p}) (i32.const 16)))`;
  return `(call $half1 (i32.load16_u ${p}))`;
}

const hsum = (v: string) => `(f32.add (f32.add (f32x4.extract_lane 0 ${v}) (f32x4.extract_lane 1 ${v}))
      (f32.add (f32x4.extract_lane 2 ${v}) (f32x4.extract_lane 3 ${v})))`;

/**
 * y[r] = Σ_k W[r, k] · x[k] for r < rows: four rows per pass so each x load serves four
 * rows (decode is bound by reading W once). `x` is the permuted vector described above;
 * rows r0 ≤ r < r1 only (a worker's share).
 *
 * Rows below `rq` (a multiple of 4; 0 for none) are stored as quads: each group of four
 * rows takes the bytes of four rows, as its rows' 8-element blocks side by side (block 0 of
 * rows 0, 1, 2, 3, then block 1 of each, …), then each row's K mod 8 tail in turn. A pass
 * then reads one stream instead of four a row apart: 7B's rows from memory, one thread
 * (Zen 5), 10.6–12.6 → 17.6–18.1 GB/s against a 21.5–23.2 read probe in a standalone
 * harness. Rows from rq on are row-major. r0 must be a multiple of 4 when r0 < rq.
 */
function gemv(d: DType): string {
  const s = SIZE[d];
  const rows = [0, 1, 2, 3];
  // One accumulator per row: with two, V8's register allocator spills in the inner loop.
  const accs = rows.map((r) => `$e${r}`);
  const ptrs = ['$p', '$p1', '$p2', '$p3'];
  const kloop = (touch: boolean) => `
      (block $kd (loop $kl
        (br_if $kd (i32.ge_u (local.get $xp) (local.get $xend8)))
        ${touch ? `${Array.from({ length: s / 2 }, (_, i) => `(local.set $touch (v128.or (local.get $touch) (v128.load offset=${64 * i} (local.get $ahead))))`).join(' ')}
        (local.set $ahead (i32.add (local.get $ahead) (i32.const ${32 * s})))` : ''}
        ${block8(0)}
        ${ptrs.map((q) => `(local.set ${q} (i32.add (local.get ${q}) (local.get $bs)))`).join(' ')}
        (local.set $xp (i32.add (local.get $xp) (i32.const 32)))
        (br $kl)))`;
  /** One 8-column block of the four rows, block `b` of the iteration (constant offsets). */
  const block8 = (b: number) => `(local.set $xe (v128.load offset=${32 * b} (local.get $xp)))
        (local.set $xo (v128.load offset=${32 * b + 16} (local.get $xp)))
        ${rows.map((r) => `${load8(d, `(local.get ${ptrs[r]})`, '$a', '$b', 8 * s * b)}
        (local.set $e${r} (f32x4.add (local.get $e${r}) ${madd('(local.get $b)', '(local.get $xo)', '(f32x4.mul (local.get $a) (local.get $xe))')}))`).join('\n        ')}`;
  return `
  (func $gemv_${d} (export "gemv_${d}") (param $w i32) (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32) (param $K i32) (param $rq i32) (result i32)
    (local $r i32) (local $k i32) (local $K8 i32) (local $rb i32) (local $p i32) (local $xp i32) (local $ahead i32) (local $step i32)
    (local $off i32) (local $bs i32) (local $ts i32)
    (local $p1 i32) (local $p2 i32) (local $p3 i32) (local $xend8 i32)
    (local $v v128) (local $a v128) (local $b v128) (local $xe v128) (local $xo v128) (local $touch v128)
    ${accs.map((a) => `(local ${a} v128)`).join(' ')} (local $o0 v128)
    (local $s0 f32) (local $s1 f32) (local $s2 f32) (local $s3 f32)
    (local.set $K8 (i32.and (local.get $K) (i32.const -8)))
    (local.set $rb (i32.mul (local.get $K) (i32.const ${s})))
    (local.set $xend8 (i32.add (local.get $x) (i32.shl (local.get $K8) (i32.const 2))))
    (local.set $r (local.get $r0))
    (block $done4 (loop $rows4
      (br_if $done4 (i32.gt_u (i32.add (local.get $r) (i32.const 4)) (local.get $r1)))
      ${accs.map((a) => `(local.set ${a} (v128.const i32x4 0 0 0 0))`).join(' ')}
      (local.set $p (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))))
      ;; Touch-ahead for rows shorter than a page: the hardware prefetcher stops at 4 KiB pages
      ;; and restarts its streams on each new one, which starves short rows (K = 512 bf16:
      ;; a new page every 4-row pass, 5 GB/s). A load per iteration, a cache line apart, walks
      ;; the next pass's bytes while this pass computes (12-15 GB/s). Long rows stream well
      ;; and lose half their speed to the extra misses, so they run without it; so does the
      ;; last pass, so nothing past the end is read.
      (local.set $ahead (select (i32.add (local.get $p) (i32.shl (local.get $rb) (i32.const 2))) (local.get $p)
        (i32.and (i32.lt_u (local.get $rb) (i32.const 4096))
          (i32.le_u (i32.add (local.get $r) (i32.const 8)) (local.get $r1)))))
      (local.set $step (select (i32.const ${32 * s}) (i32.const 0) (i32.ne (local.get $ahead) (local.get $p))))
      ;; A row group below rq is stored as quads (see the header): one stream, the four rows'
      ;; 8-blocks side by side, then their K mod 8 tails one after another; else row-major.
      (if (i32.le_u (i32.add (local.get $r) (i32.const 4)) (local.get $rq))
        (then (local.set $off (i32.const ${8 * s})) (local.set $bs (i32.const ${32 * s}))
          (local.set $ts (i32.mul (i32.sub (local.get $K) (local.get $K8)) (i32.const ${s}))))
        (else (local.set $off (local.get $rb)) (local.set $bs (i32.const ${8 * s})) (local.set $ts (local.get $rb))))
      (local.set $p1 (i32.add (local.get $p) (local.get $off)))
      (local.set $p2 (i32.add (local.get $p1) (local.get $off)))
      (local.set $p3 (i32.add (local.get $p2) (local.get $off)))
      (local.set $xp (local.get $x))
      ;; 8 columns an iteration: four row pointers and x, no index arithmetic. (Unrolled
      ;; further, V8 hoists all the loads and spills accumulators to the stack.) Two copies
      ;; of the loop, with and without the touch-ahead, so long rows pay nothing for it.
      (if (local.get $step) (then ${kloop(true)}) (else ${kloop(false)}))
      (local.set $k (local.get $K8))
      ${rows.map((r) => `(local.set $s${r} ${hsum(`(local.get $e${r})`)})`).join('\n      ')}
      ;; the K mod 8 tail, natural order; $p points at row 0's tail
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $k) (local.get $K)))
        ${rows.map((r) => `(local.set $s${r} (f32.add (local.get $s${r}) (f32.mul ${load1(d, `(i32.add (local.get $p) (i32.mul (local.get $ts) (i32.const ${r})))`)} (f32.load (local.get $xp)))))`).join('\n        ')}
        (local.set $p (i32.add (local.get $p) (i32.const ${s})))
        (local.set $xp (i32.add (local.get $xp) (i32.const 4)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $tl)))
      ${rows.map((r) => `(f32.store offset=${4 * r} (i32.add (local.get $y) (i32.shl (local.get $r) (i32.const 2))) (local.get $s${r}))`).join('\n      ')}
      (local.set $r (i32.add (local.get $r) (i32.const 4)))
      (br $rows4)))
    ;; leftover rows, one at a time
    (block $done1 (loop $rows1
      (br_if $done1 (i32.ge_u (local.get $r) (local.get $r1)))
      (local.set $e0 (v128.const i32x4 0 0 0 0)) (local.set $o0 (v128.const i32x4 0 0 0 0))
      (local.set $p (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))))
      (local.set $xp (local.get $x))
      (local.set $k (i32.const 0))
      (block $kd (loop $kl
        (br_if $kd (i32.ge_u (local.get $k) (local.get $K8)))
        ${load8(d, '(local.get $p)', '$a', '$b')}
        (local.set $e0 ${madd('(local.get $a)', '(v128.load (local.get $xp))', '(local.get $e0)')})
        (local.set $o0 ${madd('(local.get $b)', '(v128.load offset=16 (local.get $xp))', '(local.get $o0)')})
        (local.set $p (i32.add (local.get $p) (i32.const ${8 * s})))
        (local.set $xp (i32.add (local.get $xp) (i32.const 32)))
        (local.set $k (i32.add (local.get $k) (i32.const 8)))
        (br $kl)))
      (local.set $s0 ${hsum('(f32x4.add (local.get $e0) (local.get $o0))')})
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $k) (local.get $K)))
        (local.set $s0 (f32.add (local.get $s0) (f32.mul ${load1(d, '(local.get $p)')} (f32.load (local.get $xp)))))
        (local.set $p (i32.add (local.get $p) (i32.const ${s})))
        (local.set $xp (i32.add (local.get $xp) (i32.const 4)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $tl)))
      (f32.store (i32.add (local.get $y) (i32.shl (local.get $r) (i32.const 2))) (local.get $s0))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rows1)))
    ;; returned so the touch loads are not dead code
    (i32x4.extract_lane 0 (local.get $touch))
  )`;
}

/**
 * Widens columns [k0, k0 + c) of rows r … r + n − 1 of a [rows, K] weight at w (rows below
 * rq stored as quads, see gemv; the rest row-major) to float32 at `out`, row after row
 * (c floats each), in the order the permuted x expects (8-blocks split even/odd, natural
 * tail): then a float32 dot product of a widened row with the permuted x is the row's dot
 * product with x. The matrix-matrix product widens a panel of rows, one K chunk at a time.
 */
function widen(d: DType): string {
  if (d === 'f32') return '';
  const s = SIZE[d];
  return `
  (func $widen_${d} (param $w i32) (param $r i32) (param $k0 i32) (param $out i32) (param $n i32) (param $c i32) (param $K i32)
      (param $rq i32)
    (local $i i32) (local $k i32) (local $K8 i32) (local $c8 i32) (local $row i32) (local $base i32) (local $p i32) (local $bs i32)
    (local $tp i32) (local $q i32) (local $v v128) (local $a v128) (local $b v128)
    (local.set $K8 (i32.and (local.get $K) (i32.const -8)))
    ;; the chunk's columns in whole 8-blocks (chunks start on a block; only the last holds a tail)
    (local.set $c8 (i32.sub (select (local.get $K8) (i32.add (local.get $k0) (local.get $c))
      (i32.gt_u (i32.add (local.get $k0) (local.get $c)) (local.get $K8))) (local.get $k0)))
    (local.set $q (local.get $out))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $row (i32.add (local.get $r) (local.get $i)))
      ;; row's first element of the chunk ($p), block step ($bs) and tail ($tp, element K8)
      (if (i32.lt_u (local.get $row) (local.get $rq))
        (then
          (local.set $base (i32.add (local.get $w) (i32.mul (i32.and (local.get $row) (i32.const -4)) (i32.mul (local.get $K) (i32.const ${s})))))
          (local.set $p (i32.add (local.get $base) (i32.add (i32.mul (local.get $k0) (i32.const ${4 * s}))
            (i32.mul (i32.and (local.get $row) (i32.const 3)) (i32.const ${8 * s})))))
          (local.set $bs (i32.const ${32 * s}))
          (local.set $tp (i32.add (local.get $base) (i32.add (i32.mul (local.get $K8) (i32.const ${4 * s}))
            (i32.mul (i32.and (local.get $row) (i32.const 3)) (i32.mul (i32.sub (local.get $K) (local.get $K8)) (i32.const ${s})))))))
        (else
          (local.set $base (i32.add (local.get $w) (i32.mul (local.get $row) (i32.mul (local.get $K) (i32.const ${s})))))
          (local.set $p (i32.add (local.get $base) (i32.mul (local.get $k0) (i32.const ${s}))))
          (local.set $bs (i32.const ${8 * s}))
          (local.set $tp (i32.add (local.get $base) (i32.mul (local.get $K8) (i32.const ${s}))))))
      (local.set $k (i32.const 0))
      (block $kd (loop $kl
        (br_if $kd (i32.ge_u (local.get $k) (local.get $c8)))
        ${load8(d, '(local.get $p)', '$a', '$b')}
        (v128.store (local.get $q) (local.get $a))
        (v128.store offset=16 (local.get $q) (local.get $b))
        (local.set $p (i32.add (local.get $p) (local.get $bs)))
        (local.set $q (i32.add (local.get $q) (i32.const 32)))
        (local.set $k (i32.add (local.get $k) (i32.const 8)))
        (br $kl)))
      ;; the tail: columns k0 + c8 … k0 + c, all at or past K8
      (local.set $p (i32.add (local.get $tp) (i32.mul (i32.sub (i32.add (local.get $k0) (local.get $c8)) (local.get $K8)) (i32.const ${s}))))
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $k) (local.get $c)))
        (f32.store (local.get $q) ${load1(d, '(local.get $p)')})
        (local.set $p (i32.add (local.get $p) (i32.const ${s})))
        (local.set $q (i32.add (local.get $q) (i32.const 4)))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $tl)))
      (local.set $i (i32.add (local.get $i) (i32.const 1)))
      (br $rl)))
  )`;
}

/**
 * [hsum a, hsum b, hsum c, hsum d] into `into`, each lane summed as hsum sums it,
 * (l0 + l1) + (l2 + l3): pairs of lanes added in one vector, then the pairs' sums in another.
 */
const sums4 = (a: string, b: string, c: string, d: string, into: string) => `(local.set $p
            (f32x4.add (i8x16.shuffle 0 1 2 3 16 17 18 19 8 9 10 11 24 25 26 27 (local.get ${a}) (local.get ${b}))
              (i8x16.shuffle 4 5 6 7 20 21 22 23 12 13 14 15 28 29 30 31 (local.get ${a}) (local.get ${b}))))
          (local.set ${into}
            (f32x4.add (i8x16.shuffle 0 1 2 3 16 17 18 19 8 9 10 11 24 25 26 27 (local.get ${c}) (local.get ${d}))
              (i8x16.shuffle 4 5 6 7 20 21 22 23 12 13 14 15 28 29 30 31 (local.get ${c}) (local.get ${d}))))
          (local.set ${into}
            (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $p) (local.get ${into}))
              (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $p) (local.get ${into}))))`;

/**
 * The float32 core of the matrix-matrix product: a panel of `np` float32 rows (row i at
 * wf + i·wb bytes, K floats) against tokens [t0, t1) of x (token t's K floats at x + t·xs),
 * into y[t · ldy + r0 + i], added to what y holds when `acc` is set (a later K chunk).
 * Register tile: 4 rows × 2 tokens = 8 accumulators. For each pair of tokens the tile
 * runs over every row group of the panel, so the pair's x is fetched once per panel rather
 * than once per 4 rows (for short rows this measured the same as 4-row groups on one
 * thread; the panels and K chunks pay off for rows past 1024, see matmul.ts).
 */
const PANEL = () => `
  (func $panel (param $wf i32) (param $wb i32) (param $np i32) (param $r0 i32) (param $x i32) (param $xs i32)
      (param $t0 i32) (param $t1 i32) (param $K i32) (param $y i32) (param $ldy i32) (param $acc i32)
    (local $t i32) (local $g i32) (local $K4 i32) (local $i i32) (local $xe i32)
    (local $w0 i32) (local $x0 i32) (local $x1 i32) (local $yp i32) (local $ys i32)
    (local $a v128) (local $b v128) (local $c v128) (local $d v128) (local $p v128)
    (local $a0 v128) (local $a1 v128) (local $b0 v128) (local $b1 v128) (local $c0 v128) (local $c1 v128) (local $d0 v128) (local $d1 v128)
    (local $s f32) (local $u f32)
    (local.set $K4 (i32.and (local.get $K) (i32.const -4)))
    (local.set $ys (i32.shl (local.get $ldy) (i32.const 2)))
    (local.set $t (local.get $t0))
    (block $pd (loop $pl
      (br_if $pd (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $t1)))
      (local.set $g (i32.const 0))
      (block $gd (loop $gl
        (br_if $gd (i32.gt_u (i32.add (local.get $g) (i32.const 4)) (local.get $np)))
        (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
        (local.set $b0 (v128.const i32x4 0 0 0 0)) (local.set $b1 (v128.const i32x4 0 0 0 0))
        (local.set $c0 (v128.const i32x4 0 0 0 0)) (local.set $c1 (v128.const i32x4 0 0 0 0))
        (local.set $d0 (v128.const i32x4 0 0 0 0)) (local.set $d1 (v128.const i32x4 0 0 0 0))
        (local.set $w0 (i32.add (local.get $wf) (i32.mul (local.get $g) (local.get $wb))))
        (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $xs))))
        (local.set $x1 (i32.add (local.get $x0) (local.get $xs)))
        (local.set $xe (i32.add (local.get $x0) (i32.shl (local.get $K4) (i32.const 2))))
        (block $kd (loop $kl
          (br_if $kd (i32.ge_u (local.get $x0) (local.get $xe)))
          ;; the four weights first, then each token's x against them: 1.2-1.4× the order
          ;; that loads x first in a standalone harness (Zen 3, V8 12); within noise here
          (local.set $a (v128.load (local.get $w0)))
          (local.set $b (v128.load (i32.add (local.get $w0) (local.get $wb))))
          (local.set $c (v128.load (i32.add (local.get $w0) (i32.shl (local.get $wb) (i32.const 1)))))
          (local.set $d (v128.load (i32.add (local.get $w0) (i32.mul (local.get $wb) (i32.const 3)))))
          (local.set $p (v128.load (local.get $x0)))
          (local.set $a0 ${madd('(local.get $a)', '(local.get $p)', '(local.get $a0)')})
          (local.set $b0 ${madd('(local.get $b)', '(local.get $p)', '(local.get $b0)')})
          (local.set $c0 ${madd('(local.get $c)', '(local.get $p)', '(local.get $c0)')})
          (local.set $d0 ${madd('(local.get $d)', '(local.get $p)', '(local.get $d0)')})
          (local.set $p (v128.load (local.get $x1)))
          (local.set $a1 ${madd('(local.get $a)', '(local.get $p)', '(local.get $a1)')})
          (local.set $b1 ${madd('(local.get $b)', '(local.get $p)', '(local.get $b1)')})
          (local.set $c1 ${madd('(local.get $c)', '(local.get $p)', '(local.get $c1)')})
          (local.set $d1 ${madd('(local.get $d)', '(local.get $p)', '(local.get $d1)')})
          (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
          (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))
          (local.set $x1 (i32.add (local.get $x1) (i32.const 16)))
          (br $kl)))
        (local.set $yp (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ldy)) (i32.add (local.get $r0) (local.get $g))) (i32.const 2))))
        (if (i32.eq (local.get $K4) (local.get $K)) (then
          ;; no tail: each token's four sums as one vector, stored at once (its 4 rows are adjacent in y)
          ${sums4('$a0', '$b0', '$c0', '$d0', '$a')}
          ${sums4('$a1', '$b1', '$c1', '$d1', '$b')}
          (if (local.get $acc) (then
            (local.set $a (f32x4.add (v128.load (local.get $yp)) (local.get $a)))
            (local.set $b (f32x4.add (v128.load (i32.add (local.get $yp) (local.get $ys))) (local.get $b)))))
          (v128.store (local.get $yp) (local.get $a))
          (v128.store (i32.add (local.get $yp) (local.get $ys)) (local.get $b)))
        (else
        ;; sums, then the K mod 4 tail of each of the 8 dot products ($x0, $x1 point at the
        ;; tails of the two tokens, $w0 at row g's)
        ${[['$a0', '$a1', 0], ['$b0', '$b1', 1], ['$c0', '$c1', 2], ['$d0', '$d1', 3]].map(([u, v, r]) => `
        (local.set $s ${hsum(`(local.get ${u})`)})
        (local.set $u ${hsum(`(local.get ${v})`)})
        (local.set $i (i32.const 0))
        (block $td (loop $tl
          (br_if $td (i32.ge_u (i32.add (local.get $K4) (local.get $i)) (local.get $K)))
          (local.set $s (f32.add (local.get $s) (f32.mul
            (f32.load (i32.add (i32.add (local.get $w0) (i32.mul (local.get $wb) (i32.const ${r}))) (i32.shl (local.get $i) (i32.const 2))))
            (f32.load (i32.add (local.get $x0) (i32.shl (local.get $i) (i32.const 2)))))))
          (local.set $u (f32.add (local.get $u) (f32.mul
            (f32.load (i32.add (i32.add (local.get $w0) (i32.mul (local.get $wb) (i32.const ${r}))) (i32.shl (local.get $i) (i32.const 2))))
            (f32.load (i32.add (local.get $x1) (i32.shl (local.get $i) (i32.const 2)))))))
          (local.set $i (i32.add (local.get $i) (i32.const 1)))
          (br $tl)))
        (if (local.get $acc) (then
          (local.set $s (f32.add (f32.load offset=${4 * Number(r)} (local.get $yp)) (local.get $s)))
          (local.set $u (f32.add (f32.load offset=${4 * Number(r)} (i32.add (local.get $yp) (local.get $ys))) (local.get $u)))))
        (f32.store offset=${4 * Number(r)} (local.get $yp) (local.get $s))
        (f32.store offset=${4 * Number(r)} (i32.add (local.get $yp) (local.get $ys)) (local.get $u))`).join('')}))
        (local.set $g (i32.add (local.get $g) (i32.const 4)))
        (br $gl)))
      ;; the panel's last rows (fewer than 4), one dot product each for both tokens
      (block $od (loop $ol
        (br_if $od (i32.ge_u (local.get $g) (local.get $np)))
        (call $dotInto (i32.add (local.get $wf) (i32.mul (local.get $g) (local.get $wb))) (local.get $x) (local.get $xs) (local.get $t) (local.get $K)
          (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ldy)) (i32.add (local.get $r0) (local.get $g))) (i32.const 2))) (local.get $acc))
        (call $dotInto (i32.add (local.get $wf) (i32.mul (local.get $g) (local.get $wb))) (local.get $x) (local.get $xs) (i32.add (local.get $t) (i32.const 1)) (local.get $K)
          (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (i32.add (local.get $t) (i32.const 1)) (local.get $ldy)) (i32.add (local.get $r0) (local.get $g))) (i32.const 2))) (local.get $acc))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $ol)))
      (local.set $t (i32.add (local.get $t) (i32.const 2)))
      (br $pl)))
    ;; a last odd token: one dot product per row
    (if (i32.lt_u (local.get $t) (local.get $t1)) (then
      (local.set $g (i32.const 0))
      (block $rd (loop $rl
        (br_if $rd (i32.ge_u (local.get $g) (local.get $np)))
        (call $dotInto (i32.add (local.get $wf) (i32.mul (local.get $g) (local.get $wb))) (local.get $x) (local.get $xs) (local.get $t) (local.get $K)
          (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ldy)) (i32.add (local.get $r0) (local.get $g))) (i32.const 2))) (local.get $acc))
        (local.set $g (i32.add (local.get $g) (i32.const 1)))
        (br $rl)))))
  )
  ;; *yp = (acc ? *yp : 0) + (row · token t of x)
  (func $dotInto (param $row i32) (param $x i32) (param $xs i32) (param $t i32) (param $K i32) (param $yp i32) (param $acc i32)
    (local $s f32)
    (local.set $s (call $dot (local.get $row) (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $xs))) (local.get $K)))
    (if (local.get $acc) (then (local.set $s (f32.add (f32.load (local.get $yp)) (local.get $s)))))
    (f32.store (local.get $yp) (local.get $s))
  )
  (func $dot (param $a i32) (param $b i32) (param $K i32) (result f32)
    (local $k i32) (local $K4 i32) (local $acc v128) (local $s f32)
    (local.set $K4 (i32.and (local.get $K) (i32.const -4)))
    (block $kd (loop $kl
      (br_if $kd (i32.ge_u (local.get $k) (local.get $K4)))
      (local.set $acc ${madd('(v128.load (local.get $a))', '(v128.load (local.get $b))', '(local.get $acc)')})
      (local.set $a (i32.add (local.get $a) (i32.const 16)))
      (local.set $b (i32.add (local.get $b) (i32.const 16)))
      (local.set $k (i32.add (local.get $k) (i32.const 4)))
      (br $kl)))
    (local.set $s ${hsum('(local.get $acc)')})
    (block $td (loop $tl
      (br_if $td (i32.ge_u (local.get $k) (local.get $K)))
      (local.set $s (f32.add (local.get $s) (f32.mul (f32.load (local.get $a)) (f32.load (local.get $b)))))
      (local.set $a (i32.add (local.get $a) (i32.const 4)))
      (local.set $b (i32.add (local.get $b) (i32.const 4)))
      (local.set $k (i32.add (local.get $k) (i32.const 1)))
      (br $tl)))
    (local.get $s)
  )`;

/**
 * Y[t, r] = Σ_k W[r, k] · X[t, k] for rows [r0, r1) and tokens [0, T). K goes in chunks
 * of `kc` columns (a multiple of 8, so the permuted 8-blocks of x stay whole), tokens in
 * blocks of `tb`, rows in panels of `P`: so the block of x (tb · kc floats) stays in L2
 * beside the panel, which 2-byte weights are widened into (`scratch`, P · kc floats) once
 * per (chunk, token block). Later chunks add into Y. Rows below `rq` are quads (see gemv;
 * 2-byte weights only, the f32 kernel ignores it).
 */
function gemm(d: DType): string {
  const s = SIZE[d];
  const panel = d === 'f32'
    ? `(call $panel (i32.add (local.get $w) (i32.add (i32.mul (local.get $r) (local.get $rb)) (i32.shl (local.get $k0) (i32.const 2))))
            (local.get $rb) (local.get $np) (local.get $r) (i32.add (local.get $x) (i32.shl (local.get $k0) (i32.const 2))) (local.get $xs)
            (local.get $t0) (local.get $t1) (local.get $c) (local.get $y) (local.get $ldy) (local.get $k0))`
    : `(call $widen_${d} (local.get $w) (local.get $r) (local.get $k0) (local.get $scratch) (local.get $np) (local.get $c) (local.get $K) (local.get $rq))
          (call $panel (local.get $scratch) (i32.shl (local.get $c) (i32.const 2)) (local.get $np) (local.get $r)
            (i32.add (local.get $x) (i32.shl (local.get $k0) (i32.const 2))) (local.get $xs)
            (local.get $t0) (local.get $t1) (local.get $c) (local.get $y) (local.get $ldy) (local.get $k0))`;
  return `
  (func $gemm_${d} (export "gemm_${d}") (param $w i32) (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32)
      (param $K i32) (param $T i32) (param $ldy i32) (param $tb i32) (param $scratch i32) (param $kc i32) (param $P i32) (param $rq i32)
    (local $k0 i32) (local $c i32) (local $t0 i32) (local $t1 i32) (local $r i32) (local $np i32) (local $rb i32) (local $xs i32)
    (local.set $rb (i32.mul (local.get $K) (i32.const ${s})))
    (local.set $xs (i32.shl (local.get $K) (i32.const 2)))
    (block $kdone (loop $kloop
      (br_if $kdone (i32.ge_u (local.get $k0) (local.get $K)))
      (local.set $c (select (i32.sub (local.get $K) (local.get $k0)) (local.get $kc)
        (i32.gt_u (i32.add (local.get $k0) (local.get $kc)) (local.get $K))))
      (local.set $t0 (i32.const 0))
      (block $tdone (loop $tloop
        (br_if $tdone (i32.ge_u (local.get $t0) (local.get $T)))
        (local.set $t1 (select (local.get $T) (i32.add (local.get $t0) (local.get $tb))
          (i32.gt_u (i32.add (local.get $t0) (local.get $tb)) (local.get $T))))
        (local.set $r (local.get $r0))
        (block $rdone (loop $rloop
          (br_if $rdone (i32.ge_u (local.get $r) (local.get $r1)))
          (local.set $np (select (local.get $P) (i32.sub (local.get $r1) (local.get $r))
            (i32.ge_u (i32.sub (local.get $r1) (local.get $r)) (local.get $P))))
          ${panel}
          (local.set $r (i32.add (local.get $r) (local.get $np)))
          (br $rloop)))
        (local.set $t0 (local.get $t1))
        (br $tloop)))
      (local.set $k0 (i32.add (local.get $k0) (local.get $c)))
      (br $kloop)))
  )`;
}

/** f16 → f32 for four lanes holding half bits in their low 16 bits (exact, incl. subnormals, inf, NaN). */
const HALF = `
  (func $half4 (param $h v128) (result v128)
    (local $em v128) (local $f v128)
    (local.set $em (v128.and (local.get $h) (v128.const i32x4 0x7fff 0x7fff 0x7fff 0x7fff)))
    ;; exponent/mantissa moved into f32 position and rescaled by 2^112: exact for normal and subnormal halves
    (local.set $f (f32x4.mul (i32x4.shl (local.get $em) (i32.const 13)) (v128.const i32x4 0x77800000 0x77800000 0x77800000 0x77800000)))
    ;; inf / NaN: all-ones exponent, payload kept
    (local.set $f (v128.bitselect
      (v128.or (i32x4.shl (local.get $em) (i32.const 13)) (v128.const i32x4 0x7f800000 0x7f800000 0x7f800000 0x7f800000))
      (local.get $f)
      (i32x4.ge_u (local.get $em) (v128.const i32x4 0x7c00 0x7c00 0x7c00 0x7c00))))
    (v128.or (local.get $f) (i32x4.shl (v128.and (local.get $h) (v128.const i32x4 0x8000 0x8000 0x8000 0x8000)) (i32.const 16)))
  )
  (func $half1 (param $h i32) (result f32)
    (f32x4.extract_lane 0 (call $half4 (i32x4.splat (local.get $h))))
  )`;


/** Four float32 lanes of `c`, as a v128 constant. */
const f4 = (c: number) => {
  const t = c === -Infinity ? '-inf' : String(c);
  return `(v128.const f32x4 ${t} ${t} ${t} ${t})`;
};
/** ln 2 in two parts: the first has 9 significant bits, so n·LN2_HI is exact for |n| < 2^15. */
const LN2_HI = 0.693359375;
const LN2_LO = Math.LN2 - LN2_HI;

/** 1.5·2^23: x + MAGIC rounds x to an integer n (|n| < 2^22) held in the float's low mantissa bits. */
const MAGIC = 12582912;

/**
 * exp(x) for the four float32 lanes of `x` (an expression), x ≤ 0 (softmax terms after
 * subtracting the running max), into the v128 local `out`; uses the v128 locals $en, $er.
 * x = n·ln2 + r with |r| ≤ ln2/2 (n rounded by adding MAGIC, whose bits then give 2^n), e^r
 * by its Taylor series to r^7 (truncation < 1e-8 relative, under float32's rounding: ~1-2
 * ulp in all), times 2^n from exponent bits. x is clamped at −88 first: there n = −127 and
 * the 2^n bits are those of 0, so the result is 0 from about −87.7 down (e^−87.7 ≈ 1e-38
 * weighs nothing in a softmax), and −∞ (a masked key) gives 0 without an ∞·0. NaN stays
 * NaN (pmax keeps its first operand when the comparison fails).
 */
const exp4 = (x: string, out: string) => `(local.set $er (f32x4.pmax ${x} ${f4(-88)}))
      (local.set $en ${madd('(local.get $er)', f4(Math.LOG2E), f4(MAGIC))})
      (local.set ${out} (f32x4.sub (local.get $en) ${f4(MAGIC)}))
      (local.set $er (f32x4.sub (f32x4.sub (local.get $er) (f32x4.mul (local.get ${out}) ${f4(LN2_HI)})) (f32x4.mul (local.get ${out}) ${f4(LN2_LO)})))
      (local.set ${out} ${f4(1 / 5040)})
      ${[1 / 720, 1 / 120, 1 / 24, 1 / 6, 0.5, 1, 1].map((c) => `(local.set ${out} ${madd(`(local.get ${out})`, '(local.get $er)', f4(c))})`).join('\n      ')}
      ;; 2^n: n + 127 into the exponent field (the MAGIC bits above it shift out)
      (local.set ${out} (f32x4.mul (local.get ${out}) (i32x4.shl (i32x4.add (local.get $en) (v128.const i32x4 127 127 127 127)) (i32.const 23))))`;

/** exp4 as a function, for the once-a-block rescale factors; exp_f32, one lane of it, for the tests. */
const EXP = `
  (func $exp4 (param $x v128) (result v128) (local $en v128) (local $er v128)
    ${exp4('(local.get $x)', '$x')}
    (local.get $x)
  )
  ;; One lane of $exp4, for the tests.
  (func $exp_f32 (export "exp_f32") (param $x f32) (result f32)
    (f32x4.extract_lane 0 (call $exp4 (f32x4.splat (local.get $x))))
  )`;

/** A loop over one head's D floats, four at a time: `$d` walks the bytes [0, $Db); `L` names its labels. */
const overHead = (L: string, body: string) => `(local.set $d (i32.const 0))
        (block $${L}d (loop $${L}l
          (br_if $${L}d (i32.ge_u (local.get $d) (local.get $Db)))
          ${body}
          (local.set $d (i32.add (local.get $d) (i32.const 16)))
          (br $${L}l)))`;
const at = (row: string) => `(i32.add (local.get ${row}) (local.get $d))`;
/** z row ·= $cv, four lanes at a time. */
const scaleZ = (L: string) => overHead(L, `(v128.store ${at('$zrow')} (f32x4.mul (v128.load ${at('$zrow')}) (local.get $cv)))`);

const KEYS4 = [0, 1, 2, 3];

/**
 * Scores of query heads $h (and $h + 1 when hp = 2) against the block's keys, four keys at a
 * time: q·k for keys list[i … i+3] (accumulators $a0-3 for head $h, $b0-3 for head $h + 1;
 * with one head, $a over even 4-float chunks of D and $b over odd ones), summed across lanes
 * by a 4×4 transpose into one vector of four scores, divided by √D, stored at $pp (and
 * $pp1); each head's block max kept in $mx (and $my). The list's padding past n repeats its
 * first key, so padded lanes repeat a real score and leave the max as it is (they become
 * −∞ before the exps).
 *
 * TurboFan issues all of a basic block's loads at its start, so a block holds at most 8
 * accumulators and 6 loaded vectors (more spill): two chunks of D per iteration with a
 * test between them, which also ends a row of D mod 8 = 4.
 */
function blockScores(hp: 1 | 2): string {
  const L = `s${hp}`;
  const chunk = (off: number, acc: string) => hp === 2
    ? `(local.set $x0 (v128.load offset=${off} (local.get $qa)))
          (local.set $x1 (v128.load offset=${off} (local.get $qb)))
          ${KEYS4.map((i) => `(local.set $v0 (v128.load offset=${off} (local.get $r${i})))
          (local.set $a${i} ${madd('(local.get $v0)', '(local.get $x0)', `(local.get $a${i})`)})
          (local.set $b${i} ${madd('(local.get $v0)', '(local.get $x1)', `(local.get $b${i})`)})`).join('\n          ')}`
    : `(local.set $x0 (v128.load offset=${off} (local.get $qa)))
          ${KEYS4.map((i) => `(local.set ${acc}${i} ${madd(`(v128.load offset=${off} (local.get $r${i}))`, '(local.get $x0)', `(local.get ${acc}${i})`)})`).join('\n          ')}`;
  /** [a0₀+a0₂, a1₀+a1₂, a0₁+a0₃, a1₁+a1₃] and the same for a2, a3; then their halves added: [Σa0, Σa1, Σa2, Σa3]. */
  const transpose = (a: string, into: string) => `(local.set $x0 (f32x4.add (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get ${a}0) (local.get ${a}1))
          (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get ${a}0) (local.get ${a}1))))
        (local.set $x1 (f32x4.add (i8x16.shuffle 0 1 2 3 16 17 18 19 4 5 6 7 20 21 22 23 (local.get ${a}2) (local.get ${a}3))
          (i8x16.shuffle 8 9 10 11 24 25 26 27 12 13 14 15 28 29 30 31 (local.get ${a}2) (local.get ${a}3))))
        (local.set ${into} (f32x4.add (i8x16.shuffle 0 1 2 3 4 5 6 7 16 17 18 19 20 21 22 23 (local.get $x0) (local.get $x1))
          (i8x16.shuffle 8 9 10 11 12 13 14 15 24 25 26 27 28 29 30 31 (local.get $x0) (local.get $x1))))`;
  /** Divided by √D, as the reference divides (a multiplication when 1/√D is exact: the same result, without the divider's latency). */
  const finish = (s: string, pp: string, mx: string) => `(local.set ${s} (if (result v128) (local.get $exact)
          (then (f32x4.mul (local.get ${s}) (local.get $isq))) (else (f32x4.div (local.get ${s}) (local.get $sq)))))
        (v128.store (local.get ${pp}) (local.get ${s}))
        (local.set ${mx} (f32x4.pmax (local.get ${mx}) (local.get ${s})))`;
  return `(local.set $lp (local.get $list))
      (block $kd${L} (loop $kl${L}
        (br_if $kd${L} (i32.ge_u (local.get $lp) (local.get $lend4)))
        ${KEYS4.map((i) => `(local.set $r${i} (i32.add (local.get $kh) (i32.load offset=${4 * i} (local.get $lp))))`).join(' ')}
        ${KEYS4.map((i) => `(local.set $a${i} (v128.const i32x4 0 0 0 0)) (local.set $b${i} (v128.const i32x4 0 0 0 0))`).join(' ')}
        (local.set $qa (local.get $qrow))
        ${hp === 2 ? '(local.set $qb (local.get $qrow1))' : ''}
        (local.set $rend (i32.add (local.get $r0) (local.get $Db)))
        (block $dd${L} (loop $dl${L}
          (br_if $dd${L} (i32.ge_u (local.get $r0) (local.get $rend)))
          ${chunk(0, '$a')}
          (br_if $dd${L} (i32.ge_u (i32.add (local.get $r0) (i32.const 16)) (local.get $rend)))
          ${chunk(16, '$b')}
          ${[...KEYS4.map((i) => `$r${i}`), '$qa', ...(hp === 2 ? ['$qb'] : [])].map((r) => `(local.set ${r} (i32.add (local.get ${r}) (i32.const 32)))`).join(' ')}
          (br $dl${L})))
        ${hp === 2
    ? `${transpose('$a', '$s')}
        ${transpose('$b', '$s1')}
        ${finish('$s', '$pp', '$mx')}
        ${finish('$s1', '$pp1', '$my')}
        (local.set $pp1 (i32.add (local.get $pp1) (i32.const 16)))`
    : `${KEYS4.map((i) => `(local.set $a${i} (f32x4.add (local.get $a${i}) (local.get $b${i})))`).join(' ')}
        ${transpose('$a', '$s')}
        ${finish('$s', '$pp', '$mx')}`}
        (local.set $pp (i32.add (local.get $pp) (i32.const 16)))
        (local.set $lp (i32.add (local.get $lp) (i32.const 16)))
        (br $kl${L})))`;
}

/** The largest lane of `v` (pmax: no NaN branches), stored as the block max in head state `hs` (the slot of its rescale factor). */
const storeMax = (v: string, hs: string) => `(local.set $x0 (f32x4.pmax (local.get ${v}) (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get ${v}) (local.get ${v}))))
          (f32.store offset=4 ${hs} (f32x4.extract_lane 0
            (f32x4.pmax (local.get $x0) (i8x16.shuffle 4 5 6 7 0 1 2 3 12 13 14 15 8 9 10 11 (local.get $x0) (local.get $x0)))))`;

/**
 * z rows of heads [$h, $h + hp) += the block's p·v, `dc` chunks of 4 floats of each row per
 * pass over the keys: hp·dc accumulators stay in registers across the block's keys, each v
 * load serves hp heads, each p (a splat) dc chunks. Then z = z·c + acc, c being the head's
 * rescale factor for the block. Advances $d over the chunks it covers, while `dc` fit. One
 * key per loop test, so a basic block's loads (dc + hp) and accumulators fit in registers.
 * `touchable`: a second copy of the key loop that also touches rows ahead, run when $touch.
 */
function blockMix(hp: number, dc: number, touchable: boolean): string {
  const heads = Array.from({ length: hp }, (_, i) => i);
  const chunks = Array.from({ length: dc }, (_, i) => i);
  const acc = (h: number, c: number) => `$c${h * dc + c}`;
  const L = `${hp}_${dc}`;
  const splat = (h: number) => `(v128.load32_splat (i32.add (local.get $p${h}) (local.get $i)))`;
  // One head: each v chunk is used once, loaded where it is used (no temporaries).
  const key = hp === 1
    ? `(local.set $x0 ${splat(0)})
          ${chunks.map((c) => `(local.set ${acc(0, c)} ${madd(`(v128.load offset=${16 * c} (local.get $r0))`, '(local.get $x0)', `(local.get ${acc(0, c)})`)})`).join(' ')}`
    : `${chunks.map((c) => `(local.set $v${c} (v128.load offset=${16 * c} (local.get $r0)))`).join(' ')}
          ${heads.map((h) => `(local.set $x0 ${splat(h)})
          ${chunks.map((c) => `(local.set ${acc(h, c)} ${madd(`(local.get $v${c})`, '(local.get $x0)', `(local.get ${acc(h, c)})`)})`).join(' ')}`).join('\n          ')}`;
  // With touch, a load a key from the next block's key and value rows (see ATTEND).
  const keys = (touch: boolean) => `(block $kd${L}${touch} (loop $kl${L}${touch}
          (br_if $kd${L}${touch} (i32.ge_u (local.get $i) (local.get $nb)))
          (local.set $r0 (i32.add (local.get $base) (i32.load (i32.add (local.get $list) (local.get $i)))))
          ${key}
          ${touch ? `(local.set $tv (v128.or (local.get $tv) (v128.or (v128.load (local.get $tk)) (v128.load (i32.add (local.get $tk) (local.get $vk))))))
          (local.set $tk (select (i32.add (local.get $tk) (i32.const 64)) (local.get $tk) (i32.lt_u (i32.add (local.get $tk) (i32.const 64)) (local.get $tend))))` : ''}
          (local.set $i (i32.add (local.get $i) (i32.const 4)))
          (br $kl${L}${touch})))`;
  return `(block $md${L} (loop $ml${L}
        (br_if $md${L} (i32.gt_u (i32.add (local.get $d) (i32.const ${16 * dc})) (local.get $Db)))
        ${heads.flatMap((h) => chunks.map((c) => `(local.set ${acc(h, c)} (v128.const i32x4 0 0 0 0))`)).join(' ')}
        (local.set $i (i32.const 0))
        (local.set $base (i32.add (local.get $vh) (local.get $d)))
        ${touchable ? `(if (local.get $touch) (then ${keys(true)}) (else ${keys(false)}))` : keys(false)}
        ${heads.map((h) => `(local.set $x0 (v128.load32_splat offset=${16 * h + 4} (local.get $hs)))
        (local.set $r0 (i32.add (i32.add (local.get $zrow) (i32.mul (local.get $Db) (i32.const ${h}))) (local.get $d)))
        ${chunks.map((c) => `(v128.store offset=${16 * c} (local.get $r0) ${madd(`(v128.load offset=${16 * c} (local.get $r0))`, '(local.get $x0)', `(local.get ${acc(h, c)})`)})`).join(' ')}`).join('\n        ')}
        (local.set $d (i32.add (local.get $d) (i32.const ${16 * dc})))
        (br $ml${L})))`;
}

/** blockMix for heads [$h, $h + hp): 8 accumulators a pass over the keys, then one chunk at a time for the rest of D. */
const mixHeads = (hp: number) => `(local.set $zrow (i32.add (local.get $z0) (i32.mul (local.get $h) (local.get $Db))))
      (local.set $hs (i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4))))
      ${Array.from({ length: hp }, (_, i) => `(local.set $p${i} (i32.add (local.get $ps) (i32.mul (i32.add (local.get $h) (i32.const ${i})) (local.get $PB))))`).join('\n      ')}
      (local.set $d (i32.const 0))
      ${blockMix(hp, 8 / hp, true)}
      ${blockMix(hp, 1, false)}
      (local.set $h (i32.add (local.get $h) (i32.const ${hp})))`;

/**
 * Causal sliding-window attention with grouped-query heads, in one pass over the keys per
 * query (online softmax: a running max and sum, the output rescaled when the max grows),
 * so no [tokens, keys] score matrix exists.
 *
 * q, z: [T, H, D] f32; k, v: [KV, C, D] f32, of which the first S rows of each kv head are
 * read (C = S for keys of their own; C > S for a cache's rows in place, C its capacity);
 * qpos [T] and kpos [S] i32 absolute positions (kpos < 0: an empty slot). Query t, head h sees key j of kv head h / (H / KV) iff
 * 0 ≤ kpos[j] ≤ qpos[t] and (window = 0 or kpos[j] > qpos[t] − window). D must be a
 * multiple of 4.
 *
 * Work comes in units: a query token and a kv head, i.e. the G = H / KV query heads that
 * share the kv head, so a row is loaded for several of them at once: a key row once per two
 * heads (scores), a value row once per four (z). Units [u0, u1) only (a thread's share): unit
 * u is kv head u mod KV of the token at place ⌊u / KV⌋ in the order 0, T−1, 1, T−2, …
 * (under a causal mask a run of consecutive units then costs about as much as any other of
 * its length). A unit is computed the same way whichever thread computes it, so results do
 * not depend on the thread count.
 *
 * A unit goes over the keys it sees in blocks of B (a multiple of 4): their row offsets
 * gathered into a list, each head's scores for the block, the block max, the running max
 * and sum updated once per block, float32 exps four at a time, then z = z·c + p·v with the
 * new terms summed in registers across the block's keys. The running sum is float64. Past
 * 8 MiB of keys and values, z's loop also loads a line a key from the next B slots' rows,
 * so they arrive from memory while this block computes (wasm has no prefetch).
 *
 * `scratch`, this thread's own, 4·(B + 4) + 4·B·G + 16·G bytes, 16-aligned: the list of B
 * row offsets (+ padding to a multiple of 4), each head's scores, then weights, for the
 * block [G, B], and per head its running max (f32), rescale factor (f32; the block max
 * until it is computed) and running sum (f64).
 */
const ATTEND = () => `
  (func $attend (export "attend") (param $q i32) (param $k i32) (param $v i32) (param $z i32) (param $qpos i32) (param $kpos i32)
      (param $T i32) (param $S i32) (param $H i32) (param $KV i32) (param $D i32) (param $window i32) (param $sqrtD f32)
      (param $B i32) (param $C i32) (param $u0 i32) (param $u1 i32) (param $scratch i32)
    (local $G i32) (local $Db i32) (local $PB i32) (local $u i32) (local $ti i32) (local $t i32) (local $g i32) (local $qp i32) (local $lo i32)
    (local $kh i32) (local $vh i32) (local $q0 i32) (local $z0 i32) (local $list i32) (local $ps i32) (local $st i32)
    (local $j i32) (local $jr i32) (local $n i32) (local $nb i32) (local $kp i32) (local $vis i32) (local $lend4 i32) (local $i i32)
    (local $h i32) (local $d i32) (local $lp i32) (local $pp i32) (local $pp1 i32) (local $pend i32)
    (local $qrow i32) (local $qrow1 i32) (local $qa i32) (local $qb i32) (local $rend i32) (local $zrow i32) (local $hs i32) (local $base i32)
    (local $r0 i32) (local $r1 i32) (local $r2 i32) (local $r3 i32) (local $p0 i32) (local $p1 i32) (local $p2 i32) (local $p3 i32)
    (local $m f32) (local $mn f32) (local $c f32) (local $tk i32) (local $tend i32) (local $vk i32) (local $tv v128) (local $touch i32) (local $exact i32) (local $isq v128)
    (local $sq v128) (local $lo4 v128) (local $hi4 v128) (local $s v128) (local $s1 v128)
    (local $mx v128) (local $my v128) (local $sum v128) (local $x0 v128) (local $x1 v128) (local $en v128) (local $er v128) (local $cv v128)
    (local $a0 v128) (local $a1 v128) (local $a2 v128) (local $a3 v128) (local $b0 v128) (local $b1 v128) (local $b2 v128) (local $b3 v128)
    ${Array.from({ length: 8 }, (_, i) => `(local $c${i} v128)`).join(' ')} ${Array.from({ length: 4 }, (_, i) => `(local $v${i} v128)`).join(' ')}
    (local.set $G (i32.div_u (local.get $H) (local.get $KV)))
    (local.set $Db (i32.shl (local.get $D) (i32.const 2)))
    (local.set $PB (i32.shl (local.get $B) (i32.const 2)))
    (local.set $list (local.get $scratch))
    (local.set $ps (i32.add (local.get $list) (i32.add (local.get $PB) (i32.const 16))))
    (local.set $st (i32.add (local.get $ps) (i32.mul (local.get $PB) (local.get $G))))
    (local.set $sq (f32x4.splat (local.get $sqrtD)))
    (local.set $vk (i32.sub (local.get $v) (local.get $k)))
    ;; Keys and values past 8 MiB (long decodes of wide models) likely come from memory, where
    ;; the prefetchers fall behind a block's 4-row and strided reads: touch the next block's rows
    ;; ahead (7B, 4096 keys: 1.5× faster). Below, they are in cache and touching only costs.
    (local.set $touch (i32.gt_u (i32.mul (i32.mul (local.get $KV) (local.get $S)) (local.get $Db)) (i32.const 0x400000)))
    ;; √D a power of two (D = 4, 16, 64, 256, …): its reciprocal is exact
    (local.set $exact (i32.eqz (i32.and (i32.reinterpret_f32 (local.get $sqrtD)) (i32.const 0x7fffff))))
    (local.set $isq (f32x4.splat (f32.div (f32.const 1) (local.get $sqrtD))))
    (local.set $u (local.get $u0))
    (block $ud (loop $ul
      (br_if $ud (i32.ge_u (local.get $u) (local.get $u1)))
      (local.set $ti (i32.div_u (local.get $u) (local.get $KV)))
      (local.set $g (i32.sub (local.get $u) (i32.mul (local.get $ti) (local.get $KV))))
      (local.set $t (select (i32.sub (i32.sub (local.get $T) (i32.const 1)) (i32.shr_u (local.get $ti) (i32.const 1)))
        (i32.shr_u (local.get $ti) (i32.const 1)) (i32.and (local.get $ti) (i32.const 1))))
      (local.set $qp (i32.load (i32.add (local.get $qpos) (i32.shl (local.get $t) (i32.const 2)))))
      ;; keys seen: lo ≤ kpos ≤ qp with lo = max(0, qp − W + 1), or 0 without a window (empty slots are < 0)
      (local.set $lo (i32.add (i32.sub (local.get $qp) (local.get $window)) (i32.const 1)))
      (local.set $lo (select (local.get $lo) (i32.const 0) (i32.and (i32.ne (local.get $window) (i32.const 0)) (i32.gt_s (local.get $lo) (i32.const 0)))))
      (local.set $lo4 (i32x4.splat (local.get $lo)))
      (local.set $hi4 (i32x4.splat (local.get $qp)))
      ;; kv head g's rows start C rows apart (C ≥ S: a cache's capacity, its first S rows in use)
      (local.set $kh (i32.add (local.get $k) (i32.mul (i32.mul (local.get $g) (local.get $C)) (local.get $Db))))
      (local.set $vh (i32.add (local.get $v) (i32.sub (local.get $kh) (local.get $k))))
      (local.set $q0 (i32.add (local.get $q) (i32.mul (i32.add (i32.mul (local.get $t) (local.get $H)) (i32.mul (local.get $g) (local.get $G))) (local.get $Db))))
      (local.set $z0 (i32.add (local.get $z) (i32.sub (local.get $q0) (local.get $q))))
      ;; the group's z rows = 0; each head's running max −∞ and sum 0
      (local.set $h (i32.const 0))
      (block $id (loop $il
        (br_if $id (i32.ge_u (local.get $h) (local.get $G)))
        (local.set $zrow (i32.add (local.get $z0) (i32.mul (local.get $h) (local.get $Db))))
        ${overHead('z', `(v128.store ${at('$zrow')} (v128.const i32x4 0 0 0 0))`)}
        (local.set $hs (i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4))))
        (f32.store (local.get $hs) (f32.const -inf))
        (f64.store offset=8 (local.get $hs) (f64.const 0))
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $il)))
      (local.set $j (i32.const 0))
      (local.set $jr (i32.const 0))
      (block $bd (loop $bl
        ;; the next B keys the query sees: their rows' byte offsets into the list (an offset is
        ;; always written, and kept if the key is seen); four slots at a time, four unseen skipped at once
        (local.set $n (i32.const 0))
        (block $gd (loop $gl
          (br_if $gd (i32.or (i32.gt_u (i32.add (local.get $n) (i32.const 4)) (local.get $B))
            (i32.gt_u (i32.add (local.get $j) (i32.const 4)) (local.get $S))))
          (local.set $x0 (v128.load (i32.add (local.get $kpos) (i32.shl (local.get $j) (i32.const 2)))))
          (local.set $vis (i32x4.bitmask (v128.and (i32x4.ge_s (local.get $x0) (local.get $lo4)) (i32x4.le_s (local.get $x0) (local.get $hi4)))))
          (if (local.get $vis) (then
            ${KEYS4.map((i) => `(i32.store (i32.add (local.get $list) (i32.shl (local.get $n) (i32.const 2))) (i32.add (local.get $jr) (i32.mul (local.get $Db) (i32.const ${i}))))
            (local.set $n (i32.add (local.get $n) (i32.and (i32.shr_u (local.get $vis) (i32.const ${i})) (i32.const 1))))`).join('\n            ')}))
          (local.set $j (i32.add (local.get $j) (i32.const 4)))
          (local.set $jr (i32.add (local.get $jr) (i32.shl (local.get $Db) (i32.const 2))))
          (br $gl)))
        (block $g1d (loop $g1l
          (br_if $g1d (i32.or (i32.ge_u (local.get $n) (local.get $B)) (i32.ge_u (local.get $j) (local.get $S))))
          (local.set $kp (i32.load (i32.add (local.get $kpos) (i32.shl (local.get $j) (i32.const 2)))))
          (i32.store (i32.add (local.get $list) (i32.shl (local.get $n) (i32.const 2))) (local.get $jr))
          (local.set $n (i32.add (local.get $n) (i32.and (i32.ge_s (local.get $kp) (local.get $lo)) (i32.le_s (local.get $kp) (local.get $qp)))))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (local.set $jr (i32.add (local.get $jr) (local.get $Db)))
          (br $g1l)))
        (br_if $bd (i32.eqz (local.get $n)))
        ;; padded to a multiple of 4 with the first key's row (its score again, its weight masked to 0)
        (local.set $nb (i32.shl (local.get $n) (i32.const 2)))
        (local.set $lend4 (i32.add (local.get $list) (i32.and (i32.add (local.get $nb) (i32.const 12)) (i32.const -16))))
        (local.set $kp (i32.load (local.get $list)))
        (local.set $lp (i32.add (local.get $list) (local.get $nb)))
        (i32.store (local.get $lp) (local.get $kp))
        (i32.store offset=4 (local.get $lp) (local.get $kp))
        (i32.store offset=8 (local.get $lp) (local.get $kp))
        ;; touch-ahead: the next B slots' key and value rows, a line per key of z's loop
        (local.set $tk (i32.add (local.get $kh) (local.get $jr)))
        (local.set $tend (i32.add (local.get $kh) (select (i32.mul (local.get $S) (local.get $Db)) (i32.add (local.get $jr) (i32.mul (local.get $B) (local.get $Db)))
          (i32.gt_u (i32.add (local.get $jr) (i32.mul (local.get $B) (local.get $Db))) (i32.mul (local.get $S) (local.get $Db))))))
        (if (i32.ge_u (local.get $tk) (local.get $tend)) (then (local.set $tk (local.get $kh)) (local.set $tend (i32.add (local.get $kh) (i32.const 64)))))

        ;; scores of each head, two heads at a time (each key row loaded once for both), and their block max
        (local.set $h (i32.const 0))
        (block $hd (loop $hl
          (br_if $hd (i32.gt_u (i32.add (local.get $h) (i32.const 2)) (local.get $G)))
          (local.set $qrow (i32.add (local.get $q0) (i32.mul (local.get $h) (local.get $Db))))
          (local.set $qrow1 (i32.add (local.get $qrow) (local.get $Db)))
          (local.set $pp (i32.add (local.get $ps) (i32.mul (local.get $h) (local.get $PB))))
          (local.set $pp1 (i32.add (local.get $pp) (local.get $PB)))
          (local.set $mx ${f4(-Infinity)})
          (local.set $my ${f4(-Infinity)})
          ${blockScores(2)}
          (local.set $hs (i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4))))
          ${storeMax('$mx', '(local.get $hs)')}
          ${storeMax('$my', '(i32.add (local.get $hs) (i32.const 16))')}
          (local.set $h (i32.add (local.get $h) (i32.const 2)))
          (br $hl)))
        (if (i32.lt_u (local.get $h) (local.get $G)) (then
          (local.set $qrow (i32.add (local.get $q0) (i32.mul (local.get $h) (local.get $Db))))
          (local.set $pp (i32.add (local.get $ps) (i32.mul (local.get $h) (local.get $PB))))
          (local.set $mx ${f4(-Infinity)})
          ${blockScores(1)}
          ${storeMax('$mx', '(i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4)))')}))

        ;; each head: new running max, rescale factor, weights p = e^(s − max) and their sum
        (local.set $h (i32.const 0))
        (block $ed (loop $el
          (br_if $ed (i32.ge_u (local.get $h) (local.get $G)))
          ;; the padding's scores (its max counted already) become −∞: weight 0, out of the sum
          (local.set $pp (i32.add (local.get $ps) (i32.mul (local.get $h) (local.get $PB))))
          (local.set $i (local.get $nb))
          (block $xd (loop $xl
            (br_if $xd (i32.ge_u (i32.add (local.get $list) (local.get $i)) (local.get $lend4)))
            (f32.store (i32.add (local.get $pp) (local.get $i)) (f32.const -inf))
            (local.set $i (i32.add (local.get $i) (i32.const 4)))
            (br $xl)))
          (local.set $hs (i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4))))
          (local.set $m (f32.load (local.get $hs)))
          (local.set $mn (f32x4.extract_lane 0 (f32x4.pmax (f32x4.splat (local.get $m)) (v128.load32_splat offset=4 (local.get $hs)))))
          ;; e^(old max − new max): 1 when the max holds (no call), 0 on the first block (old max −∞)
          (local.set $c (f32.const 1))
          (if (f32.gt (local.get $mn) (local.get $m)) (then
            (local.set $c (f32x4.extract_lane 0 (call $exp4 (f32x4.splat (f32.sub (local.get $m) (local.get $mn))))))))
          (f32.store (local.get $hs) (local.get $mn))
          (f32.store offset=4 (local.get $hs) (local.get $c))
          (local.set $x1 (f32x4.splat (local.get $mn)))
          (local.set $sum (v128.const i32x4 0 0 0 0))
          (local.set $pp (i32.add (local.get $ps) (i32.mul (local.get $h) (local.get $PB))))
          (local.set $pend (i32.add (local.get $pp) (i32.sub (local.get $lend4) (local.get $list))))
          (block $pd (loop $pl
            (br_if $pd (i32.ge_u (local.get $pp) (local.get $pend)))
            ${exp4('(f32x4.sub (v128.load (local.get $pp)) (local.get $x1))', '$s')}
            (v128.store (local.get $pp) (local.get $s))
            (local.set $sum (f32x4.add (local.get $sum) (local.get $s)))
            (local.set $pp (i32.add (local.get $pp) (i32.const 16)))
            (br $pl)))
          (f64.store offset=8 (local.get $hs) (f64.add (f64.mul (f64.load offset=8 (local.get $hs)) (f64.promote_f32 (local.get $c)))
            (f64.promote_f32 ${hsum('(local.get $sum)')})))
          (local.set $h (i32.add (local.get $h) (i32.const 1)))
          (br $el)))

        ;; z = z·c + p·v: four heads at a time, then two, then one
        (local.set $h (i32.const 0))
        (block $m4d (loop $m4l
          (br_if $m4d (i32.lt_u (i32.sub (local.get $G) (local.get $h)) (i32.const 4)))
          ${mixHeads(4)}
          (br $m4l)))
        (if (i32.ge_u (i32.sub (local.get $G) (local.get $h)) (i32.const 2)) (then ${mixHeads(2)}))
        (if (i32.ge_u (i32.sub (local.get $G) (local.get $h)) (i32.const 1)) (then ${mixHeads(1)}))
        (br $bl)))

      ;; z = z / sum
      (local.set $h (i32.const 0))
      (block $nd (loop $nl
        (br_if $nd (i32.ge_u (local.get $h) (local.get $G)))
        (local.set $zrow (i32.add (local.get $z0) (i32.mul (local.get $h) (local.get $Db))))
        (local.set $cv (f32x4.splat (f32.demote_f64 (f64.div (f64.const 1)
          (f64.load offset=8 (i32.add (local.get $st) (i32.shl (local.get $h) (i32.const 4))))))))
        ${scaleZ('n')}
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $nl)))
      (local.set $u (i32.add (local.get $u) (i32.const 1)))
      (br $ul)))
    (v128.store (local.get $scratch) (local.get $tv))
  )`;

/**
 * e^x over the whole float32 range, four lanes: exp4 (above) on x clamped at 88.3, where
 * 2^n is still a normal float, and +Inf above 88.72, where float32 e^x overflows, as Math.exp
 * rounded to float32 gives (between the two it returns e^88.3: SwiGLU's σ of such a gate is
 * ~4e-39 either way). For e^−g in SwiGLU's σ(g), whose g has either sign. An expression,
 * written where it is used (as a function called for every four lanes it took half of
 * SwiGLU's time: 2.6 → 1.2 ms for 512 × 1536 gates, one thread); it
 * uses the v128 locals $ex, $ey, $en, $er.
 */
const expAll = (x: string) => `(block (result v128)
          (local.set $ex ${x})
          ${exp4(`(f32x4.min (local.get $ex) ${f4(88.3)})`, '$ey')}
          (v128.bitselect ${f4(Infinity).replace(/Infinity/g, 'inf')} (local.get $ey) (f32x4.gt (local.get $ex) ${f4(88.72284)})))`;

/**
 * Σ e^(x_i − m) over `n` float32 values at `p`, in float64, two lanes at a time: the
 * normaliser of a log-softmax over a vocabulary (m its max). d = x − m is clamped at −708,
 * where e^d (3e-308) is still a normal double and adds nothing to a sum ≥ 1; d = n·ln2 + r
 * (ln2 in two parts, the first with 32 zero low bits so n·hi is exact), e^r by its Taylor
 * series to r^12 (truncation < 2e-16 relative), 2^n from exponent bits (n + 1.5·2^52 holds
 * n in its low mantissa bits). Within a few ulp of Math.exp per term.
 */
const SUMEXP = () => {
  const d2 = (c: number) => `(v128.const f64x2 ${c} ${c})`;
  const magic = 6755399441055744; // 1.5 · 2^52
  const factorial = (k: number): number => (k <= 1 ? 1 : k * factorial(k - 1));
  const coeffs = Array.from({ length: 13 }, (_, i) => 1 / factorial(12 - i)); // 1/12!, …, 1/1!, 1/0!: Horner's order
  /** e^(x − m) of two lanes into $e<s>; locals suffixed `s`, so two chains can interleave. */
  const exp2 = (x: string, s: string) => `(local.set $d${s} (f64x2.pmax (f64x2.sub ${x} (local.get $mv)) ${d2(-708)}))
        (local.set $k${s} (f64x2.add (f64x2.mul (local.get $d${s}) ${d2(Math.LOG2E)}) ${d2(magic)}))
        (local.set $r${s} (f64x2.sub (local.get $k${s}) ${d2(magic)}))
        (local.set $r${s} (f64x2.sub (f64x2.sub (local.get $d${s}) (f64x2.mul (local.get $r${s}) ${d2(0.6931471803691238)}))
          (f64x2.mul (local.get $r${s}) ${d2(1.9082149292705877e-10)})))
        (local.set $e${s} ${d2(coeffs[0]!)})`;
  const horner = (s: string, c: number) => `(local.set $e${s} (f64x2.add (f64x2.mul (local.get $e${s}) (local.get $r${s})) ${d2(c)}))`;
  const scale = (s: string) => `(local.set $e${s} (f64x2.mul (local.get $e${s}) (i64x2.shl (i64x2.add (local.get $k${s}) (v128.const i64x2 1023 1023)) (i32.const 52))))`;
  const locals = ['a', 'b'].map((s) => `(local $d${s} v128) (local $k${s} v128) (local $r${s} v128) (local $e${s} v128)`).join(' ');
  return `
  (func $sumexp (export "sumexp") (param $p i32) (param $n i32) (param $m f64) (result f64)
    (local $end i32) (local $mv v128) (local $acc v128) (local $acc2 v128) ${locals}
    (local.set $mv (f64x2.splat (local.get $m)))
    ;; four values an iteration, as two chains: one Horner chain alone waits on its latency
    (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $n) (i32.const -4)) (i32.const 2))))
    (block $d4 (loop $l4
      (br_if $d4 (i32.ge_u (local.get $p) (local.get $end)))
      ${exp2('(f64x2.promote_low_f32x4 (v128.load64_zero (local.get $p)))', 'a')}
      ${exp2('(f64x2.promote_low_f32x4 (v128.load64_zero offset=8 (local.get $p)))', 'b')}
      ${coeffs.slice(1).map((c) => `${horner('a', c)}\n      ${horner('b', c)}`).join('\n      ')}
      ${scale('a')}
      ${scale('b')}
      (local.set $acc (f64x2.add (local.get $acc) (local.get $ea)))
      (local.set $acc2 (f64x2.add (local.get $acc2) (local.get $eb)))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (br $l4)))
    ;; the n mod 4 left: a pair, then one (lane 1 masked off)
    (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $n) (i32.const 3)) (i32.const 2))))
    (block $d1 (loop $l1
      (br_if $d1 (i32.ge_u (local.get $p) (local.get $end)))
      ${exp2('(f64x2.promote_low_f32x4 (v128.load64_zero (local.get $p)))', 'a')}
      ${coeffs.slice(1).map((c) => horner('a', c)).join('\n      ')}
      ${scale('a')}
      (if (i32.lt_u (i32.sub (local.get $end) (local.get $p)) (i32.const 8))
        (then (local.set $ea (v128.and (local.get $ea) (v128.const i64x2 -1 0)))))
      (local.set $acc (f64x2.add (local.get $acc) (local.get $ea)))
      (local.set $p (i32.add (local.get $p) (i32.const 8)))
      (br $l1)))
    (local.set $acc (f64x2.add (local.get $acc) (local.get $acc2)))
    (f64.add (f64x2.extract_lane 0 (local.get $acc)) (f64x2.extract_lane 1 (local.get $acc)))
  )`;
};

/** Two f32x4 of 8 consecutive values as the kernels' input order: the even ones, then the odd ones. */
const evens = (a: string, b: string) => `(i8x16.shuffle 0 1 2 3 8 9 10 11 16 17 18 19 24 25 26 27 ${a} ${b})`;
const odds = (a: string, b: string) => `(i8x16.shuffle 4 5 6 7 12 13 14 15 20 21 22 23 28 29 30 31 ${a} ${b})`;

/**
 * Stores 8 values computed as two f32x4 (`lo`, `hi`: elements 0–3 and 4–7) at `p`: in
 * natural order, or, when $layout is set, in the order the products read their input
 * (each block of 8 as its even then its odd elements; see the header).
 */
const store8 = (p: string, lo: string, hi: string) => `(local.set $lo ${lo})
        (local.set $hi ${hi})
        (if (local.get $layout)
          (then (v128.store ${p} ${evens('(local.get $lo)', '(local.get $hi)')})
            (v128.store offset=16 ${p} ${odds('(local.get $lo)', '(local.get $hi)')}))
          (else (v128.store ${p} (local.get $lo)) (v128.store offset=16 ${p} (local.get $hi))))`;

/**
 * RMSNorm of rows [r0, r1) of x (K float32 each, row r at x + 4·r·K), into y at the same
 * offsets (y = x is allowed: a row is read whole before it is written):
 * y = x · s · w with s = 1/√(mean(x²) + eps), rounded as kernels/fused.ts's rmsNormInto
 * always rounded: the squares summed in float64 (four interleaved parts), mean(x²) and
 * mean + eps and s each rounded to float32, then two float32 products per element.
 * $layout: y in the products' input order (the K mod 8 tail stays natural).
 */
const RMSNORM = `
  (func $rmsnorm (export "rmsnorm") (param $x i32) (param $w i32) (param $y i32) (param $K i32) (param $eps f64)
      (param $layout i32) (param $r0 i32) (param $r1 i32)
    (local $r i32) (local $p i32) (local $q i32) (local $wp i32) (local $end i32) (local $v v128) (local $a v128) (local $b v128)
    (local $sum f64) (local $sv v128) (local $lo v128) (local $hi v128)
    (local.set $r (local.get $r0))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $r) (local.get $r1)))
      (local.set $p (i32.add (local.get $x) (i32.shl (i32.mul (local.get $r) (local.get $K)) (i32.const 2))))
      (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $K) (i32.const -4)) (i32.const 2))))
      (local.set $a (v128.const i64x2 0 0))
      (local.set $b (v128.const i64x2 0 0))
      (block $sd (loop $sl
        (br_if $sd (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $v (v128.load (local.get $p)))
        (local.set $lo (f64x2.promote_low_f32x4 (local.get $v)))
        (local.set $hi (f64x2.promote_low_f32x4 (i8x16.shuffle 8 9 10 11 12 13 14 15 0 1 2 3 4 5 6 7 (local.get $v) (local.get $v))))
        (local.set $a (f64x2.add (local.get $a) (f64x2.mul (local.get $lo) (local.get $lo))))
        (local.set $b (f64x2.add (local.get $b) (f64x2.mul (local.get $hi) (local.get $hi))))
        (local.set $p (i32.add (local.get $p) (i32.const 16)))
        (br $sl)))
      (local.set $a (f64x2.add (local.get $a) (local.get $b)))
      (local.set $sum (f64.add (f64x2.extract_lane 0 (local.get $a)) (f64x2.extract_lane 1 (local.get $a))))
      (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $K) (i32.const 3)) (i32.const 2))))
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $p) (local.get $end)))
        (local.set $sum (f64.add (local.get $sum) (f64.mul (f64.promote_f32 (f32.load (local.get $p))) (f64.promote_f32 (f32.load (local.get $p))))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (br $tl)))
      (local.set $sv (f32x4.splat (f32.demote_f64 (f64.div (f64.const 1) (f64.sqrt (f64.promote_f32 (f32.demote_f64
        (f64.add (f64.promote_f32 (f32.demote_f64 (f64.div (local.get $sum) (f64.convert_i32_u (local.get $K))))) (local.get $eps)))))))))
      (local.set $p (i32.add (local.get $x) (i32.shl (i32.mul (local.get $r) (local.get $K)) (i32.const 2))))
      (local.set $q (i32.add (local.get $y) (i32.shl (i32.mul (local.get $r) (local.get $K)) (i32.const 2))))
      (local.set $wp (local.get $w))
      (local.set $end (i32.add (local.get $p) (i32.shl (i32.and (local.get $K) (i32.const -8)) (i32.const 2))))
      (block $vd (loop $vl
        (br_if $vd (i32.ge_u (local.get $p) (local.get $end)))
        ${store8('(local.get $q)', '(f32x4.mul (f32x4.mul (v128.load (local.get $p)) (local.get $sv)) (v128.load (local.get $wp)))',
          '(f32x4.mul (f32x4.mul (v128.load offset=16 (local.get $p)) (local.get $sv)) (v128.load offset=16 (local.get $wp)))')}
        (local.set $p (i32.add (local.get $p) (i32.const 32)))
        (local.set $q (i32.add (local.get $q) (i32.const 32)))
        (local.set $wp (i32.add (local.get $wp) (i32.const 32)))
        (br $vl)))
      (local.set $end (i32.add (local.get $end) (i32.shl (i32.and (local.get $K) (i32.const 7)) (i32.const 2))))
      (block $ed (loop $el
        (br_if $ed (i32.ge_u (local.get $p) (local.get $end)))
        (f32.store (local.get $q) (f32.mul (f32.mul (f32.load (local.get $p)) (f32x4.extract_lane 0 (local.get $sv))) (f32.load (local.get $wp))))
        (local.set $p (i32.add (local.get $p) (i32.const 4)))
        (local.set $q (i32.add (local.get $q) (i32.const 4)))
        (local.set $wp (i32.add (local.get $wp) (i32.const 4)))
        (br $el)))
      (local.set $r (i32.add (local.get $r) (i32.const 1)))
      (br $rl)))
  )`;

/**
 * SwiGLU's gating for rows [r0, r1), out[t, i] = g · σ(g) · u with σ(g) = 1 / (1 + e^−g),
 * rounded to float32 at each step as model/feedforward.ts's composite ops round. Row t of
 * g and u starts at g + 4·t·ld and u + 4·t·ld (byte offsets), of out at out + 4·t·I; eight
 * lanes at a time (two f32x4), the I mod 8 tail one lane at a time through the same
 * expAll. $layout: out in the products' input order (the down projection reads it next).
 */
const SWIGLU = () => {
  const one = (g: string, u: string) => `(f32x4.mul (f32x4.mul ${g} (f32x4.div (f32x4.splat (f32.const 1))
          (f32x4.add (f32x4.splat (f32.const 1)) ${expAll(`(f32x4.neg ${g})`)}))) ${u})`;
  return `
  (func $swiglu (export "swiglu") (param $g i32) (param $u i32) (param $out i32) (param $I i32) (param $ld i32)
      (param $layout i32) (param $r0 i32) (param $r1 i32)
    (local $t i32) (local $i i32) (local $I8 i32) (local $gp i32) (local $up i32) (local $op i32) (local $lo v128) (local $hi v128)
    (local $ex v128) (local $ey v128) (local $en v128) (local $er v128)
    (local.set $I8 (i32.and (local.get $I) (i32.const -8)))
    (local.set $t (local.get $r0))
    (block $td (loop $tl
      (br_if $td (i32.ge_u (local.get $t) (local.get $r1)))
      (local.set $gp (i32.add (local.get $g) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
      (local.set $up (i32.add (local.get $u) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
      (local.set $op (i32.add (local.get $out) (i32.shl (i32.mul (local.get $t) (local.get $I)) (i32.const 2))))
      (local.set $i (i32.const 0))
      (block $vd (loop $vl
        (br_if $vd (i32.ge_u (local.get $i) (local.get $I8)))
        ${store8('(local.get $op)', one('(v128.load (local.get $gp))', '(v128.load (local.get $up))'),
          one('(v128.load offset=16 (local.get $gp))', '(v128.load offset=16 (local.get $up))'))}
        (local.set $gp (i32.add (local.get $gp) (i32.const 32)))
        (local.set $up (i32.add (local.get $up) (i32.const 32)))
        (local.set $op (i32.add (local.get $op) (i32.const 32)))
        (local.set $i (i32.add (local.get $i) (i32.const 8)))
        (br $vl)))
      (block $sd (loop $sl
        (br_if $sd (i32.ge_u (local.get $i) (local.get $I)))
        (f32.store (local.get $op) (f32x4.extract_lane 0 ${one('(f32x4.splat (f32.load (local.get $gp)))', '(f32x4.splat (f32.load (local.get $up)))')}))
        (local.set $gp (i32.add (local.get $gp) (i32.const 4)))
        (local.set $up (i32.add (local.get $up) (i32.const 4)))
        (local.set $op (i32.add (local.get $op) (i32.const 4)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $sl)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $tl)))
  )`;
};

/**
 * RoPE's loop over the bytes [$i, end) of a head's first half at $p, four lanes (`f32x4`) or
 * one (`f32`) at a time: a = x[i], b = x[i + D/2] → a·cos − b·sin, b·cos' + a·sin'.
 */
function rotateHalves(v: 'f32x4' | 'f32', end: string): string {
  const [load, store, a, b, L] = v === 'f32x4' ? ['v128.load', 'v128.store', '$a', '$b', 'v'] : ['f32.load', 'f32.store', '$fa', '$fb', 's'];
  const lo = (base: string) => `(i32.add (local.get ${base}) (local.get $i))`;
  const hi = (base: string) => `(i32.add (i32.add (local.get ${base}) (local.get $hb)) (local.get $i))`;
  return `(block $${L}d (loop $${L}l
          (br_if $${L}d (i32.ge_u (local.get $i) (local.get ${end})))
          (local.set ${a} (${load} ${lo('$p')}))
          (local.set ${b} (${load} ${hi('$p')}))
          (${store} ${lo('$p')}
            (${v}.sub (${v}.mul (local.get ${a}) (${load} ${lo('$c')})) (${v}.mul (local.get ${b}) (${load} ${lo('$s')}))))
          (${store} ${hi('$p')}
            (${v}.add (${v}.mul (local.get ${b}) (${load} ${hi('$c')})) (${v}.mul (local.get ${a}) (${load} ${hi('$s')}))))
          (local.set $i (i32.add (local.get $i) (i32.const ${v === 'f32x4' ? 16 : 4})))
          (br $${L}l)))`;
}

/**
 * Rotate-half RoPE in place, as fused.ts's ropeInPlace rounds it: for tokens [r0, r1) of x
 * (token t's row at x + 4·t·ld bytes), its first `heads` heads of D floats, with the angles'
 * rows cos, sin [T, D] (both halves): x[i] = a·cos[i] − b·sin[i] and x[i + D/2] =
 * b·cos[i + D/2] + a·sin[i + D/2] for a = x[i], b = x[i + D/2]; a product and a sum each
 * rounded to float32 (no multiply-add: a fused one would round once). D must be even.
 */
const ROPE = `
  (func $rope (export "rope") (param $x i32) (param $cos i32) (param $sin i32) (param $ld i32) (param $heads i32) (param $D i32)
      (param $r0 i32) (param $r1 i32)
    (local $t i32) (local $h i32) (local $i i32) (local $hb i32) (local $hb4 i32) (local $p i32) (local $c i32) (local $s i32)
    (local $a v128) (local $b v128) (local $fa f32) (local $fb f32)
    (local.set $hb (i32.shl (local.get $D) (i32.const 1))) ;; half a head, in bytes
    (local.set $hb4 (i32.and (local.get $hb) (i32.const -16)))
    (local.set $t (local.get $r0))
    (block $td (loop $tl
      (br_if $td (i32.ge_u (local.get $t) (local.get $r1)))
      (local.set $h (i32.const 0))
      (block $hd (loop $hl
        (br_if $hd (i32.ge_u (local.get $h) (local.get $heads)))
        (local.set $p (i32.add (local.get $x) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ld)) (i32.mul (local.get $h) (local.get $D))) (i32.const 2))))
        (local.set $c (i32.add (local.get $cos) (i32.shl (i32.mul (local.get $t) (local.get $D)) (i32.const 2))))
        (local.set $s (i32.add (local.get $sin) (i32.sub (local.get $c) (local.get $cos))))
        (local.set $i (i32.const 0))
        ${rotateHalves('f32x4', '$hb4')}
        ${rotateHalves('f32', '$hb')}
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $hl)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $tl)))
  )`;

/** dst += src over rows [r0, r1) of K float32 each (row r at 4·r·K bytes from each): the residual add. */
const ADDROWS = `
  (func $addrows (export "addrows") (param $dst i32) (param $src i32) (param $K i32) (param $r0 i32) (param $r1 i32)
    (local $p i32) (local $q i32) (local $end i32)
    (local.set $p (i32.add (local.get $dst) (i32.shl (i32.mul (local.get $r0) (local.get $K)) (i32.const 2))))
    (local.set $q (i32.add (local.get $src) (i32.shl (i32.mul (local.get $r0) (local.get $K)) (i32.const 2))))
    (local.set $end (i32.add (local.get $dst) (i32.shl (i32.mul (local.get $r1) (local.get $K)) (i32.const 2))))
    (block $vd (loop $vl
      (br_if $vd (i32.gt_u (i32.add (local.get $p) (i32.const 16)) (local.get $end)))
      (v128.store (local.get $p) (f32x4.add (v128.load (local.get $p)) (v128.load (local.get $q))))
      (local.set $p (i32.add (local.get $p) (i32.const 16)))
      (local.set $q (i32.add (local.get $q) (i32.const 16)))
      (br $vl)))
    (block $sd (loop $sl
      (br_if $sd (i32.ge_u (local.get $p) (local.get $end)))
      (f32.store (local.get $p) (f32.add (f32.load (local.get $p)) (f32.load (local.get $q))))
      (local.set $p (i32.add (local.get $p) (i32.const 4)))
      (local.set $q (i32.add (local.get $q) (i32.const 4)))
      (br $sl)))
  )`;

/**
 * The arithmetic probe: `n` rounds of 8 independent f32x4 multiply-add chains (no loads, no
 * dependencies between chains), i.e. 64 float32 operations a round: what one thread's SIMD
 * can do at best, in the variant that runs (separate multiply and add in baseline SIMD, one
 * fused instruction with relaxed SIMD).
 */
const FLOPS = () => `
  (func $flops (export "flops") (param $n i32) (result f32)
    ${Array.from({ length: 8 }, (_, i) => `(local $a${i} v128)`).join(' ')} (local $m v128) (local $c v128)
    (local.set $m (f32x4.splat (f32.const 0.999999)))
    (local.set $c (f32x4.splat (f32.const 0.000001)))
    ${Array.from({ length: 8 }, (_, i) => `(local.set $a${i} (f32x4.splat (f32.const ${i + 1})))`).join(' ')}
    (block $d (loop $l
      (br_if $d (i32.eqz (local.get $n)))
      ${Array.from({ length: 8 }, (_, i) => `(local.set $a${i} ${madd(`(local.get $a${i})`, '(local.get $m)', '(local.get $c)')})`).join('\n      ')}
      (local.set $n (i32.sub (local.get $n) (i32.const 1)))
      (br $l)))
    (f32x4.extract_lane 0 ${Array.from({ length: 7 }, () => '(f32x4.add').join(' ')} (local.get $a0) ${Array.from({ length: 7 }, (_, i) => `(local.get $a${i + 1}))`).join(' ')})
  )`;

/** Reads `n` bytes (a multiple of 64) and folds them into one value: the bandwidth probe. */
const READ = `
  (func $read (export "read") (param $p i32) (param $n i32) (result i32)
    (local $end i32) (local $a v128) (local $b v128) (local $c v128) (local $d v128)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (block $d_ (loop $l
      (br_if $d_ (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $a (v128.xor (local.get $a) (v128.load (local.get $p))))
      (local.set $b (v128.xor (local.get $b) (v128.load offset=16 (local.get $p))))
      (local.set $c (v128.xor (local.get $c) (v128.load offset=32 (local.get $p))))
      (local.set $d (v128.xor (local.get $d) (v128.load offset=48 (local.get $p))))
      (local.set $p (i32.add (local.get $p) (i32.const 64)))
      (br $l)))
    (i32x4.extract_lane 0 (v128.xor (v128.xor (local.get $a) (local.get $b)) (v128.xor (local.get $c) (local.get $d))))
  )`;

/**
 * Whether `n` bytes at `p` (a multiple of 64) hold a NaN or ±Inf, without converting: each
 * 32-bit word is masked to its exponent bits (`mask`: one exponent for f32, two for bf16 /
 * f16) and the exponents' lowest bit added (`add`); only an all-ones exponent carries into
 * the bit above it (`flag`: the sign bit of each element). Words are OR-folded, tested once.
 * The weight loader's check: it runs at memory speed where a JS loop does ~1 GB/s.
 */
const NONFINITE = `
  (func $nonfinite (export "nonfinite") (param $p i32) (param $n i32) (param $mask i32) (param $add i32) (param $flag i32) (result i32)
    (local $end i32) (local $m v128) (local $s v128) (local $a v128) (local $b v128) (local $c v128) (local $d v128)
    (local.set $end (i32.add (local.get $p) (local.get $n)))
    (local.set $m (i32x4.splat (local.get $mask)))
    (local.set $s (i32x4.splat (local.get $add)))
    (block $d_ (loop $l
      (br_if $d_ (i32.ge_u (local.get $p) (local.get $end)))
      (local.set $a (v128.or (local.get $a) (i32x4.add (v128.and (v128.load (local.get $p)) (local.get $m)) (local.get $s))))
      (local.set $b (v128.or (local.get $b) (i32x4.add (v128.and (v128.load offset=16 (local.get $p)) (local.get $m)) (local.get $s))))
      (local.set $c (v128.or (local.get $c) (i32x4.add (v128.and (v128.load offset=32 (local.get $p)) (local.get $m)) (local.get $s))))
      (local.set $d (v128.or (local.get $d) (i32x4.add (v128.and (v128.load offset=48 (local.get $p)) (local.get $m)) (local.get $s))))
      (local.set $p (i32.add (local.get $p) (i32.const 64)))
      (br $l)))
    (v128.any_true (v128.and (v128.or (v128.or (local.get $a) (local.get $b)) (v128.or (local.get $c) (local.get $d)))
      (i32x4.splat (local.get $flag))))
  )`;

/**
 * Rearranges `rows` (a multiple of 4) row-major rows of K 2-byte elements at p, in place, into
 * quads (see gemv), group by group through `tmp` (4 · K · 2 bytes): what the loader does to
 * a bf16 or f16 projection once it is read.
 */
const QUADS = `
  (func $quads (export "quads") (param $p i32) (param $rows i32) (param $K i32) (param $tmp i32)
    (local $g i32) (local $gb i32) (local $i i32) (local $k i32) (local $K8 i32) (local $rb i32) (local $e i32) (local $d i32) (local $s i32)
    (local.set $K8 (i32.and (local.get $K) (i32.const -8)))
    (local.set $rb (i32.shl (local.get $K) (i32.const 1)))
    (block $gd (loop $gl
      (br_if $gd (i32.ge_u (local.get $g) (local.get $rows)))
      (local.set $gb (i32.add (local.get $p) (i32.mul (local.get $g) (local.get $rb))))
      ;; the group's four rows to tmp: 16 bytes at a time, then the bytes left
      (local.set $e (i32.shl (local.get $rb) (i32.const 2)))
      (local.set $k (i32.const 0))
      (block $cd (loop $cl
        (br_if $cd (i32.gt_u (i32.add (local.get $k) (i32.const 16)) (local.get $e)))
        (v128.store (i32.add (local.get $tmp) (local.get $k)) (v128.load (i32.add (local.get $gb) (local.get $k))))
        (local.set $k (i32.add (local.get $k) (i32.const 16)))
        (br $cl)))
      (block $bd (loop $bl
        (br_if $bd (i32.ge_u (local.get $k) (local.get $e)))
        (i32.store8 (i32.add (local.get $tmp) (local.get $k)) (i32.load8_u (i32.add (local.get $gb) (local.get $k))))
        (local.set $k (i32.add (local.get $k) (i32.const 1)))
        (br $bl)))
      ;; back as quads: block k of rows 0-3 side by side, then the four tails
      (local.set $d (local.get $gb))
      (local.set $k (i32.const 0))
      (block $qd (loop $ql
        (br_if $qd (i32.ge_u (local.get $k) (local.get $K8)))
        (local.set $s (i32.add (local.get $tmp) (i32.shl (local.get $k) (i32.const 1))))
        (v128.store (local.get $d) (v128.load (local.get $s)))
        (v128.store offset=16 (local.get $d) (v128.load (i32.add (local.get $s) (local.get $rb))))
        (v128.store offset=32 (local.get $d) (v128.load (i32.add (local.get $s) (i32.shl (local.get $rb) (i32.const 1)))))
        (v128.store offset=48 (local.get $d) (v128.load (i32.add (local.get $s) (i32.mul (local.get $rb) (i32.const 3)))))
        (local.set $d (i32.add (local.get $d) (i32.const 64)))
        (local.set $k (i32.add (local.get $k) (i32.const 8)))
        (br $ql)))
      (local.set $i (i32.const 0))
      (block $id (loop $il
        (br_if $id (i32.ge_u (local.get $i) (i32.const 4)))
        (local.set $k (local.get $K8))
        (block $td (loop $tl
          (br_if $td (i32.ge_u (local.get $k) (local.get $K)))
          (i32.store16 (local.get $d) (i32.load16_u (i32.add (local.get $tmp) (i32.add (i32.mul (local.get $i) (local.get $rb)) (i32.shl (local.get $k) (i32.const 1))))))
          (local.set $d (i32.add (local.get $d) (i32.const 2)))
          (local.set $k (i32.add (local.get $k) (i32.const 1)))
          (br $tl)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $il)))
      (local.set $g (i32.add (local.get $g) (i32.const 4)))
      (br $gl)))
  )`;

function kernelsWat(relaxed: boolean): string {
  RELAXED = relaxed;
  return `(module
  (import "env" "memory" (memory 1 65536 shared))
  ${HALF}
  ${PANEL()}
  ${DTYPES.map((d) => gemv(d) + widen(d) + gemm(d)).join('\n')}
  ${EXP}
  ${ATTEND()}
  ${SUMEXP()}
  ${RMSNORM}
  ${SWIGLU()}
  ${ADDROWS}
  ${ROPE}
  ${FLOPS()}
  ${READ}
  ${NONFINITE}
  ${QUADS}
)`;
}

async function main(): Promise<void> {
  const require = createRequire(import.meta.url);
  const wabt = await (require('wabt') as () => Promise<{
    parseWat(name: string, text: string, features: Record<string, boolean>): { validate(): void; toBinary(o: object): { buffer: Uint8Array }; destroy(): void };
  }>)();
  const build = (relaxed: boolean) => {
    const mod = wabt.parseWat('kernels.wat', kernelsWat(relaxed), { simd: true, threads: true, relaxed_simd: relaxed });
    // No mod.validate(): wabt.js's validator rejects shared memories whatever the features
    // say; V8 validates the module when it compiles it (and the kernel tests run it).
    const bytes = mod.toBinary({}).buffer;
    mod.destroy();
    return Buffer.from(bytes);
  };
  const baseline = build(false);
  const relaxed = build(true);
  const out = new URL('../src/kernels/simd/kernels.generated.ts', import.meta.url);
  writeFileSync(out, `// Generated by scripts/build-kernels.ts from the WebAssembly text there; do not edit.\n` +
    `export const KERNELS_WASM = '${baseline.toString('base64')}';\n` +
    `export const KERNELS_WASM_RELAXED = '${relaxed.toString('base64')}';\n`);
  console.log(`kernels: ${baseline.length} + ${relaxed.length} bytes of wasm (baseline and relaxed SIMD) → src/kernels/simd/kernels.generated.ts`);
}

await main();
// The same build step bundles tfjs-core's gradients (see build-gradients.ts).
await buildGradients();
