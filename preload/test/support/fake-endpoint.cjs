'use strict';
// A stand-in for `pii`'s loopback endpoint + the agent, serving the protocol from the local disk
// with Node's own fs (unpatched: this runs as its own process). For the preload's mechanics tests
// only; the differential tests run the real `pii --local`.
// Usage: node fake-endpoint.cjs TOKEN  → prints the port on stdout.

const net = require('net');
const fs = require('fs');
const path = require('path');
const cp = require('child_process');

const token = process.argv[2];
if (!token) process.exit(0); // run as a test file by `node --test`: nothing to do
const uploads = new Map();
let uploadSeq = 0;
let subSeq = 0;
const procs = new Map();
const fds = new Map(); // the client's descriptor name → {fd, append}

const KIND = (d) => (d.isFile() ? 'file' : d.isDirectory() ? 'dir' : d.isSymbolicLink() ? 'symlink' : d.isFIFO() ? 'fifo' : d.isSocket() ? 'socket' : d.isCharacterDevice() ? 'char' : d.isBlockDevice() ? 'block' : 'unknown');
const T = (ns) => [Number(ns / 1_000_000_000n), Number(ns % 1_000_000_000n)];
const flagOf = (f) => ({ w: 'w', wx: 'wx', a: 'a', ax: 'ax' })[f || 'w'];

function stat(p, l) {
  const s = (l ? fs.lstatSync : fs.statSync)(p, { bigint: true });
  const n = (k) => Number(s[k]);
  return { dev: n('dev'), ino: n('ino'), mode: n('mode'), nlink: n('nlink'), uid: n('uid'), gid: n('gid'), rdev: n('rdev'), size: n('size'), blksize: n('blksize'), blocks: n('blocks'), atime: T(s.atimeNs), mtime: T(s.mtimeNs), ctime: T(s.ctimeNs), birthtime: T(s.birthtimeNs) };
}

const C = fs.constants;
const openFlags = (f) =>
  (f.read && f.write ? C.O_RDWR : f.write ? C.O_WRONLY : C.O_RDONLY) |
  (f.create ? C.O_CREAT : 0) | (f.exclusive ? C.O_EXCL : 0) | (f.truncate ? C.O_TRUNC : 0) |
  (f.append ? C.O_APPEND : 0) | (f.nofollow ? C.O_NOFOLLOW : 0) | (f.directory ? C.O_DIRECTORY : 0) | C.O_NONBLOCK;
const fdOf = (p, syscall) => {
  const e = fds.get(p.fd);
  if (!e) throw Object.assign(new Error('bad fd'), { code: 'EBADF', syscall });
  return e;
};
const secs = (t) => t[0] + t[1] / 1e9;

const methods = {
  'session.info': () => ({ agentVersion: 'fake', facts: {} }),
  'fs.stat': (p) => stat(p.path, p.lstat),
  'fs.access': (p) => fs.accessSync(p.path, p.mode) ?? null,
  'fs.readdir': (p) => ({ entries: readdir(p.path, p.recursive, p.follow) }),
  'fs.read': (p) => {
    const fd = fs.openSync(p.path, 'r');
    try {
      const size = fs.fstatSync(fd).size;
      const buf = Buffer.alloc(Math.min(p.length ?? 4194304, 4194304));
      const n = fs.readSync(fd, buf, 0, buf.length, p.offset || 0);
      return { data: buf.subarray(0, n).toString('base64'), size };
    } finally {
      fs.closeSync(fd);
    }
  },
  'fs.write': (p) => fs.writeFileSync(p.path, Buffer.from(p.data, 'base64'), { flag: flagOf(p.flag), mode: p.mode }) ?? null,
  'fs.upload.begin': (p) => {
    const id = `u${++uploadSeq}`;
    uploads.set(id, { ...p, parts: [] });
    return { id };
  },
  'fs.upload.chunk': (p) => uploads.get(p.id).parts.push(Buffer.from(p.data, 'base64')) && null,
  'fs.upload.commit': (p) => {
    const u = uploads.get(p.id);
    uploads.delete(p.id);
    fs.writeFileSync(u.path, Buffer.concat(u.parts), { flag: flagOf(u.flag), mode: u.mode });
    return null;
  },
  'fs.upload.abort': (p) => uploads.delete(p.id) && null,
  'fs.mkdir': (p) => ({ first: fs.mkdirSync(p.path, { recursive: p.recursive, mode: p.mode }) ?? null }),
  'fs.rmdir': (p) => fs.rmdirSync(p.path) ?? null,
  'fs.unlink': (p) => fs.unlinkSync(p.path) ?? null,
  'fs.rm': (p) => fs.rmSync(p.path, { recursive: p.recursive, force: p.force }) ?? null,
  'fs.rename': (p) => fs.renameSync(p.from, p.to) ?? null,
  'fs.copyFile': (p) => fs.copyFileSync(p.from, p.to, p.exclusive ? fs.constants.COPYFILE_EXCL : 0) ?? null,
  'fs.realpath': (p) => fs.realpathSync.native(p.path),
  'fs.readlink': (p) => fs.readlinkSync(p.path),
  'fs.symlink': (p) => fs.symlinkSync(p.target, p.path) ?? null,
  'fs.link': (p) => fs.linkSync(p.from, p.to) ?? null,
  'fs.chmod': (p) => fs.chmodSync(p.path, p.mode) ?? null,
  'fs.utimes': (p) => (p.lstat ? fs.lutimesSync : fs.utimesSync)(p.path, p.atime[0] + p.atime[1] / 1e9, p.mtime[0] + p.mtime[1] / 1e9) ?? null,
  'fs.truncate': (p) => fs.truncateSync(p.path, p.length) ?? null,
  'fs.mkdtemp': (p) => fs.mkdtempSync(p.prefix),
  'fs.chown': (p) => (p.lstat ? fs.lchownSync : fs.chownSync)(p.path, p.uid ?? -1, p.gid ?? -1) ?? null,
  'fs.statfs': (p) => {
    const s = fs.statfsSync(p.path);
    return { type: s.type, bsize: s.bsize, frsize: s.frsize ?? s.bsize, blocks: s.blocks, bfree: s.bfree, bavail: s.bavail, files: s.files, ffree: s.ffree };
  },
  'fs.open': (p) => {
    if (!fds.has(p.fd)) {
      const fd = fs.openSync(p.path, openFlags(p.flags), p.mode ?? 0o666);
      fds.set(p.fd, { fd, append: !!p.flags.append });
    }
    const st = stat(`/proc/self/fd/${fds.get(p.fd).fd}`, false);
    return { stat: st };
  },
  'fs.pread': (p) => {
    const { fd } = fdOf(p, 'read');
    const buf = Buffer.alloc(Math.min(p.length ?? 4194304, 4194304));
    const n = fs.readSync(fd, buf, 0, buf.length, p.offset);
    return { data: buf.subarray(0, n).toString('base64'), size: fs.fstatSync(fd).size };
  },
  'fs.pwrite': (p) => {
    const { fd } = fdOf(p, 'write');
    const data = Buffer.from(p.data, 'base64');
    fs.writeSync(fd, data, 0, data.length, p.offset);
    return { written: data.length, position: p.offset + data.length };
  },
  'fs.fappend': (p) => {
    const { fd } = fdOf(p, 'write');
    const data = Buffer.from(p.data, 'base64');
    fs.writeSync(fd, data);
    return { written: data.length, position: fs.fstatSync(fd).size };
  },
  'fs.fstat': (p) => stat(`/proc/self/fd/${fdOf(p, 'fstat').fd}`, false),
  'fs.ftruncate': (p) => fs.ftruncateSync(fdOf(p, 'ftruncate').fd, p.length) ?? null,
  'fs.fchmod': (p) => fs.fchmodSync(fdOf(p, 'fchmod').fd, p.mode) ?? null,
  'fs.fchown': (p) => fs.fchownSync(fdOf(p, 'fchown').fd, p.uid ?? -1, p.gid ?? -1) ?? null,
  'fs.futimes': (p) => fs.futimesSync(fdOf(p, 'futime').fd, secs(p.atime), secs(p.mtime)) ?? null,
  'fs.fsync': (p) => (p.data ? fs.fdatasyncSync : fs.fsyncSync)(fdOf(p, p.data ? 'fdatasync' : 'fsync').fd) ?? null,
  'fs.close': (p) => {
    const e = fds.get(p.fd);
    if (e) {
      fds.delete(p.fd);
      fs.closeSync(e.fd);
    }
    return null;
  },
  'proc.run': (p) => {
    const s = p.spawn;
    const r = cp.spawnSync(s.file, s.args, { cwd: s.cwd, env: envFor(s), input: p.input ? Buffer.from(p.input, 'base64') : undefined, timeout: p.timeoutMs, killSignal: p.killSignal, maxBuffer: p.maxBuffer });
    if (r.error && r.error.code === 'ENOENT') return { pid: 0, stdout: '', stderr: '', code: null, signal: null, error: { code: 'ENOENT', syscall: `spawnSync ${s.file}`, path: s.file } };
    return { pid: r.pid, stdout: (r.stdout || Buffer.alloc(0)).toString('base64'), stderr: (r.stderr || Buffer.alloc(0)).toString('base64'), code: r.status, signal: r.signal, timedOut: !!(r.error && r.error.code === 'ETIMEDOUT'), maxBufferExceeded: !!(r.error && r.error.code === 'ENOBUFS') };
  },
  'proc.stdin': (p) => {
    const c = procs.get(p.pid);
    if (c) {
      if (p.data) c.stdin.write(Buffer.from(p.data, 'base64'));
      if (p.eof) c.stdin.end();
    }
    return null;
  },
  'proc.kill': (p) => {
    process.kill(p.group ? -p.pid : p.pid, p.signal);
    return true;
  },
};

// Node's recursive order (breadth first); through symlinked directories with `follow`.
function readdir(root, recursive, follow) {
  const out = [];
  const queue = [''];
  while (queue.length) {
    const rel = queue.shift();
    const entries = fs.readdirSync(path.join(root, rel), { withFileTypes: true }).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const d of entries) {
      const name = rel ? `${rel}/${d.name}` : d.name;
      out.push({ name, kind: KIND(d) });
      if (!recursive) continue;
      let dir = d.isDirectory();
      if (!dir && follow && d.isSymbolicLink()) {
        try {
          dir = fs.statSync(path.join(root, name)).isDirectory();
        } catch {
          dir = false;
        }
      }
      if (dir) queue.push(name);
    }
  }
  return out;
}

function envFor(s) {
  const env = { ...process.env, ...s.env };
  for (const k of s.unset || []) delete env[k];
  return env;
}

function subscribe(method, p, send) {
  const sid = `s${++subSeq}`;
  const note = (notif, result) => send({ jsonrpc: '2.0', method: notif, params: { subscription: sid, result } });
  setImmediate(() => {
    if (method === 'proc.spawn') {
      const c = cp.spawn(p.file, p.args || [], { cwd: p.cwd, env: envFor(p), detached: true, argv0: p.argv0, stdio: [p.stdin ? 'pipe' : 'ignore', p.stdout === false ? 'ignore' : 'pipe', p.stderr === false ? 'ignore' : 'pipe'] });
      c.on('error', (e) => note('proc.event', { type: 'error', error: { code: e.code, syscall: `spawn ${p.file}`, path: p.file } }));
      c.on('spawn', () => {
        procs.set(c.pid, c);
        note('proc.event', { type: 'spawned', pid: c.pid });
      });
      c.stdout && c.stdout.on('data', (d) => note('proc.event', { type: 'stdout', data: d.toString('base64') }));
      c.stderr && c.stderr.on('data', (d) => note('proc.event', { type: 'stderr', data: d.toString('base64') }));
      c.on('close', (code, signal) => c.pid && note('proc.event', { type: 'exit', code, signal }));
    } else {
      const w = fs.watch(p.path, { recursive: p.recursive }, (eventType, filename) => note('watch.event', { type: 'event', eventType, filename }));
      w.on('error', (e) => note('watch.event', { type: 'error', error: { code: e.code, syscall: 'watch', path: p.path } }));
    }
  });
  return sid;
}

function handle(line, send) {
  const m = JSON.parse(line);
  try {
    let result;
    if (m.method === 'proc.spawn' || m.method === 'watch.start') result = subscribe(m.method, m.params, send);
    else if (methods[m.method]) result = methods[m.method](m.params);
    else return send({ jsonrpc: '2.0', id: m.id, error: { code: -32601, message: `no method ${m.method}` } });
    send({ jsonrpc: '2.0', id: m.id, result: result === undefined ? null : result });
  } catch (e) {
    send({ jsonrpc: '2.0', id: m.id, error: { code: -32000, message: e.message, data: { code: (e.code || 'EIO').replace(/^ERR_FS_/, ''), syscall: e.syscall || 'unknown', ...(e.path ? { path: e.path } : {}), ...(e.dest ? { dest: e.dest } : {}) } } });
  }
}

const server = net.createServer((sock) => {
  let buf = '';
  let authed = false;
  const send = (obj) => sock.write(JSON.stringify(obj) + '\n');
  sock.on('error', () => {});
  sock.on('data', (d) => {
    buf += d.toString('utf8');
    let nl;
    while ((nl = buf.indexOf('\n')) >= 0) {
      const line = buf.slice(0, nl);
      buf = buf.slice(nl + 1);
      if (!authed) {
        if (line !== token) return sock.destroy();
        authed = true;
      } else if (line.trim()) handle(line, send);
    }
  });
});
server.listen(0, '127.0.0.1', () => process.stdout.write(`${server.address().port}\n`));
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
