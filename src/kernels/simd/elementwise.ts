/**
 * Elementwise kernels that are worth wasm: SwiGLU's gate needs an exp per element, which
 * in a JavaScript loop (Math.exp, one at a time) cost 9% of a hidden-512 prefill; the
 * kernel does four lanes at a time (build-kernels.ts, `$exp_all`: float32, within 2 ulp).
 */
import { Workspace } from './workspace.js';

const workspace = new Workspace();

/**
 * silu(gate) ⊙ up, row by row.
 * @param gate rows of `I` floats at stride `ld` from `gOff`; `up` likewise from `uOff`
 *   (ld = I for two separate arrays; ld = 2I with uOff = I for a fused gate|up product)
 * @returns [T, I]
 */
export function swigluKernel(gate: Float32Array, up: Float32Array, T: number, I: number, gOff: number, uOff: number,
  ld = I): Float32Array {
  workspace.reset();
  const same = gate === up;
  const n = T * ld;
  const gp = workspace.alloc(4 * n);
  const up_ = same ? gp : workspace.alloc(4 * n);
  const out = workspace.alloc(4 * T * I);
  workspace.f32(gp, n).set(gate.subarray(0, n));
  if (!same) workspace.f32(up_, n).set(up.subarray(0, n));
  workspace.kernels.swiglu(gp + 4 * gOff, up_ + 4 * uOff, out, T, I, ld);
  return workspace.f32(out, T * I).slice();
}
