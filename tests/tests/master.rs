//! The warm connection (issue 15, `local/src/master.rs`): pii keeps an ssh ControlMaster for
//! `controlPersist` in a private socket directory, so a second `pii` to the same host logs in
//! no more; the master is gone (process and socket) after its persist time; `false` turns it
//! off; the user's own ControlMaster wins; an unsafe socket directory is refused; a master does
//! not hold the caller's pipes open; a killed master's stale socket and a master dying under a
//! session are survived.
//!
//! Logins are counted in sshd's log (`Accepted publickey`), masters asked with `ssh -O check`.

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::Sshd;

/// Prints the remote cwd (needs the session), then, given a file name, waits for it to appear
/// locally (a pause the test ends) and prints the remote cwd's listing.
const SCRIPT: &str = r#"
const fs = require('fs');
console.log('CWD ' + process.cwd());
const gate = process.argv[2];
if (gate) {
  console.log('WAITING');
  const until = Date.now() + 60000;
  const tick = () => {
    if (require('fs').existsSync(gate)) {
      fs.promises.readdir('.').then((l) => { console.log('LIST ' + l.length); });
    } else if (Date.now() < until) setTimeout(tick, 50);
  };
  tick();
}
"#;

struct World {
    sshd: Sshd,
    dir: tempfile::TempDir,
}

impl World {
    /// A fixture, and a HOME holding `~/.config/pi-bridge/config.json` = `config` (if any).
    fn new(config: Option<&str>) -> World {
        let sshd = Sshd::builder().start();
        let dir = tempfile::Builder::new()
            .prefix("pib-cm-")
            .tempdir_in("/tmp")
            .unwrap();
        // The remote user (same /tmp) looks for the script's gate file in it.
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("script.cjs"), SCRIPT).unwrap();
        std::fs::create_dir_all(dir.path().join("home/.config/pi-bridge")).unwrap();
        if let Some(c) = config {
            let f = dir.path().join("home/.config/pi-bridge/config.json");
            std::fs::write(&f, c).unwrap();
            std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
        }
        World { sshd, dir }
    }

    fn runtime(&self) -> PathBuf {
        self.dir.path().join("run")
    }

    fn socket_dir(&self) -> PathBuf {
        self.runtime().join("pi-bridge/cm")
    }

    fn log(&self) -> PathBuf {
        self.dir.path().join("pii.log")
    }

    fn pii(&self, args: &[&str]) -> Command {
        let mut cmd = pii_ssh(
            &self.sshd,
            &self.log(),
            &self.dir.path().join("script.cjs"),
            &[],
            args,
        );
        std::fs::create_dir_all(self.runtime()).unwrap();
        std::fs::set_permissions(self.runtime(), std::fs::Permissions::from_mode(0o700)).unwrap();
        cmd.env("HOME", self.dir.path().join("home"))
            .env("XDG_RUNTIME_DIR", self.runtime());
        cmd
    }

    /// One run to its end (`output()` reads stdout and stderr to EOF: a master holding either
    /// pipe would keep this waiting until it exits).
    fn run(&self) -> Output {
        let out = self.pii(&[]).output().unwrap();
        assert_success("pii", &out, &self.log());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            text.contains(&format!("CWD {}", self.sshd.project())),
            "{text}"
        );
        out
    }

    fn logins(&self) -> usize {
        self.sshd
            .log()
            .matches("Accepted publickey for pibridge")
            .count()
    }

    /// The sockets in pii's socket directory.
    fn sockets(&self) -> Vec<PathBuf> {
        pi_bridge_tests::pii::masters(&self.runtime())
    }

    /// `ssh -O check`: the master's pid if one answers on `socket`.
    fn check(&self, socket: &Path) -> Option<u32> {
        let out = Command::new("ssh")
            .arg("-S")
            .arg(socket)
            .args(["-O", "check"])
            .arg(self.sshd.alias())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        let pid = err.split("pid=").nth(1)?.split(')').next()?.parse().ok()?;
        out.status.success().then_some(pid)
    }
}

fn alive(pid: u32) -> bool {
    Path::new(&format!("/proc/{pid}")).exists()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .unwrap_or_default()
            .contains(") Z ")
}

fn wait_for(what: &str, within: Duration, mut f: impl FnMut() -> bool) {
    let t = Instant::now();
    while !f() {
        assert!(t.elapsed() < within, "{what}: not within {within:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn a_second_pii_reuses_the_master_which_is_gone_after_its_persist_time() {
    let w = World::new(Some(r#"{"controlPersist": "3s"}"#));
    let before = w.logins();
    // The first run returns (its pipes at EOF) while the master it started lives on.
    w.run();
    assert_eq!(w.logins(), before + 1);
    let dir_mode = std::fs::metadata(w.socket_dir())
        .unwrap()
        .permissions()
        .mode()
        & 0o777;
    assert_eq!(dir_mode, 0o700);
    let sockets = w.sockets();
    assert_eq!(sockets.len(), 1, "{sockets:?}");
    let pid = w
        .check(&sockets[0])
        .expect("pii's master answers ssh -O check");
    assert!(alive(pid));
    // The second run logs in no more: a session on the master.
    w.run();
    assert_eq!(w.logins(), before + 1, "the second pii logged in again");
    assert_eq!(w.check(&sockets[0]), Some(pid));
    // 3 s without a session: the master exits and removes its socket.
    wait_for("the master to exit", Duration::from_secs(20), || {
        !alive(pid)
    });
    wait_for("the socket to go", Duration::from_secs(5), || {
        !sockets[0].exists()
    });
    // And the next pii starts a new one.
    w.run();
    assert_eq!(w.logins(), before + 2);
    assert_eq!(w.sockets().len(), 1);
}

#[test]
fn off_by_config_no_master_and_no_socket_directory() {
    let w = World::new(Some(r#"{"controlPersist": false}"#));
    let before = w.logins();
    w.run();
    w.run();
    assert_eq!(w.logins(), before + 2, "each pii logs in without a master");
    assert!(!w.runtime().join("pi-bridge").exists());
}

#[test]
fn the_users_own_control_master_is_used_and_pii_adds_none() {
    let w = World::new(None);
    let user_sock = w.dir.path().join("u-%C");
    // The fixture's own ssh config file, with the user's sharing on top.
    let cfg = w.sshd.ssh_config();
    std::fs::write(
        cfg,
        format!(
            "ControlMaster auto\nControlPath {}\nControlPersist 5\n\n{}",
            user_sock.display(),
            std::fs::read_to_string(cfg).unwrap()
        ),
    )
    .unwrap();
    let before = w.logins();
    w.run();
    w.run();
    assert_eq!(w.logins(), before + 1, "the user's master carries both");
    assert!(
        !w.runtime().join("pi-bridge").exists(),
        "pii made a socket dir"
    );
    let theirs: Vec<_> = std::fs::read_dir(w.dir.path())
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("u-"))
        .collect();
    assert_eq!(theirs.len(), 1);
}

#[test]
fn an_unsafe_socket_directory_is_refused() {
    let w = World::new(None);
    let run_fail = |what: &str, want: &str| {
        let before = w.logins();
        let out = w.pii(&[]).output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{what}: pii ran");
        assert!(
            err.contains("refusing the ssh connection-sharing directory") && err.contains(want),
            "{what}: {err}"
        );
        assert_eq!(w.logins(), before, "{what}: pii connected anyway");
    };
    std::fs::create_dir_all(w.socket_dir()).unwrap();
    let set = |p: &Path, m: u32| std::fs::set_permissions(p, std::fs::Permissions::from_mode(m));
    set(&w.socket_dir(), 0o755).unwrap();
    run_fail("mode 755", "mode 755");
    set(&w.socket_dir(), 0o700).unwrap();
    std::os::unix::fs::chown(w.socket_dir(), Some(65534), None).unwrap();
    run_fail("another owner", "owned by uid 65534");
    std::fs::remove_dir(w.socket_dir()).unwrap();
    let elsewhere = w.dir.path().join("elsewhere");
    std::fs::create_dir(&elsewhere).unwrap();
    set(&elsewhere, 0o700).unwrap();
    std::os::unix::fs::symlink(&elsewhere, w.socket_dir()).unwrap();
    run_fail("a symlink", "symlink");
    // Removed: pii recreates it and runs.
    std::fs::remove_file(w.socket_dir()).unwrap();
    w.run();
}

#[test]
fn a_killed_masters_stale_socket_is_replaced() {
    let w = World::new(None);
    w.run();
    let sock = w.sockets().pop().expect("a socket");
    let pid = w.check(&sock).expect("a master");
    // SAFETY: a plain signal to the master pii started for this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    wait_for("the master to die", Duration::from_secs(5), || !alive(pid));
    assert!(sock.exists(), "SIGKILL leaves the socket behind");
    let before = w.logins();
    w.run();
    assert_eq!(w.logins(), before + 1);
    let new = w.check(&sock).expect("a new master on the same path");
    assert_ne!(new, pid);
    // SAFETY: as above.
    unsafe { libc::kill(new as i32, libc::SIGTERM) };
}

#[test]
fn a_master_dying_under_a_session_is_reconnected_around() {
    let w = World::new(None);
    let gate = w.dir.path().join("go");
    let mut child = w
        .pii(&[gate.to_str().unwrap()])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = std::io::BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    while !line.starts_with("WAITING") {
        line.clear();
        assert!(std::io::BufRead::read_line(&mut out, &mut line).unwrap() > 0);
    }
    let sock = w.sockets().pop().expect("a socket");
    let pid = w.check(&sock).expect("a master");
    // SAFETY: a plain signal to the master pii started for this test.
    assert_eq!(unsafe { libc::kill(pid as i32, libc::SIGKILL) }, 0);
    std::fs::write(&gate, "").unwrap();
    let mut rest = String::new();
    std::io::Read::read_to_string(&mut out, &mut rest).unwrap();
    let st = child.wait().unwrap();
    let log = std::fs::read_to_string(w.log()).unwrap_or_default();
    assert!(
        st.success() && rest.contains("LIST "),
        "{st}: {rest}\n{log}"
    );
    assert!(log.contains("reconnected"), "{log}");
}
