//! A bastion chain: pii reaches a locked-down target (`DisableForwarding yes`, the fixture's
//! default) through a jump host, once with `-J` and once with `ProxyJump` in the ssh config file.
//! Both sshd fixtures run here, each with its own private home; the bytes a script writes land in
//! the target's project only, and the jump host's log shows the login that carried them.
//! Each run keeps its connection (pii's `controlPersist` master) in a runtime directory of its
//! own, so the second run logs in afresh through the jump host; the masters are stopped at the
//! end, and then no ssh of either run may be left.

use std::path::Path;

use pi_bridge_tests::pii::{assert_success, local_processes_matching, masters, stop_masters};
use pi_bridge_tests::{paths, Sshd};

const SCRIPT: &str = r#"
const fs = require('fs');
const { execFileSync } = require('child_process');
const tag = process.argv[2];
fs.writeFileSync(`${tag}.txt`, `written via ${tag}\n`);
const branch = execFileSync('git', ['rev-parse', '--abbrev-ref', 'HEAD'], { encoding: 'utf8' }).trim();
console.log(`cwd=${process.cwd()} branch=${branch} files=${fs.readdirSync('.').sort().join(',')}`);
"#;

fn run(config: &Path, runtime: &Path, dest: &str, jump: Option<&str>, tag: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("tool.js");
    std::fs::write(&script, SCRIPT).unwrap();
    let log = dir.path().join("pii.log");
    let mut cmd = std::process::Command::new(paths::bin("pii"));
    cmd.arg("--ssh").arg(dest).arg("-F").arg(config);
    if let Some(j) = jump {
        cmd.arg("-J").arg(j);
    }
    let out = cmd
        .arg("--verbose")
        .arg("--log-file")
        .arg(&log)
        .arg("--pi")
        .arg(&script)
        .arg("--")
        .arg(tag)
        .env("XDG_RUNTIME_DIR", runtime)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_success(&format!("pii through the jump host ({tag})"), &out, &log);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if let Some(j) = jump {
        assert!(
            stderr.contains(&format!("-J {j}")),
            "ssh command line: {stderr}"
        );
    }
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn logins(sshd: &Sshd) -> usize {
    sshd.log()
        .matches("Accepted publickey for pibridge")
        .count()
}

#[test]
fn pii_reaches_a_locked_down_host_through_a_jump_host() {
    // The jump host must allow forwarding (ssh -J is a direct-tcpip channel through it).
    let jump = Sshd::builder()
        .extra_config("DisableForwarding no")
        .empty_project()
        .project_name("bastion")
        .start();
    let target = Sshd::builder().branch("behind-bastion").start();
    assert!(!Path::new(target.project()).exists());

    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("ssh_config");
    let via = "target-via-bastion";
    std::fs::write(
        &config,
        format!(
            "{}{}Host {via}\n  HostName 127.0.0.1\n  Port {}\n  User {}\n  IdentityFile {}\n  \
             IdentitiesOnly yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  \
             LogLevel ERROR\n  BatchMode yes\n  ProxyJump {}\n",
            jump.ssh_config_block(),
            target.ssh_config_block(),
            target.port(),
            target.user(),
            target.client_key().display(),
            jump.alias(),
        ),
    )
    .unwrap();

    // Without the jump host's help the target refuses to forward: a -J through the target fails.
    let refused = std::process::Command::new("ssh")
        .arg("-F")
        .arg(&config)
        .args(["-J", target.alias(), jump.alias(), "true"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(!refused.status.success(), "the target allowed forwarding");

    let runtimes: Vec<tempfile::TempDir> = (0..2).map(|_| tempfile::tempdir().unwrap()).collect();
    let before = logins(&jump);
    let project = target.project().to_string();
    let dest = format!("{}:{project}", target.alias());
    let out = run(
        &config,
        runtimes[0].path(),
        &dest,
        Some(jump.alias()),
        "dash-j",
    );
    assert!(
        out.contains(&format!(
            "cwd={project} branch=behind-bastion files=.git,.gitignore,AGENTS.md,dash-j.txt,"
        )),
        "{out}"
    );
    assert_eq!(target.read_remote("dash-j.txt"), b"written via dash-j\n");
    assert!(
        logins(&jump) > before,
        "the jump host saw no login:\n{}",
        jump.log()
    );

    let before = logins(&jump);
    let out = run(
        &config,
        runtimes[1].path(),
        &format!("{via}:{project}"),
        None,
        "proxyjump-config",
    );
    assert!(out.contains("proxyjump-config.txt"), "{out}");
    assert_eq!(
        target.read_remote("proxyjump-config.txt"),
        b"written via proxyjump-config\n"
    );
    assert!(
        logins(&jump) > before,
        "ProxyJump from the config file did not use the jump host"
    );

    // Nothing landed on the jump host; each run kept its connection (through the jump host) and
    // nothing else: once the masters are stopped, no ssh is left behind.
    assert!(!jump.remote_exists(&format!("{}/bastion/dash-j.txt", jump.remote_home())));
    for r in &runtimes {
        assert_eq!(masters(r.path()).len(), 1, "one kept connection per run");
        stop_masters(r.path());
    }
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !local_processes_matching(jump.alias()).is_empty() && std::time::Instant::now() < deadline
    {
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert_eq!(local_processes_matching(jump.alias()), Vec::<String>::new());
}
