// The seeded draws that pick sampled tokens: the library's generation and the batch scheduler
// use the same generator, so one seed gives one sequence of tokens through either.

/** mulberry32: a small seeded PRNG; returns a function that draws the next n uniforms in [0, 1). */
export function seededUniforms(seed: number): (n: number) => Float64Array {
  let state = seed >>> 0;
  const next = () => {
    state = (state + 0x6d2b79f5) >>> 0;
    let t = state;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  return (n) => Float64Array.from({ length: n }, next);
}
