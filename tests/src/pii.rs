//! Running the `pii` binary against a fixture.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use crate::{paths, Sshd};

/// `pii --ssh <dest> -F <config> --log-file <log> --pi <cli> <flags> -- <args>`, stdin from
/// /dev/null, output piped. `cli` is any Node script (pi's cli.js, or a test script); `flags` are
/// more pii flags. pii's cache dir (the learned prefetch, `XDG_CACHE_HOME`) is `xdg-cache` next
/// to the log, so runs sharing a log directory share what pii learned, and nothing else does.
pub fn pii_ssh(sshd: &Sshd, log: &Path, cli: &Path, flags: &[&str], args: &[&str]) -> Command {
    let dest = sshd.dest();
    let target: [&OsStr; 4] = [
        "--ssh".as_ref(),
        dest.as_ref(),
        "-F".as_ref(),
        sshd.ssh_config().as_ref(),
    ];
    pii(&target, log, cli, flags, args)
}

/// `pii --local <dir> --log-file <log> --pi <cli> -- <args>`.
pub fn pii_local(dir: &Path, log: &Path, cli: &Path, args: &[&str]) -> Command {
    pii(&["--local".as_ref(), dir.as_os_str()], log, cli, &[], args)
}

/// The pii under test: `PI_BRIDGE_PII` when set (scripts/dist-test.sh points it at the `pii`
/// that `npm install -g pi-bridge` put on PATH), else the workspace build.
pub fn pii_bin() -> PathBuf {
    std::env::var_os("PI_BRIDGE_PII")
        .map(PathBuf::from)
        .unwrap_or_else(|| paths::bin("pii"))
}

fn pii(target: &[&OsStr], log: &Path, cli: &Path, flags: &[&str], args: &[&str]) -> Command {
    let mut cmd = Command::new(pii_bin());
    cmd.env("XDG_CACHE_HOME", cache_home(log))
        .args(target)
        .arg("--log-file")
        .arg(log)
        .arg("--pi")
        .arg(cli)
        .args(flags)
        .arg("--")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// The `XDG_CACHE_HOME` [`pii_ssh`] and [`pii_local`] give pii for `log`.
pub fn cache_home(log: &Path) -> std::path::PathBuf {
    log.parent()
        .expect("the log file has a directory")
        .join("xdg-cache")
}

/// Panics with everything useful unless `out` succeeded.
pub fn assert_success(what: &str, out: &Output, log: &Path) {
    if !out.status.success() {
        panic!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}\npii log:\n{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            std::fs::read_to_string(log).unwrap_or_default()
        );
    }
}

/// The ssh master sockets pii keeps (`controlPersist`) under the runtime directory `runtime`
/// (pii's `$XDG_RUNTIME_DIR`).
pub fn masters(runtime: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(runtime.join("pi-bridge/cm"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default()
}

/// `ssh -O exit` to every master under `runtime` ([`masters`]); the host name is not used
/// with `-S`.
pub fn stop_masters(runtime: &Path) {
    for socket in masters(runtime) {
        let _ = Command::new("ssh")
            .arg("-S")
            .arg(&socket)
            .args(["-O", "exit", "pi-bridge-master"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// Local processes whose command line contains `needle` (excluding this test process).
pub fn local_processes_matching(needle: &str) -> Vec<String> {
    let me = std::process::id();
    let mut found = vec![];
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return found;
    };
    for entry in dir.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        if pid == me {
            continue;
        }
        let Ok(raw) = std::fs::read(entry.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&raw).replace('\0', " ");
        if cmdline.contains(needle) {
            let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
            // Zombies of reaped-later children are not running.
            if stat
                .rsplit(')')
                .next()
                .is_some_and(|s| s.trim_start().starts_with('Z'))
            {
                continue;
            }
            found.push(format!("{pid} {cmdline}"));
        }
    }
    found
}
