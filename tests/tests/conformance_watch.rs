//! Watches through the bridge, over the real sshd fixture (whose project the test process cannot
//! see), against Node itself.
//!
//! - `footer_sees_a_remote_branch_switch`: `fixtures/watch/footer.cjs` makes exactly the calls pi's
//!   footer makes (find `.git`, read `.git/HEAD`, `fs.watch` its directory, 500 ms debounce,
//!   re-read HEAD). The test switches the branch on the remote once the script says it is
//!   watching and waits (20 s deadline, not a speed requirement) for the script to report it; the
//!   measured latency is logged, debounce included.
//! - `watch_events_match_plain_node`: `fixtures/watch/probe.cjs` (fs.watch live on return, on a
//!   directory, on a directory whose files the script writes with fs (the bridge writes
//!   in place, as Node does), on a file with Buffer filenames, recursive;
//!   fs.watchFile/unwatchFile; fs.promises.watch ended by an AbortSignal; close(); a missing path)
//!   runs once as plain node on a local directory and once through `pii --ssh`; the outputs must
//!   be equal case by case. The probe collapses consecutive duplicate (eventType, filename) pairs
//!   within each step: Node on Linux reports one IN_MODIFY per write(2), so a single shell write
//!   may show as 'change' once or twice.
//!   In recursive steps it also drops a 'change' right after the 'rename' of the same new file (Node
//!   20 emulates recursive watches on Linux in JS and may miss the creating write; see probe.cjs).
//!   Differences that are known bugs are listed in `KNOWN_DIFFERENCES` with the reason, and must
//!   keep differing (a fixed one fails until its entry is removed).
//! - `listings_stay_true`: `fixtures/watch/listing.cjs` lists directories (readdir in every form,
//!   withFileTypes, opendir) before and after changing them every way a listing can change (the
//!   process's own fs calls, its children, the directory replaced, removed, reached through a
//!   symlink, and changes made outside the session, which the test makes on the remote itself),
//!   once as plain node and once through `pii --ssh` with the cache on; the outputs must be equal.
//!   A listing the cache kept past a change shows as a difference. The run must also have served
//!   listings from the cache (its counters), or it would prove nothing about it.

use std::io::{BufRead, BufReader, Read};
use std::path::Path;
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{paths, Sshd};
use serde_json::Value;

fn watch_fixture(name: &str) -> std::path::PathBuf {
    paths::fixture("watch").join(name)
}

/// Waits for `child` up to `limit`; kills it and panics with `what` if it is still running then
/// (a hang is a failure with a message, not a stuck test run).
fn wait_within(mut child: Child, limit: Duration, what: &str, log: &Path) -> Output {
    let mut stdout = child.stdout.take();
    let mut stderr = child.stderr.take();
    let out_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stdout.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let err_t = std::thread::spawn(move || {
        let mut buf = Vec::new();
        if let Some(s) = stderr.as_mut() {
            let _ = s.read_to_end(&mut buf);
        }
        buf
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            let (o, e) = (out_t.join().unwrap(), err_t.join().unwrap());
            panic!(
                "{what} still running after {limit:?} (a watcher keeping the process alive?)\n\
                 stdout: {}\nstderr: {}\npii log:\n{}",
                String::from_utf8_lossy(&o),
                String::from_utf8_lossy(&e),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    Output {
        status,
        stdout: out_t.join().unwrap(),
        stderr: err_t.join().unwrap(),
    }
}

#[test]
fn footer_sees_a_remote_branch_switch() {
    let sshd = Sshd::start();
    let project = sshd.project().to_string();
    assert!(
        !Path::new(&project).join(".git").exists(),
        "the remote project must be invisible locally"
    );
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut child = pii_ssh(
        &sshd,
        &log,
        &watch_fixture("footer.cjs"),
        &[],
        &["other", "60000"],
    )
    .spawn()
    .expect("run pii");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<(Instant, String)>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut seen = vec![];
    let mut next_line = |limit: Duration, waiting_for: &str| -> (Instant, String) {
        match rx.recv_timeout(limit) {
            Ok((t, line)) => {
                seen.push(line.clone());
                (t, line)
            }
            // footer.cjs gives up by itself after 60 s, so a failure here leaves nothing behind.
            Err(_) => {
                panic!(
                    "no `{waiting_for}` line within {limit:?}; lines so far: {seen:?}\npii log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
        }
    };
    let (_, first) = next_line(Duration::from_secs(60), "BRANCH main");
    assert_eq!(first, "BRANCH main", "HEAD read through the bridge");
    let (_, watching) = next_line(Duration::from_secs(20), "WATCHING");
    assert_eq!(
        watching,
        format!("WATCHING {project}/.git"),
        "the watched dir is the remote .git"
    );

    let switched = Instant::now();
    sshd.run_remote_ok("git checkout -q -b other");
    let (at, line) = next_line(Duration::from_secs(20), "BRANCH other");
    assert_eq!(line, "BRANCH other", "the footer's view of the remote HEAD");
    eprintln!(
        "measured: remote branch switch seen by the footer's fs.watch after {} ms \
         (500 ms of it is the footer's debounce)",
        at.duration_since(switched).as_millis()
    );
    let out = wait_within(child, Duration::from_secs(30), "footer.cjs", &log);
    assert_success("footer.cjs through pii --ssh", &out, &log);
}

/// Cases where the bridge is known to differ from Node, with the reason. Such a case must still
/// differ (when it starts matching, the entry must go): the list cannot hide a new regression.
const KNOWN_DIFFERENCES: &[(&str, &str)] = &[];

/// One JSON object per line, keyed by its `case`.
fn cases(stdout: &[u8], what: &str) -> Vec<(String, Value)> {
    String::from_utf8_lossy(stdout)
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Value =
                serde_json::from_str(l).unwrap_or_else(|e| panic!("{what}: not JSON ({e}): {l}"));
            (v["case"].as_str().unwrap_or("?").to_string(), v)
        })
        .collect()
}

#[test]
fn watch_events_match_plain_node() {
    // Plain node on a local directory named like the remote project (the probe prints its name).
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_project = plain_dir.path().join("project");
    std::fs::create_dir(&plain_project).unwrap();
    let plain = Command::new(paths::node())
        .arg(watch_fixture("probe.cjs"))
        .current_dir(&plain_project)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node probe.cjs");
    let plain = wait_within(
        plain,
        Duration::from_secs(120),
        "plain node probe.cjs",
        Path::new("/dev/null"),
    );
    assert!(
        plain.status.success(),
        "plain probe failed: {}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let sshd = Sshd::builder().empty_project().no_git().start();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let child = pii_ssh(&sshd, &log, &watch_fixture("probe.cjs"), &[], &[])
        .spawn()
        .expect("run pii");
    let bridged = wait_within(
        child,
        Duration::from_secs(120),
        "probe.cjs through pii",
        &log,
    );
    assert_success("probe.cjs through pii --ssh", &bridged, &log);
    // The changes happened on the remote, not here.
    assert!(
        sshd.remote_exists("wd") && sshd.remote_exists("wr/sub/deeper/deep.txt"),
        "the probe's shell steps did not run on the remote"
    );
    assert!(!Path::new(sshd.project()).join("wd").exists());

    let plain = cases(&plain.stdout, "plain");
    let bridged = cases(&bridged.stdout, "bridged");
    let names: Vec<&str> = plain.iter().map(|(n, _)| n.as_str()).collect();
    assert!(
        names.len() >= 7 && names.last() == Some(&"end"),
        "plain probe ran every case: {names:?}"
    );
    let (mut passed, mut known, mut failed) = (0, 0, vec![]);
    for (name, want) in &plain {
        let reason = KNOWN_DIFFERENCES
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, r)| *r);
        match (bridged.iter().find(|(n, _)| n == name), reason) {
            (Some((_, got)), None) if got == want => passed += 1,
            (Some((_, got)), Some(_)) if got == want => failed.push(format!(
                "{name}: listed in KNOWN_DIFFERENCES but now matches Node: remove the entry"
            )),
            (Some((_, got)), Some(reason)) => {
                known += 1;
                eprintln!(
                    "known difference, {name}:\n  node:   {want}\n  bridge: {got}\n  why: {reason}"
                );
            }
            (Some((_, got)), None) => {
                failed.push(format!("{name}:\n  node:   {want}\n  bridge: {got}"))
            }
            (None, _) => failed.push(format!("{name}: missing from the bridged run")),
        }
    }
    println!(
        "watch conformance: {passed} passed, {} failed ({known} known differences)",
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
}

/// Runs a listing probe to its end: each `{"external": cmd}` line is run by `external` and
/// answered with `ok` on the probe's stdin; returns the probe's output (stdout: the other lines).
fn run_listing_probe(mut cmd: Command, what: &str, log: &Path, external: &dyn Fn(&str)) -> Output {
    use std::io::Write;
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("run {what}: {e}"));
    let mut stdin = child.stdin.take().unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines = vec![];
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let Ok(line) = rx.recv_timeout(left) else {
            break;
        };
        if let Ok(v) = serde_json::from_str::<Value>(&line) {
            if let Some(c) = v["external"].as_str() {
                external(c);
                writeln!(stdin, "ok").expect("answer the probe");
                continue;
            }
        }
        lines.push(line);
    }
    drop(stdin);
    let mut out = wait_within(child, Duration::from_secs(30), what, log);
    out.stdout = lines.join("\n").into_bytes();
    out
}

#[test]
fn listings_stay_true() {
    let probe = watch_fixture("listing.cjs");
    let plain_dir = tempfile::tempdir().unwrap();
    let plain_project = plain_dir.path().join("project");
    std::fs::create_dir(&plain_project).unwrap();
    let mut plain_cmd = Command::new(paths::node());
    plain_cmd.arg(&probe).current_dir(&plain_project);
    let local = |c: &str| {
        let st = Command::new("/bin/sh")
            .args(["-c", c])
            .current_dir(&plain_project)
            .status()
            .expect("sh");
        assert!(st.success(), "local {c}");
    };
    let plain = run_listing_probe(
        plain_cmd,
        "plain node listing.cjs",
        Path::new("/dev/null"),
        &local,
    );
    assert!(
        plain.status.success(),
        "plain probe failed: {}",
        String::from_utf8_lossy(&plain.stderr)
    );

    let sshd = Sshd::builder().empty_project().no_git().start();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    // The probe prints the cache's counters on stderr at its end.
    let cmd = pii_ssh(&sshd, &log, &probe, &[], &[]);
    let remote = |c: &str| {
        sshd.run_remote_ok(c);
    };
    let bridged = run_listing_probe(cmd, "listing.cjs through pii", &log, &remote);
    assert_success("listing.cjs through pii --ssh", &bridged, &log);
    assert!(
        !Path::new(sshd.project()).join("d").exists(),
        "the probe ran on the remote"
    );

    let plain_cases = cases(&plain.stdout, "plain");
    let bridged_cases = cases(&bridged.stdout, "bridged");
    assert!(
        plain_cases.len() >= 30 && plain_cases.last().map(|c| c.0.as_str()) == Some("end"),
        "plain probe ran every case: {plain_cases:?}"
    );
    let mut failed = vec![];
    for (name, want) in &plain_cases {
        match bridged_cases.iter().find(|(n, _)| n == name) {
            Some((_, got)) if got == want => {}
            Some((_, got)) => failed.push(format!("{name}:\n  node:   {want}\n  bridge: {got}")),
            None => failed.push(format!("{name}: missing from the bridged run")),
        }
    }
    let stats = String::from_utf8_lossy(&bridged.stderr)
        .lines()
        .find_map(|l| l.strip_prefix("pi-bridge cache: ").map(str::to_string))
        .unwrap_or_else(|| {
            panic!(
                "no cache counters on stderr: {}",
                String::from_utf8_lossy(&bridged.stderr)
            )
        });
    let stats: Value = serde_json::from_str(&stats).expect("counters are JSON");
    println!(
        "listing conformance: {} cases, {} differ; cache {stats}",
        plain_cases.len(),
        failed.len()
    );
    assert!(failed.is_empty(), "{}", failed.join("\n"));
    assert!(
        stats["listHits"].as_u64().unwrap_or(0) >= 20,
        "listings were served from the cache: {stats}"
    );
}
