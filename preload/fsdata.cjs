'use strict';
// Node's argument shapes, one definition for fsops.cjs (paths) and filehandle.cjs (handles):
// option shorthands, encodings, data to write (strings, buffers, iterables, streams), modes,
// times.

const { nodeError, AbortError } = require('./errors.cjs');

// Node's option shorthands: a string is the encoding; null/undefined the defaults.
function opts(o, defaults) {
  if (o === null || o === undefined || typeof o === 'function') return { ...defaults };
  if (typeof o === 'string') return { ...defaults, encoding: o };
  return { ...defaults, ...o };
}

function encodeOut(buf, encoding) {
  return encoding && encoding !== 'buffer' ? buf.toString(encoding) : buf;
}

function toBuffer(data, encoding) {
  if (typeof data === 'string') return Buffer.from(data, encoding || 'utf8');
  if (Buffer.isBuffer(data)) return data;
  if (ArrayBuffer.isView(data)) return Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  return Buffer.from(String(data), encoding || 'utf8');
}

const isIterable = (d) => !!d && typeof d === 'object' && !ArrayBuffer.isView(d) && (typeof d[Symbol.asyncIterator] === 'function' || typeof d[Symbol.iterator] === 'function');

// What fsPromises.writeFile / FileHandle.writeFile write, as Buffers, in order: the data itself,
// or each chunk of an (async) iterable or stream (strings in `encoding`). The signal is checked
// before each chunk, as Node does.
async function* writeDataOf(data, encoding, signal) {
  const check = () => {
    if (signal && signal.aborted) throw new AbortError(undefined, { cause: signal.reason });
  };
  check();
  if (!isIterable(data)) {
    yield toBuffer(data, encoding);
    return;
  }
  // Node's own rule for each chunk: a view as it is, anything else through Buffer.from (which
  // throws Node's error for what it cannot take).
  for await (const chunk of data) {
    check();
    yield ArrayBuffer.isView(chunk) ? Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength) : Buffer.from(chunk, encoding || 'utf8');
  }
}

function parseMode(mode, dflt) {
  if (mode === undefined || mode === null) return dflt;
  if (typeof mode === 'string') return parseInt(mode, 8);
  return mode;
}

// Node's toUnixTimestamp, then [sec, nsec].
function toTime(t) {
  let secs;
  if (typeof t === 'string' && +t == t) secs = +t; // eslint-disable-line eqeqeq
  else if (typeof t === 'number' && Number.isFinite(t)) secs = t < 0 ? Date.now() / 1000 : t;
  else if (t instanceof Date) secs = t.getTime() / 1000;
  else if (typeof t === 'bigint') secs = Number(t);
  else {
    throw nodeError(TypeError, 'ERR_INVALID_ARG_TYPE', `The "time" argument must be of type number. Received ${typeof t}`);
  }
  const sec = Math.floor(secs);
  const nsec = Math.min(999_999_999, Math.max(0, Math.round((secs - sec) * 1e9)));
  return [sec, nsec];
}

module.exports = { opts, encodeOut, toBuffer, isIterable, writeDataOf, parseMode, toTime };
