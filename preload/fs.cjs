'use strict';
// Patches fs and fs/promises: every entry of fsops.OPS becomes its sync, callback and promise
// form; a call whose path arguments are not routed goes to Node's original function with exactly
// its original arguments. Before a routed call runs, Node's original checks its arguments on
// stand-ins (shapes.cjs), so argument errors are the running Node's own. What api.cjs lists as
// Node's own (streams, cp, glob, exists…) is left to Node, which calls back into the patched
// functions; any function member of fs or fs/promises the bridge does not know refuses a routed
// path (api.cjs `guardUnknown`) instead of reaching the local disk.

const fs = require('fs');
const util = require('util');
const fsp = require('fs/promises');
const route = require('./route.cjs');
const fds = require('./fds.cjs');
const { OPS, reshape, isHandle } = require('./fsops.cjs');
const { runSync, runAsync } = require('./run.cjs');
const { fsError, nodeError } = require('./errors.cjs');
const shapes = require('./shapes.cjs');
const watch = require('./watch.cjs');
const api = require('./api.cjs');
const boundary = require('./boundary.cjs');

// The path as the agent must see it: absolute, and keeping a trailing `/` (or `/.`), which
// makes the kernel require a directory (`existsSync('file.txt/')` is false).
function wirePath(arg, abs) {
  const s = route.toPathString(arg);
  return abs !== '/' && /\/\.?$/.test(s) ? `${abs}/` : abs;
}

// Routing decision for one call: null = not ours; else the call context for fsops.
function prepare(op, args) {
  if (op.fd) return fds.isVirtual(args[0]) ? { p: [], disp: [], args } : null;
  if (op.fdOk && fds.isVirtual(args[0])) return { p: [], disp: [], args, fd: args[0] };
  const p = [];
  const disp = [];
  for (const i of op.paths) {
    const abs = route.routed(args[i]);
    p.push(abs && wirePath(args[i], abs));
    disp.push(route.toPathString(args[i]));
  }
  const routedCount = p.filter(Boolean).length;
  if (routedCount === 0) {
    const denied = boundary.writeDenied(op, args); // a local path nothing may write: EROFS
    return denied ? { denied } : null;
  }
  if (routedCount < p.length) return { cross: true, p, disp, args };
  return { p, disp, args };
}

// One path local, the other remote (rename/link/copyFile across the bridge).
function crossError(op, c) {
  return fsError({ code: 'EXDEV', syscall: op.syscall || 'rename', path: c.disp[0], dest: c.disp[1], detail: 'across the pi-bridge boundary' });
}

function keepShape(fn, orig) {
  try {
    Object.defineProperty(fn, 'name', { value: orig.name, configurable: true });
    Object.defineProperty(fn, 'length', { value: orig.length, configurable: true });
  } catch {
    /* cosmetic only */
  }
  return fn;
}

// ---- Node's argument checks ----------------------------------------------------------------

// The call's arguments for a check by Node's original: paths → stand-ins that can only fail,
// a virtual fd → a descriptor that is never open.
function standIns(op, args) {
  const out = args.slice();
  if (op.fd || (op.fdOk && fds.isVirtual(args[0]))) out[0] = shapes.NO_FD;
  else op.paths.forEach((i, n) => (out[i] = op.standIn === 'file' ? shapes.FILE : `${shapes.NOWHERE}${n}`));
  return out;
}

// Checks of path calls are remembered by the shape of their other arguments (a stat with no
// options is checked once); fd calls carry offsets and lengths, so each is checked.
const checked = new Set();
const CHECKED_MAX = 4096;
function sig(v, nested) {
  if (v === null) return 'n';
  switch (typeof v) {
    case 'undefined':
      return 'u';
    case 'string':
      return v.length <= 40 ? `s${JSON.stringify(v)}` : `s#`;
    case 'number':
    case 'bigint':
    case 'boolean':
      return `${typeof v}:${String(v)}`;
    case 'function':
      return 'f';
    case 'symbol':
      return 'y';
    default:
  }
  if (ArrayBuffer.isView(v)) return `v:${v.constructor.name}`;
  const proto = Object.getPrototypeOf(v);
  if (nested || (proto !== Object.prototype && proto !== null)) return `o:${(proto && proto.constructor && proto.constructor.name) || ''}`;
  return `{${Object.keys(v).map((k) => `${k}=${sig(v[k], true)}`).join(',')}}`;
}

function checkKey(name, form, op, args) {
  if (op.fd || (op.fdOk && fds.isVirtual(args[0]))) return null;
  let k = `${name}|${form}`;
  for (let i = 0; i < args.length; i++) {
    if (op.paths.includes(i)) continue;
    k += `|${i === op.data ? `d:${typeof args[i] === 'string' ? 's' : sig(args[i], true)}` : sig(args[i], false)}`;
  }
  return k;
}

function remember(key) {
  if (key === null) return;
  if (checked.size >= CHECKED_MAX) checked.clear();
  checked.add(key);
}

// Descriptor calls whose arguments every Node accepts as they are (a view with an offset and a
// length inside it, a plain position) skip Node's check: it is for the unusual ones.
const isPos = (p) => p === null || p === undefined || p === -1 || (Number.isSafeInteger(p) && p >= 0) || typeof p === 'bigint';
const inView = (b, off, len) => ArrayBuffer.isView(b) && Number.isSafeInteger(off) && Number.isSafeInteger(len) && off >= 0 && len >= 0 && off + len <= b.byteLength;
const PLAIN_FD_CALLS = {
  close: (a) => a.length === 1,
  fstat: (a) => a.length === 1,
  fsync: (a) => a.length === 1,
  fdatasync: (a) => a.length === 1,
  read: (a) => a.length === 5 && inView(a[1], a[2], a[3]) && isPos(a[4]),
  write: (a) => (a.length === 5 && inView(a[1], a[2], a[3]) && isPos(a[4])) || (a.length === 2 && (typeof a[1] === 'string' || ArrayBuffer.isView(a[1]))),
};
const plainFdCall = (name, args) => !!PLAIN_FD_CALLS[name] && Number.isInteger(args[0]) && PLAIN_FD_CALLS[name](args);

function nodeCheckSync(name, op, orig, args, form) {
  if (op.fd && plainFdCall(name, args)) return;
  const key = checkKey(name, form, op, args);
  if (key !== null && checked.has(key)) return;
  const check = form === 'sync' ? shapes.validateSync : shapes.validateCallback;
  const err = check(orig, standIns(op, args));
  if (err) throw err;
  remember(key);
}

// null when the check is known to pass (no promise, no extra turn); else a promise of it.
function nodeCheckAsync(name, op, orig, args) {
  const key = checkKey(name, 'promise', op, args);
  if (key !== null && checked.has(key)) return null;
  return shapes.validatePromise(orig, standIns(op, args)).then((err) => {
    if (err) throw err;
    remember(key);
  });
}

// ---- the three forms -----------------------------------------------------------------------

function syncForm(name, op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
    if (c.denied) throw c.denied;
    nodeCheckSync(name, op, orig, args, 'sync');
    if (c.cross) throw crossError(op, c);
    c.form = 'sync';
    try {
      const v = runSync(op.run(c, ...args));
      return op.syncOut ? op.syncOut(v) : v;
    } catch (err) {
      throw reshape(err, op, c);
    }
  }, orig);
}

function callbackForm(name, op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
    const cb = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    if (!cb) {
      throw nodeError(TypeError, 'ERR_INVALID_ARG_TYPE', 'The "cb" argument must be of type function. Received undefined');
    }
    if (c.denied) return process.nextTick(cb, c.denied);
    nodeCheckSync(name, op, orig, args, 'callback');
    if (c.cross) return process.nextTick(cb, crossError(op, c));
    c.form = 'callback';
    runAsync(op.run(c, ...args)).then(
      (v) => {
        if (op.cbArgs) process.nextTick(cb, null, ...op.cbArgs(v));
        else if (v === undefined) process.nextTick(cb, null);
        else process.nextTick(cb, null, v);
      },
      (err) => process.nextTick(cb, reshape(err, op, c)),
    );
    return undefined;
  }, orig);
}

// util.promisify(fs.read / fs.write / fs.readv / fs.writev) resolves an object ({bytesRead,
// buffer}…); give the patched functions a custom form that routes the same way.
function promisifyCustom(fn, op, orig) {
  if (!op.promisifyKeys) return fn;
  const custom = util.promisify(orig);
  const [k1, k2] = op.promisifyKeys;
  Object.defineProperty(fn, util.promisify.custom, {
    configurable: true,
    value: function (...args) {
      if (!prepare(op, args)) return Reflect.apply(custom, this, args);
      return new Promise((resolve, reject) =>
        Reflect.apply(fn, this, [...args, (err, a, b) => (err ? reject(err) : resolve({ [k1]: a, [k2]: b }))]),
      );
    },
  });
  return fn;
}

function promiseForm(name, op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
    if (c.denied) return Promise.reject(c.denied);
    c.form = 'promise';
    const run = () => {
      if (c.cross) throw crossError(op, c);
      return runAsync(op.run(c, ...args)).catch((err) => {
        throw reshape(err, op, c);
      });
    };
    const check = nodeCheckAsync(name, op, orig, args);
    return check ? check.then(run) : run();
  }, orig);
}

// existsSync must never throw, whatever happens on the bridge.
function existsSyncForm(orig) {
  const op = OPS.exists;
  return keepShape(function (...args) {
    let c;
    try {
      c = prepare(op, args);
    } catch {
      return false;
    }
    if (!c) return Reflect.apply(orig, this, arguments);
    if (c.cross) return false;
    c.form = 'sync';
    try {
      return runSync(op.run(c, ...args));
    } catch {
      return false;
    }
  }, orig);
}

// name in OPS → [sync name, callback name, promise name] (null: that form does not exist). A
// name the running Node does not have is skipped (fs.glob before Node 22, lchmod on Linux…).
const FORMS = {
  access: ['accessSync', 'access', 'access'],
  stat: ['statSync', 'stat', 'stat'],
  lstat: ['lstatSync', 'lstat', 'lstat'],
  statfs: ['statfsSync', 'statfs', 'statfs'],
  readdir: ['readdirSync', 'readdir', 'readdir'],
  readFile: ['readFileSync', 'readFile', 'readFile'],
  writeFile: ['writeFileSync', 'writeFile', 'writeFile'],
  appendFile: ['appendFileSync', 'appendFile', 'appendFile'],
  mkdir: ['mkdirSync', 'mkdir', 'mkdir'],
  rmdir: ['rmdirSync', 'rmdir', 'rmdir'],
  rm: ['rmSync', 'rm', 'rm'],
  unlink: ['unlinkSync', 'unlink', 'unlink'],
  rename: ['renameSync', 'rename', 'rename'],
  copyFile: ['copyFileSync', 'copyFile', 'copyFile'],
  link: ['linkSync', 'link', 'link'],
  symlink: ['symlinkSync', 'symlink', 'symlink'],
  realpath: [null, null, 'realpath'],
  realpathJs: ['realpathSync', 'realpath', null],
  chown: ['chownSync', 'chown', 'chown'],
  lchown: ['lchownSync', 'lchown', 'lchown'],
  chmod: ['chmodSync', 'chmod', 'chmod'],
  lchmod: ['lchmodSync', 'lchmod', 'lchmod'],
  readlink: ['readlinkSync', 'readlink', 'readlink'],
  utimes: ['utimesSync', 'utimes', 'utimes'],
  lutimes: ['lutimesSync', 'lutimes', 'lutimes'],
  truncate: ['truncateSync', 'truncate', 'truncate'],
  mkdtemp: ['mkdtempSync', 'mkdtemp', 'mkdtemp'],
  mkdtempDisposable: ['mkdtempDisposableSync', null, 'mkdtempDisposable'],
  cp: ['cpSync', 'cp', 'cp'],
  opendir: ['opendirSync', 'opendir', 'opendir'],
  open: ['openSync', 'open', 'open'],
  openAsBlob: ['openAsBlobSync', null, null], // fs.openAsBlob returns a promise: installed below
  read: ['readSync', 'read', null],
  readv: ['readvSync', 'readv', null],
  write: ['writeSync', 'write', null],
  writev: ['writevSync', 'writev', null],
  close: ['closeSync', 'close', null],
  fstat: ['fstatSync', 'fstat', null],
  fsync: ['fsyncSync', 'fsync', null],
  fdatasync: ['fdatasyncSync', 'fdatasync', null],
  ftruncate: ['ftruncateSync', 'ftruncate', null],
  fchmod: ['fchmodSync', 'fchmod', null],
  fchown: ['fchownSync', 'fchown', null],
  futimes: ['futimesSync', 'futimes', null],
};

OPS.read.promisifyKeys = ['bytesRead', 'buffer'];
OPS.readv.promisifyKeys = ['bytesRead', 'buffers'];
OPS.write.promisifyKeys = ['bytesWritten', 'buffer'];
OPS.writev.promisifyKeys = ['bytesWritten', 'buffers'];
OPS.rename.syscall = 'rename';
OPS.link.syscall = 'link';
OPS.copyFile.syscall = 'copyfile';

const installed = new Set(); // "fs.name" / "fsp.name" of every function replaced here

function install() {
  const origNativeSync = fs.realpathSync.native;
  const origNative = fs.realpath.native;
  for (const [name, [syncName, cbName, promName]] of Object.entries(FORMS)) {
    const op = OPS[name];
    if (syncName && typeof fs[syncName] === 'function') {
      fs[syncName] = syncForm(name, op, fs[syncName]);
      installed.add(`fs.${syncName}`);
    }
    if (cbName && typeof fs[cbName] === 'function') {
      fs[cbName] = promisifyCustom(callbackForm(name, op, fs[cbName]), op, fs[cbName]);
      installed.add(`fs.${cbName}`);
    }
    if (promName && typeof fsp[promName] === 'function') {
      fsp[promName] = promiseForm(name, op, fsp[promName]);
      installed.add(`fsp.${promName}`);
    }
  }
  fs.existsSync = existsSyncForm(fs.existsSync);
  installed.add('fs.existsSync');
  if (typeof fs.openAsBlob === 'function') {
    fs.openAsBlob = promiseForm('openAsBlob', OPS.openAsBlob, fs.openAsBlob);
    installed.add('fs.openAsBlob');
  }

  // fs.promises.readFile/writeFile/appendFile also take a FileHandle: ours handle themselves.
  for (const name of ['readFile', 'writeFile', 'appendFile']) {
    const routed = fsp[name];
    fsp[name] = keepShape(function (target, ...rest) {
      if (isHandle(target)) return target[name](...rest);
      return Reflect.apply(routed, this, arguments);
    }, routed);
  }

  // realpath's .native variants take the same route (pi calls realpathSync.native).
  fs.realpathSync.native = syncForm('realpath', OPS.realpath, origNativeSync);
  fs.realpath.native = callbackForm('realpath', OPS.realpath, origNative);

  watch.install(fs, fsp);
  for (const n of ['watch', 'watchFile', 'unwatchFile']) installed.add(`fs.${n}`);
  installed.add('fsp.watch');
  api.guardUnknown(fs, fsp, installed);
}

module.exports = { install, prepare, installed, FORMS };
