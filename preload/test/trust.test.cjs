'use strict';
// The trust layer's listing filter (preload/trust.cjs): its per-name shortcut must hide exactly
// what the whole-path rule (`isHidden` of the joined path) hides, for every name a listing can
// hold and for names a remote should never send.
const test = require('node:test');
const assert = require('node:assert');
const path = require('path');
const trust = require('../trust.cjs');

const GATE = { configDirs: ['.pi', '.alt'], hidden: ['extensions', 'mcp.json'], settingsFile: 'settings.json', settingsKeys: ['theme'] };
const DIRS = ['/p', '/p/.pi', '/p/a/.pi', '/p/.pi/extensions', '/p/.pi/extensions/sub', '/p/.alt', '/p/x/extensions', '/', '/.pi', '/p/.pi/'];
const NAMES = ['a', 'extensions', 'mcp.json', 'settings.json', '.pi', '.alt', 'sub', 'extensions.bak',
  '.pi/extensions', '.pi/mcp.json', 'a/.pi/extensions/x', 'a/.pi', '.pi/prompts.md', // recursive listings
  '..', '.', '', '../.pi/extensions', '../extensions', 'x/../../.pi/mcp.json', '/abs', 'a//extensions']; // odd ones

function names(dir) {
  const entries = NAMES.map((name) => ({ name, type: 'file' }));
  return trust.filterEntries(dir, { entries }).entries.map((e) => e.name);
}

test('a listing hides exactly the names whose joined path is hidden, at any depth', () => {
  const saved = trust.state.gate;
  trust.state.gate = GATE;
  try {
    let hiddenSeen = 0;
    for (const dir of DIRS) {
      const want = NAMES.filter((n) => !trust.isHidden(path.join(dir, n)));
      hiddenSeen += NAMES.length - want.length;
      assert.deepStrictEqual(names(dir), want, dir);
    }
    assert.ok(hiddenSeen > 20, 'the cases hide something'); // the test would be empty otherwise
    // Spelled out for one config dir, so the rule itself is pinned too.
    const hiddenInPi = ['extensions', 'mcp.json', '.pi/extensions', '.pi/mcp.json', 'a/.pi/extensions/x', '../.pi/extensions', 'x/../../.pi/mcp.json'];
    assert.deepStrictEqual(names('/p/.pi'), NAMES.filter((n) => !hiddenInPi.includes(n)));
    assert.deepStrictEqual(names('/p/.pi/extensions'), ['..'], 'every name under a hidden dir but the one leading out');
  } finally {
    trust.state.gate = saved;
  }
});

test('a trusted project lists everything, in a new array (the given one may be the cache\'s)', () => {
  const saved = trust.state.gate;
  trust.state.gate = null;
  try {
    const given = { entries: NAMES.map((name) => ({ name })) };
    const got = trust.filterEntries('/p/.pi', given);
    assert.deepStrictEqual(got.entries.map((e) => e.name), NAMES);
    assert.notStrictEqual(got.entries, given.entries);
  } finally {
    trust.state.gate = saved;
  }
});

test('a listing answered without entries fails loudly', () => {
  assert.throws(() => trust.filterEntries('/p', {}), /without entries/);
});
