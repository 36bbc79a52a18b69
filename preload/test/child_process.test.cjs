'use strict';
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const route = require('../route.cjs');
const { envDelta, resolveShell, remoteProgram, stdioModes } = require('../child_process.cjs');

test('env delta: only what the caller changed, minus machine-specific names', () => {
  const base = { HOME: '/home/me', PATH: '/usr/bin', LANG: 'C', KEEP: '1', GONE: 'x', SSH_AUTH_SOCK: 's' };
  const env = { HOME: '/other', PATH: '/agent/bin:/usr/bin', LANG: 'C', KEEP: '2', NEW: 'n', XDG_RUNTIME_DIR: '/run', PII_TOKEN: 't', NODE_OPTIONS: '--x', TERM_PROGRAM_VERSION: '1', UNDEF: undefined };
  assert.deepStrictEqual(envDelta(env, base), { env: { KEEP: '2', NEW: 'n' }, unset: ['GONE'] });
});

test('env delta of an unchanged env is empty', () => {
  const base = { A: '1', HOME: '/h' };
  assert.deepStrictEqual(envDelta({ ...base }, base), { env: {}, unset: [] });
});

test('shell resolution follows Node', () => {
  assert.deepStrictEqual(resolveShell('ls', ['-l', 'x'], { shell: true }).file, '/bin/sh');
  assert.deepStrictEqual(resolveShell('ls', ['-l', 'x'], { shell: true }).args, ['-c', 'ls -l x']);
  assert.deepStrictEqual(resolveShell('echo hi', [], { shell: '/bin/bash' }), { file: '/bin/bash', args: ['-c', 'echo hi'], options: { shell: '/bin/bash' } });
  assert.deepStrictEqual(resolveShell('ls', { cwd: '/p' }).args, []);
  assert.deepStrictEqual(resolveShell('ls', ['a'], {}).args, ['a']);
});

test('programs named by a path that stays local become their basename; remote ones stay', () => {
  const local = [
    { path: '/home/me/.pi/agent', kind: 'config', why: "pi's agent dir" },
    { path: path.dirname(process.execPath), kind: 'code', why: 'node' },
  ];
  route.configure({ local, routes: ['/p'], cwd: '/p' });
  assert.strictEqual(remoteProgram('/home/me/.pi/agent/bin/rg'), 'rg');
  assert.strictEqual(remoteProgram(process.execPath), 'node');
  assert.strictEqual(remoteProgram('/bin/bash'), '/bin/bash'); // the remote's /bin/bash
  assert.strictEqual(remoteProgram('/p/scripts/run.sh'), '/p/scripts/run.sh');
  assert.strictEqual(remoteProgram('git'), 'git');
  assert.strictEqual(remoteProgram('./x.sh'), './x.sh');
});

test('stdio modes', () => {
  assert.deepStrictEqual(stdioModes(undefined), ['pipe', 'pipe', 'pipe']);
  assert.deepStrictEqual(stdioModes('inherit'), ['inherit', 'inherit', 'inherit']);
  assert.deepStrictEqual(stdioModes(['ignore', 'pipe', 'pipe']), ['ignore', 'pipe', 'pipe']);
  assert.deepStrictEqual(stdioModes([0, 1, 2]), ['inherit', 'inherit', 'inherit']);
  assert.deepStrictEqual(stdioModes(['pipe']), ['pipe', 'pipe', 'pipe']);
});
