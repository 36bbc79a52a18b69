'use strict';
// Differential tests through the real bridge: the same probe script run plainly with node on one
// copy of a project and under `pii --local` on an identical copy must print identical reports.
// A missing pii binary FAILS these tests (harness.piiBin throws); it never skips them.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./support/harness.cjs');
const populate = require('./scripts/populate.cjs');

test('pii binary is present', () => {
  assert.ok(fs.existsSync(h.piiBin()));
});

// The conformance suite (fixtures/conformance: one case table, also run over ssh by
// tests/tests/conformance.rs) in --local mode: plain node vs pii --local on identical copies.
test('conformance through pii --local: every case as plain node', () => {
  h.piiBin();
  const conf = path.resolve(h.PRELOAD_DIR, '..', 'fixtures', 'conformance');
  const t = h.twinProjects(require(path.join(conf, 'populate.cjs')));
  try {
    const plain = h.runPlain(t.plain, path.join(conf, 'run.cjs'));
    const bridged = h.runPii(t.bridged, path.join(conf, 'run.cjs'));
    assert.strictEqual(plain.status, 0, plain.stderr);
    assert.strictEqual(bridged.status, 0, `pii exited ${bridged.status}: ${bridged.stderr}`);
    const { parse, compare } = require(path.join(conf, 'compare.cjs'));
    fs.writeFileSync(path.join(t.root, 'plain.out'), plain.stdout);
    fs.writeFileSync(path.join(t.root, 'bridged.out'), bridged.stdout);
    const r = compare('local', parse(path.join(t.root, 'plain.out')), parse(path.join(t.root, 'bridged.out')));
    const line = `conformance: ${r.passed + r.expected.length} passed, ${r.failed.length} failed`;
    process.stdout.write(`# ${line}\n`);
    assert.deepStrictEqual(r.failed, [], line);
  } finally {
    t.cleanup();
  }
});

test('statSync round trip cost through pii --local (reported)', () => {
  h.piiBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-bench-'));
  fs.writeFileSync(path.join(dir, 'a.txt'), 'x');
  const script = path.join(dir, 'bench.cjs');
  fs.writeFileSync(
    script,
    `const fs = require('fs'); fs.statSync('a.txt');
     const N = 2000, t0 = process.hrtime.bigint();
     for (let i = 0; i < N; i++) fs.statSync('a.txt');
     console.log(JSON.stringify({ usPerCall: Number(process.hrtime.bigint() - t0) / N / 1000 }));`,
  );
  try {
    const r = h.runPii(dir, script);
    assert.strictEqual(r.status, 0, r.stderr);
    const { usPerCall } = JSON.parse(r.stdout);
    test.diagnostic?.(`statSync through pii --local: ${usPerCall.toFixed(1)} µs per call`);
    process.stdout.write(`# statSync through pii --local: ${usPerCall.toFixed(1)} us per call\n`);
    assert.ok(usPerCall < 5000, `${usPerCall} µs per statSync`);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('watch, watchFile, chdir and sandbox refusal through pii --local', () => {
  h.piiBin();
  const t = h.twinProjects(populate);
  try {
    const r = h.runPii(t.bridged, path.join(__dirname, 'scripts', 'misc-probe.cjs'));
    assert.strictEqual(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.deepStrictEqual(out.watch, ['rename', 'new.txt']);
    assert.deepStrictEqual(out.watchMissing && [out.watchMissing.code, out.watchMissing.syscall], ['ENOENT', 'watch']);
    assert.deepStrictEqual(out.watchFile, [14, 6]);
    assert.deepStrictEqual(out.chdir, ['sub', '1']);
    assert.strictEqual(out.chdirMissing, "ENOENT: no such file or directory, chdir '<cwd>/sub' -> 'nope'");
    assert.strictEqual(out.escape.code, 'EACCES');
    assert.strictEqual(out.escape.errno, -os.constants.errno.EACCES);
    assert.strictEqual(out.escape.mentionsBridge, true);
  } finally {
    t.cleanup();
  }
});

test('descriptors, handles and streams never open what the trust layer hides (pii --local)', () => {
  h.piiBin();
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-hidden-'));
  fs.mkdirSync(path.join(dir, '.pi', 'extensions'), { recursive: true });
  fs.writeFileSync(path.join(dir, '.pi', 'extensions', 'x.ts'), 'run me');
  const script = path.join(dir, 'probe.cjs');
  fs.writeFileSync(
    script,
    `const fs = require('fs');
     const p = '.pi/extensions/x.ts';
     const code = (f) => { try { f(); return 'opened'; } catch (e) { return e.code; } };
     const out = { openSync: code(() => fs.openSync(p, 'r')), openW: code(() => fs.openSync(p, 'r+')) };
     (async () => {
       out.fspOpen = await fs.promises.open(p).then(() => 'opened', (e) => e.code);
       out.stream = await new Promise((r) => fs.createReadStream(p).on('data', () => r('read')).on('error', (e) => r(e.code)));
       out.blob = await fs.openAsBlob(p).then(() => 'read', (e) => e.code);
       console.log(JSON.stringify(out));
     })();`,
  );
  try {
    const r = h.runPii(dir, script);
    assert.strictEqual(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout.trim().split('\n').pop());
    // openAsBlob fails as the running Node fails for a file it cannot open (Node < 24: an
    // argument error), never with the bytes.
    assert.ok(['ENOENT', 'ERR_INVALID_ARG_VALUE'].includes(out.blob), out.blob);
    delete out.blob;
    assert.deepStrictEqual(out, { openSync: 'ENOENT', openW: 'ENOENT', fspOpen: 'ENOENT', stream: 'ENOENT' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
