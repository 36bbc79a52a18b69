'use strict';
// fs.Stats / BigIntStats / fs.StatFs / fs.Dirent objects from the wire's Stat, StatFs and
// DirEntry, built on Node's own prototypes so `instanceof fs.Stats`, isFile(),
// isSymbolicLink()… behave as usual, and shaped as the RUNNING Node shapes its own: the own
// properties (and their order) are those of a real local Stats object, and a field the running
// Node computes lazily on its prototype (Node 22+: atime, mtime, ctime, birthtime; Node 26:
// also the *Instant accessors) is left to that accessor, exactly as Node's own objects do.
// A field this module does not know fails loudly instead of being left out silently.

const fs = require('fs');

// The originals (this module is loaded before fs.cjs patches fs): the shapes come from local files.
const statSync = fs.statSync;
const statfsSync = fs.statfsSync;

const NUMBERS = ['dev', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'blksize', 'ino', 'size', 'blocks'];
const TIMES = ['atime', 'mtime', 'ctime', 'birthtime'];

// Per kind ('number' | 'bigint'): {proto, keys (own enumerable keys of a real local Stats, in
// order), dates (the Date fields Node sets as own properties, not via a prototype accessor)}.
const shapes = {};

function hasAccessor(proto, key) {
  for (let p = proto; p && p !== Object.prototype; p = Object.getPrototypeOf(p)) {
    const d = Object.getOwnPropertyDescriptor(p, key);
    if (d) return typeof d.get === 'function';
  }
  return false;
}

// Symbol-keyed own fields (Node 26 keeps each time's nanoseconds under a private symbol for its
// *Instant accessors): which time each one is, checked against the nanoseconds of a bigint stat
// of the same file.
function symbolFields(real, bigReal) {
  const out = [];
  for (const sym of Object.getOwnPropertySymbols(real)) {
    const d = String(sym.description).toLowerCase();
    const t = ['birthtime', 'atime', 'mtime', 'ctime'].find((x) => d.includes(x));
    const nsec = t && Number(bigReal[`${t}Ns`] % 1_000_000_000n);
    if (!t || !/ns$/.test(d) || Number(real[sym]) !== nsec) {
      throw new Error(`pi-bridge: this Node's fs.Stats has a field the bridge does not know (${String(sym)}); refusing to build remote stats without it`);
    }
    out.push([sym, t]);
  }
  return out;
}

function shape(bigint) {
  const kind = bigint ? 'bigint' : 'number';
  if (shapes[kind]) return shapes[kind];
  const real = statSync(__filename, { bigint });
  const proto = Object.getPrototypeOf(real);
  const keys = Object.keys(real);
  const known = new Set([...NUMBERS, ...TIMES, ...TIMES.map((t) => `${t}Ms`), ...(bigint ? TIMES.map((t) => `${t}Ns`) : [])]);
  const unknown = keys.filter((k) => !known.has(k));
  if (unknown.length) {
    throw new Error(`pi-bridge: this Node's fs.Stats has fields the bridge does not know (${unknown.join(', ')}); refusing to build remote stats without them`);
  }
  const symbols = symbolFields(real, bigint ? real : statSync(__filename, { bigint: true }));
  const dates = new Set(TIMES.filter((t) => !hasAccessor(proto, t)));
  // The own fields to set, in order, each with how to compute it: decided once per shape, since
  // a cached statSync builds one of these per call.
  const fields = keys.filter((k) => !(TIMES.includes(k) && !dates.has(k))).map((k) => [k, field(k, bigint)]);
  shapes[kind] = { proto, keys, symbols, dates, fields };
  return shapes[kind];
}

// How to compute Stats field `k` from a wire stat `s`.
function field(k, bigint) {
  if (NUMBERS.includes(k)) return bigint ? (s) => BigInt(s[k]) : (s) => Number(s[k]);
  const t = k.replace(/(Ms|Ns)$/, '');
  if (k.endsWith('Ns')) return (s) => BigInt(s[t][0]) * 1_000_000_000n + BigInt(s[t][1]);
  if (k.endsWith('Ms')) {
    return bigint ? (s) => BigInt(s[t][0]) * 1000n + BigInt(s[t][1]) / 1_000_000n : (s) => s[t][0] * 1e3 + s[t][1] / 1e6;
  }
  // A Date own property (Node 20): Node's dateFromMs rounds the milliseconds.
  const ms = bigint ? (s) => Number(BigInt(s[t][0]) * 1000n + BigInt(s[t][1]) / 1_000_000n) : (s) => s[t][0] * 1e3 + s[t][1] / 1e6;
  return (s) => new Date(Math.round(ms(s)));
}

function makeStats(s, bigint) {
  const { proto, symbols, fields } = shape(!!bigint);
  const st = Object.create(proto);
  for (const [k, f] of fields) st[k] = f(s);
  for (const [sym, t] of symbols) {
    Object.defineProperty(st, sym, { value: s[t][1], writable: true, configurable: true, enumerable: false });
  }
  return st;
}

// fs.StatFs: Node's class is not exported; its prototype and fields come from a real local statfs.
function makeStatFs(s, bigint) {
  if (!statfsSync) throw new Error('pi-bridge: this Node has no fs.statfs');
  const real = statfsSync(__dirname, { bigint: !!bigint });
  const out = Object.create(Object.getPrototypeOf(real));
  for (const k of Object.keys(real)) {
    if (!(k in s)) throw new Error(`pi-bridge: this Node's fs.StatFs has a field the bridge does not know (${k})`);
    out[k] = bigint ? BigInt(s[k]) : Number(s[k]);
  }
  return out;
}

const C = fs.constants;
const KINDS = {
  file: C.UV_DIRENT_FILE,
  dir: C.UV_DIRENT_DIR,
  symlink: C.UV_DIRENT_LINK,
  fifo: C.UV_DIRENT_FIFO,
  socket: C.UV_DIRENT_SOCKET,
  char: C.UV_DIRENT_CHAR,
  block: C.UV_DIRENT_BLOCK,
  unknown: C.UV_DIRENT_UNKNOWN,
};

// `new fs.Dirent(name, type, path)` sets name, parentPath and path (Node 20.12+).
function makeDirent(name, kind, parentPath) {
  const d = new fs.Dirent(name, KINDS[kind] ?? C.UV_DIRENT_UNKNOWN, parentPath);
  if (d.parentPath === undefined) d.parentPath = parentPath;
  return d;
}

module.exports = { makeStats, makeStatFs, makeDirent, shape };
