'use strict';
// `pi-bridge-bench --only hops`: N blocking statSync calls of one path, run under pii with
// PI_BRIDGE_CACHE=0 (each a round trip) and PI_BRIDGE_HOPS (each hop stamped). Args: path, N.
const fs = require('fs');
const [file, n] = [process.argv[2], Number(process.argv[3])];
for (let i = 0; i < 20; i++) fs.statSync(file); // warm-up: the helper, its connection, the JIT
const t = [];
for (let i = 0; i < n; i++) {
  const t0 = process.hrtime.bigint();
  fs.statSync(file);
  t.push(Number(process.hrtime.bigint() - t0) / 1e6);
}
t.sort((a, b) => a - b);
process.stdout.write(`HOPS-DONE ${n} median ${t[Math.floor(n / 2)].toFixed(3)} ms\n`);
// The helper appends its stamps 20 ms after its last batch started: let it.
setTimeout(() => {}, 100);
