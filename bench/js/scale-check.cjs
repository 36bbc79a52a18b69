'use strict';
// `pi-bridge-bench --only scale`, under a lowered fs.inotify.max_user_watches: for each directory
// named (relative to the project root, argv[2]), list and stat it, change it with a child process
// (on the remote through pii) and with this process's own calls, and compare every answer with
// the remote's own `ls -A` after each step. Prints `SCALE-CHECK right …` or `SCALE-CHECK WRONG …`,
// with how many listings of each directory the cache answered (0: it degraded to round trips).
const fs = require('fs');
const path = require('path');
const { execFileSync } = require('child_process');

const root = process.argv[2];
const counters = () => globalThis[Symbol.for('pi-bridge.cache')] || { listHits: 0 };
const truth = (d) => execFileSync('/bin/sh', ['-c', 'ls -A "$1"', 'sh', d], { encoding: 'utf8' }).split('\n').filter(Boolean).sort();
const wrong = [];
const seen = [];
for (const rel of process.argv.slice(3)) {
  const d = path.join(root, rel);
  const h0 = counters().listHits;
  const check = (what) => {
    const got = fs.readdirSync(d).sort();
    const again = fs.readdirSync(d).sort();
    const want = truth(d);
    if (JSON.stringify(got) !== JSON.stringify(want) || JSON.stringify(again) !== JSON.stringify(want)) wrong.push(`${rel} ${what}: ${got.length}/${again.length} entries, remote has ${want.length}`);
  };
  check('first');
  fs.statSync(d);
  execFileSync('/bin/sh', ['-c', 'touch "$1/zz-new"', 'sh', d]);
  check('after a child created a file');
  if (!fs.existsSync(path.join(d, 'zz-new'))) wrong.push(`${rel}: zz-new missing after its creation`);
  execFileSync('/bin/sh', ['-c', 'rm "$1/zz-new"', 'sh', d]);
  check('after a child removed it');
  if (fs.existsSync(path.join(d, 'zz-new'))) wrong.push(`${rel}: zz-new still there after its removal`);
  fs.mkdirSync(path.join(d, 'zz-dir'));
  check('after mkdir');
  fs.rmdirSync(path.join(d, 'zz-dir'));
  check('after rmdir');
  seen.push(`${rel}: ${counters().listHits - h0} of 10 listings from the cache`);
}
console.log(`SCALE-CHECK ${wrong.length ? 'WRONG' : 'right'} (${seen.join('; ')})${wrong.length ? ': ' + wrong.join('; ') : ''}`);
