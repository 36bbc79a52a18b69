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
