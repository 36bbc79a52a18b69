'use strict';
// preload/boundary.cjs alone: which tool calls the guard blocks (in every spelling pi resolves a
// path), which local writes fail with EROFS, and the sandbox check made without a round trip.
const test = require('node:test');
const assert = require('node:assert');
const os = require('os');
const path = require('path');
const route = require('../route.cjs');
const boundary = require('../boundary.cjs');
const { OPS } = require('../fsops.cjs');

const HOME = os.homedir();
const LOCAL = [
  { path: `${HOME}/.pi/agent`, kind: 'config', why: "pi's agent dir" },
  { path: `${HOME}/.pi/agent/extensions`, kind: 'private', why: "pi's extensions" },
  { path: '/opt/pi', kind: 'code', why: "pi's install dir" },
  { path: '/s/tmp', kind: 'temp', why: "pi's private temp dir" },
  { path: '/s', kind: 'private', why: "pii's scratch dir" },
  { path: '/dev/tty', kind: 'device', why: 'the terminal' },
  { path: '/home/me/notes', kind: 'user', why: 'localPaths' },
];

test.beforeEach(() => route.configure({ local: LOCAL, routes: ['/r/p'], cwd: '/r/p' }));

test("the guard blocks pi's tools on local paths, in every spelling pi resolves", () => {
  const blocked = (tool, input) => boundary.toolCall(tool, input, '/r/p');
  for (const p of [
    `${HOME}/.pi/agent/auth.json`,
    '~/.pi/agent/auth.json',
    '@~/.pi/agent/auth.json',
    `file://${HOME}/.pi/agent/auth.json`,
    `../..${HOME}/.pi/agent/auth.json`,
    ` ${HOME}/.pi/agent/auth.json `,
    `${HOME}/.pi/agent/./sessions/../auth.json`,
    '/dev/tty',
    '/s/preload/index.cjs',
  ]) {
    assert.match(blocked('read', { path: p }) || '', /is on this machine/, p);
  }
  // Unicode spaces pi turns into plain ones.
  route.configure({ local: [{ path: '/home/John Doe/.pi/agent', kind: 'config', why: 'a' }], routes: ['/r/p'], cwd: '/r/p' });
  assert.ok(blocked('read', { path: '/home/John\u00A0Doe/.pi/agent/auth.json' }));
  route.configure({ local: LOCAL, routes: ['/r/p'], cwd: '/r/p' });
  // Writes: only the user's own localPaths.
  assert.ok(blocked('write', { path: '/opt/pi/dist/cli.js', content: 'x' }));
  assert.ok(blocked('edit', { path: '/s/tmp/pi-bash-1.log', oldText: 'a', newText: 'b' }));
  assert.ok(blocked('edit', { path: 'x', edits: [{ path: `${HOME}/.pi/agent/settings.json` }] }));
  assert.strictEqual(blocked('write', { path: '/home/me/notes/n.md', content: 'x' }), null);
  // Reads of pi's docs and its bash logs are fine; the remote is always fine; bash runs remote.
  assert.strictEqual(blocked('read', { path: '/opt/pi/docs/extensions.md' }), null);
  assert.strictEqual(blocked('read', { path: '/s/tmp/pi-bash-1.log' }), null);
  assert.strictEqual(blocked('ls', { path: '/home/me/notes' }), null);
  assert.strictEqual(blocked('read', { path: 'src/a.ts' }), null);
  assert.strictEqual(blocked('read', { path: '/etc/passwd' }), null); // the remote's (refused there)
  assert.strictEqual(blocked('bash', { command: `cat ${HOME}/.pi/agent/auth.json` }), null);
  // An unknown tool: every string it carries, as for a write.
  assert.ok(blocked('mcp__x__fetch', { nested: { files: ['ok', `${HOME}/.pi/agent/auth.json`] } }));
  assert.strictEqual(blocked('mcp__x__fetch', { q: 'hello world' }), null);
});

test('a guard that cannot register in pi stops the process (pi would go on without it)', () => {
  const { spawnSync } = require('child_process');
  const guard = path.join(__dirname, '..', 'pi-bridge-guard.cjs');
  // A child node with the preload's boundary stand-in: the guard is called as pi calls an
  // extension's factory, with pi's extension API as this pi release has it.
  const run = (api) =>
    spawnSync(process.execPath, ['-e', `
      globalThis[Symbol.for('pi-bridge.boundary')] = { toolCall: (tool) => (tool === 'read' ? 'is on this machine' : null) };
      const api = ${api};
      require(${JSON.stringify(guard)})(api);
      const h = api.handlers && api.handlers.tool_call;
      console.log(JSON.stringify(h ? [h({ toolName: 'read', input: {} }, {}), h({ toolName: 'bash', input: {} }, {})] : 'registered'));
    `], { encoding: 'utf8' });
  // Today's API: the handler blocks what boundary.toolCall refuses.
  const ok = run("{ handlers: {}, on(ev, h) { this.handlers[ev] = h; } }");
  assert.strictEqual(ok.status, 0, ok.stderr);
  assert.deepStrictEqual(JSON.parse(ok.stdout), [{ block: true, reason: 'is on this machine' }, null]);
  for (const [api, why] of [
    ['{}', /has no on\(\)/],
    ['{ on: 1 }', /has no on\(\)/],
    ["{ on(ev) { throw new Error('unknown event ' + ev); } }", /threw: unknown event tool_call/],
  ]) {
    const r = run(api);
    assert.strictEqual(r.status, 78, `${api}: ${r.stderr}`);
    assert.match(r.stderr, /tool guard could not register/, api);
    assert.match(r.stderr, why, api);
    assert.strictEqual(r.stdout, '', `${api}: pi went on`);
  }
  // Outside pii it refuses to load (throws: there is no pi under the bridge to protect).
  const bare = spawnSync(process.execPath, ['-e', `require(${JSON.stringify(guard)})({ on() {} })`], { encoding: 'utf8' });
  assert.notStrictEqual(bare.status, 0);
  assert.match(bare.stderr, /runs only under pii/);
});

test('local writes to read-only kinds fail with EROFS; config and temp are writable', () => {
  boundary.installOps(OPS);
  const denied = (name, args) => boundary.writeDenied(OPS[name], args);
  assert.strictEqual(denied('writeFile', ['/opt/pi/x.js', 'x']).code, 'EROFS');
  assert.strictEqual(denied('mkdir', [`${HOME}/.pi/agent/extensions/evil`]).code, 'EROFS');
  assert.strictEqual(denied('rename', [`${HOME}/.pi/agent/a`, '/s/preload/index.cjs']).code, 'EROFS');
  assert.strictEqual(denied('open', ['/opt/pi/x.js', 'r+']).code, 'EROFS');
  assert.strictEqual(denied('open', ['/opt/pi/x.js', require('fs').constants.O_WRONLY]).code, 'EROFS');
  assert.strictEqual(denied('open', ['/opt/pi/x.js', 'r']), null);
  assert.strictEqual(denied('readFile', ['/opt/pi/x.js']), null);
  assert.strictEqual(denied('writeFile', [`${HOME}/.pi/agent/settings.json`, '{}']), null);
  assert.strictEqual(denied('writeFile', ['/s/tmp/pi-bash-2.log', 'x']), null);
  assert.strictEqual(denied('copyFile', ['/opt/pi/x.js', '/s/tmp/y.js']), null);
  assert.strictEqual(denied('copyFile', ['/s/tmp/y.js', '/opt/pi/x.js']).code, 'EROFS');
});

test('a remote path outside the sandbox root is decided here', () => {
  assert.strictEqual(boundary.outsideOf('/r/p/src/a.ts'), null);
  assert.strictEqual(boundary.outsideOf('/r/p'), null);
  assert.strictEqual(boundary.outsideOf('/r/pp'), '/r/p');
  assert.strictEqual(boundary.outsideOf('/r/AGENTS.md'), '/r/p');
  assert.strictEqual(boundary.outsideOf('/r/p/../AGENTS.md'), '/r/p');
  assert.strictEqual(boundary.outsideOf('relative'), null); // resolved by the caller first
});

test('a realpath out of the allowlist makes the target local with the same kind', () => {
  const fs = require('fs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-learn-'));
  try {
    const real = path.join(dir, 'src', 'my-ext');
    fs.mkdirSync(real, { recursive: true });
    fs.writeFileSync(path.join(real, 'index.ts'), 'x');
    const agent = path.join(dir, 'agent');
    fs.mkdirSync(path.join(agent, 'extensions'), { recursive: true });
    fs.symlinkSync(real, path.join(agent, 'extensions', 'my-ext'));
    route.configure({
      local: [
        { path: agent, kind: 'config', why: "pi's agent dir" },
        { path: path.join(agent, 'extensions'), kind: 'private', why: "pi's extensions" },
      ],
      routes: ['/r/p'],
      cwd: '/r/p',
    });
    const input = path.join(agent, 'extensions', 'my-ext', 'index.ts');
    boundary.learnFrom(input, fs.realpathSync(input));
    assert.strictEqual(route.localEntry(path.join(real, 'lib', 'util.ts')).kind, 'private');
    assert.strictEqual(route.routed(path.join(dir, 'src', 'other.ts')), path.join(dir, 'src', 'other.ts'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('code reached through a link brings the node_modules Node resolves its dependencies from', () => {
  const fs = require('fs');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-learn-code-'));
  try {
    const real = path.join(dir, 'store', 'node_modules', 'dep');
    fs.mkdirSync(real, { recursive: true });
    fs.writeFileSync(path.join(real, 'index.js'), 'x');
    const pkg = path.join(dir, 'pkg');
    fs.mkdirSync(path.join(pkg, 'node_modules'), { recursive: true });
    fs.symlinkSync(real, path.join(pkg, 'node_modules', 'dep'));
    route.configure({ local: [{ path: pkg, kind: 'code', why: "pi's install dir" }], routes: ['/r/p'], cwd: '/r/p' });
    const input = path.join(pkg, 'node_modules', 'dep', 'index.js');
    boundary.learnFrom(input, fs.realpathSync(input));
    // A sibling dependency of the linked one, hoisted next to it.
    assert.strictEqual(route.localEntry(path.join(dir, 'store', 'node_modules', 'other', 'index.js')).kind, 'code');
    assert.strictEqual(route.routed(path.join(dir, 'store', 'README')), path.join(dir, 'store', 'README'));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
