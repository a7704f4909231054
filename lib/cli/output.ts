// Standard output and Ctrl-C as the commands see them. A reader that goes away (`qwen3 generate
// ... | head -c5`) is a normal end: stdout's EPIPE closes the output quietly and stops whatever
// was producing it, instead of surfacing as an unhandled 'error' event. Ctrl-C stops the work in
// progress, and the command then exits with 130, the shell's code for an interrupt.

/** Exit code of a command stopped by SIGINT (128 + 2), as shells report it. */
export const EXIT_INTERRUPTED = 130;

const closed = new AbortController();
let watching = false;

/**
 * Watches stdout and stderr for write errors; call once before any command writes. A closed
 * stdout aborts `outputClosed()`; any other stdout error is reported once and fails the run.
 * stderr errors are dropped, since there is nowhere left to report them.
 */
export function watchOutput(): void {
  if (watching) return;
  watching = true;
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (closed.signal.aborted) return;
    closed.abort();
    if (err.code === 'EPIPE') return;
    process.stderr.write(`qwen3: cannot write to standard output: ${err.message}\n`);
    process.exitCode = 1;
  });
  process.stderr.on('error', () => {});
}

/** Fires once standard output can no longer be written (the reader went away). */
export function outputClosed(): AbortSignal {
  return closed.signal;
}

/** Writes to stdout unless it has closed (then the text has no reader and is dropped). */
export function write(text: string): void {
  if (!closed.signal.aborted) process.stdout.write(text);
}

/**
 * Turns SIGINT into an AbortSignal while a command works (the default would kill the process
 * mid-step). `interrupted` reads whether it fired; `dispose` gives SIGINT back.
 */
export function catchInterrupt(): { signal: AbortSignal; readonly interrupted: boolean; dispose(): void } {
  const abort = new AbortController();
  const onSigint = () => abort.abort();
  process.on('SIGINT', onSigint);
  return {
    signal: abort.signal,
    get interrupted() {
      return abort.signal.aborted;
    },
    dispose: () => process.off('SIGINT', onSigint),
  };
}
