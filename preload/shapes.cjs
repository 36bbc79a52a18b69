'use strict';
// What the RUNNING Node does, asked of Node itself. Where Node versions differ (which errors an
// option swallows, an error's class and words, whether a recursive listing descends symlinked
// directories, a failed spawnSync's result), the bridge does not keep a per-version table: it
// makes the same call once, with Node's original function, on a local stand-in that produces
// the same condition (this module's own file and directory, a path under a regular file, a tiny
// private tree), and answers remote calls in that shape (errors through errors.recast, with the
// stand-in's paths replaced by the user's). Every probe runs at most once per process, only when
// a remote call needs it, and touches nothing but its own stand-ins.
//
// The originals are taken when this module loads, before fs.cjs patches fs.

const fs = require('fs');
const fsp = require('fs/promises');
const os = require('os');
const path = require('path');
const cp = require('child_process');

const orig = {
  fs: { ...fs },
  fsp: { ...fsp },
  cp: { ...cp },
};

// Stand-ins: a regular file, a directory, and a path that can only fail with ENOTDIR (nothing
// can exist under a device file), so a probe never creates anything; it is under no directory
// a probe uses (Node's cp refuses a destination inside its source before anything else).
const FILE = __filename;
const DIR = __dirname;
const NOWHERE = '/dev/null/pi-bridge-probe';

const memo = new Map();

// The error `fn` throws (or null if it does not), once.
function thrown(key, fn) {
  if (!memo.has(key)) {
    let err = null;
    try {
      fn();
    } catch (e) {
      err = e;
    }
    memo.set(key, err);
  }
  return memo.get(key);
}

// The rejection of `fn()` (a promise), or null, once.
function rejected(key, fn) {
  if (!memo.has(key)) memo.set(key, Promise.resolve().then(fn).then(() => null, (e) => e));
  return memo.get(key);
}

// The error of callback-style `fn(cb)`, or null, once.
function called(key, fn) {
  if (!memo.has(key)) memo.set(key, new Promise((resolve) => fn((e) => resolve(e || null))));
  return memo.get(key);
}

// ---- stat(…, {throwIfNoEntry: false}) -----------------------------------------------------

// Whether a sync stat with throwIfNoEntry:false answers `undefined` for ENOTDIR too (Node 22+)
// or only for ENOENT.
function noEntryCodes(lstat) {
  const key = lstat ? 'noentry:lstat' : 'noentry:stat';
  if (!memo.has(key)) {
    const fn = lstat ? orig.fs.lstatSync : orig.fs.statSync;
    let swallowed = false;
    try {
      swallowed = fn(NOWHERE, { throwIfNoEntry: false }) === undefined;
    } catch {
      swallowed = false;
    }
    memo.set(key, new Set(swallowed ? ['ENOENT', 'ENOTDIR'] : ['ENOENT']));
  }
  return memo.get(key);
}

// ---- readFile of a directory ---------------------------------------------------------------

// Node's error for readFile(dir) in `form`, as a function of the directory as the user named it.
// A promise for the async forms.
function readFileDirError(form) {
  const shaped = (e) => (disp) => (e ? require('./errors.cjs').recast(e, [[DIR, disp]]) : null);
  if (form === 'sync') return shaped(thrown('readFile:dir:sync', () => orig.fs.readFileSync(DIR)));
  if (form === 'callback') return called('readFile:dir:callback', (cb) => orig.fs.readFile(DIR, cb)).then(shaped);
  return rejected('readFile:dir:promise', () => orig.fsp.readFile(DIR)).then(shaped);
}

// ---- cpSync --------------------------------------------------------------------------------

// Node's error for copying a directory without `recursive` in `form` (its sync cp and its JS cp
// word it differently in Node 22+), for src/dest as the user named them. Node checks before it
// copies anything; the probe's destination does not exist (Node 20 stats it first) and lies in
// a private directory. A function of (src, dest), or a promise of one for the async forms.
// Source and destination share the probe tree as their parent: Node's async cp stats the
// destination's parents up to the source's parent through the (patched) fs, so with a source
// elsewhere it would walk up to `/` (and `/tmp` is the remote's).
function cpDirError(form) {
  const src = path.join(probeTree(), 'sub');
  const shaped = (dest) => (e) => (s, d) => (e ? require('./errors.cjs').recast(e, [[dest, d], [src, s]]) : null);
  const dest = path.join(probeTree(), 'cp-missing', 'dest'); // Node's async cp creates the parent
  if (form === 'sync') return shaped(dest)(thrown('cp:dir:sync', () => orig.fs.cpSync(src, dest)));
  if (form === 'callback') return called('cp:dir:callback', (cb) => orig.fs.cp(src, dest, cb)).then(shaped(dest));
  return rejected('cp:dir:promise', () => orig.fsp.cp(src, dest)).then(shaped(dest));
}

// ---- openAsBlob -----------------------------------------------------------------------------

// Node's error for openAsBlob(Sync) of a file it cannot open, given the remote failure (a
// promise of it for the async form): Node 24+ reports the file system's error itself (`stat`),
// earlier ones an argument error.
function blobError(form, wire, disp) {
  const missing = path.join(probeTree(), 'blob-missing'); // never created (cp's probe makes its own)
  const shaped = (e) => {
    const { recast, fsError } = require('./errors.cjs');
    if (!e) return null;
    if (typeof e.syscall === 'string' && e.code === 'ENOENT') return fsError({ ...wire, syscall: e.syscall, path: disp });
    return recast(e, [[missing, disp]]);
  };
  if (form === 'sync') return shaped(thrown('blob:sync', () => orig.fs.openAsBlobSync(missing)));
  return rejected('blob', () => orig.fs.openAsBlob(missing)).then(shaped);
}

// ---- recursive readdir through symlinked directories ---------------------------------------

let tree = null;
// A private tree: <tmp>/d/sub/f and <tmp>/d/link -> sub. Removed when the process exits.
function probeTree() {
  if (tree) return tree;
  const root = orig.fs.mkdtempSync(path.join(os.tmpdir(), 'pi-bridge-probe-'));
  orig.fs.mkdirSync(path.join(root, 'sub'));
  orig.fs.writeFileSync(path.join(root, 'sub', 'f'), '');
  orig.fs.symlinkSync('sub', path.join(root, 'link'));
  process.once('exit', () => {
    try {
      orig.fs.rmSync(root, { recursive: true, force: true });
    } catch {
      /* best effort */
    }
  });
  tree = root;
  return root;
}

const descends = (list) => list.some((e) => /(^|\/)link\/f$/.test(typeof e === 'string' ? e : path.join(path.relative(tree, e.parentPath || e.path), e.name)));

// Whether Node's recursive readdir in `form` (with or without withFileTypes) lists what is
// under a symlink to a directory. A boolean, or a promise of one for the async forms.
function readdirFollows(form, withFileTypes) {
  const key = `readdir:${form}:${withFileTypes ? 'types' : 'names'}`;
  const o = { recursive: true, withFileTypes: !!withFileTypes };
  if (form === 'sync') {
    if (!memo.has(key)) memo.set(key, descends(orig.fs.readdirSync(probeTree(), o)));
    return memo.get(key);
  }
  if (!memo.has(key)) {
    const root = probeTree();
    const p = form === 'callback' ? new Promise((res, rej) => orig.fs.readdir(root, o, (e, v) => (e ? rej(e) : res(v)))) : orig.fsp.readdir(root, o);
    memo.set(key, p.then(descends));
  }
  return memo.get(key);
}

// ---- spawnSync that fails to start ----------------------------------------------------------

// The fields (other than `error`) of Node's spawnSync result when the program cannot be
// started, in Node's order: {status: null, signal: null, output: null, pid: 0, stdout, stderr}.
function spawnFailure() {
  if (!memo.has('spawn')) {
    const r = orig.cp.spawnSync(path.join(NOWHERE, 'no-such-program'));
    const out = {};
    for (const k of Object.keys(r)) if (k !== 'error') out[k] = r[k];
    memo.set('spawn', { keys: Object.keys(r), fields: out });
  }
  return memo.get('spawn');
}

// ---- validation ----------------------------------------------------------------------------

// Node's own argument checks for a call, run with the original function on stand-ins that can
// only fail at the file system: the argument error Node throws (or rejects with), or null when
// Node would accept the arguments. `args` are the call's arguments with every path replaced by
// NOWHERE (and every fd by NO_FD); functions inside option objects are replaced by one that
// returns false (a cp filter must not run for a probe).
const NO_FD = 0x7fffffff;
const FS_ERRORS = new Set(['ENOTDIR', 'ENOENT', 'EBADF', 'EINVAL']);
const isFsFailure = (e) => !!e && typeof e.code === 'string' && FS_ERRORS.has(e.code) && typeof e.syscall === 'string';

function defang(a) {
  if (a === null || typeof a !== 'object' || ArrayBuffer.isView(a) || Array.isArray(a) || Object.getPrototypeOf(a) !== Object.prototype) return a;
  const o = { ...a };
  for (const k of Object.keys(o)) if (typeof o[k] === 'function') o[k] = () => false;
  return o;
}

function validateSync(fn, args) {
  try {
    fn(...args.map(defang));
  } catch (e) {
    return isFsFailure(e) ? null : e;
  }
  return null;
}

function validateCallback(fn, args) {
  try {
    fn(...args.map(defang), () => {});
  } catch (e) {
    return isFsFailure(e) ? null : e;
  }
  return null;
}

async function validatePromise(fn, args) {
  try {
    await fn(...args.map(defang));
  } catch (e) {
    return isFsFailure(e) ? null : e;
  }
  return null;
}

module.exports = { orig, FILE, DIR, NOWHERE, NO_FD, noEntryCodes, readFileDirError, cpDirError, blobError, readdirFollows, spawnFailure, validateSync, validateCallback, validatePromise };
