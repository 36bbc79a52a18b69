'use strict';
// Loaded with --require BEFORE the preload (preload/test/api.test.cjs): keeps the pristine
// members the preload may replace, and adds a function member no table knows, as a new Node
// release would.
const fs = require('fs');
const fsp = require('fs/promises');
const cp = require('child_process');
globalThis.__pristine = {
  fs: { ...fs, 'realpath.native': fs.realpath.native, 'realpathSync.native': fs.realpathSync.native },
  fsp: { ...fsp },
  child_process: { ...cp },
  process: { cwd: process.cwd, chdir: process.chdir, kill: process.kill, loadEnvFile: process.loadEnvFile },
};
fs.piBridgeProbeNewSync = function piBridgeProbeNewSync(p) {
  return `local: ${p}`;
};
