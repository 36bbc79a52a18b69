'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { pathToFileURL } = require('url');
const route = require('../route.cjs');

const LOCAL = [
  { path: '/home/me/.pi/agent', kind: 'config', why: "pi's agent dir" },
  { path: '/home/me/.pi/agent/extensions', kind: 'private', why: "pi's extensions" },
  { path: '/opt/pi/', kind: 'code', why: "pi's install dir" },
  { path: '/dev/null', kind: 'device', why: 'the terminal' },
];

test.beforeEach(() => route.configure({ local: LOCAL, routes: ['/p'], cwd: '/p/sub' }));

test('every absolute path is remote except the local allowlist', () => {
  for (const p of ['/p', '/p/a/b', '/tmp/x', '/etc/passwd', '/home/me/.ssh/id_ed25519', '/home/me/.bashrc', '/home/me/.pi', '/proc/self/environ', '/dev/shm/x', '/']) {
    assert.strictEqual(route.routed(p), p, p);
  }
  for (const p of ['/home/me/.pi/agent', '/home/me/.pi/agent/auth.json', '/opt/pi', '/opt/pi/dist/cli.js', '/dev/null']) {
    assert.strictEqual(route.routed(p), null, p);
  }
  assert.strictEqual(route.localEntry('/home/me/.pi/agent/extensions/x.ts').kind, 'private'); // the longest entry decides
  assert.strictEqual(route.localEntry('/home/me/.pi/agent/settings.json').kind, 'config');
});

test('a prefix that is not a parent is not local', () => {
  assert.strictEqual(route.routed('/opt/pineapple'), '/opt/pineapple');
  assert.strictEqual(route.routed('/home/me/.pi/agentx'), '/home/me/.pi/agentx');
  assert.strictEqual(route.routed('/dev/nullx'), '/dev/nullx');
});

test('relative paths resolve against the virtual cwd, whatever they climb to', () => {
  assert.strictEqual(route.routed('x.txt'), '/p/sub/x.txt');
  assert.strictEqual(route.routed('.'), '/p/sub');
  assert.strictEqual(route.routed('../..'), '/');
  assert.strictEqual(route.routed('/p/../etc/passwd'), '/etc/passwd');
  // The same file as by its absolute name.
  assert.strictEqual(route.routed('../../home/me/.pi/agent/auth.json'), null);
});

test('Buffers and file: URLs', () => {
  assert.strictEqual(route.routed(Buffer.from('/p/b')), '/p/b');
  assert.strictEqual(route.routed(Buffer.from('rel')), '/p/sub/rel');
  assert.strictEqual(route.routed(pathToFileURL('/p/u v')), '/p/u v');
  assert.strictEqual(route.routed(new URL('file:///tmp/x')), '/tmp/x');
  assert.strictEqual(route.routed(new URL('file:///opt/pi/x')), null);
  assert.strictEqual(route.routed(new URL('http://example.com/p')), null);
});

test('non-paths are never routed and never throw', () => {
  for (const v of [3, undefined, null, {}, '', 'a\u0000b', Symbol.iterator]) assert.strictEqual(route.routed(v), null);
});

test('setCwd moves relative resolution', () => {
  route.setCwd('/srv/app');
  assert.strictEqual(route.routed('f'), '/srv/app/f');
});

test('absolute paths are decided without the remote; the cwd is fetched once, when first needed', () => {
  let asked = 0;
  route.configure({ local: LOCAL, pending: () => (asked++, { routes: ['/r'], cwd: '/r' }) });
  assert.strictEqual(route.routed('/opt/pi/cli.js'), null);
  assert.strictEqual(route.routed('/etc/hosts'), '/etc/hosts');
  assert.strictEqual(asked, 0);
  assert.strictEqual(route.routed('a'), '/r/a');
  assert.strictEqual(route.cwd(), '/r');
  assert.strictEqual(asked, 1);
});

test('a symlink target learned from the allowlist stays local, with its kind', () => {
  route.learn('/src/my-ext', 'private', "pi's extensions");
  assert.strictEqual(route.routed('/src/my-ext/index.ts'), null);
  assert.strictEqual(route.localEntry('/src/my-ext/lib/x.ts').kind, 'private');
  assert.match(route.localEntry('/src/my-ext').why, /through a symlink/);
  route.learn('/', 'code', 'x'); // never the root
  assert.strictEqual(route.routed('/etc/hosts'), '/etc/hosts');
});
