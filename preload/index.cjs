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
  let s;
  try {
    s = { token, ...JSON.parse(raw) };
  } catch (e) {
    s = { error: e.message };
  }
  // Without the allowlist or the gate the bridge cannot tell what stays here: never run half
  // bridged (that would be the laptop's disk for everything).
  const gate = (g) => g && Array.isArray(g.configDirs) && Array.isArray(g.hidden) && Array.isArray(g.settingsKeys) && typeof g.settingsFile === 'string';
  const ok = Array.isArray(s.local) && s.local.every((l) => l && typeof l.path === 'string' && l.path.startsWith('/') && typeof l.kind === 'string') && (s.trustProject === true || gate(s.gate));
  if (!ok) {
    process.stderr.write(`pi-bridge: PII_SESSION is malformed or from another pii (${s.error || 'no local allowlist or trust gate'}); refusing to start\n`);
    process.exit(70);
  }
  return s;
}

function installCwd(route, sync) {
  const realChdir = process.chdir;
  process.cwd = function cwd() {
    return route.cwd();
  };
  // The cwd is always the remote's: a directory that stays local is refused (a local cwd would
  // make relative paths and every process local).
  process.chdir = function chdir(directory) {
    const abs = route.absoluteOf(directory);
    if (abs === null) return Reflect.apply(realChdir, this, arguments); // Node rejects it
    if (route.localEntry(abs)) {
      const { fsError } = require('./errors.cjs');
      throw fsError({ code: 'EACCES', syscall: 'chdir', path: process.cwd(), dest: String(route.toPathString(directory)), detail: 'pi-bridge: a local directory cannot be the cwd' });
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
function fetchInfo(sync) {
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
    require('./cache.cjs').setRoot(root, info.facts.uid);
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
    route.configure({ local: session.local, routes: session.routes, cwd: session.cwd, realCwd: process.cwd });
    require('./cache.cjs').setRoot(session.cwd);
  } else {
    route.configure({
      local: session.local,
      realCwd: process.cwd,
      pending: () => fetchInfo(sync),
    });
    // Warm up: the helper thread starts and its connection is made (the reply waits in pii
    // until the session is up) while node goes on loading; the first real call finds it ready.
    sync.post('session.info', {});
  }
  installCwd(route, sync);
  const { OPS } = require('./fsops.cjs');
  // Before the fs patches: the gate wraps the operations they are made of.
  trust.install(session, OPS);
  require('./fs.cjs').install();
  require('./boundary.cjs').install(require('fs'), require('fs/promises'), OPS);
  trust.installWatch(require('fs'), require('fs/promises'));
  childProcess.install();
  require('module').syncBuiltinESMExports();
}

main();
