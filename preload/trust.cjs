'use strict';
// Trust (DESIGN.md "Trust", protocol/src/trust.rs): what an untrusted remote project may show pi,
// unless the user passed `pii --trust-project`. pii sends the gate (SessionEnv.gate); it applies
// to every remote path at ANY depth, since pi may adopt any cwd under the project (a resumed
// session's header names one):
//   - `<configDir>/extensions` and `<configDir>/mcp.json` (code pi would load into this process,
//     processes pi 1.x would start), and everything under them: every remote call naming such a
//     path fails with ENOENT, listings omit them, watches refuse them;
//   - `<configDir>/settings.json` reads back with only the allowed keys (an allowlist: a key a
//     later pi adds stays hidden), through every read path: readFile in all forms, an open
//     descriptor (an in-memory copy of the shown bytes, fds.cjs), streams and FileHandles (which
//     read through descriptors), openAsBlob. Not a JSON object: pi sees `{}`. When pi writes the
//     file whole (writeFile), the hidden keys are put back; any other write to it (appendFile,
//     truncate, an open for writing, a rename or copy onto it) is refused with EACCES, since it
//     could drop them.
// The hook works at the operation level: every routed fs operation is a generator yielding
// [method, params] (run.cjs); install() wraps each entry of fsops.OPS so the yielded calls pass
// through here first. pii prints the one notice (before pi gets its first answer); nothing is
// printed here.

const path = require('path');
const { fsError } = require('./errors.cjs');

const PATH_KEYS = ['path', 'from', 'to', 'prefix'];
const SYSCALL = { 'fs.readdir': 'scandir', 'fs.read': 'open', 'fs.write': 'open', 'fs.copyFile': 'copyfile', 'fs.open': 'open', '*names': 'open' };

const state = {
  gate: null, // SessionEnv.gate when untrusted, else null
  held: new Map(), // settings path → the keys last hidden from it
};

function components(abs) {
  return path.resolve(abs).split('/').filter(Boolean);
}

// Whether an absolute path is, or is under, a hidden entry of a config dir (any depth).
function isHidden(p) {
  const g = state.gate;
  if (g === null || typeof p !== 'string') return false;
  // Every component of a normalised absolute path is a substring of it: no config dir's name in
  // the string, nothing to hide (the common case, without resolving the path).
  if (p.startsWith('/') && !g.configDirs.some((d) => p.includes(d))) return false;
  const c = components(p);
  for (let i = 0; i + 1 < c.length; i++) if (g.configDirs.includes(c[i]) && g.hidden.includes(c[i + 1])) return true;
  return false;
}

// Whether an absolute path is a config dir's settings file (any depth).
function isSettings(p) {
  const g = state.gate;
  if (g === null || typeof p !== 'string') return false;
  const c = components(p);
  return c.length >= 2 && c[c.length - 1] === g.settingsFile && g.configDirs.includes(c[c.length - 2]);
}

// The first hidden path a remote call names, or null.
function hiddenIn(params) {
  if (!params || typeof params !== 'object') return null;
  for (const k of PATH_KEYS) if (isHidden(params[k])) return params[k];
  return null;
}

// fs.readdir results ({entries}): drop entries (names relative to the listed dir, `a/b` when
// recursive) that are hidden. A new object: the one given may be the cache's.
// The dir's own components are split once: a plain name (no `/`, not `.` or `..`: what a
// non-recursive listing holds) is hidden when the dir is, or when the dir is a config dir and the
// name one of its hidden entries. Any other name (recursive `a/b`, or something odd from the
// remote) is joined and checked whole. Listings are the hot path of a cached `readdirSync`.
function filterEntries(dir, result) {
  if (!result || !Array.isArray(result.entries)) throw new Error('pi-bridge: fs.readdir answered without entries');
  const g = state.gate;
  if (g === null) return { ...result, entries: result.entries.slice() };
  const c = components(dir);
  const dirHidden = isHidden(dir);
  const configDir = c.length > 0 && g.configDirs.includes(c[c.length - 1]);
  const plainHidden = (name) => dirHidden || (configDir && g.hidden.includes(name));
  const hidden = (name) => (name.includes('/') || name === '.' || name === '..' || name === '' ? isHidden(path.join(dir, name)) : plainHidden(name));
  return { ...result, entries: result.entries.filter((e) => !(e && typeof e.name === 'string' && hidden(e.name))) };
}

// Wrap one operation's generator: refuse hidden paths, filter listings.
function guard(run) {
  const { wrapCalls } = require('./boundary.cjs');
  return wrapCalls(
    run,
    (method, params) => {
      const hit = hiddenIn(params);
      return hit === null ? null : fsError({ code: 'ENOENT', syscall: SYSCALL[method] || String(method).replace(/^fs\./, ''), path: hit });
    },
    (method, params, value) => (method === 'fs.readdir' ? filterEntries(params.path, value) : value),
  );
}

// ---- settings ------------------------------------------------------------------------------

function parseObject(text) {
  try {
    const v = JSON.parse(text.replace(/^\uFEFF/, ''));
    return v && typeof v === 'object' && !Array.isArray(v) ? v : null;
  } catch {
    return null;
  }
}

// The settings file `abs` as pi may read it (Buffer in, Buffer out): only the allowed keys;
// the hidden ones are kept for the write-back.
function shownSettings(abs, raw) {
  const obj = parseObject(raw.toString('utf8'));
  if (obj === null) {
    state.held.set(abs, null);
    return Buffer.from('{}\n', 'utf8');
  }
  const held = {};
  for (const k of Object.keys(obj)) {
    if (!state.gate.settingsKeys.includes(k)) {
      held[k] = obj[k];
      delete obj[k];
    }
  }
  const any = Object.keys(held).length > 0;
  state.held.set(abs, any ? held : null);
  return any ? Buffer.from(JSON.stringify(obj, null, 2), 'utf8') : raw;
}

// settings.json as pi writes it: the keys it never saw go back in (unless pi set them itself).
function restoreSettings(abs, data) {
  const held = state.held.get(abs);
  if (!held || (typeof data !== 'string' && !Buffer.isBuffer(data))) return data;
  const obj = parseObject(String(data));
  if (obj === null) return data;
  for (const [k, v] of Object.entries(held)) if (!(k in obj)) obj[k] = v;
  const text = JSON.stringify(obj, null, 2);
  return Buffer.isBuffer(data) ? Buffer.from(text, 'utf8') : text;
}

function refuseSettingsWrite(p, syscall) {
  return fsError({ code: 'EACCES', syscall, path: p, detail: "pi-bridge: an untrusted project's settings file is written only whole (--trust-project to lift)" });
}

// Which path arguments of an operation it writes (the settings file may be written only whole).
const WRITES_SETTINGS = { appendFile: [0], truncate: [0], rename: [1], copyFile: [1], link: [1], symlink: [0], cp: [1] };

function install(session, OPS) {
  if (session.trustProject) return;
  state.gate = session.gate;
  const { readAll } = require('./fsops.cjs');
  const fds = require('./fds.cjs');
  const { opensForWriting } = require('./boundary.cjs');
  for (const op of Object.values(OPS)) {
    if (typeof op.run === 'function') op.run = guard(op.run);
  }
  for (const [name, idx] of Object.entries(WRITES_SETTINGS)) {
    const inner = OPS[name].run;
    OPS[name].run = function* (c, ...args) {
      for (const i of idx) if (isSettings(c.p[i])) throw refuseSettingsWrite(c.disp[i], name);
      return yield* inner.call(this, c, ...args);
    };
  }
  const readRun = OPS.readFile.run;
  OPS.readFile.run = function* (c, ...args) {
    if (c.fd !== undefined || !isSettings(c.p[0])) return yield* readRun.call(this, c, ...args);
    const o = args[1];
    const encoding = typeof o === 'string' ? o : o && o.encoding;
    const raw = yield* readRun.call(this, c, args[0], { ...(o && typeof o === 'object' ? o : {}), encoding: null });
    const shown = shownSettings(c.p[0], raw);
    return encoding && encoding !== 'buffer' ? shown.toString(encoding) : shown;
  };
  const writeRun = OPS.writeFile.run;
  OPS.writeFile.run = function* (c, p, data, ...rest) {
    if (c.fd !== undefined || !isSettings(c.p[0])) return yield* writeRun.call(this, c, p, data, ...rest);
    if (!state.held.has(c.p[0])) {
      // Never read here: learn what it hides now, or pi's write would drop it.
      try {
        shownSettings(c.p[0], yield* readAll(c.p[0]));
      } catch (err) {
        if (!err || err.code !== 'ENOENT') throw err;
      }
    }
    return yield* writeRun.call(this, c, p, restoreSettings(c.p[0], data), ...rest);
  };
  // An open of the settings file for reading: a descriptor over the shown bytes.
  const openRun = OPS.open.run;
  OPS.open.run = function* (c, p, flags, mode) {
    if (!isSettings(c.p[0])) return yield* openRun.call(this, c, p, flags, mode);
    if (opensForWriting(flags)) throw refuseSettingsWrite(c.disp[0], 'open');
    const st = yield ['fs.stat', { path: c.p[0], lstat: false }];
    if ((st.mode & 0o170000) === 0o040000) return yield* openRun.call(this, c, p, flags, mode);
    const fd = fds.openMemory(c.p[0], shownSettings(c.p[0], yield* readAll(c.p[0])), st);
    if (c.form !== 'promise') return fd;
    const { handle } = require('./filehandle.cjs');
    return yield ['*await', handle(fd)];
  };
  const blobRun = OPS.openAsBlob.run;
  OPS.openAsBlob.run = function* (c, p, o) {
    if (!isSettings(c.p[0])) return yield* blobRun.call(this, c, p, o);
    const { Blob } = require('buffer');
    return new Blob([shownSettings(c.p[0], yield* readAll(c.p[0]))], { type: (o && o.type) || '' });
  };
}

// fs.watch / watchFile / promises.watch of a hidden path: ENOENT, as for any call naming it.
function installWatch(fs, fsp) {
  if (state.gate === null) return;
  const route = require('./route.cjs');
  const refuse = (filename, syscall) => {
    const abs = route.routed(filename);
    if (abs !== null && isHidden(abs)) throw fsError({ code: 'ENOENT', syscall, path: route.toPathString(filename) });
  };
  const w = fs.watch;
  fs.watch = function watch(filename, ...rest) {
    refuse(filename, 'watch');
    return Reflect.apply(w, this, [filename, ...rest]);
  };
  const wf = fs.watchFile;
  fs.watchFile = function watchFile(filename, ...rest) {
    refuse(filename, 'watch');
    return Reflect.apply(wf, this, [filename, ...rest]);
  };
  const pw = fsp.watch;
  fsp.watch = function watch(filename, ...rest) {
    refuse(filename, 'watch');
    return Reflect.apply(pw, this, [filename, ...rest]);
  };
}

module.exports = { install, installWatch, isHidden, isSettings, filterEntries, state };
