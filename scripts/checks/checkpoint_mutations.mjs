// The mutations the checkpoint fuzzer applies (scripts/checks/fuzz_checkpoints.mjs): a seeded
// generator per (seed, case), where the fields of a torch.save zip lie (parseLayout), and
// mutate(), which aims truncations, flipped bytes and odd values at them. Pure functions of
// their inputs, so any case can be replayed from its seed and index.
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

export function caseRandom(seed, index) {
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
