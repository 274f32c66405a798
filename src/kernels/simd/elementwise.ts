/**
 * Elementwise kernels that are worth wasm, both an exp per element: SwiGLU's gate, which
 * in a JavaScript loop (Math.exp, one at a time) cost 9% of a hidden-512 prefill (four
 * float32 lanes at a time: build-kernels.ts, `$exp_all`, within 2 ulp), and the normaliser of
 * a token's log-probability over the vocabulary, 0.5 ms a decode step in JavaScript (two
 * float64 lanes: `sumexp`).
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
  workspace.kernels.swiglu(gp + 4 * gOff, up_ + 4 * uOff, op, T, I, ld);
  const result = workspace.f32(op, T * I);
  if (out === undefined) return result.slice();
  out.set(result);
  return out;
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
