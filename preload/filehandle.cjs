'use strict';
// fs.promises.open on a routed path: a FileHandle over a remote descriptor (fds.cjs).
//
// Node's FileHandle class is not exported; its prototype comes from a real local handle (opened
// once, on this file) and sits under ours, so `instanceof` checks inside Node hold (a
// ReadStream/WriteStream given `{fd: handle}`, `readline`, `fsPromises.readFile(handle)`). Every
// member of Node's prototype is defined here except the ones Node builds on the public methods
// alone (createReadStream, createWriteStream, readLines: see api.cjs), which stay Node's own.
// Node's own streams on such a handle go through FileHandleOperations, i.e. this handle's read,
// write, writev and close, and its kRef/kUnref (found on Node's prototype by their names).

const { EventEmitter } = require('events');
const fsp = require('fs/promises');
const fds = require('./fds.cjs');
const { runAsync } = require('./run.cjs');
const { opts, encodeOut, writeDataOf, toTime } = require('./fsdata.cjs');
const { fsError } = require('./errors.cjs');

const origOpen = fsp.open; // before fs.cjs patches fs/promises

const FD = Symbol('pi-bridge.fd');
const CLOSING = Symbol('pi-bridge.closing');
const HANDLE = Symbol('pi-bridge.FileHandle');

let nodeProto = null;
let ready = null;

// Node's FileHandle.prototype, from a real handle (once; async, like every promise-API call).
function nodeFileHandle() {
  if (!ready) {
    ready = origOpen(__filename, 'r').then(async (h) => {
      nodeProto = Object.getPrototypeOf(h);
      await h.close();
      adopt(nodeProto);
      return nodeProto;
    });
  }
  return ready;
}

// Node's internal symbols on its prototype, by description.
function nodeSymbol(proto, name) {
  return Object.getOwnPropertySymbols(proto).find((s) => s.description === name);
}

const closedError = (syscall) => Object.assign(new Error('file closed'), { code: 'EBADF', syscall });

// Node's fsCall: a closed handle fails with `file closed`; else run the fd operation.
function call(h, syscall, gen) {
  if (h[FD] === -1) return Promise.reject(closedError(syscall));
  return runAsync(gen(h[FD]));
}

class FileHandle extends EventEmitter {
  constructor(fd) {
    super();
    this[FD] = fd;
    this[CLOSING] = null;
    // An own property, as Node's class field is. As Node's: the handle is closed (fd -1,
    // 'close' emitted) at once; the promise settles with the descriptor's close.
    this.close = () => {
      if (this[CLOSING]) return this[CLOSING];
      if (this[FD] === -1) return Promise.resolve();
      const fd = this[FD];
      this[FD] = -1;
      this[CLOSING] = runAsync(fds.close(fd)).finally(() => {
        this[CLOSING] = null;
      });
      this.emit('close');
      return this[CLOSING];
    };
  }

  get fd() {
    return this[FD];
  }

  // The async id of Node's native handle; a remote descriptor has none.
  getAsyncId() {
    return -1;
  }

  read(bufferOrOptions, offset, length, position) {
    let buffer = bufferOrOptions;
    if (buffer === undefined || buffer === null || (typeof buffer === 'object' && !ArrayBuffer.isView(buffer))) {
      const o = buffer || {};
      buffer = o.buffer === undefined ? Buffer.alloc(16384) : o.buffer;
      ({ offset = 0, length = buffer.byteLength - offset, position = null } = o);
    } else if (offset !== null && typeof offset === 'object') {
      const o = offset;
      ({ offset = 0, length = buffer.byteLength - offset, position = null } = o);
    }
    offset = offset === undefined || offset === null ? 0 : Number(offset);
    if (length === undefined || length === null) length = buffer.byteLength - offset;
    if (typeof position === 'bigint') position = Number(position);
    if (typeof position !== 'number' || position < 0) position = null;
    return call(this, 'read', (fd) => fds.read(fd, buffer, offset, length, position)).then((bytesRead) => ({ bytesRead, buffer }));
  }

  readv(buffers, position = null) {
    if (typeof position !== 'number' || position < 0) position = null;
    return call(this, 'readv', (fd) => fds.readv(fd, buffers, position)).then((bytesRead) => ({ bytesRead, buffers }));
  }

  readFile(options) {
    const { encoding, signal } = opts(options, {});
    return call(this, 'readFile', function* (fd) {
      if (signal && signal.aborted) throw abortError(signal);
      return encodeOut(yield* fds.readRest(fd), encoding);
    });
  }

  write(data, offsetOrOptions, length, position) {
    let buf;
    let pos;
    if (typeof data === 'string') {
      // write(string, position, encoding)
      buf = Buffer.from(data, typeof length === 'string' ? length : 'utf8');
      pos = offsetOrOptions;
    } else {
      const whole = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
      let offset = offsetOrOptions;
      if (offset !== null && typeof offset === 'object') ({ offset = 0, length, position = null } = offset);
      offset = offset || 0;
      if (length === undefined || length === null) length = whole.length - offset;
      buf = whole.subarray(offset, offset + length);
      pos = position;
    }
    if (typeof pos === 'bigint') pos = Number(pos);
    if (typeof pos !== 'number' || pos < 0) pos = null;
    return call(this, 'write', (fd) => fds.write(fd, buf, pos)).then((bytesWritten) => ({ bytesWritten, buffer: data }));
  }

  writev(buffers, position = null) {
    if (typeof position !== 'number' || position < 0) position = null;
    const all = Buffer.concat(buffers.map((b) => Buffer.from(b.buffer, b.byteOffset, b.byteLength)));
    return call(this, 'writev', (fd) => fds.write(fd, all, position)).then((bytesWritten) => ({ bytesWritten, buffers }));
  }

  // writeFile/appendFile on a handle: from its position on (Node's own rule), any data Node
  // takes (strings, buffers, iterables, async iterables, streams).
  writeFile(data, options) {
    return writeAllData(this, data, options);
  }

  appendFile(data, options) {
    return writeAllData(this, data, options);
  }

  stat(options) {
    return call(this, 'fstat', (fd) => fds.stat(fd, options && options.bigint));
  }

  truncate(len = 0) {
    return call(this, 'ftruncate', (fd) => fds.truncate(fd, Math.max(0, Number(len) || 0)));
  }

  chmod(mode) {
    return call(this, 'fchmod', (fd) => fds.chmod(fd, typeof mode === 'string' ? parseInt(mode, 8) : mode));
  }

  chown(uid, gid) {
    return call(this, 'fchown', (fd) => fds.chown(fd, uid, gid));
  }

  utimes(atime, mtime) {
    return call(this, 'futimes', (fd) => fds.utimes(fd, toTime(atime), toTime(mtime)));
  }

  sync() {
    return call(this, 'fsync', (fd) => fds.sync(fd, false));
  }

  datasync() {
    return call(this, 'fdatasync', (fd) => fds.sync(fd, true));
  }

  // A byte stream of the file from the handle's position (Node 20's default non-byte stream and
  // later Nodes' byte stream give the same bytes).
  readableWebStream(options = {}) {
    if (this[FD] === -1) throw nodeStateError('The FileHandle is closed');
    const { ReadableStream } = require('stream/web');
    const handle = this;
    const autoClose = !!(options && options.autoClose);
    return new ReadableStream({
      type: 'bytes',
      autoAllocateChunkSize: 16384,
      async pull(controller) {
        const view = controller.byobRequest.view;
        const { bytesRead } = await handle.read(view, view.byteOffset, view.byteLength);
        if (bytesRead === 0) {
          controller.close();
          if (autoClose) await handle.close();
        }
        controller.byobRequest.respond(bytesRead);
      },
      async cancel() {
        if (autoClose) await handle.close();
      },
    });
  }

  async [Symbol.asyncDispose]() {
    return this.close();
  }
}

function abortError(signal) {
  const { AbortError } = require('./errors.cjs');
  return new AbortError(undefined, { cause: signal.reason });
}

function nodeStateError(message) {
  const { nodeError } = require('./errors.cjs');
  return nodeError(Error, 'ERR_INVALID_STATE', `Invalid state: ${message}`);
}

async function writeAllData(handle, data, options) {
  const { encoding, signal } = opts(options, { encoding: 'utf8' });
  if (handle[FD] === -1) throw closedError('writeFile');
  const fd = handle[FD];
  for await (const chunk of writeDataOf(data, encoding, signal)) {
    await runAsync(fds.write(fd, chunk, null));
  }
}

// Node's prototype found: ours sits on it; its internal symbol members get our versions.
function adopt(proto) {
  Object.setPrototypeOf(FileHandle.prototype, proto);
  // Node counts the streams that use a handle (kRef/kUnref) to delay its close until they are
  // done; a remote handle closes when asked (its descriptor's close is the agent's), so these
  // only have to exist.
  for (const name of ['kRef', 'kUnref']) {
    const sym = nodeSymbol(proto, name);
    if (sym) FileHandle.prototype[sym] = function () {};
  }
  const kCloseSync = nodeSymbol(proto, 'kCloseSync');
  if (kCloseSync) FileHandle.prototype[kCloseSync] = function () {
    if (this[FD] === -1) return;
    require('fs').closeSync(this[FD]);
    this[FD] = -1;
  };
  for (const name of ['messaging_transfer_symbol', 'messaging_transfer_list_symbol', 'messaging_deserialize_symbol']) {
    const sym = nodeSymbol(proto, name);
    if (sym) FileHandle.prototype[sym] = function () {
      throw fsError({ code: 'EINVAL', syscall: 'transfer', detail: 'pi-bridge: a remote FileHandle cannot be sent to a worker' });
    };
  }
}

// A FileHandle for a remote fd (after the fd's open; awaits Node's prototype the first time).
async function handle(fd) {
  await nodeFileHandle();
  const h = new FileHandle(fd);
  h[HANDLE] = true;
  return h;
}

const isHandle = (h) => !!(h && typeof h === 'object' && h[HANDLE]);

module.exports = { FileHandle, handle, isHandle, nodeFileHandle, nodeSymbol };
