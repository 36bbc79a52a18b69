#!/usr/bin/env node
// The `pii` command of the npm package pi-bridge. pii itself is a native binary in one package
// per platform (@pi-bridge/<platform>-<arch>, an optionalDependency whose os/cpu fields make
// npm install only this machine's); this file finds that package and runs its bin/pii. Nothing
// is downloaded at install time, so `--ignore-scripts` and offline mirrors work.
//
// Plain CommonJS for every Node of the test matrix (20 and up).
'use strict';

const path = require('path');

const self = require('../package.json');
const platforms = Object.keys(self.optionalDependencies || {});
const name = `@pi-bridge/${process.platform}-${process.arch}`;

function fail(message) {
  process.stderr.write(`pii: ${message}\n`);
  process.exit(1);
}

if (!platforms.includes(name)) {
  const known = platforms.map((p) => p.slice(p.indexOf('/') + 1)).join(', ');
  fail(`pi-bridge ${self.version} has no pii for ${process.platform}-${process.arch} (it has: ${known})`);
}

let manifest;
try {
  manifest = require.resolve(`${name}/package.json`);
} catch {
  fail(
    `the package ${name} is not installed, so there is no pii binary to run. npm leaves ` +
      'optional dependencies out with --omit=optional (or --no-optional), and a lock file ' +
      'written on another platform can lack it: reinstall with `npm install -g pi-bridge`.',
  );
}
const installed = require(manifest).version;
if (installed !== self.version) {
  // Each release's pii uploads only its own agent; a mixed install is never run.
  fail(
    `${name} is version ${installed} but pi-bridge is ${self.version}: ` +
      `reinstall with \`npm install -g pi-bridge@${self.version}\``,
  );
}
const bin = path.join(path.dirname(manifest), 'bin', 'pii');
const args = process.argv.slice(2);

// Node >= 22.15: become pii (execve), so the shell's job control, signals and exit status are
// pii's own and no idle node stays around. execve keeps SIGPIPE and SIGXFSZ ignored, as Node
// set them; pii (a Rust program) and the node running pi ignore both on their own anyway.
if (typeof process.execve === 'function') {
  try {
    process.execve(bin, [bin, ...args]);
  } catch (e) {
    fail(`cannot run ${bin}: ${e.message}`);
  }
}

// Older Node: pii as a child, with pii's own rules for a parent: SIGINT is ignored (the
// terminal sends it to pii too), SIGTERM and SIGHUP are passed on, and pii's exit status (or
// the signal that ended it) becomes ours.
const { spawn } = require('child_process');
const child = spawn(bin, args, { stdio: 'inherit' });
const forwarded = ['SIGTERM', 'SIGHUP'];
process.on('SIGINT', () => {});
for (const signal of forwarded) process.on(signal, () => child.kill(signal));
child.on('error', (e) => fail(`cannot run ${bin}: ${e.message}`));
child.on('exit', (code, signal) => {
  if (signal) {
    process.removeAllListeners(signal);
    process.kill(process.pid, signal);
    // A signal Node ignores (SIGPIPE) does not end us: exit as a shell reports it.
    setTimeout(() => process.exit(128 + (require('os').constants.signals[signal] || 0)), 200);
    return;
  }
  process.exit(code);
});
