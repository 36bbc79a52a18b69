'use strict';
// child_process on the remote: under pii every process pi starts runs on the agent, in the
// remote cwd (options.cwd, else process.cwd()). A cwd that stays local (route.cjs: pi's agent
// dir, its install dir, …) is refused with EACCES instead: no process ever starts on this
// machine, whatever config or session data chose the cwd. exec/execFile and the *Sync variants
// are ported from Node's lib/child_process.js so their results and errors have Node's exact
// shape.

const cp = require('child_process');
const os = require('os');
const path = require('path');
const util = require('util');
const { EventEmitter } = require('events');
const { Readable, Writable } = require('stream');
const route = require('./route.cjs');
const rpc = require('./rpc.cjs');
const sync = require('./sync.cjs');
const { errnoError, nodeError, WIRE, AbortError } = require('./errors.cjs');
const shapes = require('./shapes.cjs'); // loaded before install(): it keeps the originals

const VPID_BASE = 10_000_000;
let nextVpid = 1;
const children = new Map(); // virtual pid → RemoteChild

// ---- environment -------------------------------------------------------------------------

let startupEnv = { ...process.env };

function setStartupEnv(env) {
  startupEnv = { ...env };
}

const MACHINE_NAMES = new Set(['HOME', 'USER', 'LOGNAME', 'SHELL', 'TMPDIR', 'TMP', 'TEMP', 'PWD', 'OLDPWD', 'PATH', 'DISPLAY', 'NODE_OPTIONS']);
const MACHINE_PREFIXES = ['SSH_', 'XDG_', 'TERM_PROGRAM', 'PII_'];

function isMachineSpecific(name) {
  return MACHINE_NAMES.has(name) || MACHINE_PREFIXES.some((p) => name.startsWith(p));
}

// What the caller changed relative to node's startup env: {env, unset}. The agent starts from
// the remote login env, so only differences travel.
function envDelta(env, base = startupEnv) {
  const out = {};
  const unset = [];
  for (const k of Object.keys(env)) {
    const v = env[k];
    if (v === undefined || isMachineSpecific(k)) continue;
    if (base[k] !== String(v)) out[k] = String(v);
  }
  for (const k of Object.keys(base)) {
    if (!isMachineSpecific(k) && (!Object.prototype.hasOwnProperty.call(env, k) || env[k] === undefined)) unset.push(k);
  }
  return { env: out, unset };
}

// ---- arguments ---------------------------------------------------------------------------

// Node's normalizeSpawnArguments, the parts that matter here: shell resolution and argv0.
// Returns the program as the caller sees it (`file`, `args`) — what Node's errors name.
function resolveShell(file, args, options) {
  if (!Array.isArray(args)) {
    if (args && typeof args === 'object') options = args;
    args = [];
  }
  options = options || {};
  args = args.slice();
  if (options.shell) {
    const command = [file, ...args].join(' ');
    file = typeof options.shell === 'string' ? options.shell : '/bin/sh';
    args = ['-c', command];
  }
  return { file, args, options };
}

// A program named by a path that stays local (~/.pi/agent/bin/rg, process.execPath) becomes its
// basename, looked up in the remote login PATH; any other path is the remote's already.
function remoteProgram(file) {
  if (path.isAbsolute(file) && !route.isRoutedAbsolute(path.resolve(file))) return path.basename(file);
  return file;
}

// Where a call runs: {cwd} (the remote cwd), {refused, shown} (a cwd that stays local), or
// {node: true} (a cwd that is no path at all: Node's own call rejects it before starting
// anything).
function remoteCwd(options) {
  const c = options && options.cwd;
  if (c === undefined || c === null || c === '') {
    const here = route.routed(route.cwd());
    return here ? { cwd: here } : { refused: { why: 'the current directory' }, shown: route.cwd() };
  }
  const abs = route.absoluteOf(c);
  if (abs === null) return { node: true };
  const l = route.localEntry(abs);
  return l ? { refused: l, shown: route.toPathString(c) } : { cwd: abs };
}

// The error a refused local cwd gets (what Node reports for a cwd it may not enter).
function refusal(where, file, args) {
  const err = errnoError('EACCES', `spawn ${file}`, { path: file, spawnargs: args || [] });
  err.message += ` (pi-bridge: the cwd ${where.shown} is on this machine, ${where.refused.why}; processes run on the remote only)`;
  return err;
}

// A child that fails as Node's does when its spawn fails (asynchronously: 'error', 'close').
function refusedChild(file, args, where) {
  const child = new RemoteChild(file, Array.isArray(args) ? args : []);
  child._modes = ['pipe', 'pipe', 'pipe'];
  process.nextTick(() => child._fail(refusal(where, file, Array.isArray(args) ? args : [])));
  return child;
}

// 'pipe' | 'ignore' | 'inherit' for fds 0..2, as Node's getValidStdio reads `stdio`.
function stdioModes(stdio) {
  let s = stdio === undefined || stdio === null ? 'pipe' : stdio;
  if (typeof s === 'string') s = [s, s, s];
  return [0, 1, 2].map((i) => {
    const v = s[i];
    if (v === undefined || v === null || v === 'pipe' || v === 'overlapped') return 'pipe';
    if (v === 'ignore') return 'ignore';
    if (v === 'inherit' || v === i) return 'inherit';
    if (v && typeof v === 'object' && (v.fd === i || v === [process.stdin, process.stdout, process.stderr][i])) return 'inherit';
    return 'pipe';
  });
}

function spawnParams(file, args, options, cwd, modes) {
  const { env, unset } = envDelta(options.env || process.env);
  const p = { file: remoteProgram(file), args, cwd, env, unset, stdin: modes[0] === 'pipe', stdout: modes[1] !== 'ignore', stderr: modes[2] !== 'ignore' };
  if (typeof options.argv0 === 'string') p.argv0 = options.argv0;
  else if (p.file !== file) p.argv0 = file; // Node's argv[0] is the program as given (`$0` of a shell)
  return p;
}

function signalName(sig) {
  if (sig === undefined || sig === null) return 'SIGTERM';
  if (typeof sig === 'number') {
    for (const [name, n] of Object.entries(os.constants.signals)) if (n === sig) return name;
    return String(sig);
  }
  return String(sig);
}

// ---- the ChildProcess look-alike ---------------------------------------------------------

class RemoteChild extends EventEmitter {
  constructor(file, args) {
    super();
    this.spawnfile = file;
    this.spawnargs = [file, ...args];
    this.pid = VPID_BASE + nextVpid++;
    this.exitCode = null;
    this.signalCode = null;
    this.killed = false;
    this.connected = false;
    this.stdin = null;
    this.stdout = null;
    this.stderr = null;
    this.stdio = [null, null, null];
    this._remotePid = null;
    this._waiting = []; // work queued until the process is spawned
    this._done = false; // spawn failed or exit seen
    this._release = rpc.hold();
    children.set(this.pid, this);
  }

  _start(params, modes) {
    const mk = (i) => {
      if (modes[i] !== 'pipe') return null;
      const r = new Readable({ read() {} });
      r.on('close', () => this._maybeClose());
      return r;
    };
    this.stdout = mk(1);
    this.stderr = mk(2);
    if (modes[0] === 'pipe') this.stdin = this._stdinStream();
    this.stdio = [this.stdin, this.stdout, this.stderr];
    this._modes = modes;
    rpc.subscribe('proc.spawn', params, (item, lost) => this._onEvent(item, lost)).then(
      (sid) => (this._sid = sid),
      (err) => this._onEvent({ type: 'error', error: err[WIRE] || null }, err[WIRE] ? null : err),
    );
  }

  _stdinStream() {
    const send = (params, cb) =>
      this._afterSpawn((ok) => {
        if (!ok) return cb();
        rpc.call('proc.stdin', { pid: this._remotePid, ...params }).then(() => cb(), () => cb());
      });
    return new Writable({
      write: (chunk, _enc, cb) => send({ data: chunk.toString('base64') }, cb),
      final: (cb) => send({ data: '', eof: true }, cb),
    });
  }

  _afterSpawn(fn) {
    if (this._remotePid !== null && !this._done) return fn(true);
    if (this._done) return fn(false);
    this._waiting.push(fn);
  }

  _flushWaiting(ok) {
    const w = this._waiting;
    this._waiting = [];
    for (const fn of w) fn(ok);
  }

  _output(i, b64) {
    const data = Buffer.from(b64 || '', 'base64');
    const stream = i === 1 ? this.stdout : this.stderr;
    if (stream) stream.push(data);
    else if (this._modes[i] === 'inherit') (i === 1 ? process.stdout : process.stderr).write(data);
  }

  _onEvent(item, lost) {
    if (this._done) return;
    if (lost) return this._fail(lost);
    switch (item.type) {
      case 'spawned':
        this._remotePid = item.pid;
        this.emit('spawn');
        this._flushWaiting(true);
        break;
      case 'stdout':
        this._output(1, item.data);
        break;
      case 'stderr':
        this._output(2, item.data);
        break;
      case 'exit':
        this._exit(item.code === undefined ? null : item.code, item.signal || null);
        break;
      case 'error':
        this._fail(item.error ? errnoError(item.error.code, `spawn ${this.spawnfile}`, { path: this.spawnfile, spawnargs: this.spawnargs.slice(1) }) : new Error('pi-bridge: spawn failed'));
        break;
      default:
    }
  }

  // Node: 'error', then 'close' with exitCode = -errno; no 'spawn', no 'exit', pid undefined.
  _fail(err) {
    this._done = true;
    this._flushWaiting(false);
    children.delete(this.pid);
    this.pid = undefined;
    this.exitCode = typeof err.errno === 'number' ? err.errno : -5;
    this.emit('error', err);
    this._endStreams();
    this._maybeClose();
  }

  _exit(code, signal) {
    this._done = true;
    this._flushWaiting(false);
    this.exitCode = code;
    this.signalCode = signal;
    if (this.stdin) this.stdin.destroy();
    this._endStreams();
    this.emit('exit', code, signal);
    // Node resumes unread stdio after exit so that 'close' can follow.
    process.nextTick(() => {
      for (const s of [this.stdout, this.stderr]) {
        if (s && s.readable && !(s._readableState.pipes && s._readableState.pipes.length)) s.resume();
      }
    });
    this._maybeClose();
  }

  _endStreams() {
    for (const s of [this.stdout, this.stderr]) if (s && !s.readableEnded) s.push(null);
  }

  // 'close' comes once the process is done and its output streams have closed.
  _maybeClose() {
    if (!this._done || this._closed) return;
    if ([this.stdout, this.stderr].some((s) => s && !s.closed)) return;
    this._closed = true;
    this._release();
    setTimeout(() => children.delete(this.pid), 0);
    this.emit('close', this.exitCode, this.signalCode);
  }

  // Returns false once the process has exited, as Node does (ESRCH).
  kill(sig) {
    const ok = this._signal(sig, false);
    if (ok) this.killed = true;
    return ok;
  }

  // Send a signal to the remote process (or its group). Once it is spawned this is a blocking
  // call, like kill(2): it also works from process.on('exit') (pi kills its tracked children
  // there), where an async call would never leave. Before that it is queued.
  _signal(sig, group) {
    if (this._done) return false;
    const signal = signalName(sig);
    const send = () => {
      try {
        sync.call('proc.kill', { pid: this._remotePid, signal, group });
      } catch {
        /* already gone: its exit event is on the way */
      }
    };
    if (this._remotePid !== null) send();
    else this._afterSpawn((ok) => ok && send());
    return true;
  }

  ref() {
    if (this._closed) return;
    this._release();
    this._release = rpc.hold();
  }

  unref() {
    this._release();
  }

  [Symbol.for('nodejs.dispose')]() {
    if (!this.killed) this.kill();
  }
}
// instanceof ChildProcess holds; our own methods shadow Node's.
Object.setPrototypeOf(RemoteChild.prototype, cp.ChildProcess.prototype);

function remoteSpawn(file, args, options, cwd) {
  const r = resolveShell(file, args, options);
  const modes = stdioModes(r.options.stdio);
  const child = new RemoteChild(r.file, r.args);
  child._start(spawnParams(r.file, r.args, r.options, cwd, modes), modes);
  if (r.options.timeout > 0) {
    const t = setTimeout(() => child.kill(r.options.killSignal || 'SIGTERM'), r.options.timeout);
    child.once('exit', () => clearTimeout(t));
  }
  if (r.options.signal) {
    const signal = r.options.signal;
    // Node's abortChildProcess: kill, then 'error' with an AbortError.
    const onAbort = () => {
      if (child.kill(r.options.killSignal || 'SIGTERM')) child.emit('error', new AbortError(undefined, { cause: signal.reason }));
    };
    if (r.options.signal.aborted) process.nextTick(onAbort);
    else r.options.signal.addEventListener('abort', onAbort, { once: true });
  }
  return child;
}

// ---- execFile (ported from Node 20 lib/child_process.js) ---------------------------------

function normalizeExecFileArgs(file, args, options, callback) {
  if (Array.isArray(args)) args = args.slice();
  else if (args != null && typeof args === 'object') {
    callback = options;
    options = args;
    args = null;
  } else if (typeof args === 'function') {
    callback = args;
    options = null;
    args = null;
  }
  if (args == null) args = [];
  if (typeof options === 'function') callback = options;
  if (options == null || typeof options === 'function') options = {};
  return { file, args, options, callback };
}

function maxBufferError(name) {
  return nodeError(RangeError, 'ERR_CHILD_PROCESS_STDIO_MAXBUFFER', `${name} maxBuffer length exceeded`);
}

function remoteExecFile(file, args, options, callback, cwd) {
  options = { encoding: 'utf8', timeout: 0, maxBuffer: 1024 * 1024, killSignal: 'SIGTERM', cwd: null, env: null, shell: false, ...options };
  const child = remoteSpawn(file, args, { cwd: options.cwd, env: options.env, shell: options.shell, argv0: options.argv0, signal: options.signal }, cwd);
  const encoding = options.encoding !== 'buffer' && Buffer.isEncoding(options.encoding) ? options.encoding : null;
  const out = { stdout: [], stderr: [] };
  const len = { stdout: 0, stderr: 0 };
  let killed = false;
  let exited = false;
  let timeoutId;
  let ex = null;
  let cmd = file;

  function exithandler(code, signal) {
    if (exited) return;
    exited = true;
    if (timeoutId) clearTimeout(timeoutId);
    if (!callback) return;
    const join = (name) => (encoding ? out[name].join('') : Buffer.concat(out[name]));
    const stdout = join('stdout');
    const stderr = join('stderr');
    if (!ex && code === 0 && signal === null) return callback(null, stdout, stderr);
    if (args && args.length) cmd += ` ${args.join(' ')}`;
    if (!ex) {
      ex = Object.assign(new Error(`Command failed: ${cmd}\n${stderr}`), {
        code: code < 0 ? util.getSystemErrorName(code) : code,
        killed: child.killed || killed,
        signal,
      });
    }
    ex.cmd = cmd;
    callback(ex, stdout, stderr);
  }

  function errorhandler(e) {
    ex = e;
    if (child.stdout) child.stdout.destroy();
    if (child.stderr) child.stderr.destroy();
    exithandler();
  }

  function kill() {
    if (child.stdout) child.stdout.destroy();
    if (child.stderr) child.stderr.destroy();
    killed = true;
    // Node kills the shell and then closes its end of the pipes, so whatever the shell started
    // dies of SIGPIPE. The bridge cannot close the remote pipes: signal the child's process group
    // (it leads one) to the same effect, or 'close' would wait for those strays forever.
    if (child._signal(options.killSignal, true)) child.killed = true;
  }

  if (options.timeout > 0) {
    timeoutId = setTimeout(() => {
      kill();
      timeoutId = null;
    }, options.timeout);
  }

  for (const name of ['stdout', 'stderr']) {
    const stream = child[name];
    if (!stream) continue;
    if (encoding) stream.setEncoding(encoding);
    stream.on('data', (chunk) => {
      if (options.maxBuffer === Infinity) return out[name].push(chunk);
      const length = encoding ? Buffer.byteLength(chunk, encoding) : chunk.length;
      len[name] += length;
      if (len[name] > options.maxBuffer) {
        const truncatedLen = options.maxBuffer - (len[name] - length);
        out[name].push(chunk.slice(0, truncatedLen));
        ex = maxBufferError(name);
        kill();
      } else out[name].push(chunk);
    });
  }

  child.addListener('close', exithandler);
  child.addListener('error', errorhandler);
  return child;
}

// Node's util.promisify.custom for execFile: resolves {stdout, stderr}, promise.child.
function promisified(fn) {
  return (...args) => {
    let resolve;
    let reject;
    const promise = new Promise((res, rej) => {
      resolve = res;
      reject = rej;
    });
    promise.child = fn(...args, (err, stdout, stderr) => {
      if (err !== null) {
        err.stdout = stdout;
        err.stderr = stderr;
        reject(err);
      } else resolve({ stdout, stderr });
    });
    return promise;
  };
}

// ---- spawnSync and friends ---------------------------------------------------------------

function toInput(input, encoding) {
  if (input === undefined || input === null) return undefined;
  if (typeof input === 'string') return Buffer.from(input, Buffer.isEncoding(encoding) ? encoding : 'utf8');
  return Buffer.from(input.buffer, input.byteOffset, input.byteLength);
}

// A spawnSync result for a program that could not be started: `error`, and the other fields
// exactly as the running Node fills them then (null or undefined output, pid 0: shapes.cjs).
function failedSpawnSync(error) {
  const { keys, fields } = shapes.spawnFailure();
  const out = {};
  for (const k of keys) out[k] = k === 'error' ? error : fields[k];
  return out;
}

function remoteSpawnSync(file, args, options, cwd) {
  const r = resolveShell(file, args, options);
  const o = { maxBuffer: 1024 * 1024, ...r.options };
  const modes = stdioModes(o.stdio);
  const spawn = spawnParams(r.file, r.args, o, cwd, modes);
  spawn.stdin = o.input !== undefined && o.input !== null;
  const input = toInput(o.input, o.encoding);
  const params = { spawn, killSignal: signalName(o.killSignal) };
  if (input) params.input = input.toString('base64');
  if (o.timeout > 0) params.timeoutMs = o.timeout;
  if (o.maxBuffer !== Infinity && o.maxBuffer != null) params.maxBuffer = o.maxBuffer;
  const syscall = `spawnSync ${r.file}`;
  const extra = { path: r.file, spawnargs: r.args };
  let res;
  try {
    res = sync.call('proc.run', params);
  } catch (err) {
    const w = err[WIRE];
    return failedSpawnSync(w ? errnoError(w.code, syscall, extra) : err);
  }
  if (res.error) return failedSpawnSync(errnoError(res.error.code, syscall, extra));
  const enc = o.encoding && o.encoding !== 'buffer' && Buffer.isEncoding(o.encoding) ? o.encoding : null;
  const stream = (i, b64) => {
    const buf = Buffer.from(b64 || '', 'base64');
    if (modes[i] === 'inherit') {
      if (buf.length) require('fs').writeSync(i, buf);
      return null;
    }
    if (modes[i] === 'ignore') return null;
    return enc ? buf.toString(enc) : buf;
  };
  const stdout = stream(1, res.stdout);
  const stderr = stream(2, res.stderr);
  const result = { status: res.code === undefined ? null : res.code, signal: res.signal || null, output: [null, stdout, stderr], pid: res.pid, stdout, stderr };
  let error = null;
  if (res.timedOut) error = errnoError('ETIMEDOUT', syscall, extra);
  else if (res.maxBufferExceeded) error = errnoError('ENOBUFS', syscall, extra);
  return error ? { error, ...result } : result;
}

function checkExecSyncError(ret, args, cmd) {
  let err;
  if (ret.error) {
    err = ret.error;
    Object.assign(err, ret);
  } else if (ret.status !== 0) {
    let msg = 'Command failed: ';
    msg += cmd || args.join(' ');
    if (ret.stderr && ret.stderr.length > 0) msg += `\n${ret.stderr.toString()}`;
    err = Object.assign(new Error(msg), ret);
  }
  return err;
}

// ---- install -----------------------------------------------------------------------------

function install() {
  const orig = { ...cp };

  cp.spawn = function spawn(file, args, options) {
    const o = Array.isArray(args) ? options : args;
    const where = remoteCwd(o);
    if (where.node) return Reflect.apply(orig.spawn, this, arguments);
    if (where.refused) return refusedChild(file, args, where);
    return remoteSpawn(file, args, o, where.cwd);
  };

  cp.execFile = function execFile(file, args, options, callback) {
    const n = normalizeExecFileArgs(file, args, options, callback);
    const where = remoteCwd(n.options);
    if (where.node) return Reflect.apply(orig.execFile, this, arguments);
    if (where.refused) {
      const child = refusedChild(n.file, n.args, where);
      child.on('error', (e) => n.callback && n.callback(e, '', ''));
      return child;
    }
    return remoteExecFile(n.file, n.args, n.options, n.callback, where.cwd);
  };
  // exec goes through module.exports.execFile (patched above); its promisified form through exec.
  Object.defineProperty(cp.execFile, util.promisify.custom, { value: promisified(cp.execFile), configurable: true });

  cp.spawnSync = function spawnSync(file, args, options) {
    const o = Array.isArray(args) ? options : args;
    const where = remoteCwd(o);
    if (where.node) return Reflect.apply(orig.spawnSync, this, arguments);
    if (where.refused) return failedSpawnSync(refusal(where, file, Array.isArray(args) ? args : []));
    return remoteSpawnSync(file, args, o, where.cwd);
  };

  cp.execFileSync = function execFileSync(file, args, options) {
    const n = normalizeExecFileArgs(file, args, options);
    const where = remoteCwd(n.options);
    if (where.node) return Reflect.apply(orig.execFileSync, this, arguments);
    if (where.refused) throw refusal(where, n.file, n.args);
    const inheritStderr = !n.options.stdio;
    const ret = remoteSpawnSync(n.file, n.args, n.options, where.cwd);
    if (inheritStderr && ret.stderr) process.stderr.write(ret.stderr);
    const err = checkExecSyncError(ret, [n.options.argv0 || n.file, ...n.args]);
    if (err) throw err;
    return ret.stdout;
  };

  cp.execSync = function execSync(command, options) {
    const o = { ...options };
    const where = remoteCwd(o);
    if (where.node) return Reflect.apply(orig.execSync, this, arguments);
    if (where.refused) throw refusal(where, String(command), []);
    o.shell = typeof o.shell === 'string' ? o.shell : true;
    const inheritStderr = !o.stdio;
    const ret = remoteSpawnSync(command, [], o, where.cwd);
    if (inheritStderr && ret.stderr) process.stderr.write(ret.stderr);
    const err = checkExecSyncError(ret, undefined, command);
    if (err) throw err;
    return ret.stdout;
  };

  // fork: `node` on the remote runs the script. There is no IPC channel across the bridge:
  // send() fails with a clear error, 'message' never fires.
  cp.fork = function fork(modulePath, args, options) {
    let a = args;
    let o = options;
    if (a == null || (typeof a === 'object' && !Array.isArray(a))) {
      o = a;
      a = [];
    }
    o = { ...o };
    const where = remoteCwd(o);
    if (where.node || route.toPathString(modulePath) === null) return Reflect.apply(orig.fork, this, arguments);
    const file = o.execPath || process.execPath;
    if (where.refused) return refusedChild(file, [route.toPathString(modulePath), ...a], where);
    const execArgv = Array.isArray(o.execArgv) ? o.execArgv : []; // never our local --require
    let stdio = o.stdio;
    if (Array.isArray(stdio)) stdio = stdio.filter((s) => s !== 'ipc');
    else stdio = o.silent ? ['pipe', 'pipe', 'pipe'] : 'inherit';
    const child = remoteSpawn(file, [...execArgv, route.toPathString(modulePath), ...a], { ...o, stdio, shell: false }, where.cwd);
    child.send = function send() {
      const cb = [...arguments].reverse().find((x) => typeof x === 'function');
      const err = nodeError(Error, 'ERR_IPC_CHANNEL_CLOSED', 'Channel closed (pi-bridge: a remote forked process has no IPC channel)');
      if (cb) process.nextTick(cb, err);
      else process.nextTick(() => this.emit('error', err));
      return false;
    };
    child.disconnect = function disconnect() {};
    return child;
  };

  const origKill = process.kill;
  process.kill = function kill(pid, sig) {
    const child = typeof pid === 'number' ? children.get(Math.abs(pid)) : undefined;
    if (!child) {
      if (typeof pid === 'number' && Math.abs(pid) >= VPID_BASE) throw errnoError('ESRCH', 'kill');
      return Reflect.apply(origKill, this, arguments);
    }
    if (child._done) throw errnoError('ESRCH', 'kill');
    if (sig === 0 || sig === '0') return true;
    child._signal(sig === undefined ? 'SIGTERM' : sig, pid < 0);
    return true;
  };
}

module.exports = { install, envDelta, setStartupEnv, resolveShell, remoteProgram, stdioModes, isMachineSpecific, VPID_BASE };
