//! Agent install on a shared host, over the real sshd: two pii sessions starting at once
//! against a fresh remote home both succeed, and what is left is exactly one installed agent in
//! 0700 directories owned by the user, no temp files, nothing group- or world-writable. Two
//! different builds installing at once both succeed and neither prunes the other; the install
//! lock is not held by a running agent; a tampered cached agent (mode, size) is replaced; a
//! symlinked `~/.cache/pi-bridge` is refused with a clear error and nothing is written through it.

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::Sshd;

#[test]
fn two_concurrent_first_installs_leave_one_private_agent() {
    let sshd = Sshd::start();
    assert!(
        !sshd.remote_exists(&format!("{}/.cache/pi-bridge", sshd.remote_home())),
        "the fixture's remote home is not fresh"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("quick.cjs");
    std::fs::write(
        &script,
        "console.log(require('fs').readFileSync('src/hello.txt', 'utf8'));\n",
    )
    .unwrap();
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("pii-{i}.log")))
        .collect();
    let children: Vec<_> = logs
        .iter()
        .map(|log| pii_ssh(&sshd, log, &script, &[], &[]).spawn().unwrap())
        .collect();
    for (child, log) in children.into_iter().zip(&logs) {
        let out = child.wait_with_output().unwrap();
        assert_success("a concurrent first start", &out, log);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\n", pi_bridge_tests::PROJECT_HELLO)
        );
    }
    let uploads = logs
        .iter()
        .filter(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .contains("uploading")
        })
        .count();
    let listing = sshd.run_remote_ok(
        "cd ~/.cache/pi-bridge && find . -printf '%M %u %p\\n' | sort && \
         echo writable: && find ~/.cache/pi-bridge -perm /022 && echo end",
    );
    let agents: Vec<&str> = listing
        .lines()
        .filter(|l| l.ends_with("/pi-bridge-agent"))
        .collect();
    assert_eq!(agents.len(), 1, "{listing}");
    assert!(agents[0].starts_with("-rwx------ "), "{listing}");
    assert!(
        !listing.contains(".upload"),
        "temp files left behind: {listing}"
    );
    for l in listing
        .lines()
        .filter(|l| l.contains("./agent") && l.starts_with('d'))
    {
        assert!(l.starts_with("drwx------ "), "not 0700: {l}\n{listing}");
    }
    let user = sshd.user().to_string();
    assert!(
        listing
            .lines()
            .filter(|l| l.starts_with('d') || l.starts_with('-'))
            .all(|l| l.split(' ').nth(1) == Some(&user)),
        "{listing}"
    );
    let writable = listing
        .split("writable:\n")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches("end\n")
        .trim();
    assert!(
        writable.is_empty(),
        "group/world-writable paths: {writable}"
    );
    println!(
        "install safety: 2 concurrent first starts, both ok ({uploads} uploaded); remote cache: \
         {} agent binary, 0 temp files, dirs 0700, 0 group/world-writable paths",
        agents.len()
    );
}

fn quick_script(dir: &Path) -> PathBuf {
    let script = dir.join("quick.cjs");
    std::fs::write(
        &script,
        "console.log(require('fs').readFileSync('src/hello.txt', 'utf8'));\n",
    )
    .unwrap();
    script
}

/// `ls -ln` of the installed agents: (mode, uid, size, dir name).
fn installed(sshd: &Sshd) -> Vec<(String, String, u64, String)> {
    sshd.run_remote_ok("cd ~/.cache/pi-bridge/agent && for f in */pi-bridge-agent; do test -e \"$f\" && ls -ln \"$f\"; done; true")
        .lines()
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            (
                f[0].to_string(),
                f[2].to_string(),
                f[4].parse().unwrap(),
                f[8].split('/').next().unwrap().to_string(),
            )
        })
        .collect()
}

/// A private copy of the built agent (with `extra` appended): other builds of the workspace
/// cannot change it under the test.
fn private_agent(dir: &Path, name: &str, extra: &[u8]) -> PathBuf {
    let path = dir.join(name);
    let mut bytes = std::fs::read(pi_bridge_tests::paths::bin("pi-bridge-agent")).unwrap();
    bytes.extend_from_slice(extra);
    std::fs::write(&path, &bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

fn uploaded(log: &Path) -> usize {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .matches("uploading")
        .count()
}

#[test]
fn two_different_builds_install_at_once_and_neither_prunes_the_other() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = quick_script(dir.path());
    // Two builds: a private copy of the agent, and the same ELF with bytes appended (a different
    // sha256, so its own dir).
    let one = private_agent(dir.path(), "one-agent", b"");
    let other = private_agent(
        dir.path(),
        "other-agent",
        b"\npi-bridge install_safety build 2\n",
    );
    let bytes = std::fs::read(&other).unwrap();
    let flags: [Vec<&str>; 2] = [
        vec!["--agent", one.to_str().unwrap()],
        vec!["--agent", other.to_str().unwrap()],
    ];
    let mut rounds = 0;
    for round in 0..2 {
        // Fresh remote cache each round, so both really install at the same moment.
        sshd.run_remote_ok("rm -rf ~/.cache/pi-bridge");
        let logs: Vec<PathBuf> = (0..2)
            .map(|i| dir.path().join(format!("pii-{round}-{i}.log")))
            .collect();
        let children: Vec<_> = logs
            .iter()
            .zip(&flags)
            .map(|(log, f)| pii_ssh(&sshd, log, &script, f, &[]).spawn().unwrap())
            .collect();
        for (child, log) in children.into_iter().zip(&logs) {
            let out = child.wait_with_output().unwrap();
            assert_success("a concurrent install of a different build", &out, log);
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{}\n", pi_bridge_tests::PROJECT_HELLO)
            );
            assert_eq!(uploaded(log), 1, "each session installs its own build");
        }
        let agents = installed(&sshd);
        assert_eq!(agents.len(), 2, "both builds kept: {agents:?}");
        let sizes: Vec<u64> = agents.iter().map(|a| a.2).collect();
        assert!(sizes.contains(&(bytes.len() as u64)), "{agents:?}");
        for (mode, _, _, _) in &agents {
            assert_eq!(mode, "-rwx------", "{agents:?}");
        }
        let temps = sshd.run_remote_ok("find ~/.cache/pi-bridge -name '.upload*'; true");
        assert!(temps.trim().is_empty(), "temp files left: {temps}");
        rounds += 1;
    }

    // The lock is released before the exec: a running agent does not hold it.
    let long = dir.path().join("long.cjs");
    std::fs::write(
        &long,
        // process.cwd() is the remote's: it waits for the session (an agent runs).
        "process.cwd(); console.log('ready'); setTimeout(() => {}, 30000);\n",
    )
    .unwrap();
    let log = dir.path().join("long.log");
    let mut child = pii_ssh(&sshd, &log, &long, &flags[0], &[]).spawn().unwrap();
    let mut first = String::new();
    BufReader::new(child.stdout.as_mut().unwrap())
        .read_line(&mut first)
        .unwrap();
    assert_eq!(
        first,
        "ready\n",
        "{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let agents_running = sshd
        .remote_processes()
        .iter()
        .filter(|p| p.contains("pi-bridge-agent --stdio"))
        .count();
    assert!(agents_running >= 1);
    let lock = sshd
        .run_remote_ok("flock -n ~/.cache/pi-bridge/agent/.lock echo lock-free || echo lock-held");
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(
        lock.trim(),
        "lock-free",
        "a running agent holds the install lock"
    );
    println!(
        "install safety: {rounds} rounds of 2 different builds installing at once: all ok, both \
         kept (0700, no temp files); install lock free while {agents_running} agent runs"
    );
}

#[test]
fn a_tampered_cached_agent_is_replaced_and_a_symlinked_cache_is_refused() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = quick_script(dir.path());
    let agent = private_agent(dir.path(), "agent", b"");
    let flags = ["--agent", agent.to_str().unwrap()];
    let run = |name: &str| {
        let log = dir.path().join(format!("{name}.log"));
        let out = pii_ssh(&sshd, &log, &script, &flags, &[]).output().unwrap();
        (out, log)
    };
    let (out, log) = run("first");
    assert_success("first install", &out, &log);
    let good = installed(&sshd);
    assert_eq!(good.len(), 1, "{good:?}");
    let (out, log) = run("reuse");
    assert_success("reuse", &out, &log);
    assert_eq!(uploaded(&log), 0, "an intact cached agent is reused");

    let tampers = [
        ("chmod g+w", "chmod g+w"),
        ("chmod o+w", "chmod o+w"),
        ("size changed", "sh -c 'printf x >> \"$0\"'"),
        ("truncated", "truncate -s 1000"),
        ("dir 0755", "sh -c 'chmod 755 \"${0%/*}\"'"),
    ];
    for (what, cmd) in tampers {
        sshd.run_remote_ok(&format!(
            "{cmd} ~/.cache/pi-bridge/agent/{}/pi-bridge-agent",
            good[0].3
        ));
        let (out, log) = run(what);
        assert_success(what, &out, &log);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\n", pi_bridge_tests::PROJECT_HELLO)
        );
        assert_eq!(uploaded(&log), 1, "{what}: not detected (no reinstall)");
        assert!(
            std::fs::read_to_string(&log)
                .unwrap()
                .contains("failed the start check"),
            "{what}: the reinstall is not explained in the log"
        );
        assert_eq!(installed(&sshd), good, "{what}: not restored");
    }

    // ~/.cache/pi-bridge as a symlink to somewhere else: refused, nothing written there.
    sshd.run_remote_ok(
        "rm -rf ~/.cache/pi-bridge ~/elsewhere && mkdir ~/elsewhere && \
         ln -s ~/elsewhere ~/.cache/pi-bridge",
    );
    let (out, log) = run("symlinked");
    assert!(!out.status.success(), "a symlinked cache was used");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(".cache/pi-bridge is a symlink"),
        "unclear error: {stderr}\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    let inside = sshd.run_remote_ok("ls -A ~/elsewhere");
    assert!(
        inside.trim().is_empty(),
        "written through the link: {inside}"
    );
    // Also the agent/ dir below it.
    sshd.run_remote_ok(
        "rm ~/.cache/pi-bridge && mkdir -m 700 ~/.cache/pi-bridge && \
         ln -s ~/elsewhere ~/.cache/pi-bridge/agent",
    );
    let (out, _) = run("symlinked-agent");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("agent is a symlink"));
    let inside = sshd.run_remote_ok("ls -A ~/elsewhere");
    assert!(
        inside.trim().is_empty(),
        "written through the link: {inside}"
    );
    println!(
        "install safety: {} tamperings (g+w, o+w, size +1, truncated, dir 0755) each detected and \
         reinstalled; symlinked ~/.cache/pi-bridge and agent/ refused, 0 files written through them",
        tampers.len()
    );
}
