// What a Hub download shows on stderr: one bar for all the files this call fetches
// ("Qwen/Qwen3-8B: 42% (6.9 GiB / 16.4 GiB) model-00002-of-00005.safetensors"), a line when
// another process holds a file, and a line when the cached snapshot stands in for the Hub.
// Shown on a terminal only, unless asked for.
import type { SingleBar } from 'cli-progress';
import type { HubProgress } from '../hub/model.js';
import { formatBytes, stderrBar } from '../download/progress-bar.js';

export interface HubProgressView {
  onProgress: (progress: HubProgress) => void;
  /** Ends the bar; call once the download has ended, either way. */
  stop(): void;
}

export function hubProgressView(show: boolean = Boolean(process.stderr.isTTY)): HubProgressView {
  let bar: SingleBar | undefined;
  let file = '';
  const line = (text: string) => {
    bar?.stop();
    bar = undefined;
    process.stderr.write(`${text}\n`);
  };
  return {
    onProgress: (p) => {
      if (!show) return;
      if (p.type === 'waiting') return line(`${p.repoId}: waiting for another process that is downloading ${p.file} into the cache`);
      if (p.type === 'cached') return line(`${p.repoId}: ${p.reason}; using the cached snapshot`);
      file = p.file;
      if (!bar) {
        bar = stderrBar((value, total) => `${p.repoId}: ${Math.floor((value / Math.max(total, 1)) * 100)}% (${formatBytes(value)} / ${formatBytes(total)}) ${file}`);
        bar.start(p.totalBytes, p.bytes);
        return;
      }
      if (bar.getTotal() !== p.totalBytes) bar.setTotal(p.totalBytes);
      bar.update(p.bytes);
    },
    stop: () => {
      bar?.stop();
      bar = undefined;
    },
  };
}
