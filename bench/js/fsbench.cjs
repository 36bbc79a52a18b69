'use strict';
// The Node side of the benchmark: runs the same fs/child_process operations wherever it is
// started (plain node on a local copy, node on an sshfs mount, or node under pii against the
// remote project) and prints one line `BENCH-RESULT <json>`: {name: [sample ms, …]}.
//   node fsbench.cjs <root> <iterations> <parts>
// <root> holds the generated layout (bench/gen.sh): f1k, d100/, big100m, big1g, gitrepo/.
// <parts> is a comma list of: meta, async, big, spawn, git, stream1g, spawn1g.

const fs = require('fs');
const fsp = require('fs/promises');
const path = require('path');
const { spawn } = require('child_process');

const [root, itersArg, partsArg] = process.argv.slice(2);
if (!root || !path.isAbsolute(root)) {
  process.stderr.write('usage: fsbench.cjs <absolute root> <iterations> <parts>\n');
  process.exit(2);
}
const N = Number(itersArg || 100);
const parts = new Set((partsArg || 'meta,async,spawn').split(','));
const out = {};
const now = () => Number(process.hrtime.bigint()) / 1e6;

function timeSync(name, n, fn) {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t = now();
    fn(i);
    xs.push(now() - t);
  }
  out[name] = xs;
}

async function timeAsync(name, n, fn) {
  const xs = [];
  for (let i = 0; i < n; i++) {
    const t = now();
    await fn(i);
    xs.push(now() - t);
  }
  out[name] = xs;
}

function run(cmd, args, cwd, onData) {
  return new Promise((resolve, reject) => {
    const c = spawn(cmd, args, { cwd, stdio: ['ignore', onData ? 'pipe' : 'ignore', 'ignore'] });
    if (onData) c.stdout.on('data', onData);
    c.on('error', reject);
    c.on('exit', (code) => resolve(code));
  });
}

const f1k = path.join(root, 'f1k');
const d100 = path.join(root, 'd100');
const entry = (i) => path.join(d100, String(i % 100).padStart(3, '0'));

async function main() {
  if (parts.has('meta')) {
    // First touch of 100 distinct paths (what a cache could not have seen), then repeats.
    timeSync('statSync distinct', 100, (i) => fs.statSync(entry(i)));
    timeSync('statSync', N, () => fs.statSync(f1k));
    timeSync('existsSync', N, () => fs.existsSync(f1k));
    timeSync('existsSync missing', N, () => fs.existsSync(f1k + '.missing'));
    timeSync('readFileSync 1KB', N, () => fs.readFileSync(f1k));
    timeSync('readdirSync 100', N, () => {
      if (fs.readdirSync(d100).length !== 100) throw new Error('d100 does not hold 100 entries');
    });
  }
  if (parts.has('async')) {
    await timeAsync('stat async', N, () => fsp.stat(f1k));
    await timeAsync('access async', N, () => fsp.access(f1k));
    await timeAsync('readFile 1KB async', N, () => fsp.readFile(f1k));
    await timeAsync('readdir 100 async', N, () => fsp.readdir(d100));
  }
  if (parts.has('big')) {
    await timeAsync('readFile 100MB', 3, async () => {
      const b = await fsp.readFile(path.join(root, 'big100m'));
      if (b.length !== 100 * 1024 * 1024) throw new Error(`big100m: ${b.length} bytes`);
    });
  }
  if (parts.has('spawn')) {
    await timeAsync('spawn true', Math.min(N, 30), async () => {
      const code = await run('true', [], root);
      if (code !== 0) throw new Error(`true exited ${code}`);
    });
  }
  if (parts.has('git')) {
    await timeAsync('git status', 3, async () => { // the median of 3: one sample was noisy
      const code = await run('git', ['-c', 'safe.directory=*', 'status', '--porcelain'], path.join(root, 'gitrepo'));
      if (code !== 0) throw new Error(`git status exited ${code}`);
    });
  }
  if (parts.has('stream1g')) {
    await timeAsync('read 1GB stream', 1, () => new Promise((resolve, reject) => {
      let n = 0;
      fs.createReadStream(path.join(root, 'big1g'))
        .on('data', (c) => { n += c.length; })
        .on('error', reject)
        .on('end', () => (n === 1 << 30 ? resolve() : reject(new Error(`read ${n} bytes`))));
    }));
  }
  if (parts.has('spawn1g')) {
    await timeAsync('spawn 1GB stdout', 1, async () => {
      let n = 0;
      const code = await run('head', ['-c', String(1 << 30), '/dev/zero'], root, (c) => { n += c.length; });
      // 'exit' may come before the last 'data': give the stream its end.
      await new Promise((r) => setTimeout(r, 200));
      if (code !== 0 || n !== 1 << 30) throw new Error(`head: code ${code}, ${n} bytes`);
    });
  }
  process.stdout.write('BENCH-RESULT ' + JSON.stringify(out) + '\n');
}

main().catch((e) => {
  process.stderr.write(`fsbench: ${e.stack || e}\n`);
  process.exit(1);
});
