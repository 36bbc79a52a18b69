'use strict';
// Only when asked: `node --test` also runs every file under test/, and this one writes to cwd.
if (process.env.PII_PROBE !== '1') process.exit(0);
// …and only inside a project made by populate.cjs, never in a source tree.
if (!require('fs').existsSync('.pii-probe-project')) throw new Error(`not a probe project: ${process.cwd()}`);
// Exercises child_process on the project in process.cwd(); prints one JSON report (paths
// scrubbed) so a plain run and a bridged run can be compared.
const cp = require('child_process');
const util = require('util');

const cwd = process.cwd();
const scrub = (v) => (typeof v === 'string' ? v.split(cwd).join('<cwd>') : Buffer.isBuffer(v) ? scrub(v.toString()) : v);
const report = [];
const errInfo = (e) => e && { message: scrub(e.message), code: e.code, errno: e.errno, syscall: e.syscall, path: e.path, spawnargs: e.spawnargs, killed: e.killed, signal: e.signal, cmd: e.cmd, status: e.status };
const syncRes = (r) => ({ keys: Object.keys(r), status: r.status, signal: r.signal, stdout: scrub(r.stdout), stderr: scrub(r.stderr), output: r.output && r.output.map(scrub), pidType: typeof r.pid, error: errInfo(r.error) });

function events(name, child) {
  return new Promise((resolve) => {
    const ev = [];
    let out = '';
    let errOut = '';
    child.on('spawn', () => ev.push('spawn'));
    if (child.stdout) child.stdout.on('data', (d) => (out += d)).on('end', () => ev.push('stdout end'));
    if (child.stderr) child.stderr.on('data', (d) => (errOut += d)).on('end', () => ev.push('stderr end'));
    child.on('error', (e) => ev.push(['error', errInfo(e)]));
    child.on('exit', (c, s) => ev.push(['exit', c, s]));
    child.on('close', (c, s) => {
      ev.push(['close', c, s]);
      report.push([name, { ev: ev.filter((e) => !/ end$/.test(e)), ends: ev.filter((e) => / end$/.test(e)).length, out: scrub(out), err: scrub(errOut), exitCode: child.exitCode, signalCode: child.signalCode, killed: child.killed }]);
      resolve();
    });
  });
}

(async () => {
  report.push(['spawnSync pwd', syncRes(cp.spawnSync('pwd', { encoding: 'utf8' }))]);
  report.push(['spawnSync sh', syncRes(cp.spawnSync('/bin/sh', ['-c', 'echo out; echo err >&2; exit 3']))]);
  report.push(['spawnSync shell', syncRes(cp.spawnSync('echo $((1+2)) && cat a.txt', { shell: true, encoding: 'utf8' }))]);
  report.push(['spawnSync input', syncRes(cp.spawnSync('cat', { input: 'fed in', encoding: 'utf8' }))]);
  report.push(['spawnSync missing', syncRes(cp.spawnSync('no-such-program-xyz', ['a']))]);
  report.push(['spawnSync timeout', syncRes(cp.spawnSync('sleep', ['5'], { timeout: 200 }))]);
  report.push(['spawnSync env', syncRes(cp.spawnSync('sh', ['-c', 'echo "$PROBE_VAR|$HOME_SET"'], { env: { ...process.env, PROBE_VAR: 'yes' }, encoding: 'utf8' }))]);
  report.push(['execSync', scrub(cp.execSync('ls sub | sort'))]);
  try {
    cp.execSync('echo bad >&2; exit 4', { stdio: 'pipe' });
  } catch (e) {
    report.push(['execSync fail', { ...errInfo(e), stdout: scrub(e.stdout), stderr: scrub(e.stderr) }]);
  }
  report.push(['execFileSync', scrub(cp.execFileSync('cat', ['a.txt'], { encoding: 'utf8' }))]);
  try {
    cp.execFileSync('sh', ['-c', 'exit 2'], { stdio: 'pipe' });
  } catch (e) {
    report.push(['execFileSync fail', errInfo(e)]);
  }
  await events('spawn echo', cp.spawn('sh', ['-c', 'echo one; echo two >&2; exit 5']));
  await events('spawn missing', cp.spawn('no-such-program-xyz', ['a']));
  await events('spawn bash like pi', cp.spawn('/bin/bash', ['-c', 'pwd; echo $PIVAR'], { cwd, detached: true, env: { ...process.env, PIVAR: 'v', PATH: `/nonexistent/bin:${process.env.PATH}` }, stdio: ['ignore', 'pipe', 'pipe'] }));
  const cat = cp.spawn('cat');
  const catDone = events('spawn stdin', cat);
  cat.stdin.write('via ');
  cat.stdin.end('stdin');
  await catDone;
  const sleeper = cp.spawn('sleep', ['10'], { detached: true });
  const sleepDone = events('kill group', sleeper);
  sleeper.on('spawn', () => process.kill(-sleeper.pid, 'SIGKILL'));
  await sleepDone;
  const s2 = cp.spawn('sleep', ['10']);
  const s2Done = events('child.kill', s2);
  setTimeout(() => s2.kill(), 100);
  await s2Done;
  try {
    process.kill(s2.pid, 0);
    report.push(['kill after exit', 'no error']);
  } catch (e) {
    report.push(['kill after exit', errInfo(e)]);
  }
  await new Promise((resolve) =>
    cp.exec('echo exec; exit 1', (e, out, err) => {
      report.push(['exec fail', { e: errInfo(e), out, err }]);
      resolve();
    }),
  );
  await new Promise((resolve) =>
    cp.execFile('cat', ['bin.dat'], { encoding: 'buffer' }, (e, out) => {
      report.push(['execFile buffer', { e: errInfo(e), out: out.toString('hex') }]);
      resolve();
    }),
  );
  await new Promise((resolve) =>
    cp.exec('yes | head -c 5000', { maxBuffer: 100 }, (e, out) => {
      report.push(['exec maxBuffer', { e: errInfo(e), len: out.length }]);
      resolve();
    }),
  );
  await new Promise((resolve) =>
    cp.exec('sleep 5', { timeout: 200 }, (e) => {
      report.push(['exec timeout', errInfo(e)]);
      resolve();
    }),
  );
  const { stdout } = await util.promisify(cp.execFile)('echo', ['promisified']);
  report.push(['execFile promisified', stdout]);
  const r2 = await util.promisify(cp.exec)('echo p2');
  report.push(['exec promisified', r2]);
  process.stdout.write(JSON.stringify(report, null, 1));
})();
