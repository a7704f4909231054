// The progress bars that downloads draw on stderr: redrawn in place on a terminal, and a line
// every few seconds when progress was asked for without one (a log file, CI).
import { SingleBar } from 'cli-progress';

/** Sizes as people read them: "602 MiB", "3.5 MiB", "16.4 GiB". */
export function formatBytes(bytes: number): string {
  if (bytes >= 10 * 2 ** 30) return `${(bytes / 2 ** 30).toFixed(1)} GiB`;
  return `${(bytes / 2 ** 20).toFixed(bytes >= 100 * 2 ** 20 ? 0 : 1)} MiB`;
}

/** A bar whose line is whatever `line(value, total)` says; start it with `bar.start(total, value)`. */
export function stderrBar(line: (value: number, total: number) => string): SingleBar {
  return new SingleBar({
    stream: process.stderr,
    format: (_options, params) => line(params.value, params.total),
    noTTYOutput: true,
    notTTYSchedule: 5000,
    // Without a TTY every redraw already ends its line; a completion newline would add a blank one.
    clearOnComplete: !process.stderr.isTTY,
    hideCursor: false,
    gracefulExit: false,
  });
}
