#!/usr/bin/env node
// Fuzzes the checkpoint loader with mutated copies of real checkpoints. Every case must end in a
// clean error or a correct load: never a crash, an abort, a hang or a huge allocation.
//
//   node scripts/checks/fuzz_checkpoints.mjs [--cases 2000] [--seed 1] [--from 0] [--per-child 25]
//        [--jobs N] [--timeout-ms 10000] [--rss-limit-mb 512] [--vmem-limit-mb 12288] [--json]
//   node scripts/checks/fuzz_checkpoints.mjs --write-case I --seed S --out FILE   (reproduce one case)
//
// Cases are made from (seed, case index) alone, so a failure is reproduced by its index. They
// run in child processes (--per-child at a time, each with a time limit and under `ulimit -v`):
// a case that kills its child is a crash, one that outlives its limit a hang, one that raises
// the child's peak RSS by more than --rss-limit-mb a huge allocation. A model that loads must
// run a prefill and two decode steps. Bases: the tiny-gqa4 and tiny-f16 fixtures plus layouts
// made by make_hostile_checkpoints.py fuzz-bases (views with offsets and shared storages,
// pickle protocol 4, ZIP64); each base must load to the same logits before fuzzing starts.
// test/fuzz.test.ts runs a few hundred cases in CI; the long run is this script.
//
// A case's time limit is --timeout-ms or HANG_FACTOR times the slowest base load in its child
// (after the first, whose time holds the child's one-off warm-up), whichever is longer: a case
// does a base's work (a load and a forward pass) plus a prefill and two decode steps, so on a
// slow or loaded machine the limit grows with the machine's measured pace instead of reporting
// slowness as a hang. The start-up (libtorch and the bases) gets STARTUP_LIMIT_MS: it is not
// under test, and only a child stuck there must be ended.
import { execFileSync, spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { cpus, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const SELF = fileURLToPath(import.meta.url);
const ROOT = resolve(dirname(SELF), '..', '..');
const FIXTURES = join(ROOT, 'test', '.fixtures');
// A case takes about two base loads' time; twenty-five leaves room for a machine that slows down
// tenfold while the child runs, and still ends a real hang within seconds on an idle machine.
const HANG_FACTOR = 25;
const STARTUP_LIMIT_MS = 120_000;
const PROMPT = [1, 17, 42, 99];

// ---------------------------------------------------------------------------------------------
// Deterministic randomness: one generator per (seed, case).

function mulberry32(seed) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

function caseRandom(seed, index) {
  let h = Math.imul(seed ^ 0x9e3779b9, 0x85ebca6b) ^ Math.imul(index + 1, 0xc2b2ae35);
  h = Math.imul(h ^ (h >>> 16), 0x7feb352d);
  const next = mulberry32(h ^ (h >>> 15));
  const rng = {
    float: next,
    int: (n) => Math.floor(next() * n), // [0, n)
    pick: (list) => list[Math.floor(next() * list.length)],
    weighted: (table) => {
      let r = next() * table.reduce((s, [w]) => s + w, 0);
      for (const [w, v] of table) if ((r -= w) < 0) return v;
      return table[table.length - 1][1];
    },
  };
  return rng;
}

// ---------------------------------------------------------------------------------------------
// Where things lie in a torch.save zip: the fields a mutation aims at.

const u16 = (b, p) => b.readUInt16LE(p);
const u32 = (b, p) => b.readUInt32LE(p);

/** Pickle opcodes torch.save emits, with how their argument is laid out. */
function walkPickle(bytes, base) {
  const fields = []; // {pos, width, kind: 'op'|'int'|'len'|'memo'|'str'}
  let p = 0;
  const arg = (width, kind) => {
    fields.push({ pos: base + p, width, kind });
    p += width;
  };
  const text = (lenWidth) => {
    const n = lenWidth === 1 ? bytes[p] : lenWidth === 4 ? bytes.readUInt32LE(p) : Number(bytes.readBigUInt64LE(p));
    arg(lenWidth, 'len');
    if (n > 0 && p + n <= bytes.length) fields.push({ pos: base + p, width: n, kind: 'str' });
    p += n;
  };
  while (p < bytes.length) {
    const op = bytes[p];
    fields.push({ pos: base + p, width: 1, kind: 'op' });
    p += 1;
    switch (op) {
      case 0x80: arg(1, 'int'); break; // PROTO
      case 0x95: arg(8, 'len'); break; // FRAME
      case 0x63: { // GLOBAL: module\nname\n
        for (let line = 0; line < 2; line++) {
          const end = bytes.indexOf(10, p);
          if (end < 0) return fields;
          fields.push({ pos: base + p, width: end - p, kind: 'str' });
          p = end + 1;
        }
        break;
      }
      case 0x71: case 0x68: arg(1, 'memo'); break; // BINPUT, BINGET
      case 0x72: case 0x6a: arg(4, 'memo'); break; // LONG_BINPUT, LONG_BINGET
      case 0x58: case 0x54: case 0x42: text(4); break; // BINUNICODE, BINSTRING, BINBYTES
      case 0x8c: case 0x55: case 0x43: text(1); break; // SHORT_BINUNICODE, SHORT_BINSTRING, SHORT_BINBYTES
      case 0x8d: text(8); break; // BINUNICODE8
      case 0x4a: arg(4, 'int'); break; // BININT
      case 0x4b: arg(1, 'int'); break; // BININT1
      case 0x4d: arg(2, 'int'); break; // BININT2
      case 0x8a: { // LONG1: length byte, then that many bytes
        const n = bytes[p];
        arg(1, 'len');
        if (n > 0) arg(n, 'int');
        break;
      }
      case 0x47: arg(8, 'int'); break; // BINFLOAT
      case 0x2e: return fields; // STOP
      default: break; // no argument (MARK, TUPLEn, SETITEMS, REDUCE, BUILD, BINPERSID, ...)
    }
  }
  return fields;
}

/** Zip structures of a checkpoint as torch.save writes it (ZIP64 end records included). */
export function parseLayout(buf) {
  const size = buf.length;
  let eocd = -1;
  for (let i = size - 22; i >= Math.max(0, size - 22 - 0xffff); i--) {
    if (u32(buf, i) === 0x06054b50 && i + 22 + u16(buf, i + 20) === size) {
      eocd = i;
      break;
    }
  }
  if (eocd < 0) throw new Error('base checkpoint has no end-of-central-directory record');
  const fields = [];
  const field = (pos, width, name) => fields.push({ pos, width, name });
  field(eocd + 4, 2, 'eocd.disk'); field(eocd + 6, 2, 'eocd.cdDisk'); field(eocd + 8, 2, 'eocd.entriesHere');
  field(eocd + 10, 2, 'eocd.entries'); field(eocd + 12, 4, 'eocd.cdSize'); field(eocd + 16, 4, 'eocd.cdOffset');
  field(eocd + 20, 2, 'eocd.commentLength');
  let count = u16(buf, eocd + 10);
  let cdOffset = u32(buf, eocd + 16);
  let cdSize = u32(buf, eocd + 12);
  const tail = { start: eocd, end: size };
  if (eocd >= 20 && u32(buf, eocd - 20) === 0x07064b50) {
    const locator = eocd - 20;
    const end64 = Number(buf.readBigUInt64LE(locator + 8));
    field(locator + 4, 4, 'locator.disk'); field(locator + 8, 8, 'locator.end64Offset'); field(locator + 16, 4, 'locator.disks');
    field(end64 + 16, 4, 'end64.disk'); field(end64 + 20, 4, 'end64.cdDisk'); field(end64 + 24, 8, 'end64.entriesHere');
    field(end64 + 32, 8, 'end64.entries'); field(end64 + 40, 8, 'end64.cdSize'); field(end64 + 48, 8, 'end64.cdOffset');
    count = Number(buf.readBigUInt64LE(end64 + 32));
    cdSize = Number(buf.readBigUInt64LE(end64 + 40));
    cdOffset = Number(buf.readBigUInt64LE(end64 + 48));
    tail.start = end64;
  }
  const entries = [];
  let c = cdOffset;
  for (let n = 0; n < count; n++) {
    const nameLen = u16(buf, c + 28);
    const extraLen = u16(buf, c + 30);
    const name = buf.toString('latin1', c + 46, c + 46 + nameLen);
    let entrySize = u32(buf, c + 24);
    let local = u32(buf, c + 42);
    for (const [off, w, f] of [[0, 4, 'sig'], [8, 2, 'flags'], [10, 2, 'method'], [20, 4, 'compressedSize'], [24, 4, 'size'],
      [28, 2, 'nameLength'], [30, 2, 'extraLength'], [32, 2, 'commentLength'], [34, 2, 'disk'], [42, 4, 'localOffset']]) {
      field(c + off, w, `cd.${f}`);
    }
    // A zip64 extra field holds the real size and offset where the 32-bit ones are all ones.
    for (let e = c + 46 + nameLen; e + 4 <= c + 46 + nameLen + extraLen;) {
      const id = u16(buf, e);
      const len = u16(buf, e + 2);
      if (id === 1) {
        let q = e + 4;
        for (const which of ['size', 'compressedSize', 'localOffset']) {
          const stored = which === 'localOffset' ? u32(buf, c + 42) : u32(buf, c + (which === 'size' ? 24 : 20));
          if (stored !== 0xffffffff) continue;
          const v = Number(buf.readBigUInt64LE(q));
          if (which === 'size') entrySize = v;
          if (which === 'localOffset') local = v;
          field(q, 8, `cd.zip64.${which}`);
          q += 8;
        }
      }
      e += 4 + len;
    }
    for (const [off, w, f] of [[0, 4, 'sig'], [6, 2, 'flags'], [8, 2, 'method'], [18, 4, 'compressedSize'], [22, 4, 'size'],
      [26, 2, 'nameLength'], [28, 2, 'extraLength']]) {
      field(local + off, w, `local.${f}`);
    }
    const dataStart = local + 30 + u16(buf, local + 26) + u16(buf, local + 28);
    entries.push({ name, central: c, nameAt: c + 46, nameLen, local, dataStart, dataEnd: dataStart + entrySize });
    c += 46 + nameLen + extraLen + u16(buf, c + 32);
  }
  const pkl = entries.find((e) => e.name.endsWith('/data.pkl'));
  if (!pkl) throw new Error('base checkpoint has no data.pkl');
  const records = entries.filter((e) => /\/data\/[^/]+$/.test(e.name));
  return {
    size,
    cd: { start: cdOffset, end: cdOffset + cdSize },
    tail,
    entries,
    pickle: { start: pkl.dataStart, end: pkl.dataEnd },
    records,
    zipFields: fields,
    pickleFields: walkPickle(buf.subarray(pkl.dataStart, pkl.dataEnd), pkl.dataStart),
  };
}

// ---------------------------------------------------------------------------------------------
// Mutations.

function interestingValue(rng, width, original, fileSize, signed) {
  const bits = BigInt(8 * width);
  const max = (1n << bits) - 1n;
  const o = BigInt(original);
  const choices = [0n, 1n, 2n, o + 1n, o - 1n, o * 2n, o / 2n, max, max - 1n, (max >> 1n), (max >> 1n) + 1n,
    BigInt(fileSize), BigInt(fileSize) + 1n, BigInt(fileSize) - 1n, BigInt(rng.int(2 ** 31)) * BigInt(rng.int(2 ** 21) + 1)];
  if (width >= 8) choices.push(1n << 32n, 1n << 40n, 1n << 62n, 1n << 63n, (1n << 63n) - 1n);
  if (signed) choices.push(max, max - 1n, (max >> 1n) + 1n); // -1, -2 and the most negative
  return ((rng.pick(choices) % (max + 1n)) + (max + 1n)) % (max + 1n);
}

function readUnsigned(buf, pos, width) {
  let v = 0n;
  for (let i = width - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[pos + i] ?? 0);
  return v;
}

function writeUnsigned(buf, pos, width, value) {
  for (let i = 0; i < width && pos + i < buf.length; i++) buf[pos + i] = Number((value >> BigInt(8 * i)) & 0xffn);
}

function flipBytes(rng, buf, start, end, label) {
  if (end <= start) return `${label}: empty`;
  const n = 1 + rng.int(rng.float() < 0.7 ? 2 : 8);
  for (let k = 0; k < n; k++) {
    const pos = start + rng.int(end - start);
    const how = rng.int(4);
    buf[pos] = how === 0 ? buf[pos] ^ (1 << rng.int(8)) : how === 1 ? rng.int(256) : how === 2 ? 0 : 0xff;
  }
  return `flip ${n} byte(s) in ${label}`;
}

const PICKLE_OPS = [0x28, 0x29, 0x5d, 0x7d, 0x74, 0x85, 0x86, 0x87, 0x61, 0x65, 0x73, 0x75, 0x58, 0x8c, 0x4a, 0x4b, 0x4d, 0x8a,
  0x4e, 0x88, 0x89, 0x71, 0x72, 0x94, 0x68, 0x6a, 0x63, 0x93, 0x52, 0x62, 0x51, 0x2e, 0x80, 0x95, 0x47, 0x54, 0x55, 0x8d];

/** Applies 1-3 mutations to a copy of `base`; returns the bytes and what was done. */
export function mutate(base, layout, rng) {
  let buf = Buffer.from(base);
  const ops = [];
  const count = rng.weighted([[60, 1], [25, 2], [15, 3]]);
  for (let k = 0; k < count; k++) {
    const kind = rng.weighted([
      [10, 'truncate'], [8, 'flip-cd'], [5, 'flip-tail'], [10, 'flip-pickle'], [8, 'flip-data'], [5, 'flip-local'], [4, 'flip-any'],
      [16, 'zip-field'], [14, 'pickle-int'], [6, 'pickle-len'], [6, 'pickle-op'], [3, 'pickle-memo'], [5, 'pickle-str'],
      [4, 'shift'], [3, 'splice'], [2, 'garbage'], [4, 'name'],
    ]);
    const pick = (kindName) => {
      const list = layout.pickleFields.filter((f) => f.kind === kindName);
      return list.length ? rng.pick(list) : null;
    };
    const before = ops.length;
    switch (kind) {
      case 'truncate': {
        const bounds = [layout.cd.start, layout.cd.end, layout.tail.start, layout.pickle.start, layout.pickle.end,
          ...layout.entries.flatMap((e) => [e.local, e.dataStart, e.dataEnd])];
        const at = rng.float() < 0.5 ? rng.int(buf.length) : rng.pick(bounds) + rng.int(33) - 16;
        const length = Math.max(0, Math.min(buf.length - 1, at));
        buf = buf.subarray(0, length);
        ops.push(`truncate to ${length}`);
        break;
      }
      case 'flip-cd': ops.push(flipBytes(rng, buf, layout.cd.start, Math.min(layout.cd.end, buf.length), 'central directory')); break;
      case 'flip-tail': ops.push(flipBytes(rng, buf, layout.tail.start, buf.length, 'end records')); break;
      case 'flip-pickle': ops.push(flipBytes(rng, buf, layout.pickle.start, Math.min(layout.pickle.end, buf.length), 'data.pkl')); break;
      case 'flip-data': {
        const r = rng.pick(layout.records);
        ops.push(flipBytes(rng, buf, r.dataStart, Math.min(r.dataEnd, buf.length), r.name.replace(/^.*\/data\//, 'data/')));
        break;
      }
      case 'flip-local': {
        const e = rng.pick(layout.entries);
        ops.push(flipBytes(rng, buf, e.local, Math.min(e.dataStart, buf.length), `local header of ${e.name.replace(/^[^/]*\//, '')}`));
        break;
      }
      case 'flip-any': ops.push(flipBytes(rng, buf, 0, buf.length, 'anywhere')); break;
      case 'zip-field': {
        const f = rng.pick(layout.zipFields);
        const value = interestingValue(rng, f.width, readUnsigned(buf, f.pos, f.width), layout.size, false);
        writeUnsigned(buf, f.pos, f.width, value);
        ops.push(`${f.name}@${f.pos} = ${value}`);
        break;
      }
      case 'pickle-int': case 'pickle-len': case 'pickle-memo': {
        const f = pick(kind.slice(7));
        if (!f) break;
        const width = Math.min(f.width, 8);
        const value = interestingValue(rng, width, readUnsigned(buf, f.pos, width), layout.size, kind === 'pickle-int');
        writeUnsigned(buf, f.pos, width, value);
        ops.push(`${kind}@${f.pos} (${width} bytes) = ${value}`);
        break;
      }
      case 'pickle-op': {
        const f = pick('op');
        if (!f) break;
        const op = rng.float() < 0.8 ? rng.pick(PICKLE_OPS) : rng.int(256);
        buf[f.pos] = op;
        ops.push(`pickle opcode@${f.pos} = 0x${op.toString(16)}`);
        break;
      }
      case 'pickle-str': {
        const f = pick('str');
        if (!f) break;
        const pos = f.pos + rng.int(f.width);
        buf[pos] = rng.float() < 0.5 ? rng.pick([0x30, 0x39, 0x2e, 0x0a, 0x00, 0xff, 0xc3]) : rng.int(256);
        ops.push(`pickle string byte@${pos}`);
        break;
      }
      case 'shift': {
        const pos = rng.int(buf.length + 1);
        const n = 1 + rng.int(64);
        const grow = rng.float() < 0.5;
        buf = grow
          ? Buffer.concat([buf.subarray(0, pos), Buffer.from(Array.from({ length: n }, () => rng.int(256))), buf.subarray(pos)])
          : Buffer.concat([buf.subarray(0, pos), buf.subarray(Math.min(buf.length, pos + n))]);
        ops.push(`${grow ? 'insert' : 'delete'} ${n} byte(s) at ${pos}`);
        break;
      }
      case 'splice': {
        const n = 1 + rng.int(256);
        const from = rng.int(Math.max(1, buf.length - n));
        const to = rng.int(Math.max(1, buf.length - n));
        buf.copy(buf, to, from, Math.min(buf.length, from + n));
        ops.push(`copy ${n} byte(s) from ${from} to ${to}`);
        break;
      }
      case 'garbage': {
        const junk = Buffer.from(Array.from({ length: 1 + rng.int(4096) }, () => rng.int(256)));
        const front = rng.float() < 0.5;
        buf = front ? Buffer.concat([junk, buf]) : Buffer.concat([buf, junk]);
        ops.push(`${front ? 'prepend' : 'append'} ${junk.length} garbage byte(s)`);
        break;
      }
      case 'name': {
        const e = rng.pick(layout.entries);
        const pos = (rng.float() < 0.7 ? e.nameAt : e.local + 30) + rng.int(e.nameLen);
        if (pos < buf.length) buf[pos] = rng.pick([0x30, 0x39, 0x2f, 0x2e, 0x00, rng.int(256)]);
        ops.push(`entry name byte of ${e.name.replace(/^[^/]*\//, '')}`);
        break;
      }
    }
    if (ops.length > before) ops[before] = `${kind}: ${ops[before]}`;
  }
  return { bytes: buf, ops };
}

// ---------------------------------------------------------------------------------------------
// The bases, and the one case a seed and index stand for.

/** The base checkpoints and the config they share; makes the extra layouts with Python. */
export function prepareBases(workDir) {
  const good = join(FIXTURES, 'tiny-gqa4', 'model.pth');
  const { projectPython } = createRequire(import.meta.url)(join(ROOT, 'dist', 'addon', 'python.js'));
  execFileSync(projectPython(ROOT), [join(ROOT, 'scripts', 'python', 'make_hostile_checkpoints.py'), 'fuzz-bases', good, workDir]);
  return {
    config: join(FIXTURES, 'tiny-gqa4', 'config.json'),
    bases: [good, join(FIXTURES, 'tiny-f16', 'model.pth'), ...['strided', 'p4-f32', 'zip64'].map((n) => join(workDir, `${n}.pth`))],
    // The last three hold tiny-gqa4's weights in other layouts: they must load to its logits.
    sameWeightsAs: [0, 1, 0, 0, 0],
  };
}

function loadBases(paths) {
  return paths.map((path) => {
    const bytes = readFileSync(path);
    return { path, bytes, layout: parseLayout(bytes) };
  });
}

export function makeCase(bases, seed, index) {
  const rng = caseRandom(seed, index);
  const baseIndex = rng.int(bases.length);
  const { bytes, ops } = mutate(bases[baseIndex].bytes, bases[baseIndex].layout, rng);
  return { baseIndex, bytes, ops };
}

// ---------------------------------------------------------------------------------------------
// Child: loads each case through the public API and reports the outcome.

const UNCLEAN = /^Unknown native error$|std::|basic_string|vector::|_M_|bad_array_new_length|terminate called/;
const HUGE = /out of memory|not enough memory|bad_alloc|cannot allocate|can't allocate/i;

async function childMain(job) {
  const require = createRequire(import.meta.url);
  const { Qwen3Model, generateTextBasicCache } = require(join(ROOT, 'dist', 'index.js'));
  const bases = loadBases(job.bases);
  const load = (path) => Qwen3Model.load(path, { config: job.config, device: 'cpu', dtype: 'float32' });
  const send = (msg) => process.stdout.write(`${JSON.stringify(msg)}\n`);
  const maxRss = () => process.resourceUsage().maxRSS; // KiB
  const logitsOf = async (model) => Buffer.from((await model.forward(PROMPT, { logits: 'last' })).logits.data.buffer);

  // Bases that hold the same weights in other layouts must give the same logits: a loader that
  // mis-reads a layout fails here, loudly, before any mutation.
  const references = [];
  let baseMs = 0;
  for (const [i, base] of bases.entries()) {
    const t0 = performance.now();
    const model = await load(base.path);
    references.push(await logitsOf(model));
    model.dispose();
    if (i > 0 || bases.length === 1) baseMs = Math.max(baseMs, performance.now() - t0);
    const same = job.sameWeightsAs?.[i] ?? i;
    if (!references[i].equals(references[same])) throw new Error(`base ${base.path} loads to different weights than ${bases[same].path}`);
  }
  send({ ready: true, maxRss: maxRss(), baseMs });

  const selfTest = Object.fromEntries((process.env.QWEN3_FUZZ_SELFTEST ?? '').split(',').filter(Boolean).map((s) => s.split(':').reverse()));
  const file = join(job.tmpDir, `case-${process.pid}.pth`);
  for (let index = job.from; index < job.to; index++) {
    send({ start: index });
    const t0 = performance.now();
    if (selfTest[index] === 'crash') process.abort(); // lets test/fuzz.test.ts prove crashes are caught
    if (selfTest[index] === 'hang') await new Promise(() => setInterval(() => {}, 1000));
    const { bytes, ops, baseIndex } = makeCase(bases, job.seed, index);
    writeFileSync(file, bytes);
    let outcome;
    let message;
    let identical;
    let loaded = false;
    try {
      const model = await load(file);
      loaded = true;
      try {
        identical = (await logitsOf(model)).equals(references[baseIndex]);
        const ids = await generateTextBasicCache(model, PROMPT, { maxNewTokens: 3, eosTokenId: null });
        if (ids.length !== 3 || !ids.every((id) => Number.isInteger(id) && id >= 0 && id < 512)) {
          throw new Error(`generated ids out of range: ${ids}`);
        }
        outcome = 'loaded';
      } finally {
        model.dispose();
      }
    } catch (err) {
      message = err instanceof Error ? err.message.replaceAll(file, '<file>') : `non-Error thrown: ${String(err)}`;
      outcome = !(err instanceof Error) || message === '' || UNCLEAN.test(message) ? 'unclean' : HUGE.test(message) ? 'alloc' : 'rejected';
      if (loaded) outcome = 'unclean'; // a model that loads must also run
    }
    send({ done: index, outcome, identical, message, ops, base: baseIndex, ms: performance.now() - t0, maxRss: maxRss() });
  }
}

// ---------------------------------------------------------------------------------------------
// Parent: hands out ranges of cases to children, watches them, counts outcomes.

/**
 * Runs `cases` cases from `from` with `seed`. Returns counts, the failures (crash, hang,
 * bigalloc, alloc, unclean) with their index and mutations, and the most common messages.
 */
export async function runFuzz(options = {}) {
  const o = {
    cases: 2000, seed: 1, from: 0, perChild: 25, jobs: Math.max(1, Math.min(cpus().length, 4)), timeoutMs: 10_000,
    rssLimitMb: 512, vmemLimitMb: 12_288, selfTest: '', onProgress: undefined, ...options,
  };
  // ASan reserves terabytes of address space: a virtual-memory cap would only break it.
  const underAsan = /libasan|libclang_rt\.asan/.test(process.env.LD_PRELOAD ?? '');
  const vmemLimitMb = underAsan ? 0 : o.vmemLimitMb;
  const tmpDir = mkdtempSync(join(tmpdir(), 'qwen3-fuzz-'));
  const started = performance.now();
  try {
    const { config, bases, sameWeightsAs } = o.bases ? { config: o.config, bases: o.bases } : prepareBases(tmpDir);
    const counts = { loaded: 0, loadedIdentical: 0, rejected: 0, crash: 0, hang: 0, bigalloc: 0, alloc: 0, unclean: 0 };
    const failures = [];
    const messages = new Map();
    const byOp = new Map();
    const pending = [];
    for (let i = o.from; i < o.from + o.cases; i += o.perChild) pending.push([i, Math.min(i + o.perChild, o.from + o.cases)]);
    let finished = 0;

    const record = (index, outcome, detail) => {
      counts[outcome]++;
      finished++;
      if (!['loaded', 'rejected'].includes(outcome)) failures.push({ index, outcome, ...detail });
      o.onProgress?.(finished, counts);
    };

    const runChild = ([from, to]) => new Promise((resolveChild) => {
      const job = JSON.stringify({ bases, sameWeightsAs, config, seed: o.seed, from, to, tmpDir });
      const args = [SELF, '--child', job];
      const child = vmemLimitMb > 0
        ? spawn('/bin/sh', ['-c', `ulimit -v ${vmemLimitMb * 1024} && exec "$0" "$@"`, process.execPath, ...args], { env: childEnv(o) })
        : spawn(process.execPath, args, { env: childEnv(o) });
      let current = null;
      let baseline = null;
      let caseLimit = o.timeoutMs;
      let stderr = '';
      let timer;
      let hung = false;
      const arm = (ms) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          hung = true;
          child.kill('SIGKILL');
        }, ms);
      };
      arm(Math.max(o.timeoutMs, STARTUP_LIMIT_MS));
      let buffered = '';
      child.stdout.on('data', (chunk) => {
        buffered += chunk;
        let nl;
        while ((nl = buffered.indexOf('\n')) >= 0) {
          const msg = JSON.parse(buffered.slice(0, nl));
          buffered = buffered.slice(nl + 1);
          if (msg.ready) {
            baseline = msg.maxRss;
            caseLimit = Math.max(o.timeoutMs, HANG_FACTOR * msg.baseMs);
          }
          if (msg.start !== undefined) {
            current = msg.start;
            arm(caseLimit);
          }
          if (msg.done !== undefined) {
            current = null;
            let outcome = msg.outcome;
            if (baseline !== null && (msg.maxRss - baseline) / 1024 > o.rssLimitMb) {
              outcome = 'bigalloc';
              baseline = msg.maxRss; // report each jump once
            }
            if (outcome === 'loaded' && msg.identical) counts.loadedIdentical++;
            if (msg.message) {
              const key = msg.message.replace(/\d+/g, 'N').slice(0, 140);
              messages.set(key, (messages.get(key) ?? 0) + 1);
            }
            for (const op of msg.ops) {
              const name = op.slice(0, op.indexOf(':'));
              byOp.set(name, (byOp.get(name) ?? 0) + 1);
            }
            record(msg.done, outcome, { message: msg.message, ops: msg.ops, base: bases[msg.base], ms: Math.round(msg.ms) });
          }
        }
      });
      child.stderr.on('data', (d) => (stderr = (stderr + d).slice(-4000)));
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        if (current !== null) {
          record(current, hung ? 'hang' : 'crash', { exit: code, signal, stderr: stderr.trim().split('\n').slice(-6).join('\n') });
          if (current + 1 < to) pending.push([current + 1, to]);
        } else if (code !== 0 || hung) {
          failures.push({ index: from, outcome: 'harness', exit: code, signal, stderr: stderr.trim().split('\n').slice(-12).join('\n') });
        }
        resolveChild();
      });
    });

    const workers = Array.from({ length: o.jobs }, async () => {
      while (pending.length > 0) await runChild(pending.shift());
    });
    await Promise.all(workers);
    return {
      seed: o.seed, from: o.from, cases: o.cases, seconds: (performance.now() - started) / 1000, counts, failures,
      messages: [...messages].sort((a, b) => b[1] - a[1]), byOp: Object.fromEntries([...byOp].sort()),
    };
  } finally {
    rmSync(tmpDir, { recursive: true, force: true });
  }
}

function childEnv(o) {
  const env = { ...process.env };
  if (o.selfTest) env.QWEN3_FUZZ_SELFTEST = o.selfTest;
  else delete env.QWEN3_FUZZ_SELFTEST;
  return env;
}

// ---------------------------------------------------------------------------------------------
// Command line.

function parseArgs(argv) {
  const out = {};
  for (let i = 0; i < argv.length; i++) {
    const key = argv[i].replace(/^--/, '').replace(/-([a-z])/g, (_, c) => c.toUpperCase());
    const value = argv[i + 1];
    if (key === 'json') out.json = true;
    else {
      out[key] = /^-?\d+$/.test(value ?? '') ? Number(value) : value;
      i++;
    }
  }
  return out;
}

async function main() {
  if (process.argv[2] === '--child') return childMain(JSON.parse(process.argv[3]));
  const args = parseArgs(process.argv.slice(2));
  if (args.writeCase !== undefined) {
    const work = mkdtempSync(join(tmpdir(), 'qwen3-fuzz-'));
    const { bases } = prepareBases(work);
    const { bytes, ops, baseIndex } = makeCase(loadBases(bases), args.seed ?? 1, args.writeCase);
    writeFileSync(args.out, bytes);
    console.log(`case ${args.writeCase} of seed ${args.seed ?? 1}: ${bases[baseIndex]} with ${ops.join('; ')} -> ${args.out}`);
    rmSync(work, { recursive: true, force: true });
    return;
  }
  const { json, ...options } = args;
  let lastShown = 0;
  const result = await runFuzz({
    ...options,
    onProgress: json ? undefined : (done) => {
      if (done - lastShown >= 250 || done === (options.cases ?? 2000)) {
        lastShown = done;
        process.stderr.write(`  ${done} cases...\n`);
      }
    },
  });
  if (json) {
    process.stdout.write(`${JSON.stringify(result, null, 1)}\n`);
  } else {
    const c = result.counts;
    console.log(`seed ${result.seed}, cases ${result.from}..${result.from + result.cases - 1}: ${result.seconds.toFixed(1)} s`);
    console.log(`  loaded (ran a prefill and decode steps): ${c.loaded} (${c.loadedIdentical} with the original logits)`);
    console.log(`  rejected with a clean error:             ${c.rejected}`);
    console.log(`  crash ${c.crash}, hang ${c.hang}, huge RSS ${c.bigalloc}, out-of-memory error ${c.alloc}, unclean error ${c.unclean}`);
    console.log('  mutations applied:', Object.entries(result.byOp).map(([k, v]) => `${k} ${v}`).join(', '));
    console.log(`  ${result.messages.length} distinct error messages; the most common:`);
    for (const [m, n] of result.messages.slice(0, 15)) console.log(`    ${String(n).padStart(5)}  ${m}`);
    for (const f of result.failures) console.log(`FAIL case ${f.index}: ${f.outcome} ${JSON.stringify(f)}`);
  }
  process.exitCode = result.failures.length === 0 ? 0 : 1;
}

if (process.argv[1] && resolve(process.argv[1]) === SELF) {
  main().catch((err) => {
    console.error(err);
    process.exit(2);
  });
}
