//! The warm connection: an ssh ControlMaster pii keeps for a short time after a session, so the
//! next `pii` to the same host opens a session on it instead of a new connection (the TCP, key
//! exchange and login round trips). As Ansible does with `ControlPersist`, and only when the
//! user's own ssh configuration shares no connections itself.
//!
//! - The socket lives in a private directory (`$XDG_RUNTIME_DIR/pi-bridge/cm`, else
//!   `~/.cache/pi-bridge/cm`), created 0700; an existing one that is not a directory of this user
//!   with mode 0700, or is a symlink, is refused (a socket there runs commands on the remote as
//!   the user: SECURITY.md).
//! - ssh gets `-o ControlMaster=auto -o ControlPath=<dir>/<hash> -o ControlPersist=<time>`: the
//!   first ssh forks a master (its stdio on /dev/null, so no pipe of pii's caller stays open),
//!   later ones attach to it; the master exits after `<time>` without sessions, removing its
//!   socket; a stale socket (a killed master) is replaced by ssh itself.
//! - The socket's name is a hash of the resolved connection (`ssh -G`: user, host name, port,
//!   jump or proxy command), computed by pii so that its length is known before ssh runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// `controlPersist`'s default: how long a master waits for the next session.
pub const DEFAULT_PERSIST: &str = "5m";

/// Longest socket path used: macOS' `sun_path` is 104 bytes with its NUL; ssh binds the master
/// at `<path>.<16 random chars>` before renaming it into place.
pub const MAX_SOCKET_PATH: usize = 103 - 17;

#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    #[error("the ssh connection-sharing directory {}: {source}", path.display())]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("refusing the ssh connection-sharing directory {}: {why} (a socket there lets anyone who reaches it run commands as you on the remote). Remove it (pii recreates it 0700), or turn sharing off with \"controlPersist\": false in ~/.config/pi-bridge/config.json", path.display())]
    Unsafe { path: PathBuf, why: String },
}

/// What pii does about connection sharing for one connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Master {
    /// pii's own master: these `-o` options, this socket.
    Ours { socket: PathBuf, persist: String },
    /// The user's ssh config shares connections (its ControlMaster / ControlPath): pii adds none.
    Users(String),
    /// None, as configured (or ssh -G could not tell), and why.
    Off(String),
    /// None though the config asks for one, and why (a socket path too long …): pii says so.
    Cannot(String),
}

impl Master {
    /// The `-o` options ssh gets for this (none unless [`Master::Ours`]).
    pub fn options(&self) -> Vec<String> {
        match self {
            Master::Ours { socket, persist } => vec![
                "ControlMaster=auto".into(),
                format!(
                    "ControlPath={}",
                    socket.to_string_lossy().replace('%', "%%")
                ),
                format!("ControlPersist={persist}"),
            ],
            _ => vec![],
        }
    }

    /// One line for `pii doctor` / --verbose.
    pub fn describe(&self) -> String {
        match self {
            Master::Ours { socket, persist } => format!(
                "ssh connection sharing: pii keeps the connection {persist} after the last session ({})",
                socket.display()
            ),
            Master::Users(what) => {
                format!("ssh connection sharing: your ssh config's ({what}); pii adds none")
            }
            Master::Off(why) | Master::Cannot(why) => {
                format!("ssh connection sharing: off ({why})")
            }
        }
    }
}

/// The private socket directory: `$XDG_RUNTIME_DIR/pi-bridge/cm`, else `<cache>/cm`.
pub fn socket_dir(runtime: Option<&Path>, cache: Option<&Path>) -> Option<PathBuf> {
    match runtime.filter(|r| r.is_absolute()) {
        Some(r) => Some(r.join("pi-bridge").join("cm")),
        None => Some(cache?.join("cm")),
    }
}

/// Does the user's effective ssh configuration (`ssh -G`) share connections? `ControlMaster`
/// other than no (`yes`, `ask`, `auto`, `autoask`), or a `ControlPath` (ssh then uses a master
/// found there): theirs. `Some(what)` names it.
pub fn users_own(effective: &BTreeMap<String, String>) -> Option<String> {
    let cm = effective
        .get("controlmaster")
        .map(|v| v.to_ascii_lowercase());
    if let Some(cm) = cm.filter(|v| v != "false" && v != "no") {
        return Some(format!("ControlMaster {cm}"));
    }
    effective
        .get("controlpath")
        .filter(|p| !p.eq_ignore_ascii_case("none"))
        .map(|p| format!("ControlPath {p}"))
}

/// The socket's name for a resolved connection: a hash of user, host name, port and the way
/// there (ProxyJump / ProxyCommand), 40 hex digits like ssh's `%C`.
pub fn socket_name(effective: &BTreeMap<String, String>) -> String {
    use sha2::{Digest, Sha256};
    let mut h = Sha256::new();
    for k in ["user", "hostname", "port", "proxyjump", "proxycommand"] {
        h.update(k.as_bytes());
        h.update(b"\0");
        h.update(effective.get(k).map_or("", String::as_str).as_bytes());
        h.update(b"\0");
    }
    protocol::secret::hex(&h.finalize())[..40].to_string()
}

/// Decide for one connection. `persist`: the config's `controlPersist` (None = off); `dir`: the
/// socket directory (created and checked here: an unsafe one is an error).
pub fn plan(
    persist: Option<&str>,
    dir: Option<&Path>,
    effective: &BTreeMap<String, String>,
) -> Result<Master, MasterError> {
    if let Some(what) = users_own(effective) {
        return Ok(Master::Users(what));
    }
    let Some(persist) = persist else {
        return Ok(Master::Off("\"controlPersist\": false".into()));
    };
    let Some(dir) = dir else {
        return Ok(Master::Cannot(
            "no HOME or XDG_RUNTIME_DIR for its socket".into(),
        ));
    };
    let socket = dir.join(socket_name(effective));
    let text = socket.to_string_lossy();
    if text.len() > MAX_SOCKET_PATH {
        return Ok(Master::Cannot(format!(
            "the socket path {} would be {} bytes, over the {MAX_SOCKET_PATH} a Unix socket allows; set XDG_RUNTIME_DIR or XDG_CACHE_HOME to a shorter directory",
            socket.display(),
            text.len()
        )));
    }
    if text
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'')
    {
        return Ok(Master::Cannot(format!(
            "the socket path {} has a space or a quote, which ssh's -o does not take",
            socket.display()
        )));
    }
    private_dir(dir)?;
    Ok(Master::Ours {
        socket,
        persist: persist.to_string(),
    })
}

/// One `ssh -G` for a connection: the keys of `ssh::DEFAULTS` the user's config sets, and the
/// [`plan`]. ssh that cannot tell (`ssh -G` fails) gets no master: its own error comes when it
/// connects.
pub async fn prepare(
    opts: &crate::ssh::SshOptions,
    dest: &str,
    persist: Option<&str>,
    dir: Option<&Path>,
) -> Result<(Vec<String>, Master), MasterError> {
    match crate::ssh::effective_config(crate::ssh::probe_args(opts, dest)).await {
        Ok(effective) => Ok((
            crate::ssh::preset_in(&effective),
            plan(persist, dir, &effective)?,
        )),
        Err(e) => Ok((vec![], Master::Off(format!("ssh -G failed: {e}")))),
    }
}

/// Create `dir` (and its parent) 0700 if missing; refuse either if it is a symlink, not a
/// directory, or not this user's; refuse `dir` unless its mode is exactly 0700.
pub fn private_dir(dir: &Path) -> Result<(), MasterError> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt};
    let me = rustix::process::geteuid().as_raw();
    let levels = [dir.parent(), Some(dir)];
    for (i, d) in levels.into_iter().flatten().enumerate() {
        match std::fs::DirBuilder::new().mode(0o700).create(d) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound && i == 0 => {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(d)
                    .map_err(|source| MasterError::Io {
                        path: d.to_path_buf(),
                        source,
                    })?;
            }
            Err(source) => {
                return Err(MasterError::Io {
                    path: d.to_path_buf(),
                    source,
                })
            }
        }
        let m = std::fs::symlink_metadata(d).map_err(|source| MasterError::Io {
            path: d.to_path_buf(),
            source,
        })?;
        let unsafe_dir = |why: String| MasterError::Unsafe {
            path: d.to_path_buf(),
            why,
        };
        if m.file_type().is_symlink() {
            return Err(unsafe_dir("it is a symlink".into()));
        }
        if !m.is_dir() {
            return Err(unsafe_dir("it is not a directory".into()));
        }
        if m.uid() != me {
            return Err(unsafe_dir(format!(
                "owned by uid {} (you are uid {me})",
                m.uid()
            )));
        }
        if d == dir && m.mode() & 0o777 != 0o700 {
            return Err(unsafe_dir(format!("mode {:o}, not 700", m.mode() & 0o777)));
        }
    }
    Ok(())
}

/// Ask pii's master to stop taking new sessions (`ssh -O stop`): the sessions on it go on, it
/// exits after the last one, and its socket goes at once, so the next connection starts a
/// fresh master. Used when a link through it died (the master's own connection may be the dead
/// part). Best effort, bounded.
pub async fn stop(socket: &Path, dest: &str) {
    let out = tokio::process::Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", "stop", "--", dest])
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true)
        .output();
    match tokio::time::timeout(std::time::Duration::from_secs(2), out).await {
        Ok(Ok(o)) => tracing::info!(
            "ssh -O stop {}: {} {}",
            socket.display(),
            o.status,
            String::from_utf8_lossy(&o.stderr).trim()
        ),
        Ok(Err(e)) => tracing::warn!("ssh -O stop: {e}"),
        Err(_) => tracing::warn!("ssh -O stop {} did not answer in 2 s", socket.display()),
    }
}

/// Is a master answering on `socket` (`ssh -O check`)? Its pid if so.
pub async fn check(socket: &Path, dest: &str) -> Option<u32> {
    let out = tokio::process::Command::new("ssh")
        .arg("-S")
        .arg(socket)
        .args(["-O", "check", "--", dest])
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .output();
    let o = tokio::time::timeout(std::time::Duration::from_secs(2), out)
        .await
        .ok()?
        .ok()?;
    let text = String::from_utf8_lossy(&o.stderr);
    let pid = text.split("pid=").nth(1)?.split(')').next()?;
    o.status.success().then(|| pid.parse().ok()).flatten()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn g(text: &str) -> BTreeMap<String, String> {
        crate::ssh::parse_effective(text)
    }

    #[test]
    fn the_users_own_sharing_wins() {
        for cm in ["yes", "ask", "auto", "autoask", "true"] {
            let e = g(&format!("controlmaster {cm}\ncontrolpersist no\n"));
            assert!(users_own(&e).is_some(), "{cm}");
            assert!(matches!(
                plan(Some("5m"), Some(Path::new("/nonexistent/x")), &e),
                Ok(Master::Users(_))
            ));
        }
        let e = g("controlmaster false\ncontrolpath /home/u/.ssh/cm-%C\n");
        assert!(users_own(&e).unwrap().contains("ControlPath"));
        assert_eq!(users_own(&g("controlmaster false\n")), None);
        assert_eq!(users_own(&g("controlmaster no\ncontrolpath none\n")), None);
    }

    #[test]
    fn off_by_config_long_paths_and_odd_characters() {
        let e = g("controlmaster false\nuser u\nhostname h\nport 22\n");
        assert!(matches!(
            plan(None, Some(Path::new("/x")), &e),
            Ok(Master::Off(_))
        ));
        let long = PathBuf::from(format!("/{}", "d".repeat(60)));
        match plan(Some("5m"), Some(&long), &e) {
            Ok(Master::Cannot(why)) => assert!(why.contains("bytes"), "{why}"),
            other => panic!("{other:?}"),
        }
        let spaced = Path::new("/tmp/a b");
        assert!(matches!(
            plan(Some("5m"), Some(spaced), &e),
            Ok(Master::Cannot(_))
        ));
    }

    #[test]
    fn a_private_directory_and_the_options() {
        let t = tempfile::tempdir().unwrap();
        let dir = t.path().join("pi-bridge/cm");
        let e = g("controlmaster false\nuser u\nhostname h\nport 22\n");
        let m = plan(Some("90"), Some(&dir), &e).unwrap();
        let Master::Ours { socket, .. } = &m else {
            panic!("{m:?}")
        };
        assert_eq!(socket.parent(), Some(dir.as_path()));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(dir.parent().unwrap()), 0o700);
        let o = m.options();
        assert_eq!(o[0], "ControlMaster=auto");
        assert_eq!(o[1], format!("ControlPath={}", socket.display()));
        assert_eq!(o[2], "ControlPersist=90");
        // Same connection, same socket; another port, another one.
        assert_eq!(socket_name(&e), socket_name(&e.clone()));
        let e2 = g("controlmaster false\nuser u\nhostname h\nport 2222\n");
        assert_ne!(socket_name(&e), socket_name(&e2));
    }

    #[test]
    fn unsafe_directories_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let e = g("controlmaster false\nuser u\nhostname h\nport 22\n");
        // Wrong mode: refused, not repaired.
        let loose = t.path().join("loose/cm");
        std::fs::create_dir_all(&loose).unwrap();
        std::fs::set_permissions(&loose, std::fs::Permissions::from_mode(0o755)).unwrap();
        let err = plan(Some("5m"), Some(&loose), &e).unwrap_err().to_string();
        assert!(err.contains("mode 755"), "{err}");
        // A symlink, even to a good directory.
        let good = t.path().join("good");
        std::fs::create_dir(&good).unwrap();
        std::fs::set_permissions(&good, std::fs::Permissions::from_mode(0o700)).unwrap();
        std::fs::create_dir(t.path().join("l")).unwrap();
        std::os::unix::fs::symlink(&good, t.path().join("l/cm")).unwrap();
        let err = plan(Some("5m"), Some(&t.path().join("l/cm")), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("symlink"), "{err}");
        // A file.
        std::fs::create_dir(t.path().join("f")).unwrap();
        std::fs::write(t.path().join("f/cm"), "").unwrap();
        let err = plan(Some("5m"), Some(&t.path().join("f/cm")), &e)
            .unwrap_err()
            .to_string();
        assert!(err.contains("not a directory"), "{err}");
    }
}
