//! The loopback endpoint under abuse, against the real pii over the real sshd fixture.
//!
//! While a legit node client (the preload, driven by a script) keeps writing and reading project
//! files, the test throws at pii's endpoint: wrong, short, missing, padded and replayed tokens (the
//! token of a previous, finished session), slow-loris senders (a byte a second, even of the RIGHT
//! token), hundreds of half-open connections and hundreds of concurrent authenticated ones. Every
//! unauthenticated connection carries an `fs.write` of a marker file: zero markers may appear on
//! the remote. The legit client must see zero errors throughout. Then the token is looked for in
//! every process's argv and in files, local and remote, and the remote is checked (`ss`, in the
//! fixture's network namespace) for listening sockets of the remote user.
//!
//! `another_local_user_holding_500_idle_connections_costs_pii_nothing`: a real second local
//! user (`nobody`, through `runuser`) tries to open 500 connections to a live session's endpoint
//! and hold them. The endpoint is a Unix socket in pii's private scratch dir: none opens, pii
//! holds no fd for them, logs nothing per connection, and its legit client never notices.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{local_processes_matching, pii_ssh};
use pi_bridge_tests::Sshd;
use serde_json::{json, Value};

const SCRIPT: &str = r#"
const fs = require('fs');
const stop = process.argv[2];
let n = 0; const errors = [];
const tick = () => {
  if (fs.existsSync(stop)) { console.log(JSON.stringify({ n, errors })); return; }
  try {
    const f = `legit-${n % 5}.txt`;
    fs.writeFileSync(f, String(n));
    if (fs.readFileSync(f, 'utf8') !== String(n)) errors.push(`mismatch at ${n}`);
    fs.statSync('.');
    n++;
  } catch (e) { errors.push(String(e)); }
  setTimeout(tick, 5);
};
tick();
"#;

struct Session {
    child: Child,
    dir: tempfile::TempDir,
    stop: PathBuf,
    log: PathBuf,
    token: String,
    endpoint: String,
    node: u32,
}

fn environ_var(pid: u32, name: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

fn start(sshd: &Sshd, tag: &str) -> Session {
    let dir = tempfile::tempdir().unwrap();
    let script = dir
        .path()
        .join(format!("abuse-{tag}-{}.cjs", std::process::id()));
    std::fs::write(&script, SCRIPT).unwrap();
    let stop = dir.path().join("stop");
    let log = dir.path().join("pii.log");
    let child = pii_ssh(sshd, &log, &script, &[], &[stop.to_str().unwrap()])
        .spawn()
        .unwrap();
    let name = script.file_name().unwrap().to_str().unwrap().to_string();
    let deadline = Instant::now() + Duration::from_secs(30);
    let node = loop {
        let found = local_processes_matching(&name);
        if let Some(l) = found.iter().find(|l| l.contains("--require")) {
            break l.split(' ').next().unwrap().parse().unwrap();
        }
        assert!(Instant::now() < deadline, "no node for {name}");
        std::thread::sleep(Duration::from_millis(50));
    };
    let session: Value = serde_json::from_str(&environ_var(node, "PII_SESSION").unwrap()).unwrap();
    Session {
        child,
        stop,
        log,
        token: environ_var(node, "PII_TOKEN").unwrap(),
        endpoint: session["endpoint"].as_str().unwrap().to_string(),
        node,
        dir,
    }
}

impl Session {
    /// Stop the script, wait for pii; the script's report.
    fn finish(mut self) -> (Value, String) {
        std::fs::write(&self.stop, "").unwrap();
        let out = self.child.wait_with_output_compat();
        let log = std::fs::read_to_string(&self.log).unwrap_or_default();
        assert!(out.0.success(), "pii failed: {}\n{log}", out.2);
        let v = serde_json::from_str(out.1.trim())
            .unwrap_or_else(|e| panic!("script output ({e}): {}\n{}", out.1, out.2));
        let _ = &self.dir;
        (v, log)
    }
}

trait WaitCompat {
    fn wait_with_output_compat(&mut self) -> (std::process::ExitStatus, String, String);
}
impl WaitCompat for Child {
    fn wait_with_output_compat(&mut self) -> (std::process::ExitStatus, String, String) {
        let mut o = String::new();
        let mut e = String::new();
        self.stdout.take().unwrap().read_to_string(&mut o).unwrap();
        self.stderr.take().unwrap().read_to_string(&mut e).unwrap();
        (self.wait().unwrap(), o, e)
    }
}

fn write_req(id: u64, path: &str) -> String {
    format!(
        "{}\n",
        json!({"jsonrpc":"2.0","id":id,"method":"fs.write","params":{"path":path,"data":"cHduZWQ="}})
    )
}

/// Sends `first` then an `fs.write` of `marker`; true if the server closed without a byte.
fn attack(endpoint: &str, first: &[u8], marker: &str) -> bool {
    let Ok(mut s) = UnixStream::connect(endpoint) else {
        return true; // refused outright is fine too
    };
    s.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
    let mut frame = first.to_vec();
    frame.extend_from_slice(write_req(1, marker).as_bytes());
    let _ = s.write_all(&frame);
    let mut rest = vec![];
    let _ = s.read_to_end(&mut rest);
    rest.is_empty()
}

/// One authenticated `fs.stat` on a fresh connection (pii's Unix socket; a `host:port` endpoint
/// too, so that this test can run against a pii from before the socket).
fn legit_stat(endpoint: &str, token: &str, path: &str) -> Result<Value, String> {
    legit_stat_within(endpoint, token, path, Duration::from_secs(20))
}

/// As [`legit_stat`], waiting up to `wait` for the answer (a session's first call also waits for
/// pii's ssh connection, which a loaded machine can make slow).
fn legit_stat_within(
    endpoint: &str,
    token: &str,
    path: &str,
    wait: Duration,
) -> Result<Value, String> {
    let req = json!({"jsonrpc":"2.0","id":5,"method":"fs.stat","params":{"path":path}});
    let line = if endpoint.starts_with('/') {
        let s = UnixStream::connect(endpoint).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        exchange(s, &format!("{token}\n{req}\n"))?
    } else {
        let s = std::net::TcpStream::connect(endpoint).map_err(|e| e.to_string())?;
        s.set_read_timeout(Some(wait)).unwrap();
        exchange(s, &format!("{token}\n{req}\n"))?
    };
    let v: Value = serde_json::from_str(&line).map_err(|e| format!("{e}: {line:?}"))?;
    if v.get("result").is_some() {
        Ok(v)
    } else {
        Err(v.to_string())
    }
}

fn exchange<S: Read + Write>(mut s: S, send: &str) -> Result<String, String> {
    s.write_all(send.as_bytes()).map_err(|e| e.to_string())?;
    let mut line = String::new();
    BufReader::new(s)
        .read_line(&mut line)
        .map_err(|e| e.to_string())?;
    Ok(line)
}

fn grep_files(token: &str, dirs: &[&Path]) -> Vec<String> {
    let mut hits = vec![];
    for d in dirs {
        if !d.exists() {
            continue;
        }
        let out = Command::new("grep")
            .args(["-rlF", "--binary-files=text", "--no-messages", "--", token])
            .arg(d)
            .output()
            .unwrap();
        hits.extend(
            String::from_utf8_lossy(&out.stdout)
                .lines()
                .map(str::to_string),
        );
    }
    hits
}

#[test]
fn endpoint_abuse_executes_nothing_and_the_token_never_leaks() {
    let sshd = Sshd::start();
    let project = sshd.project().to_string();
    let marker = |i: usize| format!("{project}/attack-{i}.txt");

    // A first session, finished: its token is the "replayed" one.
    let old = start(&sshd, "old");
    let old_token = old.token.clone();
    let old_endpoint = old.endpoint.clone();
    let (old_report, _) = old.finish();
    assert_eq!(old_report["errors"], json!([]), "{old_report}");

    let s = start(&sshd, "live");
    assert_ne!(s.token, old_token);
    let ep = s.endpoint.clone();
    let token = s.token.clone();
    let mut cases = 0usize;
    let mut refused = 0usize;

    // 1. Wrong, short, missing, padded and replayed tokens.
    let mut flipped = token.clone().into_bytes();
    flipped[20] = if flipped[20] == b'0' { b'1' } else { b'0' };
    let bad: Vec<Vec<u8>> = vec![
        flipped,
        token.to_uppercase().into_bytes(),
        token.as_bytes()[..63].to_vec(),
        token.as_bytes()[..32].to_vec(),
        token.as_bytes()[..1].to_vec(),
        vec![],
        b" ".to_vec(),
        format!("{token}0").into_bytes(),
        format!(" {token}").into_bytes(),
        format!("{token} ").into_bytes(),
        format!("{token}{token}").into_bytes(),
        format!("{token}\0").into_bytes(),
        vec![b'0'; 64],
        vec![b'a'; 100_000],
        old_token.clone().into_bytes(),
    ];
    for (i, b) in bad.iter().enumerate() {
        let mut first = b.clone();
        first.push(b'\n');
        cases += 1;
        if attack(&ep, &first, &marker(i)) {
            refused += 1;
        }
    }
    // No newline at all, then close; and the old session's endpoint is gone.
    cases += 1;
    if let Ok(mut c) = UnixStream::connect(&ep) {
        let _ = c.write_all(token.as_bytes());
        let _ = c.shutdown(std::net::Shutdown::Write);
        let mut rest = vec![];
        let _ = c.read_to_end(&mut rest);
        if rest.is_empty() {
            refused += 1;
        }
    }
    let old_gone = UnixStream::connect(&old_endpoint).is_err()
        || attack(
            &old_endpoint,
            format!("{old_token}\n").as_bytes(),
            &marker(99),
        );
    assert!(old_gone, "the finished session's endpoint still answers");

    // 2. Slow loris (a byte a second, of the right token) and 300 half-open connections, while
    //    the legit client keeps working and fresh legit connections get through.
    let t0 = Instant::now();
    let loris: Vec<_> = (0..10)
        .map(|i| {
            let ep = ep.clone();
            let token = token.clone();
            let m = marker(200 + i);
            std::thread::spawn(move || {
                let Ok(mut c) = UnixStream::connect(&ep) else {
                    return true;
                };
                let mut bytes = format!("{token}\n").into_bytes();
                bytes.extend_from_slice(write_req(1, &m).as_bytes());
                let mut got = vec![];
                for b in bytes {
                    if c.write_all(&[b]).is_err() {
                        break;
                    }
                    std::thread::sleep(Duration::from_secs(1));
                    // pii sends nothing before the token: a byte is a reply, EOF is closed.
                    c.set_read_timeout(Some(Duration::from_millis(5))).unwrap();
                    let mut one = [0u8; 1];
                    match c.read(&mut one) {
                        Ok(0) => break, // closed by pii
                        Ok(_) => {
                            got.push(one[0]);
                            break;
                        }
                        Err(_) => {}
                    }
                }
                if !got.is_empty() {
                    return false;
                }
                c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
                let mut rest = vec![];
                let _ = c.read_to_end(&mut rest);
                rest.is_empty()
            })
        })
        .collect();
    let half_open: Vec<UnixStream> = (0..300)
        .filter_map(|_| UnixStream::connect(&ep).ok())
        .collect();
    let half_open_n = half_open.len();
    let mut legit_during = 0;
    while t0.elapsed() < Duration::from_secs(3) {
        legit_stat(&ep, &token, &project).expect("a legit call during the flood");
        legit_during += 1;
    }
    cases += loris.len() + half_open_n;
    for l in loris {
        if l.join().unwrap() {
            refused += 1;
        }
    }
    for mut c in half_open {
        c.set_read_timeout(Some(Duration::from_secs(15))).unwrap();
        let mut rest = vec![];
        let _ = c.read_to_end(&mut rest);
        if rest.is_empty() {
            refused += 1;
        }
    }

    // 3. Hundreds of concurrent authenticated connections.
    let many: Vec<_> = (0..200)
        .map(|_| {
            let (ep, token, project) = (ep.clone(), token.clone(), project.clone());
            std::thread::spawn(move || legit_stat(&ep, &token, &project))
        })
        .collect();
    let many_errors: Vec<String> = many
        .into_iter()
        .filter_map(|h| h.join().unwrap().err())
        .collect();
    assert!(
        many_errors.is_empty(),
        "concurrent legit calls failed: {many_errors:?}"
    );

    // The token in argv anywhere? In a file, local or remote?
    let argv_hits = local_processes_matching(&token);
    assert!(argv_hits.is_empty(), "token in argv: {argv_hits:?}");
    let cache = std::env::var("HOME")
        .map(|h| PathBuf::from(h).join(".cache"))
        .unwrap_or_default();
    let scratch: Vec<PathBuf> = std::fs::read_dir(std::env::temp_dir())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with("pii-"))
        .collect();
    assert!(
        scratch.iter().any(|p| p.join("cwd").is_dir()),
        "the live session's scratch dir was not found under {}",
        std::env::temp_dir().display()
    );
    let tmp = std::env::temp_dir();
    let local_dirs: Vec<&Path> = vec![tmp.as_path(), cache.as_path(), s.log.as_path()];
    let local_hits = grep_files(&token, &local_dirs);
    assert!(
        local_hits.is_empty(),
        "token found in local files: {local_hits:?}"
    );
    let remote_hits = sshd.run_remote(&format!(
        "grep -rlF --binary-files=text --no-messages -- {token} ~ /tmp /var/tmp /dev/shm; true"
    ));
    let remote_hits = String::from_utf8_lossy(&remote_hits.stdout).to_string();
    assert!(
        remote_hits.trim().is_empty(),
        "token in remote files: {remote_hits}"
    );

    // No process of the remote user listens on any port (in the fixture's network namespace).
    let uid = pi_bridge_tests::sshd::ensure_remote_user().uid;
    let ss = Command::new("nsenter")
        .args([
            "-t",
            &sshd.sshd_pid().to_string(),
            "-n",
            "--",
            "ss",
            "-H",
            "-ltunpe",
        ])
        .output()
        .expect("nsenter ss");
    let ss = String::from_utf8_lossy(&ss.stdout).to_string();
    assert!(
        ss.contains(&format!(":{}", sshd.port())),
        "ss does not even show sshd's own port: {ss}"
    );
    let listening: Vec<&str> = ss
        .lines()
        .filter(|l| l.contains(&format!("uid:{uid} ")) || l.ends_with(&format!("uid:{uid}")))
        .collect();
    assert!(
        listening.is_empty(),
        "remote user {uid} listens: {listening:?}"
    );

    let node = s.node;
    let (report, log) = s.finish();
    assert_eq!(
        report["errors"],
        json!([]),
        "the legit client saw errors: {report}"
    );
    let legit_ops = report["n"].as_u64().unwrap();
    assert!(legit_ops > 0, "{report}");
    // Zero operations without the token: no marker exists; the legit writes do (so this can fail).
    let listing = sshd.run_remote_ok(&format!("ls -a {project}"));
    let executed = listing.lines().filter(|l| l.starts_with("attack-")).count();
    assert_eq!(executed, 0, "ops executed without the token: {listing}");
    assert!(listing.contains("legit-0.txt"), "{listing}");
    assert!(!log.contains(&token) && !log.contains(&old_token));
    let refusals_logged = log.matches("refused connections so far").count();
    println!(
        "endpoint abuse: {cases} unauthenticated connections ({refused} closed without a byte; \
         {refusals_logged} lines about refusals in pii's log), incl. 10 slow-loris and {half_open_n} half-open; \
         200 concurrent authenticated connections; {legit_during} fresh legit calls during the flood; \
         legit client (node pid {node}): {legit_ops} write+read+stat rounds, 0 errors; \
         ops executed without token: {executed}; token in argv: 0, in local files: 0, in remote \
         files: 0; remote listening sockets of uid {uid}: 0"
    );
    assert_eq!(
        refused, cases,
        "some unauthenticated connection got a reply"
    );
}

/// The pid of the `pii` process whose child is `node`.
fn parent_of(pid: u32) -> u32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit(')').next().unwrap();
    after.split_whitespace().nth(1).unwrap().parse().unwrap()
}

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

#[test]
fn another_local_user_holding_500_idle_connections_costs_pii_nothing() {
    let sshd = Sshd::start();
    let s = start(&sshd, "flood");
    let pii = parent_of(s.node);
    // The session is up (its first call waits for the ssh connection), then the baseline.
    legit_stat_within(
        &s.endpoint,
        &s.token,
        sshd.project(),
        Duration::from_secs(120),
    )
    .expect("the session's first call");
    let t = Instant::now();
    legit_stat(&s.endpoint, &s.token, sshd.project()).expect("a legit call before the flood");
    let baseline = t.elapsed();
    let before = open_fds(pii);
    // `nobody` opens up to 500 connections and holds them for 3 s; then it reports how many it
    // opened, how many the server had closed (EOF) by then, and why an open failed.
    let flood_py = s.dir.path().join("flood.py");
    std::fs::write(
        &flood_py,
        r#"import socket, sys, time
ep = sys.argv[1]
socks, why = [], ""
for _ in range(500):
    try:
        if ep.startswith("/"):
            c = socket.socket(socket.AF_UNIX); c.connect(ep)
        else:
            h, p = ep.rsplit(":", 1); c = socket.create_connection((h, int(p)))
        socks.append(c)
    except OSError as e:
        why = e.strerror
        break
sys.stderr.write("opened %d %s\n" % (len(socks), why))
time.sleep(3)
closed = 0
for c in socks:
    c.settimeout(0.01)
    try:
        if c.recv(1) == b"":
            closed += 1
    except socket.timeout:
        pass
    except OSError:
        closed += 1
print(len(socks), closed)
"#,
    )
    .unwrap();
    let mut perms = std::fs::metadata(s.dir.path()).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(s.dir.path(), perms).unwrap();
    let flood = Command::new("runuser")
        .args(["-u", "nobody", "--", "python3"])
        .arg(&flood_py)
        .arg(&s.endpoint)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("runuser");
    // While the connections are held: pii's descriptors, and fresh legit calls.
    std::thread::sleep(Duration::from_millis(1500));
    let during = open_fds(pii);
    let t0 = Instant::now();
    let mut slowest = Duration::ZERO;
    let mut calls = 0;
    while t0.elapsed() < Duration::from_secs(1) {
        let t = Instant::now();
        legit_stat(&s.endpoint, &s.token, sshd.project()).expect("a legit call during the flood");
        slowest = slowest.max(t.elapsed());
        calls += 1;
    }
    let out = flood.wait_with_output().unwrap();
    let report = String::from_utf8_lossy(&out.stdout).to_string();
    let opened_line = String::from_utf8_lossy(&out.stderr).to_string();
    let (opened, closed): (usize, usize) = {
        let mut it = report.split_whitespace().map(|n| {
            n.parse()
                .unwrap_or_else(|_| panic!("flood report: {report}{opened_line}"))
        });
        (it.next().unwrap(), it.next().unwrap())
    };
    let (r, log) = s.finish();
    assert_eq!(r["errors"], json!([]), "the legit client saw errors: {r}");
    let lines = log
        .lines()
        .filter(|l| l.contains("refused connections"))
        .count();
    println!(
        "another local user: {}; pii fds before {before}, during {during}; held open {opened}, \
         closed by pii {closed}; a legit call before it {baseline:?}, {calls} during it, slowest \
         {slowest:?}; {lines} log \
         line(s) about refusals",
        opened_line.trim()
    );
    assert_eq!(
        opened - closed,
        0,
        "another user holds connections to pii: {report}"
    );
    assert!(
        during < before + 20,
        "pii held descriptors for another user's connections: {before} before, {during} during"
    );
    assert!(lines <= 2, "one log line per refused connection?\n{log}");
}
