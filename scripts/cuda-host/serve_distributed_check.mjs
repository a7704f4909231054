#!/usr/bin/env node
// `qwen3 serve --distributed` over NCCL: two processes, one GPU each, started the way torchrun
// starts them, against `qwen3 serve` on one GPU, both with the same random weights (float32, so
// that the split model's greedy tokens must equal one GPU's). Checks that rank 0 answers what one
// GPU answers, alone and with several requests batched together, and that both ranks exit 0
// after SIGTERM to rank 0. Prints one JSON report; exits 1 when a check fails.
//   node scripts/cuda-host/serve_distributed_check.mjs [--size 0.6B] [--requests 8] [--max-tokens 24] [--device cuda|cpu]
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { parseArgs } from 'node:util';
import OpenAI from 'openai';

const { values } = parseArgs({
  options: {
    size: { type: 'string', default: '0.6B' },
    requests: { type: 'string', default: '8' },
    'max-tokens': { type: 'string', default: '24' },
    'master-port': { type: 'string', default: '29611' },
    device: { type: 'string', default: 'cuda' },
  },
});
const CLI = new URL('../../dist/cli.js', import.meta.url).pathname;
const common = ['serve', '--random-weights', '7', '--size', values.size, '--dtype', 'float32', '--port', '0', '--served-model-name', 'm'];
const prompts = Array.from({ length: Number(values.requests) }, (_, i) => Array.from({ length: 5 + 3 * i }, (_, j) => (i * 7919 + j * 104729 + 11) % 150000));
const report = { size: values.size, requests: prompts.length };
let failed = false;

// Starts a server process; resolves with its URL once it listens.
async function start(args, env = {}) {
  const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, QWEN3_API_KEY: '', ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (err += d));
  const exit = once(child, 'exit');
  if (args.includes('--distributed') && env.RANK !== '0') return { child, exit, log: () => err };
  while (!/Listening on (\S+)/.test(out)) {
    if (child.exitCode !== null) throw new Error(`server exited ${child.exitCode}: ${err}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return { child, exit, url: out.match(/Listening on (\S+)/)[1], log: () => err };
}

// Every prompt one at a time, then all of them at once (batched by the server's scheduler).
async function ask(url) {
  const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none' });
  const one = (prompt) => client.completions.create({ model: 'm', prompt, max_tokens: Number(values['max-tokens']), temperature: 0 }).then((r) => r.choices[0].text);
  const alone = [];
  for (const p of prompts) alone.push(await one(p));
  const t0 = performance.now();
  const together = await Promise.all(prompts.map(one));
  return { alone, together, togetherSeconds: (performance.now() - t0) / 1000 };
}

const single = await start([...common, '--device', values.device === 'cuda' ? 'cuda:0' : values.device]);
const want = await ask(single.url);
single.child.kill('SIGTERM');
await single.exit;
report.singleTogetherSeconds = want.togetherSeconds;

const env = (rank) => ({ RANK: String(rank), LOCAL_RANK: String(rank), WORLD_SIZE: '2', MASTER_ADDR: '127.0.0.1', MASTER_PORT: values['master-port'] });
const follower = await start([...common, '--device', values.device, '--distributed'], env(1));
const lead = await start([...common, '--device', values.device, '--distributed'], env(0));
try {
  const got = await ask(lead.url);
  report.splitTogetherSeconds = got.togetherSeconds;
  report.sameAlone = JSON.stringify(got.alone) === JSON.stringify(want.alone);
  report.sameTogether = JSON.stringify(got.together) === JSON.stringify(want.together);
  report.togetherSameAsAlone = JSON.stringify(got.together) === JSON.stringify(got.alone);
  failed ||= !report.sameAlone || !report.sameTogether;
  lead.child.kill('SIGTERM');
  const [leadCode] = await lead.exit;
  const [followerCode] = await follower.exit;
  report.exitCodes = [leadCode, followerCode];
  failed ||= leadCode !== 0 || followerCode !== 0;
  if (failed) report.logs = { lead: lead.log().slice(-2000), follower: follower.log().slice(-2000) };
} finally {
  lead.child.kill('SIGKILL');
  follower.child.kill('SIGKILL');
}
console.log(JSON.stringify(report, null, 2));
process.exitCode = failed ? 1 : 0;
