'use strict';
// Virtual file descriptors for routed paths, numbered from 1<<24 (no real fd gets that high).
// Reads go to the remote at the requested offset; writes are kept locally and committed as one
// atomic whole-file write (or append) at close, so a dropped connection never leaves half a file.

const fs = require('fs');
const { fsError } = require('./errors.cjs');
const { makeStats } = require('./stats.cjs');
const { MAX_CHUNK, readData } = require('./wire.cjs');

const READ_AHEAD = 64 * 1024;

const FIRST_FD = 1 << 24;
const HANDLE = Symbol('pi-bridge.FileHandle');
const isHandle = (h) => !!(h && typeof h === 'object' && h[HANDLE]);
let nextFd = FIRST_FD;
const table = new Map(); // fd → {path, mode: 'r'|'w'|'a'|'r+', pos, buf, chunks, dirty, size}


function isVirtual(fd) {
  return typeof fd === 'number' && fd >= FIRST_FD && table.has(fd);
}

function get(fd, syscall = 'read') {
  const f = table.get(fd);
  if (!f) throw fsError({ code: 'EBADF', syscall });
  return f;
}

// 'r' | 'r+' | 'w' | 'wx' | 'a' | 'ax' … (or O_* numbers) → {mode, flag}
function parseFlags(flags) {
  if (typeof flags === 'number') {
    const { O_WRONLY, O_RDWR, O_APPEND, O_EXCL, O_TRUNC, O_CREAT } = fs.constants;
    const x = flags & O_EXCL ? 'x' : '';
    if (flags & O_APPEND) return { mode: 'a', flag: 'a' + x };
    if (flags & (O_TRUNC | O_CREAT)) return { mode: 'w', flag: 'w' + x };
    if (flags & (O_WRONLY | O_RDWR)) return { mode: 'r+' };
    return { mode: 'r' };
  }
  const f = String(flags).replace('s', '');
  const x = f.includes('x') ? 'x' : '';
  if (f.startsWith('a')) return { mode: 'a', flag: 'a' + x };
  if (f.startsWith('w')) return { mode: 'w', flag: 'w' + x };
  if (f === 'r+') return { mode: 'r+' };
  return { mode: 'r' };
}

function* open(p, flags, mode) {
  const { mode: kind, flag } = parseFlags(flags);
  let size = 0;
  if (flag) {
    // Create (or truncate) now, as open(2) would, so EEXIST/EISDIR/ENOENT surface here.
    yield ['fs.write', { path: p, data: '', flag, ...(mode === undefined ? {} : { mode }) }];
  } else {
    const st = yield ['fs.stat', { path: p, lstat: false }];
    size = st.size;
  }
  const fd = nextFd++;
  table.set(fd, { path: p, mode: kind, pos: 0, buf: kind === 'w' ? Buffer.alloc(0) : null, chunks: [], dirty: false, size });
  return fd;
}

// Node's read argument shapes → {buffer, offset, length, position}.
function readArgs(rest) {
  let [buffer, offset, length, position] = rest;
  if (buffer && !ArrayBuffer.isView(buffer) && typeof buffer === 'object') {
    ({ buffer = Buffer.alloc(16384), offset = 0, length, position = null } = buffer);
  } else if (buffer === undefined) {
    buffer = Buffer.alloc(16384);
  } else if (offset !== null && typeof offset === 'object') {
    ({ offset = 0, length, position = null } = offset);
  }
  offset = offset || 0;
  if (length === undefined || length === null) length = buffer.byteLength - offset;
  if (typeof position === 'bigint') position = Number(position);
  return { buffer, offset, length, position };
}

function* read(fd, _form, rest) {
  const f = get(fd);
  const { buffer, offset, length, position } = readArgs(rest);
  const at = typeof position === 'number' && position >= 0 ? position : f.pos;
  let bytesRead = 0;
  if (f.mode === 'w') {
    bytesRead = f.buf.copy(Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength), offset, at, at + length);
  } else if (length > 0) {
    // A small read at the start of a file asks for its first READ_AHEAD bytes as a (cacheable)
    // JSON answer: a file-type sniff followed by readFile (pi's read tool) is then one round trip.
    const ahead = at === 0 && length < READ_AHEAD;
    const q = ahead ? { path: f.path, offset: 0, length: READ_AHEAD } : { path: f.path, offset: at, length: Math.min(length, MAX_CHUNK), raw: true };
    const r = yield ['fs.read', q];
    const data = readData(r.data).subarray(0, length);
    bytesRead = data.copy(Buffer.from(buffer.buffer, buffer.byteOffset, buffer.byteLength), offset);
  }
  if (!(typeof position === 'number' && position >= 0)) f.pos += bytesRead;
  return { bytesRead, buffer };
}

// Node's write argument shapes → {data, position}.
function writeArgs(rest) {
  const [first, a, b, c] = rest;
  if (typeof first === 'string') return { data: Buffer.from(first, typeof b === 'string' ? b : 'utf8'), position: a, buffer: first };
  const whole = Buffer.from(first.buffer, first.byteOffset, first.byteLength);
  let offset = a;
  let length = b;
  let position = c;
  if (a !== null && typeof a === 'object') ({ offset = 0, length, position = null } = a);
  offset = offset || 0;
  if (length === undefined || length === null) length = whole.length - offset;
  return { data: whole.subarray(offset, offset + length), position, buffer: first };
}

function* write(fd, rest) {
  const f = get(fd, 'write');
  const { data, position, buffer } = writeArgs(rest);
  if (f.mode === 'r') throw fsError({ code: 'EBADF', syscall: 'write' });
  if (f.mode === 'r+' && f.buf === null) {
    // First write into an existing file: take its current bytes as the base.
    const { readAll } = require('./fsops.cjs');
    f.buf = yield* readAll(f.path);
    f.mode = 'w';
  }
  if (f.mode === 'a') f.chunks.push(Buffer.from(data));
  else {
    const at = typeof position === 'number' && position >= 0 ? position : f.pos;
    if (at + data.length > f.buf.length) {
      const grown = Buffer.alloc(at + data.length);
      f.buf.copy(grown);
      f.buf = grown;
    }
    data.copy(f.buf, at);
    if (!(typeof position === 'number' && position >= 0)) f.pos = at + data.length;
  }
  f.dirty = true;
  return { bytesWritten: data.length, buffer };
}

function* close(fd) {
  const f = get(fd, 'close');
  table.delete(fd);
  if (!f.dirty) return;
  const { writeAll } = require('./fsops.cjs');
  if (f.mode === 'a') yield* writeAll(f.path, Buffer.concat(f.chunks), 'a', undefined);
  else yield* writeAll(f.path, f.buf, 'w', undefined);
}

// fsync/fdatasync: commit what was written so far (the same atomic whole-file write as close).
function* sync(fd) {
  const f = get(fd, 'fsync');
  if (!f.dirty) return;
  const { writeAll } = require('./fsops.cjs');
  if (f.mode === 'a') {
    const data = Buffer.concat(f.chunks);
    f.chunks = [];
    yield* writeAll(f.path, data, 'a', undefined);
  } else yield* writeAll(f.path, f.buf, 'w', undefined);
  f.dirty = false;
}

function* truncate(fd, len) {
  const f = get(fd, 'ftruncate');
  if (f.mode === 'r') throw fsError({ code: 'EINVAL', syscall: 'ftruncate' });
  len = Math.max(0, len | 0);
  if (f.buf === null) {
    const { readAll } = require('./fsops.cjs');
    f.buf = f.mode === 'a' ? Buffer.alloc(0) : yield* readAll(f.path);
  }
  if (f.mode !== 'a') f.mode = 'w';
  const next = Buffer.alloc(len);
  f.buf.copy(next, 0, 0, len);
  f.buf = next;
  f.dirty = true;
}

// readFile(fd): from the fd's position to the end; the position moves to the end.
function* readRest(fd) {
  const f = get(fd);
  if (f.mode === 'w') {
    const out = Buffer.from(f.buf.subarray(f.pos));
    f.pos = f.buf.length;
    return out;
  }
  const { readAll } = require('./fsops.cjs');
  const out = yield* readAll(f.path, f.pos);
  f.pos += out.length;
  return out;
}

function* stat(fd, o) {
  const f = get(fd, 'fstat');
  return makeStats(yield ['fs.stat', { path: f.path, lstat: false }], o && o.bigint);
}

// A FileHandle-like object for fs.promises.open on a routed path.
function handle(fd) {
  const { runAsync } = require('./run.cjs');
  const fsops = require('./fsops.cjs');
  const h = {
    fd,
    [HANDLE]: true,
    read: (...rest) => runAsync(read(fd, 'promise', rest)),
    write: (...rest) => runAsync(write(fd, rest)),
    stat: (o) => runAsync(stat(fd, o)),
    async readFile(o) {
      const f = get(fd);
      const { encoding } = fsops.opts(o, {});
      const buf = await runAsync(fsops.readAll(f.path));
      return encoding && encoding !== 'buffer' ? buf.toString(encoding) : buf;
    },
    async writeFile(data, o) {
      const { encoding } = fsops.opts(o, {});
      const f = get(fd, 'write');
      if (f.mode !== 'a') f.pos = 0;
      await runAsync(write(fd, [fsops.toBuffer(data, encoding)]));
    },
    async appendFile(data, o) {
      const { encoding } = fsops.opts(o, {});
      await runAsync(write(fd, [fsops.toBuffer(data, encoding)]));
    },
    async truncate(len = 0) {
      const f = get(fd, 'ftruncate');
      if (f.mode === 'r') throw fsError({ code: 'EINVAL', syscall: 'ftruncate' });
      if (f.buf === null) f.buf = await runAsync(fsops.readAll(f.path));
      f.mode = 'w';
      const next = Buffer.alloc(len);
      f.buf.copy(next, 0, 0, len);
      f.buf = next;
      f.dirty = true;
    },
    // A Readable over the file from `start` (default: the handle's position); closes the handle
    // at its end unless `autoClose: false` (pi 1.x's read tool streams this way).
    createReadStream(o) {
      const f = get(fd);
      const options = typeof o === 'string' ? { encoding: o } : { ...o };
      if (options.start === undefined) options.start = f.pos;
      const s = require('./streams.cjs').readStream(f.path, undefined, options);
      if (options.autoClose !== false) s.once('close', () => h.close().catch(() => {}));
      return s;
    },
    sync: () => runAsync(sync(fd)),
    datasync: () => runAsync(sync(fd)),
    close: () => (table.has(fd) ? runAsync(close(fd)) : Promise.resolve()),
    [Symbol.asyncDispose]() {
      return h.close();
    },
  };
  return h;
}

module.exports = { isHandle, isVirtual, get, open, read, write, close, stat, sync, truncate, readRest, handle, FIRST_FD };
