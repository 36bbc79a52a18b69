'use strict';
// The table of routed fs operations. Each entry says which arguments are paths (or a virtual
// fd) and how to do the operation as a generator of remote calls (see run.cjs); fs.cjs turns
// every entry into its sync, callback and promise forms. `c` is the call context:
//   c.p[i]    absolute remote path of path argument i      c.disp[i]  the path as the user gave it
//   c.form    'sync' | 'callback' | 'promise'

const fs = require('fs');
const path = require('path');
const { MAX_CHUNK } = require('./wire.cjs');
const { fsError, errnoOf, WIRE, AbortError, SystemError, NodeError, systemError } = require('./errors.cjs');
const { makeStats, makeDirent } = require('./stats.cjs');
const fds = require('./fds.cjs');
const { MISSING } = require('./cache.cjs');

const b64 = (buf) => buf.toString('base64');
const unb64 = (s) => Buffer.from(s || '', 'base64');

// Node's option shorthands: a string is the encoding; null/undefined the defaults.
function opts(o, defaults) {
  if (o === null || o === undefined || typeof o === 'function') return { ...defaults };
  if (typeof o === 'string') return { ...defaults, encoding: o };
  return { ...defaults, ...o };
}

function encodeOut(buf, encoding) {
  return encoding && encoding !== 'buffer' ? buf.toString(encoding) : buf;
}

function encodeName(name, encoding) {
  if (encoding === 'buffer') return Buffer.from(name, 'utf8');
  if (encoding && encoding !== 'utf8' && encoding !== 'utf-8' && Buffer.isEncoding(encoding)) return Buffer.from(name, 'utf8').toString(encoding);
  return name;
}

// readFile/writeFile/appendFile (callback and promise forms) honour an already-aborted signal
// before touching the file, as Node does.
function checkSignal(c, o) {
  const signal = o && typeof o === 'object' ? o.signal : undefined;
  if (c.form !== 'sync' && signal && signal.aborted) throw new AbortError(undefined, { cause: signal.reason });
}

function toBuffer(data, encoding) {
  if (typeof data === 'string') return Buffer.from(data, encoding || 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(String(data), encoding || 'utf8');
}

function parseMode(mode, dflt) {
  if (mode === undefined || mode === null) return dflt;
  if (typeof mode === 'string') return parseInt(mode, 8);
  return mode;
}

// Node's flags → the wire's whole-file write flag (w, wx, a, ax).
function writeFlag(flag, dflt) {
  if (flag === undefined || flag === null) return dflt;
  if (typeof flag === 'number') {
    const { O_APPEND, O_EXCL } = fs.constants;
    return (flag & O_APPEND ? 'a' : 'w') + (flag & O_EXCL ? 'x' : '');
  }
  const f = String(flag);
  return (f.includes('a') ? 'a' : 'w') + (f.includes('x') ? 'x' : '');
}

// Node's toUnixTimestamp, then [sec, nsec].
function toTime(t) {
  let secs;
  if (typeof t === 'string' && +t == t) secs = +t; // eslint-disable-line eqeqeq
  else if (typeof t === 'number' && Number.isFinite(t)) secs = t < 0 ? Date.now() / 1000 : t;
  else if (t instanceof Date) secs = t.getTime() / 1000;
  else if (typeof t === 'bigint') secs = Number(t);
  else {
    const err = new TypeError(`The "time" argument must be of type number. Received ${typeof t}`);
    err.code = 'ERR_INVALID_ARG_TYPE';
    throw err;
  }
  const sec = Math.floor(secs);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((secs - sec) * 1e9)));
  return [sec, nsec];
}

// Pipelined reads of big files: after the first read (which tells the size), the rest goes in
// READ_CHUNK pieces with READ_WINDOW of them in flight (the `*readRange` pseudo-call, see run.cjs
// and worker.cjs), so the agent, ssh, pii and node work on different chunks at once.
const READ_CHUNK = 1024 * 1024;
const READ_WINDOW = 4;

const asBuffer = (u) => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

// Read a remote file from `start` to its end (its size as of the latest read), in pieces.
function* readAll(p, start = 0) {
  const parts = [];
  let offset = start;
  for (;;) {
    const r = yield ['fs.read', { path: p, offset, length: READ_CHUNK }];
    const data = unb64(r.data);
    if (data.length === 0) break;
    parts.push(data);
    offset += data.length;
    if (offset >= r.size) break;
    const rr = yield ['*readRange', { path: p, offset, end: r.size, chunk: READ_CHUNK, window: READ_WINDOW }];
    let last = -1;
    for (const u of rr.parts) {
      const b = asBuffer(u);
      parts.push(b);
      offset += b.length;
      last = b.length;
    }
    // The file changed while it was read: go on one read at a time, as before.
    if (last === 0 || offset >= rr.size) break;
  }
  return parts.length === 1 ? parts[0] : Buffer.concat(parts);
}

// Write a whole file: one fs.write when it fits, else an upload (atomic, bounded frames).
function* writeAll(p, buf, flag, mode) {
  if (buf.length <= MAX_CHUNK) {
    yield ['fs.write', { path: p, data: b64(buf), flag, ...(mode === undefined ? {} : { mode }) }];
    return;
  }
  const { id } = yield ['fs.upload.begin', { path: p, flag, ...(mode === undefined ? {} : { mode }) }];
  try {
    for (let off = 0; off < buf.length; off += MAX_CHUNK) {
      yield ['fs.upload.chunk', { id, data: b64(buf.subarray(off, off + MAX_CHUNK)) }];
    }
    yield ['fs.upload.commit', { id }];
  } catch (err) {
    try {
      yield ['fs.upload.abort', { id }];
    } catch {
      /* the first error is the one to report */
    }
    throw err;
  }
}

function* writeFileOp(c, _p, data, o, dfltFlag) {
  checkSignal(c, o);
  const { encoding, flag, mode } = opts(o, {});
  let buf = toBuffer(data, encoding);
  if (c.fd !== undefined) {
    // On an fd, Node writes at the fd's position (appendFile: at its end).
    yield* fds.write(c.fd, [buf]);
    return;
  }
  const rw = typeof flag === 'string' ? /^r\+|^rs\+/.test(flag) : typeof flag === 'number' && (flag & fs.constants.O_RDWR) && !(flag & (fs.constants.O_CREAT | fs.constants.O_TRUNC | fs.constants.O_APPEND));
  if (rw) {
    // r+: overwrite from the start, keep the rest; the file must exist (ENOENT from open).
    let old;
    try {
      old = yield* readAll(c.p[0]);
    } catch (err) {
      const w = err[WIRE];
      throw w ? fsError({ ...w, syscall: 'open' }) : err;
    }
    if (old.length > buf.length) buf = Buffer.concat([buf, old.subarray(buf.length)]);
    yield* writeAll(c.p[0], buf, 'w', undefined);
    return;
  }
  yield* writeAll(c.p[0], buf, writeFlag(flag, dfltFlag), parseMode(mode, undefined));
}

function* statOp(c, lstat, o) {
  const { bigint, throwIfNoEntry } = opts(o, {});
  try {
    return makeStats(yield ['fs.stat', { path: c.p[0], lstat }], bigint);
  } catch (err) {
    if (c.form === 'sync' && throwIfNoEntry === false && err.code === 'ENOENT') return undefined;
    throw err;
  }
}

// fs.cp for routed → routed: files, and trees with `recursive` (dirs, files, symlinks).
function* cpOp(c, o) {
  const { recursive, force = true, errorOnExist = false, dereference = false } = opts(o, {});
  const [src, dest] = c.p;
  const st = yield ['fs.stat', { path: src, lstat: !dereference }];
  const shown = (abs) => (abs === dest ? c.disp[1] : path.join(c.disp[1], path.relative(dest, abs)));
  const copyOne = function* (from, to) {
    try {
      yield ['fs.copyFile', { from, to, exclusive: !force }];
    } catch (err) {
      if (err.code !== 'EEXIST' || force) throw err;
      if (errorOnExist) throw systemError(NodeError, 'ERR_FS_CP_EEXIST', 'Target already exists', { message: `${shown(to)} already exists`, path: shown(to), syscall: 'cp', errno: -errnoOf('EEXIST'), code: 'EEXIST' });
    }
  };
  if ((st.mode & 0o170000) === 0o120000) return yield ['fs.symlink', { target: yield ['fs.readlink', { path: src }], path: dest }];
  if ((st.mode & 0o170000) !== 0o040000) return yield* copyOne(src, dest);
  if (!recursive) throw systemError(NodeError, 'ERR_FS_EISDIR', 'Path is a directory', { message: `${c.disp[0]} is a directory (not copied)`, path: c.disp[0], syscall: 'cp', errno: -errnoOf('EINVAL'), code: 'EISDIR' });
  yield ['fs.mkdir', { path: dest, recursive: true }];
  for (const e of yield ['fs.readdir', { path: src, recursive: true }]) {
    const from = path.join(src, e.name);
    const to = path.join(dest, e.name);
    if (e.kind === 'dir') yield ['fs.mkdir', { path: to, recursive: true }];
    else if (e.kind === 'symlink') yield ['fs.symlink', { target: yield ['fs.readlink', { path: from }], path: to }];
    else yield* copyOne(from, to);
  }
}

// Node's JS fs.realpath walks the path with lstat (and stat on each symlink) and reports the
// first failure with that syscall and the absolute path; the agent resolves in one call, so on
// failure walk the components to name the same syscall and path.
function* realpathFailure(abs, err) {
  // Walk from the route that holds abs (nothing above it is the agent's to look at).
  const route = require('./route.cjs');
  const root = route.state.routes.filter((r) => abs === r || abs.startsWith(r.endsWith('/') ? r : `${r}/`)).sort((x, y) => y.length - x.length)[0] || '';
  const parts = abs.slice(root.length).split('/').filter(Boolean);
  let cur = root === '/' ? '' : root;
  for (const part of parts) {
    cur += `/${part}`;
    let st;
    try {
      st = yield ['fs.stat', { path: cur, lstat: true }];
    } catch (e) {
      if (e[WIRE]) throw fsError({ ...e[WIRE], syscall: 'lstat', path: cur });
      throw e;
    }
    if ((st.mode & 0o170000) === 0o120000) {
      try {
        yield ['fs.stat', { path: cur, lstat: false }];
      } catch (e) {
        if (e[WIRE]) throw fsError({ ...e[WIRE], syscall: 'stat', path: cur });
        throw e;
      }
    }
  }
  throw err;
}

// fs.Dir over one remote listing (opendir): read/readSync/close/closeSync and async iteration.
function makeDir(disp, dirents) {
  let i = 0;
  let closed = false;
  const next = () => (i < dirents.length ? dirents[i++] : null);
  const later = (cb, ...a) => process.nextTick(cb, ...a);
  return {
    path: disp,
    readSync: next,
    read(cb) {
      if (typeof cb === 'function') return later(cb, null, next());
      return Promise.resolve(next());
    },
    closeSync() {
      closed = true;
    },
    close(cb) {
      closed = true;
      if (typeof cb === 'function') return later(cb, null);
      return Promise.resolve();
    },
    async *[Symbol.asyncIterator]() {
      for (let d; !closed && (d = next()) !== null; ) yield d;
      closed = true;
    },
    *[Symbol.iterator]() {
      for (let d; !closed && (d = next()) !== null; ) yield d;
      closed = true;
    },
  };
}

// chown has no agent method: the ids as they are is a stat (Node's errors, syscall chown);
// other ids run the remote's chown(1) as the ssh user, which fails with EPERM as chown(2) would.
function* chownOp(abs, uid, gid, noFollow) {
  let st;
  try {
    st = yield ['fs.stat', { path: abs, lstat: noFollow }];
  } catch (err) {
    const w = err[WIRE];
    throw w ? fsError({ ...w, syscall: noFollow ? 'lchown' : 'chown' }) : err;
  }
  const same = (want, have) => want === -1 || want === undefined || want === have;
  if (same(uid, st.uid) && same(gid, st.gid)) return;
  const route = require('./route.cjs');
  const ids = `${uid === -1 ? '' : uid}:${gid === -1 ? '' : gid}`;
  const r = yield ['proc.run', { spawn: { file: 'chown', args: [...(noFollow ? ['-h'] : []), ids, '--', abs], cwd: route.state.routes[0] || '/', env: { LC_ALL: 'C' }, unset: [], stdin: false, stdout: true, stderr: true }, killSignal: 'SIGTERM' }];
  if (r.error || r.code !== 0) throw fsError({ code: 'EPERM', syscall: noFollow ? 'lchown' : 'chown', path: abs });
}

const fdArg = { fd: true };

const OPS = {
  access: {
    paths: [0],
    *run(c, _p, mode) {
      yield ['fs.access', { path: c.p[0], mode: mode == null ? 0 : mode }];
    },
  },
  exists: {
    paths: [0],
    *run(c) {
      try {
        return (yield ['fs.stat', { path: c.p[0], lstat: false }, true]) !== MISSING;
      } catch {
        return false;
      }
    },
  },
  stat: { paths: [0], *run(c, _p, o) { return yield* statOp(c, false, o); } },
  chown: {
    paths: [0],
    *run(c, _p, uid, gid) {
      yield* chownOp(c.p[0], uid, gid, false);
    },
  },
  lchown: {
    paths: [0],
    *run(c, _p, uid, gid) {
      yield* chownOp(c.p[0], uid, gid, true);
    },
  },
  fsync: { ...fdArg, *run(c, fd) { yield* fds.sync(fd); } },
  fdatasync: { ...fdArg, *run(c, fd) { yield* fds.sync(fd); } },
  ftruncate: { ...fdArg, *run(c, fd, len) { yield* fds.truncate(fd, len); } },
  lstat: { paths: [0], *run(c, _p, o) { return yield* statOp(c, true, o); } },
  readdir: {
    paths: [0],
    *run(c, _p, o) {
      const { encoding, withFileTypes, recursive } = opts(o, { encoding: 'utf8' });
      const entries = yield ['fs.readdir', { path: c.p[0], recursive: !!recursive }];
      if (!withFileTypes) return entries.map((e) => encodeName(e.name, encoding));
      return entries.map((e) => {
        const slash = e.name.lastIndexOf('/');
        const parent = slash < 0 ? c.disp[0] : path.join(c.disp[0], e.name.slice(0, slash));
        return makeDirent(encodeName(e.name.slice(slash + 1), encoding), e.kind, parent);
      });
    },
  },
  readFile: {
    paths: [0],
    fdOk: true,
    // Node reports a directory as `EISDIR: …, read` without a path.
    errShape: (e) => (e.code === 'EISDIR' ? { syscall: 'read', path: undefined } : null),
    *run(c, _p, o) {
      checkSignal(c, o);
      const { encoding } = opts(o, {});
      if (c.fd !== undefined) return encodeOut(yield* fds.readRest(c.fd), encoding);
      return encodeOut(yield* readAll(c.p[0]), encoding);
    },
  },
  writeFile: { paths: [0], fdOk: true, *run(c, p, data, o) { yield* writeFileOp(c, p, data, o, 'w'); } },
  appendFile: { paths: [0], fdOk: true, *run(c, p, data, o) { yield* writeFileOp(c, p, data, o, 'a'); } },
  mkdir: {
    paths: [0],
    *run(c, _p, o) {
      const { recursive, mode } = typeof o === 'number' || typeof o === 'string' ? { mode: o } : opts(o, {});
      const m = parseMode(mode, undefined);
      const r = yield ['fs.mkdir', { path: c.p[0], recursive: !!recursive, ...(m === undefined ? {} : { mode: m }) }];
      if (!recursive) return undefined;
      return r && r.first ? path.join(c.disp[0], path.relative(c.p[0], r.first)) : undefined;
    },
  },
  rmdir: {
    paths: [0],
    *run(c, _p, o) {
      if (o && o.recursive) yield ['fs.rm', { path: c.p[0], recursive: true, force: false }];
      else yield ['fs.rmdir', { path: c.p[0] }];
    },
  },
  rm: {
    paths: [0],
    errShape: (e) => (e.code === 'EISDIR' && e.syscall === 'rm' ? { systemError: 'ERR_FS_EISDIR' } : null),
    *run(c, _p, o) {
      const { recursive, force } = opts(o, {});
      yield ['fs.rm', { path: c.p[0], recursive: !!recursive, force: !!force }];
    },
  },
  unlink: { paths: [0], *run(c) { yield ['fs.unlink', { path: c.p[0] }]; } },
  rename: {
    paths: [0, 1],
    errShape: (e, c) => ({ syscall: 'rename', path: c.disp[0], dest: c.disp[1] }),
    *run(c) {
      yield ['fs.rename', { from: c.p[0], to: c.p[1] }];
    },
  },
  copyFile: {
    paths: [0, 1],
    errShape: (e, c) => ({ syscall: 'copyfile', path: c.disp[0], dest: c.disp[1] }),
    *run(c, _s, _d, mode) {
      yield ['fs.copyFile', { from: c.p[0], to: c.p[1], exclusive: !!((mode | 0) & fs.constants.COPYFILE_EXCL) }];
    },
  },
  link: {
    paths: [0, 1],
    errShape: (e, c) => ({ syscall: 'link', path: c.disp[0], dest: c.disp[1] }),
    *run(c) {
      yield ['fs.link', { from: c.p[0], to: c.p[1] }];
    },
  },
  symlink: {
    paths: [1], // the target is only text
    errShape: (e, c) => ({ syscall: 'symlink', path: c.args[0], dest: c.disp[0] }),
    *run(c, target) {
      yield ['fs.symlink', { target: String(target), path: c.p[0] }];
    },
  },
  // fs.realpathSync / fs.realpath: Node's JS walk (errors name lstat/stat and the absolute path).
  realpathJs: {
    paths: [0],
    absPaths: true, // its errors name the absolute path walked
    *run(c, _p, o) {
      const { encoding } = opts(o, {});
      let r;
      try {
        r = yield ['fs.realpath', { path: c.p[0] }];
      } catch (err) {
        if (!err[WIRE]) throw err;
        yield* realpathFailure(c.p[0], err);
      }
      return encoding === 'buffer' ? Buffer.from(r) : r;
    },
  },
  // fs.promises.realpath and the .native forms: realpath(3), errors name `realpath`.
  realpath: {
    paths: [0],
    *run(c, _p, o) {
      const { encoding } = opts(o, {});
      const r = yield ['fs.realpath', { path: c.p[0] }];
      return encoding === 'buffer' ? Buffer.from(r) : r;
    },
  },
  readlink: {
    paths: [0],
    *run(c, _p, o) {
      const { encoding } = opts(o, {});
      const r = yield ['fs.readlink', { path: c.p[0] }];
      return encoding === 'buffer' ? Buffer.from(r) : r;
    },
  },
  chmod: {
    paths: [0],
    *run(c, _p, mode) {
      yield ['fs.chmod', { path: c.p[0], mode: parseMode(mode, 0) }];
    },
  },
  utimes: {
    paths: [0],
    errShape: () => ({ syscall: 'utime' }),
    *run(c, _p, atime, mtime) {
      yield ['fs.utimes', { path: c.p[0], atime: toTime(atime), mtime: toTime(mtime), lstat: false }];
    },
  },
  lutimes: {
    paths: [0],
    errShape: () => ({ syscall: 'lutime' }),
    *run(c, _p, atime, mtime) {
      yield ['fs.utimes', { path: c.p[0], atime: toTime(atime), mtime: toTime(mtime), lstat: true }];
    },
  },
  truncate: {
    paths: [0],
    *run(c, _p, len) {
      yield ['fs.truncate', { path: c.p[0], length: Math.max(0, len | 0) }];
    },
  },
  mkdtemp: {
    paths: [0],
    errShape: (e, c) => ({ syscall: 'mkdtemp', path: `${c.disp[0]}XXXXXX` }),
    *run(c, _prefix, o) {
      const { encoding } = opts(o, {});
      const r = yield ['fs.mkdtemp', { prefix: c.p[0] }];
      // Keep the caller's (possibly relative) prefix, as Node does.
      const made = c.disp[0] + r.slice(c.p[0].length);
      return encoding === 'buffer' ? Buffer.from(made) : made;
    },
  },
  cp: {
    paths: [0, 1],
    *run(c, _s, _d, o) {
      yield* cpOp(c, o);
    },
  },
  opendir: {
    paths: [0],
    // Node's opendirSync names no path in its errors; the callback and promise forms do.
    errShape: (e, c) => (c.form === 'sync' ? { syscall: 'opendir', path: undefined } : { syscall: 'opendir' }),
    *run(c) {
      const entries = yield ['fs.readdir', { path: c.p[0], recursive: false }];
      return makeDir(c.disp[0], entries.map((e) => makeDirent(e.name, e.kind, c.disp[0])));
    },
  },
  open: {
    paths: [0],
    errShape: () => ({ syscall: 'open' }),
    *run(c, _p, flags, mode) {
      const fd = yield* fds.open(c.p[0], flags === undefined || flags === null ? 'r' : flags, parseMode(mode, undefined));
      return c.form === 'promise' ? fds.handle(fd) : fd;
    },
  },
  // Operations on virtual fds (fds.cjs): the first argument is the fd.
  read: {
    ...fdArg,
    syncOut: (v) => v.bytesRead,
    cbArgs: (v) => [v.bytesRead, v.buffer],
    *run(c, fd, ...rest) {
      return yield* fds.read(fd, c.form, rest);
    },
  },
  write: {
    ...fdArg,
    syncOut: (v) => v.bytesWritten,
    cbArgs: (v) => [v.bytesWritten, v.buffer],
    *run(c, fd, ...rest) {
      return yield* fds.write(fd, rest);
    },
  },
  close: { ...fdArg, *run(c, fd) { yield* fds.close(fd); } },
  fstat: { ...fdArg, *run(c, fd, o) { return yield* fds.stat(fd, opts(o, {})); } },
};

// Rebuild a wire error the way Node would have reported this call.
function reshape(err, op, c) {
  const wire = err && err[WIRE];
  if (!wire) return err;
  const e = { ...wire };
  if (!op.absPaths) c.p.forEach((abs, i) => {
    if (e.path === abs) e.path = c.disp[i];
    if (e.dest === abs) e.dest = c.disp[i];
  });
  const shape = op.errShape ? op.errShape(e, c) : null;
  if (shape && shape.systemError) return systemError(SystemError, shape.systemError, 'Path is a directory', { code: 'EISDIR', message: 'is a directory', path: e.path, syscall: 'rm', errno: -errnoOf('EISDIR') });
  const out = fsError({ ...e, ...shape });
  out.stack = `${out.message}\n${err.stack.split('\n').slice(1).join('\n')}`;
  return out;
}

module.exports = { OPS, reshape, opts, toBuffer, readAll, writeAll, unb64, b64 };
