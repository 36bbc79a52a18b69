'use strict';
// Which paths are remote. A path (string, Buffer, file: URL; relative ones resolved against the
// virtual cwd) equal to or under a route goes to the agent; everything else is Node's own.

const path = require('path');
const { fileURLToPath } = require('url');

const state = {
  routes: [], // normalised absolute prefixes, no trailing slash (except '/')
  cwd: null, // the virtual cwd (a remote path) or null: use the real one
  realCwd: process.cwd, // the original process.cwd, set by index.cjs before patching
};

function configure({ routes, cwd, realCwd }) {
  state.routes = (routes || []).map((r) => path.resolve(r));
  state.cwd = cwd ? path.resolve(cwd) : null;
  if (realCwd) state.realCwd = realCwd;
}

function cwd() {
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

module.exports = { configure, cwd, setCwd, toPathString, routed, isRoutedAbsolute, state };
