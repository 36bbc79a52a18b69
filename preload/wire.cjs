'use strict';
// JSON-RPC 2.0 frames, one per line, as spoken on pii's endpoint (see protocol/frame.rs).
// Shared by the helper worker (sync calls) and the main thread's async connection.

const MAX_CHUNK = 4 * 1024 * 1024; // protocol::fs::MAX_CHUNK: most bytes per fs.read/fs.write

function encode(id, method, params) {
  return JSON.stringify({ jsonrpc: '2.0', id, method, params: params === undefined ? null : params }) + '\n';
}

// Binary frames (protocol/src/frame.rs): `\x1e<len> <JSON header>\n` then exactly `len` raw
// bytes. Only answers to requests that asked for them (`fs.read` with `raw: true`) come so.
const BINARY_MARK = 0x1e;

// Splits a byte stream into lines without re-scanning what was already searched (frames may be
// several MiB, arriving in 64 KiB pieces). `onLine(text)` per JSON line; for a binary frame
// `onLine(headerText, payload)`, the payload a Buffer that owns its whole ArrayBuffer (so a
// worker can transfer it), filled with one copy from the socket's chunks. A binary header whose
// length is malformed or over MAX_CHUNK leaves the stream unreadable (where the payload ends is
// unknown): `onFatal(message)` is called once and everything after is ignored.
class LineSplitter {
  constructor(onLine, onFatal) {
    this.onLine = onLine;
    this.onFatal = onFatal || (() => {});
    this.parts = [];
    this.payload = null; // the binary payload being filled
    this.filled = 0;
    this.header = null;
    this.dead = false;
  }

  push(chunk) {
    let start = 0;
    while (!this.dead && start < chunk.length) {
      if (this.payload) {
        const take = Math.min(this.payload.length - this.filled, chunk.length - start);
        chunk.copy(this.payload, this.filled, start, start + take);
        this.filled += take;
        start += take;
        if (this.filled === this.payload.length) this.binaryDone();
        continue;
      }
      const nl = chunk.indexOf(10, start);
      if (nl === -1) {
        this.parts.push(chunk.subarray(start));
        return;
      }
      const piece = chunk.subarray(start, nl);
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      start = nl + 1;
      if (line.length && line[0] === BINARY_MARK) {
        this.binaryHeader(line);
        continue;
      }
      const text = line.toString('utf8').replace(/\r$/, '');
      if (text.length) this.onLine(text);
    }
  }

  binaryHeader(line) {
    const sp = line.indexOf(32);
    const digits = sp > 1 ? line.toString('latin1', 1, sp) : '';
    const len = /^[0-9]{1,10}$/.test(digits) ? Number(digits) : NaN;
    if (!(len <= MAX_CHUNK)) {
      this.dead = true;
      this.parts = [];
      return this.onFatal(`bad binary frame header (length ${JSON.stringify(digits)}, limit ${MAX_CHUNK})`);
    }
    this.header = line.toString('utf8', sp + 1);
    this.payload = Buffer.allocUnsafeSlow(len);
    this.filled = 0;
    if (len === 0) this.binaryDone();
  }

  binaryDone() {
    const header = this.header;
    const payload = this.payload;
    this.header = null;
    this.payload = null;
    this.onLine(header, payload);
  }
}

// A decoded fs.read `data`: base64 text (JSON answers, cache hits) or the bytes of a raw answer
// (a Buffer, or a Uint8Array after a postMessage from the helper), as a Buffer without a copy.
function readData(data) {
  if (data === undefined || data === null) return Buffer.alloc(0);
  if (typeof data === 'string') return Buffer.from(data, 'base64');
  return Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength);
}

// The parsed message of a splitter's line; a binary frame's payload becomes its result's `data`.
function parseMessage(line, payload) {
  const msg = JSON.parse(line);
  if (payload && msg && msg.result && typeof msg.result === 'object') msg.result.data = payload;
  return msg;
}

// "host:port" → {host, port}.
// net.connect options for SessionEnv.endpoint: a Unix socket path (what pii gives), or
// `host:port` (test endpoints).
function parseEndpoint(endpoint) {
  if (endpoint.startsWith('/')) return { path: endpoint };
  const i = endpoint.lastIndexOf(':');
  return { host: endpoint.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(endpoint.slice(i + 1)) };
}

module.exports = { MAX_CHUNK, encode, LineSplitter, parseEndpoint, readData, parseMessage };
