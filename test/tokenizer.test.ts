// Qwen3Tokenizer against the Python `tokenizers` package (the reference implementation) over
// a generated corpus, plus known ids, chat templates, EOS selection, streaming and errors.
import { execFileSync } from 'node:child_process';
import { createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { projectPython } from '../lib/addon/python.js';
import { Qwen3Tokenizer, SPECIAL_TOKENS, defaultTokenizerFilePath, formatChat } from '../lib/tokenizer.js';
import { InvalidOptionError } from '../lib/validate.js';

const ROOT = path.resolve(__dirname, '..');
const FIXTURE = path.join(ROOT, 'test', '.fixtures', 'tokenizer_parity.json');
const SCRIPT = path.join(ROOT, 'scripts', 'python', 'tokenizer_parity.py');
const FORMAT_VERSION = 1; // must match FORMAT_VERSION in scripts/python/tokenizer_parity.py

interface Case {
  text: string; nfc: boolean; ids: number[]; decoded: string;
  chat: number[]; chat_generation: number[]; chat_thinking: number[];
}
interface Fixture {
  meta: { format_version: number; tokenizer_sha256: string; count: number };
  cases: Case[];
  id_sequences: { ids: number[]; decoded: string }[];
}

// (Re)generate the reference file when it is missing or was made from another tokenizer.json.
function loadFixture(): Fixture {
  const tokenizerFile = defaultTokenizerFilePath();
  const sha = createHash('sha256').update(readFileSync(tokenizerFile)).digest('hex');
  const read = (): Fixture | undefined => (existsSync(FIXTURE) ? JSON.parse(readFileSync(FIXTURE, 'utf8')) : undefined);
  let fixture = read();
  if (fixture?.meta.format_version !== FORMAT_VERSION || fixture.meta.tokenizer_sha256 !== sha) {
    execFileSync(projectPython(), [SCRIPT, FIXTURE, '--tokenizer', tokenizerFile], { stdio: ['ignore', 'inherit', 'inherit'] });
    fixture = read()!;
  }
  return fixture;
}

const EXPLAIN = 'Explain large language models.';
const EXPLAIN_IDS = [840, 20772, 3460, 4128, 4119, 13];

let tok: Qwen3Tokenizer; // plain text by default
// Chat-template variants: user turn only / plus generation prompt / plus open think block.
let chatPlain: Qwen3Tokenizer;
let chatGeneration: Qwen3Tokenizer;
let chatThinking: Qwen3Tokenizer;
let fixture: Fixture;
const scratch = mkdtempSync(path.join(os.tmpdir(), 'qwen3-tok-'));
const load = Qwen3Tokenizer.load;

beforeAll(async () => {
  fixture = loadFixture();
  [tok, chatPlain, chatGeneration, chatThinking] = await Promise.all([
    load(),
    load({ applyChatTemplate: true }),
    load({ applyChatTemplate: true, addGenerationPrompt: true }),
    load({ applyChatTemplate: true, addGenerationPrompt: true, addThinking: true }),
  ]);
});
afterAll(() => {
  rmSync(scratch, { recursive: true, force: true });
});

describe('known values', () => {
  it('encodes the reference sentence and decodes it back', async () => {
    expect(await tok.encode(EXPLAIN)).toEqual(EXPLAIN_IDS);
    expect(tok.decode(EXPLAIN_IDS)).toBe(EXPLAIN);
    expect(tok.decode(Int32Array.from(EXPLAIN_IDS))).toBe(EXPLAIN);
  });

  it('maps every special token to its own single id, alone or inside text', async () => {
    expect(await tok.encode('<|endoftext|>')).toEqual([151643]);
    for (const [i, t] of SPECIAL_TOKENS.entries()) {
      expect(await tok.encode(t)).toEqual([151643 + i]);
      expect(tok.specialTokens.get(t)).toBe(151643 + i);
    }
    expect(tok.specialTokens.size).toBe(14);
    expect(await tok.encode('a<|im_end|>b<|endoftext|>')).toEqual([64, 151645, 65, 151643]);
    expect(tok.decode([64, 151645, 65, 151643])).toBe('a<|im_end|>b<|endoftext|>');
  });

  it('adds no BOS/EOS and reports vocabulary facts', async () => {
    expect(await tok.encode('')).toEqual([]);
    expect(tok.decode([])).toBe('');
    expect(tok.padTokenId).toBe(151643);
  });

  it('has 151,669 tokens and ends turns with <|im_end|> for the default (non-base) file', () => {
    expect(tok.vocabSize).toBe(151669);
    expect(tok.decode([151668])).toBe('</think>'); // the last id with a token
    expect(path.basename(tok.tokenizerFilePath)).toBe('tokenizer.json');
    expect(tok.eosTokenId).toBe(151645);
    expect(tok.specialTokens.get('<|im_end|>')).toBe(151645);
  });

  it('returns a Promise from encode()', async () => {
    const pending = tok.encode(EXPLAIN);
    expect(pending).toBeInstanceOf(Promise);
    expect(await pending).toEqual(EXPLAIN_IDS);
    expect('encodeAsync' in tok).toBe(false);
    expect('close' in tok).toBe(false);
  });
});

describe('parity with Python tokenizers', () => {
  it('has a large, varied reference corpus', () => {
    expect(fixture.cases.length).toBeGreaterThanOrEqual(1000);
    // The tokenizer NFC-normalizes, so decomposed input must be part of the corpus.
    expect(fixture.cases.filter((c) => !c.nfc).length).toBeGreaterThan(50);
  });

  it('encode() gives exactly the Python ids for every string', async () => {
    const got = await Promise.all(fixture.cases.map((c) => tok.encode(c.text)));
    const bad = fixture.cases.filter((c, i) => JSON.stringify(got[i]) !== JSON.stringify(c.ids));
    expect(bad.map((c) => c.text)).toEqual([]);
  });

  it('encode() gives the same ids one call at a time', async () => {
    const bad = [];
    for (const c of fixture.cases.slice(0, 200)) {
      if (JSON.stringify(await tok.encode(c.text)) !== JSON.stringify(c.ids)) bad.push(c.text);
    }
    expect(bad).toEqual([]);
  });

  it('decode(encode(s)) is s (NFC-normalized, as the tokenizer normalizes) and matches Python', () => {
    for (const c of fixture.cases) {
      const decoded = tok.decode(c.ids);
      expect(decoded, JSON.stringify(c.text)).toBe(c.decoded);
      expect(decoded).toBe(c.text.normalize('NFC'));
      if (c.nfc) expect(decoded).toBe(c.text);
    }
  });

  it('decodes broken byte sequences exactly like Python', () => {
    for (const s of fixture.id_sequences) expect(tok.decode(s.ids), JSON.stringify(s.ids)).toBe(s.decoded);
  });

  it('chat-wrapped encodings match for all three template variants', async () => {
    const mismatch = async (t: Qwen3Tokenizer, key: 'chat' | 'chat_generation' | 'chat_thinking') => {
      const got = await Promise.all(fixture.cases.map((c) => t.encode(c.text)));
      return fixture.cases.filter((c, i) => JSON.stringify(got[i]) !== JSON.stringify(c[key])).map((c) => c.text);
    };
    expect(await mismatch(chatPlain, 'chat')).toEqual([]);
    expect(await mismatch(chatGeneration, 'chat_generation')).toEqual([]);
    expect(await mismatch(chatThinking, 'chat_thinking')).toEqual([]);
  });
});

describe('chat template', () => {
  it('wraps a user message and opens the assistant turn with an empty think block', async () => {
    const t = chatGeneration;
    const expanded = `<|im_start|>user\n${EXPLAIN}<|im_end|>\n<|im_start|>assistant\n<think>\n\n</think>\n\n`;
    const ids = [151644, 872, 198, ...EXPLAIN_IDS, 151645, 198, 151644, 77091, 198, 151667, 271, 151668, 271];
    expect(await t.encode(EXPLAIN)).toEqual(ids);
    expect(await tok.encode(expanded)).toEqual(ids);
    expect(await t.encode(EXPLAIN, { chat: false })).toEqual(EXPLAIN_IDS);
    expect(await tok.encode(EXPLAIN, { chat: true })).toEqual(await tok.encode(`<|im_start|>user\n${EXPLAIN}<|im_end|>\n`));
    expect(await chatPlain.encode(EXPLAIN)).toEqual([151644, 872, 198, ...EXPLAIN_IDS, 151645, 198]);
    // A bare special token is not wrapped.
    expect(await t.encode('<|endoftext|>')).toEqual([151643]);
  });

  it('leaves the think block open when thinking is enabled', async () => {
    const t = chatThinking;
    const ids = await t.encode(EXPLAIN);
    expect(ids).toEqual([151644, 872, 198, ...EXPLAIN_IDS, 151645, 198, 151644, 77091, 198]);
    expect(t.decode(ids)).toBe(`<|im_start|>user\n${EXPLAIN}<|im_end|>\n<|im_start|>assistant\n`);
  });

  it('formatChat renders multi-turn conversations', async () => {
    const messages = [
      { role: 'system', content: 'Be brief.' },
      { role: 'user', content: 'Hi' },
      { role: 'assistant', content: 'Hello!' },
      { role: 'user', content: 'Bye' },
    ] as const;
    const turns = '<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n'
      + '<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\nBye<|im_end|>\n';
    expect(formatChat(messages)).toBe(turns);
    expect(formatChat(messages, { addGenerationPrompt: true })).toBe(`${turns}<|im_start|>assistant\n<think>\n\n</think>\n\n`);
    expect(formatChat(messages, { addGenerationPrompt: true, addThinking: true })).toBe(`${turns}<|im_start|>assistant\n`);
    const ids = await tok.encode(formatChat(messages, { addGenerationPrompt: true }));
    expect(ids.filter((id) => id === 151644)).toHaveLength(5);
    expect(ids.slice(-5)).toEqual([198, 151667, 271, 151668, 271]);
  });
});

describe('EOS and padding ids', () => {
  it('picks <|endoftext|> for base tokenizer files and <|im_end|> otherwise', async () => {
    const cases: [string, number][] = [
      ['tokenizer-base.json', 151643],
      ['tokenizer-reasoning.json', 151645],
      ['qwen3-base-reasoning.json', 151645],
      ['Qwen3-0.6B-Base.json', 151643],
      ['tokenizer.json', 151645],
    ];
    for (const [name, eos] of cases) {
      const file = path.join(scratch, name); // same content, only the name differs
      symlinkSync(defaultTokenizerFilePath(), file);
      const t = await Qwen3Tokenizer.load({ tokenizerFilePath: file });
      expect([name, t.eosTokenId]).toEqual([name, eos]);
      expect(t.padTokenId).toBe(151643);
    }
    expect(tok.eosTokenId).toBe(151645); // the bundled file is named tokenizer.json
  });
});

describe('stream decoder', () => {
  const texts = ['🫠🦩𝄞龘 rare characters', '👩🏽‍💻 coding 👨‍👩‍👧‍👦 family 🏳️‍🌈', '大型语言模型是什么？解释一下。', 'नमस्ते दुनिया 🇮🇳 مرحبا 🤖', '😀'.repeat(20)];

  it.each(texts)('never emits U+FFFD and reproduces decode(): %s', async (text) => {
    const ids = await tok.encode(text);
    const stream = tok.createStreamDecoder();
    const pieces = ids.map((id) => stream.push(id));
    pieces.push(stream.flush());
    for (const piece of pieces) expect(piece).not.toContain('\ufffd');
    expect(pieces.join('')).toBe(tok.decode(ids));
    expect(pieces.join('')).toBe(text);
  });

  it('holds back bytes of a character split across tokens', async () => {
    const ids = await tok.encode('🫠');
    expect(ids).toHaveLength(3); // a rare emoji is spelled with byte-level pieces
    const stream = tok.createStreamDecoder();
    expect(ids.slice(0, -1).map((id) => stream.push(id))).toEqual(ids.slice(0, -1).map(() => ''));
    expect(stream.push(ids.at(-1)!)).toBe('🫠');
    // An unfinished character at the very end becomes one U+FFFD on flush, as in decode().
    expect(stream.push(ids[0]!)).toBe('');
    expect(stream.flush()).toBe(tok.decode([ids[0]!]));
    expect(stream.flush()).toBe('');
  });

  it('matches decode() on random and broken id sequences', () => {
    for (const s of fixture.id_sequences) {
      const stream = tok.createStreamDecoder();
      const out = s.ids.map((id) => stream.push(id)).join('') + stream.flush();
      expect(out, JSON.stringify(s.ids)).toBe(s.decoded);
    }
  });
});

// Python's decode of id sequences, computed in one Python process.
function pythonDecode(sequences: number[][]): string[] {
  const program = [
    'import json, sys',
    'from tokenizers import Tokenizer',
    'tok = Tokenizer.from_file(sys.argv[1])',
    'seqs = json.load(sys.stdin)',
    'json.dump([tok.decode(s, skip_special_tokens=False) for s in seqs], sys.stdout)',
  ].join('\n');
  const out = execFileSync(projectPython(), ['-c', program, defaultTokenizerFilePath()], {
    input: JSON.stringify(sequences),
    encoding: 'utf8',
    maxBuffer: 64 << 20,
  });
  return JSON.parse(out);
}

describe('ids without a token (model embedding rows beyond the vocabulary)', () => {
  // Qwen3's embedding has 151,936 rows, the tokenizer 151,669 tokens.
  const FIRST_UNKNOWN = 151669;
  const LAST_ROW = 151935;
  let rng = 12345;
  const random = () => {
    rng = (rng * 1103515245 + 12345) % 2 ** 31; // fixed-seed LCG, reproducible runs
    return rng / 2 ** 31;
  };
  const unknownId = () => FIRST_UNKNOWN + Math.floor(random() * (LAST_ROW - FIRST_UNKNOWN + 1));

  it('decode to the empty string, as in Python', () => {
    expect(tok.decode([151700])).toBe('');
    expect(tok.decode([FIRST_UNKNOWN])).toBe('');
    expect(tok.decode([LAST_ROW])).toBe('');
    expect(tok.decode(Int32Array.from([151700, 151800]))).toBe('');
    // Checked against Python tokenizers 0.23: unknown ids are dropped before byte-level decoding.
    expect(tok.decode([40, 151700, 1234])).toBe('IItem');
    expect(tok.decode([40, 151669, 151645, 151700, 9707])).toBe('I<|im_end|>Hello');
  });

  it('are skipped without breaking a character split across byte tokens', async () => {
    const ids = await tok.encode('🫠');
    expect(ids).toHaveLength(3);
    const mixed = [151700, ids[0]!, 151935, ids[1]!, 151669, ids[2]!, 151800];
    expect(tok.decode(mixed)).toBe('🫠');
    const stream = tok.createStreamDecoder();
    expect(mixed.map((id) => stream.push(id))).toEqual(['', '', '', '', '', '🫠', '']);
    expect(stream.flush()).toBe('');
  });

  it('match Python on random sequences mixing known, broken and unknown ids', async () => {
    const sequences: number[][] = [
      [151700], [FIRST_UNKNOWN], [LAST_ROW], [40, 151700, 1234], [151700, 40], [40, 151669, 151645, 151700, 9707],
      [151669, 151670, 151935], [151643, 151700, 151668], ...(await Promise.all(['é ü', '大型', '👩🏽‍💻'].map((t) => tok.encode(t)))),
    ];
    for (const s of fixture.id_sequences.slice(0, 150)) {
      const seq = [...s.ids];
      const inserts = 1 + Math.floor(random() * 4);
      for (let k = 0; k < inserts; k++) seq.splice(Math.floor(random() * (seq.length + 1)), 0, unknownId());
      sequences.push(seq);
    }
    for (let k = 0; k < 50; k++) {
      sequences.push(Array.from({ length: 1 + Math.floor(random() * 10) }, () => (random() < 0.5 ? unknownId() : Math.floor(random() * FIRST_UNKNOWN))));
    }
    const expected = pythonDecode(sequences);
    const unknownSeen = new Set(sequences.flat().filter((id) => id >= FIRST_UNKNOWN));
    expect(unknownSeen.size).toBeGreaterThan(100);
    sequences.forEach((seq, i) => {
      expect(tok.decode(seq), JSON.stringify(seq)).toBe(expected[i]);
      const stream = tok.createStreamDecoder();
      expect(seq.map((id) => stream.push(id)).join('') + stream.flush(), JSON.stringify(seq)).toBe(expected[i]);
    });
  });

  it('decode to nothing even beyond 2^32, where the binding would wrap ids around', () => {
    // (Python raises OverflowError for these; any non-negative integer is accepted here.)
    for (const id of [2 ** 32 - 1, 2 ** 32, 2 ** 32 + 40, 2 ** 40, Number.MAX_SAFE_INTEGER]) {
      expect(tok.decode([40, id]), String(id)).toBe('I');
      expect(tok.createStreamDecoder().push(id)).toBe('');
    }
  });
});

describe('tokenizer files', () => {
  const tokenizerJson = () => JSON.parse(readFileSync(defaultTokenizerFilePath(), 'utf8'));

  it('splits special tokens even when added_tokens does not list them', async () => {
    const json = tokenizerJson();
    for (const t of json.added_tokens) json.model.vocab[t.content] = t.id; // vocab-only specials
    json.added_tokens = [];
    const file = path.join(scratch, 'vocab-only-specials.json');
    writeFileSync(file, JSON.stringify(json));
    const t = await load({ tokenizerFilePath: file });
    expect(await t.encode('a<|im_start|>b<|im_end|>')).toEqual([64, 151644, 65, 151645]);
    expect(await t.encode('<|vision_pad|>x')).toEqual([151654, 87]);
    expect(await t.encode(EXPLAIN)).toEqual(EXPLAIN_IDS);
  });

  it('rejects a file lacking a special token', async () => {
    const json = tokenizerJson();
    json.added_tokens = [];
    const file = path.join(scratch, 'no-specials.json');
    writeFileSync(file, JSON.stringify(json));
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: file })).rejects.toThrow(
      `Invalid tokenizer file ${file}: no id for special token <|endoftext|>`,
    );
  });

  it('rejects a tokenizer that is not byte-level', async () => {
    const json = tokenizerJson();
    json.decoder = null;
    const file = path.join(scratch, 'no-decoder.json');
    writeFileSync(file, JSON.stringify(json));
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: file })).rejects.toThrow(
      `Invalid tokenizer file ${file}: expected a byte-level BPE tokenizer like Qwen3's`,
    );
  });

  it('names the path of a missing or invalid file', async () => {
    const missing = path.join(scratch, 'missing.json');
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: missing })).rejects.toThrow(
      `Could not read tokenizer file ${missing}: ENOENT`,
    );
    const invalid = path.join(scratch, 'invalid.json');
    writeFileSync(invalid, '{"not": "a tokenizer"');
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: invalid })).rejects.toThrow(`Invalid tokenizer file ${invalid}: `);
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: scratch })).rejects.toThrow(`Could not read tokenizer file ${scratch}: EISDIR`);
  });
});

describe('argument validation', () => {
  it('rejects bad load options', async () => {
    await expect(Qwen3Tokenizer.load({ chat: true } as never)).rejects.toThrow('Unknown option chat');
    await expect(Qwen3Tokenizer.load({ applyChatTemplate: 'yes' } as never)).rejects.toThrow(
      'Expected boolean for applyChatTemplate but received "yes"',
    );
    await expect(Qwen3Tokenizer.load({ tokenizerFilePath: '' })).rejects.toThrow(
      'Expected non-empty string for tokenizerFilePath but received ""',
    );
    await expect(Qwen3Tokenizer.load('x' as never)).rejects.toThrow('Expected object for options but received "x"');
  });

  it('rejects bad encode arguments through the returned promise', async () => {
    await expect(tok.encode(42 as never)).rejects.toThrow('Expected string for text but received 42');
    await expect(tok.encode('x', { chat: 1 } as never)).rejects.toThrow('Expected boolean for chat but received 1');
    await expect(tok.encode('x', { raw: true } as never)).rejects.toThrow('Unknown option raw');
    await expect(tok.encode('x', 'chat' as never)).rejects.toThrow('Expected object for options but received "chat"');
  });

  it('rejects ids that are not non-negative integers', () => {
    const msg = (name: string, got: string) => `Expected non-negative integer for ${name} but received ${got}`;
    expect(() => tok.decode([1, -1])).toThrow(msg('ids.1', '-1'));
    expect(() => tok.decode([1.5])).toThrow(msg('ids.0', '1.5'));
    expect(() => tok.decode([NaN])).toThrow(msg('ids.0', 'NaN'));
    expect(() => tok.decode([Infinity])).toThrow(msg('ids.0', 'Infinity'));
    expect(() => tok.decode(['7'] as never)).toThrow(msg('ids.0', '"7"'));
    expect(() => tok.decode([7n] as never)).toThrow(msg('ids.0', '7'));
    expect(() => tok.decode([null] as never)).toThrow(msg('ids.0', 'null'));
    expect(() => tok.decode('abc' as never)).toThrow('Expected array or Int32Array of token ids for ids but received "abc"');
    expect(() => tok.createStreamDecoder().push(NaN)).toThrow(msg('id', 'NaN'));
    expect(() => tok.createStreamDecoder().push(-3)).toThrow(msg('id', '-3'));
    expect(() => tok.createStreamDecoder().push(0.5)).toThrow(msg('id', '0.5'));
    expect(() => tok.createStreamDecoder().push('1' as never)).toThrow(msg('id', '"1"'));
    try {
      tok.decode([3, -2]);
      expect.unreachable();
    } catch (err) {
      expect(err).toBeInstanceOf(InvalidOptionError);
      expect((err as InvalidOptionError).option).toBe('ids.1');
    }
  });

  it('rejects bad chat messages', () => {
    expect(() => formatChat([{ role: 'bot', content: 'x' }] as never)).toThrow(
      'Expected one of "system", "user", "assistant" for messages.0.role but received "bot"',
    );
    expect(() => formatChat([{ role: 'user', content: 5 }] as never)).toThrow('Expected string for messages.0.content but received 5');
    expect(() => formatChat([], { addThinking: 'no' } as never)).toThrow('Expected boolean for addThinking but received "no"');
  });
});
