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
 * rows (decode is bound by reading W once), two accumulators per row (even/odd lanes).
 * `x` is the permuted vector described above; rows r0 ≤ r < r1 only (a worker's share).
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
        ${ptrs.map((q) => `(local.set ${q} (i32.add (local.get ${q}) (i32.const ${8 * s})))`).join(' ')}
        (local.set $xp (i32.add (local.get $xp) (i32.const 32)))
        (br $kl)))`;
  /** One 8-column block of the four rows, block `b` of the iteration (constant offsets). */
  const block8 = (b: number) => `(local.set $xe (v128.load offset=${32 * b} (local.get $xp)))
        (local.set $xo (v128.load offset=${32 * b + 16} (local.get $xp)))
        ${rows.map((r) => `${load8(d, `(local.get ${ptrs[r]})`, '$a', '$b', 8 * s * b)}
        (local.set $e${r} ${madd('(local.get $b)', '(local.get $xo)', madd('(local.get $a)', '(local.get $xe)', `(local.get $e${r})`))})`).join('\n        ')}`;
  return `
  (func $gemv_${d} (export "gemv_${d}") (param $w i32) (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32) (param $K i32) (result i32)
    (local $r i32) (local $k i32) (local $K8 i32) (local $rb i32) (local $p i32) (local $xp i32) (local $ahead i32) (local $step i32)
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
      (local.set $p1 (i32.add (local.get $p) (local.get $rb)))
      (local.set $p2 (i32.add (local.get $p1) (local.get $rb)))
      (local.set $p3 (i32.add (local.get $p2) (local.get $rb)))
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
        ${rows.map((r) => `(local.set $s${r} (f32.add (local.get $s${r}) (f32.mul ${load1(d, `(i32.add (local.get $p) (i32.mul (local.get $rb) (i32.const ${r})))`)} (f32.load (local.get $xp)))))`).join('\n        ')}
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
 * Widens `n` rows of K stored elements at `w` to float32 at `out`, in the order the
 * permuted x expects (8-blocks split even/odd, natural tail): then a float32 dot product
 * of a widened row with the permuted x is the row's dot product with x.
 */
function widen(d: DType): string {
  if (d === 'f32') return '';
  const s = SIZE[d];
  return `
  (func $widen_${d} (export "widen_${d}") (param $w i32) (param $out i32) (param $n i32) (param $K i32)
    (local $i i32) (local $k i32) (local $K8 i32) (local $p i32) (local $q i32) (local $v v128) (local $a v128) (local $b v128)
    (local.set $K8 (i32.and (local.get $K) (i32.const -8)))
    (local.set $p (local.get $w))
    (local.set $q (local.get $out))
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $i) (local.get $n)))
      (local.set $k (i32.const 0))
      (block $kd (loop $kl
        (br_if $kd (i32.ge_u (local.get $k) (local.get $K8)))
        ${load8(d, '(local.get $p)', '$a', '$b')}
        (v128.store (local.get $q) (local.get $a))
        (v128.store offset=16 (local.get $q) (local.get $b))
        (local.set $p (i32.add (local.get $p) (i32.const ${8 * s})))
        (local.set $q (i32.add (local.get $q) (i32.const 32)))
        (local.set $k (i32.add (local.get $k) (i32.const 8)))
        (br $kl)))
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $k) (local.get $K)))
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
 * The float32 tile of the matrix-matrix product: rows [r0, r0 + nr) of float32 weights
 * `wf` (row stride K floats) times tokens [t0, t1) of x (row stride K floats), into
 * y[t · ldy + r]. Register tile: 4 rows × 2 tokens = 8 accumulators, so each weight
 * load serves 2 tokens and each x load 4 rows.
 */
const TILE = () => `
  (func $tile (param $wf i32) (param $nr i32) (param $r0 i32) (param $x i32) (param $t0 i32) (param $t1 i32)
      (param $K i32) (param $y i32) (param $ldy i32)
    (local $t i32) (local $k i32) (local $K4 i32) (local $kb i32) (local $i i32)
    (local $w0 i32) (local $x0 i32) (local $x1 i32) (local $yp i32)
    (local $a v128) (local $b v128) (local $c v128) (local $d v128) (local $p v128) (local $q v128)
    (local $a0 v128) (local $a1 v128) (local $b0 v128) (local $b1 v128) (local $c0 v128) (local $c1 v128) (local $d0 v128) (local $d1 v128)
    (local $s f32) (local $u f32)
    (local.set $K4 (i32.and (local.get $K) (i32.const -4)))
    (local.set $kb (i32.shl (local.get $K) (i32.const 2)))
    (local.set $t (local.get $t0))
    ;; pairs of tokens against 4 rows
    (if (i32.eq (local.get $nr) (i32.const 4)) (then
    (block $pd (loop $pl
      (br_if $pd (i32.gt_u (i32.add (local.get $t) (i32.const 2)) (local.get $t1)))
      (local.set $a0 (v128.const i32x4 0 0 0 0)) (local.set $a1 (v128.const i32x4 0 0 0 0))
      (local.set $b0 (v128.const i32x4 0 0 0 0)) (local.set $b1 (v128.const i32x4 0 0 0 0))
      (local.set $c0 (v128.const i32x4 0 0 0 0)) (local.set $c1 (v128.const i32x4 0 0 0 0))
      (local.set $d0 (v128.const i32x4 0 0 0 0)) (local.set $d1 (v128.const i32x4 0 0 0 0))
      (local.set $w0 (local.get $wf))
      (local.set $x0 (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $kb))))
      (local.set $x1 (i32.add (local.get $x0) (local.get $kb)))
      (local.set $k (i32.const 0))
      (block $kd (loop $kl
        (br_if $kd (i32.ge_u (local.get $k) (local.get $K4)))
        (local.set $p (v128.load (local.get $x0)))
        (local.set $q (v128.load (local.get $x1)))
        (local.set $a (v128.load (local.get $w0)))
        (local.set $a0 ${madd('(local.get $a)', '(local.get $p)', '(local.get $a0)')})
        (local.set $a1 ${madd('(local.get $a)', '(local.get $q)', '(local.get $a1)')})
        (local.set $b (v128.load (i32.add (local.get $w0) (local.get $kb))))
        (local.set $b0 ${madd('(local.get $b)', '(local.get $p)', '(local.get $b0)')})
        (local.set $b1 ${madd('(local.get $b)', '(local.get $q)', '(local.get $b1)')})
        (local.set $c (v128.load (i32.add (local.get $w0) (i32.shl (local.get $kb) (i32.const 1)))))
        (local.set $c0 ${madd('(local.get $c)', '(local.get $p)', '(local.get $c0)')})
        (local.set $c1 ${madd('(local.get $c)', '(local.get $q)', '(local.get $c1)')})
        (local.set $d (v128.load (i32.add (local.get $w0) (i32.mul (local.get $kb) (i32.const 3)))))
        (local.set $d0 ${madd('(local.get $d)', '(local.get $p)', '(local.get $d0)')})
        (local.set $d1 ${madd('(local.get $d)', '(local.get $q)', '(local.get $d1)')})
        (local.set $w0 (i32.add (local.get $w0) (i32.const 16)))
        (local.set $x0 (i32.add (local.get $x0) (i32.const 16)))
        (local.set $x1 (i32.add (local.get $x1) (i32.const 16)))
        (local.set $k (i32.add (local.get $k) (i32.const 4)))
        (br $kl)))
      ;; sums, then the K mod 4 tail of each of the 8 dot products
      (local.set $yp (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ldy)) (local.get $r0)) (i32.const 2))))
      ${[['$a0', '$a1', 0], ['$b0', '$b1', 1], ['$c0', '$c1', 2], ['$d0', '$d1', 3]].map(([u, v, r]) => `
      (local.set $s ${hsum(`(local.get ${u})`)})
      (local.set $u ${hsum(`(local.get ${v})`)})
      (local.set $i (local.get $k))
      (block $td (loop $tl
        (br_if $td (i32.ge_u (local.get $i) (local.get $K)))
        (local.set $s (f32.add (local.get $s) (f32.mul
          (f32.load (i32.add (local.get $wf) (i32.shl (i32.add (i32.mul (local.get $K) (i32.const ${r})) (local.get $i)) (i32.const 2))))
          (f32.load (i32.add (local.get $x) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $K)) (local.get $i)) (i32.const 2)))))))
        (local.set $u (f32.add (local.get $u) (f32.mul
          (f32.load (i32.add (local.get $wf) (i32.shl (i32.add (i32.mul (local.get $K) (i32.const ${r})) (local.get $i)) (i32.const 2))))
          (f32.load (i32.add (local.get $x) (i32.shl (i32.add (i32.mul (i32.add (local.get $t) (i32.const 1)) (local.get $K)) (local.get $i)) (i32.const 2)))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $tl)))
      (f32.store offset=${4 * Number(r)} (local.get $yp) (local.get $s))
      (f32.store offset=${4 * Number(r)} (i32.add (local.get $yp) (i32.shl (local.get $ldy) (i32.const 2))) (local.get $u))`).join('')}
      (local.set $t (i32.add (local.get $t) (i32.const 2)))
      (br $pl)))))
    ;; what is left (a last odd token, or fewer than 4 rows): one dot product at a time
    (block $rd (loop $rl
      (br_if $rd (i32.ge_u (local.get $t) (local.get $t1)))
      (local.set $i (i32.const 0))
      (block $od (loop $ol
        (br_if $od (i32.ge_u (local.get $i) (local.get $nr)))
        (f32.store (i32.add (local.get $y) (i32.shl (i32.add (i32.mul (local.get $t) (local.get $ldy)) (i32.add (local.get $r0) (local.get $i))) (i32.const 2)))
          (call $dot (i32.add (local.get $wf) (i32.mul (local.get $i) (local.get $kb)))
                     (i32.add (local.get $x) (i32.mul (local.get $t) (local.get $kb))) (local.get $K)))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $ol)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $rl)))
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
 * Y[t, r] = Σ_k W[r, k] · X[t, k] for rows [r0, r1) and tokens [0, T). Tokens go in
 * blocks of `tb` (so a block of x stays in cache), rows in groups of 4; 2-byte weights
 * are widened once per (row group, token block) into `scratch` (4·K floats).
 */
function gemm(d: DType): string {
  const s = SIZE[d];
  const wf = d === 'f32'
    ? '(i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb)))'
    : '(local.get $scratch)';
  const prep = d === 'f32' ? '' : `(call $widen_${d} (i32.add (local.get $w) (i32.mul (local.get $r) (local.get $rb))) (local.get $scratch) (local.get $nr) (local.get $K))`;
  return `
  (func $gemm_${d} (export "gemm_${d}") (param $w i32) (param $x i32) (param $y i32) (param $r0 i32) (param $r1 i32)
      (param $K i32) (param $T i32) (param $ldy i32) (param $tb i32) (param $scratch i32)
    (local $t0 i32) (local $t1 i32) (local $r i32) (local $nr i32) (local $rb i32)
    (local.set $rb (i32.mul (local.get $K) (i32.const ${s})))
    (block $tdone (loop $tloop
      (br_if $tdone (i32.ge_u (local.get $t0) (local.get $T)))
      (local.set $t1 (select (local.get $T) (i32.add (local.get $t0) (local.get $tb))
        (i32.gt_u (i32.add (local.get $t0) (local.get $tb)) (local.get $T))))
      (local.set $r (local.get $r0))
      (block $rdone (loop $rloop
        (br_if $rdone (i32.ge_u (local.get $r) (local.get $r1)))
        (local.set $nr (select (i32.const 4) (i32.sub (local.get $r1) (local.get $r))
          (i32.ge_u (i32.sub (local.get $r1) (local.get $r)) (i32.const 4))))
        ${prep}
        (call $tile ${wf} (local.get $nr) (local.get $r) (local.get $x) (local.get $t0) (local.get $t1) (local.get $K) (local.get $y) (local.get $ldy))
        (local.set $r (i32.add (local.get $r) (local.get $nr)))
        (br $rloop)))
      (local.set $t0 (local.get $t1))
      (br $tloop)))
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


/**
 * exp(x) for x ≤ 0 in float64 (softmax terms after subtracting the running max): x = n·ln2 + r,
 * |r| ≤ ln2/2, e^r by its Taylor series to r^9 (relative error < 1e-11), times 2^n built
 * from the exponent bits. Below −745 the result is 0.
 */
const EXP = `
  (func $exp (param $x f64) (result f64)
    (local $n f64) (local $r f64) (local $p f64)
    (if (f64.ne (local.get $x) (local.get $x)) (then (return (local.get $x)))) ;; NaN in, NaN out (no trapping conversion)
    (if (f64.lt (local.get $x) (f64.const -745)) (then (return (f64.const 0))))
    (local.set $n (f64.nearest (f64.mul (local.get $x) (f64.const 1.4426950408889634))))
    (local.set $r (f64.sub (f64.sub (local.get $x) (f64.mul (local.get $n) (f64.const 0.6931471803691238)))
      (f64.mul (local.get $n) (f64.const 1.9082149292705877e-10))))
    (local.set $p (f64.const 2.7557319223985893e-6))
    ${[2.48015873015873e-5, 1.984126984126984e-4, 1.388888888888889e-3, 8.333333333333333e-3, 4.1666666666666664e-2, 0.16666666666666666, 0.5, 1, 1]
      .map((c) => `(local.set $p (f64.add (f64.mul (local.get $p) (local.get $r)) (f64.const ${c})))`).join('\n    ')}
    ;; 2^n: n ≥ −1075 here; subnormal scales come out as 0, which is what softmax wants
    (if (f64.lt (local.get $n) (f64.const -1022)) (then (return (f64.const 0))))
    (f64.mul (local.get $p) (f64.reinterpret_i64 (i64.shl (i64.add (i64.trunc_f64_s (local.get $n)) (i64.const 1023)) (i64.const 52))))
  )`;

/**
 * Causal sliding-window attention with grouped-query heads, one query at a time, in one
 * pass over the keys (online softmax: a running max and sum, the output rescaled when the
 * max grows), so no [tokens, keys] score matrix exists.
 *
 * q, z: [T, H, D] f32; k, v: [KV, S, D] f32; qpos [T] and kpos [S] i32 absolute positions
 * (kpos < 0: an empty slot). Query t, head h sees key j of kv head h / (H / KV) iff
 * 0 ≤ kpos[j] ≤ qpos[t] and (window = 0 or kpos[j] > qpos[t] − window). Heads [h0, h1) only
 * (a thread's share). D must be a multiple of 4.
 */
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

const ATTEND = () => `
  (func $attend (export "attend") (param $q i32) (param $k i32) (param $v i32) (param $z i32) (param $qpos i32) (param $kpos i32)
      (param $T i32) (param $S i32) (param $H i32) (param $KV i32) (param $D i32) (param $window i32) (param $sqrtD f32)
      (param $h0 i32) (param $h1 i32)
    (local $t i32) (local $h i32) (local $j i32) (local $d i32) (local $qp i32) (local $kp i32) (local $group i32)
    (local $qrow i32) (local $zrow i32) (local $kh i32) (local $vh i32) (local $krow i32) (local $vrow i32) (local $Db i32)
    (local $acc v128) (local $s f64) (local $m f64) (local $l f64) (local $e f64) (local $c f64) (local $ev v128) (local $cv v128)
    (local.set $group (i32.div_u (local.get $H) (local.get $KV)))
    (local.set $Db (i32.shl (local.get $D) (i32.const 2)))
    (block $td (loop $tl
      (br_if $td (i32.ge_u (local.get $t) (local.get $T)))
      (local.set $qp (i32.load (i32.add (local.get $qpos) (i32.shl (local.get $t) (i32.const 2)))))
      (local.set $h (local.get $h0))
      (block $hd (loop $hl
        (br_if $hd (i32.ge_u (local.get $h) (local.get $h1)))
        (local.set $qrow (i32.add (local.get $q) (i32.mul (i32.add (i32.mul (local.get $t) (local.get $H)) (local.get $h)) (local.get $Db))))
        (local.set $zrow (i32.add (local.get $z) (i32.sub (local.get $qrow) (local.get $q))))
        (local.set $kh (i32.add (local.get $k) (i32.mul (i32.mul (i32.div_u (local.get $h) (local.get $group)) (local.get $S)) (local.get $Db))))
        (local.set $vh (i32.add (local.get $v) (i32.sub (local.get $kh) (local.get $k))))
        ;; z row = 0, running max −∞, running sum 0
        ${overHead('z', `(v128.store ${at('$zrow')} (v128.const i32x4 0 0 0 0))`)}
        (local.set $m (f64.const -inf))
        (local.set $l (f64.const 0))
        (local.set $j (i32.const 0))
        (block $jd (loop $jl
          (br_if $jd (i32.ge_u (local.get $j) (local.get $S)))
          (local.set $kp (i32.load (i32.add (local.get $kpos) (i32.shl (local.get $j) (i32.const 2)))))
          (if (i32.and (i32.and (i32.ge_s (local.get $kp) (i32.const 0)) (i32.le_s (local.get $kp) (local.get $qp)))
                (i32.or (i32.eqz (local.get $window)) (i32.gt_s (local.get $kp) (i32.sub (local.get $qp) (local.get $window)))))
            (then
              (local.set $krow (i32.add (local.get $kh) (i32.mul (local.get $j) (local.get $Db))))
              (local.set $vrow (i32.add (local.get $vh) (i32.mul (local.get $j) (local.get $Db))))
              ;; s = q · k / √D (divided, as the reference path divides)
              (local.set $acc (v128.const i32x4 0 0 0 0))
              ${overHead('d', `(local.set $acc ${madd(`(v128.load ${at('$qrow')})`, `(v128.load ${at('$krow')})`, '(local.get $acc)')})`)}
              (local.set $s (f64.promote_f32 (f32.div ${hsum('(local.get $acc)')} (local.get $sqrtD))))
              ;; a new max rescales what was summed so far
              (if (f64.gt (local.get $s) (local.get $m)) (then
                (local.set $c (call $exp (f64.sub (local.get $m) (local.get $s))))
                (local.set $l (f64.mul (local.get $l) (local.get $c)))
                (local.set $cv (f32x4.splat (f32.demote_f64 (local.get $c))))
                ${scaleZ('c')}
                (local.set $m (local.get $s))))
              (local.set $e (call $exp (f64.sub (local.get $s) (local.get $m))))
              (local.set $l (f64.add (local.get $l) (local.get $e)))
              (local.set $ev (f32x4.splat (f32.demote_f64 (local.get $e))))
              ${overHead('v', `(v128.store ${at('$zrow')} ${madd(`(v128.load ${at('$vrow')})`, '(local.get $ev)', `(v128.load ${at('$zrow')})`)})`)}))
          (local.set $j (i32.add (local.get $j) (i32.const 1)))
          (br $jl)))
        ;; z = z / l
        (local.set $cv (f32x4.splat (f32.demote_f64 (f64.div (f64.const 1) (local.get $l)))))
        ${scaleZ('n')}
        (local.set $h (i32.add (local.get $h) (i32.const 1)))
        (br $hl)))
      (local.set $t (i32.add (local.get $t) (i32.const 1)))
      (br $tl)))
  )`;

/**
 * e^x in four float32 lanes: x = n·ln2 + r (ln2 in two parts, so r is exact to float32),
 * |r| ≤ ln2/2, e^r by its Taylor series to r^7 (truncation < 6e-9 relative), times 2^n
 * built in the exponent bits. x is clamped to [−87.3, 88.7] first, so 2^n stays a normal
 * float: e^x below e^−87.3 comes out as ≈ 1e−38 instead of a subnormal, which every caller
 * adds to 1 or multiplies away; above 88.72 (where float32 e^x overflows) it is +Inf, as
 * Math.exp rounded to float32 gives. NaN stays NaN (min and max propagate it).
 */
const EXP4 = () => `
  (func $exp4 (param $x v128) (result v128)
    (local $n v128) (local $r v128) (local $p v128) (local $big v128)
    (local.set $big (f32x4.gt (local.get $x) (f32x4.splat (f32.const 88.72284))))
    (local.set $x (f32x4.max (f32x4.min (local.get $x) (f32x4.splat (f32.const 88.7))) (f32x4.splat (f32.const -87.3))))
    (local.set $n (f32x4.nearest (f32x4.mul (local.get $x) (f32x4.splat (f32.const 1.44269504)))))
    (local.set $r (f32x4.sub (f32x4.sub (local.get $x) (f32x4.mul (local.get $n) (f32x4.splat (f32.const 0.693145751953125))))
      (f32x4.mul (local.get $n) (f32x4.splat (f32.const 1.428606765330187e-6)))))
    (local.set $p (f32x4.splat (f32.const 1.984126984126984e-4)))
    ${[1.388888888888889e-3, 8.333333333333333e-3, 4.1666666666666664e-2, 0.16666666666666666, 0.5, 1, 1]
      .map((c) => `(local.set $p ${madd('(local.get $p)', '(local.get $r)', `(f32x4.splat (f32.const ${c}))`)})`).join('\n    ')}
    (v128.bitselect (f32x4.splat (f32.const inf))
      (f32x4.mul (local.get $p) (i32x4.shl (i32x4.add (i32x4.trunc_sat_f32x4_s (local.get $n)) (i32x4.splat (i32.const 127))) (i32.const 23)))
      (local.get $big))
  )`;

/**
 * SwiGLU's gating, out[t, i] = g · σ(g) · u with σ(g) = 1 / (1 + e^−g), rounded to float32
 * at each step as model/feedforward.ts's composite ops round. Row t of g and u starts at
 * g + 4·t·ld and u + 4·t·ld (byte offsets), of out at out + 4·t·I; four lanes at a time,
 * the I mod 4 tail one lane at a time through the same $exp4.
 */
const SWIGLU = () => {
  const one = (g: string, u: string) => `(f32x4.mul (f32x4.mul ${g} (f32x4.div (f32x4.splat (f32.const 1))
          (f32x4.add (f32x4.splat (f32.const 1)) (call $exp4 (f32x4.neg ${g}))))) ${u})`;
  return `
  (func $swiglu (export "swiglu") (param $g i32) (param $u i32) (param $out i32) (param $T i32) (param $I i32) (param $ld i32)
    (local $t i32) (local $i i32) (local $I4 i32) (local $gp i32) (local $up i32) (local $op i32)
    (local.set $I4 (i32.and (local.get $I) (i32.const -4)))
    (block $td (loop $tl
      (br_if $td (i32.ge_u (local.get $t) (local.get $T)))
      (local.set $gp (i32.add (local.get $g) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
      (local.set $up (i32.add (local.get $u) (i32.shl (i32.mul (local.get $t) (local.get $ld)) (i32.const 2))))
      (local.set $op (i32.add (local.get $out) (i32.shl (i32.mul (local.get $t) (local.get $I)) (i32.const 2))))
      (local.set $i (i32.const 0))
      (block $vd (loop $vl
        (br_if $vd (i32.ge_u (local.get $i) (local.get $I4)))
        (v128.store (local.get $op) ${one('(v128.load (local.get $gp))', '(v128.load (local.get $up))')})
        (local.set $gp (i32.add (local.get $gp) (i32.const 16)))
        (local.set $up (i32.add (local.get $up) (i32.const 16)))
        (local.set $op (i32.add (local.get $op) (i32.const 16)))
        (local.set $i (i32.add (local.get $i) (i32.const 4)))
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

function kernelsWat(relaxed: boolean): string {
  RELAXED = relaxed;
  return `(module
  (import "env" "memory" (memory 1 65536 shared))
  ${HALF}
  ${TILE()}
  ${DTYPES.map((d) => gemv(d) + widen(d) + gemm(d)).join('\n')}
  ${EXP}
  ${ATTEND()}
  ${EXP4()}
  ${SWIGLU()}
  ${FLOPS()}
  ${READ}
  ${NONFINITE}
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
