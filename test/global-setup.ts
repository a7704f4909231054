// Runs once before the suite: makes sure the addon is built and the parity fixtures exist
// (random-weight checkpoints in the book's layout and Hugging Face folders, with the PyTorch and
// transformers reference outputs, and chat templates rendered by transformers), made by the
// project's Python; `npm test` installs what that Python needs first (scripts/dev/setup.js).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { projectPython } from '../lib/addon/python.js';

export default function setup(): void {
  const root = join(__dirname, '..');
  if (!existsSync(join(root, 'build', 'Release', 'qwen3_torch.node'))) {
    throw new Error('The native addon is not built: run `npm test`, or `npm run build` before `npx vitest`.');
  }
  for (const script of ['make_fixtures.py', 'make_hf_fixtures.py', 'make_chat_template_fixtures.py']) {
    execFileSync(projectPython(root), [join(root, 'scripts', 'python', script), '--out', join(root, 'test', '.fixtures')], { stdio: 'inherit' });
  }
}
