//! `pii doctor --ssh DEST:PATH` against real sshd fixtures: every line ✓ on a healthy project
//! (with the matrix cell's pi, its version and required node, that node checked against it, the
//! pair tested), and ✗ with the fix (and exit code 1) for a missing, a read-only and a git-less
//! project. A node too old for the pi and an untested pi: tests/tests/pi_versions.rs.

use std::process::{Command, Output, Stdio};

use pi_bridge_tests::{paths, Sshd};

fn doctor(sshd: &Sshd, dest: &str) -> (Output, String) {
    let out = Command::new(paths::bin("pii"))
        .arg("doctor")
        .arg("--ssh")
        .arg(dest)
        .arg("-F")
        .arg(sshd.ssh_config())
        .arg("--pi")
        .arg(paths::pi_cli())
        .stdin(Stdio::null())
        .output()
        .expect("run pii doctor");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out, text)
}

fn has_line(text: &str, mark: &str, needle: &str) -> bool {
    text.lines()
        .any(|l| l.starts_with(mark) && l.contains(needle))
}

#[test]
fn healthy_project_is_all_green_and_names_what_pi_will_see() {
    let sshd = Sshd::builder().branch("doctor-branch").start();
    let project = sshd.project().to_string();
    let pi = paths::pi();
    let cell = paths::cell();
    // pi's package, version and the node it needs; the node checked against it; the pair tested.
    let pi_line = format!(
        "pi {} {} at {} (needs Node {})",
        pi.package,
        pi.version,
        std::fs::canonicalize(&pi.cli).unwrap().display(),
        pi.engines_node
    );
    let node_line = format!("node v{}.", cell.node);
    let needs_line = format!(
        "(pi {} ({}) needs {})",
        pi.version, pi.package, pi.engines_node
    );
    let tested_line = format!("tested pair: pi {} on Node {}", pi.version, cell.node);

    let (out, text) = doctor(&sshd, &sshd.dest());
    assert!(out.status.success(), "doctor failed:\n{text}");
    assert!(!text.contains('✗'), "{text}");
    for (mark, needle) in [
        ("✓", node_line.as_str()),
        ("✓", &needs_line),
        ("✓", &pi_line),
        ("✓", &tested_line),
        ("✓", "ssh keep-alive: ServerAliveInterval "),
        ("✓", "reachable: the agent answered"),
        ("✓", "installed now"),
        ("✓", "remote linux x86_64"),
        ("✓", "git: git version"),
        ("✓", "bash: GNU bash"),
        ("✓", &format!("project directory {project} exists")),
        ("✓", "project directory is writable"),
        ("✓", &format!("git repository: {project}/.git")),
        ("✓", "git branch pi will show: doctor-branch"),
        (
            "✓",
            &format!("AGENTS.md pi will load (in this order): {project}/AGENTS.md"),
        ),
    ] {
        assert!(
            has_line(&text, mark, needle),
            "no `{mark} …{needle}…` line:\n{text}"
        );
    }
    assert!(text.contains("all checks passed"), "{text}");

    // The agent doctor installed is the one later runs use: the second doctor finds it.
    let (out, text) = doctor(&sshd, &sshd.dest());
    assert!(out.status.success(), "{text}");
    assert!(has_line(&text, "✓", "already installed"), "{text}");
    assert!(
        has_line(&text, "✓", "/.cache/pi-bridge/agent/0."),
        "agent path missing:\n{text}"
    );
}

#[test]
fn broken_projects_fail_with_the_fix() {
    let sshd = Sshd::start();
    let home = sshd.remote_home().to_string();

    // Missing directory.
    let missing = format!("{home}/no-such-project");
    let (out, text) = doctor(&sshd, &format!("{}:{missing}", sshd.alias()));
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        has_line(
            &text,
            "✗",
            &format!("project directory {missing} does not exist")
        ),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix: create it (mkdir -p {missing}")),
        "{text}"
    );
    assert!(text.contains("1 check(s) failed"), "{text}");

    // A relative path is resolved against the remote home, as ssh does.
    let (out, text) = doctor(&sshd, &format!("{}:project", sshd.alias()));
    assert!(out.status.success(), "{text}");

    // Not writable.
    sshd.run_remote_ok("chmod a-w .");
    let (out, text) = doctor(&sshd, &sshd.dest());
    sshd.run_remote_ok("chmod u+w .");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        has_line(&text, "✗", "is not writable by pibridge"),
        "{text}"
    );
    assert!(
        text.contains(&format!("fix: on the remote: chmod u+w {}", sshd.project())),
        "{text}"
    );

    // A broken .git.
    sshd.run_remote_ok("mv .git .git.bak && mkdir .git");
    let (out, text) = doctor(&sshd, &sshd.dest());
    sshd.run_remote_ok("rmdir .git && mv .git.bak .git");
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        has_line(
            &text,
            "✗",
            &format!("{}/.git is not a valid git repository", sshd.project())
        ),
        "{text}"
    );
}

#[test]
fn project_without_git_fails_with_git_init_as_the_fix() {
    let sshd = Sshd::builder().no_git().start();
    let (out, text) = doctor(&sshd, &sshd.dest());
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(has_line(&text, "✗", "no .git in"), "{text}");
    assert!(text.contains("fix: run `git init` in"), "{text}");
    // Everything else is still checked and fine.
    assert!(
        has_line(&text, "✓", "project directory is writable"),
        "{text}"
    );
}

#[test]
fn unreachable_host_fails_with_a_fix() {
    let sshd = Sshd::start();
    let port = sshd.port();
    drop(sshd); // nobody listens there now
    let cfg = tempfile::NamedTempFile::new().unwrap();
    std::fs::write(
        cfg.path(),
        format!(
            "Host gone\n  HostName 127.0.0.1\n  Port {port}\n  BatchMode yes\n  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n"
        ),
    )
    .unwrap();
    let out = Command::new(paths::bin("pii"))
        .args(["doctor", "--ssh", "gone:/srv/app", "-F"])
        .arg(cfg.path())
        .arg("--pi")
        .arg(paths::pi_cli())
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(has_line(&text, "✗", "ssh gone:"), "{text}");
    assert!(text.contains("fix: check that `ssh -F"), "{text}");
}
