//! Load (issue 5): 64 concurrent sync callers × many operations and 50 concurrent remote
//! processes streaming output, zero errors, bounded memory.
//!
//! Node worker threads do not get the preload bridge, so the "64 sync callers" are 64 concurrent
//! authenticated connections to pii's loopback endpoint (the token and endpoint read from the
//! node process's initial environment, as the preload gets them), each doing sequential
//! `fs.stat`/`fs.read` round trips and checking every answer. Then 50 concurrent `proc.spawn` of
//! `seq 1 200000`, every output byte counted and compared. Against `pii --local` (the whole
//! pii → agent path without ssh) and, smaller, over the real sshd. Figures are printed; the
//! only bound asserted besides correctness is memory (VmHWM), never time.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use pi_bridge_protocol as protocol;
use pi_bridge_tests::pii::{local_processes_matching, pii_local, pii_ssh};
use pi_bridge_tests::Sshd;
use serde_json::Value;

const CALLERS: usize = 64;
const SPAWNS: usize = 50;
const SEQ_TO: u32 = 200_000;
const FILE_LEN: usize = 4096;
/// Ops per caller against `pii --local`: the 64 × 10 000.
const PER_CALLER_LOCAL: usize = 10_000;
/// VmHWM bound for pii and for the agent (generous: a leak or an unbounded buffer of the
/// 64 MB streamed would show, normal use is far below).
const MEM_BOUND_KB: u64 = 256 * 1024;

fn content() -> Vec<u8> {
    (0..FILE_LEN).map(|i| (i * 7 % 251) as u8).collect()
}

fn environ_var(pid: u32, name: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn vm_hwm_kb(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn ppid(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    stat.rsplit(')')
        .next()
        .and_then(|s| s.split_whitespace().nth(1))
        .and_then(|p| p.parse().ok())
        .unwrap_or(0)
}

/// One authenticated endpoint connection doing synchronous calls.
struct Conn {
    w: UnixStream,
    r: BufReader<UnixStream>,
    id: u64,
    line: String,
}

impl Conn {
    fn open(endpoint: &str, token: &str) -> Conn {
        let s = UnixStream::connect(endpoint).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
        let mut w = s.try_clone().unwrap();
        w.write_all(format!("{token}\n").as_bytes()).unwrap();
        Conn {
            w,
            r: BufReader::new(s),
            id: 0,
            line: String::new(),
        }
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.id += 1;
        let req = serde_json::json!({"jsonrpc": "2.0", "id": self.id, "method": method, "params": params});
        let mut b = serde_json::to_vec(&req).unwrap();
        b.push(b'\n');
        self.w.write_all(&b).unwrap();
        self.id
    }

    fn recv(&mut self) -> Value {
        self.line.clear();
        let n = self.r.read_line(&mut self.line).unwrap();
        assert!(n > 0, "the endpoint closed the connection");
        serde_json::from_str(&self.line).unwrap()
    }

    /// A call: its result, or the error as text.
    fn call(&mut self, method: &str, params: Value) -> Result<Value, String> {
        let id = self.send(method, params);
        let v = self.recv();
        if v["id"].as_u64() != Some(id) {
            return Err(format!("answer for id {} to call {id}: {v}", v["id"]));
        }
        match v.get("result") {
            Some(r) => Ok(r.clone()),
            None => Err(v.to_string()),
        }
    }
}

struct Session {
    child: std::process::Child,
    pii: u32,
    endpoint: String,
    token: String,
    project: String,
}

impl Drop for Session {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The node process running `marker` and its session (endpoint, token; `project`, the remote
/// project root, is not in PII_SESSION since node starts before the session is up).
fn attach(child: std::process::Child, marker: &str, log: &Path, project: &str) -> Session {
    let deadline = Instant::now() + Duration::from_secs(60);
    let node = loop {
        let found = local_processes_matching(marker);
        if let Some(l) = found.iter().find(|l| l.contains("--require")) {
            break l.split(' ').next().unwrap().parse::<u32>().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "node never started: {}",
            std::fs::read_to_string(log).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(50));
    };
    let session: Value =
        serde_json::from_str(&environ_var(node, "PII_SESSION").expect("PII_SESSION")).unwrap();
    Session {
        pii: child.id(),
        child,
        endpoint: session["endpoint"].as_str().unwrap().to_string(),
        token: environ_var(node, "PII_TOKEN").expect("PII_TOKEN"),
        project: project.to_string(),
    }
}

/// The agent serving `pii` (its child for --local; none locally for --ssh).
fn local_agent_of(pii: u32) -> Option<u32> {
    local_processes_matching("pi-bridge-agent")
        .iter()
        .filter_map(|l| l.split(' ').next()?.parse::<u32>().ok())
        .find(|&p| ppid(p) == pii)
}

struct Figures {
    ops: u64,
    errors: u64,
    secs: f64,
}

/// `callers` connections × `per_caller` sequential fs.stat/fs.read calls, each answer checked.
fn callers(s: &Session, callers: usize, per_caller: usize) -> Figures {
    let file = format!("{}/load/data.bin", s.project);
    let want = Arc::new(content());
    let ops = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let first_error = Arc::new(std::sync::Mutex::new(None::<String>));
    let t0 = Instant::now();
    let threads: Vec<_> = (0..callers)
        .map(|c| {
            let (endpoint, token, file) = (s.endpoint.clone(), s.token.clone(), file.clone());
            let (want, ops, errors, first_error) = (
                want.clone(),
                ops.clone(),
                errors.clone(),
                first_error.clone(),
            );
            std::thread::spawn(move || {
                let mut conn = Conn::open(&endpoint, &token);
                for i in 0..per_caller {
                    let res = if i % 2 == 0 {
                        conn.call("fs.stat", serde_json::json!({"path": file}))
                            .and_then(|r| match r["size"].as_u64() {
                                Some(n) if n as usize == FILE_LEN => Ok(()),
                                _ => Err(format!("stat: {r}")),
                            })
                    } else {
                        let off = (c * 131 + i * 17) % (FILE_LEN - 256);
                        conn.call(
                            "fs.read",
                            serde_json::json!({"path": file, "offset": off, "length": 256}),
                        )
                        .and_then(|r| {
                            let got: protocol::Bytes = serde_json::from_value(r["data"].clone())
                                .map_err(|e| e.to_string())?;
                            if got.0 == want[off..off + 256] {
                                Ok(())
                            } else {
                                Err(format!("read at {off}: wrong bytes"))
                            }
                        })
                    };
                    ops.fetch_add(1, Ordering::Relaxed);
                    if let Err(e) = res {
                        errors.fetch_add(1, Ordering::Relaxed);
                        first_error.lock().unwrap().get_or_insert(e);
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("a caller thread panicked");
    }
    let f = Figures {
        ops: ops.load(Ordering::Relaxed),
        errors: errors.load(Ordering::Relaxed),
        secs: t0.elapsed().as_secs_f64(),
    };
    assert_eq!(
        f.errors,
        0,
        "{} errors, the first: {:?}",
        f.errors,
        first_error.lock().unwrap()
    );
    assert_eq!(f.ops, (callers * per_caller) as u64);
    f
}

/// `n` concurrent `proc.spawn` of `seq 1 SEQ_TO`; every stdout byte collected and compared.
fn spawns(s: &Session, n: usize) -> (u64, f64) {
    let expected: Arc<Vec<u8>> = Arc::new(
        (1..=SEQ_TO)
            .map(|i| format!("{i}\n"))
            .collect::<String>()
            .into_bytes(),
    );
    let t0 = Instant::now();
    let threads: Vec<_> = (0..n)
        .map(|_| {
            let (endpoint, token, cwd) = (s.endpoint.clone(), s.token.clone(), s.project.clone());
            let expected = expected.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(&endpoint, &token);
                let id = conn.send(
                    "proc.spawn",
                    serde_json::json!({"file": "seq", "args": ["1", SEQ_TO.to_string()], "cwd": cwd}),
                );
                let mut out = Vec::with_capacity(expected.len());
                let mut events = 0u64;
                loop {
                    let v = conn.recv();
                    if v.get("id").is_some() {
                        assert_eq!(v["id"].as_u64(), Some(id), "{v}");
                        assert!(v.get("result").is_some(), "spawn refused: {v}");
                        continue;
                    }
                    let item = &v["params"]["result"];
                    events += 1;
                    match item["type"].as_str() {
                        Some("spawned") => {}
                        Some("stdout") => {
                            let b: protocol::Bytes =
                                serde_json::from_value(item["data"].clone()).unwrap();
                            out.extend_from_slice(&b.0);
                        }
                        Some("exit") => {
                            assert_eq!(item["code"].as_i64(), Some(0), "{v}");
                            break;
                        }
                        _ => panic!("unexpected event: {v}"),
                    }
                }
                assert_eq!(out.len(), expected.len(), "bytes lost or duplicated");
                assert!(out == *expected, "streamed output differs from seq's");
                (out.len() as u64, events)
            })
        })
        .collect();
    let mut bytes = 0;
    for t in threads {
        bytes += t.join().expect("a streaming process failed").0;
    }
    (bytes, t0.elapsed().as_secs_f64())
}

/// A script that keeps its session open, in `dir/bin` (pii keeps a script's directory local:
/// it must not hold the project).
fn keepalive_script(dir: &Path, marker: &str) -> std::path::PathBuf {
    std::fs::create_dir_all(dir.join("bin")).unwrap();
    let script = dir.join("bin").join(format!("{marker}.cjs"));
    std::fs::write(&script, "setTimeout(() => {}, 600000);\n").unwrap();
    script
}

/// One test, the two runs in turn: run side by side on 2 cores they starve each other (and a
/// starved pii declares its agent link dead after 4 s of silence; see SECURITY.md, known gaps).
#[test]
fn load_over_pii_local_then_ssh() {
    load_over_pii_local();
    load_over_ssh();
}

fn load_over_pii_local() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join("load")).unwrap();
    std::fs::write(project.join("load/data.bin"), content()).unwrap();
    let marker = format!("load-local-{}", std::process::id());
    let script = keepalive_script(dir.path(), &marker);
    let log = dir.path().join("pii.log");
    let child = pii_local(&project, &log, &script, &[]).spawn().unwrap();
    let root = std::fs::canonicalize(&project).unwrap();
    let s = attach(
        child,
        &format!("{marker}.cjs"),
        &log,
        root.to_str().unwrap(),
    );
    let agent = local_agent_of(s.pii).expect("the local agent, a child of pii");

    // 640 000 ops: a few minutes of CI on 2 cores with the debug build, well inside its budget.
    let per_caller = PER_CALLER_LOCAL;
    let f = callers(&s, CALLERS, per_caller);
    let (bytes, stream_secs) = spawns(&s, SPAWNS);
    let (pii_kb, agent_kb) = (vm_hwm_kb(s.pii), vm_hwm_kb(agent));
    report(
        "pii --local",
        per_caller,
        &f,
        bytes,
        stream_secs,
        pii_kb,
        agent_kb,
    );
}

fn load_over_ssh() {
    let sshd = Sshd::start();
    sshd.run_remote_ok(&format!("mkdir -p {p}/load", p = sshd.project()));
    sshd.write_remote(&format!("{}/load/data.bin", sshd.project()), &content());
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("load-ssh-{}", std::process::id());
    let script = keepalive_script(dir.path(), &marker);
    let log = dir.path().join("pii.log");
    let child = pii_ssh(&sshd, &log, &script, &[], &[]).spawn().unwrap();
    let s = attach(child, &format!("{marker}.cjs"), &log, sshd.project());

    // Smaller than the --local run: the point is the ssh link under 64 callers, not throughput.
    let per_caller = 500;
    let f = callers(&s, CALLERS, per_caller);
    let (bytes, stream_secs) = spawns(&s, SPAWNS);
    let pii_kb = vm_hwm_kb(s.pii);
    let agent_kb = sshd
        .run_remote_ok(
            "for p in $(pgrep -u \"$(id -u)\" -f 'pi-bridge-agent --stdio'); do \
             grep VmHWM /proc/$p/status; done",
        )
        .lines()
        .filter_map(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .max()
        .unwrap_or(0);
    report(
        "pii --ssh, real sshd",
        per_caller,
        &f,
        bytes,
        stream_secs,
        pii_kb,
        agent_kb,
    );
}

/// Prints a run's figures, then checks them: every streamed byte arrived, memory stayed bounded.
fn report(
    mode: &str,
    per_caller: usize,
    f: &Figures,
    bytes: u64,
    stream_secs: f64,
    pii_kb: u64,
    agent_kb: u64,
) {
    println!(
        "load ({mode}): {CALLERS} callers × {per_caller} = {} ops (fs.stat/fs.read), {} \
         errors, {:.1} s, {:.0} ops/s; {SPAWNS} concurrent `seq 1 {SEQ_TO}`: {bytes} bytes \
         streamed, all exact, {:.1} s; VmHWM pii {} MB, agent {} MB (bound {} MB)",
        f.ops,
        f.errors,
        f.secs,
        f.ops as f64 / f.secs,
        stream_secs,
        pii_kb / 1024,
        agent_kb / 1024,
        MEM_BOUND_KB / 1024
    );
    assert_eq!(
        bytes,
        SPAWNS as u64
            * (1..=SEQ_TO)
                .map(|i| i.to_string().len() as u64 + 1)
                .sum::<u64>()
    );
    assert!(pii_kb > 0 && agent_kb > 0, "VmHWM not readable");
    assert!(pii_kb < MEM_BOUND_KB, "pii VmHWM {pii_kb} kB");
    assert!(agent_kb < MEM_BOUND_KB, "agent VmHWM {agent_kb} kB");
}
