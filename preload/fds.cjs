'use strict';
// Remote file descriptors. Node sees numbers from 1<<24 up (no real fd gets that high); each
// stands for a real descriptor the agent holds for the session (`fs.open` … `fs.close`,
// remote/src/fds.rs), named by this process, so every write is in the file at once, `O_APPEND`
// appends, permissions are checked at open, and the descriptor keeps naming the file it opened.
// The file position lives here: reads and writes name their offset (`fs.pread`/`fs.pwrite`, which
// the agent may safely repeat after a dropped link); an `O_APPEND` descriptor writes with
// `fs.fappend`, which answers the new end.
//
// No round trip the cache can spare (ARCHITECTURE.md §1a, "Descriptors"):
// - A read-only open of a regular file the cache knows (its stat, and the remote user may read
//   it by its owner bits) opens nothing yet: the agent opens it at the first call the cache
//   cannot answer. Until then the path still names the file that was "opened" (the cached stat,
//   identity included, is unchanged), so answering from the path is what the descriptor would
//   answer. The one difference: a file replaced between such an open and that first call is
//   read as the new file.
// - Any read-only descriptor reads from the cache while the path's cached stat is still the one
//   of the open (same dev, ino, size, mtime, ctime) and its bytes are cached; fstat likewise.
// - An open asks for the first bytes along (`ahead`): the cache keeps them (cache.cjs) when they
//   are the whole file, so pi's read tool (open, stat, stream, close) is one round trip cold and
//   none warm.
// - Closing a read-only descriptor does not wait for the agent.

const fs = require('fs');
const crypto = require('crypto');
const cache = require('./cache.cjs');
const { fsError } = require('./errors.cjs');
const { makeStats } = require('./stats.cjs');
const { MAX_CHUNK, readData } = require('./wire.cjs');

const AHEAD = 64 * 1024;
const FIRST_FD = 1 << 24;
const S_IFMT = 0o170000;
const S_IFREG = 0o100000;

let nextFd = FIRST_FD;
const PREFIX = crypto.randomBytes(4).toString('hex');
let nextName = 1;
const table = new Map(); // fd → F

function isVirtual(fd) {
  return typeof fd === 'number' && fd >= FIRST_FD && table.has(fd);
}

function get(fd, syscall) {
  const f = table.get(fd);
  if (!f) throw fsError({ code: 'EBADF', syscall });
  return f;
}

// ---- flags -------------------------------------------------------------------------------

const K = fs.constants;
// Node's stringToFlags (stable since Node 10).
const STRING_FLAGS = (() => {
  const { O_RDONLY: R, O_WRONLY: W, O_RDWR: RW, O_CREAT: C, O_EXCL: X, O_TRUNC: T, O_APPEND: A, O_SYNC: S } = K;
  const t = { r: R, rs: R | S, 'r+': RW, 'rs+': RW | S, w: T | C | W, wx: T | C | W | X, 'w+': T | C | RW, 'wx+': T | C | RW | X, a: A | C | W, ax: A | C | W | X, as: A | C | W | S, 'a+': A | C | RW, 'ax+': A | C | RW | X, 'as+': A | C | RW | S };
  for (const [a, b] of [['sr', 'rs'], ['sr+', 'rs+'], ['xw', 'wx'], ['xw+', 'wx+'], ['xa', 'ax'], ['sa', 'as'], ['xa+', 'ax+'], ['sa+', 'as+']]) t[a] = t[b];
  return t;
})();

// Node flags (string, number, undefined; Node has checked them) → {wire: protocol OpenFlags,
// read, write, append}.
function parseFlags(flags, mode, path) {
  let n;
  if (flags === undefined || flags === null) n = K.O_RDONLY;
  else if (typeof flags === 'string' && Object.prototype.hasOwnProperty.call(STRING_FLAGS, flags)) n = STRING_FLAGS[flags];
  else if (typeof flags === 'number' && Number.isInteger(flags)) n = flags;
  if (n === undefined) throw fsError({ code: 'EINVAL', syscall: 'open', path, detail: `pi-bridge: unknown open flags ${String(flags)}` });
  const acc = n & 3;
  const bits = [
    ['create', K.O_CREAT],
    ['exclusive', K.O_EXCL],
    ['truncate', K.O_TRUNC],
    ['append', K.O_APPEND],
    ['sync', K.O_SYNC],
    ['dsync', K.O_DSYNC],
    ['nofollow', K.O_NOFOLLOW],
    ['directory', K.O_DIRECTORY],
    ['noatime', K.O_NOATIME],
  ];
  const wire = { read: acc === 0 || acc === 2, write: acc === 1 || acc === 2 };
  let left = n & ~3;
  for (const [name, bit] of bits) {
    if (typeof bit === 'number' && bit && (n & bit) === bit) {
      wire[name] = true;
      left &= ~bit;
    }
  }
  // The agent always opens O_NONBLOCK|O_NOCTTY; anything else is not something it can do.
  for (const bit of [K.O_NONBLOCK, K.O_NOCTTY]) if (typeof bit === 'number') left &= ~bit;
  if (left !== 0 || acc === 3) throw fsError({ code: 'EINVAL', syscall: 'open', path, detail: `pi-bridge: open flags 0x${n.toString(16)} are not supported remotely` });
  for (const k of Object.keys(wire)) if (!wire[k]) delete wire[k];
  return { wire, read: acc !== 1, write: acc !== 0, append: !!wire.append };
}

// ---- opening -----------------------------------------------------------------------------

let remoteUid; // the remote user's uid (session.info), once known; null: unknown
function uid() {
  if (remoteUid !== undefined) return remoteUid;
  if (cache.state.uid !== undefined) return (remoteUid = cache.state.uid);
  try {
    remoteUid = require('./sync.cjs').call('session.info', {}).facts.uid;
  } catch {
    remoteUid = null;
  }
  return remoteUid;
}

// The cached stat of `path` (following), or null.
function cachedStat(path) {
  const hit = cache.lookup('fs.stat', { path, lstat: false });
  return hit && hit.result ? hit.result : null;
}

const sameFile = (a, b) => !!(a && b && a.dev === b.dev && a.ino === b.ino);
const sameBytes = (a, b) => sameFile(a, b) && a.size === b.size && String(a.mtime) === String(b.mtime) && String(a.ctime) === String(b.ctime);

// A read-only open the cache can answer for (see the header): the stat, or null.
function predictable(path, f) {
  if (f.write || f.wire.create || f.wire.truncate || f.wire.nofollow || f.wire.directory || f.wire.noatime || f.wire.sync || f.wire.dsync) return null;
  const st = cachedStat(path);
  if (!st || (st.mode & S_IFMT) !== S_IFREG) return null;
  const me = uid();
  if (me === null || me === undefined) return null;
  return cache.ownerMayRead(st, me) ? st : null;
}

// Node's mode argument (a number or an octal string, already validated) on the wire.
function wireMode(mode) {
  if (mode === undefined || mode === null) return {};
  return { mode: typeof mode === 'string' ? parseInt(mode, 8) : mode };
}

function newName() {
  return `${PREFIX}.${nextName++}`;
}

// open(path, flags, mode): the new fd number.
function* open(path, flags, mode) {
  const f = parseFlags(flags, mode, path);
  const F = { fd: nextFd++, name: null, path, wire: f.wire, mode, read: f.read, write: f.write, append: f.append, pos: 0, ident: null };
  const st = predictable(path, f);
  if (st) {
    yield ['*names', { path }]; // no call, but the path is still shown to the trust layer
    F.ident = st;
  } else {
    const name = newName();
    cache.fdPaths.set(name, path);
    let r;
    try {
      r = yield ['fs.open', { fd: name, path, flags: f.wire, ...wireMode(mode), ...(f.write ? {} : { ahead: AHEAD }) }];
    } catch (err) {
      cache.fdPaths.delete(name);
      throw err;
    }
    F.name = name;
    F.ident = r.stat;
  }
  table.set(F.fd, F);
  return F.fd;
}

// A descriptor over bytes held here (trust.cjs: an untrusted project's settings file as pi may
// see it): reads come from `bytes`, fstat is the file's stat `st` with their size; calls that
// need the file itself (fchmod, fsync…) open it then.
function openMemory(path, bytes, st) {
  const F = { fd: nextFd++, name: null, path, wire: { read: true }, mode: undefined, read: true, write: false, append: false, pos: 0, ident: st, mem: bytes };
  table.set(F.fd, F);
  return F.fd;
}

// The agent's descriptor for F, opened now if the open was deferred.
function* materialize(F) {
  if (F.name) return F.name;
  const name = newName();
  cache.fdPaths.set(name, F.path);
  let r;
  try {
    r = yield ['fs.open', { fd: name, path: F.path, flags: F.wire }];
  } catch (err) {
    cache.fdPaths.delete(name);
    throw err;
  }
  F.name = name;
  F.ident = r.stat;
  return name;
}

// ---- reading -----------------------------------------------------------------------------

// [offset, offset+length) of F's file from the cache, if the cache still describes F's file.
function fromCache(F, offset, length) {
  if (F.write || !F.ident) return null;
  const st = cachedStat(F.path);
  if (!sameBytes(st, F.ident)) return null;
  const hit = cache.lookup('fs.read', { path: F.path, offset, length });
  return hit && hit.result ? readData(hit.result.data).subarray(0, length) : null;
}

// Up to `length` bytes at `offset` (null: F's position, which then moves). A Buffer.
function* readBytes(fd, length, offset) {
  const F = get(fd, 'read');
  if (!F.read) throw fsError({ code: 'EBADF', syscall: 'read' });
  const at = offset === null || offset === undefined ? F.pos : offset;
  let data = F.mem ? F.mem.subarray(Math.min(at, F.mem.length), Math.min(at + Math.max(length, 0), F.mem.length)) : length > 0 ? fromCache(F, at, length) : Buffer.alloc(0);
  if (!data) {
    const name = yield* materialize(F);
    const r = yield ['fs.pread', { fd: name, offset: at, length: Math.min(length, MAX_CHUNK), raw: true }];
    data = readData(r.data);
  }
  if (offset === null || offset === undefined) F.pos = at + data.length;
  return data;
}

// fs.read / fs.readSync into `buffer` at `offset`: bytesRead.
function* read(fd, buffer, offset, length, position) {
  const data = yield* readBytes(fd, length, position);
  const view = Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength);
  return data.copy(view, offset, 0, Math.min(length, data.length));
}

// readv: one read for all the buffers, scattered in order. bytesRead.
function* readv(fd, buffers, position) {
  const total = buffers.reduce((n, b) => n + b.byteLength, 0);
  const data = yield* readAllFrom(fd, total, position);
  let at = 0;
  for (const b of buffers) {
    if (at >= data.length) break;
    at += data.copy(Buffer.from(b.buffer, b.byteOffset, b.byteLength), 0, at, at + b.byteLength);
  }
  return at;
}

// Up to `length` bytes (any size) at `position` (null: F's position): short only at the end.
function* readAllFrom(fd, length, position) {
  const parts = [];
  let got = 0;
  let pos = position;
  while (got < length) {
    const piece = yield* readBytes(fd, Math.min(length - got, MAX_CHUNK), pos);
    if (piece.length === 0) break;
    parts.push(piece);
    got += piece.length;
    if (pos !== null && pos !== undefined) pos += piece.length;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

// readFile(fd): from F's position to the end; the position moves to the end.
function* readRest(fd) {
  const F = get(fd, 'read');
  if (!F.read) throw fsError({ code: 'EBADF', syscall: 'read' });
  const parts = [];
  for (;;) {
    const piece = yield* readBytes(fd, MAX_CHUNK, null);
    if (piece.length === 0) break;
    parts.push(piece);
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

// ---- writing -----------------------------------------------------------------------------

// Write all of `data` at `position` (null: F's position, which then moves; an O_APPEND
// descriptor always appends, as Linux does). bytesWritten.
function* write(fd, data, position) {
  const F = get(fd, 'write');
  if (!F.write) throw fsError({ code: 'EBADF', syscall: 'write' });
  const name = yield* materialize(F);
  let at = position === null || position === undefined ? F.pos : position;
  for (let off = 0; off < data.length || (off === 0 && data.length === 0); off += MAX_CHUNK) {
    const piece = data.subarray(off, off + MAX_CHUNK).toString('base64');
    if (F.append) {
      const r = yield ['fs.fappend', { fd: name, data: piece }];
      F.pos = r.position;
    } else {
      const r = yield ['fs.pwrite', { fd: name, offset: at, data: piece }];
      at = r.position;
      if (position === null || position === undefined) F.pos = at;
    }
    if (data.length === 0) break;
  }
  return data.length;
}

// ---- metadata ----------------------------------------------------------------------------

// fstat: the cached stat of the path while it is F's file; else the agent's.
function* stat(fd, bigint) {
  const F = get(fd, 'fstat');
  if (F.mem) return makeStats({ ...F.ident, size: F.mem.length }, bigint);
  const st = cachedStat(F.path);
  if (sameFile(st, F.ident)) return makeStats(st, bigint);
  const name = yield* materialize(F);
  const s = yield ['fs.fstat', { fd: name }];
  F.ident = s;
  return makeStats(s, bigint);
}

function* fdCall(fd, syscall, method, params) {
  const F = get(fd, syscall);
  const name = yield* materialize(F);
  yield [method, { fd: name, ...params }];
}

function* truncate(fd, len) {
  const F = get(fd, 'ftruncate');
  // ftruncate(2) of a descriptor not open for writing: EINVAL, without asking.
  if (!F.write) throw fsError({ code: 'EINVAL', syscall: 'ftruncate' });
  yield* fdCall(fd, 'ftruncate', 'fs.ftruncate', { length: len });
}

const sync = (fd, data) => fdCall(fd, data ? 'fdatasync' : 'fsync', 'fs.fsync', data ? { data: true } : {});
const chmod = (fd, mode) => fdCall(fd, 'fchmod', 'fs.fchmod', { mode });
const chown = (fd, uid, gid) => fdCall(fd, 'fchown', 'fs.fchown', { ...(uid === -1 || uid === undefined ? {} : { uid }), ...(gid === -1 || gid === undefined ? {} : { gid }) });
const utimes = (fd, atime, mtime) => fdCall(fd, 'futime', 'fs.futimes', { atime, mtime });

// close: a read-only descriptor's close is sent without waiting for it.
function* close(fd) {
  const F = get(fd, 'close');
  table.delete(fd);
  if (!F.name) return;
  if (F.write) {
    try {
      yield ['fs.close', { fd: F.name }];
    } finally {
      cache.fdPaths.delete(F.name);
    }
    return;
  }
  cache.fdPaths.delete(F.name);
  yield ['*post', ['fs.close', { fd: F.name }]];
}

// The path and mode F was opened with (for Node calls that need them, e.g. readFile(fd) shapes).
const info = (fd) => table.get(fd);

module.exports = { FIRST_FD, isVirtual, get, info, parseFlags, open, openMemory, read, readv, readBytes, readAllFrom, readRest, write, stat, truncate, sync, chmod, chown, utimes, close };
