'use strict';
// JSON-RPC 2.0 frames, one per line, as spoken on the loopback endpoint (see protocol/frame.rs).
// Shared by the helper worker (sync calls) and the main thread's async connection.

const MAX_CHUNK = 4 * 1024 * 1024; // protocol::fs::MAX_CHUNK: most bytes per fs.read/fs.write

function encode(id, method, params) {
  return JSON.stringify({ jsonrpc: '2.0', id, method, params: params === undefined ? null : params }) + '\n';
}

// Splits a byte stream into lines without re-scanning what was already searched (frames may be
// several MiB, arriving in 64 KiB pieces).
class LineSplitter {
  constructor(onLine) {
    this.onLine = onLine;
    this.parts = [];
  }

  push(chunk) {
    let start = 0;
    let nl;
    while ((nl = chunk.indexOf(10, start)) !== -1) {
      const piece = chunk.subarray(start, nl);
      const line = this.parts.length ? Buffer.concat([...this.parts, piece]) : piece;
      this.parts = [];
      start = nl + 1;
      const text = line.toString('utf8').replace(/\r$/, '');
      if (text.length) this.onLine(text);
    }
    if (start < chunk.length) this.parts.push(chunk.subarray(start));
  }
}

// "host:port" → {host, port}.
function parseEndpoint(endpoint) {
  const i = endpoint.lastIndexOf(':');
  return { host: endpoint.slice(0, i).replace(/^\[|\]$/g, ''), port: Number(endpoint.slice(i + 1)) };
}

module.exports = { MAX_CHUNK, encode, LineSplitter, parseEndpoint };
