/**
 * Elementwise kernels on arrays (operands copied into a workspace memory and back): SwiGLU's
 * gate, which in a JavaScript loop (Math.exp, one at a time) cost 9% of a hidden-512 prefill
 * (four float32 lanes at a time: build-kernels.ts, `expAll`, within 2 ulp); RMSNorm, the
 * same kernel the whole-layer path runs in the weights' memory (simd/chain.ts), so the two
 * paths agree bit for bit; and the normaliser of a token's log-probability over the
 * vocabulary, 0.5 ms a decode step in JavaScript (two float64 lanes: `sumexp`).
 */
import { Workspace } from './workspace.js';

const workspace = new Workspace();

/**
 * silu(gate) ⊙ up, row by row.
 * @param gate rows of `I` floats at stride `ld` from `gOff`; `up` likewise from `uOff`
 *   (ld = I for two separate arrays; ld = 2I with uOff = I for a fused gate|up product)
 * @param out where to write the result (else a new array)
 * @returns [T, I]: `out` when given
 */
export function swigluKernel(gate: Float32Array, up: Float32Array, T: number, I: number, gOff: number, uOff: number,
  ld = I, out?: Float32Array): Float32Array {
  workspace.reset();
  const same = gate === up;
  const n = T * ld;
  const gp = workspace.alloc(4 * n);
  const up_ = same ? gp : workspace.alloc(4 * n);
  const op = workspace.alloc(4 * T * I);
  workspace.f32(gp, n).set(gate.subarray(0, n));
  if (!same) workspace.f32(up_, n).set(up.subarray(0, n));
  workspace.kernels.swiglu(gp + 4 * gOff, up_ + 4 * uOff, op, I, ld, 0, 0, T);
  const result = workspace.f32(op, T * I);
  if (out === undefined) return result.slice();
  out.set(result);
  return out;
}

/**
 * y = x · w / √(mean(x²) + eps) row by row (build-kernels.ts, `$rmsnorm`).
 * @param x [T, K]
 * @param w [K]
 * @param y [T, K], written (may be x)
 */
export function rmsNormKernel(x: Float32Array, T: number, K: number, w: Float32Array, eps: number, y: Float32Array): void {
  workspace.reset();
  const xp = workspace.alloc(4 * T * K);
  const wp = workspace.alloc(4 * K);
  workspace.f32(xp, T * K).set(x.subarray(0, T * K));
  workspace.f32(wp, K).set(w.subarray(0, K));
  workspace.kernels.rmsnorm(xp, wp, xp, K, eps, 0, 0, T);
  y.set(workspace.f32(xp, T * K));
}

/**
 * Σ e^(x_i − m) in float64, as `for (…) sum += Math.exp(x[i] - m)` computes it (each term
 * within a few ulp, the terms summed in four interleaved parts). Terms below e^−708 count as
 * e^−708; with m = max(x) the sum is ≥ 1, so they add nothing.
 * @param x [n]
 */
export function sumExp(x: Float32Array, m: number): number {
  workspace.reset();
  const p = workspace.alloc(4 * x.length);
  workspace.f32(p, x.length).set(x);
  return workspace.kernels.sumexp(p, x.length, m);
}
