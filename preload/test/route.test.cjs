'use strict';
const test = require('node:test');
const assert = require('node:assert');
const { pathToFileURL } = require('url');
const route = require('../route.cjs');

test.beforeEach(() => route.configure({ routes: ['/p', '/srv/app/'], cwd: '/p/sub' }));

test('absolute strings: equal to or under a route', () => {
  assert.strictEqual(route.routed('/p'), '/p');
  assert.strictEqual(route.routed('/p/a/b'), '/p/a/b');
  assert.strictEqual(route.routed('/srv/app'), '/srv/app');
  assert.strictEqual(route.routed('/srv/app/x'), '/srv/app/x');
  assert.strictEqual(route.routed('/tmp/x'), null);
});

test('a prefix that is not a parent is not routed', () => {
  assert.strictEqual(route.routed('/pp'), null);
  assert.strictEqual(route.routed('/pp/x'), null);
  assert.strictEqual(route.routed('/srv/application'), null);
});

test('relative paths resolve against the virtual cwd', () => {
  assert.strictEqual(route.routed('x.txt'), '/p/sub/x.txt');
  assert.strictEqual(route.routed('.'), '/p/sub');
  assert.strictEqual(route.routed('..'), '/p');
  assert.strictEqual(route.routed('../..'), null);
  assert.strictEqual(route.routed('/p/../etc/passwd'), null);
});

test('Buffers and file: URLs', () => {
  assert.strictEqual(route.routed(Buffer.from('/p/b')), '/p/b');
  assert.strictEqual(route.routed(Buffer.from('rel')), '/p/sub/rel');
  assert.strictEqual(route.routed(pathToFileURL('/p/u v')), '/p/u v');
  assert.strictEqual(route.routed(new URL('file:///tmp/x')), null);
  assert.strictEqual(route.routed(new URL('http://example.com/p')), null);
});

test('non-paths are never routed and never throw', () => {
  for (const v of [3, undefined, null, {}, '', 'a\u0000b', Symbol.iterator]) assert.strictEqual(route.routed(v), null);
});

test('setCwd moves relative resolution; null falls back to the real cwd', () => {
  route.setCwd('/srv/app');
  assert.strictEqual(route.routed('f'), '/srv/app/f');
  route.setCwd(null);
  assert.strictEqual(route.cwd(), process.cwd());
});
