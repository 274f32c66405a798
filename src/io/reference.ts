/**
 * Reference files (schema `mistral-golden-ref/1`): a JSON of prompts and expected
 * generations, plus a safetensors file of float32 tensors next to it. docs/parity.md documents every field.
 */
import * as path from 'node:path';
import { CheckpointError } from './errors.js';
import { readJsonFile } from './files.js';
import { SafetensorsFile } from './safetensors.js';

export const REFERENCE_SCHEMA = 'mistral-golden-ref/1';

export interface ReferencePrompt {
  readonly name: string;
  readonly input_ids: number[];
  readonly tensors: {
    readonly logits: string;
    readonly embeddings?: string;
    readonly layer_out?: string[];
    readonly final_norm?: string;
    readonly router_logits?: string[];
    readonly debug_layer0?: Record<string, string>;
  };
  readonly greedy?: {
    readonly max_new_tokens: number;
    readonly generated_ids: number[];
    readonly step_logits: string;
  };
}

export interface RefTensor {
  readonly data: Float32Array;
  readonly shape: readonly number[];
  /** Tensor name and the safetensors file holding it, for messages. */
  readonly name: string;
  readonly file: string;
}

export class Reference {
  private constructor(
    readonly file: string,
    readonly json: Record<string, unknown>,
    readonly prompts: readonly ReferencePrompt[],
    private readonly tensors: SafetensorsFile,
  ) {}

  /** Opens `refs/NAME.json`; follows `same_outputs_as` to the JSON that holds the prompts. */
  static open(file: string): Reference {
    const json = readObject(file);
    if (json.schema !== REFERENCE_SCHEMA) {
      throw new CheckpointError(file, `schema is ${JSON.stringify(json.schema)}, expected ${JSON.stringify(REFERENCE_SCHEMA)}`);
    }
    let promptsFrom = json;
    if (!Array.isArray(json.prompts) && typeof json.same_outputs_as === 'string') {
      promptsFrom = readObject(path.join(path.dirname(file), `${json.same_outputs_as}.json`));
    }
    const prompts = promptsFrom.prompts;
    if (!Array.isArray(prompts) || prompts.length === 0) throw new CheckpointError(file, 'no "prompts" list');
    prompts.forEach((p: ReferencePrompt, i) => {
      if (!Array.isArray(p?.input_ids) || !p.input_ids.every(Number.isInteger) || typeof p.tensors?.logits !== 'string') {
        throw new CheckpointError(file, `prompts[${i}] needs integer "input_ids" and "tensors.logits"`);
      }
    });
    if (typeof json.tensors_file !== 'string') throw new CheckpointError(file, 'no "tensors_file"');
    const tensors = SafetensorsFile.open(path.join(path.dirname(file), json.tensors_file));
    return new Reference(file, json, prompts as ReferencePrompt[], tensors);
  }

  get modelName(): string {
    return typeof this.json.model === 'string' ? this.json.model : path.basename(this.file, '.json');
  }

  /**
   * A reference tensor. Non-finite values are bad input: an Inf would make the allowance
   * atol + rtol · max|ref| infinite and pass any logits.
   */
  tensor(name: string): RefTensor {
    const data = this.tensors.readFloat32(name);
    for (let i = 0; i < data.length; i++) {
      if (!Number.isFinite(data[i]!)) {
        throw new CheckpointError(this.tensors.path, `reference tensor holds ${data[i]} at element ${i}; reference values must be finite`, name);
      }
    }
    return { data, shape: this.tensors.info(name).shape, name, file: this.tensors.path };
  }

  close(): void {
    this.tensors.close();
  }
}

function readObject(file: string): Record<string, unknown> {
  const json = readJsonFile(file);
  if (typeof json !== 'object' || json === null || Array.isArray(json)) throw new CheckpointError(file, 'expected a JSON object');
  return json as Record<string, unknown>;
}
