'use strict';
// Run under api-capture.cjs and the preload (fake endpoint): which members the bridge replaced,
// and what the unknown member does with a remote and a local path.
const fs = require('fs');
const fsp = require('fs/promises');
const cp = require('child_process');
const { functionMembers } = require(process.env.PI_BRIDGE_API);
const p = globalThis.__pristine;

const changed = (obj, pristine, names) => names.filter((n) => {
  const cur = n.includes('.') ? n.split('.').reduce((o, k) => o && o[k], obj) : obj[n];
  return cur !== pristine[n];
});
(async () => {
  const h = await fsp.open('f.txt', 'r');
  const d = fs.opendirSync('.');
  const out = {
    replaced: {
      fs: changed(fs, p.fs, functionMembers(fs, { nested: true })),
      fsp: changed(fsp, p.fsp, functionMembers(fsp)),
      child_process: changed(cp, p.child_process, functionMembers(cp)),
      process: Object.keys(p.process).filter((k) => process[k] !== p.process[k]),
      FileHandle: [...functionMembers(Object.getPrototypeOf(h), { getters: true }), ...Object.keys(h).filter((k) => typeof h[k] === 'function')],
      Dir: functionMembers(Object.getPrototypeOf(d), { getters: true }),
    },
  };
  await h.close();
  d.closeSync();
  try {
    out.unknownRemote = fs.piBridgeProbeNewSync('f.txt');
  } catch (e) {
    out.unknownRemote = { code: e.code, message: e.message };
  }
  out.unknownLocal = fs.piBridgeProbeNewSync(require('path').join(__dirname, 'pi-bridge-local-path')); // the script's dir stays local
  console.log(JSON.stringify(out));
})();
