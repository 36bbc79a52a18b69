'use strict';
// The probe project: text, binary (ff 00 80 fe), a 5 MB file, an executable, a symlink, a tree.
const fs = require('fs');
const path = require('path');
module.exports = function populate(dir) {
  fs.writeFileSync(path.join(dir, '.pii-probe-project'), ''); // the probes refuse to run elsewhere
  fs.writeFileSync(path.join(dir, 'a.txt'), 'hello\n');
  fs.writeFileSync(path.join(dir, 'bin.dat'), Buffer.from([0xff, 0x00, 0x80, 0xfe, 0x41]));
  const big = Buffer.alloc(5 * 1024 * 1024 + 123);
  for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
  fs.writeFileSync(path.join(dir, 'big.dat'), big);
  fs.writeFileSync(path.join(dir, 'run.sh'), '#!/bin/sh\necho run\n', { mode: 0o755 });
  fs.chmodSync(path.join(dir, 'run.sh'), 0o755);
  fs.symlinkSync('a.txt', path.join(dir, 'link'));
  fs.mkdirSync(path.join(dir, 'sub', 'deep'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'sub', 'one.txt'), '1');
  fs.writeFileSync(path.join(dir, 'sub', 'deep', 'two.txt'), '2');
};
