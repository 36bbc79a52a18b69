//! Agent install over a real ssh connection: a binary for the wrong architecture is one clear
//! error saying how to get the right one, and a new agent build prunes the old one on the remote.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{paths, Sshd};

/// A file with a 64-bit little-endian ELF header for aarch64 (e_machine 183), nothing else.
fn fake_aarch64_elf(path: &Path) {
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1, 1, 0];
    h.resize(16, 0);
    h.extend_from_slice(&2u16.to_le_bytes()); // ET_EXEC
    h.extend_from_slice(&183u16.to_le_bytes()); // EM_AARCH64
    h.resize(64, 0);
    std::fs::write(path, h).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn cached_agents(sshd: &Sshd) -> Vec<String> {
    let out = sshd.run_remote_ok("ls -1 \"$HOME/.cache/pi-bridge/agent\" 2>/dev/null; true");
    out.lines().map(str::to_string).collect()
}

/// pii with `HOME` pointing at an empty dir and a copy of pii in its own directory, so the only
/// agent it can find is the one given with `--agent`.
fn isolated_pii(dir: &Path) -> std::path::PathBuf {
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let pii = bin.join("pii");
    std::fs::copy(paths::bin("pii"), &pii).unwrap();
    pii
}

#[test]
fn agent_for_another_arch_is_one_clear_error() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let pii = isolated_pii(dir.path());
    let arm = dir.path().join("pi-bridge-agent-aarch64");
    fake_aarch64_elf(&arm);
    let script = dir.path().join("tool.js");
    // Under routing by exclusion a program may run its local code while ssh connects; it never
    // gets a remote answer (process.cwd() is the remote's) when the connect fails.
    std::fs::write(&script, "process.cwd(); console.log('should not run')").unwrap();
    let out = std::process::Command::new(&pii)
        .arg("--ssh")
        .arg(sshd.dest())
        .arg("-F")
        .arg(sshd.ssh_config())
        .arg("--agent")
        .arg(&arm)
        .arg("--log-file")
        .arg(dir.path().join("pii.log"))
        .arg("--pi")
        .arg(&script)
        .env("HOME", dir.path())
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(!String::from_utf8_lossy(&out.stdout).contains("should not run"));
    let lines: Vec<&str> = stderr.lines().filter(|l| l.starts_with("pii:")).collect();
    assert_eq!(lines.len(), 1, "one error line: {stderr}");
    let e = lines[0];
    for part in [
        "no pi-bridge-agent binary for the remote (Linux x86_64",
        &format!("{} (ELF machine 183, not x86_64)", arm.display()),
        "cargo build --release -p pi-bridge-agent --target x86_64-unknown-linux-musl",
        "--agent",
        "~/.local/share/pi-bridge/agents/x86_64-unknown-linux-musl/pi-bridge-agent",
    ] {
        assert!(e.contains(part), "missing {part:?} in: {e}");
    }
    assert!(cached_agents(&sshd).is_empty(), "nothing installed");
}

#[test]
fn a_new_agent_build_replaces_and_prunes_the_old_one() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tool.js");
    std::fs::write(&script, "console.log('ran ' + process.cwd())").unwrap();
    let log = dir.path().join("pii.log");

    // Build "old" and "new" agents: the same binary, the new one with bytes appended (a
    // different sha256, so a different versioned directory; ELF ignores trailing bytes).
    let old = dir.path().join("old-agent");
    let new = dir.path().join("new-agent");
    std::fs::copy(paths::bin("pi-bridge-agent"), &old).unwrap();
    let mut bytes = std::fs::read(&old).unwrap();
    bytes.extend_from_slice(b"pi-bridge test build 2");
    std::fs::write(&new, bytes).unwrap();
    std::fs::set_permissions(&new, std::fs::Permissions::from_mode(0o755)).unwrap();

    let mut seen = vec![];
    for agent in [&old, &new] {
        let flags = ["--agent", agent.to_str().unwrap()];
        let out = pii_ssh(&sshd, &log, &script, &flags, &[]).output().unwrap();
        assert_success("pii with an agent build", &out, &log);
        assert!(String::from_utf8_lossy(&out.stdout).contains(&format!("ran {}", sshd.project())));
        let cached = cached_agents(&sshd);
        assert_eq!(
            cached.len(),
            1,
            "exactly one agent version kept: {cached:?}"
        );
        seen.push(cached[0].clone());
        // The bootstrap prunes only directories older than 10 minutes that no running process
        // executes (a live session of that version): wait for this session's agent to exit and
        // age its directory, so the next build may prune it.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while sshd
            .remote_processes()
            .iter()
            .any(|p| p.contains("pi-bridge-agent --stdio"))
        {
            assert!(
                std::time::Instant::now() < deadline,
                "the agent outlived its session: {:?}",
                sshd.remote_processes()
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        sshd.run_remote_ok(&format!(
            "touch -d '1 hour ago' \"$HOME/.cache/pi-bridge/agent/{}\"",
            cached[0]
        ));
    }
    assert_ne!(seen[0], seen[1], "the new build got its own directory");
    assert!(seen
        .iter()
        .all(|d| d.starts_with(&format!("{}-", env!("CARGO_PKG_VERSION")))));
}
