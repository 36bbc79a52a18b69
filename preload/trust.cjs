'use strict';
// Trust (DESIGN.md "Trust"): code in the remote project that pi would EXECUTE ON THIS MACHINE is
// hidden unless the user passed `pii --trust-project`:
//   - `<project>/.pi/extensions` and everything under it: every remote call naming such a path
//     fails with ENOENT, and directory listings omit it (so `.pi` lists without `extensions`);
//   - `<project>/.pi/settings.json` reads back without its `packages` (pi would git clone /
//     npm install and load them), `extensions` (extra extension paths) and `npmCommand` (the
//     command pi runs locally to install packages) keys. When pi writes the file back, the
//     hidden keys are put back, so a settings change does not delete them.
// The hook works at the wire level: every routed fs operation is a generator yielding
// [method, params] (run.cjs), and install() wraps each entry of fsops.OPS so the yielded calls
// pass through here first. pii prints the one notice (before node starts); nothing is printed here.

const path = require('path');
const { fsError } = require('./errors.cjs');

const PATH_KEYS = ['path', 'from', 'to', 'prefix'];
const SETTINGS_KEYS = ['packages', 'extensions', 'npmCommand'];
const SYSCALL = { 'fs.readdir': 'scandir', 'fs.read': 'open', 'fs.write': 'open', 'fs.copyFile': 'copyfile', '*names': 'open' };

const state = {
  hidden: null, // absolute `<project>/.pi/extensions`, or null when trusted
  settings: null, // absolute `<project>/.pi/settings.json`
  held: null, // the keys last hidden from settings.json: { packages: …, extensions: … }
};

function isUnder(abs, dir) {
  return abs === dir || abs.startsWith(dir + '/');
}

function hiddenPath(p) {
  return typeof p === 'string' && state.hidden !== null && isUnder(path.resolve(p), state.hidden);
}

// The first hidden path a remote call names, or null.
function hiddenIn(params) {
  if (!params || typeof params !== 'object') return null;
  for (const k of PATH_KEYS) if (hiddenPath(params[k])) return params[k];
  return null;
}

// fs.readdir results: drop entries (names relative to the listed dir, `a/b` when recursive)
// that are hidden.
function filterEntries(dir, entries) {
  if (!Array.isArray(entries)) return entries;
  return entries.filter((e) => !(e && typeof e.name === 'string' && hiddenPath(path.join(dir, e.name))));
}

// Wrap one operation's generator: refuse hidden paths, filter listings.
function guard(run) {
  return function* guarded(c, ...args) {
    const gen = run.call(this, c, ...args);
    let step = gen.next();
    while (!step.done) {
      const [method, params] = step.value;
      const hit = hiddenIn(params);
      if (hit !== null) {
        step = gen.throw(fsError({ code: 'ENOENT', syscall: SYSCALL[method] || String(method).replace(/^fs\./, ''), path: hit }));
        continue;
      }
      let value;
      try {
        value = yield step.value;
      } catch (err) {
        step = gen.throw(err);
        continue;
      }
      if (method === 'fs.readdir') value = filterEntries(params.path, value);
      step = gen.next(value);
    }
    return step.value;
  };
}

// settings.json as pi may read it: without the hidden keys (kept for the write-back).
function filterSettings(out) {
  const text = Buffer.isBuffer(out) ? out.toString('utf8') : typeof out === 'string' ? out : null;
  if (text === null) return out;
  let obj;
  try {
    obj = JSON.parse(text);
  } catch {
    return out; // pi reports the parse error itself and loads nothing from it
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return out;
  const held = {};
  for (const k of SETTINGS_KEYS) {
    if (Object.prototype.hasOwnProperty.call(obj, k)) {
      held[k] = obj[k];
      delete obj[k];
    }
  }
  state.held = Object.keys(held).length ? held : null;
  if (!state.held) return out;
  const shown = JSON.stringify(obj, null, 2);
  return Buffer.isBuffer(out) ? Buffer.from(shown, 'utf8') : shown;
}

// settings.json as pi writes it: the keys it never saw go back in (unless pi set them itself).
function restoreSettings(data) {
  if (!state.held || (typeof data !== 'string' && !Buffer.isBuffer(data))) return data;
  let obj;
  try {
    obj = JSON.parse(String(data));
  } catch {
    return data;
  }
  if (!obj || typeof obj !== 'object' || Array.isArray(obj)) return data;
  for (const [k, v] of Object.entries(state.held)) if (!(k in obj)) obj[k] = v;
  const text = JSON.stringify(obj, null, 2);
  return Buffer.isBuffer(data) ? Buffer.from(text, 'utf8') : text;
}

// The project root the hidden paths are under (known at install, or later: index.cjs).
function setRoot(root) {
  state.hidden = path.join(path.resolve(root), '.pi', 'extensions');
  state.settings = path.join(path.resolve(root), '.pi', 'settings.json');
}

function install(session, OPS) {
  if (session.trustProject) return;
  setRoot(session.cwd);
  for (const op of Object.values(OPS)) {
    if (typeof op.run === 'function') op.run = guard(op.run);
  }
  const readRun = OPS.readFile.run;
  OPS.readFile.run = function* (c, ...args) {
    const out = yield* readRun.call(this, c, ...args);
    return c.p[0] === state.settings ? filterSettings(out) : out;
  };
  const writeRun = OPS.writeFile.run;
  OPS.writeFile.run = function* (c, p, data, ...rest) {
    const d = c.p[0] === state.settings ? restoreSettings(data) : data;
    return yield* writeRun.call(this, c, p, d, ...rest);
  };
}

module.exports = { install, setRoot, state };
