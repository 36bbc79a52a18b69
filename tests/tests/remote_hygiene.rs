//! What the agent leaves and does on the remote host, over the real sshd fixture:
//!
//! - `commands_see_no_sshd_session_and_no_rc_noise`: a remote user whose `~/.profile` and
//!   `~/.bashrc` print text before their interactive guards (`SshdBuilder::noisy_rc`); the real
//!   pi (fake LLM) runs a bash command through its tool. The tool result holds the command's
//!   output only: bash must not believe sshd started it (no `SSH_CLIENT`/`SSH_CONNECTION`/
//!   `SSH_TTY` in its environment, so it does not source `~/.bashrc`), while the login PATH set
//!   in `~/.profile` still applies; nor does any of that text reach pii's stderr.
//! - `a_fifo_named_agents_md_neither_hangs_nor_pins_an_agent_thread`: the project's AGENTS.md is
//!   a FIFO nobody writes. pi reads it at start (Node itself would block there forever); through
//!   the bridge the read ends (an empty file) and, checked from the remote while the session
//!   still runs, no agent thread holds the FIFO open for reading (a writer's open finds no
//!   reader). Reads of it in every form come back too.
//! - `rewriting_a_private_file_exposes_nothing_to_another_user`: while pii rewrites a 0600 file
//!   again and again (whole-file writes small and large, a promise write, a write stream, an fd),
//!   another remote user watches the directory (inotify) and tries to open everything that
//!   appears in it. Nothing but the file itself may appear (no temp file), nothing may be opened,
//!   and the file keeps its mode, owner and inode.

use std::io::{BufRead, BufReader};
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::sshd::{LOGIN_PATH_TOOL, LOGIN_PATH_TOOL_TEXT, NOISY_RC_TEXT};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::json;

/// Runs pi -p through pii on `sshd` with the fake LLM `script`; returns (stdout, the tool
/// results of the last request). Fails if pii does not finish within `limit` (a hang is a
/// failure with a message, not a stuck test run).
fn run_pi(sshd: &Sshd, script: serde_json::Value, limit: Duration) -> (String, Vec<String>) {
    let llm = FakeLlm::start(script);
    let (_agent_dir, env) = pi_env(&llm);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut args = vec!["-p", "go"];
    args.extend(PI_ARGS);
    let mut cmd = pii_ssh(sshd, &log, &paths::pi_cli(), &[], &args);
    cmd.envs(env);
    let out = output_within(cmd, limit, &log);
    assert_success("pii running pi", &out, &log);
    // Nothing the remote's rc files print reaches the terminal either (pii logs it).
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !stderr.contains("NOISY"),
        "rc noise on pii's stderr: {stderr}"
    );
    let requests = llm.requests();
    let results = requests.last().map(llm::tool_results).unwrap_or_default();
    (String::from_utf8_lossy(&out.stdout).into_owned(), results)
}

fn output_within(mut cmd: Command, limit: Duration, log: &Path) -> std::process::Output {
    // A group of its own, so that a hang ends with node and ssh too (they hold the pipes).
    cmd.process_group(0);
    let mut child = cmd.spawn().expect("spawn pii");
    let deadline = Instant::now() + limit;
    loop {
        if child.try_wait().unwrap().is_some() {
            return child.wait_with_output().unwrap();
        }
        if Instant::now() > deadline {
            // SAFETY: signalling the process group we created.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let out = child.wait_with_output().unwrap();
            panic!(
                "pii still running after {limit:?}\nstdout: {}\nstderr: {}\npii log:\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(log).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn commands_see_no_sshd_session_and_no_rc_noise() {
    let sshd = Sshd::builder().noisy_rc().start();
    // The fixture is noisy: an ssh command bash runs does print the text (sshd's bash sources
    // ~/.bashrc), so its absence below is the bridge's doing.
    let direct = sshd.ssh_command().arg("echo direct").output().expect("ssh");
    assert!(
        String::from_utf8_lossy(&direct.stdout).contains("NOISY-BASHRC-OUT"),
        "the fixture's rc files should talk to a plain ssh command: {direct:?}"
    );
    let command = format!(
        "echo FIRST-LINE; {LOGIN_PATH_TOOL}; echo \"ssh=[${{SSH_CLIENT-}}${{SSH_CONNECTION-}}${{SSH_TTY-}}]\"; echo LAST-LINE"
    );
    let script = json!([
        llm::tool("bash", json!({ "command": command })),
        llm::text("ENV-DONE"),
    ]);
    let (stdout, results) = run_pi(&sshd, script, Duration::from_secs(120));
    assert!(stdout.contains("ENV-DONE"), "{stdout}");
    assert_eq!(results.len(), 1, "{results:#?}");
    let result = &results[0];
    assert!(
        result.trim_start().starts_with("FIRST-LINE"),
        "the tool result must start with the command's own output:\n{result}"
    );
    assert!(
        result.contains(LOGIN_PATH_TOOL_TEXT),
        "login PATH: {result}"
    );
    assert!(
        result.contains("ssh=[]"),
        "sshd session variables: {result}"
    );
    for noise in NOISY_RC_TEXT {
        assert!(
            !result.contains(noise),
            "rc noise {noise} in the tool result:\n{result}"
        );
    }
    assert!(!result.contains("NOISY"), "{result}");
}

/// A command run as `user` inside the fixture's namespaces (the remote host as the test sees it).
fn as_user(sshd: &Sshd, user: &str) -> Command {
    let mut cmd = Command::new("nsenter");
    cmd.arg("-t")
        .arg(sshd.sshd_pid().to_string())
        .args(["-m", "-p", "--", "runuser", "-u", user, "--"]);
    cmd
}

/// `true` when a writer's non-blocking open of the remote FIFO finds a reader (someone holds it
/// open for reading), `false` when it fails with ENXIO. Runs as the remote user in the fixture's
/// namespaces, with the cell's node.
fn fifo_has_reader(sshd: &Sshd, rel: &str) -> bool {
    let path = sshd.remote_path(rel);
    let out = as_user(sshd, sshd.user())
        .arg(paths::node())
        .arg("-e")
        .arg(
            "const fs = require('fs'); try { fs.closeSync(fs.openSync(process.argv[1], \
             fs.constants.O_WRONLY | fs.constants.O_NONBLOCK)); console.log('READER'); } \
             catch (e) { console.log(e.code); }",
        )
        .arg(&path)
        .output()
        .expect("run node in the fixture");
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match text.as_str() {
        "READER" => true,
        "ENXIO" => false,
        other => panic!("unexpected answer from the FIFO check: {other:?} ({out:?})"),
    }
}

#[test]
fn a_fifo_named_agents_md_neither_hangs_nor_pins_an_agent_thread() {
    let sshd = Sshd::start();
    sshd.run_remote_ok("rm -f AGENTS.md && mkfifo AGENTS.md");
    assert!(!fifo_has_reader(&sshd, "AGENTS.md"));

    // pi reads AGENTS.md at start; then, in the same session, a command checks the FIFO.
    let check = "if timeout 2 sh -c ': > AGENTS.md' 2>/dev/null; then echo FIFO-HELD-BY-A-READER; \
                 else echo FIFO-FREE; fi";
    let script = json!([
        llm::tool("bash", json!({ "command": check })),
        llm::text("FIFO-DONE"),
    ]);
    let (stdout, results) = run_pi(&sshd, script, Duration::from_secs(120));
    assert!(stdout.contains("FIFO-DONE"), "{stdout}");
    assert_eq!(results.len(), 1, "{results:#?}");
    assert!(
        results[0].contains("FIFO-FREE"),
        "an agent thread still holds the FIFO open after pi read AGENTS.md: {}",
        results[0]
    );

    // Every way of reading it through the bridge comes back; the check runs while the session
    // (and so every agent thread) is still there.
    let dir = tempfile::tempdir().unwrap();
    let go = dir.path().join("go");
    let script = dir.path().join("fifo.cjs");
    std::fs::write(
        &script,
        format!(
            r#"const fs = require('fs');
const r = {{}};
const t = (k, f) => {{ try {{ r[k] = f(); }} catch (e) {{ r[k] = e.code; }} }};
t('exists', () => fs.existsSync('AGENTS.md'));
t('isFIFO', () => fs.statSync('AGENTS.md').isFIFO());
t('readFileSync', () => fs.readFileSync('AGENTS.md', 'utf8'));
t('openSync+readSync', () => {{ const fd = fs.openSync('AGENTS.md', 'r'); try {{ return fs.readSync(fd, Buffer.alloc(8)); }} finally {{ fs.closeSync(fd); }} }});
(async () => {{
  try {{ r.promise = await fs.promises.readFile('AGENTS.md', 'utf8'); }} catch (e) {{ r.promise = e.code; }}
  r.stream = await new Promise((res) => {{ const s = fs.createReadStream('AGENTS.md'); let n = 0; s.on('data', (d) => (n += d.length)); s.on('end', () => res(n)); s.on('error', (e) => res(e.code)); }});
  console.log('READY ' + JSON.stringify(r));
  const wait = () => (fs.existsSync({go:?}) ? process.exit(0) : setTimeout(wait, 20));
  wait();
}})();
"#,
            go = go.to_str().unwrap()
        ),
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let mut cmd = pii_ssh(&sshd, &log, &script, &[], &[]);
    cmd.stdout(Stdio::piped()).process_group(0);
    let mut child = cmd.spawn().expect("spawn pii");
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(rest) = line.strip_prefix("READY ") {
                let _ = tx.send(rest.to_string());
            }
        }
    });
    let ready = match rx.recv_timeout(Duration::from_secs(90)) {
        Ok(r) => r,
        Err(_) => {
            // SAFETY: signalling the process group we created.
            unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
            let out = child.wait_with_output().unwrap();
            panic!(
                "the reads of the FIFO did not come back within 90 s\nstderr: {}\npii log:\n{}",
                String::from_utf8_lossy(&out.stderr),
                std::fs::read_to_string(&log).unwrap_or_default()
            );
        }
    };
    let held = fifo_has_reader(&sshd, "AGENTS.md");
    std::fs::write(&go, "").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(out.status.success(), "{out:?}");
    let r: serde_json::Value = serde_json::from_str(&ready).unwrap();
    assert_eq!(r["exists"], true, "{r}");
    assert_eq!(r["isFIFO"], true, "{r}");
    // No writer: the end of the data at once (Node, blocking, would wait for a writer).
    assert_eq!(r["readFileSync"], "", "{r}");
    assert_eq!(r["openSync+readSync"], 0, "{r}");
    assert_eq!(r["promise"], "", "{r}");
    assert_eq!(r["stream"], 0, "{r}");
    assert!(
        !held,
        "an agent thread holds the FIFO open after the reads returned"
    );
}

const OTHER_USER: &str = "pibridge-other";

/// A second remote user (no home, no login), created once.
fn ensure_other_user() {
    let exists = Command::new("getent")
        .args(["passwd", OTHER_USER])
        .output()
        .unwrap()
        .status
        .success();
    if !exists {
        let out = Command::new("useradd")
            .args(["-M", "-s", "/usr/sbin/nologin", OTHER_USER])
            .output()
            .expect("useradd");
        // Another test binary may have created it meanwhile.
        let again = Command::new("getent")
            .args(["passwd", OTHER_USER])
            .output()
            .unwrap();
        assert!(again.status.success(), "useradd {OTHER_USER}: {out:?}");
    }
}

const WATCHER: &str = r#"'use strict';
// As another user: watch the directory and try to open everything that appears in it.
const fs = require('fs');
const path = require('path');
const [dir, stop] = process.argv.slice(2);
const seen = new Set();
const opened = [];
let leaked = false;
const tryOpen = (name) => {
  if (!name) return;
  seen.add(name);
  try {
    const fd = fs.openSync(path.join(dir, name), 'r');
    opened.push(name);
    // Keep reading what the descriptor shows for a while: content written later shows too.
    const deadline = Date.now() + 200;
    const buf = Buffer.alloc(1 << 16);
    while (Date.now() < deadline) {
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      if (buf.subarray(0, n).includes('SECRET')) leaked = true;
    }
    fs.closeSync(fd);
  } catch {
    /* not for us: good */
  }
};
const w = fs.watch(dir, (_e, name) => tryOpen(String(name)));
console.log('WATCHING');
const done = () => {
  if (!fs.existsSync(stop)) return setTimeout(done, 20);
  w.close();
  console.log(JSON.stringify({ seen: [...seen].sort(), opened, leaked }));
};
done();
"#;

const WRITER: &str = r#"'use strict';
const fs = require('fs');
const big = (i) => Buffer.concat([Buffer.from(`SECRET-${i}\n`), Buffer.alloc(5 * 1024 * 1024, 0x53)]);
(async () => {
  for (let i = 0; i < 20; i++) {
    fs.writeFileSync('secret.txt', `SECRET-${i}\n`);
    await fs.promises.writeFile('secret.txt', `SECRET-p${i}\n`);
    if (i % 5 === 0) fs.writeFileSync('secret.txt', big(i));
    await new Promise((res, rej) => fs.createWriteStream('secret.txt').on('finish', res).on('error', rej).end(`SECRET-s${i}\n`));
    const fd = fs.openSync('secret.txt', 'w');
    fs.writeSync(fd, `SECRET-fd${i}\n`);
    fs.closeSync(fd);
  }
  const st = fs.statSync('secret.txt');
  console.log(JSON.stringify({ mode: st.mode & 0o7777, uid: st.uid, ino: st.ino }));
})();
"#;

#[test]
fn rewriting_a_private_file_exposes_nothing_to_another_user() {
    ensure_other_user();
    let sshd = Sshd::start();
    sshd.run_remote_ok(
        "chmod 755 . && printf 'SECRET-initial\\n' > secret.txt && chmod 600 secret.txt && \
         stat -c '%i %u' secret.txt",
    );
    let before = sshd.run_remote_ok("stat -c '%i %u' secret.txt");
    let dir = tempfile::tempdir().unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let watcher = dir.path().join("watcher.cjs");
    std::fs::write(&watcher, WATCHER).unwrap();
    let stop = dir.path().join("stop");
    let mut watch = as_user(&sshd, OTHER_USER)
        .arg(paths::node())
        .arg(&watcher)
        .arg(sshd.project())
        .arg(&stop)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the other user's watcher");
    let mut lines = BufReader::new(watch.stdout.take().unwrap()).lines();
    assert_eq!(lines.next().unwrap().unwrap(), "WATCHING");
    // The other user can read the project directory, and cannot read the file itself.
    let probe = as_user(&sshd, OTHER_USER)
        .args(["sh", "-c"])
        .arg("ls \"$1\" >/dev/null && ! cat \"$1/secret.txt\" 2>/dev/null && echo OK")
        .arg("sh")
        .arg(sshd.project())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "OK",
        "{probe:?}"
    );

    let writer = dir.path().join("writer.cjs");
    std::fs::write(&writer, WRITER).unwrap();
    let log = dir.path().join("pii.log");
    let out = pii_ssh(&sshd, &log, &writer, &[], &[])
        .output()
        .expect("run pii");
    assert_success("pii rewriting secret.txt", &out, &log);
    let after: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();

    std::fs::write(&stop, "").unwrap();
    let report: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let _ = watch.wait();
    assert_eq!(
        report["seen"],
        json!(["secret.txt"]),
        "only the file itself may appear in the directory (no temp file): {report}"
    );
    assert_eq!(report["opened"], json!([]), "{report}");
    assert_eq!(report["leaked"], false, "{report}");
    let (ino, uid) = before.trim().split_once(' ').unwrap();
    assert_eq!(after["mode"], 0o600, "{after}");
    assert_eq!(after["uid"].to_string(), uid, "{after}");
    assert_eq!(
        after["ino"].to_string(),
        ino,
        "the file keeps its inode: {after}"
    );
}
