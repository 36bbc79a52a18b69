'use strict';
// One implementation, two drivers. An operation is a generator that yields remote calls as
// [method, params] and receives their results (or has their errors thrown into it). runSync
// drives it through the blocking bridge, runAsync through the main thread's connection, so the
// sync, callback and promise forms of an fs function share every line of logic.

const sync = require('./sync.cjs');
const rpc = require('./rpc.cjs');

function runSync(gen) {
  let step = gen.next();
  while (!step.done) {
    let value;
    try {
      value = sync.call(step.value[0], step.value[1]);
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(value);
  }
  return step.value;
}

async function runAsync(gen) {
  let step = gen.next();
  while (!step.done) {
    let value;
    try {
      value = await rpc.call(step.value[0], step.value[1]);
    } catch (err) {
      step = gen.throw(err);
      continue;
    }
    step = gen.next(value);
  }
  return step.value;
}

module.exports = { runSync, runAsync };
