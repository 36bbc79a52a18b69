'use strict';
// fs.createReadStream / createWriteStream on routed paths. Reads are async fs.read calls of at
// most highWaterMark bytes (start/end honoured); writes stream through an upload, so memory stays
// bounded and the target is replaced atomically at the end.

const { Readable, Writable } = require('stream');
const route = require('./route.cjs');
const rpc = require('./rpc.cjs');
const { MAX_CHUNK, readData } = require('./wire.cjs');
const { fsError, WIRE } = require('./errors.cjs');

const UPLOAD_PIECE = 1024 * 1024;

function withPath(err, disp, syscall) {
  const w = err && err[WIRE];
  return w ? fsError({ ...w, path: disp, syscall: syscall || w.syscall }) : err;
}

function readStream(abs, disp, options) {
  const o = typeof options === 'string' ? { encoding: options } : options || {};
  const start = o.start || 0;
  const end = o.end === undefined || o.end === Infinity ? Infinity : o.end;
  let pos = start;
  const s = new Readable({
    highWaterMark: o.highWaterMark || 64 * 1024,
    encoding: o.encoding || undefined,
    signal: o.signal,
    construct(cb) {
      rpc.call('fs.stat', { path: abs, lstat: false }).then(
        () => {
          process.nextTick(() => {
            s.emit('open', -1);
            s.emit('ready');
          });
          cb();
        },
        (err) => cb(withPath(err, disp, 'open')),
      );
    },
    read(size) {
      const want = Math.min(size, MAX_CHUNK, end - pos + 1);
      if (want <= 0) return this.push(null);
      rpc.call('fs.read', { path: abs, offset: pos, length: want, raw: true }).then(
        (r) => {
          const data = readData(r.data);
          pos += data.length;
          s.bytesRead += data.length;
          this.push(data.length ? data : null);
        },
        (err) => {
          // Opening a directory works; reading it fails with EISDIR and no path, as in Node.
          const w = err && err[WIRE];
          this.destroy(w && w.code === 'EISDIR' ? fsError({ code: 'EISDIR', syscall: 'read' }) : withPath(err, disp));
        },
      );
    },
  });
  s.path = disp;
  s.bytesRead = 0;
  s.pending = false;
  s.close = (cb) => s.destroy(null) && cb && process.nextTick(cb);
  return s;
}

function writeStream(abs, disp, options) {
  const o = typeof options === 'string' ? { encoding: options } : options || {};
  const f = String(o.flags || 'w');
  const flag = (f.includes('a') ? 'a' : 'w') + (f.includes('x') ? 'x' : '');
  let id = null;
  let pending = [];
  let pendingLen = 0;
  const flush = async () => {
    if (!pendingLen) return;
    const data = Buffer.concat(pending).toString('base64');
    pending = [];
    pendingLen = 0;
    await rpc.call('fs.upload.chunk', { id, data });
  };
  const s = new Writable({
    highWaterMark: o.highWaterMark || 64 * 1024,
    decodeStrings: true,
    defaultEncoding: o.encoding || 'utf8',
    signal: o.signal,
    construct(cb) {
      const mode = o.mode === undefined ? {} : { mode: o.mode };
      rpc.call('fs.upload.begin', { path: abs, flag, ...mode }).then(
        (r) => {
          id = r.id;
          process.nextTick(() => {
            s.emit('open', -1);
            s.emit('ready');
          });
          cb();
        },
        (err) => cb(withPath(err, disp, 'open')),
      );
    },
    write(chunk, _enc, cb) {
      pending.push(chunk);
      pendingLen += chunk.length;
      s.bytesWritten += chunk.length;
      if (pendingLen < UPLOAD_PIECE) return cb();
      flush().then(() => cb(), (err) => cb(withPath(err, disp)));
    },
    final(cb) {
      flush()
        .then(() => rpc.call('fs.upload.commit', { id }))
        .then(() => cb(), (err) => cb(withPath(err, disp)));
    },
    destroy(err, cb) {
      if (id !== null && err) rpc.call('fs.upload.abort', { id }).catch(() => {});
      cb(err);
    },
  });
  s.path = disp;
  s.bytesWritten = 0;
  s.pending = false;
  s.close = (cb) => {
    if (cb) s.once('close', cb);
    s.end();
  };
  return s;
}

function install(fs) {
  const origRead = fs.createReadStream;
  const origWrite = fs.createWriteStream;
  fs.createReadStream = function createReadStream(p, options) {
    const abs = route.routed(p);
    if (!abs) return Reflect.apply(origRead, this, arguments);
    return readStream(abs, route.toPathString(p), options);
  };
  fs.createWriteStream = function createWriteStream(p, options) {
    const abs = route.routed(p);
    if (!abs) return Reflect.apply(origWrite, this, arguments);
    return writeStream(abs, route.toPathString(p), options);
  };
}

module.exports = { install, readStream };
