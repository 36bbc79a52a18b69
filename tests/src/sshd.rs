//! A throwaway OpenSSH server whose remote user's home is a private, empty tmpfs.
//!
//! Each [`Sshd`] runs `/usr/sbin/sshd -D -e` inside its own mount and pid namespace
//! (`unshare --mount --propagation private --pid --fork --mount-proc`). Before sshd starts, a setup
//! script mounts a fresh tmpfs over the remote user's home and creates the project there (a copy
//! of a fixture directory, owned by the user, committed to git). The test process cannot see that
//! tmpfs: a file that shows up there got there through ssh. sshd is the namespace's init, so when it
//! exits the kernel kills every process left in the namespace; nothing outlives the fixture.
//!
//! Needs root (user creation, namespaces); tests run as root here and in CI.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::paths;

/// The non-root user every fixture logs in as.
pub const REMOTE_USER: &str = "pibridge";

/// What the rc files of [`SshdBuilder::noisy_rc`] print, each before its interactive guard:
/// `~/.profile` on stdout and stderr, `~/.bashrc` on stdout and stderr.
pub const NOISY_RC_TEXT: [&str; 4] = [
    "NOISY-PROFILE-OUT",
    "NOISY-PROFILE-ERR",
    "NOISY-BASHRC-OUT",
    "NOISY-BASHRC-ERR",
];
/// With [`SshdBuilder::noisy_rc`]: a program only the login profile puts on PATH
/// (`~/noisy-login-bin`); it prints [`LOGIN_PATH_TOOL_TEXT`].
pub const LOGIN_PATH_TOOL: &str = "pi-bridge-login-path-probe";
pub const LOGIN_PATH_TOOL_TEXT: &str = "LOGIN-PATH-OK";

const NOISY_PROFILE: &str = r#"# pi-bridge test fixture: a profile that talks before anything else
echo NOISY-PROFILE-OUT
echo NOISY-PROFILE-ERR >&2
PATH="$HOME/noisy-login-bin:$PATH"; export PATH
if [ -n "$BASH_VERSION" ] && [ -f "$HOME/.bashrc" ]; then . "$HOME/.bashrc"; fi
"#;

const NOISY_BASHRC: &str = r#"# pi-bridge test fixture: a bashrc that prints before its interactive guard
echo NOISY-BASHRC-OUT
echo NOISY-BASHRC-ERR >&2
case $- in *i*) ;; *) return;; esac
echo NOISY-BASHRC-INTERACTIVE
"#;

/// How long sshd (and the project setup before it) may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// The remote user, as `getent passwd` knows it.
#[derive(Debug, Clone)]
pub struct RemoteUser {
    pub name: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
}

/// Creates [`REMOTE_USER`] if needed (`useradd -m -s /bin/bash`, then `usermod -p '*'` so sshd
/// without PAM does not refuse it as locked). Idempotent, and safe when several tests or test
/// binaries start fixtures at once: the work happens under an exclusive `flock`.
pub fn ensure_remote_user() -> &'static RemoteUser {
    static USER: OnceLock<RemoteUser> = OnceLock::new();
    USER.get_or_init(|| {
        require_root();
        let lock_path = std::env::temp_dir().join("pi-bridge-tests-user.lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .unwrap_or_else(|e| panic!("cannot open lock file {}: {e}", lock_path.display()));
        // SAFETY: flock on a descriptor we own; the lock is released when `lock` is closed.
        if unsafe { libc::flock(lock.as_raw_fd(), libc::LOCK_EX) } != 0 {
            panic!(
                "flock {}: {}",
                lock_path.display(),
                std::io::Error::last_os_error()
            );
        }
        if getent("passwd", REMOTE_USER).is_none() {
            run_checked(
                Command::new("useradd").args(["-m", "-s", "/bin/bash", REMOTE_USER]),
                "useradd",
            );
        }
        let shadow = getent("shadow", REMOTE_USER).unwrap_or_default();
        if shadow.split(':').nth(1) != Some("*") {
            run_checked(
                Command::new("usermod").args(["-p", "*", REMOTE_USER]),
                "usermod -p '*'",
            );
        }
        let passwd = getent("passwd", REMOTE_USER)
            .unwrap_or_else(|| panic!("user {REMOTE_USER} still missing after useradd"));
        let f: Vec<&str> = passwd.trim().split(':').collect();
        assert!(f.len() >= 7, "odd passwd entry for {REMOTE_USER}: {passwd}");
        drop(lock);
        RemoteUser {
            name: REMOTE_USER.to_string(),
            uid: f[2].parse().expect("uid"),
            gid: f[3].parse().expect("gid"),
            home: f[5].to_string(),
        }
    })
}

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        panic!(
            "the sshd fixture needs root (it creates user {REMOTE_USER} and mount namespaces); \
             run the tests as root, as scripts/test.sh and CI do"
        );
    }
}

fn getent(db: &str, key: &str) -> Option<String> {
    let out = Command::new("getent")
        .args([db, key])
        .output()
        .unwrap_or_else(|e| panic!("cannot run getent: {e}"));
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

fn run_checked(cmd: &mut Command, what: &str) -> Output {
    let out = cmd
        .output()
        .unwrap_or_else(|e| panic!("cannot run {what} ({cmd:?}): {e}"));
    if !out.status.success() {
        panic!(
            "{what} failed ({}): {cmd:?}\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    out
}

/// Options for [`Sshd`]; start with [`Sshd::builder`].
#[derive(Debug, Clone)]
pub struct SshdBuilder {
    project_fixture: Option<PathBuf>,
    project_name: String,
    git: bool,
    branch: String,
    extra_config: Vec<String>,
    /// Files to create in the remote home: (path relative to it, content, mode).
    home_files: Vec<(String, String, u32)>,
}

impl Default for SshdBuilder {
    fn default() -> Self {
        SshdBuilder {
            project_fixture: Some(paths::fixture("project")),
            project_name: "project".to_string(),
            git: true,
            branch: "main".to_string(),
            extra_config: Vec::new(),
            home_files: Vec::new(),
        }
    }
}

impl SshdBuilder {
    /// Copy this directory as the remote project (default: `fixtures/project`).
    pub fn project_fixture(mut self, dir: impl Into<PathBuf>) -> Self {
        self.project_fixture = Some(dir.into());
        self
    }

    /// Start with an empty project directory instead of a copy of a fixture.
    pub fn empty_project(mut self) -> Self {
        self.project_fixture = None;
        self
    }

    /// The project directory's name under the remote home (default `project`).
    pub fn project_name(mut self, name: impl Into<String>) -> Self {
        self.project_name = name.into();
        self
    }

    /// The branch `git init` creates (default `main`).
    pub fn branch(mut self, name: impl Into<String>) -> Self {
        self.branch = name.into();
        self
    }

    /// Leave the project without a git repository.
    pub fn no_git(mut self) -> Self {
        self.git = false;
        self
    }

    /// An extra sshd_config line, e.g. `"AllowTcpForwarding no"` or `"Banner /etc/issue"`. Extra
    /// lines come FIRST in the config, so they win over the fixture's defaults (sshd keeps the
    /// first value it reads for a keyword). Don't pass `Match` blocks: they would swallow the rest.
    pub fn extra_config(mut self, line: impl Into<String>) -> Self {
        self.extra_config.push(line.into());
        self
    }

    /// A file in the remote home (`rel` relative to it; directories made as needed), owned by
    /// the remote user, with `mode`.
    pub fn home_file(mut self, rel: &str, content: &str, mode: u32) -> Self {
        assert!(
            !rel.starts_with('/') && !rel.split('/').any(|c| c == ".."),
            "home_file paths are relative to the home: {rel}"
        );
        self.home_files
            .push((rel.to_string(), content.to_string(), mode));
        self
    }

    /// A remote user whose `~/.profile` and `~/.bashrc` print text before their interactive
    /// guards ([`NOISY_RC_TEXT`], on stdout and stderr), as many real ones do; the profile also
    /// puts `~/noisy-login-bin` (holding [`LOGIN_PATH_TOOL`]) on the login PATH.
    pub fn noisy_rc(self) -> Self {
        self.home_file(".profile", NOISY_PROFILE, 0o644)
            .home_file(".bashrc", NOISY_BASHRC, 0o644)
            .home_file(
                &format!("noisy-login-bin/{LOGIN_PATH_TOOL}"),
                &format!("#!/bin/sh\necho {LOGIN_PATH_TOOL_TEXT}\n"),
                0o755,
            )
    }

    /// Start sshd; panics with sshd's log when it does not come up.
    pub fn start(self) -> Sshd {
        Sshd::start_with(self)
    }
}

/// A running throwaway sshd. Dropping it stops sshd and every process of its namespace.
pub struct Sshd {
    child: Child,
    /// Write end of the lifeline pipe (see SETUP_SCRIPT); never written, closed with the process.
    _lifeline: OwnedFd,
    sshd_pid: u32,
    port: u16,
    alias: String,
    user: RemoteUser,
    project: String,
    ssh_config: PathBuf,
    log: PathBuf,
    dir: TempDir,
}

impl std::fmt::Debug for Sshd {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sshd")
            .field("alias", &self.alias)
            .field("port", &self.port)
            .field("sshd_pid", &self.sshd_pid)
            .field("project", &self.project)
            .field("dir", &self.dir.path())
            .finish()
    }
}

const SETUP_SCRIPT: &str = r#"
set -eu
exec 1>&2
mkdir -p "$PIB_HOME"
mount -t tmpfs -o mode=0755,size=1g pi-bridge-remote-home "$PIB_HOME"
chown "$PIB_UID:$PIB_GID" "$PIB_HOME"
if [ -n "$PIB_HOME_FILES" ]; then cp -a "$PIB_HOME_FILES/." "$PIB_HOME/"; chown -R "$PIB_UID:$PIB_GID" "$PIB_HOME"; fi
mkdir -p "$PIB_PROJECT"
if [ -n "$PIB_FIXTURE" ]; then cp -a "$PIB_FIXTURE/." "$PIB_PROJECT/"; fi
chown -R "$PIB_UID:$PIB_GID" "$PIB_PROJECT"
if [ "$PIB_GIT" = 1 ]; then
  runuser -u "$PIB_USER" -- env -i -C "$PIB_PROJECT" HOME="$PIB_HOME" PATH=/usr/bin:/bin \
    sh -c 'git init -q -b "$1" && git add -A &&
           git -c user.name=pi-bridge-tests -c user.email=tests@pi-bridge.invalid \
               commit -q --allow-empty -m "fixture"' sh "$PIB_BRANCH"
fi
echo "pi-bridge-tests: project ready at $PIB_PROJECT"
# Fd 3 is a pipe whose only writer is the test process: when that process dies, however it dies,
# the read sees EOF and sshd (this namespace's pid 1) is told to stop, taking the namespace along.
(cat <&3 >/dev/null; kill -TERM 1) </dev/null >/dev/null 2>&1 &
exec 3<&-
exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin /usr/sbin/sshd -D -e -f "$PIB_SSHD_CONFIG" -p "$PIB_PORT"
"#;

impl Sshd {
    /// sshd with the default project (`fixtures/project` as `~/project`, git branch `main`).
    pub fn start() -> Sshd {
        SshdBuilder::default().start()
    }

    /// Options for a fixture with another project, branch or extra sshd config.
    pub fn builder() -> SshdBuilder {
        SshdBuilder::default()
    }

    fn start_with(opts: SshdBuilder) -> Sshd {
        require_root();
        let user = ensure_remote_user().clone();
        fs::create_dir_all("/run/sshd").expect("mkdir /run/sshd (sshd's privilege separation dir)");
        if let Some(fixture) = &opts.project_fixture {
            assert!(
                fixture.is_dir(),
                "project fixture {} is not a directory",
                fixture.display()
            );
        }
        assert!(
            !opts.project_name.is_empty() && !opts.project_name.contains('/'),
            "project_name must be one path component"
        );

        let dir = tempfile::Builder::new()
            .prefix("pi-bridge-sshd-")
            .tempdir()
            .expect("tempdir for sshd");
        // sshd reads AuthorizedKeysFile as the user: the directory must be traversable.
        fs::set_permissions(dir.path(), fs::Permissions::from_mode(0o755)).unwrap();
        let host_key = dir.path().join("host_ed25519");
        let client_key = dir.path().join("client_ed25519");
        for key in [&host_key, &client_key] {
            run_checked(
                Command::new("ssh-keygen")
                    .args([
                        "-q",
                        "-t",
                        "ed25519",
                        "-N",
                        "",
                        "-C",
                        "pi-bridge-tests",
                        "-f",
                    ])
                    .arg(key),
                "ssh-keygen",
            );
        }
        let keys_dir = dir.path().join("keys");
        fs::create_dir(&keys_dir).unwrap();
        fs::set_permissions(&keys_dir, fs::Permissions::from_mode(0o755)).unwrap();
        let authorized = keys_dir.join(&user.name);
        fs::copy(client_key.with_extension("pub"), &authorized).unwrap();
        fs::set_permissions(&authorized, fs::Permissions::from_mode(0o644)).unwrap();

        let sshd_config = dir.path().join("sshd_config");
        let mut cfg = String::new();
        for line in &opts.extra_config {
            cfg.push_str(line);
            cfg.push('\n');
        }
        cfg.push_str(&format!(
            "ListenAddress 127.0.0.1\n\
             HostKey {host_key}\n\
             AuthorizedKeysFile {keys}/%u\n\
             PidFile {dir}/sshd.pid\n\
             UsePAM no\n\
             StrictModes no\n\
             PubkeyAuthentication yes\n\
             PasswordAuthentication no\n\
             KbdInteractiveAuthentication no\n\
             PermitRootLogin no\n\
             AllowUsers {user}\n\
             DisableForwarding yes\n\
             PrintMotd no\n\
             MaxStartups 100\n\
             MaxSessions 100\n\
             LogLevel INFO\n",
            host_key = host_key.display(),
            keys = keys_dir.display(),
            dir = dir.path().display(),
            user = user.name,
        ));
        fs::write(&sshd_config, cfg).unwrap();
        run_checked(
            Command::new("/usr/sbin/sshd")
                .arg("-t")
                .arg("-f")
                .arg(&sshd_config),
            "sshd -t (config check)",
        );

        let project = format!("{}/{}", user.home.trim_end_matches('/'), opts.project_name);
        let log = dir.path().join("sshd.log");
        // The home files, staged where the setup script copies them from.
        let home_files = dir.path().join("home-files");
        if !opts.home_files.is_empty() {
            for (rel, content, mode) in &opts.home_files {
                let f = home_files.join(rel);
                fs::create_dir_all(f.parent().unwrap()).unwrap();
                fs::write(&f, content).unwrap();
                fs::set_permissions(&f, fs::Permissions::from_mode(*mode)).unwrap();
            }
        }

        let mut last_log = String::new();
        for _attempt in 0..5 {
            let port = free_port();
            let staged = (!opts.home_files.is_empty()).then_some(home_files.as_path());
            match spawn_sshd(&opts, &user, &project, &sshd_config, port, &log, staged) {
                Ok((child, lifeline)) => {
                    let sshd_pid = child_of(child.id()).unwrap_or_else(|| {
                        panic!("sshd is listening but its pid was not found under unshare")
                    });
                    let alias = format!("pibridge-{port}");
                    let ssh_config = dir.path().join("ssh_config");
                    let sshd = Sshd {
                        child,
                        _lifeline: lifeline,
                        sshd_pid,
                        port,
                        alias,
                        user,
                        project,
                        ssh_config,
                        log,
                        dir,
                    };
                    fs::write(&sshd.ssh_config, sshd.ssh_config_block()).unwrap();
                    return sshd;
                }
                Err(text) => {
                    if text.contains("Address already in use") {
                        last_log = text;
                        continue;
                    }
                    panic!("sshd fixture did not start; its log:\n{text}");
                }
            }
        }
        panic!("sshd fixture: no free port after 5 attempts; last log:\n{last_log}");
    }

    /// The `Host` alias in [`Sshd::ssh_config`].
    pub fn alias(&self) -> &str {
        &self.alias
    }

    /// An ssh client config file holding the alias: use `ssh -F <this> <alias> …`.
    pub fn ssh_config(&self) -> &Path {
        &self.ssh_config
    }

    /// The `Host` block of [`Sshd::ssh_config`], to combine several fixtures in one config file.
    pub fn ssh_config_block(&self) -> String {
        self.ssh_config_block_via(self.port)
    }

    /// A second ssh client config whose alias (the same [`Sshd::alias`], so [`Sshd::dest`] still
    /// applies) connects to 127.0.0.1:`port` instead of sshd's own port: e.g. a
    /// [`crate::proxy::DelayProxy`] in front of sshd (`DelayProxy::start(sshd.addr(), …)`).
    pub fn ssh_config_via(&self, port: u16) -> PathBuf {
        let path = self.dir.path().join(format!("ssh_config_via_{port}"));
        fs::write(&path, self.ssh_config_block_via(port))
            .unwrap_or_else(|e| panic!("write {}: {e}", path.display()));
        path
    }

    /// sshd's address, `127.0.0.1:<port>`.
    pub fn addr(&self) -> std::net::SocketAddr {
        std::net::SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    fn ssh_config_block_via(&self, port: u16) -> String {
        format!(
            "Host {alias}\n  HostName 127.0.0.1\n  Port {port}\n  User {user}\n  \
             IdentityFile {key}\n  IdentitiesOnly yes\n  StrictHostKeyChecking no\n  \
             UserKnownHostsFile /dev/null\n  LogLevel ERROR\n  BatchMode yes\n",
            alias = self.alias,
            port = port,
            user = self.user.name,
            key = self.client_key().display(),
        )
    }

    /// The client's private key (authorized for [`Sshd::user`]).
    pub fn client_key(&self) -> PathBuf {
        self.dir.path().join("client_ed25519")
    }

    /// sshd's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The remote user's name.
    pub fn user(&self) -> &str {
        &self.user.name
    }

    /// The remote user's home (a private tmpfs, empty but for the project).
    pub fn remote_home(&self) -> &str {
        &self.user.home
    }

    /// The remote project's absolute path (e.g. `/home/pibridge/project`).
    pub fn project(&self) -> &str {
        &self.project
    }

    /// `alias:<project>`, the destination to give `pii --ssh`.
    pub fn dest(&self) -> String {
        format!("{}:{}", self.alias, self.project)
    }

    /// `ssh -F <config> <alias>`: add arguments (a remote command) and run.
    pub fn ssh_command(&self) -> Command {
        let mut cmd = Command::new("ssh");
        cmd.arg("-F").arg(&self.ssh_config).arg(&self.alias);
        cmd
    }

    /// The host pid of sshd (the init of the fixture's mount and pid namespace).
    pub fn sshd_pid(&self) -> u32 {
        self.sshd_pid
    }

    /// sshd's log so far (its stderr, plus the project setup's output).
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// A remote path: relative ones are taken relative to the project.
    pub fn remote_path(&self, path: &str) -> String {
        if path.starts_with('/') {
            path.to_string()
        } else {
            format!("{}/{}", self.project, path)
        }
    }

    /// Runs `sh -c <cmd>` as the remote user inside the fixture's namespaces, with a clean login-like
    /// environment, in the project directory. Bypasses ssh: it is the test's own view of the remote.
    pub fn run_remote(&self, cmd: &str) -> Output {
        self.run_remote_in(&self.project, cmd, None)
    }

    /// [`Sshd::run_remote`] in another directory (relative to the project if relative), with
    /// optional stdin bytes.
    pub fn run_remote_in(&self, dir: &str, cmd: &str, stdin: Option<&[u8]>) -> Output {
        self.raw_remote(dir, &["sh", "-c", cmd], stdin)
    }

    /// [`Sshd::run_remote`] that panics (with stdout and stderr) unless the command succeeds, and
    /// returns its stdout.
    pub fn run_remote_ok(&self, cmd: &str) -> String {
        let out = self.run_remote(cmd);
        if !out.status.success() {
            panic!(
                "remote command failed ({}): {cmd}\nstdout: {}\nstderr: {}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The bytes of a remote file (read as the remote user); panics if it cannot be read.
    pub fn read_remote(&self, path: &str) -> Vec<u8> {
        let path = self.remote_path(path);
        let out = self.raw_remote(&self.user.home, &["cat", "--", &path], None);
        if !out.status.success() {
            panic!(
                "read_remote {path} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        out.stdout
    }

    /// Writes a remote file as the remote user (creating or truncating it).
    pub fn write_remote(&self, path: &str, bytes: &[u8]) {
        let path = self.remote_path(path);
        let out = self.raw_remote(
            &self.user.home,
            &["sh", "-c", "cat > \"$1\"", "sh", &path],
            Some(bytes),
        );
        if !out.status.success() {
            panic!(
                "write_remote {path} failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }

    /// Whether a remote path exists (without following a final symlink).
    pub fn remote_exists(&self, path: &str) -> bool {
        let path = self.remote_path(path);
        let out = self.raw_remote(
            &self.user.home,
            &["sh", "-c", "[ -e \"$1\" ] || [ -L \"$1\" ]", "sh", &path],
            None,
        );
        out.status.success()
    }

    /// The remote user's live processes in this fixture, one `"<pid> <args>"` each (pids as the
    /// fixture's pid namespace numbers them). Includes sshd's own per-session processes
    /// (`sshd: pibridge@notty`).
    pub fn remote_processes(&self) -> Vec<String> {
        let out = Command::new("nsenter")
            .arg("-t")
            .arg(self.sshd_pid.to_string())
            .args([
                "-m",
                "-p",
                "--",
                "ps",
                "-u",
                &self.user.name,
                "-o",
                "pid=,stat=,args=",
            ])
            .output()
            .unwrap_or_else(|e| panic!("cannot run nsenter ps: {e}"));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let mut it = line.split_whitespace();
                let pid = it.next()?;
                let stat = it.next()?;
                if stat.starts_with('Z') {
                    return None;
                }
                let args: Vec<&str> = it.collect();
                Some(format!("{pid} {}", args.join(" ")))
            })
            .collect()
    }

    fn remote_command(&self, dir: &str) -> Command {
        let dir = self.remote_path(dir);
        let mut cmd = Command::new("nsenter");
        cmd.arg("-t")
            .arg(self.sshd_pid.to_string())
            .args(["-m", "-p", "--", "runuser", "-u", &self.user.name, "--"])
            .args(["env", "-i", "-C", &dir])
            .arg(format!("HOME={}", self.user.home))
            .arg(format!("USER={}", self.user.name))
            .arg(format!("LOGNAME={}", self.user.name))
            .arg("SHELL=/bin/bash")
            .arg("PATH=/usr/local/bin:/usr/bin:/bin")
            .arg("LANG=C.UTF-8");
        cmd
    }

    fn raw_remote(&self, dir: &str, argv: &[&str], stdin: Option<&[u8]>) -> Output {
        let mut command = self.remote_command(dir);
        command.args(argv);
        command.stdout(Stdio::piped()).stderr(Stdio::piped());
        command.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run nsenter: {e}"));
        let writer = stdin.map(|bytes| {
            let mut pipe = child.stdin.take().unwrap();
            let bytes = bytes.to_vec();
            std::thread::spawn(move || {
                let _ = pipe.write_all(&bytes);
            })
        });
        let out = child.wait_with_output().expect("wait for nsenter");
        if let Some(w) = writer {
            let _ = w.join();
        }
        out
    }
}

impl Drop for Sshd {
    fn drop(&mut self) {
        // sshd is the namespace's init: when it exits the kernel kills the rest of the namespace,
        // and unshare (our child) reaps it and exits.
        // SAFETY: signalling a pid we started (unshare has not reaped it while it is running).
        unsafe { libc::kill(self.sshd_pid as libc::pid_t, libc::SIGTERM) };
        if wait_deadline(&mut self.child, Duration::from_secs(5)).is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Waits for a child up to `timeout`; `None` if it is still running.
pub(crate) fn wait_deadline(
    child: &mut Child,
    timeout: Duration,
) -> Option<std::process::ExitStatus> {
    let deadline = Instant::now() + timeout;
    loop {
        match child.try_wait() {
            Ok(Some(status)) => return Some(status),
            Ok(None) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(5)),
            _ => return None,
        }
    }
}

/// A close-on-exec pipe: (read end, write end).
fn lifeline_pipe() -> (OwnedFd, OwnedFd) {
    let mut fds = [0 as libc::c_int; 2];
    // SAFETY: pipe2 fills two fds that we then own.
    if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
        panic!("pipe2: {}", std::io::Error::last_os_error());
    }
    // SAFETY: both fds were just created and are owned by nobody else.
    unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) }
}

/// A port on 127.0.0.1 nobody listens on right now.
fn free_port() -> u16 {
    let l = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    l.local_addr().unwrap().port()
}

/// The host pid of `parent`'s (first) child, from /proc.
fn child_of(parent: u32) -> Option<u32> {
    let children = format!("/proc/{parent}/task/{parent}/children");
    if let Ok(text) = fs::read_to_string(children) {
        if let Some(pid) = text.split_whitespace().next() {
            return pid.parse().ok();
        }
    }
    for entry in fs::read_dir("/proc").ok()?.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // "pid (comm) state ppid …": comm may hold spaces and parentheses.
        let after = &stat[stat.rfind(')')? + 1..];
        let ppid: u32 = after.split_whitespace().nth(1)?.parse().ok()?;
        if ppid == parent {
            return Some(pid);
        }
    }
    None
}

/// Starts unshare → setup script → sshd on `port` and waits until sshd says it listens.
/// On failure, returns the log.
fn spawn_sshd(
    opts: &SshdBuilder,
    user: &RemoteUser,
    project: &str,
    sshd_config: &Path,
    port: u16,
    log: &Path,
    home_files: Option<&Path>,
) -> Result<(Child, OwnedFd), String> {
    let (lifeline_read, lifeline_write) = lifeline_pipe();
    let read_fd = lifeline_read.as_raw_fd();
    let mut cmd = Command::new("unshare");
    cmd.args([
        "--mount",
        "--propagation",
        "private",
        "--pid",
        "--fork",
        "--kill-child",
        "--mount-proc",
        "--",
        "sh",
        "-c",
        SETUP_SCRIPT,
    ])
    .env("PIB_USER", &user.name)
    .env("PIB_UID", user.uid.to_string())
    .env("PIB_GID", user.gid.to_string())
    .env("PIB_HOME", &user.home)
    .env("PIB_PROJECT", project)
    .env(
        "PIB_FIXTURE",
        opts.project_fixture
            .as_deref()
            .map(|p| p.as_os_str())
            .unwrap_or_default(),
    )
    .env("PIB_GIT", if opts.git { "1" } else { "0" })
    .env("PIB_BRANCH", &opts.branch)
    .env("PIB_SSHD_CONFIG", sshd_config)
    .env(
        "PIB_HOME_FILES",
        home_files.map(|p| p.as_os_str()).unwrap_or_default(),
    )
    .env("PIB_PORT", port.to_string())
    .stdin(Stdio::null())
    .stdout(Stdio::null())
    .stderr(Stdio::piped());
    // SAFETY: only async-signal-safe calls (dup2, fcntl) between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            // dup2 onto itself would keep close-on-exec: clear the flag instead.
            let ok = if read_fd == 3 {
                libc::fcntl(3, libc::F_SETFD, 0) == 0
            } else {
                libc::dup2(read_fd, 3) == 3
            };
            if ok {
                Ok(())
            } else {
                Err(std::io::Error::last_os_error())
            }
        });
    }
    let mut child = cmd
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run unshare (util-linux): {e}"));
    drop(lifeline_read);
    let stderr = child.stderr.take().unwrap();
    let mut log_file = File::create(log).expect("create sshd.log");
    let (tx, rx) = mpsc::channel::<bool>();
    let listening = format!("Server listening on 127.0.0.1 port {port}");
    std::thread::spawn(move || {
        let mut reader = BufReader::new(stderr);
        let mut line = Vec::new();
        let mut tx = Some(tx);
        loop {
            line.clear();
            match reader.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    let _ = log_file.write_all(&line);
                    let _ = log_file.flush();
                    if String::from_utf8_lossy(&line).contains(&listening) {
                        if let Some(tx) = tx.take() {
                            let _ = tx.send(true);
                        }
                    }
                }
            }
        }
        if let Some(tx) = tx.take() {
            let _ = tx.send(false);
        }
    });
    let ok = rx.recv_timeout(START_TIMEOUT).unwrap_or(false);
    if ok {
        return Ok((child, lifeline_write));
    }
    // Kill sshd (or the setup script) first so that unshare reaps it, then unshare.
    if let Some(pid) = child_of(child.id()) {
        // SAFETY: signalling our own grandchild, which unshare has not reaped yet.
        unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    }
    if wait_deadline(&mut child, Duration::from_secs(5)).is_none() {
        let _ = child.kill();
        let _ = child.wait();
    }
    Err(format!(
        "(port {port})\n{}",
        fs::read_to_string(log).unwrap_or_default()
    ))
}
