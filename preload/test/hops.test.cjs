'use strict';
// PI_BRIDGE_HOPS (preload/trace.cjs, protocol/src/hops.rs) through the real `pii --local` and its
// agent: off unless named; on, one blocking call is stamped at every hop of the preload's two
// threads, pii and the agent, in the order it passes them.
const test = require('node:test');
const assert = require('node:assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const h = require('./support/harness.cjs');

const MAIN_AND_HELPER = ['m_post', 'h_recv', 'h_write', 'h_data', 'h_post', 'm_got', 'm_ret'];
const ENDPOINT = ['ep_read', 'ep_write'];
const AGENT_SIDE = ['mux_send', 'link_write', 'ag_read', 'ag_done', 'ag_write', 'link_read'];

function run(env) {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'hops-'));
  const project = path.join(dir, 'project');
  fs.mkdirSync(project);
  fs.writeFileSync(path.join(project, 'a.txt'), 'a');
  const script = path.join(dir, 's.cjs');
  // Three blocking calls; the helper writes its stamps 20 ms after a batch starts.
  fs.writeFileSync(script, "const fs = require('fs'); for (let i = 0; i < 3; i++) fs.statSync('a.txt'); setTimeout(() => console.log('done'), 100);");
  const r = h.runPii(project, script, [], { PI_BRIDGE_CACHE: '0', ...env(dir) });
  return { r, dir };
}

test('PI_BRIDGE_HOPS unset: nothing is written', () => {
  const { r, dir } = run(() => ({ PI_BRIDGE_HOPS: undefined }));
  assert.strictEqual(r.status, 0, r.stderr);
  assert.strictEqual(r.stdout.trim(), 'done');
  assert.deepStrictEqual(fs.readdirSync(dir).sort(), ['project', 's.cjs']);
});

test('PI_BRIDGE_HOPS set: every hop of each blocking call, in order', () => {
  const { r, dir } = run((d) => ({ PI_BRIDGE_HOPS: path.join(d, 'hops.txt') }));
  assert.strictEqual(r.status, 0, r.stderr);
  const lines = fs.readFileSync(path.join(dir, 'hops.txt'), 'utf8').trim().split('\n').map((l) => l.split(' '));
  for (const l of lines) assert.match(l.join(' '), /^-?\d+ [a-z_]+ \d+$/);
  const at = (id, hop) => lines.filter((l) => l[0] === String(id) && l[1] === hop).map((l) => BigInt(l[2]));
  const posted = lines.filter((l) => l[1] === 'm_post').map((l) => Number(l[0]));
  let checked = 0;
  for (const id of posted) {
    // pii's id toward the agent: the `client` line naming this call (the main thread's async
    // connection has ids of its own; this run makes no async call). `session.info` is answered
    // by pii itself: no agent hops.
    const aids = lines.filter((l) => l[1] === 'client' && l[2] === String(id)).map((l) => l[0]);
    if (aids.length === 0) continue;
    assert.strictEqual(aids.length, 1, `call ${id}: client lines ${aids}`);
    const t = {};
    for (const hop of [...MAIN_AND_HELPER, ...ENDPOINT]) {
      const got = at(id, hop);
      assert.ok(got.length >= 1, `call ${id}: no ${hop}\n${lines.join('\n')}`);
      t[hop] = got[0];
    }
    for (const hop of AGENT_SIDE) {
      const got = at(aids[0], hop);
      assert.strictEqual(got.length, 1, `call ${id} (agent id ${aids[0]}): ${hop} ×${got.length}`);
      t[hop] = got[0];
    }
    // The order a call passes them (write stamps are taken just before the write: the peer's
    // read stamp follows).
    const order = ['m_post', 'h_recv', 'h_write', 'ep_read', 'mux_send', 'link_write', 'ag_read', 'ag_done', 'ag_write', 'link_read', 'ep_write', 'h_data', 'h_post', 'm_got', 'm_ret'];
    for (let i = 1; i < order.length; i++) assert.ok(t[order[i - 1]] <= t[order[i]], `call ${id}: ${order[i - 1]} after ${order[i]}`);
    checked++;
  }
  assert.ok(checked >= 3, `${checked} calls`);
});
