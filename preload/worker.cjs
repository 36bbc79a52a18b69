'use strict';
// The helper thread behind every blocking call. It owns one connection to pii's loopback
// endpoint. The main thread posts {id, method, params} on `port` and sleeps in Atomics.wait on
// ctl[0]; each reply is posted back and ctl[0] bumped. When the connection is gone, ctl[1] (the
// sticky "dead" flag) is set so the main thread fails at once instead of waiting for a timeout.
// No patches are installed here (the Worker is started with empty execArgv).

const net = require('net');
const { workerData } = require('worker_threads');
const { encode, LineSplitter, parseEndpoint } = require('./wire.cjs');

const { port, ctl, endpoint, token } = workerData;

function ring() {
  Atomics.add(ctl, 0, 1);
  Atomics.notify(ctl, 0);
}

function reply(msg) {
  port.postMessage(msg);
  ring();
}

let dead = false;
function die(reason) {
  if (dead) return;
  dead = true;
  Atomics.store(ctl, 1, 1);
  port.postMessage({ id: null, dead: reason });
  ring();
  port.close();
}

const { host, port: tcpPort } = parseEndpoint(endpoint);
const socket = net.connect({ host, port: tcpPort });
socket.setNoDelay(true);
socket.write(token + '\n');
socket.on('error', (e) => die(e.message));
socket.on('close', () => die('connection to pii closed'));

// Subscriptions made on this connection (watch.start, see watch.cjs): their notifications go to
// the main thread on `events`, a MessagePort of their own (posted once as `*events`), never on
// `port`, whose replies the main thread takes with receiveMessageOnPort.
let events = null;
function forward(msg) {
  const p = msg.params;
  if (events && p && p.subscription !== undefined) events.postMessage({ subscription: String(p.subscription), result: p.result });
}
socket.on('close', () => events && events.postMessage({ dead: 'connection to pii closed' }));

const splitter = new LineSplitter((line) => {
  let msg;
  try {
    msg = JSON.parse(line);
  } catch {
    return;
  }
  if (msg.id === undefined || msg.id === null) return forward(msg); // a subscription's notification
  reply(msg.error ? { id: msg.id, error: msg.error } : { id: msg.id, result: msg.result });
});
socket.on('data', (chunk) => splitter.push(chunk));

port.on('message', ({ id, method, params }) => {
  if (dead) return reply({ id, dead: 'connection to pii closed' });
  if (method === '*events') return void (events = params);
  socket.write(encode(id, method, params));
});
