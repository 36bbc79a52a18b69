'use strict';
// fs.watch / fs.watchFile / fs.promises.watch on routed paths, fed by the agent's inotify watch
// (`watch.start` subscription) instead of polling. watchFile falls back to stat polling only
// when the remote watch cannot be set up.

const { EventEmitter } = require('events');
const { MessageChannel } = require('worker_threads');
const route = require('./route.cjs');
const rpc = require('./rpc.cjs');
const sync = require('./sync.cjs');
const { fsError, transportError, WIRE } = require('./errors.cjs');
const { makeStats } = require('./stats.cjs');

function asWatchError(err, disp) {
  const w = err && err[WIRE];
  return w ? fsError({ ...w, syscall: 'watch', path: disp }) : err;
}

// Watch subscriptions live on the helper worker's connection (already open, so a watch is armed
// on the remote before fs.watch returns, as Node's is). Subscribing is a blocking call that
// returns the subscription id; the helper forwards the subscription's notifications on a
// MessagePort of their own (never the reply port the blocking calls drain). That port is ref'd
// while any persistent watcher is open, so an idle bridge never keeps node alive.
const subscriptions = new Map(); // subscription id → onItem(item, lost)
let events = null; // main thread's end of the event port
let holds = 0;

function eventPort() {
  if (events) return events;
  const { port1, port2 } = new MessageChannel();
  port1.on('message', (msg) => {
    if (msg.dead) {
      const err = transportError(`lost the connection to pii (${msg.dead})`);
      for (const onItem of [...subscriptions.values()]) onItem(null, err);
      subscriptions.clear();
      return;
    }
    const onItem = subscriptions.get(msg.subscription);
    if (onItem) onItem(msg.result);
  });
  port1.unref(); // the listener ref'd it; hold() decides
  sync.post('*events', port2, [port2]);
  return (events = port1);
}

function hold() {
  if (holds++ === 0) events.ref();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    if (--holds === 0) events.unref();
  };
}

// Subscribe (blocking): the watch is armed on the remote when this returns. Throws the agent's
// error (ENOENT for a missing path) as it is.
function subscribe(params, onItem) {
  eventPort();
  const sid = String(sync.call('watch.start', params));
  subscriptions.set(sid, onItem);
  return sid;
}

function unsubscribe(sid) {
  if (!subscriptions.delete(sid)) return;
  sync.post('watch.stop', [sid]);
}

// An fs.FSWatcher look-alike: 'change'(eventType, filename), 'error', 'close'.
class RemoteWatcher extends EventEmitter {
  constructor(abs, disp, o) {
    super();
    this._closed = false;
    const encoding = o.encoding;
    const onItem = (item, lost) => {
      if (this._closed) return;
      if (lost) return this._fail(lost);
      if (item.type === 'error') return this._fail(asWatchError(fsError(item.error), disp));
      const name = item.filename === null || item.filename === undefined ? null : encoding === 'buffer' ? Buffer.from(item.filename) : item.filename;
      this.emit('change', item.eventType, name);
    };
    try {
      this._sid = subscribe({ path: abs, recursive: !!o.recursive }, onItem);
    } catch (err) {
      throw asWatchError(err, disp);
    }
    this._release = o.persistent === false ? () => {} : hold();
  }

  _fail(err) {
    if (this._closed) return;
    this.emit('error', err);
    this.close();
  }

  close() {
    if (this._closed) return;
    this._closed = true;
    this._release();
    unsubscribe(this._sid);
    process.nextTick(() => this.emit('close'));
  }

  ref() {
    if (this._closed) return this;
    this._release();
    this._release = hold();
    return this;
  }

  unref() {
    this._release();
    return this;
  }
}

function watchArgs(options, listener) {
  if (typeof options === 'function') return [{}, options];
  if (typeof options === 'string') return [{ encoding: options }, listener];
  return [options || {}, listener];
}

function watch(abs, disp, options, listener) {
  const [o, l] = watchArgs(options, listener);
  const w = new RemoteWatcher(abs, disp, o); // throws at once for a missing path, as Node does
  if (l) w.on('change', l);
  return w;
}

// watchFile: listener(curr, prev) with Stats, driven by remote watch events (or polling).
const fileWatchers = new Map(); // abs → {listeners: Set, stop()}

const ZERO = { dev: 0, ino: 0, mode: 0, nlink: 0, uid: 0, gid: 0, rdev: 0, size: 0, blksize: 0, blocks: 0, atime: [0, 0], mtime: [0, 0], ctime: [0, 0], birthtime: [0, 0] };

function startFileWatch(abs, o) {
  const entry = { listeners: new Set(), prev: null, stop: () => {} };
  const check = () =>
    rpc.call('fs.stat', { path: abs, lstat: false }).then(
      (s) => s,
      () => ZERO,
    ).then((s) => {
      const prev = entry.prev || ZERO;
      entry.prev = s;
      if (JSON.stringify(prev.mtime) !== JSON.stringify(s.mtime) || prev.size !== s.size || prev.ino !== s.ino || prev.mode !== s.mode) {
        const curr = makeStats(s, o.bigint);
        const before = makeStats(prev, o.bigint);
        for (const l of entry.listeners) l(curr, before);
      }
    });
  rpc.call('fs.stat', { path: abs, lstat: false }).then((s) => (entry.prev = s), () => (entry.prev = ZERO));
  // Watch the parent directory: catches creation, deletion and replacement by rename.
  const path = require('path');
  let timer = null;
  const poll = () => {
    timer = setInterval(check, o.interval || 5007);
    if (o.persistent === false) timer.unref();
  };
  let w = null;
  try {
    w = new RemoteWatcher(path.dirname(abs), path.dirname(abs), { persistent: o.persistent });
    w.on('change', (_t, name) => {
      if (name === null || name === path.basename(abs)) check();
    });
    w.on('error', poll);
  } catch {
    poll(); // the directory cannot be watched (missing?): poll like Node does
  }
  entry.stop = () => {
    if (w) w.close();
    if (timer) clearInterval(timer);
  };
  return entry;
}

function install(fs, fsp) {
  const origWatch = fs.watch;
  const origWatchFile = fs.watchFile;
  const origUnwatchFile = fs.unwatchFile;
  fs.watch = function watchPatched(filename, options, listener) {
    const abs = route.routed(filename);
    if (!abs) return Reflect.apply(origWatch, this, arguments);
    return watch(abs, route.toPathString(filename), options, listener);
  };
  fs.watchFile = function watchFile(filename, options, listener) {
    const abs = route.routed(filename);
    if (!abs) return Reflect.apply(origWatchFile, this, arguments);
    const [o, l] = watchArgs(options, listener);
    let entry = fileWatchers.get(abs);
    if (!entry) fileWatchers.set(abs, (entry = startFileWatch(abs, o)));
    entry.listeners.add(l);
    return entry;
  };
  fs.unwatchFile = function unwatchFile(filename, listener) {
    const abs = route.routed(filename);
    if (!abs) return Reflect.apply(origUnwatchFile, this, arguments);
    const entry = fileWatchers.get(abs);
    if (!entry) return;
    if (listener) entry.listeners.delete(listener);
    else entry.listeners.clear();
    if (entry.listeners.size === 0) {
      entry.stop();
      fileWatchers.delete(abs);
    }
  };
  const origPWatch = fsp.watch;
  fsp.watch = function watchPromise(filename, options) {
    const abs = route.routed(filename);
    if (!abs) return Reflect.apply(origPWatch, this, arguments);
    return asyncWatch(abs, route.toPathString(filename), options || {});
  };
}

// fs.promises.watch: an async iterator of {eventType, filename}.
async function* asyncWatch(abs, disp, o) {
  const queue = [];
  let wake = null;
  let failure = null;
  const w = new RemoteWatcher(abs, disp, o);
  w.on('change', (eventType, filename) => {
    queue.push({ eventType, filename });
    if (wake) wake();
  });
  w.on('error', (err) => {
    failure = err;
    if (wake) wake();
  });
  const onAbort = () => {
    failure = Object.assign(new Error('The operation was aborted'), { name: 'AbortError', code: 'ABORT_ERR' });
    if (wake) wake();
  };
  if (o.signal) o.signal.addEventListener('abort', onAbort, { once: true });
  try {
    for (;;) {
      while (queue.length) yield queue.shift();
      if (failure) throw failure;
      await new Promise((r) => (wake = r));
      wake = null;
    }
  } finally {
    w.close();
    if (o.signal) o.signal.removeEventListener('abort', onAbort);
  }
}

module.exports = { install };
