'use strict';
// One implementation, two drivers. An operation is a generator that yields remote calls as
// [method, params] (or [method, params, true]: a probe, see sync.cjs's call) and receives their
// results (or has their errors thrown into it). runSync drives it through the blocking bridge,
// runAsync through the main thread's connection, so the sync, callback and promise forms of an
// fs function share every line of logic. Pseudo-calls: `*readRange` (below),
// `['*post', [method, params]]`, a call sent without waiting for (or seeing) its answer, and
// `['*await', promise]` (asynchronous forms only: a local asynchronous step, e.g. a chunk of an
// async iterable being written), and `['*names', {path}]`, which sends nothing: it shows the path
// an operation is about to use without a call (a deferred open) to whatever wraps the
// generator (trust.cjs refuses hidden paths).

const sync = require('./sync.cjs');
const rpc = require('./rpc.cjs');
const { readData } = require('./wire.cjs');

function runSync(gen) {
  let step = gen.next();
  while (!step.done) {
    let value;
    try {
      if (step.value[0] === '*names') value = undefined;
      else if (step.value[0] === '*post') sync.post(...step.value[1]);
      else if (step.value[0] === '*await') throw new Error('pi-bridge: internal: an asynchronous step in a synchronous call');
      else value = sync.call(step.value[0], step.value[1], step.value[2]);
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(value);
  }
  return step.value;
}

// `*readRange` {path, offset, end, chunk, window}: fs.read calls of `chunk` bytes covering
// [offset, end), `window` of them in flight, taken in order up to the first short one (the file
// changed, or its end). Resolves {parts: [Buffer], size} (size: the last taken read's answer).
async function readRange(q) {
  const n = Math.max(1, Math.ceil((q.end - q.offset) / q.chunk));
  const inflight = [];
  const issue = (i) => {
    const pr = rpc.call('fs.read', { path: q.path, offset: q.offset + i * q.chunk, length: q.chunk, raw: true });
    pr.catch(() => {}); // one not awaited (after a short read or an error) must not go unhandled
    inflight[i] = pr;
  };
  for (let i = 0; i < Math.min(q.window, n); i++) issue(i);
  const parts = [];
  let size = q.end;
  for (let i = 0; i < n; i++) {
    const r = await inflight[i];
    inflight[i] = null;
    const data = readData(r.data);
    parts.push(data);
    size = r.size;
    if (data.length < q.chunk) break;
    if (i + q.window < n) issue(i + q.window);
  }
  return { parts, size };
}

function callAsync(method, params, probe) {
  if (method === '*post') {
    rpc.post(...params).catch(() => {});
    return undefined;
  }
  if (method === '*await') return params;
  if (method === '*names') return undefined;
  return method === '*readRange' ? readRange(params) : rpc.call(method, params, probe);
}

async function runAsync(gen) {
  let step = gen.next();
  while (!step.done) {
    let value;
    try {
      value = await callAsync(step.value[0], step.value[1], step.value[2]);
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(value);
  }
  return step.value;
}

module.exports = { runSync, runAsync };
