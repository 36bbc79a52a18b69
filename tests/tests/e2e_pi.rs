//! The real pi (the matrix cell's: 1.x or 0.73.1), through `pii --ssh`, over a real sshd whose
//! project the test process cannot see, driven by the scripted fake LLM: read, bash, write, edit;
//! a unicode file name and content; a binary file and an image read byte for byte; an
//! offset/limit read of a multi-megabyte file; the final answer; nothing left behind on either
//! side. And an abort (pi's RPC mode) kills the remote command it interrupts.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, local_processes_matching, pii_ssh};
use pi_bridge_tests::{
    llm, models_json, paths, pi_env, prompt_cwd, FakeLlm, Sshd, PI_ARGS, PROJECT_AGENTS_SENTENCE,
    PROJECT_HELLO,
};
use serde_json::{json, Value};

const BRANCH: &str = "remote-only-branch";
const NEW_FILE: &str = "created/by-pi.txt";
const NEW_CONTENT: &str = "written through the bridge\nsecond line ✓\n";
const UNICODE_FILE: &str = "ünïcödé/日本語 ✓.txt";
const UNICODE_CONTENT: &str = "κόσμε — naïve 🌍\nzweite Zeile: ÄÖÜß\n";
/// A 1×1 PNG: pi's read tool sends an image's bytes to the model as a data URL.
const PIXEL_PNG_B64: &str = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg==";
/// `data/blob.bin`: NUL, a control byte and bytes that are not UTF-8 ...
const BLOB: &[u8] = b"BIN\x00\x01\xff\xfeEND\n";
/// ... as pi's read tool decodes them (UTF-8, each bad byte a replacement character).
const BLOB_TEXT: &str = "BIN\u{0}\u{1}\u{fffd}\u{fffd}END\n";
/// `data/big.txt`: this many numbered lines (about 5.9 MB).
const BIG_LINES: u64 = 150_000;

fn big_line(n: u64) -> String {
    format!("line {n:07} of the multi-megabyte file")
}

fn script() -> serde_json::Value {
    json!([
        llm::tool("read", json!({"path": "src/hello.txt"})),
        llm::tool(
            "bash",
            json!({"command": "pwd; git rev-parse --abbrev-ref HEAD; hostname; echo uid=$(id -un)"})
        ),
        llm::tool("write", json!({"path": NEW_FILE, "content": NEW_CONTENT})),
        llm::tool(
            "edit",
            json!({"path": "notes.md", "edits": [{"oldText": "status: draft", "newText": "status: edited remotely"}]})
        ),
        llm::tool(
            "write",
            json!({"path": UNICODE_FILE, "content": UNICODE_CONTENT})
        ),
        llm::tool("read", json!({"path": UNICODE_FILE})),
        llm::tool("read", json!({"path": "data/blob.bin"})),
        llm::tool("read", json!({"path": "data/pixel.png"})),
        llm::tool(
            "read",
            json!({"path": "data/big.txt", "offset": 70_001, "limit": 3})
        ),
        llm::text("All done: FINAL-E2E-ANSWER"),
    ])
}

/// Binary and large files for the read tool, committed so that `git status` afterwards shows
/// exactly what pi changed.
fn seed_data(sshd: &Sshd) {
    sshd.run_remote_ok("mkdir -p data");
    sshd.write_remote("data/blob.bin", BLOB);
    sshd.run_remote_ok(&format!(
        "printf %s {PIXEL_PNG_B64} | base64 -d > data/pixel.png && \
         seq -f 'line %07g of the multi-megabyte file' 1 {BIG_LINES} > data/big.txt && \
         git add data && git -c user.name=t -c user.email=t@invalid commit -qm data"
    ));
}

/// The data URLs of the images in a recorded request.
fn image_urls(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|m| m["content"].as_array().cloned().unwrap_or_default())
        .filter_map(|part| part["image_url"]["url"].as_str().map(str::to_string))
        .collect()
}

/// What the session left in the remote project (`git status`, untracked files listed one by
/// one, sorted) and under the remote's `~/.cache/pi-bridge/run` (resume sockets).
fn remote_leftovers(sshd: &Sshd) -> (Vec<String>, String) {
    let status = sshd.run_remote_ok("git status --porcelain -z -uall");
    let mut lines: Vec<String> = status
        .split('\0')
        .filter(|l| !l.is_empty())
        .map(str::to_string)
        .collect();
    lines.sort();
    let run = sshd.run_remote_ok("ls -A ~/.cache/pi-bridge/run 2>/dev/null; true");
    (lines, run)
}

/// `pii-*` scratch directories left in `tmp` (pii's TMPDIR).
fn local_scratch(tmp: &Path) -> Vec<String> {
    std::fs::read_dir(tmp)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("pii-"))
        .collect()
}

/// The cached agent binaries on the remote: (path, inode, mtime) of each.
fn cached_agents(sshd: &Sshd) -> Vec<String> {
    let out = sshd.run_remote(
        "for f in \"$HOME\"/.cache/pi-bridge/agent/*/pi-bridge-agent; do [ -e \"$f\" ] && stat -c '%n %i %Y' \"$f\"; done; true",
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_until_no_remote_processes(sshd: &Sshd) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = sshd
            .remote_processes()
            .into_iter()
            .filter(|p| !p.contains("sshd:"))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_pi_reads_runs_writes_and_edits_on_the_remote() {
    let sshd = Sshd::builder().branch(BRANCH).start();
    let project = sshd.project().to_string();
    seed_data(&sshd);
    assert!(
        !Path::new(&project).join("src/hello.txt").exists(),
        "the remote project must be invisible locally for this test to prove anything"
    );
    assert!(
        cached_agents(&sshd).is_empty(),
        "fresh remote home has no agent"
    );

    let mut runs = vec![];
    for run in 0..2 {
        if run == 1 {
            // Undo the first run's changes so the second run repeats the same script.
            sshd.run_remote_ok("rm -r created ünïcödé && git checkout -q notes.md");
        }
        let llm = FakeLlm::start(script());
        let (agent_dir, env) = pi_env(&llm);
        // A model that takes images: pi then sends the image it read to the model.
        let mut models = models_json(&llm);
        models["providers"]["fake"]["models"][0]["input"] = json!(["text", "image"]);
        std::fs::write(agent_dir.path().join("models.json"), models.to_string()).unwrap();
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("pii.log");
        let tmp = logdir.path().join("tmp");
        std::fs::create_dir(&tmp).unwrap();
        let mut args = vec!["-p", "do the scripted steps"];
        args.extend(PI_ARGS);
        let mut cmd = pii_ssh(&sshd, &log, &paths::pi_cli(), &["--verbose"], &args);
        cmd.envs(env).env("TMPDIR", &tmp);
        let out = cmd.output().expect("run pii");
        assert_success("pii running pi", &out, &log);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stdout.contains("FINAL-E2E-ANSWER"),
            "pi's final answer missing: {stdout}\n{stderr}"
        );
        runs.push((stderr, llm.requests(), cached_agents(&sshd)));

        // Nothing of the session keeps running: not on the remote, not locally.
        let left = wait_until_no_remote_processes(&sshd);
        assert!(
            left.is_empty(),
            "remote processes left after pii exited: {left:?}"
        );
        let local = local_processes_matching(sshd.alias());
        assert!(local.is_empty(), "local ssh processes left: {local:?}");
        let scratch = local_scratch(&tmp);
        assert!(scratch.is_empty(), "pii's scratch left: {scratch:?}");
        // In the project: exactly what pi changed (no temp file of an atomic write); no resume
        // socket of the session.
        let (status, run) = remote_leftovers(&sshd);
        assert_eq!(
            status,
            [
                " M notes.md".to_string(),
                format!("?? {NEW_FILE}"),
                format!("?? {UNICODE_FILE}")
            ],
            "remote project after the run"
        );
        assert_eq!(run.trim(), "", "resume sockets left on the remote");
    }

    // The agent was uploaded on the first run and reused on the second.
    let (first_stderr, requests, agents_after_first) = &runs[0];
    let (second_stderr, _, agents_after_second) = &runs[1];
    assert!(
        first_stderr.contains("installing"),
        "first run did not install: {first_stderr}"
    );
    assert!(
        !second_stderr.contains("installing"),
        "second run reinstalled: {second_stderr}"
    );
    assert_eq!(agents_after_first.len(), 1, "{agents_after_first:?}");
    assert_eq!(
        agents_after_first, agents_after_second,
        "agent binary replaced on the second run"
    );

    // What reached the model: the remote AGENTS.md and the remote cwd.
    let steps = script().as_array().unwrap().len();
    assert_eq!(
        requests.len(),
        steps,
        "one request per script step: {requests:#?}"
    );
    let system = llm::system_prompt(&requests[0]);
    assert!(
        system.contains(PROJECT_AGENTS_SENTENCE),
        "remote AGENTS.md not in the prompt: {system}"
    );
    assert!(
        system.contains(&prompt_cwd(&project)),
        "cwd is not the remote project: {system}"
    );

    // Each tool result holds remote content.
    let last = &requests[steps - 1];
    let results = llm::tool_results(last);
    assert_eq!(results.len(), steps - 1, "{results:#?}");
    assert!(
        results[0].contains(PROJECT_HELLO.trim()),
        "read: {}",
        results[0]
    );
    let bash = &results[1];
    assert!(
        bash.contains(&project),
        "bash pwd is not the remote project: {bash}"
    );
    assert!(
        bash.contains(BRANCH),
        "bash git branch is not the remote one: {bash}"
    );
    assert!(
        bash.contains("uid=pibridge"),
        "bash did not run as the remote user: {bash}"
    );
    assert!(
        results[2].to_lowercase().contains("wrote") || results[2].contains("Successfully"),
        "write: {}",
        results[2]
    );
    assert!(
        results[3].to_lowercase().contains("edit") || results[3].contains("Successfully"),
        "edit: {}",
        results[3]
    );

    assert!(
        results[4].to_lowercase().contains("wrote") || results[4].contains("Successfully"),
        "write of {UNICODE_FILE}: {}",
        results[4]
    );
    assert!(
        results[5].contains(UNICODE_CONTENT.trim_end()),
        "read of {UNICODE_FILE}: {}",
        results[5]
    );
    assert_eq!(results[6], BLOB_TEXT, "read of a binary file");
    assert!(
        results[7].contains("Read image file [image/png]"),
        "read of an image: {}",
        results[7]
    );
    assert_eq!(
        image_urls(last),
        [format!("data:image/png;base64,{PIXEL_PNG_B64}")],
        "the image's bytes as the model got them"
    );
    let big = &results[8];
    let want = (70_001..=70_003)
        .map(big_line)
        .collect::<Vec<_>>()
        .join("\n");
    assert!(
        big.starts_with(&format!("{want}\n")),
        "offset/limit read: {big}"
    );
    assert!(
        !big.contains(&big_line(70_000)) && !big.contains(&big_line(70_004)),
        "{big}"
    );
    assert!(
        // pi counts the empty line after the final newline too: a count of the whole file.
        big.contains(&format!("{} more lines", BIG_LINES + 1 - 70_003))
            && big.contains("offset=70004"),
        "the continuation note counts the rest of the file: {big}"
    );

    // The files exist with exact bytes on the remote, and not on the local side.
    assert_eq!(sshd.read_remote(NEW_FILE), NEW_CONTENT.as_bytes());
    assert_eq!(sshd.read_remote(UNICODE_FILE), UNICODE_CONTENT.as_bytes());
    assert_eq!(
        String::from_utf8(sshd.read_remote("notes.md")).unwrap(),
        "# Notes\n\nstatus: edited remotely\n"
    );
    assert!(
        !Path::new(&project).join(NEW_FILE).exists(),
        "new file leaked to the local side"
    );
    assert!(
        !Path::new(&project).join("notes.md").exists(),
        "notes.md exists locally"
    );
}

fn remote_sleepers(sshd: &Sshd) -> Vec<String> {
    sshd.remote_processes()
        .into_iter()
        .filter(|p| p.contains("sleep 301"))
        .collect()
}

fn wait_until(what: &str, deadline: Duration, mut pred: impl FnMut() -> bool) {
    let end = Instant::now() + deadline;
    while !pred() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// pi's RPC mode through pii: a prompt whose bash tool runs a long remote command, then `abort`.
/// The remote process is killed, pi reports the abort and asks the model nothing more, and once
/// stdin closes pi and pii exit 0 leaving nothing behind.
#[test]
fn abort_kills_the_remote_command() {
    let sshd = Sshd::start();
    let llm = FakeLlm::start(json!([
        llm::tool("bash", json!({"command": "echo started; exec sleep 301"})),
        llm::text("NEVER-REACHED"),
    ]));
    let (_agent_dir, env) = pi_env(&llm);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut args = vec!["--mode", "rpc"];
    args.extend(PI_ARGS);
    let mut child = pii_ssh(&sshd, &log, &paths::pi_cli(), &[], &args)
        .envs(env)
        .stdin(Stdio::piped())
        .spawn()
        .expect("run pii");
    let mut stdin = child.stdin.take().unwrap();
    let (tx, events) = mpsc::channel::<Value>();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if let Ok(v) = serde_json::from_str::<Value>(&line) {
                let _ = tx.send(v);
            }
        }
    });
    let next_event = |kind: &str| -> Value {
        let end = Instant::now() + Duration::from_secs(30);
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match events.recv_timeout(left) {
                Ok(v) if v["type"] == kind => return v,
                Ok(_) => {}
                Err(_) => panic!(
                    "no `{kind}` event from pi's RPC mode; pii log:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                ),
            }
        }
    };
    writeln!(stdin, r#"{{"type":"prompt","message":"run it"}}"#).unwrap();
    next_event("tool_execution_start");
    wait_until("the remote sleep to start", Duration::from_secs(30), || {
        !remote_sleepers(&sshd).is_empty()
    });
    writeln!(stdin, r#"{{"type":"abort"}}"#).unwrap();
    wait_until(
        "the remote sleep to be killed",
        Duration::from_secs(20),
        || remote_sleepers(&sshd).is_empty(),
    );
    let end = next_event("tool_execution_end");
    eprintln!("tool_execution_end: {end}");
    assert_eq!(end["isError"], true, "{end}");
    let result = end["result"].to_string();
    assert!(
        result.contains("started") && result.to_lowercase().contains("abort"),
        "the remote command's output, then the abort: {end}"
    );
    next_event("agent_end");
    drop(stdin);
    let deadline = Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("pii did not exit after stdin closed");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(status.success(), "pii: {status}");
    assert_eq!(
        llm.requests().len(),
        1,
        "pi asked the model again after the abort"
    );
    let left = wait_until_no_remote_processes(&sshd);
    assert!(left.is_empty(), "remote processes left: {left:?}");
    let local = local_processes_matching(sshd.alias());
    assert!(local.is_empty(), "local ssh processes left: {local:?}");
}
