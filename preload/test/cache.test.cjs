'use strict';
// The metadata/small-file cache (preload/cache.cjs): its trie, generation and effect rules as
// units, then end to end through the real `pii --local` (agent with the fs.changes feed).
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { MessageChannel } = require('worker_threads');
const h = require('./support/harness.cjs');

// A fresh cache module with a fake helper: `feed(item)` posts as worker.cjs does, `live(epoch)`.
function freshCache(env = {}) {
  const saved = process.env.PI_BRIDGE_CACHE;
  if (env.PI_BRIDGE_CACHE !== undefined) process.env.PI_BRIDGE_CACHE = env.PI_BRIDGE_CACHE;
  else delete process.env.PI_BRIDGE_CACHE;
  delete require.cache[require.resolve('../cache.cjs')];
  const cache = require('../cache.cjs');
  if (saved === undefined) delete process.env.PI_BRIDGE_CACHE;
  else process.env.PI_BRIDGE_CACHE = saved;
  const ctl = new Int32Array(new SharedArrayBuffer(4 * cache.CTL.LENGTH));
  const ch = new MessageChannel();
  ch.port1.unref();
  ch.port2.unref();
  cache.attach(ctl, ch.port1);
  const feed = (item) => {
    ch.port2.postMessage(item);
    Atomics.add(ctl, cache.CTL.CHANGES, 1);
  };
  const live = (epoch) => Atomics.store(ctl, cache.CTL.EPOCH, epoch);
  return { cache, ctl, feed, live };
}

const T = [1, 0];
const stat = (mode, extra = {}) => ({ dev: 1, ino: 2, mode, nlink: 1, uid: 0, gid: 0, rdev: 0, size: 3, blksize: 4096, blocks: 1, atime: T, mtime: T, ctime: T, birthtime: T, cache: true, ...extra });
const FILE = 0o100644;
const DIR = 0o040755;
const LINK = 0o120777;
const enoent = (p, syscall = 'stat', cache = true) => ({ code: -32000, message: 'no such file', data: { code: 'ENOENT', syscall, path: p, ...(cache ? { cache } : {}) } });

// Send a call through the cache as sync.cjs does (or, with `feed`, as rpc.cjs does on a socket
// whose feed epoch `feed()` tells); returns the answer used.
function roundTrip(cache, method, params, answer, feed) {
  const hit = cache.lookup(method, params);
  if (hit) return { hit };
  const done = cache.issue(method, params, feed);
  const tok = cache.token();
  cache.store(method, params, tok, answer);
  done(answer);
  return { sent: answer };
}

test('unit: nothing is cached before the helper feed is live, flagged answers are after', () => {
  const { cache, live } = freshCache();
  roundTrip(cache, 'fs.stat', { path: '/p/a', lstat: false }, { result: stat(FILE) });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/a', lstat: false }), undefined);
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/a', lstat: false }, { result: stat(FILE) });
  const hit = cache.lookup('fs.stat', { path: '/p/a', lstat: false });
  assert.strictEqual(hit.result.mode, FILE);
  // fresh objects: mutating a hit does not change the next one
  hit.result.mode = 0;
  hit.result.mtime[0] = 99;
  const again = cache.lookup('fs.stat', { path: '/p/a', lstat: false });
  assert.strictEqual(again.result.mode, FILE);
  assert.strictEqual(again.result.mtime[0], 1);
  // lstat of a non-symlink is the same answer; access F_OK too, but not R_OK
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/a', lstat: true }).result.ino, 2);
  assert.deepStrictEqual(cache.lookup('fs.access', { path: '/p/a', mode: 0 }), { result: null });
  assert.strictEqual(cache.lookup('fs.access', { path: '/p/a', mode: 4 }), undefined);
  // unflagged answers are never cached
  roundTrip(cache, 'fs.stat', { path: '/p/b', lstat: false }, { result: stat(FILE, { cache: false }) });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/b', lstat: false }), undefined);
  roundTrip(cache, 'fs.stat', { path: '/p/c', lstat: false }, { error: enoent('/p/c', 'stat', false) });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/c', lstat: false }), undefined);
});

test('unit: access R_OK is answered when the owner bits grant it to the remote user, else asked', () => {
  const { cache, live } = freshCache();
  live(1);
  cache.setRoot('/p', 1000);
  const put = (p, st) => roundTrip(cache, 'fs.stat', { path: p, lstat: false }, st);
  put('/p/mine', { result: stat(FILE, { uid: 1000 }) }); // 0644, mine: readable
  put('/p/noread', { result: stat(0o100244, { uid: 1000 }) }); // mine, no owner read bit
  put('/p/theirs', { result: stat(FILE, { uid: 1001 }) }); // other's, group/other bits: ask
  put('/p/gone', { error: enoent('/p/gone') });
  const rok = (p) => cache.lookup('fs.access', { path: p, mode: 4 });
  assert.deepStrictEqual(rok('/p/mine'), { result: null });
  assert.strictEqual(rok('/p/noread'), undefined);
  assert.strictEqual(rok('/p/theirs'), undefined);
  assert.strictEqual(rok('/p/gone').error.data.code, 'ENOENT');
  assert.strictEqual(rok('/p/gone').error.data.syscall, 'access');
  // W_OK and X_OK are always the agent's (a read-only mount, an immutable file: not in a stat)
  assert.strictEqual(cache.lookup('fs.access', { path: '/p/mine', mode: 6 }), undefined);
  assert.strictEqual(cache.lookup('fs.access', { path: '/p/mine', mode: 1 }), undefined);
  // root reads anything
  cache.setRoot('/p', 0);
  assert.deepStrictEqual(rok('/p/theirs'), { result: null });
  assert.deepStrictEqual(rok('/p/noread'), { result: null });
});

test('unit: negative entries answer stat, lstat and access with their own syscall', () => {
  const { cache, live } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/x', lstat: false }, { error: enoent('/p/x') });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/x', lstat: false }).error.data.syscall, 'stat');
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/x', lstat: true }).error.data.syscall, 'lstat');
  const a = cache.lookup('fs.access', { path: '/p/x', mode: 0 });
  assert.strictEqual(a.error.data.syscall, 'access');
  assert.strictEqual(a.error.data.code, 'ENOENT');
  assert.strictEqual(a.error.data.path, '/p/x');
  // an EACCES is never cached, even flagged
  roundTrip(cache, 'fs.stat', { path: '/p/y', lstat: false }, { error: { code: -32000, message: 'x', data: { code: 'EACCES', syscall: 'stat', path: '/p/y', cache: true } } });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/y', lstat: false }), undefined);
});

test('unit: under a path cached as missing, every lookup is ENOENT with its own path and syscall, until the path appears', () => {
  const { cache, live, feed } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/.pi', lstat: true }, { error: enoent('/p/.pi', 'lstat') });
  const s = cache.lookup('fs.stat', { path: '/p/.pi/settings.json', lstat: false });
  assert.deepStrictEqual([s.error.data.code, s.error.data.syscall, s.error.data.path], ['ENOENT', 'stat', '/p/.pi/settings.json']);
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/.pi/a/b', lstat: true }).error.data.syscall, 'lstat');
  assert.strictEqual(cache.lookup('fs.access', { path: '/p/.pi/x', mode: 0 }).error.data.syscall, 'access');
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/.pi/x', offset: 0 }).error.data.syscall, 'open');
  // a sibling of the missing path is not answered
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/other', lstat: false }), undefined);
  // the directory appears (a change names it): nothing under it is answered any more
  feed({ type: 'paths', paths: ['/p/.pi'] });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/.pi/settings.json', lstat: false }), undefined);
});

test('unit: realpath of a path known not to be or go through a symlink is the path itself', () => {
  const { cache, live } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/f', lstat: false }, { result: stat(FILE) });
  assert.deepStrictEqual(cache.lookup('fs.realpath', { path: '/p/f' }), { result: '/p/f' });
  roundTrip(cache, 'fs.stat', { path: '/p/l', lstat: true }, { result: stat(LINK) });
  assert.strictEqual(cache.lookup('fs.realpath', { path: '/p/l' }), undefined);
  roundTrip(cache, 'fs.stat', { path: '/p/gone', lstat: true }, { error: enoent('/p/gone', 'lstat') });
  const e = cache.lookup('fs.realpath', { path: '/p/gone' });
  assert.deepStrictEqual([e.error.data.code, e.error.data.syscall, e.error.data.path], ['ENOENT', 'realpath', '/p/gone']);
  assert.strictEqual(cache.lookup('fs.realpath', { path: '/p/gone/x' }).error.data.syscall, 'realpath');
  assert.strictEqual(cache.lookup('fs.realpath', { path: '/p/unknown' }), undefined);
});

test('unit: a symlink lstat does not answer stat', () => {
  const { cache, live } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/l', lstat: true }, { result: stat(LINK) });
  assert.ok(cache.lookup('fs.stat', { path: '/p/l', lstat: true }));
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/l', lstat: false }), undefined);
  assert.strictEqual(cache.lookup('fs.access', { path: '/p/l', mode: 0 }), undefined);
});

test('unit: a change drops the path, its subtree and its parent, not its siblings', () => {
  const { cache, live, feed } = freshCache();
  live(1);
  for (const p of ['/p', '/p/d', '/p/d/a', '/p/d/a/b', '/p/e', '/p/d2']) roundTrip(cache, 'fs.stat', { path: p, lstat: false }, { result: stat(DIR) });
  assert.strictEqual(cache.state.entries, 6);
  feed({ type: 'paths', paths: ['/p/d'] });
  const has = (p) => !!cache.lookup('fs.stat', { path: p, lstat: false });
  assert.deepStrictEqual(['/p', '/p/d', '/p/d/a', '/p/d/a/b', '/p/e', '/p/d2'].map(has), [false, false, false, false, true, true]);
  assert.strictEqual(cache.state.entries, 2);
  feed({ type: 'all' });
  assert.strictEqual(has('/p/e'), false);
  assert.strictEqual(cache.state.entries, 0);
});

test('unit: an answer whose request saw a change in flight is not stored', () => {
  const { cache, live, feed } = freshCache();
  live(1);
  const params = { path: '/p/f', lstat: false };
  const tok = cache.token();
  feed({ type: 'paths', paths: ['/q/unrelated'] }); // arrives while the request is out
  cache.store('fs.stat', params, tok, { result: stat(FILE) });
  assert.strictEqual(cache.lookup('fs.stat', params), undefined);
  const tok2 = cache.token();
  cache.store('fs.stat', params, tok2, { result: stat(FILE) });
  assert.ok(cache.lookup('fs.stat', params));
});

test('unit: a feed error or a new epoch drops everything; after an error nothing is stored until live again', () => {
  const { cache, live, feed } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/f', lstat: false }, { result: stat(FILE) });
  live(0);
  feed({ type: 'error', error: { code: 'EIO', syscall: 'read' } });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/f', lstat: false }), undefined);
  roundTrip(cache, 'fs.stat', { path: '/p/f', lstat: false }, { result: stat(FILE) });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/f', lstat: false }), undefined);
  live(2);
  roundTrip(cache, 'fs.stat', { path: '/p/f', lstat: false }, { result: stat(FILE) });
  assert.ok(cache.lookup('fs.stat', { path: '/p/f', lstat: false }));
  live(3);
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/f', lstat: false }), undefined);
});

test('unit: whole small files are cached and serve any range; partial or big reads are not', () => {
  const { cache, live } = freshCache();
  live(1);
  const data = Buffer.from('hello world');
  roundTrip(cache, 'fs.read', { path: '/p/r', offset: 0, length: 1 << 20 }, { result: { data: data.toString('base64'), size: data.length, cache: true } });
  const whole = cache.lookup('fs.read', { path: '/p/r', offset: 0, length: 1 << 20 });
  assert.strictEqual(Buffer.from(whole.result.data, 'base64').toString(), 'hello world');
  const part = cache.lookup('fs.read', { path: '/p/r', offset: 6, length: 3 });
  assert.strictEqual(Buffer.from(part.result.data, 'base64').toString(), 'wor');
  assert.strictEqual(part.result.size, data.length);
  roundTrip(cache, 'fs.read', { path: '/p/s', offset: 0, length: 4 }, { result: { data: data.subarray(0, 4).toString('base64'), size: data.length, cache: true } });
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/s', offset: 0, length: 4 }), undefined);
  const big = Buffer.alloc(cache.MAX_READ + 1);
  roundTrip(cache, 'fs.read', { path: '/p/big', offset: 0, length: 1 << 20 }, { result: { data: big.toString('base64'), size: big.length, cache: true } });
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/big', offset: 0 }), undefined);
});

test('unit: without a live feed on its connection, a mutation invalidates precisely only a known plain path, else everything', () => {
  const { cache, live } = freshCache();
  live(1);
  const noFeed = () => 0;
  const has = (p) => !!cache.lookup('fs.stat', { path: p, lstat: false });
  roundTrip(cache, 'fs.stat', { path: '/p/a', lstat: false }, { result: stat(FILE) });
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  roundTrip(cache, 'fs.write', { path: '/p/a', data: '', flag: 'w' }, { result: null }, noFeed);
  assert.deepStrictEqual([has('/p/a'), has('/p/z')], [false, true]);
  roundTrip(cache, 'fs.write', { path: '/p/unknown/x', data: '', flag: 'w' }, { result: null }, noFeed);
  assert.strictEqual(has('/p/z'), false);
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  roundTrip(cache, 'fs.stat', { path: '/p/l', lstat: true }, { result: stat(LINK) });
  roundTrip(cache, 'fs.write', { path: '/p/l', data: '', flag: 'w' }, { result: null }, noFeed);
  assert.strictEqual(has('/p/z'), false);
  // A feed that ends (or changes) while the call is out gives no barrier: everything goes.
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  let epoch = 5;
  const done = cache.issue('fs.write', { path: '/p/unknown/y', data: '', flag: 'w' }, () => epoch);
  assert.strictEqual(has('/p/z'), true, 'at issue, a live feed: only the literal path');
  epoch = 0;
  done({ result: null });
  assert.strictEqual(has('/p/z'), false);
  // A lost answer is no barrier either.
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  cache.issue('fs.unlink', { path: '/p/unknown/y' })(null);
  assert.strictEqual(has('/p/z'), false);
});

test('unit: with a live feed on its connection (the agent barrier), a mutation drops only its literal paths, even unknown or symlinked ones', () => {
  const { cache, live } = freshCache();
  live(1);
  for (const p of ['/p/a', '/p/b', '/p/c']) roundTrip(cache, 'fs.stat', { path: p, lstat: false }, { result: stat(FILE) });
  const has = (p) => !!cache.lookup('fs.stat', { path: p, lstat: false });
  // known path: only it goes (issued and answered)
  roundTrip(cache, 'fs.write', { path: '/p/a', data: '', flag: 'w' }, { result: null });
  assert.deepStrictEqual([has('/p/a'), has('/p/b'), has('/p/c')], [false, true, true]);
  // rename of known paths: both go
  roundTrip(cache, 'fs.rename', { from: '/p/b', to: '/p/c' }, { result: null });
  assert.deepStrictEqual([has('/p/b'), has('/p/c')], [false, false]);
  const clears = cache.counters.clears;
  // an unknown path (may be reached through a symlink): the feed named where it landed
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  roundTrip(cache, 'fs.write', { path: '/p/unknown/x', data: '', flag: 'w' }, { result: null });
  assert.strictEqual(has('/p/z'), true);
  // a write through a path whose lstat says symlink: its own entries go, the rest stays
  roundTrip(cache, 'fs.stat', { path: '/p/l', lstat: true }, { result: stat(LINK) });
  roundTrip(cache, 'fs.write', { path: '/p/l', data: '', flag: 'w' }, { result: null });
  assert.strictEqual(has('/p/z'), true);
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/l', lstat: true }), undefined);
  assert.strictEqual(cache.counters.clears, clears);
  // unknown methods drop everything; pure ones nothing
  roundTrip(cache, 'fs.stat', { path: '/p/z', lstat: false }, { result: stat(FILE) });
  roundTrip(cache, 'proc.run', {}, { result: { code: 0 } });
  assert.strictEqual(has('/p/z'), true);
  roundTrip(cache, 'fs.batch', { calls: [] }, { result: [] });
  assert.strictEqual(has('/p/z'), false);
});

test('unit: a prefetch item after its feed epoch marker is stored as if asked; only flagged entries', () => {
  const { cache, feed, live } = freshCache();
  const fileSt = stat(FILE, { size: 2 });
  const prefetch = {
    type: 'prefetch',
    entries: [
      { path: '/p/AGENTS.md', lstat: fileSt, data: 'aGk=' },
      { path: '/p/CLAUDE.md', error: { code: 'ENOENT', syscall: 'lstat', path: '/p/CLAUDE.md', cache: true } },
      { path: '/p/link.md', lstat: stat(LINK) },
      { path: '/p/ln/x', lstat: stat(FILE, { cache: false }), data: 'aGk=' },
      { path: '/p/nodir/x', error: { code: 'ENOENT', syscall: 'lstat', path: '/p/nodir/x' } },
      { path: '/p/short', lstat: stat(FILE, { size: 5 }), data: 'aGk=' },
      { path: '/p/.pi', lstat: stat(DIR) },
    ],
  };
  // as worker.cjs posts them: the epoch is stored, then the marker, then the feed's items
  live(1);
  feed({ type: 'epoch', epoch: 1 });
  feed(prefetch);
  assert.deepStrictEqual(cache.lookup('fs.read', { path: '/p/AGENTS.md', offset: 0 }), { result: { data: 'aGk=', size: 2 } });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/AGENTS.md', lstat: false }).result.size, 2);
  assert.deepStrictEqual(cache.lookup('fs.access', { path: '/p/AGENTS.md', mode: 0 }), { result: null });
  const e = cache.lookup('fs.access', { path: '/p/CLAUDE.md', mode: 0 });
  assert.strictEqual(e.error.data.code, 'ENOENT');
  assert.strictEqual(e.error.data.syscall, 'access');
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/CLAUDE.md', lstat: false }).error.data.syscall, 'stat');
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/link.md', lstat: true }).result.mode, LINK);
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/link.md', lstat: false }), undefined);
  for (const p of ['/p/ln/x', '/p/nodir/x']) assert.strictEqual(cache.lookup('fs.stat', { path: p, lstat: true }), undefined, p);
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/ln/x', offset: 0 }), undefined);
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/short', offset: 0 }), undefined, 'bytes that are not the whole file');
  assert.ok(cache.lookup('fs.stat', { path: '/p/.pi', lstat: false }));
  assert.strictEqual(cache.counters.prefetched, 6);
  // later changes apply on top of it
  feed({ type: 'paths', paths: ['/p/AGENTS.md'] });
  assert.strictEqual(cache.lookup('fs.read', { path: '/p/AGENTS.md', offset: 0 }), undefined);
  // a new feed epoch (its marker) drops what the old one prefetched
  live(2);
  feed({ type: 'epoch', epoch: 2 });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/.pi', lstat: false }), undefined);
});

test('unit: a prefetch survives the epoch being seen before its marker is drained', () => {
  const { cache, feed, live } = freshCache();
  live(1);
  cache.poll(); // the main thread notices EPOCH 1 first (worker.cjs stores it before posting)
  feed({ type: 'epoch', epoch: 1 });
  feed({ type: 'prefetch', entries: [{ path: '/p/a', lstat: stat(FILE) }] });
  assert.ok(cache.lookup('fs.stat', { path: '/p/a', lstat: true }));
});

test('unit: a read keeps its own bytes but drops the path stat (atime); mkdir -p clears missing ancestors', () => {
  const { cache, live } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/r', lstat: false }, { result: stat(FILE, { size: 2 }) });
  roundTrip(cache, 'fs.read', { path: '/p/r', offset: 0, length: 1 << 20 }, { result: { data: 'aGk=', size: 2, cache: true } });
  assert.ok(cache.lookup('fs.read', { path: '/p/r', offset: 0 }));
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/r', lstat: false }), undefined);
  roundTrip(cache, 'fs.stat', { path: '/p/n', lstat: false }, { error: enoent('/p/n') });
  roundTrip(cache, 'fs.mkdir', { path: '/p/n/m/k', recursive: true }, { result: { first: '/p/n' } });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/n', lstat: false }), undefined);
});

test('unit: a flagged non-recursive listing is cached and dropped by any change inside the directory, of it, or above; overflow, a feed error and a new epoch drop it', () => {
  const { cache, live, feed, ctl } = freshCache();
  live(1);
  const entries = [{ name: 'a', kind: 'file' }, { name: 'sub', kind: 'dir' }];
  const list = (p, answer = { result: { entries, cache: true } }, params = {}) => roundTrip(cache, 'fs.readdir', { path: p, ...params }, answer);
  const hit = (p) => cache.lookup('fs.readdir', { path: p });
  // Unflagged, recursive and trailing-slash listings are never cached.
  list('/p/u', { result: { entries } });
  assert.strictEqual(hit('/p/u'), undefined);
  list('/p/r', { result: { entries, cache: true } }, { recursive: true });
  assert.strictEqual(cache.lookup('fs.readdir', { path: '/p/r', recursive: true }), undefined);
  assert.strictEqual(hit('/p/r'), undefined);
  list('/p/s/', { result: { entries, cache: true } });
  assert.strictEqual(hit('/p/s/'), undefined);
  // A flagged one is; each hit is a fresh array of entries nobody can change.
  list('/p/d');
  const h1 = hit('/p/d');
  assert.deepStrictEqual(h1.result.entries, entries);
  h1.result.entries.pop();
  assert.throws(() => {
    'use strict';
    h1.result.entries[0].name = 'x';
  });
  assert.deepStrictEqual(hit('/p/d').result.entries, entries);
  // A stat of an entry or a listing of a sibling leave it; a change named inside drops it.
  roundTrip(cache, 'fs.stat', { path: '/p/d/a' }, { result: stat(FILE) });
  list('/p/e');
  feed({ type: 'paths', paths: ['/p/e/x'] });
  assert.strictEqual(hit('/p/e'), undefined);
  assert.ok(hit('/p/d'));
  feed({ type: 'paths', paths: ['/p/d/new'] });
  assert.strictEqual(hit('/p/d'), undefined);
  assert.ok(cache.lookup('fs.stat', { path: '/p/d/a' }), 'a sibling entry stays');
  // The directory itself, or an ancestor, changed (replaced, removed, renamed).
  list('/p/d');
  list('/p/d/sub');
  feed({ type: 'paths', paths: ['/p/d'] });
  assert.strictEqual(hit('/p/d'), undefined);
  assert.strictEqual(hit('/p/d/sub'), undefined);
  list('/p/d/sub');
  feed({ type: 'paths', paths: ['/p'] });
  assert.strictEqual(hit('/p/d/sub'), undefined);
  // The process's own mutation inside the directory drops it when issued.
  list('/p/d');
  const done = cache.issue('fs.write', { path: '/p/d/w' });
  assert.strictEqual(hit('/p/d'), undefined);
  done({ result: null });
  // A listing answered while a change came in flight is not stored.
  const tok = cache.token();
  feed({ type: 'paths', paths: ['/p/elsewhere'] });
  cache.store('fs.readdir', { path: '/p/d' }, tok, { result: { entries, cache: true } });
  assert.strictEqual(hit('/p/d'), undefined);
  // Overflow, a feed error, a new epoch, a lost feed: everything goes.
  for (const drop of [() => feed({ type: 'all' }), () => feed({ type: 'error', message: 'gone' }), () => live(2), () => live(0)]) {
    if (Atomics.load(ctl, cache.CTL.EPOCH) === 0) live(3);
    list('/p/d');
    assert.ok(hit('/p/d'));
    drop();
    assert.strictEqual(hit('/p/d'), undefined);
  }
  // With no live feed nothing is stored.
  list('/p/d');
  assert.strictEqual(hit('/p/d'), undefined);
});

test('unit: a listing of a path cached as missing (or under one) fails as scandir; a big listing weighs by its size', () => {
  const { cache, live } = freshCache();
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/gone' }, { error: enoent('/p/gone') });
  const e = cache.lookup('fs.readdir', { path: '/p/gone' });
  assert.strictEqual(e.error.data.code, 'ENOENT');
  assert.strictEqual(e.error.data.syscall, 'scandir');
  const under = cache.lookup('fs.readdir', { path: '/p/gone/x' });
  assert.strictEqual(under.error.data.syscall, 'scandir');
  assert.strictEqual(under.error.data.path, '/p/gone/x');
  const before = cache.state.entries;
  const many = Array.from({ length: 640 }, (_, i) => ({ name: `f${i}`, kind: 'file' }));
  roundTrip(cache, 'fs.readdir', { path: '/p/big' }, { result: { entries: many, cache: true } });
  assert.strictEqual(cache.state.entries - before, 11);
  roundTrip(cache, 'fs.readdir', { path: '/p/big2' }, { result: { entries: many.slice(0, 3), cache: true } });
  assert.strictEqual(cache.state.entries - before, 12);
  cache.invalidate('/p/big/f1');
  assert.strictEqual(cache.state.entries - before, 1);
});

test('unit: the size cap clears everything past the limit', () => {
  const { cache, live } = freshCache();
  live(1);
  for (let i = 0; i <= cache.MAX_ENTRIES; i++) roundTrip(cache, 'fs.stat', { path: `/p/f${i}`, lstat: false }, { result: stat(FILE) });
  assert.ok(cache.state.entries <= cache.MAX_ENTRIES);
  assert.ok(cache.lookup('fs.stat', { path: `/p/f${cache.MAX_ENTRIES}`, lstat: false }));
});

test('unit: PI_BRIDGE_CACHE=0 caches nothing', () => {
  const { cache, live } = freshCache({ PI_BRIDGE_CACHE: '0' });
  live(1);
  roundTrip(cache, 'fs.stat', { path: '/p/a', lstat: false }, { result: stat(FILE) });
  assert.strictEqual(cache.lookup('fs.stat', { path: '/p/a', lstat: false }), undefined);
  assert.strictEqual(cache.counters.hits, 0);
});

// ---- end to end: the real pii --local and agent ---------------------------------------------

// Runs `body` (the body of an async function; `fs`, `cp`, `c()` (the counters), `check(name, ok,
// detail)` in scope) under pii --local in a fresh project made by `populate(dir)`. Returns
// {checks, counters, dir}.
function runBridged(body, { populate = () => {}, env = {} } = {}) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-cache-'));
  const dir = path.join(root, 'project');
  fs.mkdirSync(dir);
  populate(dir);
  const script = path.join(root, 'script.cjs');
  fs.writeFileSync(
    script,
    `const fs = require('fs'); const cp = require('child_process'); const path = require('path');
     const c = () => ({ ...globalThis[Symbol.for('pi-bridge.cache')] });
     const checks = [];
     const check = (name, ok, detail) => checks.push({ name, ok: !!ok, detail });
     const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
     // Repeat fn until one run is all hits (the first calls may go out before the helper's feed
     // is live, and a read drops its path's stat entry once): true when it got there.
     const settle = (fn) => { for (let i = 0; i < 50; i++) { const m = c().misses; fn(); if (c().misses === m) return true; sleep(10); } return false; };
     (async () => { ${body} })().then(
       () => console.log(JSON.stringify({ checks, counters: c() })),
       (e) => { console.error(e); process.exit(3); });`,
  );
  try {
    const r = h.runPii(fs.realpathSync(dir), script, [], env);
    assert.strictEqual(r.status, 0, `pii exited ${r.status}: ${r.stderr}`);
    const out = JSON.parse(r.stdout.trim().split('\n').pop());
    for (const ck of out.checks) assert.ok(ck.ok, `${ck.name}: ${JSON.stringify(ck.detail)}`);
    return out;
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
}

const files = (map) => (dir) => {
  for (const [name, text] of Object.entries(map)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true });
    if (text !== null) fs.writeFileSync(path.join(dir, name), text);
  }
};

test('e2e: repeated statSync/existsSync/lstat/access/readFileSync of unchanged paths are hits', () => {
  const out = runBridged(
    `const round = () => {
       check('stat', fs.statSync('a.txt').size === 5);
       check('lstat', fs.lstatSync('a.txt').isFile());
       check('exists', fs.existsSync('a.txt'));
       check('missing', !fs.existsSync('nope'));
       check('access', fs.accessSync('a.txt') === undefined);
       let code = null;
       try { fs.accessSync('nope'); } catch (e) { code = e.code + ' ' + e.syscall + ' ' + e.message; }
       check('access missing', code === "ENOENT access ENOENT: no such file or directory, access 'nope'", code);
       check('read', fs.readFileSync('a.txt', 'utf8') === 'hello');
     };
     check('settled', settle(round));
     const before = c();
     for (let i = 0; i < 10; i++) round();
     const after = c();
     check('all hits', after.hits - before.hits === 70 && after.misses === before.misses, { before, after });`,
    { populate: files({ 'a.txt': 'hello' }) },
  );
  assert.ok(out.counters.hits >= 70);
});

test('e2e: the process own writes, renames and removals are visible at once', () => {
  runBridged(
    `const warm = () => { fs.existsSync('f'); fs.existsSync('g'); try { fs.statSync('f'); fs.readFileSync('f', 'utf8'); } catch {} };
     warm(); warm();
     fs.writeFileSync('f', 'longer text');
     check('write: stat', fs.statSync('f').size === 11);
     check('write: read', fs.readFileSync('f', 'utf8') === 'longer text');
     warm();
     await fs.promises.writeFile('f', 'async');
     check('async write: read', fs.readFileSync('f', 'utf8') === 'async');
     fs.appendFileSync('f', '+');
     check('append', fs.readFileSync('f', 'utf8') === 'async+');
     warm();
     fs.renameSync('f', 'g');
     check('rename: old gone', !fs.existsSync('f'));
     check('rename: new there', fs.readFileSync('g', 'utf8') === 'async+');
     fs.rmSync('g');
     check('rm', !fs.existsSync('g'));
     fs.mkdirSync('d/e/f', { recursive: true });
     check('mkdir -p', fs.statSync('d/e/f').isDirectory());
     const fd = fs.openSync('d/e/f/x', 'w'); fs.writeSync(fd, 'fd!'); fs.closeSync(fd);
     check('fd write', fs.readFileSync('d/e/f/x', 'utf8') === 'fd!');
     fs.chmodSync('d/e/f/x', 0o600);
     check('chmod', (fs.statSync('d/e/f/x').mode & 0o777) === 0o600);
     fs.truncateSync('d/e/f/x', 1);
     check('truncate', fs.readFileSync('d/e/f/x', 'utf8') === 'f');
     const ws = fs.createWriteStream('d/e/f/x');
     await new Promise((res) => ws.end('stream', res));
     check('write stream', fs.readFileSync('d/e/f/x', 'utf8') === 'stream');
     fs.copyFileSync('d/e/f/x', 'copy');
     check('copyFile', fs.readFileSync('copy', 'utf8') === 'stream');
     fs.unlinkSync('copy');
     check('unlink', !fs.existsSync('copy'));`,
    { populate: files({ f: 'short' }) },
  );
});

test('e2e: spawnSync/execSync and an async spawn are barriers: their changes are visible after exit', () => {
  runBridged(
    `const warm = () => { for (const n of ['a', 'b', 'c', 'd/x']) { if (fs.existsSync(n)) { fs.statSync(n); fs.readFileSync(n, 'utf8'); } } };
     check('warm hits', settle(warm));
     cp.execSync('echo changed > a; rm b; echo new > c');
     check('execSync: modified', fs.readFileSync('a', 'utf8') === 'changed\\n', fs.readFileSync('a', 'utf8'));
     check('execSync: deleted', !fs.existsSync('b'));
     check('execSync: created', fs.readFileSync('c', 'utf8') === 'new\\n');
     warm(); warm();
     const r = cp.spawnSync('sh', ['-c', 'echo again > a; mv d e; echo b > b']);
     check('spawnSync status', r.status === 0, String(r.stderr));
     check('spawnSync: modified', fs.readFileSync('a', 'utf8') === 'again\\n');
     check('spawnSync: dir moved away', !fs.existsSync('d/x') && !fs.existsSync('d'));
     check('spawnSync: dir moved here', fs.readFileSync('e/x', 'utf8') === 'x');
     check('spawnSync: created', fs.statSync('b').size === 2);
     warm(); fs.statSync('e/x'); fs.readFileSync('e/x', 'utf8');
     const seen = await new Promise((resolve) => {
       const child = cp.spawn('sh', ['-c', 'echo third > a; rm b; mkdir -p d; echo y > d/x; rm -r e']);
       const look = () => ({ a: fs.readFileSync('a', 'utf8'), b: fs.existsSync('b'), dx: fs.existsSync('d/x') && fs.readFileSync('d/x', 'utf8'), e: fs.existsSync('e/x') });
       let onExit;
       child.on('exit', () => (onExit = look()));
       child.on('close', () => resolve({ onExit, onClose: look() }));
     });
     for (const k of ['onExit', 'onClose']) check('spawn ' + k, JSON.stringify(seen[k]) === JSON.stringify({ a: 'third\\n', b: false, dx: 'y\\n', e: false }), seen[k]);
     warm();
     const out = await new Promise((res) => cp.exec('echo fourth > a', (err) => res(err)));
     const a4 = fs.readFileSync('a', 'utf8');
     check('exec callback', out === null && a4 === 'fourth\\n', { out: String(out), a4 });`,
    { populate: files({ a: 'a', b: 'b', 'd/x': 'x' }) },
  );
});

test('e2e: a directory renamed by the process drops its cached subtree', () => {
  runBridged(
    `for (let i = 0; i < 2; i++) { fs.statSync('d/s/x'); fs.readFileSync('d/s/x', 'utf8'); fs.existsSync('e/s/x'); }
     fs.renameSync('d', 'e');
     check('old subtree gone', !fs.existsSync('d/s/x') && !fs.existsSync('d/s'));
     check('new subtree there', fs.readFileSync('e/s/x', 'utf8') === 'x');`,
    { populate: files({ 'd/s/x': 'x' }) },
  );
});

test('e2e: a symlinked path is never served from the cache', () => {
  runBridged(
    `fs.symlinkSync('real', 'link');
     check('the real path is cached', settle(() => { fs.statSync('real/f'); fs.readFileSync('real/f', 'utf8'); }));
     fs.statSync('link'); fs.readFileSync('link/f', 'utf8');
     const before = c();
     for (let i = 0; i < 5; i++) {
       check('stat through link', fs.statSync('link').isDirectory());
       check('read through link', fs.readFileSync('link/f', 'utf8') === 'f');
       check('exists through link', fs.existsSync('link/f'));
     }
     const after = c();
     check('no hits', after.hits === before.hits && after.misses - before.misses === 15, { before, after });
     fs.writeFileSync('real/f', 'g');
     check('write then read through link', fs.readFileSync('link/f', 'utf8') === 'g');
     fs.writeFileSync('link/f', 'h');
     check('write through link then read real', fs.readFileSync('real/f', 'utf8') === 'h');`,
    { populate: files({ 'real/f': 'f' }) },
  );
});

test('e2e: what a package looked up at start is prefetched in its next run (pii learns it per version)', () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-learn-'));
  try {
    const dir = path.join(root, 'project');
    fs.mkdirSync(dir);
    files({ 'AGENTS.md': 'be nice', '.pi/settings.json': '{}', '.git/HEAD': 'ref: refs/heads/main\n' })(dir);
    // pii keys what it learns by the package.json above the script (a package of its own: pii
    // keeps the package's directory local, so it must not hold the project).
    fs.mkdirSync(path.join(root, 'pkg'));
    fs.writeFileSync(path.join(root, 'pkg', 'package.json'), JSON.stringify({ name: 'learn-probe', version: '1.0.0' }));
    const script = path.join(root, 'pkg', 'probe.cjs');
    fs.writeFileSync(
      script,
      `const fs = require('fs'); const path = require('path');
       const c = () => ({ ...globalThis[Symbol.for('pi-bridge.cache')] });
       const c0 = c();
       const ok = [
         fs.existsSync('.pi/settings.json'), fs.readFileSync('.pi/settings.json', 'utf8') === '{}',
         !fs.existsSync('.pi/commands'), !fs.existsSync('.pi/extensions'),
         fs.existsSync('.git') && fs.statSync('.git').isDirectory(),
         fs.readFileSync('.git/HEAD', 'utf8') === 'ref: refs/heads/main\\n',
         fs.existsSync('AGENTS.md'), fs.readFileSync(path.resolve('AGENTS.md'), 'utf8') === 'be nice',
         !fs.existsSync('CLAUDE.md'), !fs.existsSync('.pi/SYSTEM.md'), !fs.existsSync('.pi/APPEND_SYSTEM.md'),
       ];
       const c1 = c();
       const other = !fs.existsSync('other-' + process.argv[2] + '.txt');
       console.log(JSON.stringify({ ok, other, startup: { hits: c1.hits - c0.hits, misses: c1.misses - c0.misses }, prefetched: c1.prefetched, otherMissed: c().misses - c1.misses }));`,
    );
    const run = (n) => {
      const r = h.runPii(fs.realpathSync(dir), script, [String(n)], { XDG_CACHE_HOME: path.join(root, 'xdg') });
      assert.strictEqual(r.status, 0, `pii exited ${r.status}: ${r.stderr}`);
      const out = JSON.parse(r.stdout.trim().split('\n').pop());
      assert.deepStrictEqual(out.ok, new Array(11).fill(true), JSON.stringify(out));
      assert.ok(out.other && out.otherMissed === 1, JSON.stringify(out)); // not learned yet: a round trip
      return out;
    };
    // 12 lookups; .pi/extensions is answered by the trust layer (untrusted) without a call.
    const first = run(1);
    assert.ok(first.startup.misses >= 8, JSON.stringify(first));
    const second = run(2);
    assert.deepStrictEqual(second.startup, { hits: 11, misses: 0 }, JSON.stringify(second));
    assert.ok(second.prefetched >= 12, JSON.stringify(second));
    // Another version of the package starts from nothing.
    fs.writeFileSync(path.join(root, 'pkg', 'package.json'), JSON.stringify({ name: 'learn-probe', version: '2.0.0' }));
    const third = run(3);
    assert.deepStrictEqual(third.startup, first.startup, JSON.stringify(third));
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});

test('e2e: writes through a symlinked path refresh the real target; pi-like writes and edits never drop the whole cache', () => {
  runBridged(
    `// The async socket's feed is live once a spawn returns (proc.spawn waits for it).
     await new Promise((r) => cp.spawn('true').on('exit', r));
     const warm = () => { fs.statSync('real/f.txt'); fs.readFileSync('real/f.txt', 'utf8'); fs.statSync('other.txt'); fs.existsSync('src'); };
     check('settled', settle(warm));
     const c0 = c();
     fs.writeFileSync('via/f.txt', 'two!!');
     check('sync write: stat of the target', fs.statSync('real/f.txt').size === 5);
     check('sync write: read of the target', fs.readFileSync('real/f.txt', 'utf8') === 'two!!');
     settle(warm);
     await fs.promises.writeFile('via/f.txt', 'three!');
     check('async write: stat of the target', fs.statSync('real/f.txt').size === 6);
     check('async write: read of the target', fs.readFileSync('real/f.txt', 'utf8') === 'three!');
     settle(warm);
     fs.renameSync('via/f.txt', 'via/g.txt');
     check('rename through the link: target gone', !fs.existsSync('real/f.txt'));
     fs.renameSync('real/g.txt', 'real/f.txt');
     settle(warm);
     // pi's write tool: realpathSync.native, mkdir -p of the dirname, writeFile
     const wr = async (p, text) => {
       try { fs.realpathSync.native(p); } catch {}
       await fs.promises.mkdir(path.dirname(p), { recursive: true });
       await fs.promises.writeFile(p, text, 'utf-8');
     };
     await wr('src/new.ts', 'export {};');
     // pi's edit tool: realpathSync.native, access R|W, readFile, writeFile
     const p = fs.realpathSync.native('src/new.ts');
     await fs.promises.access(p, fs.constants.R_OK | fs.constants.W_OK);
     const text = await fs.promises.readFile(p, 'utf8');
     await fs.promises.writeFile(p, text.replace('{}', '{ x }'), 'utf-8');
     check('edited', fs.readFileSync('src/new.ts', 'utf8') === 'export { x };');
     const c1 = c();
     check('no clears', c1.clears === c0.clears, { c0, c1 });
     const m = c().misses;
     fs.statSync('other.txt');
     check('untouched entries still hit', c().misses === m, c());`,
    { populate: (dir) => { files({ 'real/f.txt': 'one', 'other.txt': 'x' })(dir); fs.symlinkSync('real', path.join(dir, 'via')); } },
  );
});

test('e2e: PI_BRIDGE_CACHE=0 gives no hits', () => {
  const out = runBridged(
    `for (let i = 0; i < 10; i++) { fs.statSync('a'); fs.existsSync('a'); fs.readFileSync('a'); }
     check('zero hits', c().hits === 0, c());`,
    { populate: files({ a: 'a' }), env: { PI_BRIDGE_CACHE: '0' } },
  );
  assert.strictEqual(out.counters.hits, 0);
});

test('e2e: a change made outside the bridge becomes visible', async () => {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-cache-ext-'));
  const dir = path.join(root, 'project');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'f'), 'old');
  fs.mkdirSync(path.join(root, 'bin')); // the script's directory stays local: not the project's parent
  const script = path.join(root, 'bin', 'script.cjs');
  fs.writeFileSync(
    script,
    `const fs = require('fs');
     const c = () => globalThis[Symbol.for('pi-bridge.cache')].hits;
     const sleep = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
     // The first calls may go out before the helper's feed is live (then nothing is stored).
     let cached = false;
     for (let i = 0; i < 5 && !cached; i++) {
       const h0 = c(); fs.readFileSync('f', 'utf8'); fs.statSync('f'); fs.existsSync('g');
       cached = c() - h0 === 3;
     }
     process.stdout.write('ready\\n');
     let r = {};
     const deadline = Date.now() + 10000;
     for (;;) {
       r = { f: fs.readFileSync('f', 'utf8'), size: fs.statSync('f').size, g: fs.existsSync('g') };
       if ((r.f === 'new text' && r.size === 8 && r.g) || Date.now() > deadline) break;
       sleep(20);
     }
     console.log(JSON.stringify({ cached, ...r }));`,
  );
  try {
    const child = require('child_process').spawn(h.piiBin(), ['--local', fs.realpathSync(dir), '--pi', script], { cwd: os.tmpdir(), stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stderr.on('data', (d) => (err += d));
    const done = new Promise((resolve) => child.on('close', resolve));
    child.stdout.on('data', (d) => {
      const first = !out.includes('ready');
      out += d;
      if (first && out.includes('ready')) {
        fs.writeFileSync(path.join(dir, 'f'), 'new text');
        fs.writeFileSync(path.join(dir, 'g'), '');
      }
    });
    const status = await done;
    assert.strictEqual(status, 0, err);
    const r = JSON.parse(out.trim().split('\n').pop());
    assert.deepStrictEqual(r, { cached: true, f: 'new text', size: 8, g: true });
  } finally {
    fs.rmSync(root, { recursive: true, force: true });
  }
});
