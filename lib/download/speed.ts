// The low-speed limit of a download, after curl's --speed-limit / --speed-time: a body that
// arrives at less than `limit` bytes per second, averaged over the last `seconds`, is given up
// (the part file is kept, so the next run resumes). Without it a server that trickles a byte
// every half second keeps a download alive for ever: every chunk resets the idle timeout.

/** Default lowSpeedLimit: bytes per second. */
export const LOW_SPEED_LIMIT = 1024;
/** Default lowSpeedTime: seconds over which the speed is averaged. */
export const LOW_SPEED_TIME = 60;

export interface SpeedWatch {
  /** The error `onSlow` returned, once the transfer was found too slow. */
  readonly error: Error | undefined;
  stop(): void;
}

/**
 * Samples `received()` a few times per window and calls `onSlow` (once) when the bytes received
 * over the last `seconds` fall below `limit * seconds`. The first verdict comes one whole window
 * after the start. `limit` 0 turns the watch off.
 */
export function watchSpeed(limit: number, seconds: number, received: () => number, onSlow: (rate: number) => Error): SpeedWatch {
  let error: Error | undefined;
  const windowMs = seconds * 1000;
  const samples = [{ t: performance.now(), bytes: received() }];
  const timer = limit === 0
    ? undefined
    : setInterval(() => {
      const now = performance.now();
      const bytes = received();
      samples.push({ t: now, bytes });
      // Keep one sample at or before the start of the window.
      while (samples.length > 2 && samples[1]!.t <= now - windowMs) samples.shift();
      const first = samples[0]!;
      if (now - first.t < windowMs) return;
      const rate = (bytes - first.bytes) / ((now - first.t) / 1000);
      if (rate >= limit) return;
      clearInterval(timer);
      error = onSlow(rate);
    }, Math.max(10, Math.min(1000, windowMs / 4)));
  timer?.unref();
  return {
    get error() {
      return error;
    },
    stop: () => clearInterval(timer),
  };
}
