'use strict';
// Running a script three ways: plainly with node in DIR, under the real `pii --local DIR`, and
// (for mechanics tests) under the preload with the fake endpoint. The pii binary is resolved in
// ONE place: $PII_BIN, else ../target/debug/pii relative to preload/. A missing binary is an
// error, never a skip.

const fs = require('fs');
const os = require('os');
const path = require('path');
const cp = require('child_process');
const crypto = require('crypto');

const PRELOAD_DIR = path.resolve(__dirname, '..', '..');

function piiBin() {
  const bin = process.env.PII_BIN || path.resolve(PRELOAD_DIR, '..', 'target', 'debug', 'pii');
  if (!fs.existsSync(bin)) throw new Error(`pii binary not found at ${bin} (build it with cargo build, or set PII_BIN)`);
  return bin;
}

function result(r) {
  return { status: r.status, signal: r.signal, stdout: r.stdout.toString(), stderr: r.stderr.toString() };
}

function runPlain(dir, script, args = [], env = {}) {
  return result(cp.spawnSync(process.execPath, [script, ...args], { cwd: dir, env: { ...process.env, PII_PROBE: '1', ...env }, timeout: 60000 }));
}

// pii keeps the directory of the script it runs local (its code); a project inside it would be
// refused. A script written next to its project runs from a copy in a directory of its own:
// {script, done()}.
function ownScript(dir, script) {
  const real = fs.realpathSync(dir);
  const sdir = fs.realpathSync(path.dirname(script));
  if (real !== sdir && !real.startsWith(`${sdir}/`)) return { script, done: () => {} };
  const own = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-script-'));
  const copy = path.join(own, path.basename(script));
  fs.copyFileSync(script, copy);
  return { script: copy, done: () => fs.rmSync(own, { recursive: true, force: true }) };
}

function runPii(dir, script, args = [], env = {}) {
  const s = ownScript(dir, script);
  try {
    const r = cp.spawnSync(piiBin(), ['--local', dir, '--pi', s.script, '--', ...args], { cwd: os.tmpdir(), env: { ...process.env, PII_PROBE: '1', ...env }, timeout: 60000 });
    return result(r);
  } finally {
    s.done();
  }
}

// The local allowlist a session made by hand needs (pii computes the real one): the preload's
// own files (it requires some lazily), node's prefix, the given directories (the script's, the
// scratch dir) and the terminal. Everything else is the fake remote's.
function localFor(...dirs) {
  const code = [PRELOAD_DIR, path.resolve(path.dirname(process.execPath), '..'), ...dirs].map((d) => ({ path: fs.realpathSync(d), kind: 'code', why: 'test' }));
  const devices = ['/dev/null', '/dev/tty', '/dev/stdin', '/dev/stdout', '/dev/stderr', '/dev/pts'].map((d) => ({ path: d, kind: 'device', why: 'the terminal' }));
  return [...code, ...devices];
}

// Starts the fake endpoint; returns {session, stop()}.
async function startFake(dir) {
  const token = crypto.randomBytes(32).toString('hex');
  const child = cp.spawn(process.execPath, [path.join(__dirname, 'fake-endpoint.cjs'), token], { stdio: ['pipe', 'pipe', 'inherit'] });
  const port = await new Promise((resolve, reject) => {
    child.stdout.once('data', (d) => resolve(Number(String(d).trim())));
    child.once('error', reject);
  });
  const real = fs.realpathSync(dir);
  const session = { endpoint: `127.0.0.1:${port}`, cwd: real, routes: [real], remotePath: process.env.PATH, remoteHome: os.homedir(), rpcTimeoutMs: 10000, trustProject: true, local: [] };
  return { token, session, stop: () => child.stdin.end() };
}

// Runs `script` under the preload against the fake endpoint for `dir`, from a scratch cwd.
// `before`: modules to --require ahead of the preload.
async function runFake(dir, script, args = [], env = {}, before = []) {
  const fake = await startFake(dir);
  const scratch = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-scratch-'));
  const own = ownScript(dir, script);
  script = own.script;
  // node's temp dir is a local one, as under pii (shapes.cjs probes Node in it).
  const tmp = path.join(scratch, 'tmp');
  fs.mkdirSync(tmp);
  try {
    const r = await new Promise((resolve) => {
      const c = cp.spawn(process.execPath, [...before.flatMap((m) => ['--require', m]), '--require', path.join(PRELOAD_DIR, 'index.cjs'), script, ...args], {
        cwd: scratch,
        env: { ...process.env, TMPDIR: tmp, PII_PROBE: '1', ...env, PII_TOKEN: fake.token, PII_SESSION: JSON.stringify({ ...fake.session, local: [{ path: fs.realpathSync(tmp), kind: 'temp', why: 'temp' }, ...localFor(scratch, path.dirname(script))] }) },
      });
      const out = [];
      const err = [];
      c.stdout.on('data', (d) => out.push(d));
      c.stderr.on('data', (d) => err.push(d));
      c.on('close', (status, signal) => resolve({ status, signal, stdout: Buffer.concat(out), stderr: Buffer.concat(err) }));
    });
    return result(r);
  } finally {
    fake.stop();
    own.done();
    fs.rmSync(scratch, { recursive: true, force: true });
  }
}

// Two identical copies of a project built by `populate(dir)`.
function twinProjects(populate) {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-diff-'));
  const a = path.join(root, 'plain');
  const b = path.join(root, 'bridged');
  for (const d of [a, b]) {
    fs.mkdirSync(d);
    populate(d);
  }
  return { root, plain: fs.realpathSync(a), bridged: fs.realpathSync(b), cleanup: () => fs.rmSync(root, { recursive: true, force: true }) };
}

module.exports = { PRELOAD_DIR, piiBin, runPlain, runPii, runFake, startFake, twinProjects, localFor };
