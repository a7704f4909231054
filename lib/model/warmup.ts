// LoadOptions.warmup: what a model's first request would build, built at load instead. On CUDA
// the first prompt and the first decode steps of a process pay for cuBLAS's handle and plans,
// kernels that the driver loads on first use, attention set-up and, compiled, the capture of the
// decode step's CUDA graph. A one-shot `qwen3 generate` paid all of it before its first token.
import type { NativeModel, NativeStepRequest } from '../native.js';

/** The warm-up prompt's length: as long as a prefill call gets (generate's chunk). */
const WARMUP_PROMPT = 512;
/** Decode steps of the warm-up: one chained call, as generation on CUDA makes them. */
const WARMUP_STEPS = 16;

/**
 * A prompt of up to 512 tokens and a chained call of greedy decode steps; then an 8-token prompt
 * (short prompts take other kernels than long ones) and one sampled step (the top-k and top-p
 * kernels); then the cache emptied. Compiled, the cache keeps its buffers, so the decode graph
 * captured here (for the prompt's capacity bucket) serves the first request that fits them;
 * eager, they are freed.
 */
export async function warmUp(handle: NativeModel, contextLength: number, vocab: number, compiled: boolean): Promise<void> {
  const promptLength = Math.min(WARMUP_PROMPT, contextLength - WARMUP_STEPS - 1);
  if (promptLength < 1) return;
  const greedy = { temperature: 0, topK: 0, topP: 1, uniforms: null } as const;
  const ids = Int32Array.from({ length: promptLength }, (_, i) => i % vocab);
  const prompt: NativeStepRequest = { ids, batch: 1, seq: promptLength, logits: 0, ...greedy };
  const { next } = await handle.prefill(prompt);
  await handle.decodeSteps({ ids: next, batch: 1, seq: 1, logits: 0, steps: WARMUP_STEPS, stopId: -1, ...greedy });
  handle.resetCache(false);
  const shortLength = Math.min(8, promptLength);
  const short = await handle.prefill({ ids: ids.subarray(0, shortLength), batch: 1, seq: shortLength, logits: 0, ...greedy });
  const sampled = { temperature: 1, topK: 50, topP: 0.9, uniforms: Float64Array.of(0.5) };
  await handle.decode({ ids: short.next, batch: 1, seq: 1, logits: 0, ...sampled });
  handle.resetCache(!compiled);
}
