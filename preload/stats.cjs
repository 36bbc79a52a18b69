'use strict';
// fs.Stats / BigIntStats / fs.Dirent objects from the wire's Stat and DirEntry, built on Node's
// own prototypes so `instanceof fs.Stats`, isFile(), isSymbolicLink()… behave as usual.

const fs = require('fs');

const FIELDS = ['dev', 'mode', 'nlink', 'uid', 'gid', 'rdev', 'blksize', 'ino', 'size', 'blocks'];
const TIMES = ['atime', 'mtime', 'ctime', 'birthtime'];

let bigintProto; // BigIntStats.prototype is not exported: borrow it from a real local stat once

// Plain Stats, with the same own properties and order as `new fs.Stats(...)` on Node 20 (the
// constructor itself is deprecated on newer Node, so it is not called).
function plainStats(s) {
  const st = Object.create(fs.Stats.prototype);
  for (const f of FIELDS) st[f] = Number(s[f]);
  for (const t of TIMES) st[`${t}Ms`] = s[t][0] * 1e3 + s[t][1] / 1e6;
  for (const t of TIMES) st[t] = new Date(Math.round(st[`${t}Ms`]));
  return st;
}

function bigintStats(s) {
  if (!bigintProto) bigintProto = Object.getPrototypeOf(fs.statSync('/', { bigint: true }));
  const st = Object.create(bigintProto);
  for (const f of FIELDS) st[f] = BigInt(s[f]);
  for (const t of TIMES) st[`${t}Ms`] = BigInt(s[t][0]) * 1000n + BigInt(s[t][1]) / 1_000_000n;
  for (const t of TIMES) st[`${t}Ns`] = BigInt(s[t][0]) * 1_000_000_000n + BigInt(s[t][1]);
  for (const t of TIMES) st[t] = new Date(Number(st[`${t}Ms`]));
  return st;
}

function makeStats(s, bigint) {
  return bigint ? bigintStats(s) : plainStats(s);
}

const C = fs.constants;
const KINDS = {
  file: C.UV_DIRENT_FILE,
  dir: C.UV_DIRENT_DIR,
  symlink: C.UV_DIRENT_LINK,
  fifo: C.UV_DIRENT_FIFO,
  socket: C.UV_DIRENT_SOCKET,
  char: C.UV_DIRENT_CHAR,
  block: C.UV_DIRENT_BLOCK,
  unknown: C.UV_DIRENT_UNKNOWN,
};

// `new fs.Dirent(name, type, path)` sets name, parentPath and path (Node 20.12+).
function makeDirent(name, kind, parentPath) {
  const d = new fs.Dirent(name, KINDS[kind] ?? C.UV_DIRENT_UNKNOWN, parentPath);
  if (d.parentPath === undefined) d.parentPath = parentPath;
  return d;
}

module.exports = { makeStats, makeDirent };
