'use strict';
// Errors indistinguishable from Node's own. The wire carries only the symbolic code (ENOENT…):
// the numeric errno differs between Linux (the agent) and macOS (where pi often runs), so it is
// derived here from the local os.constants, and the text from Node's own libuv table.

const os = require('os');
const util = require('util');

let systemErrors; // Map<negative errno, [name, description]>, built lazily
// The wire Errno an error was built from, so a caller can rebuild it with the paths as the user
// wrote them (Node reports `open 'rel/x'`, not the resolved remote path).
const WIRE = Symbol('pi-bridge.errno');

function errnoOf(code) {
  const n = os.constants.errno[code];
  return typeof n === 'number' ? -n : undefined;
}

function describe(code) {
  if (!systemErrors) systemErrors = util.getSystemErrorMap();
  const errno = errnoOf(code);
  const entry = errno === undefined ? undefined : systemErrors.get(errno);
  return entry ? entry[1] : 'unknown error';
}

// Node's uvException: `CODE: description, syscall 'path' -> 'dest'` with properties in Node's
// order (errno, code, syscall, path, dest). `detail` (the agent's reason for a sandbox refusal)
// is appended only for EACCES, where Node's bare message would hide why.
function fsError({ code, syscall, path, dest, detail }) {
  let message = `${code}: ${describe(code)}, ${syscall}`;
  if (path !== undefined && path !== null) message += ` '${path}'`;
  if (dest !== undefined && dest !== null) message += ` -> '${dest}'`;
  if (detail && code === 'EACCES') message += ` (pi-bridge: ${detail})`;
  const err = new Error(message);
  err.errno = errnoOf(code);
  err.code = code;
  err.syscall = syscall;
  if (path !== undefined && path !== null) err.path = path;
  if (dest !== undefined && dest !== null) err.dest = dest;
  Object.defineProperty(err, WIRE, { value: { code, syscall, path, dest, detail } });
  return err;
}

// Node's errnoException (child processes, process.kill): `syscall CODE`.
function errnoError(code, syscall, extra) {
  const err = new Error(`${syscall} ${code}`);
  err.errno = errnoOf(code);
  err.code = code;
  err.syscall = syscall;
  return Object.assign(err, extra);
}

// The bridge itself failed (endpoint gone, timeout, protocol error): not an OS error of the
// remote, so say so clearly, with an errno-like code callers already handle.
function transportError(what, code = 'EIO') {
  const err = new Error(`pi-bridge: ${what}`);
  err.errno = errnoOf(code);
  err.code = code;
  return err;
}

// A JSON-RPC error object from the wire → an Error. -32000 carries an Errno in `data`.
function fromRpcError(e) {
  if (e && e.code === -32000 && e.data && typeof e.data.code === 'string') return fsError(e.data);
  if (e && e.code === -32005) return transportError(`call timed out (${e.message})`, 'ETIMEDOUT');
  return transportError(`${(e && e.message) || 'unknown error'}${e && e.code ? ` (rpc ${e.code})` : ''}`);
}

// Node's ERR_* errors have `code` in the name: `TypeError [ERR_X]: msg`.
function nodeError(Base, code, message) {
  const err = new Base(message);
  Object.defineProperty(err, 'code', { value: code, enumerable: true, writable: true, configurable: true });
  const name = err.name;
  err.name = `${name} [${code}]`;
  // eslint-disable-next-line no-unused-expressions
  err.stack;
  delete err.name;
  return err;
}

// Node's AbortError (lib/internal/errors.js): name AbortError, code ABORT_ERR.
class AbortError extends Error {
  constructor(message = 'The operation was aborted', options = undefined) {
    super(message, options);
    this.code = 'ABORT_ERR';
    this.name = 'AbortError';
  }
}

// Node's SystemError family (ERR_FS_EISDIR, ERR_FS_CP_*): `<prefix>: <syscall> returned <CODE>
// (<message>) <path>`, with the context in `info`. Node builds the rm errors with its
// SystemError class and the cp ones with NodeError: the constructor names are kept.
class SystemError extends Error {}
class NodeError extends Error {}
function systemError(Cls, code, prefix, info) {
  const err = new Cls(`${prefix}: ${info.syscall} returned ${info.code} (${info.message}) ${info.path}`);
  err.name = 'SystemError';
  err.code = code;
  err.info = info;
  err.errno = info.errno;
  err.syscall = info.syscall;
  err.path = info.path;
  return err;
}

// A copy of `err` (an error Node itself threw for a local stand-in, see shapes.cjs) with every
// occurrence of each stand-in string replaced by what the user's call named: same prototype
// (so the same class, name and code), same own properties in the same order. This is how the
// bridge reproduces shapes that differ between Node versions without a per-version table.
function recast(err, pairs) {
  const swap = (v) => {
    if (typeof v === 'string') {
      let out = v;
      for (const [from, to] of pairs) if (from) out = out.split(from).join(to);
      return out;
    }
    if (v && typeof v === 'object' && [Object.prototype, null].includes(Object.getPrototypeOf(v))) {
      const o = {};
      for (const k of Object.keys(v)) o[k] = swap(v[k]);
      return o;
    }
    return v;
  };
  const out = Object.create(Object.getPrototypeOf(err));
  for (const k of Reflect.ownKeys(err)) {
    if (k === 'stack') continue;
    const d = Object.getOwnPropertyDescriptor(err, k);
    if ('value' in d) d.value = swap(d.value);
    else if (d.get) {
      // Node's SystemError reads these from a context its getters close over: keep them
      // accessors, over the swapped value.
      let v = swap(err[k]);
      d.get = () => v;
      if (d.set) d.set = (x) => (v = x);
    }
    Object.defineProperty(out, k, d);
  }
  const stackDesc = Object.getOwnPropertyDescriptor(err, 'stack');
  const here = new Error(out.message).stack.split('\n').slice(2).join('\n');
  const head = `${String(err.stack).split('\n')[0]}`;
  Object.defineProperty(out, 'stack', { value: `${swap(head)}\n${here}`, writable: true, configurable: true, enumerable: !!(stackDesc && stackDesc.enumerable) });
  return out;
}

module.exports = {
  recast, AbortError, SystemError, NodeError, systemError, WIRE, errnoOf, describe, fsError, errnoError, transportError, fromRpcError, nodeError };
