/** What every golden parity run must show, whichever backend or kernels ran it. */
import { expect } from 'vitest';
import type { ParityReport } from '../../src/inspect/parity.js';

export function expectGoldenPass(report: ParityReport, model: string): void {
  expect(report.failures).toEqual([]);
  expect(report.pass).toBe(true);
  for (const kind of ['logits', 'embeddings', 'layer_out', 'final_norm', 'step_logits', 'generated_ids']) {
    expect(report.checked).toContain(kind);
  }
  if (model.startsWith('mixtral')) {
    expect(report.checked).toEqual(expect.arrayContaining(['router_logits', 'expert_choices']));
    expect(report.prompts.every((p) => p.expert_choices_equal)).toBe(true);
  }
  expect(report.prompts.every((p) => p.generated_ids_equal)).toBe(true);
  // The random-weight models stay far inside 5e-5 (observed noise between float32 implementations ≤ 1e-5).
  if (!model.endsWith('-demo')) expect(report.max_abs_diff.logits).toBeLessThan(5e-5);
}
