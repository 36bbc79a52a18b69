'use strict';
// Patches fs and fs/promises: every entry of fsops.OPS becomes its sync, callback and promise
// form; a call whose path arguments are not routed goes to Node's original function with exactly
// its original arguments.

const fs = require('fs');
const util = require('util');
const fsp = require('fs/promises');
const route = require('./route.cjs');
const fds = require('./fds.cjs');
const { OPS, reshape } = require('./fsops.cjs');
const { runSync, runAsync } = require('./run.cjs');
const { fsError, nodeError } = require('./errors.cjs');
const streams = require('./streams.cjs');
const watch = require('./watch.cjs');

// Routing decision for one call: null = not ours; else the call context for fsops.
function prepare(op, args) {
  if (op.fd) return fds.isVirtual(args[0]) ? { p: [], disp: [], args } : null;
  if (op.fdOk && fds.isVirtual(args[0])) return { p: [], disp: [], args, fd: args[0] };
  const p = [];
  const disp = [];
  for (const i of op.paths) {
    p.push(route.routed(args[i]));
    disp.push(route.toPathString(args[i]));
  }
  const routedCount = p.filter(Boolean).length;
  if (routedCount === 0) return null;
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

function syncForm(op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
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

function callbackForm(op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
    const cb = typeof args[args.length - 1] === 'function' ? args.pop() : null;
    if (!cb) {
      throw nodeError(TypeError, 'ERR_INVALID_ARG_TYPE', 'The "cb" argument must be of type function. Received undefined');
    }
    if (c.cross) return process.nextTick(cb, crossError(op, c));
    c.form = 'callback';
    runAsync(op.run(c, ...args)).then(
      (v) => {
        if (op.existsStyle) process.nextTick(cb, v);
        else if (op.cbArgs) process.nextTick(cb, null, ...op.cbArgs(v));
        else if (v === undefined) process.nextTick(cb, null);
        else process.nextTick(cb, null, v);
      },
      (err) => process.nextTick(cb, op.existsStyle ? false : reshape(err, op, c)),
    );
    return undefined;
  }, orig);
}

// util.promisify(fs.read / fs.write / fs.exists) uses a custom form that resolves an object (or
// a boolean); give the patched functions one that routes the same way.
function promisifyCustom(fn, op, orig) {
  // fs.read/fs.write declare their result names through an internal symbol, not .custom.
  if (!op.promisifyKeys && !orig[util.promisify.custom]) return fn;
  const custom = util.promisify(orig);
  Object.defineProperty(fn, util.promisify.custom, {
    configurable: true,
    value: function (...args) {
      if (!prepare(op, args)) return Reflect.apply(custom, this, args);
      return new Promise((resolve, reject) =>
        Reflect.apply(fn, this, [
          ...args,
          (err, ...vals) => {
            if (op.existsStyle) return resolve(err);
            if (err) return reject(err);
            resolve(op.promisifyKeys ? { [op.promisifyKeys[0]]: vals[0], [op.promisifyKeys[1]]: vals[1] } : vals[0]);
          },
        ]),
      );
    },
  });
  return fn;
}

function promiseForm(op, orig) {
  return keepShape(function (...args) {
    const c = prepare(op, args);
    if (!c) return Reflect.apply(orig, this, arguments);
    if (c.cross) return Promise.reject(crossError(op, c));
    c.form = 'promise';
    return runAsync(op.run(c, ...args)).catch((err) => {
      throw reshape(err, op, c);
    });
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

// name in OPS → [sync name, callback name, promise name] (null: that form does not exist)
const FORMS = {
  access: ['accessSync', 'access', 'access'],
  exists: [null, 'exists', null],
  stat: ['statSync', 'stat', 'stat'],
  lstat: ['lstatSync', 'lstat', 'lstat'],
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
  fsync: ['fsyncSync', 'fsync', null],
  fdatasync: ['fdatasyncSync', 'fdatasync', null],
  ftruncate: ['ftruncateSync', 'ftruncate', null],
  readlink: ['readlinkSync', 'readlink', 'readlink'],
  chmod: ['chmodSync', 'chmod', 'chmod'],
  utimes: ['utimesSync', 'utimes', 'utimes'],
  lutimes: ['lutimesSync', 'lutimes', 'lutimes'],
  truncate: ['truncateSync', 'truncate', 'truncate'],
  mkdtemp: ['mkdtempSync', 'mkdtemp', 'mkdtemp'],
  open: ['openSync', 'open', 'open'],
  cp: ['cpSync', 'cp', 'cp'],
  opendir: ['opendirSync', 'opendir', 'opendir'],
  read: ['readSync', 'read', null],
  write: ['writeSync', 'write', null],
  close: ['closeSync', 'close', null],
  fstat: ['fstatSync', 'fstat', null],
};

OPS.exists.existsStyle = true;
OPS.read.promisifyKeys = ['bytesRead', 'buffer'];
OPS.write.promisifyKeys = ['bytesWritten', 'buffer'];
OPS.rename.syscall = 'rename';
OPS.link.syscall = 'link';
OPS.copyFile.syscall = 'copyfile';

function install() {
  const origNativeSync = fs.realpathSync.native;
  const origNative = fs.realpath.native;
  for (const [name, [syncName, cbName, promName]] of Object.entries(FORMS)) {
    const op = OPS[name];
    if (syncName) fs[syncName] = syncForm(op, fs[syncName]);
    if (cbName) fs[cbName] = promisifyCustom(callbackForm(op, fs[cbName]), op, fs[cbName]);
    if (promName) fsp[promName] = promiseForm(op, fsp[promName]);
  }
  fs.existsSync = existsSyncForm(fs.existsSync);

  // fs.promises.readFile/writeFile/appendFile also take a FileHandle: ours handle themselves.
  for (const name of ['readFile', 'writeFile', 'appendFile']) {
    const routed = fsp[name];
    fsp[name] = keepShape(function (target, ...rest) {
      if (fds.isHandle(target)) return target[name](...rest);
      return Reflect.apply(routed, this, arguments);
    }, routed);
  }

  // realpath's .native variants take the same route (pi calls realpathSync.native).
  fs.realpathSync.native = syncForm(OPS.realpath, origNativeSync);
  fs.realpath.native = callbackForm(OPS.realpath, origNative);

  streams.install(fs);
  watch.install(fs, fsp);
}

module.exports = { install, prepare };
