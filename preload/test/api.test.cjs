'use strict';
// The Node API surface as data (api.cjs), against the RUNNING Node: every function member of fs,
// fs/promises, FileHandle.prototype, fs.Dir.prototype, ReadStream/WriteStream.prototype,
// child_process and the process members that take paths must be routed by the bridge, or
// listed as Node's own (reaching files only through routed members) or path-free, with a reason.
// scripts/test.sh runs this under every node of the matrix.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const fsp = require('fs/promises');
const os = require('os');
const path = require('path');
const cp = require('child_process');
const api = require('../api.cjs');
const h = require('./support/harness.cjs');

// The members of the running Node.
async function surface() {
  const handle = await fsp.open(__filename, 'r');
  const fh = [...api.functionMembers(Object.getPrototypeOf(handle), { getters: true }), ...Object.keys(handle).filter((k) => typeof handle[k] === 'function')];
  await handle.close();
  return {
    fs: api.functionMembers(fs, { nested: true }),
    fsp: api.functionMembers(fsp),
    FileHandle: fh,
    Dir: api.functionMembers(fs.Dir.prototype, { getters: true }),
    ReadStream: api.functionMembers(fs.ReadStream.prototype, { getters: true }),
    WriteStream: api.functionMembers(fs.WriteStream.prototype, { getters: true }),
    child_process: api.functionMembers(cp),
    process: Object.keys(api.TABLES.process).filter((k) => typeof process[k] === 'function'),
  };
}

let probed; // what the preload replaced, observed in a process it runs in (fake endpoint)
async function replacedByTheBridge() {
  if (probed) return probed;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'pii-api-'));
  fs.writeFileSync(path.join(dir, 'f.txt'), 'f');
  try {
    const r = await h.runFake(dir, path.join(__dirname, 'scripts', 'api-probe.cjs'), [], { PI_BRIDGE_API: path.join(h.PRELOAD_DIR, 'api.cjs') }, [path.join(__dirname, 'scripts', 'api-capture.cjs')]);
    assert.strictEqual(r.status, 0, r.stderr);
    probed = JSON.parse(r.stdout);
    return probed;
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

const asSets = (replaced) => Object.fromEntries(Object.entries(replaced).map(([k, v]) => [k, new Set(v)]));

test(`every member of Node ${process.version}'s fs, fs/promises, FileHandle, Dir, streams, child_process and process is routed or listed`, async () => {
  const s = await surface();
  const { replaced } = await replacedByTheBridge();
  // The probe's own unknown member (added before the preload, as a new Node would) is not part of
  // the running Node's surface.
  replaced.fs = replaced.fs.filter((m) => m !== 'piBridgeProbeNewSync');
  assert.deepStrictEqual(api.problems(s, asSets(replaced)), []);
});

test('a member no table knows fails the check (an unrouted new API fails the build)', async () => {
  const s = await surface();
  const { replaced } = await replacedByTheBridge();
  const sets = asSets(replaced);
  const withNew = { ...s, fs: [...s.fs, 'readSomethingNewSync'], FileHandle: [...s.FileHandle, 'readSomethingNew'] };
  const found = api.problems(withNew, sets);
  assert.ok(found.some((p) => p.startsWith('fs.readSomethingNewSync:')), found.join('\n'));
  assert.ok(found.some((p) => p.startsWith('FileHandle.readSomethingNew:')), found.join('\n'));
  // A member listed as routed that the bridge stops replacing fails too.
  sets.fs.delete('readFileSync');
  assert.ok(api.problems(s, sets).some((p) => p.startsWith('fs.readFileSync: listed as routed')));
});

test('at run time, an fs member the bridge does not know refuses a remote path and passes a local one', async () => {
  const { unknownRemote, unknownLocal } = await replacedByTheBridge();
  assert.strictEqual(unknownRemote.code, 'ERR_PI_BRIDGE_UNSUPPORTED', JSON.stringify(unknownRemote));
  assert.match(unknownRemote.message, /piBridgeProbeNewSync .* not supported on remote paths/);
  assert.strictEqual(unknownLocal, `local: ${path.join(__dirname, 'scripts', 'pi-bridge-local-path')}`);
});

// Node's own implementations the bridge relies on (kind 'node') must reach files only through
// members the bridge routes: their module's source (as this Node ships it) calls no fs binding
// and no fs member that is not routed. Node 26's async cp, which copies trees natively, is why
// this is checked rather than assumed.
const NODE_MODULES = {
  'internal/fs/glob': { members: ['glob', 'globSync'], allowBinding: [] },
  'internal/fs/streams': { members: ['createReadStream', 'createWriteStream'], allowBinding: ['handleToFd'] }, // Windows handles only
  'internal/streams/fast-utf8-stream': { members: ['Utf8Stream'], allowBinding: [] },
};

test('Node\'s own implementations the bridge relies on call only routed members', () => {
  const natives = process.binding('natives'); // eslint-disable-line node/no-deprecated-api
  const routedFs = new Set(Object.entries(api.TABLES.fs).filter(([, e]) => e.kind === 'routed').map(([k]) => k));
  const routedFsp = new Set(Object.entries(api.TABLES.fsp).filter(([, e]) => e.kind === 'routed').map(([k]) => k));
  let checked = 0;
  for (const [mod, { members, allowBinding }] of Object.entries(NODE_MODULES)) {
    const src = natives[mod];
    if (!src || !members.some((m) => typeof fs[m] === 'function')) continue; // not in this Node
    checked++;
    const bindings = [...src.matchAll(/\b(?:fsBinding|binding)\.(\w+)/g)].map((m) => m[1]).filter((b) => !allowBinding.includes(b));
    assert.deepStrictEqual(bindings, [], `${mod} calls the fs binding directly`);
    const calls = new Set([...src.matchAll(/\b(?:fs|\[kFs\])\.(\w+)\(/g)].map((m) => m[1]));
    for (const m of src.matchAll(/const \{([^}]*)\} = require\('(fs|fs\/promises)'\)/g)) {
      for (const name of m[1].split(',').map((x) => x.trim()).filter(Boolean)) {
        const set = m[2] === 'fs' ? routedFs : routedFsp;
        assert.ok(set.has(name), `${mod} imports ${m[2]}.${name}, which the bridge does not route`);
      }
    }
    for (const c of calls) assert.ok(routedFs.has(c), `${mod} calls fs.${c}, which the bridge does not route`);
  }
  assert.ok(checked >= 1);
  // fs.exists is Node's own: it answers whether fs.access (routed) failed.
  const fsSrc = natives.fs;
  const exists = fsSrc.slice(fsSrc.indexOf('function exists('), fsSrc.indexOf('function exists(') + 600);
  assert.match(exists, /fs\.access\(path, F_OK/);
});
