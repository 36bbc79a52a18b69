'use strict';
// Entry point: `node --require <dir>/index.cjs <pi cli.js> …`, embedded into pii.
// Reads and deletes PII_TOKEN / PII_SESSION first thing; without them (or in a worker thread,
// where this file also runs) it does nothing. Patches are installed before any ESM code imports
// fs or child_process, and syncBuiltinESMExports() covers anything imported earlier.

const { isMainThread } = require('worker_threads');

function readSession() {
  const token = process.env.PII_TOKEN;
  const raw = process.env.PII_SESSION;
  delete process.env.PII_TOKEN;
  delete process.env.PII_SESSION;
  if (!token || !raw) return null;
  try {
    return { token, ...JSON.parse(raw) };
  } catch (e) {
    process.stderr.write(`pi-bridge: ignoring malformed PII_SESSION (${e.message})\n`);
    return null;
  }
}

function installCwd(route, sync) {
  const realChdir = process.chdir;
  process.cwd = function cwd() {
    return route.cwd();
  };
  process.chdir = function chdir(directory) {
    const abs = route.routed(directory);
    if (!abs) {
      Reflect.apply(realChdir, this, arguments);
      route.setCwd(null); // back to the real cwd
      return;
    }
    let st;
    try {
      st = sync.call('fs.stat', { path: abs, lstat: false });
    } catch (err) {
      const { WIRE, fsError } = require('./errors.cjs');
      const w = err[WIRE];
      throw w ? fsError({ ...w, syscall: 'chdir', path: process.cwd(), dest: String(directory) }) : err;
    }
    if ((st.mode & 0o170000) !== 0o040000) {
      const { fsError } = require('./errors.cjs');
      throw fsError({ code: 'ENOTDIR', syscall: 'chdir', path: process.cwd(), dest: String(directory) });
    }
    route.setCwd(abs);
  };
  // process.loadEnvFile(path = '.env'): a routed file is read through the bridge and parsed
  // with Node's own parser; variables already set are kept, as Node keeps them.
  const realLoadEnvFile = process.loadEnvFile;
  if (typeof realLoadEnvFile === 'function') {
    process.loadEnvFile = function loadEnvFile(path) {
      const p = path === undefined ? '.env' : path;
      if (!route.routed(p)) return Reflect.apply(realLoadEnvFile, this, arguments);
      const parsed = require('util').parseEnv(require('fs').readFileSync(p, 'utf8'));
      for (const [k, v] of Object.entries(parsed)) if (!Object.prototype.hasOwnProperty.call(process.env, k)) process.env[k] = v;
    };
  }
}

// The remote facts, from pii's `session.info`: it answers once the ssh connection and the
// handshake are done (node starts while they happen). A failed connect answers with the reason;
// pii prints it and exits non-zero, so this process just ends.
function fetchInfo(sync, trust, trustProject) {
  for (;;) {
    let info;
    try {
      info = sync.call('session.info', {});
    } catch (err) {
      if (err && err.code === 'ETIMEDOUT') continue; // still connecting (a first install is slow)
      if (!/\(rpc -32004\)$/.test(String(err && err.message))) {
        process.stderr.write(`${(err && err.message) || err}\n`);
      }
      process.exit(1);
    }
    const root = info.facts.projectRoot;
    if (!trustProject) trust.setRoot(root);
    require('./cache.cjs').setRoot(root);
    return { routes: [info.facts.sandboxRoot], cwd: root };
  }
}

function main() {
  if (!isMainThread) return;
  const session = readSession();
  if (!session) return;
  const route = require('./route.cjs');
  const sync = require('./sync.cjs');
  const rpc = require('./rpc.cjs');
  const childProcess = require('./child_process.cjs');
  const trust = require('./trust.cjs');
  childProcess.setStartupEnv(process.env); // after deleting PII_*: the caller's baseline
  sync.configure(session);
  rpc.configure(session);
  const known = Array.isArray(session.routes) && typeof session.cwd === 'string';
  if (known) {
    route.configure({ routes: session.routes, cwd: session.cwd, realCwd: process.cwd });
    require('./cache.cjs').setRoot(session.cwd);
  } else {
    route.configure({
      realCwd: process.cwd,
      pending: () => fetchInfo(sync, trust, session.trustProject),
    });
    // Warm up: the helper thread starts and its connection is made (the reply waits in pii
    // until the session is up) while node goes on loading; the first real call finds it ready.
    sync.post('session.info', {});
  }
  installCwd(route, sync);
  // Before the fs patches. Until the project root is known, the hidden paths are set by
  // fetchInfo (no remote call can happen before it: every one needs the routes).
  trust.install(known ? session : { ...session, cwd: '/' }, require('./fsops.cjs').OPS);
  if (!known && !session.trustProject) trust.state.hidden = trust.state.settings = null;
  require('./fs.cjs').install();
  childProcess.install();
  require('module').syncBuiltinESMExports();
}

main();
