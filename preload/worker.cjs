'use strict';
// The helper thread behind every blocking call. It owns one connection to pii's
// endpoint. The main thread posts {id, method, params} on `port` and sleeps in Atomics.wait on
// ctl[0]; each reply is posted back and ctl[0] bumped. When the connection is gone, ctl[1] (the
// sticky "dead" flag) is set so the main thread fails at once instead of waiting for a timeout.
// No patches are installed here (the Worker is started with empty execArgv).

const net = require('net');
const { workerData } = require('worker_threads');
const { encode, LineSplitter, parseEndpoint, readData, parseMessage } = require('./wire.cjs');
const trace = require('./trace.cjs');

const { port, ctl, endpoint, token, changes } = workerData;
let prefetch = workerData.prefetch || null; // sent with the first feed subscription (cache.cjs)
const hop = trace.hops(workerData.hops, 20); // PI_BRIDGE_HOPS (null: off)
let dataAt = 0n; // when the chunk being split arrived (hops only)

// ctl indices of the cache's feed, as cache.cjs defines them (CTL, passed in workerData).
// PREFETCH: 1 while the feed's prefetch is on its way, 2 once it came (or will not).
const { CHANGES, EPOCH, DRAINED, PREFETCH } = workerData.CTL;
const BACKLOG = 4096; // items the main thread has not drained yet, beyond which one `all` stands for them

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
  prefetchDone();
  if (changes) {
    Atomics.store(ctl, EPOCH, 0);
    change({ type: 'error', error: { code: 'ECONNRESET', syscall: 'read' } });
  }
}

// The cache's fs.changes feed on this connection. Each item goes to the main thread on
// `changes` and ctl[CHANGES] is bumped right away, so it is counted before the reply of any
// later answer on this socket is posted: after a proc.run answer (which the agent sends after the
// process's changes) the main thread drains them before it looks anything up. ctl[EPOCH] is the
// feed's epoch once it is answered (0: no live feed, nothing may be cached). proc.run calls wait
// until the feed is answered, or the barrier could miss what they change.
let feedEpoch = 0;
let feedPending = false;
let overflowed = false;
const heldRuns = [];

function prefetchDone() {
  if (Atomics.load(ctl, PREFETCH) !== 1) return;
  Atomics.store(ctl, PREFETCH, 2);
  Atomics.notify(ctl, PREFETCH);
}

function change(item) {
  if (!changes) return;
  const backlog = Atomics.load(ctl, CHANGES) - Atomics.load(ctl, DRAINED);
  if (backlog > BACKLOG) {
    if (overflowed) return;
    overflowed = true;
    item = { type: 'all' };
  } else overflowed = false;
  changes.postMessage(item);
  Atomics.add(ctl, CHANGES, 1);
  if (item.type !== 'epoch') prefetchDone(); // the feed's first item is its prefetch
}

function releaseRuns() {
  feedPending = false;
  for (const m of heldRuns.splice(0)) socket.write(encode(m.id, m.method, m.params));
}

function subscribeFeed() {
  feedPending = true;
  if (prefetch) Atomics.store(ctl, PREFETCH, 1);
  send('fs.changes', prefetch ? { prefetch } : {}, (m) => {
    if (!m.error && !dead) {
      prefetch = null;
      feedEpoch++;
      Atomics.store(ctl, EPOCH, feedEpoch);
      change({ type: 'epoch', epoch: feedEpoch }); // before the feed's items (its prefetch first)
    } else prefetchDone();
    releaseRuns(); // a feed that cannot be had leaves caching off (EPOCH 0) but must not block
  });
}

const socket = net.connect(parseEndpoint(endpoint));
socket.setNoDelay(true);
socket.write(token + '\n');
socket.on('error', (e) => die(e.message));
socket.on('close', () => die('connection to pii closed'));

// Calls the helper makes itself (the pieces of a `*readRange`), by their own string ids; the
// main thread's ids are numbers.
const own = new Map(); // id → onReply(msg)
let ownId = 0;

function send(method, params, onReply) {
  const id = `h${++ownId}`;
  own.set(id, onReply);
  socket.write(encode(id, method, params));
}

// `*readRange` (see run.cjs for the contract): fs.read pieces with `window` in flight, decoded
// here and handed over as transferred ArrayBuffers. A {progress} message per piece tells the
// main thread the call is alive (its timeout is per piece, not for the whole file).
function readRange(id, q) {
  const n = Math.max(1, Math.ceil((q.end - q.offset) / q.chunk));
  const got = [];
  const parts = [];
  let issued = 0;
  let taken = 0;
  let done = false;
  const finish = (msg, transfer) => {
    if (done) return;
    done = true;
    port.postMessage(msg, transfer);
    ring();
  };
  const issue = () => {
    const i = issued++;
    send('fs.read', { path: q.path, offset: q.offset + i * q.chunk, length: q.chunk, raw: true }, (m) => {
      got[i] = m;
      drain();
    });
  };
  const drain = () => {
    while (!done && taken < n && got[taken]) {
      const m = got[taken];
      got[taken++] = null;
      if (m.error) return finish({ id, error: m.error });
      let data = readData(m.result.data);
      // Only a buffer that owns its whole ArrayBuffer may be transferred (small ones share a pool;
      // a raw answer's payload owns its own).
      if (data.byteOffset !== 0 || data.byteLength !== data.buffer.byteLength) data = new Uint8Array(data);
      parts.push(data);
      if (data.length < q.chunk || taken === n) {
        return finish({ id, result: { parts, size: m.result.size } }, parts.map((b) => b.buffer));
      }
      port.postMessage({ id, progress: true });
      ring();
      if (issued < n) issue();
    }
  };
  for (let k = 0; k < Math.min(q.window, n); k++) issue();
}

// Subscriptions made on this connection (watch.start, see watch.cjs): their notifications go to
// the main thread on `events`, a MessagePort of their own (posted once as `*events`), never on
// `port`, whose replies the main thread takes with receiveMessageOnPort.
let events = null;
function forward(msg) {
  const p = msg.params;
  if (events && p && p.subscription !== undefined) events.postMessage({ subscription: String(p.subscription), result: p.result });
}
socket.on('close', () => events && events.postMessage({ dead: 'connection to pii closed' }));

function onChange(msg) {
  const item = msg.params && msg.params.result;
  change(item);
  if (item && item.type === 'error') {
    // The feed ended (its session is gone): nothing is cached until a new one is answered.
    Atomics.store(ctl, EPOCH, 0);
    if (!dead) subscribeFeed();
  }
}

// A plain JSON answer to one of the main thread's calls, as pii writes it (protocol::rpc: the
// envelope's members in this order, the client's numeric id): its id, else null.
const ANSWER = /^\{"jsonrpc":"2\.0","id":(\d{1,15}),"(?:result|error)":/;

const splitter = new LineSplitter((line, payload) => {
  // The main thread's answers go over as the line itself, parsed there once (not parsed here,
  // then cloned as an object and rebuilt there): the helper only reads the id.
  const plain = payload === undefined ? ANSWER.exec(line) : null;
  if (plain) {
    const id = Number(plain[1]);
    if (hop) {
      hop.stamp(id, 'h_data', dataAt);
      hop.stamp(id, 'h_post');
    }
    return reply({ id, line });
  }
  let msg;
  try {
    msg = parseMessage(line, payload);
  } catch {
    return;
  }
  if (msg.id === undefined || msg.id === null) {
    if (msg.method === 'fs.changed') return onChange(msg); // this connection's one feed
    return forward(msg); // a subscription's notification
  }
  if (typeof msg.id === 'string') {
    const onReply = own.get(msg.id);
    if (onReply) {
      own.delete(msg.id);
      onReply(msg);
    }
    return;
  }
  if (hop) {
    hop.stamp(msg.id, 'h_data', dataAt);
    hop.stamp(msg.id, 'h_post');
  }
  reply(msg.error ? { id: msg.id, error: msg.error } : { id: msg.id, result: msg.result });
}, (why) => socket.destroy(new Error(why)));
socket.on('data', (chunk) => {
  if (hop) dataAt = process.hrtime.bigint();
  splitter.push(chunk);
});

port.on('message', ({ id, method, params }) => {
  const recvAt = hop ? process.hrtime.bigint() : 0n;
  if (dead) return reply({ id, dead: 'connection to pii closed' });
  if (method === '*events') return void (events = params);
  if (method === '*readRange') return readRange(id, params);
  if (method === 'proc.run' && feedPending) return void heldRuns.push({ id, method, params });
  const frame = encode(id, method, params);
  if (hop) {
    hop.stamp(id, 'h_recv', recvAt);
    hop.stamp(id, 'h_write');
  }
  socket.write(frame);
});

if (changes) subscribeFeed();
