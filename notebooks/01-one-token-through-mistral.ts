// # One prompt through Mistral, layer by layer
//
// A notebook in the "percent" format (`// %%` starts a cell): run it whole with
//
//     node --import tsx notebooks/01-one-token-through-mistral.ts
//
// or cell by cell in an editor that knows the format (VS Code's Jupyter extension with a
// TypeScript kernel, or Jupytext to turn it into an .ipynb). It needs only the bundled demo
// model, a 739k-parameter Mistral trained to add numbers, and runs in about a second.
//
// We compute the first decoder layer by hand from the paper's pieces (RMSNorm, RoPE,
// grouped-query attention with a sliding window, SwiGLU), check every step against the
// model's own forward pass, and then let the model finish the sum.

// %% Load the model and its tokenizer
import * as tf from '@tensorflow/tfjs-core';
import { generateSync } from '../src/generate/index.js';
import { runWithCache } from '../src/inspect/activations.js';
import { useBackend } from '../src/kernels/backend.js';
import { linear } from '../src/kernels/linear.js';
import { canAttend, maskBias } from '../src/model/mask.js';
import { rmsNorm } from '../src/model/rmsnorm.js';
import { applyRope, ropeTables } from '../src/model/rope.js';
import { disposeResult, Transformer } from '../src/model/transformer.js';
import { loadTokenizer } from '../src/tokenizer/index.js';

await useBackend('cpu'); // the readable JavaScript backend; 'wasm' is faster
const model = Transformer.load('models/mistral-demo');
const tokenizer = await loadTokenizer('models/mistral-demo');
const c = model.config;
console.log(`hidden ${c.hiddenSize}, ${c.numLayers} layers, ${c.numHeads} query heads sharing ${c.numKvHeads} key/value heads, ` +
  `head_dim ${c.headDim}, sliding window ${c.slidingWindow}`);

// Two sums in a row, as the model saw them in training (tokenizer.json matches the special
// tokens </s> and <s> in text). At 17 tokens the prompt is longer than the window (16),
// so the last token cannot see the first.
const text = '12+34=46</s><s>47+38=';
const ids = tokenizer.encode(text, { bos: true });
const pieces = ids.map((id) => tokenizer.idToPiece(id));
const T = ids.length;
console.log(`${T} tokens: ${pieces.join(' ')}`);

// tfjs frees tensors by hand. In a notebook the simplest discipline is a scope: every
// tensor created between startScope and endScope (last cell) is freed at endScope.
tf.engine().startScope();

// The model's own forward pass, with every intermediate of layer 0 kept for comparison.
const { result, cache } = runWithCache(model, ids, { names: (n) => n.startsWith('blocks.0.') || n === 'hook_embed' });
const same = (name: string, ours: tf.Tensor) => {
  const d = tf.tidy(() => tf.max(tf.abs(tf.sub(ours, cache.get(name)))).dataSync()[0]!);
  console.log(`  ${name.padEnd(28)} [${ours.shape.join(', ')}]  max |Δ| vs the model: ${d.toExponential(1)}`);
};

// %% Embedding: one row of a [vocab, hidden] table per token
const w = model.weights.layer(0);
const x = model.weights.embed(ids); // [tokens, hidden]
same('hook_embed', x);

// %% RMSNorm: scale each token's vector to unit root-mean-square, then by a learned weight
const normed = rmsNorm(x, w.inputNorm, c.rmsNormEps); // [tokens, hidden]
same('blocks.0.ln1.hook_normalized', normed);

// %% Queries, keys, values: three projections, split into heads
const q = tf.reshape(linear(normed, w.attn.q), [T, c.numHeads, c.headDim]); // [tokens, heads, headDim]
const k = tf.reshape(linear(normed, w.attn.k), [T, c.numKvHeads, c.headDim]); // [tokens, kvHeads, headDim]
const v = tf.reshape(linear(normed, w.attn.v), [T, c.numKvHeads, c.headDim]);
same('blocks.0.attn.hook_q', q);

// %% RoPE: rotate each (x[p], x[p + d/2]) pair by an angle that grows with the position
const rope = ropeTables(ids.map((_, t) => t), c.headDim, c.ropeTheta);
const qRot = applyRope(q as tf.Tensor3D, rope);
const kRot = applyRope(k as tf.Tensor3D, rope);
same('blocks.0.attn.hook_rot_q', qRot);

// %% The sliding-window mask: query i sees key j iff i − W < j ≤ i
for (const i of [T - 3, T - 1]) {
  console.log(`  query ${i} (${pieces[i]}) sees: ${ids.map((_, j) => (canAttend(i, j, c.slidingWindow) ? pieces[j] : '·')).join(' ')}`);
}

// %% Grouped-query attention, one head at a time: head h reads key/value head ⌊h / group⌋
const group = c.numHeads / c.numKvHeads;
const bias = tf.tensor2d(maskBias(ids.map((_, t) => t), ids.map((_, t) => t), c.slidingWindow), [T, T]);
const heads: tf.Tensor[] = [];
const patterns: tf.Tensor[] = [];
for (let h = 0; h < c.numHeads; h++) {
  const kv = Math.floor(h / group);
  const qh = tf.squeeze(tf.slice(qRot, [0, h, 0], [T, 1, c.headDim]), [1]); // [tokens, headDim]
  const kh = tf.squeeze(tf.slice(kRot, [0, kv, 0], [T, 1, c.headDim]), [1]);
  const vh = tf.squeeze(tf.slice(v, [0, kv, 0], [T, 1, c.headDim]), [1]);
  const scores = tf.add(tf.div(tf.matMul(qh, kh, false, true), Math.sqrt(c.headDim)), bias); // [tokens, tokens]
  const pattern = tf.softmax(scores); // each row sums to 1 over the keys it may see
  patterns.push(pattern);
  heads.push(tf.matMul(pattern, vh)); // [tokens, headDim]
}
same('blocks.0.attn.hook_pattern', tf.stack(patterns)); // [heads, tokens, tokens]
const last = patterns[0]!.arraySync() as number[][];
console.log(`  head 0, last query "=" attends most to: ${last[T - 1]!.map((p, j) => [p, j] as const).sort((a, b) => b[0] - a[0]).slice(0, 3)
  .map(([p, j]) => `${pieces[j]}@${j} ${p.toFixed(2)}`).join(', ')}`);

// %% Output projection and the first residual connection
const z = tf.concat(heads, 1); // [tokens, heads·headDim]
const attnOut = linear(z as tf.Tensor2D, w.attn.o); // [tokens, hidden]
const mid = tf.add(x, attnOut) as tf.Tensor2D;
same('blocks.0.hook_resid_mid', mid);

// %% SwiGLU feed-forward: down( silu(gate(x)) ⊙ up(x) ), and the second residual
const n2 = rmsNorm(mid, w.postNorm, c.rmsNormEps);
const gate = linear(n2, w.mlp!.gate);
const ffn = linear(tf.mul(tf.mul(gate, tf.sigmoid(gate)), linear(n2, w.mlp!.up)) as tf.Tensor2D, w.mlp!.down);
const out = tf.add(mid, ffn) as tf.Tensor2D;
same('blocks.0.hook_resid_post', out);

// %% The other layers do the same; the last position's logits predict the next token
const probs = tf.softmax(tf.slice(result.logits, [T - 1, 0], [1, -1])).dataSync();
const top = Array.from(probs).map((p, id) => [p, id] as const).sort((a, b) => b[0] - a[0]).slice(0, 3);
console.log(`next token: ${top.map(([p, id]) => `"${tokenizer.idToPiece(id)}" ${p.toFixed(3)}`).join(', ')}`);

// %% Let the model finish the sum (greedy, with the KV cache)
const answer = generateSync(model, ids, { maxNewTokens: 4 }).map((t) => t.id);
console.log(`${text}${tokenizer.decode(answer)}`);

// %% Tidy up: end the scope (frees every tensor made in the cells above), then the rest
tf.engine().endScope();
cache.dispose();
disposeResult(result);
model.dispose();
console.log(`tensors left: ${tf.memory().numTensors}`);
