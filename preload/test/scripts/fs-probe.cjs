'use strict';
// Only when asked: `node --test` also runs every file under test/, and this one writes to cwd.
if (process.env.PII_PROBE !== '1') process.exit(0);
// …and only inside a project made by populate.cjs, never in a source tree.
if (!require('fs').existsSync('.pii-probe-project')) throw new Error(`not a probe project: ${process.cwd()}`);
// Exercises fs in every form on the project in process.cwd() and prints one JSON report. Run
// plainly and through the bridge on identical copies: the two reports must be equal.
const fs = require('fs');
const fsp = require('fs/promises');
const path = require('path');

const cwd = process.cwd();
const scrub = (v) => (typeof v === 'string' ? v.split(cwd).join('<cwd>') : v);
const report = [];

function stats(s) {
  if (!s) return s;
  return { proto: Object.getPrototypeOf(s).constructor.name, isStats: s instanceof fs.Stats, mode: s.mode, size: s.size, nlink: s.nlink, uid: s.uid, gid: s.gid, file: s.isFile(), dir: s.isDirectory(), link: s.isSymbolicLink(), mtimeDate: s.mtime instanceof Date, mtimeMsType: typeof s.mtimeMs };
}
function val(v) {
  if (v && typeof v === 'object' && typeof v.size === 'bigint') return { bigint: true, size: String(v.size), file: v.isFile(), mtimeNs: typeof v.mtimeNs, proto: Object.getPrototypeOf(v).constructor.name };
  if (Buffer.isBuffer(v)) return { buffer: v.toString('hex').slice(0, 200), length: v.length };
  if (v instanceof fs.Stats || (v && typeof v.isFile === 'function' && 'mode' in v)) return stats(v);
  if (v instanceof fs.Dirent) return { dirent: v.name, parentPath: scrub(v.parentPath), path: scrub(v.path), file: v.isFile(), dir: v.isDirectory(), link: v.isSymbolicLink() };
  if (Array.isArray(v)) return v.map(val);
  if (typeof v === 'bigint') return `${v}n`;
  return scrub(v);
}
function err(e) {
  return { error: true, name: e.name, code: e.code, errno: e.errno, syscall: e.syscall, path: scrub(e.path), dest: scrub(e.dest), message: scrub(e.message) };
}
function sync(name, fn) {
  try {
    report.push([name, val(fn())]);
  } catch (e) {
    report.push([name, err(e)]);
  }
}
async function prom(name, fn) {
  try {
    report.push([name, val(await fn())]);
  } catch (e) {
    report.push([name, err(e)]);
  }
}
const cb = (name, fn) =>
  new Promise((resolve) =>
    fn((e, v) => {
      report.push([name, e ? err(e) : val(v)]);
      resolve();
    }),
  );

(async () => {
  sync('cwd', () => process.cwd());
  sync('existsSync a.txt', () => fs.existsSync('a.txt'));
  sync('existsSync missing', () => fs.existsSync('missing'));
  sync('existsSync abs', () => fs.existsSync(path.join(cwd, 'sub')));
  sync('existsSync url', () => fs.existsSync(new URL(`file://${cwd}/a.txt`)));
  sync('existsSync buffer', () => fs.existsSync(Buffer.from('a.txt')));
  sync('statSync', () => fs.statSync('a.txt'));
  sync('statSync bigint', () => fs.statSync('a.txt', { bigint: true }));
  sync('statSync missing', () => fs.statSync('missing'));
  sync('statSync throwIfNoEntry', () => fs.statSync('missing', { throwIfNoEntry: false }));
  sync('lstatSync link', () => fs.lstatSync('link'));
  sync('statSync link', () => fs.statSync('link'));
  sync('statSync exec', () => fs.statSync('run.sh').mode);
  sync('accessSync', () => fs.accessSync('a.txt', fs.constants.R_OK));
  sync('accessSync missing', () => fs.accessSync('missing'));
  sync('readdirSync', () => fs.readdirSync('.').sort());
  sync('readdirSync types', () => fs.readdirSync('.', { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1)));
  sync('readdirSync recursive', () => fs.readdirSync('sub', { recursive: true }).sort());
  sync('readdirSync recursive types', () => fs.readdirSync('sub', { recursive: true, withFileTypes: true }).map((d) => [d.name, scrub(d.parentPath), d.isFile()]).sort());
  sync('readdirSync buffer', () => fs.readdirSync('sub', { encoding: 'buffer' }).map((b) => Buffer.isBuffer(b)));
  sync('readdirSync file', () => fs.readdirSync('a.txt'));
  sync('readFileSync utf8', () => fs.readFileSync('a.txt', 'utf8'));
  sync('readFileSync binary', () => fs.readFileSync('bin.dat'));
  sync('readFileSync big', () => {
    const b = fs.readFileSync('big.dat');
    return [b.length, require('crypto').createHash('sha256').update(b).digest('hex')];
  });
  sync('readFileSync dir', () => fs.readFileSync('sub'));
  sync('readFileSync missing', () => fs.readFileSync('missing', { encoding: 'utf8' }));
  sync('writeFileSync', () => {
    fs.writeFileSync('w1.txt', 'héllo', 'latin1');
    return fs.readFileSync('w1.txt');
  });
  sync('writeFileSync typed', () => {
    fs.writeFileSync('w2.bin', new Uint8Array([255, 0, 128, 254]));
    return fs.readFileSync('w2.bin');
  });
  sync('writeFileSync wx exists', () => fs.writeFileSync('a.txt', 'x', { flag: 'wx' }));
  sync('writeFileSync big', () => {
    const b = Buffer.alloc(5 * 1024 * 1024 + 7, 7);
    b[0] = 0xff;
    fs.writeFileSync('w-big.dat', b);
    return fs.statSync('w-big.dat').size;
  });
  sync('appendFileSync', () => {
    fs.appendFileSync('w1.txt', Buffer.from([0, 1]));
    return fs.readFileSync('w1.txt');
  });
  sync('writeFileSync into dir', () => fs.writeFileSync('sub', 'x'));
  sync('mkdirSync', () => fs.mkdirSync('m1'));
  sync('mkdirSync exists', () => fs.mkdirSync('m1'));
  sync('mkdirSync recursive', () => fs.mkdirSync('m2/a/b', { recursive: true }));
  sync('mkdirSync recursive exists', () => fs.mkdirSync('m2/a', { recursive: true }));
  sync('rmdirSync notempty', () => fs.rmdirSync('m2'));
  sync('rmSync recursive', () => fs.rmSync('m2', { recursive: true }));
  sync('rmSync missing', () => fs.rmSync('m2'));
  sync('rmSync force', () => fs.rmSync('m2', { force: true }));
  sync('rmdirSync', () => fs.rmdirSync('m1'));
  sync('rmSync dir without recursive', () => fs.rmSync('sub'));
  sync('rmdirSync file', () => fs.rmdirSync('a.txt'));
  sync('statSync through file', () => fs.statSync('a.txt/x'));
  sync('readFileSync relative up', () => fs.readFileSync('sub/../a.txt', 'utf8'));
  sync('renameSync', () => {
    fs.renameSync('w2.bin', 'w3.bin');
    return fs.existsSync('w2.bin');
  });
  sync('renameSync missing', () => fs.renameSync('missing', 'x'));
  sync('copyFileSync', () => {
    fs.copyFileSync('run.sh', 'run2.sh');
    return fs.statSync('run2.sh').mode;
  });
  sync('copyFileSync excl', () => fs.copyFileSync('a.txt', 'run2.sh', fs.constants.COPYFILE_EXCL));
  sync('unlinkSync', () => fs.unlinkSync('run2.sh'));
  sync('unlinkSync missing', () => fs.unlinkSync('run2.sh'));
  sync('realpathSync', () => fs.realpathSync('link'));
  sync('realpathSync.native', () => fs.realpathSync.native('sub/../link'));
  sync('realpathSync.native missing', () => fs.realpathSync.native('missing'));
  sync('readlinkSync', () => fs.readlinkSync('link'));
  sync('readlinkSync file', () => fs.readlinkSync('a.txt'));
  sync('symlinkSync', () => {
    fs.symlinkSync('a.txt', 'link2');
    return fs.readlinkSync('link2');
  });
  sync('symlinkSync exists', () => fs.symlinkSync('a.txt', 'link2'));
  sync('linkSync exists', () => fs.linkSync('a.txt', 'link2'));
  sync('chmodSync', () => {
    fs.chmodSync('w1.txt', 0o600);
    return fs.statSync('w1.txt').mode;
  });
  sync('chmodSync string', () => {
    fs.chmodSync('w1.txt', '640');
    return fs.statSync('w1.txt').mode;
  });
  sync('utimesSync', () => {
    fs.utimesSync('w1.txt', 1000, new Date(2000000));
    const s = fs.statSync('w1.txt');
    return [s.atimeMs, s.mtimeMs];
  });
  sync('utimesSync string', () => {
    fs.utimesSync('w1.txt', '1500.5', 1600.25);
    const s = fs.statSync('w1.txt');
    return [s.atimeMs, s.mtimeMs];
  });
  sync('utimesSync missing', () => fs.utimesSync('missing', 1, 1));
  sync('truncateSync', () => {
    fs.truncateSync('w1.txt', 2);
    return fs.readFileSync('w1.txt');
  });
  sync('mkdtempSync', () => /^tmp-.{6}$/.test(fs.mkdtempSync('tmp-')));
  sync('mkdtempSync missing', () => fs.mkdtempSync('nodir/t-'));
  sync('fd ops', () => {
    const fd = fs.openSync('bin.dat', 'r');
    const b = Buffer.alloc(3);
    const n = fs.readSync(fd, b, 0, 3, 1);
    const n2 = fs.readSync(fd, b, 0, 3, null);
    const st = fs.fstatSync(fd).size;
    fs.closeSync(fd);
    return [n, n2, b, st];
  });
  sync('fd write', () => {
    const fd = fs.openSync('fdw.txt', 'w');
    fs.writeSync(fd, 'abc');
    fs.writeSync(fd, Buffer.from('de'));
    fs.closeSync(fd);
    return fs.readFileSync('fdw.txt', 'utf8');
  });
  sync('openSync missing', () => fs.openSync('missing', 'r'));

  await cb('stat cb', (k) => fs.stat('a.txt', k));
  await cb('stat cb missing', (k) => fs.stat('missing', k));
  await cb('readFile cb', (k) => fs.readFile('bin.dat', k));
  await cb('readdir cb', (k) => fs.readdir('sub', (e, v) => k(e, v && v.sort())));
  await cb('writeFile cb', (k) => fs.writeFile('cb.txt', 'cb!', (e) => k(e, fs.readFileSync('cb.txt', 'utf8'))));
  await cb('mkdir cb recursive', (k) => fs.mkdir('cbdir/x', { recursive: true }, k));
  await cb('access cb missing', (k) => fs.access('missing', k));
  await new Promise((r) => fs.exists('a.txt', (x) => r(report.push(['exists cb', x]))));
  await cb('realpath.native cb', (k) => fs.realpath.native('link', k));
  await cb('fs.open/read cb', (k) =>
    fs.open('bin.dat', 'r', (e, fd) => {
      if (e) return k(e);
      fs.read(fd, Buffer.alloc(4), 0, 4, 0, (e2, n, buf) => fs.close(fd, () => k(e2, [n, buf])));
    }),
  );

  await prom('promisify(fs.read)', async () => {
    const fd = fs.openSync('bin.dat', 'r');
    const r = await require('util').promisify(fs.read)(fd, Buffer.alloc(2), 0, 2, 0);
    fs.closeSync(fd);
    return [r.bytesRead, r.buffer];
  });
  await prom('promisify(fs.exists)', () => require('util').promisify(fs.exists)('a.txt'));
  await prom('fsp.stat', () => fsp.stat('a.txt'));
  await prom('fsp.readFile', () => fsp.readFile('a.txt', 'utf8'));
  await prom('fsp.readFile missing', () => fsp.readFile('missing'));
  await prom('fsp.readFile dir', () => fsp.readFile('sub'));
  await prom('fsp.access RW', () => fsp.access('a.txt', fs.constants.R_OK | fs.constants.W_OK));
  await prom('fsp.writeFile', async () => {
    await fsp.writeFile('p.txt', 'promise', 'utf-8');
    return fsp.readFile('p.txt', 'utf8');
  });
  await prom('fsp.mkdir recursive', () => fsp.mkdir('pd/a/b', { recursive: true }));
  await prom('fsp.readdir types', async () => (await fsp.readdir('sub', { withFileTypes: true })).map((d) => [d.name, d.isDirectory()]).sort());
  await prom('fsp.open read', async () => {
    const h = await fsp.open('bin.dat', 'r');
    const buf = Buffer.alloc(4100);
    const { bytesRead } = await h.read(buf, 0, 4100, 0);
    await h.close();
    return [bytesRead, buf.subarray(0, bytesRead)];
  });
  await prom('fsp.readFile(handle)', async () => {
    const h = await fsp.open('a.txt', 'r');
    try {
      return await fsp.readFile(h, 'utf8');
    } finally {
      await h.close();
    }
  });
  await prom('fsp.open missing', () => fsp.open('missing', 'r'));
  await prom('fsp.rm', () => fsp.rm('pd', { recursive: true }));
  await prom('fsp.rename', () => fsp.rename('p.txt', 'p2.txt'));
  await prom('fsp.copyFile', () => fsp.copyFile('p2.txt', 'p3.txt'));
  await prom('fsp.unlink', () => fsp.unlink('p3.txt'));
  await prom('fsp.realpath', () => fsp.realpath('link'));
  await prom('fsp.lstat', () => fsp.lstat('link'));
  await prom('fsp.appendFile', async () => {
    await fsp.appendFile('p2.txt', '+');
    return fsp.readFile('p2.txt', 'utf8');
  });
  await prom('createReadStream', () =>
    new Promise((resolve, reject) => {
      const parts = [];
      fs.createReadStream('a.txt', { start: 1, end: 3 }).on('data', (d) => parts.push(d)).on('end', () => resolve(Buffer.concat(parts))).on('error', reject);
    }),
  );
  await prom('createWriteStream', () =>
    new Promise((resolve, reject) => {
      const w = fs.createWriteStream('ws.txt');
      w.write('one ');
      w.end('two', () => resolve(fs.readFileSync('ws.txt', 'utf8')));
      w.on('error', reject);
    }),
  );
  sync('cpSync file', () => {
    fs.cpSync('a.txt', 'cp1.txt');
    return fs.readFileSync('cp1.txt', 'utf8');
  });
  sync('cpSync dir without recursive', () => fs.cpSync('sub', 'cpdir'));
  sync('cpSync tree', () => {
    fs.cpSync('sub', 'cpdir', { recursive: true });
    return fs.readdirSync('cpdir', { recursive: true }).sort();
  });
  await prom('fsp.cp', async () => {
    await fsp.cp('sub', 'cpdir2', { recursive: true });
    return fs.readFileSync('cpdir2/deep/two.txt', 'utf8');
  });
  sync('opendirSync', () => {
    const d = fs.opendirSync('sub');
    const names = [];
    for (let e; (e = d.readSync()) !== null; ) names.push([e.name, e.isDirectory()]);
    d.closeSync();
    return [d.path, names.sort()];
  });
  await prom('fsp.opendir iterate', async () => {
    const names = [];
    for await (const e of await fsp.opendir('sub')) names.push(e.name);
    return names.sort();
  });
  sync('opendirSync missing', () => fs.opendirSync('missing'));
  sync('final listing', () => fs.readdirSync('.').filter((n) => !n.startsWith('tmp-')).sort());
  process.stdout.write(JSON.stringify(report, null, 1));
})();
