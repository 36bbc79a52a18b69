//! Start-up order (issue 4): node starts while ssh is still connecting, and its first need of the
//! remote (process.cwd(), a routed path) waits for the session; a failed connect ends node and
//! pii with a clear error.
//!
//! Ordering is proven by events appended to one shared file, not by timings: the remote login
//! (an sshd ForceCommand wrapper) refuses to go on until node has been started, so with a serial
//! start-up the login would wait for its cap and write `login-end` before `node`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pi_bridge_tests::pii::{assert_success, local_processes_matching, pii_ssh};
use pi_bridge_tests::Sshd;

/// A world-writable directory under /tmp (the remote user writes its events there too; the
/// fixture's namespace hides only the remote home).
fn shared_dir() -> tempfile::TempDir {
    let d = tempfile::Builder::new()
        .prefix("pib-startup-")
        .tempdir_in("/tmp")
        .unwrap();
    std::fs::set_permissions(d.path(), std::fs::Permissions::from_mode(0o777)).unwrap();
    d
}

fn write_exec(path: &Path, text: &str) {
    std::fs::write(path, text).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

/// `node` that records `node` in `events` each time it is started to run a script (not for
/// pii's `--version` check).
fn node_wrapper(dir: &Path, events: &Path) -> PathBuf {
    let node = std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default())
        .map(|d| d.join("node"))
        .find(|p| p.is_file())
        .expect("node on PATH");
    let w = dir.join("node-wrapper.sh");
    write_exec(
        &w,
        &format!(
            "#!/bin/sh\nif [ \"$1\" != --version ]; then echo node >> '{}'; fi\nexec '{}' \"$@\"\n",
            events.display(),
            node.display()
        ),
    );
    w
}

fn events(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

#[test]
fn node_starts_before_a_slow_login_finishes_and_gets_the_session() {
    let shared = shared_dir();
    let ev = shared.path().join("events");
    std::fs::write(&ev, "").unwrap();
    std::fs::set_permissions(&ev, std::fs::Permissions::from_mode(0o666)).unwrap();
    // The remote login of pii's bootstrap (only it: the fixture's own commands pass) waits for
    // node to have started, at most 20 s.
    let gate = shared.path().join("gate.sh");
    write_exec(
        &gate,
        &format!(
            "#!/bin/sh\nev='{ev}'\ncase \"$SSH_ORIGINAL_COMMAND\" in *PI-BRIDGE-INSTALL*)\n  echo login-begin >> \"$ev\"\n  n=0; until grep -qx node \"$ev\" || [ $n -ge 200 ]; do sleep 0.1; n=$((n+1)); done\n  echo login-end >> \"$ev\";;\nesac\nexec sh -c \"$SSH_ORIGINAL_COMMAND\"\n",
            ev = ev.display()
        ),
    );
    let sshd = Sshd::builder()
        .extra_config(format!("ForceCommand {}", gate.display()))
        .start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("startup-order.cjs");
    std::fs::write(
        &script,
        "const fs = require('fs');\nconsole.log(JSON.stringify({ cwd: process.cwd(), notes: fs.existsSync('notes.md') }));\n",
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let wrapper = node_wrapper(shared.path(), &ev);
    let out = pii_ssh(
        &sshd,
        &log,
        &script,
        &["--node", wrapper.to_str().unwrap()],
        &[],
    )
    .output()
    .unwrap();
    assert_success("pii with a slow login", &out, &log);
    let got = events(&ev);
    let pos = |e: &str| got.iter().position(|x| x == e);
    let (node, end) = (pos("node"), pos("login-end"));
    assert!(
        node.is_some() && end.is_some() && node < end,
        "node was not started before the login finished: {got:?}"
    );
    assert!(pos("login-begin").is_some(), "the gate never ran: {got:?}");
    // Node's view of the session arrived once it was up: the remote project, routed.
    let line = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(line.trim()).expect("one JSON line");
    assert_eq!(v["cwd"], sshd.project(), "{line}");
    assert_eq!(v["notes"], true, "{line}");
}

#[test]
fn an_unreachable_host_fails_clearly_and_leaves_no_node() {
    let shared = shared_dir();
    let ev = shared.path().join("events");
    // A port nobody listens on: bound, then closed.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let marker = format!("unreachable-{}", std::process::id());
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join(format!("{marker}.cjs"));
    // Would keep node alive for a minute if it ever ran past the session.
    std::fs::write(
        &script,
        "console.log(process.cwd()); setTimeout(() => {}, 60000);\n",
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let wrapper = node_wrapper(shared.path(), &ev);
    let out = std::process::Command::new(pi_bridge_tests::paths::bin("pii"))
        .args([
            "--ssh",
            "nobody@127.0.0.1:/srv/app",
            "-p",
            &port.to_string(),
        ])
        .args(["-o", "StrictHostKeyChecking=no", "-o", "BatchMode=yes"])
        .arg("--log-file")
        .arg(&log)
        .arg("--node")
        .arg(&wrapper)
        .arg("--pi")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let logtext = std::fs::read_to_string(&log).unwrap_or_default();
    assert_eq!(
        out.status.code(),
        Some(1),
        "stderr: {stderr}\nlog: {logtext}"
    );
    assert!(
        stderr.contains("pii: ssh: connection to nobody@127.0.0.1 refused"),
        "no clear message: {stderr}"
    );
    assert!(
        out.stdout.is_empty(),
        "node ran past the failed session: {:?}",
        String::from_utf8_lossy(&out.stdout)
    );
    // node had been started (concurrently with ssh), and is gone now that pii has exited.
    assert_eq!(events(&ev), ["node"], "log: {logtext}");
    // It ended on its own (the preload's session.info failed), not killed after a wait.
    assert!(
        !logtext.contains("did not exit after the failed connect"),
        "{logtext}"
    );
    let left = local_processes_matching(&marker);
    assert!(left.is_empty(), "node left running: {left:?}");
}
