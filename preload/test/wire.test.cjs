'use strict';
// The endpoint's frame splitter (wire.cjs): JSON lines and binary frames (protocol/src/frame.rs)
// split at every possible chunk boundary.
const test = require('node:test');
const assert = require('node:assert');
const { LineSplitter, MAX_CHUNK, parseMessage, readData } = require('../wire.cjs');

function binary(header, payload) {
  return Buffer.concat([Buffer.from(`\x1e${payload.length} ${header}\n`, 'latin1'), payload]);
}

// Every byte value, newlines, the mark and 0xff.
const PAYLOAD = Buffer.from([...Array(256).keys(), 10, 0x1e, 13, 10, 0, 255]);

function feed(stream, size) {
  const got = [];
  const fatal = [];
  const s = new LineSplitter((line, payload) => got.push(payload ? [line, payload] : [line]), (m) => fatal.push(m));
  for (let i = 0; i < stream.length; i += size) s.push(stream.subarray(i, i + size));
  return { got, fatal };
}

test('binary frames between JSON lines, at every chunk size', () => {
  const stream = Buffer.concat([
    Buffer.from('{"id":1,"result":{}}\n'),
    binary('{"id":"h2","result":{"size":264}}', PAYLOAD),
    binary('{"id":3,"result":{"size":0}}', Buffer.alloc(0)),
    Buffer.from('\n{"id":4,"result":"é"}\r\n'),
  ]);
  for (let size = 1; size <= stream.length; size++) {
    const { got, fatal } = feed(stream, size);
    assert.deepStrictEqual(fatal, []);
    assert.strictEqual(got.length, 4, `chunk size ${size}`);
    assert.deepStrictEqual(got[0], ['{"id":1,"result":{}}']);
    assert.strictEqual(got[1][0], '{"id":"h2","result":{"size":264}}');
    assert.ok(got[1][1].equals(PAYLOAD), `payload at chunk size ${size}`);
    // The payload owns its whole ArrayBuffer: the helper can transfer it without a copy.
    assert.strictEqual(got[1][1].byteOffset, 0);
    assert.strictEqual(got[1][1].buffer.byteLength, PAYLOAD.length);
    assert.strictEqual(got[2][1].length, 0);
    assert.deepStrictEqual(got[3], ['{"id":4,"result":"é"}']);
    const msg = parseMessage(...got[1]);
    assert.strictEqual(msg.id, 'h2');
    assert.ok(readData(msg.result.data).equals(PAYLOAD));
  }
});

test('a bad binary header stops the stream loudly, nothing after it is delivered', () => {
  for (const header of [`\x1e${MAX_CHUNK + 1} {}\n`, '\x1e {}\n', '\x1e12x {}\n', '\x1e{}\n']) {
    const stream = Buffer.concat([Buffer.from('{"a":1}\n' + header, 'latin1'), Buffer.from('{"b":2}\n')]);
    const { got, fatal } = feed(stream, 5);
    assert.deepStrictEqual(got, [['{"a":1}']], JSON.stringify(header));
    assert.strictEqual(fatal.length, 1, JSON.stringify(header));
  }
});

test('readData takes base64 text, Buffers and Uint8Arrays', () => {
  assert.ok(readData(PAYLOAD.toString('base64')).equals(PAYLOAD));
  assert.ok(readData(new Uint8Array(PAYLOAD)).equals(PAYLOAD));
  assert.strictEqual(readData(undefined).length, 0);
});
