'use strict';
// The Node API surface as data: every function member of fs, fs/promises, FileHandle.prototype,
// fs.Dir.prototype, fs.ReadStream.prototype, fs.WriteStream.prototype, child_process, and the
// process members that touch paths, with what the bridge does with it:
//   R        routed: the bridge replaces it (fs.cjs, filehandle.cjs, dir.cjs, child_process.cjs,
//            index.cjs), so a remote path or descriptor goes to the agent;
//   node(…)  Node's own implementation, which reaches files only through members that are
//            routed (the reason says which), so it works on remote paths as it is;
//   free(…)  involves no file (the reason says why).
// preload/test/api.test.cjs enumerates the members of the RUNNING Node and fails when one is in
// no list (a new Node adding an API fails the build instead of silently using the local disk).
// At run time, guardUnknown() makes any fs / fs/promises function this table does not know
// refuse a routed path or a remote descriptor.

const R = { kind: 'routed' };
const node = (why) => ({ kind: 'node', why });
const free = (why) => ({ kind: 'free', why });

const STREAM_OPS = 'Node\'s class; its file calls go through its kFs, the fs module itself (routed open, read, write, writev, fsync, close), or a routed FileHandle';

const FS = {
  access: R, accessSync: R, appendFile: R, appendFileSync: R, chmod: R, chmodSync: R, chown: R, chownSync: R,
  close: R, closeSync: R, copyFile: R, copyFileSync: R, cp: R, cpSync: R, existsSync: R, fchmod: R, fchmodSync: R,
  fchown: R, fchownSync: R, fdatasync: R, fdatasyncSync: R, fstat: R, fstatSync: R, fsync: R, fsyncSync: R,
  ftruncate: R, ftruncateSync: R, futimes: R, futimesSync: R, lchmod: R, lchmodSync: R, lchown: R, lchownSync: R,
  link: R, linkSync: R, lstat: R, lstatSync: R, lutimes: R, lutimesSync: R, mkdir: R, mkdirSync: R, mkdtemp: R,
  mkdtempSync: R, mkdtempDisposableSync: R, open: R, openSync: R, openAsBlob: R, openAsBlobSync: R, opendir: R, opendirSync: R,
  read: R, readSync: R, readv: R, readvSync: R, readFile: R, readFileSync: R, readdir: R, readdirSync: R,
  readlink: R, readlinkSync: R, realpath: R, realpathSync: R, 'realpath.native': R, 'realpathSync.native': R,
  rename: R, renameSync: R, rm: R, rmSync: R, rmdir: R, rmdirSync: R, stat: R, statSync: R, statfs: R,
  statfsSync: R, symlink: R, symlinkSync: R, truncate: R, truncateSync: R, unlink: R, unlinkSync: R, utimes: R,
  utimesSync: R, write: R, writeSync: R, writev: R, writevSync: R, writeFile: R, writeFileSync: R,
  watch: R, watchFile: R, unwatchFile: R,
  exists: node('calls fs.access (routed) and answers whether it failed'),
  glob: node('Node\'s JS glob (internal/fs/glob) over fs and fs/promises lstat, readdir, realpath, stat, all routed; the API test checks its imports'),
  globSync: node('as glob'),
  createReadStream: node(STREAM_OPS),
  createWriteStream: node(STREAM_OPS),
  ReadStream: node(STREAM_OPS),
  WriteStream: node(STREAM_OPS),
  FileReadStream: node(STREAM_OPS),
  FileWriteStream: node(STREAM_OPS),
  Utf8Stream: node('Node\'s class; it calls fs.open, fs.write, fs.writeSync, fs.fsync, fs.close, fs.mkdir of the fs module, all routed'),
  Dirent: free('a class; the Dirents of remote listings are built by stats.cjs'),
  Stats: free('a class (deprecated constructor); remote stats are built on its prototype by stats.cjs'),
  Dir: free('a class; remote listings are dir.cjs instances on its prototype'),
  _toUnixTimestamp: free('converts a time value'),
};

const FSP = {
  access: R, appendFile: R, chmod: R, chown: R, copyFile: R, lchmod: R, lchown: R, link: R, lstat: R, lutimes: R,
  mkdir: R, mkdtemp: R, mkdtempDisposable: R, open: R, opendir: R, readFile: R, readdir: R, readlink: R,
  realpath: R, rename: R, rm: R, rmdir: R, stat: R, statfs: R, symlink: R, truncate: R, unlink: R, utimes: R,
  watch: R, writeFile: R, cp: R,
  glob: node(FS.glob.why),
};

const FILE_HANDLE = {
  constructor: R, fd: R, getAsyncId: R, appendFile: R, chmod: R, chown: R, datasync: R, sync: R, read: R,
  readv: R, readFile: R, stat: R, truncate: R, utimes: R, write: R, writev: R, writeFile: R,
  readableWebStream: R, close: R,
  'Symbol(Symbol.asyncDispose)': R, 'Symbol(nodejs.asyncDispose)': R, 'Symbol(kCloseSync)': R, 'Symbol(kRef)': R,
  'Symbol(kUnref)': R, 'Symbol(messaging_transfer_symbol)': R, 'Symbol(messaging_transfer_list_symbol)': R,
  'Symbol(messaging_deserialize_symbol)': R,
  createReadStream: node('Node\'s own: a ReadStream with {fd: this handle}, which reads and closes through this handle\'s read and close'),
  createWriteStream: node('Node\'s own: a WriteStream with {fd: this handle}, which writes and closes through this handle\'s write, writev and close'),
  readLines: node('Node\'s own: readline over this handle\'s createReadStream'),
};

const DIR = {
  constructor: R, path: R, read: R, readSync: R, close: R, closeSync: R, entries: R, processReadResult: R,
  readSyncRecursive: R, 'Symbol(Symbol.asyncIterator)': R, 'Symbol(Symbol.dispose)': R,
  'Symbol(Symbol.asyncDispose)': R, 'Symbol(nodejs.dispose)': R, 'Symbol(nodejs.asyncDispose)': R,
  'Symbol(kDirReadImpl)': R,
};

const STREAM_MEMBER = node(STREAM_OPS);
const READ_STREAM = Object.fromEntries(['constructor', 'autoClose', 'open', '_construct', '_read', '_destroy', 'close', 'pending'].map((k) => [k, STREAM_MEMBER]));
const WRITE_STREAM = Object.fromEntries(['constructor', 'autoClose', 'open', '_construct', '_write', '_writev', '_destroy', 'close', 'destroySoon', 'pending'].map((k) => [k, STREAM_MEMBER]));

const CHILD_PROCESS = {
  spawn: R, spawnSync: R, execFile: R, execFileSync: R, execSync: R, fork: R,
  exec: node('builds its command and calls module.exports.execFile (routed)'),
  ChildProcess: free('a class; remote children are instances of it (child_process.cjs)'),
  _forkChild: free('internal: sets up the IPC channel inside a forked child'),
};

const PROCESS = { cwd: R, chdir: R, kill: R, loadEnvFile: R };

const TABLES = { fs: FS, fsp: FSP, FileHandle: FILE_HANDLE, Dir: DIR, ReadStream: READ_STREAM, WriteStream: WRITE_STREAM, child_process: CHILD_PROCESS, process: PROCESS };

// A member's key: its name, or `Symbol(description)`.
const keyOf = (k) => (typeof k === 'symbol' ? String(k) : k);

// The function members (own, names and symbols) of `obj`, with `getters` its accessors too (a
// prototype's `fd`, `path`), plus with `nested` `a.b` for function-valued properties of
// function members (fs.realpath.native).
function functionMembers(obj, { nested = false, getters = false } = {}) {
  const out = [];
  for (const k of Reflect.ownKeys(obj)) {
    const d = Object.getOwnPropertyDescriptor(obj, k);
    const isFn = typeof d.value === 'function' || (getters && typeof d.get === 'function');
    if (!isFn) continue;
    out.push(keyOf(k));
    if (nested && typeof d.value === 'function') {
      for (const k2 of Object.keys(d.value)) if (typeof d.value[k2] === 'function') out.push(`${keyOf(k)}.${k2}`);
    }
  }
  return out;
}

// Problems with a surface: {object: [member names]} of the running Node, checked against the
// tables, and `replaced`: {object: Set of members the bridge replaces (or, for the prototypes,
// defines itself)}. Returns a list of human-readable problems (empty: every member accounted).
function problems(surface, replaced) {
  const out = [];
  for (const [obj, members] of Object.entries(surface)) {
    const table = TABLES[obj];
    if (!table) {
      out.push(`${obj}: no table`);
      continue;
    }
    const mine = replaced[obj] || new Set();
    for (const m of members) {
      const entry = Object.prototype.hasOwnProperty.call(table, m) ? table[m] : null;
      if (!entry) out.push(`${obj}.${m}: neither routed nor listed as Node's own or path-free (a new API of this Node?)`);
      else if (entry.kind === 'routed' && !mine.has(m)) out.push(`${obj}.${m}: listed as routed but the bridge does not replace it`);
      else if (entry.kind !== 'routed' && mine.has(m)) out.push(`${obj}.${m}: replaced by the bridge but listed as ${entry.kind}`);
    }
  }
  return out;
}

// Every fs / fs/promises function the table does not know (and the bridge did not replace)
// refuses a routed path or a remote descriptor, naming itself; everything else passes through.
function guardUnknown(fs, fsp, installed) {
  const route = require('./route.cjs');
  const fds = require('./fds.cjs');
  const touchesRemote = (args) => args.some((a) => fds.isVirtual(a) || (a !== null && (typeof a === 'string' || Buffer.isBuffer(a) || a instanceof URL) && route.routed(a)));
  for (const [obj, name, table] of [[fs, 'fs', FS], [fsp, 'fsp', FSP]]) {
    for (const m of functionMembers(obj)) {
      if (Object.prototype.hasOwnProperty.call(table, m) || installed.has(`${name}.${m}`) || /^[A-Z]/.test(m)) continue;
      const orig = obj[m];
      obj[m] = function (...args) {
        if (touchesRemote(args)) {
          const { nodeError } = require('./errors.cjs');
          throw nodeError(Error, 'ERR_PI_BRIDGE_UNSUPPORTED', `pi-bridge: ${name === 'fs' ? 'fs' : 'fs.promises'}.${m} (new in Node ${process.version}) is not supported on remote paths`);
        }
        return Reflect.apply(orig, this, args);
      };
    }
  }
}

module.exports = { TABLES, functionMembers, problems, guardUnknown, keyOf };
