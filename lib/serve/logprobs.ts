// Log-probabilities from a step's last-position logits: log-softmax in float64, the chosen token's
// value and the `top` most likely tokens, found in one pass without sorting the vocabulary.
import type { TopLogprob } from './completer.js';

export function tokenLogprobs(logits: Float32Array, chosen: number, top: number): { logprob: number; top: TopLogprob[] } {
  let max = -Infinity;
  for (let i = 0; i < logits.length; i++) if (logits[i]! > max) max = logits[i]!;
  let sum = 0;
  for (let i = 0; i < logits.length; i++) sum += Math.exp(logits[i]! - max);
  const logZ = max + Math.log(sum);
  // The best `top` so far, most likely first; ties keep the lower id first, as a stable sort would.
  const best: TopLogprob[] = [];
  if (top > 0) {
    for (let i = 0; i < logits.length; i++) {
      const value = logits[i]!;
      if (best.length === top && value <= best[top - 1]!.logprob) continue;
      let at = best.length;
      while (at > 0 && best[at - 1]!.logprob < value) at--;
      best.splice(at, 0, { id: i, logprob: value });
      if (best.length > top) best.pop();
    }
  }
  return {
    logprob: logits[chosen]! - logZ,
    top: best.map((t) => ({ id: t.id, logprob: t.logprob - logZ })),
  };
}
