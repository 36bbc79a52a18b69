'use strict';
// Which paths are remote: all of them, except a local allowlist pii computed before anything
// connected (SessionEnv.local: pi's agent dir, pi's and node's install dirs, pii's scratch dir,
// pi's private temp dir, the terminal, the user's own localPaths; DESIGN.md "Paths as pi sees
// them"). A path (string, Buffer, file: URL; relative ones resolved against the virtual cwd) on
// the allowlist is Node's own; every other one goes to the agent, whose sandbox refuses what
// lies outside the project (EACCES): nothing the remote or the model names reaches a laptop file
// outside the allowlist, and nothing the agent says changes it.
//
// node starts while pii is still connecting. An absolute path needs nothing from the remote to
// be decided; the virtual cwd (for relative paths and process.cwd()) and the sandbox root are
// fetched with one blocking `session.info` the first time they are needed (`pending`), never at
// require time.

const path = require('path');
const { fileURLToPath } = require('url');

const state = {
  local: [], // [{path, kind, why}], longest first
  routes: [], // the sandbox root(s) the agent reported, for messages and error shapes
  cwd: null, // the virtual cwd (a remote path)
  realCwd: process.cwd, // the original process.cwd, set by index.cjs before patching
  pending: null, // () => ({ routes, cwd }): fetches them on first need; null once known
  fetching: false,
};

function sortLocal(list) {
  return list.map((l) => ({ ...l, path: path.resolve(l.path) })).sort((a, b) => b.path.length - a.path.length);
}

function configure({ local, routes, cwd, realCwd, pending }) {
  state.local = sortLocal(local || []);
  state.routes = (routes || []).map((r) => path.resolve(r));
  state.cwd = cwd ? path.resolve(cwd) : null;
  if (realCwd) state.realCwd = realCwd;
  state.pending = pending || null;
}

// Make the remote cwd and sandbox root known (a no-op once they are).
function settle() {
  if (state.pending === null || state.fetching) return;
  state.fetching = true;
  try {
    const { routes, cwd } = state.pending();
    state.routes = (routes || []).map((r) => path.resolve(r));
    state.cwd = cwd ? path.resolve(cwd) : null;
    state.pending = null;
  } finally {
    state.fetching = false;
  }
}

// process.cwd(): always the remote cwd (the allowlist never holds it: pii checked that).
function cwd() {
  settle();
  return state.cwd !== null ? state.cwd : state.realCwd.call(process);
}

function setCwd(dir) {
  state.cwd = dir;
}

// A path-like argument as a string, or null if it is not one (fds, objects…).
function toPathString(p) {
  if (typeof p === 'string') return p;
  if (Buffer.isBuffer(p)) return p.toString('utf8');
  if (p instanceof URL || (p && typeof p === 'object' && typeof p.href === 'string' && p.protocol !== undefined)) {
    if (p.protocol !== 'file:') return null;
    try {
      return fileURLToPath(p);
    } catch {
      return null;
    }
  }
  return null;
}

function isUnder(abs, dir) {
  if (abs === dir) return true;
  const prefix = dir.endsWith('/') ? dir : dir + '/';
  return abs.startsWith(prefix);
}

// The allowlist entry deciding for an absolute, normalised path (the longest holding it), or null.
function localEntry(abs) {
  for (const l of state.local) if (isUnder(abs, l.path)) return l;
  return null;
}

// Learned local paths: a symlink on the allowlist (an extension dir linked from elsewhere, a
// linked global install) resolves to its target, which code then names. The target is the
// same local file or directory, so it stays local with the kind of the link's entry.
function learn(dir, kind, why) {
  const abs = path.resolve(dir);
  if (abs === '/' || localEntry(abs)) return;
  state.local = sortLocal([...state.local, { path: abs, kind, why: `${why} (through a symlink)` }]);
}

// Whether an absolute path is the remote's.
function isRoutedAbsolute(abs) {
  return localEntry(path.resolve(abs)) === null;
}

// The absolute path for `p` as the call names it (relative ones against the virtual cwd), or
// null when `p` is not a usable path.
function absoluteOf(p) {
  const s = toPathString(p);
  if (s === null || s.length === 0 || s.includes('\u0000')) return null;
  return path.isAbsolute(s) ? path.resolve(s) : path.resolve(cwd(), s);
}

// The absolute remote path for `p` if it is routed, else null. Never throws.
function routed(p) {
  const abs = absoluteOf(p);
  if (abs === null) return null;
  return localEntry(abs) === null ? abs : null;
}

module.exports = { configure, settle, cwd, setCwd, toPathString, routed, absoluteOf, isRoutedAbsolute, localEntry, learn, state };
