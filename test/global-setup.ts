// Runs once before the suite: makes sure the addon is built and the parity fixtures exist
// (random-weight checkpoints in the book's layout and Hugging Face folders, with the PyTorch and
// transformers reference outputs, and chat templates rendered by transformers, made by Python).
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

export default function setup(): void {
  const root = join(__dirname, '..');
  if (!existsSync(join(root, 'build', 'Release', 'qwen3_torch.node'))) {
    throw new Error('The native addon is not built: run `npm run build` first (needs `pip install torch`).');
  }
  for (const script of ['make_fixtures.py', 'make_hf_fixtures.py', 'make_chat_template_fixtures.py']) {
    execFileSync('python3', [join(root, 'scripts', script), '--out', join(root, 'test', '.fixtures')], { stdio: 'inherit' });
  }
}
