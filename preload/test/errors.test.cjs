'use strict';
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { fsError, errnoError, transportError, fromRpcError } = require('../errors.cjs');

function caught(fn) {
  try {
    fn();
  } catch (e) {
    return e;
  }
  throw new Error('did not throw');
}

const same = (ours, real) => {
  assert.strictEqual(ours.message, real.message);
  for (const k of ['code', 'errno', 'syscall', 'path', 'dest']) assert.strictEqual(ours[k], real[k], k);
  assert.deepStrictEqual(Object.keys(ours), Object.keys(real));
};

test('ENOENT open matches a real Node error', () => {
  const real = caught(() => fs.openSync('/nonexistent-dir/x', 'r'));
  same(fsError({ code: 'ENOENT', syscall: 'open', path: '/nonexistent-dir/x' }), real);
});

test('rename with dest matches', () => {
  const real = caught(() => fs.renameSync('/nonexistent-dir/a', '/nonexistent-dir/b'));
  same(fsError({ code: 'ENOENT', syscall: 'rename', path: '/nonexistent-dir/a', dest: '/nonexistent-dir/b' }), real);
});

test('EISDIR, ENOTDIR, EEXIST, ENOTEMPTY match', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'errs-'));
  fs.writeFileSync(path.join(dir, 'f'), '');
  fs.mkdirSync(path.join(dir, 'd'));
  fs.writeFileSync(path.join(dir, 'd', 'x'), '');
  try {
    same(fsError({ code: 'EISDIR', syscall: 'read' }), caught(() => fs.readFileSync(dir)));
    same(fsError({ code: 'ENOTDIR', syscall: 'scandir', path: path.join(dir, 'f') }), caught(() => fs.readdirSync(path.join(dir, 'f'))));
    same(fsError({ code: 'EEXIST', syscall: 'mkdir', path: path.join(dir, 'd') }), caught(() => fs.mkdirSync(path.join(dir, 'd'))));
    same(fsError({ code: 'ENOTEMPTY', syscall: 'rmdir', path: path.join(dir, 'd') }), caught(() => fs.rmdirSync(path.join(dir, 'd'))));
  } finally {
    fs.rmSync(dir, { recursive: true });
  }
});

test('errno is derived from the local platform table', () => {
  assert.strictEqual(fsError({ code: 'ENOENT', syscall: 'stat' }).errno, -os.constants.errno.ENOENT);
  assert.strictEqual(fsError({ code: 'EACCES', syscall: 'stat' }).errno, -os.constants.errno.EACCES);
});

test('detail is appended only for EACCES', () => {
  assert.match(fsError({ code: 'EACCES', syscall: 'open', path: '/etc/x', detail: 'outside the sandbox' }).message, /^EACCES: permission denied, open '\/etc\/x' \(pi-bridge: outside the sandbox\)$/);
  assert.strictEqual(fsError({ code: 'ENOENT', syscall: 'open', path: '/x', detail: 'ignored' }).message, "ENOENT: no such file or directory, open '/x'");
});

test('spawn errors have Node\'s errnoException shape', () => {
  const e = errnoError('ENOENT', 'spawn nope', { path: 'nope', spawnargs: ['a'] });
  assert.strictEqual(e.message, 'spawn nope ENOENT');
  assert.deepStrictEqual(Object.keys(e), ['errno', 'code', 'syscall', 'path', 'spawnargs']);
});

test('transport errors say pi-bridge and carry EIO', () => {
  const e = transportError('lost the connection to pii');
  assert.strictEqual(e.code, 'EIO');
  assert.match(e.message, /pi-bridge/);
  const r = fromRpcError({ code: -32004, message: 'connection lost' });
  assert.strictEqual(r.code, 'EIO');
  assert.match(r.message, /pi-bridge/);
  assert.strictEqual(fromRpcError({ code: -32000, message: 'm', data: { code: 'ENOENT', syscall: 'open', path: '/p' } }).message, "ENOENT: no such file or directory, open '/p'");
});
