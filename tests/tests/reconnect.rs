//! Dropped links, against the real sshd fixture and the real agent: a Node script run through
//! `pii --ssh --pi` loops over reads, writes or a streaming command while the test kills pii's
//! ssh process (or cuts the link for 10 s with the delay proxy). The script must complete; every
//! file is checked byte for byte (no half-written file, no write applied twice), the command's
//! output must hold every line exactly once, in order. And when pii itself dies, the remote
//! processes must end after the grace period, leaving nothing behind.
//!
//! Each test prints its figures (bytes lost, duplicates, reconnect time).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pi_bridge_tests::{paths, DelayProxy, Sshd};
use serde_json::Value;

/// The script: `node script.cjs <mode> <n>`; prints `READY` once it is in the middle of its
/// work, then one `RESULT <json>` line.
const SCRIPT: &str = r#"
const fs = require('fs');
const cp = require('child_process');
const [mode, nArg] = process.argv.slice(2);
const n = Number(nArg);
const say = (s) => fs.writeSync(1, s + '\n');
const pause = (ms) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
function content(i) {
  const len = 1000 + ((i * 7919) % 60000);
  const b = Buffer.alloc(len);
  for (let j = 0; j < len; j++) b[j] = (i * 31 + j) % 251;
  return b;
}
const errors = [];
const lost = (e) => /rpc -32004/.test(e.message);
function reads(i) {
  const data = fs.readFileSync('data.bin');
  if (data.length !== DATA_LEN || require('crypto').createHash('sha256').update(data).digest('hex') !== DATA_SHA)
    errors.push({ i, op: 'read', bad: data.length });
  const st = fs.statSync('data.bin');
  if (st.size !== DATA_LEN) errors.push({ i, op: 'stat', bad: st.size });
}
function writes(i) {
  try { fs.writeFileSync(`w/f${i}.bin`, content(i)); }
  catch (e) { errors.push({ i, op: 'write', lost: lost(e), msg: e.message }); }
  try { fs.appendFileSync('w/log.txt', `append ${i}\n`); }
  catch (e) { errors.push({ i, op: 'append', lost: lost(e), msg: e.message }); }
}
const DATA_LEN = Number(process.env.DATA_LEN || 0);
const DATA_SHA = process.env.DATA_SHA || '';
function loop(body, then) {
  for (let i = 0; i < n; i++) {
    if (i === 20) say('READY');
    body(i);
    pause(10);
  }
  then();
}
function command(lines, onReady, done) {
  const child = cp.spawn('bash', ['-c', `for i in $(seq 1 ${lines}); do echo "line $i"; sleep 0.005; done`]);
  let out = '';
  let ready = false;
  child.stdout.on('data', (d) => {
    out += d;
    if (!ready && out.split('\n').length > 50) { ready = true; onReady(); }
  });
  child.on('error', (e) => errors.push({ op: 'spawn', msg: e.message }));
  child.on('close', (code, signal) => done({ out, code, signal }));
}
function finish(extra) { say('RESULT ' + JSON.stringify({ errors, ...extra })); }
if (mode === 'reads') loop(reads, () => finish({}));
else if (mode === 'writes') { fs.mkdirSync('w', { recursive: true }); loop(writes, () => finish({})); }
else if (mode === 'command') command(n, () => say('READY'), (r) => finish(r));
else if (mode === 'all') {
  fs.mkdirSync('w', { recursive: true });
  command(3000, () => {
    // The sync loop blocks the event loop: output piles up in pii meanwhile, as it would.
    for (let i = 0; i < n; i++) {
      if (i === 20) say('READY');
      reads(i);
      writes(i);
      pause(10);
    }
  }, (r) => finish(r));
}
else if (mode === 'bigreads') (async () => {
  // Files over 1 MiB: after the first read, the rest comes as raw (binary frame) reads, four in
  // flight, through the helper (sync) and the main thread's connection (promises, streams).
  const check = (i, op, data) => {
    if (data.length !== DATA_LEN || require('crypto').createHash('sha256').update(data).digest('hex') !== DATA_SHA)
      errors.push({ i, op, bad: data.length });
  };
  for (let i = 0; i < n; i++) {
    if (i === 2) say('READY');
    try {
      if (i % 3 === 0) check(i, 'readFileSync', fs.readFileSync('data.bin'));
      else if (i % 3 === 1) check(i, 'readFile', await fs.promises.readFile('data.bin'));
      else {
        const parts = [];
        await new Promise((resolve, reject) => fs.createReadStream('data.bin', { highWaterMark: 1 << 20 })
          .on('data', (c) => parts.push(c)).on('error', reject).on('end', resolve));
        check(i, 'stream', Buffer.concat(parts));
      }
    } catch (e) { errors.push({ i, op: 'bigread', msg: e.message }); }
  }
  finish({});
})();
else if (mode === 'sleeper') {
  cp.spawn('sh', ['-c', 'sleep 1000; echo pibridge-grace-marker'], { stdio: 'ignore' });
  setTimeout(() => say('READY'), 500);
  setInterval(() => {}, 1000);
}
"#;

struct Run {
    child: Child,
    lines: mpsc::Receiver<String>,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

/// Starts `pii --ssh` with the script in `mode`, ssh config `cfg`.
fn start(sshd: &Sshd, cfg: &Path, mode: &str, n: usize, env: &[(&str, String)]) -> Run {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("reconnect-script.cjs");
    std::fs::write(&script, SCRIPT).unwrap();
    let log = dir.path().join("pii.log");
    let mut cmd = Command::new(paths::bin("pii"));
    cmd.arg("--ssh")
        .arg(sshd.dest())
        .arg("-F")
        .arg(cfg)
        .arg("--log-file")
        .arg(&log)
        .arg("--pi")
        .arg(&script)
        .arg("--")
        .arg(mode)
        .arg(n.to_string())
        .env(
            "PII_LOG",
            std::env::var("PII_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("start pii");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    Run {
        child,
        lines: rx,
        log,
        _dir: dir,
    }
}

impl Run {
    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The next stdout line starting with `prefix` (others are ignored).
    fn expect(&mut self, prefix: &str, within: Duration) -> String {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) if l.starts_with(prefix) => return l,
                Ok(_) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => panic!(
                    "pii closed its stdout before the script printed `{prefix}` (exit status: \
                     {:?}); pii log:\n{}",
                    self.child.wait(),
                    self.log_text()
                ),
                Err(mpsc::RecvTimeoutError::Timeout) => panic!(
                    "no `{prefix}` line from the script within {within:?}; pii log:\n{}",
                    self.log_text()
                ),
            }
        }
    }

    /// The script's result; pii must exit 0.
    fn finish(mut self) -> (Value, String) {
        let line = self.expect("RESULT ", Duration::from_secs(150));
        let v: Value = serde_json::from_str(&line["RESULT ".len()..]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        let status = loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                break s;
            }
            assert!(
                Instant::now() < deadline,
                "pii did not exit after the script"
            );
            std::thread::sleep(Duration::from_millis(50));
        };
        let log = self.log_text();
        assert!(status.success(), "pii failed ({status}); log:\n{log}");
        (v, log)
    }
}

/// Pids of `parent`'s children whose argv[0] is `ssh`.
fn ssh_children(parent: u32) -> Vec<u32> {
    children(parent, b"ssh")
}

/// Live children of `parent` whose argv[0] ends with `name` (`ssh`, `node`, a path to node).
fn children(parent: u32, name: &[u8]) -> Vec<u32> {
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
        let Some(rest) = stat.rsplit_once(')').map(|x| x.1) else {
            continue;
        };
        let ppid: u32 = rest
            .split_whitespace()
            .nth(1)
            .and_then(|p| p.parse().ok())
            .unwrap_or(0);
        let cmdline = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
        let argv0 = cmdline.split(|&b| b == 0).next().unwrap_or(&[]);
        if ppid == parent && argv0.ends_with(name) {
            found.push(pid);
        }
    }
    found
}

/// SIGKILL pii's ssh (the one carrying the agent link).
fn kill_ssh(run: &Run) {
    let pids = ssh_children(run.child.id());
    assert_eq!(pids.len(), 1, "expected one ssh child of pii: {pids:?}");
    // SAFETY: a plain signal to a pid we just found as our grandchild.
    assert_eq!(unsafe { libc::kill(pids[0] as i32, libc::SIGKILL) }, 0);
}

/// Seconds of every "reconnected after X s" line in the log.
fn reconnect_times(log: &str) -> Vec<f64> {
    log.lines()
        .filter_map(|l| l.split("reconnected after ").nth(1))
        .filter_map(|r| r.split(' ').next()?.parse().ok())
        .collect()
}

fn sha256_hex(b: &[u8]) -> String {
    let mut c = Command::new("sha256sum")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    std::io::Write::write_all(&mut c.stdin.take().unwrap(), b).unwrap();
    let out = c.wait_with_output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

fn content(i: usize) -> Vec<u8> {
    let len = 1000 + ((i * 7919) % 60000);
    (0..len).map(|j| ((i * 31 + j) % 251) as u8).collect()
}

fn data_env(sshd: &Sshd) -> Vec<(&'static str, String)> {
    let data: Vec<u8> = (0..300_000u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    sshd.write_remote("data.bin", &data);
    vec![
        ("DATA_LEN", data.len().to_string()),
        ("DATA_SHA", sha256_hex(&data)),
    ]
}

/// Every file written, byte for byte; appends each at most once, in order, and every
/// acknowledged one exactly once. Returns (files checked, writes that failed as lost).
fn check_writes(sshd: &Sshd, n: usize, errors: &[Value]) -> (usize, usize) {
    let failed = |op: &str, i: usize| {
        errors
            .iter()
            .any(|e| e["op"] == op && e["i"].as_u64() == Some(i as u64))
    };
    for e in errors {
        assert_eq!(
            e["lost"], true,
            "only connection-lost failures are allowed: {e}"
        );
    }
    let listing = sshd.run_remote_ok("ls -A w");
    let mut names: Vec<&str> = listing.lines().collect();
    names.sort();
    let mut checked = 0;
    for i in 0..n {
        let name = format!("f{i}.bin");
        let present = names.contains(&name.as_str());
        if failed("write", i) && !present {
            continue; // never applied: fine, its caller was told
        }
        assert!(present, "{name} missing though its write succeeded");
        let got = sshd.read_remote(&format!("w/{name}"));
        assert!(
            got == content(i),
            "{name}: {} bytes, not the {} written (half-written?)",
            got.len(),
            content(i).len()
        );
        checked += 1;
    }
    // Nothing else: no temp file of an interrupted write is left behind.
    for name in &names {
        assert!(
            *name == "log.txt" || (name.starts_with('f') && name.ends_with(".bin")),
            "stray file w/{name}"
        );
    }
    let log = String::from_utf8(sshd.read_remote("w/log.txt")).unwrap();
    let mut expect = 0usize;
    for line in log.lines() {
        let i: usize = line
            .strip_prefix("append ")
            .and_then(|x| x.parse().ok())
            .unwrap_or_else(|| panic!("bad line {line:?} in w/log.txt"));
        while expect < i {
            assert!(
                failed("append", expect),
                "append {expect} succeeded but is missing"
            );
            expect += 1;
        }
        assert_eq!(i, expect, "append {i} applied twice or out of order");
        expect += 1;
    }
    while expect < n {
        assert!(failed("append", expect), "append {expect} missing");
        expect += 1;
    }
    (checked, errors.len())
}

/// Every line exactly once, in order. Returns (lines, missing, duplicates).
fn check_lines(out: &str, want: usize) -> (usize, usize, usize) {
    let got: Vec<usize> = out
        .lines()
        .map(|l| {
            l.strip_prefix("line ")
                .and_then(|x| x.parse().ok())
                .unwrap_or_else(|| panic!("bad output line {l:?}"))
        })
        .collect();
    let mut seen = vec![0usize; want + 1];
    for &i in &got {
        seen[i] += 1;
    }
    let missing = (1..=want).filter(|&i| seen[i] == 0).count();
    let dups = (1..=want).filter(|&i| seen[i] > 1).count();
    (got.len(), missing, dups)
}

fn assert_lines(out: &str, want: usize) {
    let (n, missing, dups) = check_lines(out, want);
    let expected: String = (1..=want).map(|i| format!("line {i}\n")).collect();
    println!("output lines: {n}/{want}, lost: {missing}, duplicated: {dups}");
    assert!(
        out == expected,
        "output differs: {missing} lines lost, {dups} duplicated"
    );
}

fn report(what: &str, log: &str) -> Vec<f64> {
    let t = reconnect_times(log);
    println!("{what}: reconnects {}, reconnect time (s) {t:?}", t.len());
    assert!(!t.is_empty(), "no reconnect in the log:\n{log}");
    assert!(
        log.contains("session resumed"),
        "the session was not resumed:\n{log}"
    );
    t
}

#[test]
fn ssh_killed_during_reads() {
    let sshd = Sshd::start();
    let env = data_env(&sshd);
    let mut run = start(&sshd, sshd.ssh_config(), "reads", 150, &env);
    run.expect("READY", Duration::from_secs(60));
    kill_ssh(&run);
    let (v, log) = run.finish();
    report("reads", &log);
    let errors = v["errors"].as_array().unwrap();
    println!("reads: 150 × 300 kB read, errors: {}", errors.len());
    assert!(errors.is_empty(), "idempotent reads must be retried: {v}");
}

/// Raw reads (binary frames) in flight when the link drops are sent again on the new link; every
/// file must still read back byte for byte (a retried read's payload never taken for another's).
#[test]
fn ssh_killed_during_raw_reads() {
    let sshd = Sshd::start();
    // 4 MiB + a bit: one JSON read, then raw pieces; every byte value, newlines included.
    let data: Vec<u8> = (0..(4 << 20) + 4321u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    sshd.write_remote("data.bin", &data);
    let env = vec![
        ("DATA_LEN", data.len().to_string()),
        ("DATA_SHA", sha256_hex(&data)),
    ];
    let mut run = start(&sshd, sshd.ssh_config(), "bigreads", 24, &env);
    run.expect("READY", Duration::from_secs(60));
    kill_ssh(&run);
    let (v, log) = run.finish();
    report("raw reads", &log);
    let errors = v["errors"].as_array().unwrap();
    println!("raw reads: 24 × 4 MiB read, errors: {}", errors.len());
    assert!(
        errors.is_empty(),
        "raw reads must be retried with exact bytes: {v}"
    );
}

#[test]
fn ssh_killed_during_writes() {
    let sshd = Sshd::start();
    let mut run = start(&sshd, sshd.ssh_config(), "writes", 200, &[]);
    run.expect("READY", Duration::from_secs(60));
    kill_ssh(&run);
    let (v, log) = run.finish();
    report("writes", &log);
    let (checked, lost) = check_writes(&sshd, 200, v["errors"].as_array().unwrap());
    println!("writes: {checked} files byte-exact, {lost} calls failed as connection-lost (not retried), bytes lost: 0, duplicates: 0");
}

#[test]
fn ssh_killed_during_a_streaming_command() {
    let sshd = Sshd::start();
    let mut run = start(&sshd, sshd.ssh_config(), "command", 1500, &[]);
    run.expect("READY", Duration::from_secs(60));
    kill_ssh(&run);
    let (v, log) = run.finish();
    report("command", &log);
    assert_eq!(v["code"], 0, "{v}");
    assert_lines(v["out"].as_str().unwrap(), 1500);
}

#[test]
fn link_cut_for_ten_seconds_during_reads_writes_and_a_command() {
    let sshd = Sshd::start();
    let proxy = DelayProxy::start(sshd.addr(), Duration::ZERO);
    let cfg = sshd.ssh_config_via(proxy.port());
    let env = data_env(&sshd);
    let mut run = start(&sshd, &cfg, "all", 150, &env);
    run.expect("READY", Duration::from_secs(60));
    proxy.cut();
    std::thread::sleep(Duration::from_secs(10));
    proxy.restore();
    let (v, log) = run.finish();
    let t = report("cut 10 s", &log);
    println!(
        "cut 10 s: bytes discarded by the proxy {}, connections {}",
        proxy.discarded_bytes(),
        proxy.accepted_connections()
    );
    assert!(proxy.discarded_bytes() > 0, "the cut did not drop anything");
    let errors: Vec<Value> = v["errors"].as_array().unwrap().clone();
    assert!(
        errors
            .iter()
            .all(|e| e["op"] == "write" || e["op"] == "append"),
        "reads must be retried: {errors:?}"
    );
    let (checked, lost) = check_writes(&sshd, 150, &errors);
    println!("cut 10 s: {checked} files byte-exact, {lost} non-idempotent calls failed (not retried), reconnect {t:?} s");
    assert_eq!(v["code"], 0, "{v}");
    assert_lines(v["out"].as_str().unwrap(), 3000);
}

#[test]
fn without_reconnect_the_remote_processes_end_after_the_grace_period() {
    let sshd = Sshd::start();
    let grace_ms = 4000u64;
    let mut run = start(
        &sshd,
        sshd.ssh_config(),
        "sleeper",
        0,
        &[("PII_RESUME_GRACE_MS", grace_ms.to_string())],
    );
    run.expect("READY", Duration::from_secs(60));
    let marked = || -> Vec<String> {
        sshd.remote_processes()
            .into_iter()
            .filter(|p| p.contains("pibridge-grace-marker") || p.contains("pi-bridge-agent"))
            .collect()
    };
    assert!(
        marked().iter().any(|p| p.contains("pibridge-grace-marker")),
        "{:?}",
        sshd.remote_processes()
    );
    // pii dies without a word; so does node (its child), as a crash of the whole tree would.
    // Only THIS test's node: the other tests in this file run the same script concurrently.
    let node = children(run.child.id(), b"node");
    assert_eq!(node.len(), 1, "expected one node child of pii: {node:?}");
    run.child.kill().unwrap();
    let _ = run.child.wait();
    let killed = Instant::now();
    for p in node {
        // SAFETY: a plain signal to a node process this test started (through pii).
        unsafe { libc::kill(p as i32, libc::SIGKILL) };
    }
    // Within the grace period the session's process is kept (a reconnect could still come).
    let early = marked();
    assert!(
        killed.elapsed() >= Duration::from_millis(grace_ms)
            || early.iter().any(|p| p.contains("pibridge-grace-marker")),
        "the process died before the grace period: {early:?}"
    );
    let deadline = Instant::now() + Duration::from_millis(grace_ms) + Duration::from_secs(30);
    loop {
        let left = marked();
        if left.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "still running long after the grace period: {left:?}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    println!(
        "grace {grace_ms} ms: processes gone {:.1} s after pii was killed",
        killed.elapsed().as_secs_f64()
    );
    let sockets = sshd.run_remote_ok("ls -A ~/.cache/pi-bridge/run 2>/dev/null || true");
    assert_eq!(sockets.trim(), "", "socket files left behind");
}
