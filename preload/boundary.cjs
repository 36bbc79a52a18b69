'use strict';
// What may happen to the paths that stay local (route.cjs, SessionEnv.local), by their kind:
//
//   kind      node may write   pi's tools may             what
//   config    yes              nothing                    pi's agent dir, session dirs
//   code      no               read                       pi's and node's install dirs
//   temp      yes              read                       pi's private temp dir
//   device    yes              nothing                    the terminal
//   private   no               nothing                    pii's scratch dir; pi's extension
//                                                         and package dirs in its agent dir
//   user      yes              read and write             the user's own localPaths
//
// - Writes through node's fs to a read-only kind fail with EROFS (`writeDenied`, asked by
//   fs.cjs for the path arguments an operation writes): nothing pi can be talked into writing
//   becomes code that runs here.
// - pi's tools act for the model, whose instructions may come from the remote project:
//   `toolCall` (used by pi-bridge-guard.cjs, the pi extension pii loads) blocks a tool call
//   whose paths resolve, in any of the ways pi resolves them, to a local path the table keeps
//   from tools. bash is not checked: it runs on the remote.
// - `learnRealpaths`: realpath of a local path leading out of the allowlist (a symlink) makes
//   the target local too (route.learn), so code resolving its own files keeps finding them.

const fs = require('fs');
const os = require('os');
const path = require('path');
const route = require('./route.cjs');
const { fsError } = require('./errors.cjs');

const READ_ONLY = new Set(['code', 'private']);
const TOOLS_READ = new Set(['code', 'temp', 'user']);
const TOOLS_WRITE = new Set(['user']);

// The path arguments each operation writes through (fsops.OPS names).
const WRITES = {
  writeFile: [0], appendFile: [0], mkdir: [0], rmdir: [0], rm: [0], unlink: [0], rename: [0, 1],
  copyFile: [1], link: [1], symlink: [1], chown: [0], lchown: [0], chmod: [0], lchmod: [0],
  utimes: [0], lutimes: [0], truncate: [0], mkdtemp: [0], mkdtempDisposable: [0], cp: [1],
};

const byOp = new Map(); // OPS entry → its name

function installOps(OPS) {
  for (const [name, op] of Object.entries(OPS)) byOp.set(op, name);
}

function opensForWriting(flags) {
  if (flags === undefined || flags === null) return false;
  if (typeof flags === 'string') return /[wa+]/.test(flags);
  if (typeof flags !== 'number') return true; // Node will refuse it; never a reason to allow
  const K = fs.constants;
  return (flags & 3) !== K.O_RDONLY || (flags & (K.O_CREAT | K.O_TRUNC | K.O_APPEND)) !== 0;
}

// Called by fs.cjs for a call none of whose paths is routed: the EROFS error when it would
// write a read-only local path, else null.
function writeDenied(op, args) {
  const name = byOp.get(op);
  let idx = name === undefined ? null : WRITES[name];
  if (name === 'open' && opensForWriting(args[1])) idx = [0];
  if (!idx) return null;
  for (const i of idx) {
    const abs = route.absoluteOf(args[i]);
    if (abs === null) continue;
    const l = route.localEntry(abs);
    if (l && READ_ONLY.has(l.kind)) {
      return fsError({ code: 'EROFS', syscall: name === 'open' ? 'open' : name, path: route.toPathString(args[i]), detail: `pi-bridge keeps ${l.why} read-only` });
    }
  }
  return null;
}

// ---- the sandbox, decided here ----------------------------------------------------------------

// A remote path lexically outside the sandbox root is refused here, with the agent's own error
// (EACCES, "outside the sandbox root"), instead of asking: such paths were never the remote's
// before routing by exclusion (they were the laptop's), and pi asks for many of them at every
// start (AGENTS.md and skills in every ancestor of the project, its home's realpath). The agent
// stays the judge of everything inside: there, it checks canonical paths.
const PATH_KEYS = ['path', 'from', 'to', 'prefix'];
const SYSCALLS = { '*names': 'open', 'fs.read': 'open', 'fs.open': 'open', 'fs.write': 'open', 'fs.readdir': 'scandir', 'fs.copyFile': 'copyfile', 'fs.upload.begin': 'open', 'fs.utimes': 'utime' };

function isUnder(abs, dir) {
  return abs === dir || abs.startsWith(dir.endsWith('/') ? dir : `${dir}/`);
}

// The sandbox root a remote absolute path lies outside of, or null.
function outsideOf(p) {
  if (typeof p !== 'string' || !path.isAbsolute(p)) return null;
  route.settle();
  const roots = route.state.routes;
  if (roots.length === 0) return null; // not known: the agent decides
  const abs = path.resolve(p);
  return roots.some((r) => isUnder(abs, r)) ? null : roots[0];
}

function syscallOf(method, params) {
  if (method === 'fs.stat') return params.lstat ? 'lstat' : 'stat';
  return SYSCALLS[method] || method.replace(/^fs\./, '');
}

// Wrap one operation's generator (run.cjs): `refuse(method, params)` may return an error to
// throw into it instead of making that call; `after(method, params, value)` may change an
// answer. Shared with trust.cjs.
function wrapCalls(run, refuse, after = (_m, _p, v) => v) {
  return function* wrapped(c, ...args) {
    const gen = run.call(this, c, ...args);
    let step = gen.next();
    while (!step.done) {
      const [method, params] = step.value;
      const err = refuse(method, params);
      if (err) {
        step = gen.throw(err);
        continue;
      }
      let value;
      try {
        value = yield step.value;
      } catch (e) {
        step = gen.throw(e);
        continue;
      }
      step = gen.next(after(method, params, value));
    }
    return step.value;
  };
}

// Remote calls naming a path outside the sandbox fail at once.
function outsideRefusal(method, params) {
  if (typeof method !== 'string' || !(method.startsWith('fs.') || method === '*names') || !params || typeof params !== 'object') return null;
  for (const k of PATH_KEYS) {
    const root = outsideOf(params[k]);
    if (root !== null) return fsError({ code: 'EACCES', syscall: syscallOf(method, params), path: params[k], detail: `'${path.resolve(params[k])}' is outside the sandbox root '${root}'` });
  }
  return null;
}

// ---- pi's tools ------------------------------------------------------------------------------

// pi's utils/paths.js + tools/path-utils.js: the strings a tool's path may become.
const UNICODE_SPACES = /[\u00A0\u2000-\u200A\u202F\u205F\u3000]/g;

function candidates(s, cwd) {
  const out = new Set();
  const home = os.homedir();
  const starts = new Set([s, s.trim()]);
  for (const a of starts) {
    for (const b of new Set([a, a.replace(UNICODE_SPACES, ' ')])) {
      for (let c of new Set([b, b.replace(/^@/, '')])) {
        if (c === '~') c = home;
        else if (c.startsWith('~/')) c = path.join(home, c.slice(2));
        if (/^file:\/\//.test(c)) {
          try {
            c = require('url').fileURLToPath(c);
          } catch {
            continue;
          }
        }
        const abs = path.isAbsolute(c) ? path.resolve(c) : path.resolve(cwd, c);
        for (const v of [abs, abs.replace(/ (AM|PM)\./gi, '\u202F$1.'), abs.normalize('NFD'), abs.normalize('NFC'), abs.replace(/'/g, '\u2019'), abs.normalize('NFD').replace(/'/g, '\u2019')]) out.add(v);
      }
    }
  }
  return out;
}

// Path-like strings of a tool's input: the known path parameters of pi's file tools, every
// string (to some depth) of any other tool but bash.
const PATH_PARAMS = { read: ['path'], write: ['path'], edit: ['path'], ls: ['path'], grep: ['path'], find: ['path'] };
const READ_TOOLS = new Set(['read', 'ls', 'grep', 'find']);

function strings(v, out, depth) {
  if (out.length > 256 || depth > 6) return;
  if (typeof v === 'string') {
    if (v.length > 0 && v.length <= 4096 && !v.includes('\n')) out.push(v);
  } else if (Array.isArray(v)) for (const x of v) strings(x, out, depth + 1);
  else if (v && typeof v === 'object') for (const x of Object.values(v)) strings(x, out, depth + 1);
}

// Why the tool call must not run, or null.
function toolCall(toolName, input, cwd) {
  if (toolName === 'bash') return null;
  const found = [];
  const known = PATH_PARAMS[toolName];
  if (known) {
    for (const k of known) if (input && typeof input[k] === 'string') found.push(input[k]);
    // pi 1.x's edit may carry several edits, each with a path.
    if (toolName === 'edit' && input && Array.isArray(input.edits)) for (const e of input.edits) if (e && typeof e.path === 'string') found.push(e.path);
  } else {
    strings(input, found, 0);
  }
  const mayRead = READ_TOOLS.has(toolName);
  for (const s of found) {
    for (const abs of candidates(s, cwd || route.cwd())) {
      const l = route.localEntry(abs);
      if (!l) continue;
      const ok = mayRead ? TOOLS_READ.has(l.kind) : TOOLS_WRITE.has(l.kind);
      if (!ok) {
        return `pi-bridge: ${s} is on this machine (${l.why}), not in the remote project; pi's tools work on the remote only`;
      }
    }
  }
  return null;
}

// ---- realpath ----------------------------------------------------------------------------

const realpathSyncOrig = fs.realpathSync; // before fs.cjs patches them
const statSyncOrig = fs.statSync;

function learnFrom(input, result) {
  const from = route.absoluteOf(input);
  const to = route.toPathString(result);
  if (from === null || typeof to !== 'string' || !path.isAbsolute(to)) return;
  if (route.localEntry(path.resolve(to)) || !route.localEntry(from)) return;
  // The highest local ancestor of `from` that resolves elsewhere is the symlinked directory.
  let learned = null;
  let kind = null;
  for (let a = from; route.localEntry(a); a = path.dirname(a)) {
    let r;
    try {
      r = realpathSyncOrig(a);
    } catch {
      break;
    }
    if (r === a) break;
    learned = r;
    kind = route.localEntry(a);
    if (a === '/' || path.dirname(a) === a) break;
  }
  if (!learned || !kind) return;
  route.learn(learned, kind.kind, kind.why);
  // Code found through a link (a linked global install, a package whose dependencies are linked
  // in) loads its own dependencies from where Node looks next to its real path: those
  // node_modules directories are the same code.
  if (kind.kind !== 'code') return;
  for (let d = learned; ; d = path.dirname(d)) {
    if (path.basename(d) === 'node_modules') route.learn(d, 'code', kind.why);
    else if (isDirOrig(path.join(d, 'node_modules'))) route.learn(path.join(d, 'node_modules'), 'code', kind.why);
    if (path.dirname(d) === d) break;
  }
}

function isDirOrig(p) {
  try {
    return statSyncOrig(p).isDirectory();
  } catch {
    return false;
  }
}

function learnRealpaths(fs, fsp) {
  const wrapSync = (fn) => {
    const w = function realpathSync(p, ...rest) {
      const r = Reflect.apply(fn, this, [p, ...rest]);
      learnFrom(p, r);
      return r;
    };
    Object.defineProperty(w, 'name', { value: fn.name, configurable: true });
    return w;
  };
  const wrapCb = (fn) => {
    const w = function realpath(p, ...rest) {
      const cb = rest[rest.length - 1];
      if (typeof cb !== 'function') return Reflect.apply(fn, this, [p, ...rest]);
      rest[rest.length - 1] = (err, r) => {
        if (!err) learnFrom(p, r);
        cb(err, r);
      };
      return Reflect.apply(fn, this, [p, ...rest]);
    };
    Object.defineProperty(w, 'name', { value: fn.name, configurable: true });
    return w;
  };
  const syncNative = fs.realpathSync.native;
  const cbNative = fs.realpath.native;
  const keep = (from, to) => {
    for (const k of Object.keys(from)) if (!(k in to)) to[k] = from[k];
    return to;
  };
  fs.realpathSync = keep(fs.realpathSync, wrapSync(fs.realpathSync));
  fs.realpathSync.native = wrapSync(syncNative);
  fs.realpath = keep(fs.realpath, wrapCb(fs.realpath));
  fs.realpath.native = wrapCb(cbNative);
  const prom = fsp.realpath;
  fsp.realpath = async function realpath(p, ...rest) {
    const r = await Reflect.apply(prom, this, [p, ...rest]);
    learnFrom(p, r);
    return r;
  };
}

function install(fsMod, fsp, OPS) {
  installOps(OPS);
  for (const op of Object.values(OPS)) {
    if (typeof op.run === 'function') op.run = wrapCalls(op.run, outsideRefusal);
  }
  learnRealpaths(fsMod, fsp);
  Object.defineProperty(globalThis, Symbol.for('pi-bridge.boundary'), {
    value: Object.freeze({ toolCall }),
    enumerable: false,
    configurable: false,
    writable: false,
  });
}

module.exports = { install, installOps, wrapCalls, writeDenied, toolCall, candidates, learnFrom, opensForWriting, outsideOf, WRITES };
