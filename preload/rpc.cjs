'use strict';
// The main thread's own asynchronous connection to pii: promise-returning calls and
// subscriptions (process events, watch events). The socket is unref'd whenever nothing is
// pending or streaming, so an idle bridge never keeps node alive.

const net = require('net');
const sync = require('./sync.cjs');
const { encode, LineSplitter, parseEndpoint, parseMessage } = require('./wire.cjs');
const { fromRpcError, transportError } = require('./errors.cjs');
const trace = require('./trace.cjs');
const cache = require('./cache.cjs');

let session = null;
let socket = null;
let nextId = 1;
const pending = new Map(); // id → {resolve, reject, method}
const subscriptions = new Map(); // subscription id → onItem(result)
const early = new Map(); // notifications that beat their subscription's answer
let holds = 0; // open streams that must keep node alive (running processes, watches)

// The cache's fs.changes feed on this socket (cache.cjs). Its items are applied in line order,
// so a process's `exit` (proc.event on this socket) comes after what it changed. proc.spawn waits
// for the feed's answer; a process started without a live feed, or whose feed ended before it
// did, drops the whole cache when it ends.
let feedReady = Promise.resolve();
let feedEpoch = 0; // bumped for each feed answered on this socket; 0 while none is live
let feedCount = 0;
let weak = 0; // pending calls that must not keep node alive (the feed's subscription)

// This socket's feed, for cache.issue: a mutation answered while it stayed live had its changes
// delivered before its answer (the agent's barrier).
const socketFeed = () => feedEpoch;

function configure(s) {
  session = s;
}

function updateRef() {
  if (!socket) return;
  if (pending.size > weak || holds > 0) socket.ref();
  else socket.unref();
}

// Keep node alive while a stream is open (`hold()` returns its release function).
function hold() {
  holds++;
  updateRef();
  let released = false;
  return () => {
    if (released) return;
    released = true;
    holds--;
    updateRef();
  };
}

function onLine(line, payload) {
  let msg;
  try {
    msg = parseMessage(line, payload);
  } catch {
    return;
  }
  if (msg.id !== undefined && msg.id !== null) return settle(msg);
  const p = msg.params;
  if (!p || p.subscription === undefined) return;
  if (msg.method === 'fs.changed') return onChange(p.result);
  const key = String(p.subscription);
  const sub = subscriptions.get(key);
  if (sub) sub(p.result);
  else {
    if (!early.has(key)) early.set(key, []);
    early.get(key).push(p.result);
  }
}

function onChange(item) {
  cache.apply(item);
  if (item && item.type === 'error') {
    feedEpoch = 0;
    if (socket) subscribeFeed();
  }
}

function subscribeFeed() {
  const s = socket;
  feedEpoch = 0;
  weak++;
  feedReady = send('fs.changes', {}, false, 'bg').then(
    () => {
      weak--;
      updateRef();
      if (socket === s) feedEpoch = ++feedCount;
    },
    () => {
      weak--;
      updateRef();
    },
  );
}

function settle(msg) {
  const p = pending.get(msg.id);
  if (!p) return;
  pending.delete(msg.id);
  updateRef();
  trace.end(p.kind, p.method, p.params, p.started);
  const answer = msg.error ? { error: msg.error } : { result: msg.result };
  cache.store(p.method, p.params, p.tok, answer);
  p.done(answer);
  if (msg.error) p.reject(fromRpcError(msg.error));
  else p.resolve(msg.result);
}

function connect() {
  const s = net.connect(parseEndpoint(session.endpoint));
  s.setNoDelay(true);
  s.write(session.token + '\n');
  const splitter = new LineSplitter(onLine, (why) => s.destroy(new Error(why)));
  s.on('data', (chunk) => splitter.push(chunk));
  s.on('error', () => {}); // 'close' follows and does the work
  s.on('close', () => {
    if (socket === s) {
      socket = null;
      feedEpoch = 0;
      cache.clearAll();
    }
    const err = () => transportError('lost the connection to pii (connection closed)');
    for (const p of pending.values()) {
      p.done(null);
      p.reject(err());
    }
    pending.clear();
    for (const onItem of subscriptions.values()) onItem(null, err());
    subscriptions.clear();
  });
  socket = s;
  if (cache.state.enabled) {
    sync.ensure(); // the helper's feed is the one that lets answers be cached
    subscribeFeed();
  }
}

// `probe`: as sync.cjs's call (a cached failure resolves to cache.MISSING).
function call(method, params, probe) {
  return send(method, params, probe, 'async');
}

// A call nobody waits for when it is sent (a close posted on, the feed subscription): traced as
// `bg`, so a trace tells the round trips a caller waited for from those it did not.
function post(method, params) {
  return send(method, params, false, 'bg');
}

function send(method, params, probe, kind) {
  if (!session) return Promise.reject(transportError('not configured'));
  if (!socket) connect();
  const hit = cache.lookup(method, params);
  if (hit && hit.error && probe) return Promise.resolve(cache.MISSING);
  if (hit) return hit.error ? Promise.reject(fromRpcError(hit.error)) : Promise.resolve(hit.result);
  const id = nextId++;
  return new Promise((resolve, reject) => {
    const done = cache.issue(method, params, socketFeed);
    pending.set(id, { resolve, reject, method, params, done, tok: cache.token(), started: trace.begin(), kind });
    updateRef();
    socket.write(encode(id, method, params));
  });
}

// Subscribe; `onItem(item)` gets every notification, `onItem(null, err)` if the connection is
// lost. Resolves with the subscription id.
async function subscribe(method, params, onItem) {
  if (method === 'proc.spawn' && cache.state.enabled) {
    if (!socket) connect();
    await feedReady;
    const epoch = feedEpoch;
    const inner = onItem;
    onItem = (item, lost) => {
      if (lost || !item || ((item.type === 'exit' || item.type === 'error') && (epoch === 0 || feedEpoch !== epoch))) cache.clearAll();
      inner(item, lost);
    };
  }
  const sid = String(await call(method, params));
  subscriptions.set(sid, onItem);
  const queued = early.get(sid);
  if (queued) {
    early.delete(sid);
    for (const item of queued) onItem(item);
  }
  return sid;
}

function unsubscribe(sid, method) {
  subscriptions.delete(String(sid));
  if (method) call(method, [sid]).catch(() => {});
}

module.exports = { configure, call, post, subscribe, unsubscribe, hold };
