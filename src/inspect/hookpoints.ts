/**
 * The table of hook points: every name the forward pass calls `hookPoint` with, in the
 * order it calls them, with the shape of the tensor it passes. docs/hooks.md prints the
 * same table (a test keeps the two equal, and checks that a real forward fires exactly
 * these names for a dense and a Mixtral model).
 *
 * Shape letters: T tokens of this call; S keys this call scores: T without a cache, the
 * cached keys + T with a full cache, min(context, W) + T with a rolling cache (its filled
 * slots plus the new keys); hidden, heads, kvHeads, headDim, inter, experts, k (experts
 * per token) and vocab from the config.
 */
import type { ModelConfig } from '../model/config.js';
import { HookError } from '../model/hooks.js';

export interface HookPointInfo {
  /** Name with `{l}` for the layer index. */
  readonly name: string;
  readonly shape: string;
  /** `dense`: Mistral layers only; `moe`: Mixtral layers only. */
  readonly only?: 'dense' | 'moe';
  readonly dtype?: 'int32';
  /** Fires only when a hook is registered under its exact name (`*` does not ask for it). */
  readonly optIn?: true;
  readonly what: string;
}

export const HOOK_POINTS: readonly HookPointInfo[] = [
  { name: 'hook_embed', shape: '[T, hidden]', what: 'token embeddings (embed_tokens rows)' },
  { name: 'blocks.{l}.hook_resid_pre', shape: '[T, hidden]', what: 'residual stream entering layer l' },
  { name: 'blocks.{l}.ln1.hook_scale', shape: '[T, 1]', optIn: true, what: 'opt-in: the RMSNorm divisor sqrt(mean(x²) + eps) of each token' },
  { name: 'blocks.{l}.ln1.hook_normalized', shape: '[T, hidden]', what: 'input_layernorm output (RMSNorm, times its weight)' },
  { name: 'blocks.{l}.attn.hook_q', shape: '[T, heads, headDim]', what: 'q_proj output, before RoPE' },
  { name: 'blocks.{l}.attn.hook_k', shape: '[T, kvHeads, headDim]', what: 'k_proj output, before RoPE' },
  { name: 'blocks.{l}.attn.hook_v', shape: '[T, kvHeads, headDim]', what: 'v_proj output' },
  { name: 'blocks.{l}.attn.hook_rot_q', shape: '[T, heads, headDim]', what: 'queries after RoPE (rotate-half layout)' },
  { name: 'blocks.{l}.attn.hook_rot_k', shape: '[T, kvHeads, headDim]', what: 'keys after RoPE; these are what the cache stores' },
  { name: 'blocks.{l}.attn.hook_attn_scores', shape: '[heads, T, S]', what: 'q·k/√headDim plus the mask (−∞ where a key is not visible), before softmax' },
  { name: 'blocks.{l}.attn.hook_pattern', shape: '[heads, T, S]', what: 'softmax over keys: the attention pattern' },
  { name: 'blocks.{l}.attn.hook_z', shape: '[T, heads, headDim]', what: 'pattern · values per head, the input of o_proj' },
  { name: 'blocks.{l}.attn.hook_result', shape: '[T, heads, hidden]', optIn: true, what: 'opt-in: each head\'s output, z_h · W_O[h]; attn_out is their sum' },
  { name: 'blocks.{l}.hook_attn_out', shape: '[T, hidden]', what: 'o_proj output (before the residual add)' },
  { name: 'blocks.{l}.hook_resid_mid', shape: '[T, hidden]', what: 'resid_pre + attn_out' },
  { name: 'blocks.{l}.ln2.hook_scale', shape: '[T, 1]', optIn: true, what: 'opt-in: post_attention_layernorm divisor' },
  { name: 'blocks.{l}.ln2.hook_normalized', shape: '[T, hidden]', what: 'post_attention_layernorm output' },
  { name: 'blocks.{l}.mlp.hook_pre', shape: '[T, inter]', only: 'dense', what: 'gate_proj output, before SiLU' },
  { name: 'blocks.{l}.mlp.hook_pre_linear', shape: '[T, inter]', only: 'dense', what: 'up_proj output' },
  { name: 'blocks.{l}.mlp.hook_post', shape: '[T, inter]', only: 'dense', what: 'silu(gate) ⊙ up, the input of down_proj' },
  { name: 'blocks.{l}.moe.hook_router_logits', shape: '[T, experts]', only: 'moe', what: 'router (gate) logits, before softmax' },
  { name: 'blocks.{l}.moe.hook_expert_indices', shape: '[T, k]', only: 'moe', dtype: 'int32', what: 'chosen experts per token, best first; a replacement re-routes' },
  { name: 'blocks.{l}.moe.hook_expert_weights', shape: '[T, k]', only: 'moe', what: 'mixing weights of the chosen experts (sum to 1 per token)' },
  { name: 'blocks.{l}.hook_mlp_out', shape: '[T, hidden]', what: 'MLP (or mixture of experts) output' },
  { name: 'blocks.{l}.hook_resid_post', shape: '[T, hidden]', what: 'resid_mid + mlp_out: the layer output' },
  { name: 'ln_final.hook_scale', shape: '[T, 1]', optIn: true, what: 'opt-in: final RMSNorm divisor' },
  { name: 'ln_final.hook_normalized', shape: '[T, hidden]', what: 'final RMSNorm output' },
  { name: 'hook_logits', shape: '[T, vocab]', what: 'lm_head output ([1, vocab] with lastOnly)' },
];

/**
 * Every hook name a forward of a model with this config fires, in firing order; with
 * `optIn`, also the points that fire only when asked for by name.
 */
export function hookNames(config: ModelConfig, opts: { optIn?: boolean } = {}): string[] {
  const kind = config.numExperts === null ? 'dense' : 'moe';
  const points = HOOK_POINTS.filter((p) => (p.only === undefined || p.only === kind) && (opts.optIn === true || p.optIn === undefined));
  // HOOK_POINTS is in firing order: hook_embed, the layers' points, then the head's.
  const [embed, ...head] = points.filter((p) => !p.name.startsWith('blocks.')).map((p) => p.name);
  const perLayer = points.filter((p) => p.name.startsWith('blocks.')).map((p) => p.name);
  const names = [embed!];
  for (let l = 0; l < config.numLayers; l++) names.push(...perLayer.map((n) => n.replace('{l}', String(l))));
  names.push(...head);
  return names;
}

/** Throws a HookError naming the first name this model has no hook point for. */
export function checkHookNames(config: ModelConfig, names: Iterable<string>): void {
  const known = new Set(hookNames(config, { optIn: true }));
  for (const name of names) {
    if (name === '*' || known.has(name)) continue;
    const m = /^blocks\.(\d+)\.(.*)$/.exec(name);
    const template = m ? `blocks.{l}.${m[2]}` : name;
    const info = HOOK_POINTS.find((p) => p.name === template);
    let why: string;
    if (m && info && Number(m[1]) >= config.numLayers) why = `layer ${m[1]} does not exist (the model has ${config.numLayers} layers)`;
    else if (info?.only === 'moe') why = 'it exists only in Mixtral (mixture-of-experts) layers';
    else if (info?.only === 'dense') why = 'it exists only in dense layers; Mixtral layers have moe.hook_*';
    else why = 'no such hook point (see docs/hooks.md)';
    throw new HookError(`unknown hook ${JSON.stringify(name)}: ${why}`);
  }
}
