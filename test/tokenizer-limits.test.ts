// Inputs that used to take the process down inside the `tokenizers` binding: a long whitespace
// run made Oniguruma give up and the binding abort (exit 134). Qwen3Tokenizer swaps the
// pre-tokenizer's backtracking alternative for an equivalent one (lib/tokenizer/limits.ts); the
// ids must stay Python's wherever Python succeeds. The references come from
// scripts/python/tokenizer_whitespace_parity.py, which also checks the swap on the 1,200-string corpus.
import { execFileSync, spawnSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { Qwen3Tokenizer, defaultTokenizerFilePath } from '../lib/tokenizer.js';
import {
  BACKTRACKING_NEWLINE_RUN, LINEAR_NEWLINE_RUN, MAX_DECODED_LENGTH, MAX_TEXT_BYTES, MAX_WHITESPACE_RUN_UNKNOWN_PATTERN,
} from '../lib/tokenizer/limits.js';
import { InvalidOptionError } from '../lib/validate.js';
import { loadFixture as loadModelFixture } from './support/fixtures.js';

const ROOT = path.resolve(__dirname, '..');
const FIXTURE = path.join(ROOT, 'test', '.fixtures', 'tokenizer_whitespace_parity.json');
const SCRIPT = path.join(ROOT, 'scripts', 'python', 'tokenizer_whitespace_parity.py');
const FORMAT_VERSION = 1; // must match FORMAT_VERSION in the script
const CLI = path.join(ROOT, 'dist', 'cli.js');
const TEN_MILLION = 10_000_000;

interface Case { name: string; parts: [string, number][]; ids: number[] | null; linear_ids: number[] }
interface Fixture { meta: { format_version: number; tokenizer_sha256: string; new_pattern: string; corpus_checked: number }; cases: Case[] }

const build = (parts: [string, number][]) => parts.map(([s, n]) => s.repeat(n)).join('');

// (Re)generated when missing or made from another tokenizer.json or pattern; takes a minute or two.
function loadFixture(): Fixture {
  const sha = createHash('sha256').update(readFileSync(defaultTokenizerFilePath())).digest('hex');
  const read = (): Fixture | undefined => (existsSync(FIXTURE) ? JSON.parse(readFileSync(FIXTURE, 'utf8')) : undefined);
  let fixture = read();
  const stale = (f: Fixture | undefined) =>
    f?.meta.format_version !== FORMAT_VERSION || f.meta.tokenizer_sha256 !== sha || f.meta.new_pattern !== LINEAR_NEWLINE_RUN;
  if (stale(fixture)) {
    execFileSync(projectPython(), [SCRIPT, FIXTURE, '--tokenizer', defaultTokenizerFilePath(), '--old', BACKTRACKING_NEWLINE_RUN, '--new', LINEAR_NEWLINE_RUN], {
      stdio: ['ignore', 'inherit', 'pipe'], // Python prints a panic backtrace for the cases it cannot do
      maxBuffer: 64 * 2 ** 20,
    });
    fixture = read()!;
  }
  return fixture;
}

let fixture: Fixture;
let tok: Qwen3Tokenizer;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'qwen3-toklim-'));

beforeAll(async () => {
  fixture = loadFixture();
  tok = await Qwen3Tokenizer.load();
}, 600_000);
afterAll(() => rmSync(scratch, { recursive: true, force: true }));

describe('long whitespace runs', { timeout: 300_000 }, () => {
  it('the rewritten pattern was checked against the original in Python, on the corpus and every case', () => {
    expect(fixture.meta.corpus_checked).toBe(1200);
    expect(fixture.cases.length).toBe(20);
    // Python itself gives up on exactly the ten-million runs; everything shorter it encodes.
    expect(fixture.cases.filter((c) => c.ids === null).map((c) => c.name)).toEqual(['10M spaces', 'x, 10M spaces, x']);
  });

  it('give exactly Python\'s ids wherever Python succeeds (100k to 3M characters, mixed, next to words, CJK, emoji, specials)', async () => {
    for (const c of fixture.cases.filter((x) => x.ids !== null)) {
      expect(await tok.encode(build(c.parts)), c.name).toEqual(c.ids);
    }
  });

  it('10M spaces and "x" + 10M spaces + "x" encode in this process, to the ids of the same pattern in Python', async () => {
    for (const name of ['10M spaces', 'x, 10M spaces, x']) {
      const c = fixture.cases.find((x) => x.name === name)!;
      const ids = await tok.encode(build(c.parts));
      expect(ids, name).toEqual(c.linear_ids);
      expect(tok.decode(ids), name).toBe(build(c.parts));
    }
    expect(fixture.cases.find((x) => x.name === '10M spaces')!.linear_ids).toHaveLength(TEN_MILLION / 128); // 128-space tokens
  });

  it('control: with the original pattern the binding aborts the process on 10M spaces (run in a child)', () => {
    const script = `
      const { Tokenizer } = require('tokenizers');
      const t = Tokenizer.fromString(require('fs').readFileSync(${JSON.stringify(defaultTokenizerFilePath())}, 'utf8'));
      t.encode(' '.repeat(${TEN_MILLION}), null, { addSpecialTokens: false }).then((e) => console.log('encoded', e.getIds().length));`;
    const r = spawnSync(process.execPath, ['-e', script], { cwd: ROOT, encoding: 'utf8', maxBuffer: 64 * 2 ** 20 });
    expect(r.stdout).not.toContain('encoded');
    expect(r.stderr).toContain('retry-limit-in-match');
    expect(r.status === 134 || r.signal === 'SIGABRT').toBe(true);
  });

  it('the CLI survives a piped chat message of "x" + 10M spaces + "x"', () => {
    const fx = loadModelFixture('tiny-gqa4');
    const r = spawnSync(process.execPath, [CLI, 'chat', '--model', fx.modelPath, '--config', fx.configPath, '--device', 'cpu', '--max-new-tokens', '4'], {
      input: `x${' '.repeat(TEN_MILLION)}x\n`,
      encoding: 'utf8',
      maxBuffer: 64 * 2 ** 20,
    });
    expect(r.signal).toBeNull();
    expect([0, 1]).toContain(r.status);
    expect(r.stderr).not.toContain('panicked');
  });
});

describe('size limits', () => {
  it('a text over MAX_TEXT_BYTES of UTF-8 is refused before the binding sees it', async () => {
    await expect(tok.encode('a'.repeat(MAX_TEXT_BYTES + 1))).rejects.toThrow(
      `Expected text of at most ${MAX_TEXT_BYTES} bytes (UTF-8) for text but received ${MAX_TEXT_BYTES + 1} bytes`,
    );
    // Counted in bytes, not characters: a third as many euro signs is already too much.
    const euros = Math.floor(MAX_TEXT_BYTES / 3) + 1;
    const err = await tok.encode('€'.repeat(euros)).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InvalidOptionError);
    expect((err as Error).message).toContain(`but received ${euros * 3} bytes`);
    expect(await tok.encode('Explain large language models.')).toEqual([840, 20772, 3460, 4128, 4119, 13]);
  });

  it('a tokenizer file whose pattern is not Qwen\'s keeps its pattern and refuses very long whitespace runs', async () => {
    const json = JSON.parse(readFileSync(defaultTokenizerFilePath(), 'utf8'));
    const split = json.pre_tokenizer.pretokenizers[0].pattern;
    split.Regex = split.Regex.replace(BACKTRACKING_NEWLINE_RUN, '|');
    const file = path.join(scratch, 'other-pattern.json');
    writeFileSync(file, JSON.stringify(json));
    const other = await Qwen3Tokenizer.load({ tokenizerFilePath: file });
    expect(await other.encode(`a${' '.repeat(1000)}b`)).toEqual(await tok.encode(`a${' '.repeat(1000)}b`));
    const run = MAX_WHITESPACE_RUN_UNKNOWN_PATTERN + 1;
    await expect(other.encode(`ab${'\t'.repeat(run)}c`)).rejects.toThrow(
      `Expected whitespace runs of at most ${MAX_WHITESPACE_RUN_UNKNOWN_PATTERN} characters with this tokenizer file for text but received a run of ${run} at offset 2`,
    );
  });

  it('decode refuses ids whose text would be longer than a JavaScript string, instead of failing in the binding', () => {
    const id = 56940; // 128 spaces
    const count = Math.floor(MAX_DECODED_LENGTH / 128) + 1;
    const ids = new Array<number>(count).fill(id);
    expect(() => tok.decode(ids)).toThrow(
      `Expected ids that decode to at most ${MAX_DECODED_LENGTH} characters (the longest string JavaScript holds) for ids but received ${count} tokens of ${count * 128} bytes`,
    );
    expect(tok.decode([id, id])).toBe(' '.repeat(256));
  });
});
