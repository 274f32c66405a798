import * as tf from '@tensorflow/tfjs-core';
import { useBackend } from '../src/kernels/backend.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { makeLinear, linear } from '../src/kernels/linear.js';
await useBackend('wasm');
const transposed = process.argv[2] === 'T';
const ck = openCheckpoint('/tmp/m7b1');
let t = performance.now();
const lap = (s: string) => { const n = performance.now(); console.log(s, ((n - t)/1000).toFixed(2), (process.memoryUsage().rss/2**30).toFixed(2)); t = n; };
const x = tf.randomNormal([4, 4096]) as tf.Tensor2D;
for (let rep = 0; rep < 3; rep++) {
  for (const name of ['model.layers.0.mlp.gate_proj.weight', 'model.layers.0.mlp.up_proj.weight']) {
    const f32 = ck.store.readFloat32(name); lap('read+convert');
    const l = makeLinear(f32, 14336, 4096, transposed); lap('makeLinear');
    const y = linear(x, l); y.dataSync(); lap('matmul');
    const y2 = linear(x, l); y2.dataSync(); lap('matmul2');
    tf.dispose([y, y2, l.weight]);
  }
}
console.log('maxRSS', (process.resourceUsage().maxRSS / 2**20).toFixed(2), 'GiB');
