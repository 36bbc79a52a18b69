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
}

function main() {
  if (!isMainThread) return;
  const session = readSession();
  if (!session) return;
  const route = require('./route.cjs');
  const sync = require('./sync.cjs');
  const rpc = require('./rpc.cjs');
  const childProcess = require('./child_process.cjs');
  childProcess.setStartupEnv(process.env); // after deleting PII_*: the caller's baseline
  route.configure({ routes: session.routes, cwd: session.cwd, realCwd: process.cwd });
  sync.configure(session);
  rpc.configure(session);
  installCwd(route, sync);
  require('./trust.cjs').install(session, require('./fsops.cjs').OPS); // before fs patches
  require('./fs.cjs').install();
  childProcess.install();
  require('module').syncBuiltinESMExports();
}

main();
