'use strict';
// Which paths are remote. A path (string, Buffer, file: URL; relative ones resolved against the
// virtual cwd) equal to or under a route goes to the agent; everything else is Node's own.
// node starts while pii is still connecting: until the routes are known (`pending`), the first
// question that needs them (a routed-or-not decision, process.cwd()) fetches them with one
// blocking `session.info` call. Nothing is asked at require time.

const path = require('path');
const { fileURLToPath } = require('url');

const state = {
  routes: [], // normalised absolute prefixes, no trailing slash (except '/')
  cwd: null, // the virtual cwd (a remote path) or null: use the real one
  realCwd: process.cwd, // the original process.cwd, set by index.cjs before patching
  pending: null, // () => ({ routes, cwd }): fetches them on first need; null once known
  fetching: false,
};

function configure({ routes, cwd, realCwd, pending }) {
  state.routes = (routes || []).map((r) => path.resolve(r));
  state.cwd = cwd ? path.resolve(cwd) : null;
  if (realCwd) state.realCwd = realCwd;
  state.pending = pending || null;
}

// Make the routes and the virtual cwd known (a no-op once they are).
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

function isUnder(abs, route) {
  if (abs === route) return true;
  const prefix = route.endsWith('/') ? route : route + '/';
  return abs.startsWith(prefix);
}

function isRoutedAbsolute(abs) {
  settle();
  for (const r of state.routes) if (isUnder(abs, r)) return true;
  return false;
}

// The absolute remote path for `p` if it is routed, else null. Never throws.
function routed(p) {
  const s = toPathString(p);
  if (s === null || s.length === 0 || s.includes('\u0000')) return null;
  const abs = path.resolve(cwd(), s);
  return isRoutedAbsolute(abs) ? abs : null;
}

module.exports = { configure, settle, cwd, setCwd, toPathString, routed, isRoutedAbsolute, state };
