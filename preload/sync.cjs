'use strict';
// Blocking calls: the main thread hands a request to the helper worker (worker.cjs) and sleeps
// in Atomics.wait until the reply is there, then takes it with receiveMessageOnPort. The helper
// is started lazily on the first call (~20 ms, once per process) and never keeps node alive.

const path = require('path');
const { Worker, MessageChannel, receiveMessageOnPort } = require('worker_threads');
const { fromRpcError, transportError } = require('./errors.cjs');
const trace = require('./trace.cjs');
const cache = require('./cache.cjs');

const SPIN_NS = 50_000n; // spin briefly before sleeping (measured: longer spins bought nothing through pii)

const hop = trace.hops(trace.hopsFile, null); // PI_BRIDGE_HOPS (null: off)

let session = null; // {endpoint, token, rpcTimeoutMs}
let helper = null; // {port, ctl, worker}
let nextId = 1;
let deadReason = null;

function configure(s) {
  session = s;
}

function start() {
  // [doorbell, dead, cache: changes posted, feed epoch, changes drained] (cache.cjs CTL)
  const ctl = new Int32Array(new SharedArrayBuffer(4 * cache.CTL.LENGTH));
  const { port1, port2 } = new MessageChannel();
  // The fs.changes feed's items come on a port of their own, drained by cache.poll().
  const changes = cache.state.enabled ? new MessageChannel() : null;
  const prefetch = changes ? prefetchList(session) : null;
  const worker = new Worker(path.join(__dirname, 'worker.cjs'), {
    workerData: { piiHelper: true, port: port2, ctl, CTL: cache.CTL, endpoint: session.endpoint, token: session.token, changes: changes && changes.port2, prefetch, hops: trace.hopsFile },
    transferList: changes ? [port2, changes.port2] : [port2],
    execArgv: [], // no preload in the helper: a blocking call from it would deadlock
    env: {},
  });
  worker.unref();
  worker.on('error', (e) => {
    deadReason = `helper thread failed: ${e.message}`;
    Atomics.store(ctl, 1, 1);
  });
  port1.unref();
  if (changes) {
    changes.port1.unref();
    cache.attach(ctl, changes.port1);
    cache.expectPrefetch(prefetch);
  }
  helper = { port: port1, ctl, worker };
}

// PII_SESSION `prefetch`: paths (relative to the project root, which the agent resolves: the
// preload may not know the root yet when the helper subscribes) for the feed's first item.
function prefetchList(s) {
  const list = Array.isArray(s.prefetch) ? s.prefetch.filter((p) => typeof p === 'string' && p.length > 0 && !p.includes('\u0000')) : [];
  return list.length ? list : null;
}

// Start the helper now if it is not running (rpc.cjs: the cache needs the helper's feed).
function ensure() {
  if (session && !helper) start();
}

function fail(reason) {
  deadReason = deadReason || reason;
  return transportError(`lost the connection to pii (${deadReason})`);
}

// Wait until the doorbell moves past `seen`, or the deadline passes. Returns false on timeout.
function waitForBell(ctl, seen, deadline) {
  const spinUntil = process.hrtime.bigint() + SPIN_NS;
  while (Atomics.load(ctl, 0) === seen) {
    const now = process.hrtime.bigint();
    if (now < spinUntil) continue;
    const ms = Number(deadline - now) / 1e6;
    if (ms <= 0) return false;
    Atomics.wait(ctl, 0, seen, ms);
  }
  return true;
}

// Call `method` and return its result, or throw a Node-shaped error. The cache (cache.cjs) may
// answer it; every answer, and every mutation, goes through the cache too.
// `probe`: a cached failure is returned as cache.MISSING instead of thrown (existsSync has no use
// for the Node error, whose construction costs more than the lookup).
function call(method, params, probe) {
  if (!session) throw transportError('not configured');
  if (!helper) start();
  const hit = cache.lookup(method, params);
  if (hit) {
    if (hit.error) {
      if (probe) return cache.MISSING;
      throw fromRpcError(hit.error);
    }
    return hit.result;
  }
  const done = cache.issue(method, params);
  const tok = cache.token();
  const started = trace.begin();
  let answer;
  try {
    answer = exchange(method, params);
  } catch (err) {
    done(null); // lost or timed out: it may or may not have been applied
    throw err;
  }
  trace.end('sync', method, params, started);
  cache.store(method, params, tok, answer);
  done(answer);
  if (hop) hop.stamp(answer.id, 'm_ret');
  if (answer.error) throw fromRpcError(answer.error);
  return answer.result;
}

// One request through the helper: {id, result} or {id, error} (the JSON-RPC error object).
function exchange(method, params) {
  const { port, ctl } = helper;
  if (Atomics.load(ctl, 1)) throw fail('connection to pii closed');
  const id = nextId++;
  const timeoutMs = (session.rpcTimeoutMs || 30000) + 2000; // pii times out first, with a reply
  let deadline = process.hrtime.bigint() + BigInt(timeoutMs) * 1_000_000n;
  if (hop) hop.stamp(id, 'm_post');
  port.postMessage({ id, method, params });
  for (;;) {
    const seen = Atomics.load(ctl, 0);
    // Take every reply that is already there; stale ones (earlier timed-out calls) are dropped.
    let m;
    while ((m = receiveMessageOnPort(port))) {
      const msg = m.message;
      if (msg.dead) throw fail(msg.dead);
      if (msg.id !== id) continue;
      if (msg.progress) {
        // A multi-part call (`*readRange`) made progress: the timeout starts over.
        deadline = process.hrtime.bigint() + BigInt(timeoutMs) * 1_000_000n;
        continue;
      }
      if (hop) hop.stamp(id, 'm_got');
      if (msg.line !== undefined) return answerOf(id, msg.line); // worker.cjs ANSWER
      return msg.error ? { id, error: msg.error } : { id, result: msg.result };
    }
    if (Atomics.load(ctl, 1)) throw fail('connection to pii closed');
    if (!waitForBell(ctl, seen, deadline)) {
      throw transportError(`${method} got no answer within ${timeoutMs} ms`, 'ETIMEDOUT');
    }
  }
}

// An answer line the helper passed on unparsed: {id, result} or {id, error}.
function answerOf(id, line) {
  let a;
  try {
    a = JSON.parse(line);
  } catch (e) {
    throw transportError(`pii sent an answer that is not JSON (${e.message})`);
  }
  return a.error ? { id, error: a.error } : { id, result: a.result };
}

// Post a request to the helper without waiting for its answer (the next call drops it as stale);
// `transfer` moves MessagePorts along. Used by watch.cjs (its event port, unsubscribing).
function post(method, params, transfer) {
  if (!session) throw transportError('not configured');
  if (!helper) start();
  helper.port.postMessage({ id: -nextId++, method, params }, transfer);
}

module.exports = { configure, call, post, ensure };
