'use strict';
// Only when asked: `node --test` also runs every file under test/, and this one writes to cwd.
if (process.env.PII_PROBE !== '1') process.exit(0);
// …and only inside a project made by populate.cjs, never in a source tree.
if (!require('fs').existsSync('.pii-probe-project')) throw new Error(`not a probe project: ${process.cwd()}`);
// Watches, chdir and the sandbox, run under the bridge only (prints one JSON report).
const fs = require('fs');
const path = require('path');
const report = {};
const cwd = process.cwd();

function firstEvent(setup, trigger) {
  return new Promise((resolve) => {
    let w;
    const timer = setTimeout(() => {
      w.close();
      resolve('timeout');
    }, 3000);
    w = setup((...ev) => {
      clearTimeout(timer);
      w.close ? w.close() : null;
      resolve(ev);
    });
    setTimeout(trigger, 100);
  });
}

(async () => {
  report.watch = await firstEvent(
    (l) => fs.watch('.', (t, f) => f === 'new.txt' && l(t, f)),
    () => fs.writeFileSync('new.txt', 'x'),
  );
  let watchErr;
  try {
    fs.watch('missing-dir');
  } catch (e) {
    watchErr = { code: e.code, syscall: e.syscall, message: e.message };
  }
  report.watchMissing = watchErr;
  report.watchFile = await new Promise((resolve) => {
    const t = setTimeout(() => resolve('timeout'), 3000);
    fs.watchFile('a.txt', { interval: 100 }, (curr, prev) => {
      clearTimeout(t);
      fs.unwatchFile('a.txt');
      resolve([curr.size, prev.size]);
    });
    setTimeout(() => fs.writeFileSync('a.txt', 'longer content'), 200);
  });
  process.chdir('sub');
  report.chdir = [path.relative(cwd, process.cwd()), fs.readFileSync('one.txt', 'utf8')];
  try {
    process.chdir('nope');
  } catch (e) {
    report.chdirMissing = e.message.split(cwd).join('<cwd>');
  }
  process.chdir('..');
  fs.symlinkSync('/etc/hostname', 'escape');
  try {
    fs.readFileSync('escape');
    report.escape = 'read outside the sandbox!';
  } catch (e) {
    report.escape = { code: e.code, errno: e.errno, mentionsBridge: /pi-bridge/.test(e.message) };
  }
  process.stdout.write(JSON.stringify(report));
})();
