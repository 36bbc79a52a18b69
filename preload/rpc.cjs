'use strict';
// The main thread's own asynchronous connection to pii: promise-returning calls and
// subscriptions (process events, watch events). The socket is unref'd whenever nothing is
// pending or streaming, so an idle bridge never keeps node alive.

const net = require('net');
const { encode, LineSplitter, parseEndpoint } = require('./wire.cjs');
const { fromRpcError, transportError } = require('./errors.cjs');

let session = null;
let socket = null;
let nextId = 1;
const pending = new Map(); // id → {resolve, reject, method}
const subscriptions = new Map(); // subscription id → onItem(result)
const early = new Map(); // notifications that beat their subscription's answer
let holds = 0; // open streams that must keep node alive (running processes, watches)

function configure(s) {
  session = s;
}

function updateRef() {
  if (!socket) return;
  if (pending.size > 0 || holds > 0) socket.ref();
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

function onLine(line) {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (msg.id !== undefined && msg.id !== null) return settle(msg);
  const p = msg.params;
  if (!p || p.subscription === undefined) return;
  const key = String(p.subscription);
  const sub = subscriptions.get(key);
  if (sub) sub(p.result);
  else {
    if (!early.has(key)) early.set(key, []);
    early.get(key).push(p.result);
  }
}

function settle(msg) {
  const p = pending.get(msg.id);
  if (!p) return;
  pending.delete(msg.id);
  updateRef();
  if (msg.error) p.reject(fromRpcError(msg.error));
  else p.resolve(msg.result);
}

function connect() {
  const { host, port } = parseEndpoint(session.endpoint);
  const s = net.connect({ host, port });
  s.setNoDelay(true);
  s.write(session.token + '\n');
  const splitter = new LineSplitter(onLine);
  s.on('data', (chunk) => splitter.push(chunk));
  s.on('error', () => {}); // 'close' follows and does the work
  s.on('close', () => {
    if (socket === s) socket = null;
    const err = () => transportError('lost the connection to pii (connection closed)');
    for (const p of pending.values()) p.reject(err());
    pending.clear();
    for (const onItem of subscriptions.values()) onItem(null, err());
    subscriptions.clear();
  });
  socket = s;
}

function call(method, params) {
  if (!session) return Promise.reject(transportError('not configured'));
  if (!socket) connect();
  const id = nextId++;
  return new Promise((resolve, reject) => {
    pending.set(id, { resolve, reject, method });
    updateRef();
    socket.write(encode(id, method, params));
  });
}

// Subscribe; `onItem(item)` gets every notification, `onItem(null, err)` if the connection is
// lost. Resolves with the subscription id.
async function subscribe(method, params, onItem) {
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

module.exports = { configure, call, subscribe, unsubscribe, hold };
