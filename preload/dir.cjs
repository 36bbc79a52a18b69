'use strict';
// fs.Dir for opendir on a routed path: one remote listing, served as Node's Dir serves its
// entries. It is an instance of fs.Dir (our class sits on Node's prototype) with every member of
// Node's prototype defined here; the symbol members (dispose, asyncDispose, asyncIterator) are
// those the running Node defines, found on fs.Dir.prototype. Reading or closing a closed Dir
// fails with the error Node itself throws (taken once from a real, closed, local Dir).

const fs = require('fs');
const { recast } = require('./errors.cjs');
const shapes = require('./shapes.cjs');

const ENTRIES = Symbol('pi-bridge.entries');
const PATH = Symbol('pi-bridge.path');
const CLOSED = Symbol('pi-bridge.closed');

// Node's ERR_DIR_CLOSED, as the running Node words it.
let closedSample;
function closedError() {
  if (closedSample === undefined) {
    try {
      const d = shapes.orig.fs.opendirSync(shapes.DIR);
      d.closeSync();
      d.readSync();
      closedSample = null;
    } catch (e) {
      closedSample = e;
    }
  }
  return closedSample ? recast(closedSample, []) : new Error('Directory handle was closed');
}

class Dir {
  constructor(disp, dirents) {
    this[PATH] = disp;
    this[ENTRIES] = dirents;
    this[CLOSED] = false;
  }

  get path() {
    return this[PATH];
  }

  readSync() {
    if (this[CLOSED]) throw closedError();
    return this[ENTRIES].length ? this[ENTRIES].shift() : null;
  }

  read(cb) {
    if (typeof cb === 'function') {
      let v;
      try {
        v = this.readSync();
      } catch (e) {
        return process.nextTick(cb, e);
      }
      return process.nextTick(cb, null, v);
    }
    try {
      return Promise.resolve(this.readSync());
    } catch (e) {
      return Promise.reject(e);
    }
  }

  closeSync() {
    if (this[CLOSED]) throw closedError();
    this[CLOSED] = true;
  }

  close(cb) {
    if (typeof cb === 'function') {
      try {
        this.closeSync();
      } catch (e) {
        return process.nextTick(cb, e);
      }
      return process.nextTick(cb, null);
    }
    try {
      this.closeSync();
      return Promise.resolve();
    } catch (e) {
      return Promise.reject(e);
    }
  }

  // Node's iteration closes the Dir at its end.
  async *entries() {
    try {
      for (let d; (d = this.readSync()) !== null; ) yield d;
    } finally {
      if (!this[CLOSED]) this.closeSync();
    }
  }

  // Node 20/22: internals its own prototype exposes; a remote listing is already complete.
  processReadResult() {
    throw new Error('pi-bridge: Dir.processReadResult is internal to Node and has no remote equivalent');
  }

  readSyncRecursive() {
    throw new Error('pi-bridge: Dir.readSyncRecursive is internal to Node and has no remote equivalent');
  }
}

// The symbol members, under whatever symbols the running Node uses.
for (const sym of Object.getOwnPropertySymbols(fs.Dir.prototype)) {
  const d = String(sym.description);
  if (sym === Symbol.asyncIterator) Dir.prototype[sym] = Dir.prototype.entries;
  else if (/asyncDispose/.test(d)) Dir.prototype[sym] = async function () {
    if (!this[CLOSED]) this.closeSync();
  };
  else if (/dispose/.test(d)) Dir.prototype[sym] = function () {
    if (!this[CLOSED]) this.closeSync();
  };
  else if (/kDirReadImpl/.test(d)) Dir.prototype[sym] = function () {
    throw new Error('pi-bridge: Dir internals have no remote equivalent');
  };
}
Object.setPrototypeOf(Dir.prototype, fs.Dir.prototype);

const makeDir = (disp, dirents) => new Dir(disp, dirents);

module.exports = { Dir, makeDir };
