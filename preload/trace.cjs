'use strict';
// PI_BRIDGE_TRACE=<local file>: one line per round trip to the remote, to see what a slow link
// costs and which calls a cache or prefetch could save:
//   <ms since start> <sync|async|bg> <method> <path or program> <ms taken>
// (`bg`: a call nobody waited for when it was sent, e.g. a read-only descriptor's close.)
// Opened before the fs patches are installed (a local path, appended to). Off by default.

const fs = require('fs');

const file = process.env.PI_BRIDGE_TRACE;
let fd = null;
if (file) {
  try {
    fd = fs.openSync(file, 'a');
  } catch (e) {
    process.stderr.write(`pi-bridge: PI_BRIDGE_TRACE: ${e.message}\n`);
  }
}
const t0 = process.hrtime.bigint();
const now = () => Number(process.hrtime.bigint() - t0) / 1e6;

// When a call is sent: its start time (0 when tracing is off).
function begin() {
  return fd === null ? 0 : now();
}

// When its answer is back.
function end(kind, method, params, started) {
  if (fd === null) return;
  const q = params || {};
  const what = q.path || q.from || (q.spawn && q.spawn.file) || '';
  try {
    fs.writeSync(fd, `${started.toFixed(1)} ${kind} ${method} ${what} ${(now() - started).toFixed(2)}\n`);
  } catch {
    fd = null;
  }
}

module.exports = { begin, end };

// PI_BRIDGE_HOPS=<local file>: per-hop timestamps of every blocking call (protocol/src/hops.rs),
// `<id> <hop> <ns>` lines, ns on CLOCK_MONOTONIC (process.hrtime.bigint(), the clock pii and the
// agent stamp with). The main thread stamps m_post (the request handed to the helper), m_got (its
// answer taken) and m_ret (the call returns); the helper h_recv, h_write (encoded, about to be
// written to pii's socket), h_data (an answer's bytes arrived) and h_post (parsed, about to be
// handed over). Write stamps, here as in pii and the agent, are taken just before the write. Kept in memory and
// appended in batches (the helper: at most 20 ms after a stamp; the main thread at exit), so
// recording costs no write on the call's path. Off by default: one check of a constant.
const hopsFile = process.env.PI_BRIDGE_HOPS || null;

// A recorder for one thread; `file` is PI_BRIDGE_HOPS (the helper gets it in workerData: its
// environment is empty). `flushAfterMs`: write this long after the first unwritten stamp
// (null: only at exit and every 4096 stamps).
function hops(file, flushAfterMs) {
  if (!file) return null;
  let out; // opened now, before the fs patches (a local path, appended to)
  try {
    out = fs.openSync(file, 'a');
  } catch (e) {
    process.stderr.write(`pi-bridge: PI_BRIDGE_HOPS: ${e.message}\n`);
    return null;
  }
  let lines = [];
  let timer = null;
  const flush = () => {
    timer = null;
    if (!lines.length) return;
    const text = lines.join('');
    lines = [];
    try {
      fs.writeSync(out, text);
    } catch (e) {
      process.stderr.write(`pi-bridge: PI_BRIDGE_HOPS: ${e.message}\n`);
    }
  };
  process.on('exit', flush);
  return {
    stamp(id, hop, ns) {
      lines.push(`${id} ${hop} ${ns === undefined ? process.hrtime.bigint() : ns}\n`);
      if (lines.length >= 4096) flush();
      else if (flushAfterMs !== null && timer === null) {
        timer = setTimeout(flush, flushAfterMs);
        timer.unref();
      }
    },
    flush,
  };
}

module.exports.hopsFile = hopsFile;
module.exports.hops = hops;
