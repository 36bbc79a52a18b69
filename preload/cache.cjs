'use strict';
// The main thread's metadata and small-file cache, kept coherent by the agent's `fs.changes` feed
// (protocol/src/watch.rs, `Change`). It sits at the transport: sync.cjs and rpc.cjs ask it before
// sending a call (`lookup`), take a `token` when they send one, and hand it every answer
// (`store`) and every mutating call (`issue` → its `done` at completion), so every caller of the
// bridge (fs ops, streams, watchFile, chdir) sees the same cache and every mutation, whoever made
// it, invalidates it.
//
// What is cached: only answers the agent flagged `cache: true` — fs.stat {path, lstat} (results
// and ENOENT/ENOTDIR errors), whole-file fs.read results up to MAX_READ bytes, and non-recursive
// fs.readdir listings (flagged only when the directory itself is watched and was reached without
// a symlink). Served from them: fs.stat (a non-symlink's stat answers lstat too, and the other
// way round), fs.access with mode 0 (F_OK), and with R_OK when the remote user may read the
// path by its owner bits (`ownerMayRead`), fs.read at any offset of a cached whole file,
// fs.realpath of a path known not to be (or go through) a symlink, and fs.readdir (its listing,
// or the ENOENT/ENOTDIR of its cached stat). Under a path cached as missing, everything is
// missing. A listing lives on its directory's node as the directory's own entry: a change named
// inside the directory drops it as its parent's entry, a change of the directory or above drops
// it with the subtree.
//
// Coherence:
// - Feeds: the helper worker subscribes on its connection and forwards each item on a port of
//   its own, bumping ctl[CHANGES] before it posts any later reply; every lookup and store first
//   drains that port when the counter moved (`poll`). So an answer taken from the helper after a
//   proc.run (whose changes the agent sends before its answer) never meets a stale entry. rpc.cjs
//   subscribes on the main thread's socket too and applies items in line order, so an async
//   child's `exit` comes after its changes.
// - Nothing is cached unless the helper's feed is live (ctl[EPOCH] != 0) when the request was
//   sent, and only if the generation (bumped by every change applied, local or remote) did not
//   move while it was in flight.
// - `all`, `error`, a lost feed or a new feed epoch drop everything.
// - The process's own mutations invalidate their paths when issued and again when answered
//   (EFFECTS). The agent makes every mutating call a barrier: the `fs.changed` of what it did
//   precede its answer on the same link. So when the connection the call went on had a live feed
//   from before the call until its answer, the feed has already named whatever the call changed
//   (a symlinked path's target as itself) and the literal paths are all that is left to drop.
//   Without such a feed, a path not known to be free of symlinks (no cached entry of its own,
//   which the agent only flags when its parent was reached without symlinks and it is not one
//   itself) may have landed elsewhere, so everything is dropped.
// - Prefetch: the helper's feed subscription names the paths this pi looked up when it started
//   before (PII_SESSION `prefetch`, learned by pii); the agent sends their answers as the feed's
//   first item (`prefetch`),
//   stored here as if asked. The helper posts an `epoch` marker before a new feed's items, so a
//   new feed's clearing comes before its prefetch, not after.

const MAX_ENTRIES = 20_000;
const MAX_READ = 256 * 1024;
const MAX_CHUNK = 4 * 1024 * 1024; // wire.cjs MAX_CHUNK: fs.read's default length
const S_IFMT = 0o170000;
const S_IFLNK = 0o120000;
const S_IFREG = 0o100000;

// ctl indices shared with worker.cjs (0 and 1 are sync.cjs's doorbell and dead flag).
// PREFETCH: 1 while the helper's feed subscription with a prefetch is out and its first item has
// not come; 2 after (or when it failed).
const CTL = { CHANGES: 2, EPOCH: 3, DRAINED: 4, PREFETCH: 5, LENGTH: 6 };
// A lookup of a prefetched path waits at most this long for the prefetch (once; then never).
// The wait replaces a round trip and ends when the feed's first item arrives.
const PREFETCH_WAIT_MS = 1000;

const counters = { hits: 0, listHits: 0, misses: 0, stores: 0, invalidations: 0, clears: 0, prefetched: 0, prefetchWaits: 0 };

const state = {
  enabled: process.env.PI_BRIDGE_CACHE !== '0',
  ctl: null, // the helper's Int32Array
  port: null, // the helper's change port (drained with receiveMessageOnPort)
  seenChanges: 0,
  epoch: 0, // the helper feed's epoch as last seen (0: not live)
  gen: 1,
  entries: 0,
  root: newNode(),
  prefetchRel: null, // PII_SESSION `prefetch` (relative to the project root)
  prefetchRoot: null,
  prefetchSet: null, // the same, absolute, once the root is known: lookups that wait for it
  uid: undefined, // the remote user's uid (session.info facts), once known
};

const R_OK = 4;

// Whether the remote user `uid` may read what `st` describes by its owner bits alone (or is
// root): then the kernel's access(R_OK) and read-only open grant it (ACLs never narrow the
// owner's bits; a read-only mount does not stop reading). Anything else (group, other, a
// refusal) is the agent's to answer.
function ownerMayRead(st, uid) {
  return typeof uid === 'number' && (uid === 0 || (st.uid === uid && (st.mode & 0o400) !== 0));
}

let receive = null; // worker_threads.receiveMessageOnPort, loaded with the first attach

function newNode() {
  // stat / lstat: {ok: Stat} | {err: rpc error object}; read: {b64, size, buf?};
  // list: {entries (frozen DirEntry objects), weight}
  return { kids: null, stat: undefined, lstat: undefined, read: undefined, list: undefined };
}

// A listing counts towards MAX_ENTRIES by its size (one entry per 64 names, at least one).
const listWeight = (entries) => 1 + (entries.length >> 6);

function split(p) {
  return p.split('/').filter(Boolean);
}

function find(p) {
  let n = state.root;
  for (const part of split(p)) {
    if (!n.kids) return null;
    n = n.kids.get(part);
    if (!n) return null;
  }
  return n;
}

function findOrMake(p) {
  let n = state.root;
  for (const part of split(p)) {
    if (!n.kids) n.kids = new Map();
    let k = n.kids.get(part);
    if (!k) n.kids.set(part, (k = newNode()));
    n = k;
  }
  return n;
}

function ownCount(n) {
  return (n.stat ? 1 : 0) + (n.lstat ? 1 : 0) + (n.read ? 1 : 0) + (n.list ? n.list.weight : 0);
}

function subtreeCount(n) {
  let c = ownCount(n);
  if (n.kids) for (const k of n.kids.values()) c += subtreeCount(k);
  return c;
}

function dropOwn(n) {
  state.entries -= ownCount(n);
  n.stat = n.lstat = n.read = n.list = undefined;
}

const isNegative = (e) => !!(e && e.err);

// ---- applying changes ---------------------------------------------------------------------------

function clearAll() {
  state.root = newNode();
  state.entries = 0;
  state.gen++;
  counters.clears++;
}

// `p` changed: drop it and everything under it, its parent's own entries (stat, listing), and
// negative entries on the way down (a created path's missing ancestors now exist).
function invalidate(p) {
  state.gen++;
  counters.invalidations++;
  const parts = split(p);
  if (parts.length === 0) return clearAll();
  let n = state.root;
  for (let i = 0; i < parts.length - 1; i++) {
    if (isNegative(n.stat) || isNegative(n.lstat)) dropOwn(n);
    if (!n.kids) return;
    n = n.kids.get(parts[i]);
    if (!n) return;
  }
  dropOwn(n); // the parent
  if (!n.kids) return;
  const last = parts[parts.length - 1];
  const gone = n.kids.get(last);
  if (gone) {
    state.entries -= subtreeCount(gone);
    n.kids.delete(last);
  }
}

// Only a path's stat entries (its atime moved: the process read it).
function touch(p) {
  state.gen++;
  const n = find(p);
  if (n && (n.stat || n.lstat)) {
    state.entries -= (n.stat ? 1 : 0) + (n.lstat ? 1 : 0);
    n.stat = n.lstat = undefined;
  }
}

// One item of an fs.changes feed.
function apply(item) {
  if (!item || typeof item !== 'object') return;
  if (item.type === 'paths' && Array.isArray(item.paths)) {
    for (const p of item.paths) if (typeof p === 'string') invalidate(p);
  } else if (item.type === 'prefetch' && Array.isArray(item.entries)) {
    for (const e of item.entries) prefetched(e);
  } else clearAll(); // 'all', 'error', or anything this client does not know
}

// One entry of a `prefetch` item: an lstat answer (or its error) and maybe the whole file, each
// stored only when flagged, as store() would have. It is on the feed after the feed's answer, so
// every later change comes after it.
function prefetched(e) {
  if (!state.enabled || !e || typeof e.path !== 'string' || !e.path.startsWith('/')) return;
  const p = e.path;
  const st = e.lstat;
  if (st && typeof st === 'object') {
    if (st.cache !== true) return;
    put(p, 'lstat', { ok: st });
    counters.prefetched++;
    if (typeof e.data === 'string' && (st.mode & S_IFMT) === S_IFREG && st.size <= MAX_READ && Buffer.byteLength(e.data, 'base64') === st.size) {
      put(p, 'read', { b64: e.data, size: st.size });
      counters.prefetched++;
    }
  } else if (e.error && e.error.cache === true && (e.error.code === 'ENOENT' || e.error.code === 'ENOTDIR')) {
    put(p, 'lstat', { err: { code: -32000, message: `${e.error.code}: ${e.error.syscall}`, data: e.error } });
    counters.prefetched++;
  }
}

// Drain the helper's feed if its counter moved; notice a new (or lost) feed epoch.
function poll() {
  const ctl = state.ctl;
  if (!ctl) return;
  const n = Atomics.load(ctl, CTL.CHANGES);
  if (n !== state.seenChanges) {
    state.seenChanges = n;
    let m;
    while ((m = receive(state.port))) {
      const item = m.message;
      if (item && item.type === 'epoch') {
        // worker.cjs: a new feed was answered; its items (first its prefetch) follow.
        if (item.epoch !== state.epoch) {
          state.epoch = item.epoch;
          clearAll();
        }
      } else apply(item);
    }
    Atomics.store(ctl, CTL.DRAINED, n);
  }
  const ep = Atomics.load(ctl, CTL.EPOCH);
  if (ep !== state.epoch) {
    state.epoch = ep;
    clearAll();
  }
}

// sync.cjs hands over the helper's shared ctl and change port when it starts the helper.
function attach(ctl, port) {
  if (!receive) receive = require('worker_threads').receiveMessageOnPort;
  state.ctl = ctl;
  state.port = port;
  state.seenChanges = 0;
  state.epoch = 0;
  clearAll();
}

// ---- prefetch -----------------------------------------------------------------------------------

// sync.cjs: the helper's feed will carry a prefetch of these (project-relative) paths.
function expectPrefetch(list) {
  state.prefetchRel = Array.isArray(list) && list.length ? list : null;
  resolvePrefetch();
}

// index.cjs: the project root is known (the prefetch's relative paths are under it).
// The project root and the remote uid, from `session.info` (index.cjs).
function setRoot(root, uid) {
  if (typeof uid === 'number') state.uid = uid;
  if (typeof root === 'string') state.prefetchRoot = root;
  resolvePrefetch();
}

function resolvePrefetch() {
  if (!state.prefetchRel || !state.prefetchRoot) return;
  const path = require('path');
  state.prefetchSet = new Set(state.prefetchRel.map((r) => path.resolve(state.prefetchRoot, r)));
}

// A lookup of a path the prefetch will answer, made while it is on its way: wait for it rather
// than send the same question again (bounded; a feed that does not come turns waiting off).
function awaitPrefetch(p) {
  const ctl = state.ctl;
  if (!ctl || !state.prefetchSet || Atomics.load(ctl, CTL.PREFETCH) !== 1) return;
  if (!state.prefetchSet.has(p)) return;
  counters.prefetchWaits++;
  Atomics.wait(ctl, CTL.PREFETCH, 1, PREFETCH_WAIT_MS);
  if (Atomics.load(ctl, CTL.PREFETCH) === 1) state.prefetchSet = null;
}

// ---- lookups ------------------------------------------------------------------------------------

const copyTime = (t) => (Array.isArray(t) ? [t[0], t[1]] : t);
function copyStat(s) {
  return { ...s, atime: copyTime(s.atime), mtime: copyTime(s.mtime), ctime: copyTime(s.ctime), birthtime: copyTime(s.birthtime) };
}

function rpcError(e, syscall) {
  return { code: e.code, message: e.message, data: { ...e.data, ...(syscall ? { syscall } : {}) } };
}

// The stat entry for `p` (follow = stat, else lstat), derived from the other kind when that one
// shows the path is not a symlink (then both are the same answer). Returns {ok}|{err}|undefined,
// with err's syscall as asked.
function statEntry(n, follow) {
  const own = follow ? n.stat : n.lstat;
  if (own) return own;
  const other = follow ? n.lstat : n.stat;
  if (!other) return undefined;
  if (other.ok) return (other.ok.mode & S_IFMT) === S_IFLNK ? undefined : other;
  // A flagged ENOENT/ENOTDIR did not go through a symlink at the path: true of both kinds.
  return { err: rpcError(other.err, follow ? 'stat' : 'lstat') };
}

// Can this call be answered from the cache? Returns undefined (no), {result} or {error} (a JSON-RPC
// error object, fresh).
// A path with a trailing slash is only ever answered by the agent (the kernel requires a
// directory there; the trie has no place for that difference).
const slashed = (p) => typeof p === 'string' && p.length > 1 && p.endsWith('/');

function lookup(method, params) {
  if (!state.enabled || !params || slashed(params.path)) return undefined;
  let kind;
  if (method === 'fs.stat') kind = 'stat';
  else if (method === 'fs.access' && !params.mode) kind = 'access';
  else if (method === 'fs.access' && params.mode === R_OK && state.uid !== undefined) kind = 'readable';
  else if (method === 'fs.read') kind = 'read';
  else if (method === 'fs.realpath') kind = 'realpath';
  else if (method === 'fs.readdir' && !params.recursive) kind = 'list';
  else return undefined;
  if (state.prefetchSet) awaitPrefetch(params.path);
  poll();
  const n = state.epoch !== 0 && typeof params.path === 'string' ? find(params.path) : null;
  let out;
  if (n) {
    if (kind === 'stat') {
      const e = statEntry(n, !params.lstat);
      if (e) out = e.ok ? { result: copyStat(e.ok) } : { error: rpcError(e.err) };
    } else if (kind === 'realpath') {
      // Every flagged entry was reached without a symlink; a followed one (or a plain lstat, or
      // whole bytes) shows the path is not one either: then the path is its own real path.
      const e = statEntry(n, true);
      if (e && e.ok) out = { result: params.path };
      else if (e) out = { error: rpcError(e.err, 'realpath') };
      else if (n.read) out = { result: params.path };
    } else if (kind === 'access') {
      const e = statEntry(n, true);
      if (e) out = e.ok ? { result: null } : { error: rpcError(e.err, 'access') };
    } else if (kind === 'readable') {
      // Granted by the owner bits, or missing: what the kernel answers; else ask the agent.
      const e = statEntry(n, true);
      if (e && e.ok && ownerMayRead(e.ok, state.uid)) out = { result: null };
      else if (e && e.err) out = { error: rpcError(e.err, 'access') };
    } else if (kind === 'list') {
      // A cached failure of the path (ENOENT, or ENOTDIR on the way) is the listing's too.
      const e = statEntry(n, true);
      if (n.list) out = { result: { entries: n.list.entries.slice(), cache: true } };
      else if (e && e.err) out = { error: rpcError(e.err, 'scandir') };
    } else if (n.read) {
      const r = n.read;
      const offset = params.offset || 0;
      const length = params.length === undefined || params.length === null ? MAX_CHUNK : params.length;
      if (offset === 0 && length >= r.size) out = { result: { data: r.b64, size: r.size } };
      else {
        if (!r.buf) r.buf = Buffer.from(r.b64, 'base64');
        out = { result: { data: r.buf.subarray(offset, offset + length).toString('base64'), size: r.size } };
      }
    }
  }
  if (!out) {
    // Under a path known not to exist, nothing exists (its creation drops this answer too).
    if (state.epoch !== 0 && typeof params.path === 'string' && missingAncestor(params.path)) {
      const syscall = kind === 'read' ? 'open' : kind === 'list' ? 'scandir' : kind === 'stat' ? (params.lstat ? 'lstat' : 'stat') : kind;
      const data = { code: 'ENOENT', syscall, path: params.path, cache: true };
      out = { error: { code: -32000, message: `ENOENT: no such file or directory, ${syscall} '${params.path}'`, data } };
    }
  }
  if (out) {
    counters.hits++;
    if (kind === 'list' && out.result) counters.listHits++;
  } else counters.misses++;
  return out;
}

// Whether a proper ancestor of `p` has a cached ENOENT.
function missingAncestor(p) {
  const parts = split(p);
  let n = state.root;
  for (let i = 0; i < parts.length - 1; i++) {
    if (!n.kids) return false;
    n = n.kids.get(parts[i]);
    if (!n) return false;
    for (const e of [n.stat, n.lstat]) if (e && e.err && e.err.data && e.err.data.code === 'ENOENT') return true;
  }
  return false;
}

// ---- storing ------------------------------------------------------------------------------------

// Taken when a request is sent: the generation it may be stored under, or -1 (not cacheable).
function token() {
  if (!state.enabled) return -1;
  poll();
  return state.epoch !== 0 ? state.gen : -1;
}

function put(p, slot, value) {
  if (state.entries >= MAX_ENTRIES) clearAll();
  const n = findOrMake(p);
  const weight = (v) => (!v ? 0 : slot === 'list' ? v.weight : 1);
  state.entries += weight(value) - weight(n[slot]);
  n[slot] = value;
  counters.stores++;
}

// An answer to `method(params)` sent under `tok`: {result} or {error} (the JSON-RPC error object).
function store(method, params, tok, answer) {
  if (tok < 0 || !params || typeof params.path !== 'string' || slashed(params.path)) return;
  poll();
  if (tok !== state.gen) return;
  const p = params.path;
  if (method === 'fs.stat') {
    const slot = params.lstat ? 'lstat' : 'stat';
    if (answer.error) {
      const d = answer.error.data;
      if (answer.error.code === -32000 && d && d.cache === true && (d.code === 'ENOENT' || d.code === 'ENOTDIR')) put(p, slot, { err: answer.error });
    } else if (answer.result && answer.result.cache === true) put(p, slot, { ok: answer.result });
  } else if (method === 'fs.read') {
    const r = answer.result;
    if (!r || r.cache !== true || (params.offset || 0) !== 0 || typeof r.data !== 'string' || r.size > MAX_READ) return;
    if (Buffer.byteLength(r.data, 'base64') !== r.size) return; // not the whole file
    put(p, 'read', { b64: r.data, size: r.size });
  } else if (method === 'fs.readdir') {
    const r = answer.result;
    if (params.recursive || !r || r.cache !== true || !Array.isArray(r.entries)) return;
    const entries = r.entries.map((e) => Object.freeze({ name: e.name, kind: e.kind }));
    put(p, 'list', { entries, weight: listWeight(entries) });
  } else if (method === 'fs.open') {
    // An open that neither creates nor truncates answers the path's stat (and maybe its first
    // bytes) under the same flags as fs.stat and fs.read.
    const r = answer.result;
    if (!r || !r.stat || r.stat.cache !== true) return;
    put(p, 'stat', { ok: r.stat });
    const a = r.ahead;
    if (a && a.cache === true && typeof a.data === 'string' && a.size <= MAX_READ && Buffer.byteLength(a.data, 'base64') === a.size) put(p, 'read', { b64: a.data, size: a.size });
  }
}

// ---- the process's own calls --------------------------------------------------------------------

// Is `p` known to be a real path (reached without symlinks) and, when the call follows its last
// component, not a symlink itself? Only then can its effect be pinned to `p`.
function plain(p, follows) {
  if (typeof p !== 'string') return false;
  const n = find(p);
  if (!n) return false;
  if (n.stat || n.read) return true;
  if (!n.lstat) return false;
  return !follows || !n.lstat.ok || (n.lstat.ok.mode & S_IFMT) !== S_IFLNK;
}

const uploads = new Map(); // upload id → path (fs.upload.commit names only the id)
// Remote descriptor name → the path it was opened with (fds.cjs keeps it: a posted close never
// passes through here). A call on a descriptor changes that path's file; where the file has
// moved since, the agent's barrier reports it where it is.
const fdPaths = new Map();
const fdPath = (q) => {
  const p = fdPaths.get(q.fd);
  return p === undefined ? [['/', false]] : [[p, true]]; // unknown: everything may have changed
};

// What each call does to the cache. `paths(params)`: [path, follows] pairs it changes (subtree +
// parent); `read`: the path whose atime it moves (stat entries only), after its answer is stored.
// Calls that are not listed, and are not in PURE, drop everything.
const EFFECTS = {
  'fs.write': { paths: (q) => [[q.path, true]] },
  'fs.upload.begin': { paths: (q) => [[q.path, true]], done: (q, r) => r && r.id !== undefined && uploads.set(r.id, q.path) },
  'fs.upload.commit': { paths: (q) => [[uploads.get(q.id), true]], done: (q) => uploads.delete(q.id) },
  'fs.upload.abort': { paths: () => [], done: (q) => uploads.delete(q.id) },
  'fs.mkdir': { paths: (q) => [[q.path, false]] },
  'fs.rmdir': { paths: (q) => [[q.path, false]] },
  'fs.unlink': { paths: (q) => [[q.path, false]] },
  'fs.rm': { paths: (q) => [[q.path, false]] },
  'fs.rename': { paths: (q) => [[q.from, false], [q.to, false]] },
  'fs.link': { paths: (q) => [[q.from, false], [q.to, false]] }, // the source's nlink/ctime move
  'fs.copyFile': { paths: (q) => [[q.to, true]], read: (q) => q.from },
  'fs.symlink': { paths: (q) => [[q.path, false]] },
  'fs.chmod': { paths: (q) => [[q.path, true]] },
  'fs.utimes': { paths: (q) => [[q.path, !q.lstat]] },
  'fs.truncate': { paths: (q) => [[q.path, true]] },
  'fs.mkdtemp': { paths: (q) => [[q.prefix, false]], done: (q, r) => typeof r === 'string' && invalidate(r) },
  'fs.chown': { paths: (q) => [[q.path, !q.lstat]] },
  'fs.open': { paths: (q) => (q.flags && (q.flags.create || q.flags.truncate) ? [[q.path, !q.flags.nofollow]] : []) },
  'fs.pwrite': { paths: fdPath },
  'fs.fappend': { paths: fdPath },
  'fs.ftruncate': { paths: fdPath },
  'fs.fchmod': { paths: fdPath },
  'fs.fchown': { paths: fdPath },
  'fs.futimes': { paths: fdPath },
  'fs.pread': { paths: () => [], read: (q) => fdPaths.get(q.fd) },
  'fs.read': { paths: () => [], read: (q) => q.path },
  '*readRange': { paths: () => [], read: (q) => q.path },
  'fs.readdir': { paths: () => [], read: (q) => q.path },
  'fs.readlink': { paths: () => [], read: (q) => q.path },
};

// Calls that change nothing on disk themselves. proc.run/proc.spawn: what a process changes comes
// on the feeds, before its end (the barrier).
const PURE = new Set(['fs.stat', 'fs.access', 'fs.realpath', 'fs.fstat', 'fs.fsync', 'fs.close', 'fs.statfs', 'fs.upload.chunk', 'session.info', 'watch.start', 'watch.stop', 'fs.changes', 'fs.changes.stop', 'proc.run', 'proc.spawn', 'proc.stdin', 'proc.kill', 'proc.unsubscribe', 'session.ack', '*events']);

const NOOP = () => {};

// The helper's connection's feed: its epoch (0: none live).
const helperFeed = () => state.epoch;

// A call is being sent on a connection whose feed's epoch `feed()` tells (0: none; default: the
// helper's). Returns the function to call with its answer ({result}|{error}, or null when it is
// lost) once it is back (before anyone sees it).
function issue(method, params, feed = helperFeed) {
  if (!state.enabled) return NOOP;
  if (PURE.has(method)) return NOOP;
  const fx = EFFECTS[method];
  if (!fx) {
    clearAll();
    return () => clearAll();
  }
  poll();
  const q = params || {};
  const targets = fx.paths(q);
  const precise = targets.every(([p, follows]) => plain(p, follows));
  const epoch = feed();
  const literal = () => {
    for (const [p] of targets) invalidate(p);
  };
  // At issue: a lookup racing the call must not hit its paths. Where they may lead elsewhere,
  // the feed's barrier covers that place only if the feed is live (else drop everything).
  if (targets.length) {
    if (precise || epoch !== 0) literal();
    else clearAll();
  }
  return (answer) => {
    poll();
    // The barrier held: the call's changes came on the feed before this answer.
    const barrier = answer !== null && answer !== undefined && epoch !== 0 && feed() === epoch;
    if (targets.length) {
      if (precise || barrier) literal();
      else clearAll();
    }
    const touched = fx.read && fx.read(q);
    if (typeof touched === 'string') touch(touched);
    if (fx.done && answer && !answer.error) fx.done(q, answer.result);
    else if (fx.done && method === 'fs.upload.abort') fx.done(q);
  };
}

// What a probing call (sync.cjs/rpc.cjs `probe`) answers for a cached failure.
const MISSING = Symbol('pi-bridge: cached as missing');

const api = { MISSING, state, counters, CTL, MAX_READ, MAX_ENTRIES, fdPaths, lookup, token, store, issue, apply, invalidate, clearAll, attach, poll, find, expectPrefetch, setRoot, ownerMayRead };
globalThis[Symbol.for('pi-bridge.cache')] = counters;
module.exports = api;
