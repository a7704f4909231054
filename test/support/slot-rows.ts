// Native slot-step requests from rows written out plainly, for the tests of slot steps.
import type { NativeSlotStepRequest } from '../../lib/native.js';

export interface Sampling {
  temperature: number;
  topK: number;
  topP: number;
}
export const GREEDY: Sampling = { temperature: 0, topK: 0, topP: 1 };

export interface Row {
  slot: number;
  start: number;
  ids: number[];
  sampling?: Sampling;
  u?: number;
}

/** The native request for `rows` (greedy unless a row says otherwise), every row's logits asked for. */
export function slotRequest(rows: Row[], extra: Partial<NativeSlotStepRequest> = {}): NativeSlotStepRequest {
  const offsets = [0];
  for (const r of rows) offsets.push(offsets.at(-1)! + r.ids.length);
  return {
    slots: Int32Array.from(rows, (r) => r.slot),
    starts: Int32Array.from(rows, (r) => r.start),
    offsets: Int32Array.from(offsets),
    ids: Int32Array.from(rows.flatMap((r) => r.ids)),
    temperature: Float64Array.from(rows, (r) => (r.sampling ?? GREEDY).temperature),
    topK: Int32Array.from(rows, (r) => (r.sampling ?? GREEDY).topK),
    topP: Float64Array.from(rows, (r) => (r.sampling ?? GREEDY).topP),
    uniforms: Float64Array.from(rows, (r) => r.u ?? 0),
    topLogprobs: -1,
    logits: true,
    ...extra,
  };
}
