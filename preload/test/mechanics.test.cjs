'use strict';
// The preload's machinery against the fake endpoint (support/fake-endpoint.cjs): the whole probe
// reports must equal plain node's, a dead endpoint must fail fast with EIO, and non-routed calls
// and worker threads must be untouched.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const cp = require('child_process');
const h = require('./support/harness.cjs');
const populate = require('./scripts/populate.cjs');

async function differential(script) {
  const t = h.twinProjects(populate);
  try {
    const plain = h.runPlain(t.plain, script);
    const bridged = await h.runFake(t.bridged, script);
    assert.strictEqual(plain.status, 0, plain.stderr);
    assert.strictEqual(bridged.status, 0, bridged.stderr);
    assert.deepStrictEqual(JSON.parse(bridged.stdout), JSON.parse(plain.stdout));
  } finally {
    t.cleanup();
  }
}

test('fs probe: same report as plain node', () => differential(path.join(__dirname, 'scripts', 'fs-probe.cjs')));
test('child_process probe: same report as plain node', () => differential(path.join(__dirname, 'scripts', 'cp-probe.cjs')));

function runWithSession(session, code) {
  const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'mech-')), 's.cjs');
  fs.writeFileSync(file, code);
  return cp.spawnSync(process.execPath, ['--require', path.join(h.PRELOAD_DIR, 'index.cjs'), file], {
    env: { ...process.env, PII_TOKEN: 'ab', PII_SESSION: JSON.stringify({ trustProject: true, local: h.localFor(path.dirname(file)), ...session }) },
    encoding: 'utf8',
    timeout: 20000,
  });
}

test('a dead endpoint fails fast with EIO; existsSync stays false; local paths work', async () => {
  const srv = require('net').createServer((s) => s.destroy());
  await new Promise((r) => srv.listen(0, '127.0.0.1', r));
  const port = srv.address().port;
  srv.close();
  const r = runWithSession(
    { endpoint: `127.0.0.1:${port}`, cwd: '/remote/p', routes: ['/remote/p'], remotePath: '/usr/bin', remoteHome: '/h', rpcTimeoutMs: 30000 },
    `const fs = require('fs');
     const t0 = Date.now();
     let e1; try { fs.statSync('x'); } catch (e) { e1 = e; }
     let e2; try { fs.readFileSync('/remote/p/y'); } catch (e) { e2 = e; }
     const out = { code: e1.code, msg: e1.message, code2: e2.code, exists: fs.existsSync('z'), ms: Date.now() - t0,
       cwd: process.cwd(), local: fs.readFileSync(__filename, 'utf8').length > 0, env: [process.env.PII_TOKEN, process.env.PII_SESSION] };
     fs.promises.stat('q').catch((e) => { out.async = e.code; console.log(JSON.stringify(out)); });`,
  );
  assert.strictEqual(r.status, 0, r.stderr);
  const out = JSON.parse(r.stdout);
  assert.strictEqual(out.code, 'EIO');
  assert.match(out.msg, /pi-bridge/);
  assert.strictEqual(out.code2, 'EIO');
  assert.strictEqual(out.exists, false);
  assert.ok(out.ms < 5000, `took ${out.ms} ms`);
  assert.strictEqual(out.cwd, '/remote/p');
  assert.strictEqual(out.local, true);
  assert.deepStrictEqual(out.env, [null, null]);
  assert.strictEqual(out.async, 'EIO');
});

test('an answer from pii that is not JSON fails the blocking call with EIO, the next call still works', async () => {
  // An endpoint (its own process: the preload's run blocks this one) that answers the first
  // numeric-id call with a broken line shaped like an answer, and the rest properly.
  const server = cp.spawn(process.execPath, ['-e', `
    let n = 0;
    require('net').createServer((s) => {
      let buf = '';
      s.on('data', (d) => {
        buf += d;
        let i;
        while ((i = buf.indexOf('\\n')) >= 0) {
          const line = buf.slice(0, i); buf = buf.slice(i + 1);
          if (!line.startsWith('{')) continue;
          const m = JSON.parse(line);
          if (typeof m.id !== 'number') continue;
          s.write(n++ === 0 ? '{"jsonrpc":"2.0","id":' + m.id + ',"result":{"size":\\n'
            : JSON.stringify({ jsonrpc: '2.0', id: m.id, error: { code: -32000, message: 'no', data: { code: 'ENOENT', syscall: 'stat', path: m.params.path } } }) + '\\n');
        }
      });
    }).listen(0, '127.0.0.1', function () { console.log(this.address().port); });`], { stdio: ['ignore', 'pipe', 'inherit'] });
  try {
    const port = await new Promise((resolve) => server.stdout.once('data', (d) => resolve(Number(String(d)))));
    const r = runWithSession(
      { endpoint: `127.0.0.1:${port}`, cwd: '/remote/p', routes: ['/remote/p'], remotePath: '/usr/bin', remoteHome: '/h', rpcTimeoutMs: 30000 },
      `const fs = require('fs');
       const out = {};
       try { fs.statSync('x'); } catch (e) { out.first = [e.code, e.message]; }
       try { fs.statSync('y'); } catch (e) { out.second = [e.code, e.syscall]; }
       console.log(JSON.stringify(out));`,
    );
    assert.strictEqual(r.status, 0, r.stderr);
    const out = JSON.parse(r.stdout);
    assert.strictEqual(out.first[0], 'EIO');
    assert.match(out.first[1], /pii sent an answer that is not JSON/);
    assert.deepStrictEqual(out.second, ['ENOENT', 'stat']);
  } finally {
    server.kill();
  }
});

test('without PII_* the preload does nothing', () => {
  const r = cp.spawnSync(process.execPath, ['--require', path.join(h.PRELOAD_DIR, 'index.cjs'), '-e', 'console.log(process.cwd(), require("fs").existsSync("/"))'], { encoding: 'utf8', cwd: os.tmpdir(), env: { ...process.env, PII_TOKEN: '', PII_SESSION: '' } });
  assert.strictEqual(r.stdout.trim(), `${fs.realpathSync(os.tmpdir())} true`);
});

test('worker threads of the program are untouched and the process exits', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mech-w-'));
  fs.writeFileSync(path.join(dir, 'f.txt'), 'remote');
  const script = path.join(dir, 'w.cjs');
  fs.writeFileSync(
    script,
    `if (process.env.PII_PROBE !== '1') process.exit(0);
     const { Worker } = require('worker_threads');
     const fs = require('fs');
     console.log(fs.readFileSync('f.txt', 'utf8'));
     new Worker('require("worker_threads").parentPort.postMessage(process.cwd())', { eval: true }).on('message', (m) => console.log(m === process.cwd() ? 'worker shares the virtual cwd' : 'worker has the real cwd, unpatched'));`,
  );
  const r = await h.runFake(dir, script);
  assert.strictEqual(r.status, 0, r.stderr);
  assert.deepStrictEqual(r.stdout.trim().split('\n'), ['remote', 'worker has the real cwd, unpatched']);
});

test('ESM named, namespace and default imports see the patches', async () => {
  const t = h.twinProjects(populate);
  try {
    const r = await h.runFake(t.bridged, path.join(__dirname, 'scripts', 'esm-probe.mjs'), [], { EXPECT_CWD: t.bridged });
    assert.strictEqual(r.status, 0, r.stderr);
    assert.deepStrictEqual(JSON.parse(r.stdout), { named: 'hello\n', exists: true, ns: '1', dflt: 6, prom: 'hello\n', exec: 'hello\n', cwd: true });
  } finally {
    t.cleanup();
  }
});

test('process.kill(-pid) from an exit handler reaches the remote process', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'mech-k-'));
  const script = path.join(dir, 'k.cjs');
  const marker = `${31 + Math.random()}`.slice(0, 8);
  fs.writeFileSync(
    script,
    `if (process.env.PII_PROBE !== '1') process.exit(0);
     const c = require('child_process').spawn('sleep', ['${marker}'], { detached: true, stdio: 'ignore' });
     process.on('exit', () => process.kill(-c.pid, 'SIGKILL'));
     c.on('spawn', () => process.exit(0));`,
  );
  const r = await h.runFake(dir, script);
  assert.strictEqual(r.status, 0, r.stderr);
  await new Promise((res) => setTimeout(res, 200));
  const left = cp.spawnSync('pgrep', ['-f', `sleep ${marker}`], { encoding: 'utf8' }).stdout.trim();
  assert.strictEqual(left, '', 'the remote sleep survived');
});
