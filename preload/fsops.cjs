'use strict';
// The table of routed fs operations. Each entry says which arguments are paths (or a virtual
// fd) and how to do the operation as a generator of remote calls (see run.cjs); fs.cjs turns
// every entry into its sync, callback and promise forms. `c` is the call context:
//   c.p[i]    absolute remote path of path argument i      c.disp[i]  the path as the user gave it
//   c.form    'sync' | 'callback' | 'promise'
// Argument checks are Node's own (fs.cjs runs the original function on stand-ins first, see
// shapes.cjs); what differs between Node versions after that is asked of Node too (shapes.cjs).

const fs = require('fs');
const path = require('path');
const { MAX_CHUNK } = require('./wire.cjs');
const { fsError, errnoOf, WIRE, systemError, NodeError } = require('./errors.cjs');
const { makeStats, makeStatFs, makeDirent } = require('./stats.cjs');
const fds = require('./fds.cjs');
const { handle: fileHandle, isHandle } = require('./filehandle.cjs');
const { MISSING } = require('./cache.cjs');
const { opts, encodeOut, toBuffer, isIterable, writeDataOf, parseMode, toTime } = require('./fsdata.cjs');
const shapes = require('./shapes.cjs');
const { makeDir } = require('./dir.cjs');

const b64 = (buf) => buf.toString('base64');
const unb64 = (s) => Buffer.from(s || '', 'base64');

function encodeName(name, encoding) {
  if (encoding === 'buffer') return Buffer.from(name, 'utf8');
  if (encoding && encoding !== 'utf8' && encoding !== 'utf-8' && Buffer.isEncoding(encoding)) return Buffer.from(name, 'utf8').toString(encoding);
  return name;
}

// readFile/writeFile/appendFile (callback and promise forms) honour an already-aborted signal
// before touching the file, as Node does.
function checkSignal(c, o) {
  const signal = o && typeof o === 'object' ? o.signal : undefined;
  if (c.form !== 'sync' && signal && signal.aborted) {
    const { AbortError } = require('./errors.cjs');
    throw new AbortError(undefined, { cause: signal.reason });
  }
}

// Node's whole-file write flags that the agent's `fs.write` (one call, in place) does: w, wx, a,
// ax, as strings or their numbers. Anything else goes through a descriptor.
function simpleWriteFlag(flag, dflt) {
  if (flag === undefined || flag === null) return dflt;
  if (typeof flag === 'string') return ['w', 'wx', 'xw', 'a', 'ax', 'xa'].includes(flag) ? (flag.includes('a') ? 'a' : 'w') + (flag.includes('x') ? 'x' : '') : null;
  if (typeof flag === 'number') {
    const { O_WRONLY, O_CREAT, O_TRUNC, O_APPEND, O_EXCL } = fs.constants;
    const x = flag & O_EXCL;
    if ((flag & ~O_EXCL) === (O_WRONLY | O_CREAT | O_TRUNC)) return x ? 'wx' : 'w';
    if ((flag & ~O_EXCL) === (O_WRONLY | O_CREAT | O_APPEND)) return x ? 'ax' : 'a';
  }
  return null;
}

// Pipelined reads of big files: after the first read (which tells the size), the rest goes in
// READ_CHUNK pieces with READ_WINDOW of them in flight (the `*readRange` pseudo-call, see run.cjs
// and worker.cjs), so the agent, ssh, pii and node work on different chunks at once.
const READ_CHUNK = 1024 * 1024;
const READ_WINDOW = 4;

const asBuffer = (u) => (Buffer.isBuffer(u) ? u : Buffer.from(u.buffer, u.byteOffset, u.byteLength));

// Read a remote file from `start` to its end (its size as of the latest read), in pieces. An
// AbortSignal is checked after each piece, as Node's readFile checks it between its reads.
function* readAll(p, start = 0, signal = null) {
  const parts = [];
  let offset = start;
  const check = () => {
    if (signal && signal.aborted) {
      const { AbortError } = require('./errors.cjs');
      throw new AbortError(undefined, { cause: signal.reason });
    }
  };
  for (;;) {
    const r = yield ['fs.read', { path: p, offset, length: READ_CHUNK }];
    check();
    const data = unb64(r.data);
    if (data.length === 0) break;
    parts.push(data);
    offset += data.length;
    if (offset >= r.size) break;
    const rr = yield ['*readRange', { path: p, offset, end: r.size, chunk: READ_CHUNK, window: READ_WINDOW }];
    check();
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

// Write a whole file in place: one fs.write when it fits, else an upload (the target keeps its
// bytes until all of them arrived; bounded frames).
function* writeAll(p, buf, flag, mode, flush) {
  const extra = { ...(mode === undefined ? {} : { mode }), ...(flush ? { flush: true } : {}) };
  if (buf.length <= MAX_CHUNK) {
    yield ['fs.write', { path: p, data: b64(buf), flag, ...extra }];
    return;
  }
  const { id } = yield ['fs.upload.begin', { path: p, flag, ...extra }];
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

// writeFile/appendFile of anything Node takes, through a descriptor opened with `flag` (for
// flags fs.write does not do, and for iterables and streams): written in order as it comes.
function* writeThroughFd(c, p, data, flag, mode, encoding, flush) {
  const fd = yield* fds.open(p, flag, mode);
  let failed = true;
  try {
    if (isIterable(data)) {
      // An (async) iterable: its chunks are taken one by one (a `*await` step each).
      const it = writeDataOf(data, encoding, c.signal)[Symbol.asyncIterator]();
      for (;;) {
        const step = yield ['*await', it.next()];
        if (step.done) break;
        yield* fds.write(fd, step.value, null);
      }
    } else {
      yield* fds.write(fd, toBuffer(data, encoding), null);
    }
    if (flush) yield* fds.sync(fd, false);
    failed = false;
  } finally {
    try {
      yield* fds.close(fd);
    } catch (err) {
      if (!failed) throw err; // eslint-disable-line no-unsafe-finally
    }
  }
}

function* writeFileOp(c, _p, data, o, dfltFlag) {
  checkSignal(c, o);
  const { encoding = 'utf8', flag, mode, flush, signal } = opts(o, {});
  c.signal = signal;
  if (c.fd !== undefined) {
    // On an fd, Node writes at the fd's position (appendFile too).
    if (isIterable(data)) {
      const it = writeDataOf(data, encoding, signal)[Symbol.asyncIterator]();
      for (;;) {
        const step = yield ['*await', it.next()];
        if (step.done) break;
        yield* fds.write(c.fd, step.value, null);
      }
      return;
    }
    yield* fds.write(c.fd, toBuffer(data, encoding), null);
    return;
  }
  const simple = simpleWriteFlag(flag, dfltFlag);
  if (simple && !isIterable(data)) {
    yield* writeAll(c.p[0], toBuffer(data, encoding), simple, parseMode(mode, undefined), !!flush);
    return;
  }
  yield* writeThroughFd(c, c.p[0], data, flag === undefined || flag === null ? dfltFlag : flag, parseMode(mode, undefined), encoding, !!flush);
}

function* statOp(c, lstat, o) {
  const { bigint, throwIfNoEntry } = opts(o, {});
  try {
    return makeStats(yield ['fs.stat', { path: c.p[0], lstat }], bigint);
  } catch (err) {
    if (c.form === 'sync' && throwIfNoEntry === false && shapes.noEntryCodes(lstat).has(err.code)) return undefined;
    throw err;
  }
}

// fs.cp in its three forms for routed → routed: files, and trees with `recursive` (dirs, files,
// symlinks), with Node's filter (which may answer a promise in the async forms). Node 26's own
// async cp copies a tree natively (not through the patched functions), so the bridge does it.
function* cpOp(c, o) {
  const { recursive, force = true, errorOnExist = false, dereference = false, filter } = opts(o, {});
  const [src, dest] = c.p;
  const shown = (abs) => (abs === dest ? c.disp[1] : path.join(c.disp[1], path.relative(dest, abs)));
  const shownSrc = (abs) => (abs === src ? c.disp[0] : path.join(c.disp[0], path.relative(src, abs)));
  const keep = function* (from, to) {
    if (typeof filter !== 'function') return true;
    let r = filter(shownSrc(from), shown(to));
    if (r && typeof r.then === 'function') {
      if (c.form === 'sync') {
        const { nodeError } = require('./errors.cjs');
        throw nodeError(Error, 'ERR_INVALID_RETURN_VALUE', 'Expected a boolean from the filter function, but got a promise.');
      }
      r = yield ['*await', r];
    }
    return !!r;
  };
  if (!(yield* keep(src, dest))) return;
  const st = yield ['fs.stat', { path: src, lstat: !dereference }];
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
  if (!recursive) {
    const shape = shapes.cpDirError(c.form);
    const make = typeof shape === 'function' ? shape : yield ['*await', shape];
    throw make(c.disp[0], c.disp[1]);
  }
  yield ['fs.mkdir', { path: dest, recursive: true }];
  const skipped = [];
  for (const e of (yield ['fs.readdir', { path: src, recursive: true }]).entries) {
    const from = path.join(src, e.name);
    const to = path.join(dest, e.name);
    if (skipped.some((s) => from.startsWith(`${s}/`))) continue;
    if (!(yield* keep(from, to))) {
      skipped.push(from);
      continue;
    }
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

// chown/lchown: the agent's chown(2).
function* chownOp(c, uid, gid, lstat) {
  const id = (v) => (v === -1 || v === undefined || v === null ? {} : { v });
  const u = id(uid);
  const g = id(gid);
  yield ['fs.chown', { path: c.p[0], ...('v' in u ? { uid: u.v } : {}), ...('v' in g ? { gid: g.v } : {}), lstat }];
}

// A recursive listing descends symlinked directories where the running Node's does.
function* readdirFollows(c, withFileTypes) {
  const r = shapes.readdirFollows(c.form, withFileTypes);
  return typeof r === 'boolean' ? r : yield ['*await', r];
}

const fdArg = { fd: true };

const OPS = {
  // existsSync (fs.exists is Node's own, over fs.access): a stat that answers a cached failure
  // as MISSING instead of building an error.
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
  access: {
    paths: [0],
    *run(c, _p, mode) {
      yield ['fs.access', { path: c.p[0], mode: mode == null ? 0 : mode }];
    },
  },
  stat: { paths: [0], *run(c, _p, o) { return yield* statOp(c, false, o); } },
  lstat: { paths: [0], *run(c, _p, o) { return yield* statOp(c, true, o); } },
  statfs: {
    paths: [0],
    *run(c, _p, o) {
      return makeStatFs(yield ['fs.statfs', { path: c.p[0] }], opts(o, {}).bigint);
    },
  },
  chown: { paths: [0], *run(c, _p, uid, gid) { yield* chownOp(c, uid, gid, false); } },
  lchown: { paths: [0], *run(c, _p, uid, gid) { yield* chownOp(c, uid, gid, true); } },
  readdir: {
    paths: [0],
    *run(c, _p, o) {
      const { encoding, withFileTypes, recursive } = opts(o, { encoding: 'utf8' });
      const follow = recursive ? yield* readdirFollows(c, withFileTypes) : false;
      const { entries } = yield ['fs.readdir', { path: c.p[0], recursive: !!recursive, ...(follow ? { follow: true } : {}) }];
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
    *run(c, _p, o) {
      checkSignal(c, o);
      const { encoding, signal } = opts(o, {});
      if (c.fd !== undefined) return encodeOut(yield* fds.readRest(c.fd), encoding);
      try {
        return encodeOut(yield* readAll(c.p[0], 0, c.form === 'sync' ? null : signal), encoding);
      } catch (err) {
        const w = err && err[WIRE];
        if (!w || w.code !== 'EISDIR') throw err;
        // Node's words for a directory differ between versions and forms: ask it.
        const shape = shapes.readFileDirError(c.form);
        const make = typeof shape === 'function' ? shape : yield ['*await', shape];
        throw make(c.disp[0]) || err;
      }
    },
  },
  writeFile: { paths: [0], fdOk: true, data: 1, *run(c, p, data, o) { yield* writeFileOp(c, p, data, o, 'w'); } },
  appendFile: { paths: [0], fdOk: true, data: 1, *run(c, p, data, o) { yield* writeFileOp(c, p, data, o, 'a'); } },
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
        // Node's JS walk starts from the resolved path (a trailing slash is gone by then).
        r = yield ['fs.realpath', { path: c.p[0].length > 1 ? c.p[0].replace(/\/+$/, '') : c.p[0] }];
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
  // lchmod (macOS only in Node): Linux cannot change a symlink's own mode (EOPNOTSUPP, as
  // fchmodat(AT_SYMLINK_NOFOLLOW) says there); anything else is a chmod.
  lchmod: {
    paths: [0],
    *run(c, _p, mode) {
      const st = yield ['fs.stat', { path: c.p[0], lstat: true }];
      if ((st.mode & 0o170000) === 0o120000) throw fsError({ code: 'EOPNOTSUPP', syscall: 'lchmod', path: c.p[0] });
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
    fdOk: true,
    *run(c, _p, len) {
      if (c.fd !== undefined) return yield* fds.truncate(c.fd, Math.max(0, len | 0));
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
  // mkdtempDisposable(Sync) (Node 24+): the directory and a remover bound to its remote path.
  mkdtempDisposable: {
    paths: [0],
    errShape: (e, c) => ({ syscall: 'mkdtemp', path: `${c.disp[0]}XXXXXX` }),
    *run(c, _prefix, o) {
      const made = yield* OPS.mkdtemp.run(c, _prefix, o);
      const abs = c.p[0] + String(made).slice(c.disp[0].length);
      const { runSync, runAsync } = require('./run.cjs');
      const rm = () => (function* () {
        yield ['fs.rm', { path: abs, recursive: true, force: true }];
      })();
      if (c.form === 'sync') {
        const remove = () => runSync(rm());
        return { path: made, remove, [Symbol.dispose]() { remove(); } };
      }
      const remove = async () => {
        await runAsync(rm());
      };
      return { __proto__: null, path: made, remove, async [Symbol.asyncDispose]() { await remove(); } };
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
    *run(c, _p, o) {
      const { recursive, encoding } = opts(o, {});
      const follow = recursive ? yield* readdirFollows(c, true) : false;
      const { entries } = yield ['fs.readdir', { path: c.p[0], recursive: !!recursive, ...(follow ? { follow: true } : {}) }];
      return makeDir(
        c.disp[0],
        entries.map((e) => {
          const slash = e.name.lastIndexOf('/');
          const parent = slash < 0 ? c.disp[0] : path.join(c.disp[0], e.name.slice(0, slash));
          return makeDirent(encodeName(e.name.slice(slash + 1), encoding), e.kind, parent);
        }),
      );
    },
  },
  open: {
    paths: [0],
    errShape: () => ({ syscall: 'open' }),
    *run(c, _p, flags, mode) {
      const fd = yield* fds.open(c.p[0], flags, mode);
      if (c.form !== 'promise') return fd;
      return yield ['*await', fileHandle(fd)];
    },
  },
  // fs.openAsBlob(Sync): the file's bytes now, as a Blob (Node's reads the local file lazily). Node
  // checks its arguments on a file that exists; a remote file it cannot read fails as Node's
  // does for a local one.
  openAsBlob: {
    paths: [0],
    standIn: 'file',
    *run(c, _p, o) {
      const { type = '' } = o || {};
      const { Blob } = require('buffer');
      let bytes;
      try {
        bytes = yield* readAll(c.p[0]);
      } catch (err) {
        if (!err[WIRE]) throw err;
        const shaped = shapes.blobError(c.form, err[WIRE], c.disp[0]);
        throw (c.form === 'sync' ? shaped : yield ['*await', shaped]) || err;
      }
      return new Blob([bytes], { type });
    },
  },
  // Operations on virtual fds (fds.cjs): the first argument is the fd.
  read: {
    ...fdArg,
    syncOut: (v) => v.bytesRead,
    cbArgs: (v) => [v.bytesRead, v.buffer],
    *run(c, fd, ...rest) {
      const { buffer, offset, length, position } = readArgs(rest);
      const bytesRead = yield* fds.read(fd, buffer, offset, length, position);
      return { bytesRead, buffer };
    },
  },
  readv: {
    ...fdArg,
    syncOut: (v) => v.bytesRead,
    cbArgs: (v) => [v.bytesRead, v.buffers],
    *run(c, fd, buffers, position) {
      const bytesRead = yield* fds.readv(fd, buffers, typeof position === 'number' && position >= 0 ? position : null);
      return { bytesRead, buffers };
    },
  },
  write: {
    ...fdArg,
    syncOut: (v) => v.bytesWritten,
    cbArgs: (v) => [v.bytesWritten, v.buffer],
    *run(c, fd, ...rest) {
      const { data, position, buffer } = writeArgs(rest);
      const bytesWritten = yield* fds.write(fd, data, position);
      return { bytesWritten, buffer };
    },
  },
  writev: {
    ...fdArg,
    syncOut: (v) => v.bytesWritten,
    cbArgs: (v) => [v.bytesWritten, v.buffers],
    *run(c, fd, buffers, position) {
      const all = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
      const bytesWritten = yield* fds.write(fd, all, typeof position === 'number' && position >= 0 ? position : null);
      return { bytesWritten, buffers };
    },
  },
  close: { ...fdArg, *run(c, fd) { yield* fds.close(fd); } },
  fstat: { ...fdArg, *run(c, fd, o) { return yield* fds.stat(fd, opts(o, {}).bigint); } },
  fsync: { ...fdArg, *run(c, fd) { yield* fds.sync(fd, false); } },
  fdatasync: { ...fdArg, *run(c, fd) { yield* fds.sync(fd, true); } },
  ftruncate: { ...fdArg, *run(c, fd, len) { yield* fds.truncate(fd, Math.max(0, len | 0)); } },
  fchmod: { ...fdArg, *run(c, fd, mode) { yield* fds.chmod(fd, parseMode(mode, 0)); } },
  fchown: { ...fdArg, *run(c, fd, uid, gid) { yield* fds.chown(fd, uid, gid); } },
  futimes: { ...fdArg, *run(c, fd, atime, mtime) { yield* fds.utimes(fd, toTime(atime), toTime(mtime)); } },
};

// Node's read argument shapes (already checked by Node) → {buffer, offset, length, position}.
function readArgs(rest) {
  let [buffer, offset, length, position] = rest;
  if (buffer && !ArrayBuffer.isView(buffer) && typeof buffer === 'object') {
    const o = buffer;
    buffer = o.buffer === undefined ? Buffer.alloc(16384) : o.buffer;
    ({ offset = 0, length = buffer.byteLength - offset, position = null } = o);
  } else if (buffer === undefined) {
    buffer = Buffer.alloc(16384);
  } else if (offset !== null && typeof offset === 'object') {
    ({ offset = 0, length = buffer.byteLength - offset, position = null } = offset);
  }
  offset = offset || 0;
  if (length === undefined || length === null) length = buffer.byteLength - offset;
  if (typeof position === 'bigint') position = Number(position);
  if (typeof position !== 'number' || position < 0) position = null;
  return { buffer, offset, length, position };
}

// Node's write argument shapes (already checked by Node) → {data, position, buffer}.
function writeArgs(rest) {
  const [first, a, b, c] = rest;
  if (typeof first === 'string') return { data: Buffer.from(first, typeof b === 'string' ? b : 'utf8'), position: typeof a === 'number' && a >= 0 ? a : null, buffer: first };
  const whole = Buffer.from(first.buffer, first.byteOffset, first.byteLength);
  let offset = a;
  let length = b;
  let position = c;
  if (a !== null && typeof a === 'object') ({ offset = 0, length, position = null } = a);
  offset = offset || 0;
  if (length === undefined || length === null) length = whole.length - offset;
  if (typeof position === 'bigint') position = Number(position);
  return { data: whole.subarray(offset, offset + length), position: typeof position === 'number' && position >= 0 ? position : null, buffer: first };
}

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
  if (shape && shape.systemError) return systemError(require('./errors.cjs').SystemError, shape.systemError, 'Path is a directory', { code: 'EISDIR', message: 'is a directory', path: e.path, syscall: 'rm', errno: -errnoOf('EISDIR') });
  const out = fsError({ ...e, ...shape });
  out.stack = `${out.message}\n${err.stack.split('\n').slice(1).join('\n')}`;
  return out;
}

module.exports = { OPS, reshape, readAll, writeAll, unb64, b64, isHandle, MISSING };
