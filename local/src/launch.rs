//! Starting node with the preload and pi: the private scratch dir, the environment contract
//! (`PII_TOKEN`, `PII_SESSION`), signals, and the exit code.

use crate::pi::{PI_PACKAGE, PI_PACKAGES};
use protocol::endpoint::{SessionEnv, SESSION_ENV, TOKEN_ENV};
use std::ffi::OsString;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::process::ExitStatus;

include!(concat!(env!("OUT_DIR"), "/preload_files.rs"));

/// The preload file node loads with `--require`.
pub const PRELOAD_ENTRY: &str = "index.cjs";

#[derive(Debug, thiserror::Error)]
pub enum LaunchError {
    #[error("cannot create the scratch directory under {}: {source}", dir.display())]
    Scratch {
        dir: PathBuf,
        source: std::io::Error,
    },
    #[error("this pii was built without the preload (no preload/{PRELOAD_ENTRY} when it was compiled); rebuild it with the preload present")]
    NoPreload,
    #[error("node not found: {0}. Install Node.js (https://nodejs.org), or name it with --node PATH or PII_NODE")]
    NodeNotFound(String),
    #[error("{pi} needs Node.js {needs}, but {node} is Node.js {found}: install a newer Node.js, or pick one with --node PATH or PII_NODE")]
    NodeTooOldForPi {
        pi: String,
        needs: String,
        node: String,
        found: String,
    },
    #[error("cannot run {node} --version: {msg}")]
    NodeVersion { node: String, msg: String },
    #[error("pi not found: {0}. Install it (npm install -g {PI_PACKAGE}) or name its cli.js with --pi PATH or PII_PI")]
    PiNotFound(String),
    #[error("cannot start {node}: {source}")]
    Spawn {
        node: String,
        source: std::io::Error,
    },
    #[error("waiting for node failed: {0}")]
    Wait(std::io::Error),
}

/// A private directory (0700) removed on drop: `cwd/` (node's real cwd) and `preload/`.
pub struct Scratch {
    pub root: PathBuf,
}

impl Scratch {
    pub fn create(base: &Path) -> Result<Scratch, LaunchError> {
        let err = |source| LaunchError::Scratch {
            dir: base.to_path_buf(),
            source,
        };
        let mut attempt = 0;
        let root = loop {
            let name = protocol::secret::random_hex(8);
            let root = base.join(format!("pii-{name}"));
            match std::fs::DirBuilder::new().mode(0o700).create(&root) {
                Ok(()) => break root,
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists && attempt < 10 => {
                    attempt += 1
                }
                Err(e) => return Err(err(e)),
            }
        };
        let scratch = Scratch { root };
        for sub in ["cwd", "preload", "tmp"] {
            std::fs::DirBuilder::new()
                .mode(0o700)
                .create(scratch.root.join(sub))
                .map_err(err)?;
        }
        Ok(scratch)
    }

    pub fn cwd(&self) -> PathBuf {
        self.root.join("cwd")
    }

    /// The endpoint's Unix socket.
    pub fn endpoint(&self) -> PathBuf {
        self.root.join("endpoint.sock")
    }

    /// pi's private temp dir (node's `TMPDIR`).
    pub fn temp(&self) -> PathBuf {
        self.root.join("tmp")
    }

    /// The embedded preload at its stable path under `stable` (see [`stable_preload`]), so
    /// node's compile cache serves it; in this scratch dir when there is none or it cannot be
    /// had. Returns the entry file's path.
    pub fn preload(&self, stable: Option<&Path>) -> Result<PathBuf, LaunchError> {
        if let Some(base) = stable {
            match stable_preload(base, PRELOAD_FILES) {
                Ok(p) => return Ok(p),
                Err(e) => tracing::warn!("the preload's stable copy: {e}; using the scratch dir"),
            }
        }
        self.write_preload(PRELOAD_FILES)
    }

    /// Write the embedded preload files; returns the entry file's path.
    pub fn write_preload(&self, files: &[(&str, &[u8])]) -> Result<PathBuf, LaunchError> {
        if !files.iter().any(|(n, _)| *n == PRELOAD_ENTRY) {
            return Err(LaunchError::NoPreload);
        }
        let dir = self.root.join("preload");
        for (name, bytes) in files {
            let path = dir.join(name);
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&path)
                .map_err(|source| LaunchError::Scratch {
                    dir: path.clone(),
                    source,
                })?;
            std::io::Write::write_all(&mut f, bytes).map_err(|source| LaunchError::Scratch {
                dir: path.clone(),
                source,
            })?;
        }
        Ok(dir.join(PRELOAD_ENTRY))
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        if let Err(e) = std::fs::remove_dir_all(&self.root) {
            tracing::warn!("could not remove {}: {e}", self.root.display());
        }
    }
}

/// The preload at a path that stays the same while its bytes do: `<base>/<hash of the files>/`,
/// private (0700 directories owned by this user, 0600 files). Each file is compared with the
/// embedded bytes at every start and replaced (a new file renamed over it) when it differs or is
/// not a plain file. node's compile cache is keyed by a module's path: from a fresh scratch dir
/// at every start the preload was compiled every time and its ~22 cache entries were never used
/// again (the cache grew by them at each start). Returns the entry file's path.
pub fn stable_preload(base: &Path, files: &[(&str, &[u8])]) -> Result<PathBuf, String> {
    use sha2::{Digest, Sha256};
    use std::os::unix::fs::MetadataExt;
    if !files.iter().any(|(n, _)| *n == PRELOAD_ENTRY) {
        return Err(LaunchError::NoPreload.to_string());
    }
    let mut h = Sha256::new();
    for (name, bytes) in files {
        h.update(name.as_bytes());
        h.update([0]);
        h.update((bytes.len() as u64).to_le_bytes());
        h.update(bytes);
    }
    let hash: String = h.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let dir = base.join(hash);
    for d in [base, dir.as_path()] {
        crate::prefetch::private_dir(d).map_err(|e| e.to_string())?;
    }
    // SAFETY: geteuid has no preconditions.
    let me = rustix::process::geteuid().as_raw();
    for (name, bytes) in files {
        let path = dir.join(name);
        let intact = std::fs::symlink_metadata(&path)
            .is_ok_and(|m| m.file_type().is_file() && m.uid() == me && m.mode() & 0o077 == 0)
            && std::fs::read(&path).is_ok_and(|b| b == *bytes);
        if intact {
            continue;
        }
        let tmp = dir.join(format!(".{name}.{}", protocol::secret::random_hex(8)));
        let write = || -> std::io::Result<()> {
            let mut f = std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)?;
            std::io::Write::write_all(&mut f, bytes)?;
            std::fs::rename(&tmp, &path)
        };
        if let Err(e) = write() {
            let _ = std::fs::remove_file(&tmp);
            return Err(format!("writing {}: {e}", path.display()));
        }
    }
    Ok(dir.join(PRELOAD_ENTRY))
}

/// `name` looked up in PATH.
pub fn which(name: &str) -> Option<PathBuf> {
    which_in(name, &std::env::var_os("PATH")?)
}

fn which_in(name: &str, path: &std::ffi::OsStr) -> Option<PathBuf> {
    std::env::split_paths(path)
        .map(|d| d.join(name))
        .find(|p| is_executable(p))
}

fn is_executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Which node, pi and agent to use; shared by `pii` and `pii doctor`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct ToolFlags {
    /// pi's cli.js [default: $PII_PI, else `pi` on PATH resolved to its cli.js].
    #[arg(long, value_name = "PI_CLI")]
    pub pi: Option<PathBuf>,

    /// The pi-bridge-agent binary to run or upload [default: next to pii, then
    /// ~/.local/share/pi-bridge/agents/<target>/pi-bridge-agent].
    #[arg(long, value_name = "AGENT_BIN")]
    pub agent: Option<PathBuf>,

    /// The node binary [default: $PII_NODE, else `node` on PATH].
    #[arg(long, value_name = "NODE")]
    pub node: Option<PathBuf>,
}

/// node: `--node`, else `PII_NODE`, else `node` on PATH.
pub fn find_node(flag: Option<&Path>) -> Result<PathBuf, LaunchError> {
    let chosen = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PII_NODE").map(PathBuf::from));
    match chosen {
        Some(p) if p.components().count() == 1 && !p.is_absolute() => which(&p.to_string_lossy())
            .ok_or_else(|| LaunchError::NodeNotFound(format!("`{}` is not on PATH", p.display()))),
        Some(p) => Ok(p),
        None => {
            which("node").ok_or_else(|| LaunchError::NodeNotFound("`node` is not on PATH".into()))
        }
    }
}

/// A node binary and the version it reports.
#[derive(Debug, Clone)]
pub struct Node {
    pub path: PathBuf,
    /// As `node --version` prints it (`v26.12.1`).
    pub text: String,
    pub version: crate::pi::Version,
}

/// Run `node --version`.
pub fn node_version(node: &Path) -> Result<Node, LaunchError> {
    let name = node.display().to_string();
    let out = std::process::Command::new(node)
        .arg("--version")
        .stdin(std::process::Stdio::null())
        .output()
        .map_err(|e| {
            if e.kind() == std::io::ErrorKind::NotFound {
                LaunchError::NodeNotFound(format!("{name} does not exist"))
            } else {
                LaunchError::NodeVersion {
                    node: name.clone(),
                    msg: e.to_string(),
                }
            }
        })?;
    let text = String::from_utf8_lossy(&out.stdout).trim().to_string();
    match crate::pi::parse_version(&text) {
        Some(version) => Ok(Node {
            path: node.to_path_buf(),
            text,
            version,
        }),
        None => Err(LaunchError::NodeVersion {
            node: name,
            msg: format!("unexpected output {text:?}"),
        }),
    }
}

/// [`node_version`], remembered per binary in the private directory `cache`: `node --version`
/// boots a whole node (10–20 ms) on the way to starting the real one. An entry holds the
/// binary's identity (device, inode, size, mtime and ctime in ns: any change to the file moves
/// its ctime) and is used only for the very file that printed it; a missing, unreadable or
/// stale entry runs `node --version` again and rewrites it. Without `cache`, always runs it.
pub fn node_version_cached(node: &Path, cache: Option<&Path>) -> Result<Node, LaunchError> {
    use sha2::Digest;
    use std::os::unix::fs::MetadataExt;
    let Some(dir) = cache else {
        return node_version(node);
    };
    // Identity of the file node names (symlinks followed: the binary that runs).
    let ident = std::fs::canonicalize(node).ok().and_then(|real| {
        let m = std::fs::metadata(&real).ok()?;
        let id = format!(
            "{} {} {} {} {} {}",
            m.dev(),
            m.ino(),
            m.size(),
            m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            real.display()
        );
        let key = protocol::secret::hex(&sha2::Sha256::digest(real.as_os_str().as_encoded_bytes()));
        Some((id, dir.join(&key[..32])))
    });
    let Some((id, file)) = ident else {
        return node_version(node);
    };
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Some((seen, version)) = text.split_once('\n') {
            let version = version.trim_end();
            if seen == id {
                if let Some(v) = crate::pi::parse_version(version) {
                    return Ok(Node {
                        path: node.to_path_buf(),
                        text: version.to_string(),
                        version: v,
                    });
                }
            }
        }
    }
    let found = node_version(node)?;
    // A cache that cannot be written costs the next start these milliseconds, nothing else.
    let tmp = file.with_extension(format!("tmp{}", std::process::id()));
    let saved = crate::prefetch::private_dir(dir)
        .map_err(|e| e.to_string())
        .and_then(|()| {
            std::fs::write(&tmp, format!("{id}\n{}\n", found.text))
                .and_then(|()| std::fs::rename(&tmp, &file))
                .map_err(|e| e.to_string())
        });
    if let Err(e) = saved {
        let _ = std::fs::remove_file(&tmp);
        tracing::warn!("remembering node's version in {}: {e}", dir.display());
    }
    Ok(found)
}

/// Refuse a node older than what the launched package's `engines.node` asks (pi 1.x on Node 20
/// would die at once with a SyntaxError). What pii cannot judge is left to [`crate::pi::notice`].
pub fn check_node(node: &Node, pkg: Option<&crate::pi::Package>) -> Result<(), LaunchError> {
    match pkg.and_then(|p| p.node_fit(node.version).map(|f| (p, f))) {
        Some((p, Ok(crate::pi::Fit::TooOld))) => Err(LaunchError::NodeTooOldForPi {
            pi: p.label(),
            needs: p.engines_node.clone().unwrap_or_default(),
            node: node.path.display().to_string(),
            found: node.text.clone(),
        }),
        _ => Ok(()),
    }
}

/// pi's cli.js: `--pi`, else `PII_PI` (any Node script), else `pi` on PATH with symlinks followed,
/// which must lead into one of pi's packages ([`PI_PACKAGES`], either name).
pub fn find_pi(flag: Option<&Path>) -> Result<PathBuf, LaunchError> {
    let chosen = flag
        .map(Path::to_path_buf)
        .or_else(|| std::env::var_os("PII_PI").map(PathBuf::from));
    find_pi_in(chosen, std::env::var_os("PATH").as_deref())
}

fn find_pi_in(
    chosen: Option<PathBuf>,
    path: Option<&std::ffi::OsStr>,
) -> Result<PathBuf, LaunchError> {
    let from_path = chosen.is_none();
    let p = match chosen {
        Some(p) => p,
        None => path
            .and_then(|path| which_in("pi", path))
            .ok_or_else(|| LaunchError::PiNotFound("`pi` is not on PATH".into()))?,
    };
    let real = std::fs::canonicalize(&p)
        .map_err(|e| LaunchError::PiNotFound(format!("{}: {e}", p.display())))?;
    if !real.is_file() {
        return Err(LaunchError::PiNotFound(format!(
            "{} is not a file",
            real.display()
        )));
    }
    if from_path && !crate::pi::Package::of(&real).is_some_and(|pkg| pkg.is_pi()) {
        return Err(LaunchError::PiNotFound(format!(
            "`pi` on PATH ({} → {}) is not in a {} package",
            p.display(),
            real.display(),
            PI_PACKAGES.join(" or ")
        )));
    }
    Ok(real)
}

/// What the preload is told about trust and the local side (`SessionEnv`'s `trustProject`,
/// `gate` and `local`).
pub struct Boundary {
    pub trust_project: bool,
    pub gate: protocol::trust::Gate,
    pub local: Vec<protocol::endpoint::LocalPath>,
}

/// The `PII_SESSION` value. `facts` is `None` when node starts before the session is up: the
/// preload then asks `session.info` for them when it first needs them. `prefetch`: what this pi
/// looked up when it started before (`crate::prefetch`).
pub fn session_env(
    endpoint: &Path,
    facts: Option<&protocol::Facts>,
    rpc_timeout_ms: u64,
    boundary: Boundary,
    prefetch: &[String],
) -> SessionEnv {
    SessionEnv {
        endpoint: endpoint.to_string_lossy().into_owned(),
        cwd: facts.map(|f| f.project_root.clone()),
        routes: facts.map(|f| vec![f.sandbox_root.clone()]),
        remote_path: facts.map(|f| f.login_path.clone()),
        remote_home: facts.map(|f| f.home.clone()),
        rpc_timeout_ms,
        trust_project: boundary.trust_project,
        gate: boundary.gate,
        local: boundary.local,
        prefetch: prefetch.to_vec(),
    }
}

/// The file name of the guard pii loads into pi (`preload/pi-bridge-guard.cjs`).
pub const GUARD_FILE: &str = "pi-bridge-guard.cjs";

/// pi's subcommands (its first argument): they run no model, and their own argument parsers
/// take no `-e`.
const PI_SUBCOMMANDS: [&str; 8] = [
    "auth",
    "mcp",
    "install",
    "remove",
    "uninstall",
    "update",
    "list",
    "config",
];

/// pi's arguments with the guard extension loaded first (`-e <guard>`), unless they start with
/// one of pi's subcommands.
pub fn with_guard(pi_args: &[OsString], guard: &Path) -> Vec<OsString> {
    let sub = pi_args
        .first()
        .is_some_and(|a| PI_SUBCOMMANDS.iter().any(|s| a == *s));
    if sub {
        return pi_args.to_vec();
    }
    let mut v: Vec<OsString> = vec!["-e".into(), guard.as_os_str().to_os_string()];
    v.extend(pi_args.iter().cloned());
    v
}

/// The one line pii prints (before pi gets its first answer) when the remote project's config
/// dirs hold what the trust gate hides and `--trust-project` was not given; `None` when there is
/// nothing to hide at the project root. The agent looks in `hello` (`protocol::trust::Finding`);
/// what it could not check is named too. The gate applies at any depth; the notice names what it
/// finds at the root.
pub fn trust_notice(found: &[protocol::trust::Finding]) -> Option<String> {
    use protocol::trust::Finding;
    let hidden: Vec<String> = found
        .iter()
        .map(|f| match f {
            Finding::Present { path } => path.clone(),
            Finding::HiddenKeys { path, keys } => format!("{} of {path}", keys.join("/")),
            Finding::NotAnObject { path } => {
                format!("{path} (not a plain JSON object: pi sees it empty)")
            }
            Finding::Unchecked { path, code } => {
                format!("{path} (if there: it could not be checked, {code})")
            }
        })
        .collect();
    (!hidden.is_empty()).then(|| {
        format!(
            "pii: hiding the remote project's {} (and the same in any subdirectory: from the remote, they would run code or write files on this machine); --trust-project to allow",
            hidden.join(" and ")
        )
    })
}

/// Run `node --require <preload> <pi> <args>` in `cwd`, with the token and session in its
/// environment only. Returns node's exit status. SIGINT is ignored meanwhile (the terminal sends
/// it to node itself); SIGTERM and SIGHUP are forwarded to node.
/// What node's environment gets from pii: the token, the session, and more variables (pi's
/// agent dir made absolute, its private `TMPDIR`, …).
pub struct NodeEnv<'a> {
    pub token: &'a str,
    pub session: &'a SessionEnv,
    pub extra: &'a [(String, OsString)],
}

pub async fn run_node(
    node: &Path,
    preload: &Path,
    pi: &Path,
    pi_args: &[OsString],
    cwd: &Path,
    env: NodeEnv<'_>,
) -> Result<ExitStatus, LaunchError> {
    let NodeEnv {
        token,
        session,
        extra,
    } = env;
    use tokio::signal::unix::{signal, SignalKind};
    let session_json = serde_json::to_string(session).expect("SessionEnv serializes");
    let mut cmd = tokio::process::Command::new(node);
    cmd.arg("--require")
        .arg(preload)
        .arg(pi)
        .args(pi_args)
        .current_dir(cwd)
        .envs(extra.iter().map(|(k, v)| (k, v)))
        .env(TOKEN_ENV, token)
        .env(SESSION_ENV, session_json)
        .kill_on_drop(true);
    // Handlers before the spawn so a Ctrl+C right at start does not kill pii and orphan node.
    let mut int = signal(SignalKind::interrupt()).ok();
    let mut term = signal(SignalKind::terminate()).ok();
    let mut hup = signal(SignalKind::hangup()).ok();
    let mut child = cmd.spawn().map_err(|source| LaunchError::Spawn {
        node: node.display().to_string(),
        source,
    })?;
    let pid = child.id();
    tracing::info!("node started, pid {pid:?}");
    async fn recv(s: &mut Option<tokio::signal::unix::Signal>) {
        match s {
            Some(s) => {
                s.recv().await;
            }
            None => std::future::pending().await,
        }
    }
    // kill(2) to the pid we spawned and have not reaped yet.
    let forward = |sig: rustix::process::Signal| {
        if let Some(pid) = pid.and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
            let _ = rustix::process::kill_process(pid, sig);
        }
    };
    loop {
        tokio::select! {
            st = child.wait() => return st.map_err(LaunchError::Wait),
            _ = recv(&mut int) => tracing::debug!("SIGINT ignored (node gets it from the terminal)"),
            _ = recv(&mut term) => { tracing::info!("SIGTERM: forwarding to node"); forward(rustix::process::Signal::TERM) }
            _ = recv(&mut hup) => { tracing::info!("SIGHUP: forwarding to node"); forward(rustix::process::Signal::HUP) }
        }
    }
}

/// An exit status as a shell reports it (signal → 128 + n).
pub fn exit_code(st: ExitStatus) -> i32 {
    use std::os::unix::process::ExitStatusExt;
    st.code()
        .or_else(|| st.signal().map(|s| 128 + s))
        .unwrap_or(1)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// `node --version` runs once per binary: the second start reads what it printed, a changed
    /// binary (or a garbled entry) runs it again, and no cache dir means running it every time.
    #[test]
    fn node_version_is_remembered_per_binary_identity() {
        let d = tempfile::tempdir().unwrap();
        let runs = d.path().join("runs");
        let node = d.path().join("node");
        let write_node = |v: &str| {
            std::fs::write(
                &node,
                format!("#!/bin/sh\necho run >> '{}'\necho {v}\n", runs.display()),
            )
            .unwrap();
            std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).unwrap();
        };
        let count = || {
            std::fs::read_to_string(&runs)
                .unwrap_or_default()
                .lines()
                .count()
        };
        write_node("v22.19.0");
        let cache = d.path().join("cache/node-versions");
        for _ in 0..3 {
            let n = node_version_cached(&node, Some(&cache)).unwrap();
            assert_eq!(n.text, "v22.19.0");
        }
        assert_eq!(count(), 1);
        assert_eq!(
            std::fs::metadata(&cache).unwrap().permissions().mode() & 0o777,
            0o700
        );
        // Another binary at the same path: asked again.
        write_node("v24.1.0");
        assert_eq!(
            node_version_cached(&node, Some(&cache)).unwrap().text,
            "v24.1.0"
        );
        assert_eq!(count(), 2);
        // A garbled entry is not believed.
        for e in std::fs::read_dir(&cache).unwrap() {
            std::fs::write(e.unwrap().path(), "junk").unwrap();
        }
        assert_eq!(
            node_version_cached(&node, Some(&cache)).unwrap().text,
            "v24.1.0"
        );
        assert_eq!(count(), 3);
        assert_eq!(
            node_version_cached(&node, Some(&cache)).unwrap().text,
            "v24.1.0"
        );
        assert_eq!(count(), 3);
        // No cache: every time.
        node_version_cached(&node, None).unwrap();
        assert_eq!(count(), 4);
    }

    /// The notice names every finding of the agent's check, the unchecked ones too; nothing
    /// found, no notice.
    #[test]
    fn trust_notice_names_every_finding() {
        use protocol::trust::Finding;
        assert_eq!(trust_notice(&[]), None);
        let n = trust_notice(&[
            Finding::Present {
                path: ".pi/extensions".into(),
            },
            Finding::HiddenKeys {
                path: ".pi/settings.json".into(),
                keys: vec!["npmCommand".into(), "packages".into()],
            },
            Finding::NotAnObject {
                path: ".tau/settings.json".into(),
            },
            Finding::Unchecked {
                path: ".pi/mcp.json".into(),
                code: "EACCES".into(),
            },
        ])
        .unwrap();
        assert!(n.starts_with("pii: hiding the remote project's .pi/extensions and npmCommand/packages of .pi/settings.json and .tau/settings.json (not a plain JSON object: pi sees it empty) and .pi/mcp.json (if there: it could not be checked, EACCES) ("), "{n}");
        assert!(n.ends_with("--trust-project to allow"), "{n}");
    }

    /// `pi` on PATH as npm installs it (a symlink to the package's bin) under either package
    /// name; a `pi` that is not pi is refused, while `--pi` takes any script.
    #[test]
    fn pi_on_path_under_either_package_name() {
        use std::os::unix::fs::symlink;
        let d = tempfile::tempdir().unwrap();
        let install = |prefix: &str, name: &str, bin: &str| -> (PathBuf, PathBuf) {
            let pkg = d.path().join(prefix).join("lib/node_modules").join(name);
            let cli = pkg.join(bin);
            std::fs::create_dir_all(cli.parent().unwrap()).unwrap();
            std::fs::write(&cli, "#!/usr/bin/env node\n").unwrap();
            std::fs::set_permissions(&cli, std::fs::Permissions::from_mode(0o755)).unwrap();
            std::fs::write(
                pkg.join("package.json"),
                format!(r#"{{"name":"{name}","version":"1.0.0"}}"#),
            )
            .unwrap();
            let bindir = d.path().join(prefix).join("bin");
            std::fs::create_dir_all(&bindir).unwrap();
            symlink(&cli, bindir.join("pi")).unwrap();
            (bindir, cli)
        };
        for (i, (name, bin)) in [
            (PI_PACKAGES[0], "dist/bundle/cli.js"),
            (PI_PACKAGES[1], "dist/cli.js"),
        ]
        .into_iter()
        .enumerate()
        {
            let (bindir, cli) = install(&format!("p{i}"), name, bin);
            let path = std::env::join_paths([Path::new("/nonexistent"), &bindir]).unwrap();
            assert_eq!(
                find_pi_in(None, Some(&path)).unwrap(),
                std::fs::canonicalize(cli).unwrap()
            );
        }
        let (bindir, cli) = install("other", "pi-digits", "bin/pi.js");
        let err = find_pi_in(None, Some(bindir.as_os_str()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not in a @earendil-works/pi-coding-agent or @mariozechner/pi-coding-agent package")
                && err.contains(&format!("npm install -g {PI_PACKAGE}")),
            "{err}"
        );
        assert_eq!(
            find_pi_in(Some(cli.clone()), None).unwrap(),
            std::fs::canonicalize(&cli).unwrap()
        );
        let err = find_pi_in(None, Some(d.path().as_os_str())).unwrap_err();
        assert!(err.to_string().contains("`pi` is not on PATH"), "{err}");
    }

    #[test]
    fn a_node_too_old_for_the_pi_is_refused_in_one_line_naming_both() {
        let pkg = crate::pi::Package {
            name: PI_PACKAGE.into(),
            version: "1.6.0".into(),
            engines_node: Some(">=22.19.0".into()),
            manifest: PathBuf::from("/x/package.json"),
            app_name: None,
            config_dir: None,
        };
        let node = |text: &str| Node {
            path: PathBuf::from("/usr/bin/node"),
            text: text.into(),
            version: crate::pi::parse_version(text).unwrap(),
        };
        let err = check_node(&node("v20.20.2"), Some(&pkg))
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "pi 1.6.0 (@earendil-works/pi-coding-agent) needs Node.js >=22.19.0, but /usr/bin/node is Node.js v20.20.2: install a newer Node.js, or pick one with --node PATH or PII_NODE"
        );
        check_node(&node("v22.19.0"), Some(&pkg)).unwrap();
        check_node(&node("v20.20.2"), None).unwrap();
    }

    #[test]
    fn scratch_is_private_unique_and_removed() {
        let base = tempfile::tempdir().unwrap();
        let a = Scratch::create(base.path()).unwrap();
        let b = Scratch::create(base.path()).unwrap();
        assert_ne!(a.root, b.root);
        let mode = std::fs::metadata(&a.root).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o700);
        assert!(a.cwd().is_dir() && std::fs::read_dir(a.cwd()).unwrap().next().is_none());
        assert!(matches!(
            a.write_preload(&[("x.cjs", b"1")]),
            Err(LaunchError::NoPreload)
        ));
        let entry = a
            .write_preload(&[("index.cjs", b"require('./x.cjs')"), ("y.cjs", b"2")])
            .unwrap();
        assert_eq!(std::fs::read(&entry).unwrap(), b"require('./x.cjs')");
        let root = a.root.clone();
        drop(a);
        assert!(!root.exists());
        assert!(b.root.exists());
    }

    #[test]
    fn the_preload_keeps_its_path_while_its_bytes_do_and_is_repaired() {
        let base = tempfile::tempdir().unwrap();
        let cache = base.path().join("preload");
        let files: &[(&str, &[u8])] = &[("index.cjs", b"require('./y.cjs')"), ("y.cjs", b"2")];
        let a = stable_preload(&cache, files).unwrap();
        assert_eq!(
            stable_preload(&cache, files).unwrap(),
            a,
            "same bytes, same path"
        );
        let dir = a.parent().unwrap();
        for d in [cache.as_path(), dir] {
            assert_eq!(
                std::fs::metadata(d).unwrap().permissions().mode() & 0o777,
                0o700
            );
        }
        let y = dir.join("y.cjs");
        assert_eq!(
            std::fs::metadata(&y).unwrap().permissions().mode() & 0o777,
            0o600
        );
        // Changed, widened or replaced by a symlink: rewritten from the embedded bytes.
        std::fs::write(&y, b"evil").unwrap();
        stable_preload(&cache, files).unwrap();
        assert_eq!(std::fs::read(&y).unwrap(), b"2");
        std::fs::set_permissions(&y, std::fs::Permissions::from_mode(0o644)).unwrap();
        stable_preload(&cache, files).unwrap();
        assert_eq!(
            std::fs::metadata(&y).unwrap().permissions().mode() & 0o777,
            0o600
        );
        let elsewhere = base.path().join("elsewhere");
        std::fs::write(&elsewhere, b"evil").unwrap();
        std::fs::remove_file(&y).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &y).unwrap();
        stable_preload(&cache, files).unwrap();
        assert!(std::fs::symlink_metadata(&y).unwrap().file_type().is_file());
        assert_eq!(
            std::fs::read(&elsewhere).unwrap(),
            b"evil",
            "the link's target untouched"
        );
        // Other bytes: another directory; no entry file: refused; no temp files left.
        let b = stable_preload(&cache, &[("index.cjs", b"x")]).unwrap();
        assert_ne!(a.parent(), b.parent());
        assert!(stable_preload(&cache, &[("x.cjs", b"1")]).is_err());
        let names: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names.len(), 2, "{names:?}");
        // A base dir that is a symlink is refused (the caller falls back to the scratch dir).
        let link = base.path().join("link");
        std::os::unix::fs::symlink(&cache, &link).unwrap();
        assert!(stable_preload(&link, files).is_err());
    }

    #[test]
    fn the_guard_loads_first_except_before_a_subcommand() {
        let g = Path::new("/s/preload/pi-bridge-guard.cjs");
        let args = |v: &[&str]| v.iter().map(OsString::from).collect::<Vec<_>>();
        assert_eq!(
            with_guard(&args(&["-p", "hi"]), g),
            args(&["-e", "/s/preload/pi-bridge-guard.cjs", "-p", "hi"])
        );
        assert_eq!(
            with_guard(&args(&["fix the bug"]), g),
            args(&["-e", "/s/preload/pi-bridge-guard.cjs", "fix the bug"])
        );
        assert_eq!(
            with_guard(&[], g),
            args(&["-e", "/s/preload/pi-bridge-guard.cjs"])
        );
        for sub in ["install", "update", "mcp", "config", "list", "auth"] {
            assert_eq!(with_guard(&args(&[sub, "x"]), g), args(&[sub, "x"]));
        }
    }

    #[test]
    fn exit_codes() {
        use std::os::unix::process::ExitStatusExt;
        assert_eq!(exit_code(ExitStatus::from_raw(3 << 8)), 3);
        assert_eq!(
            exit_code(ExitStatus::from_raw(libc::SIGTERM)),
            128 + libc::SIGTERM
        );
    }

    #[tokio::test]
    async fn node_gets_env_not_argv_and_exit_code_passes_through() {
        let Some(node) = which("node") else { return };
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.json");
        let pi = dir.path().join("cli.js");
        std::fs::write(
            &pi,
            format!(
                "require('fs').writeFileSync({:?}, JSON.stringify({{argv: process.argv.slice(2), cwd: process.cwd(), token: process.env.PII_TOKEN, session: JSON.parse(process.env.PII_SESSION), extra: process.env.PI_BRIDGE_TEST_ENV, pre: globalThis.preloaded}})); process.exit(7)",
                out.display().to_string()
            ),
        )
        .unwrap();
        let preload = dir.path().join("index.cjs");
        std::fs::write(&preload, "globalThis.preloaded = true").unwrap();
        let cwd = dir.path().join("cwd");
        std::fs::create_dir(&cwd).unwrap();
        let env = session_env(
            Path::new("/s/endpoint.sock"),
            Some(&crate::session::tests::facts()),
            1234,
            Boundary {
                trust_project: false,
                gate: protocol::trust::Gate::new(None),
                local: vec![protocol::endpoint::LocalPath {
                    path: "/l".into(),
                    kind: protocol::endpoint::LocalKind::Code,
                    why: "w".into(),
                }],
            },
            &[".".to_string(), "AGENTS.md".to_string()],
        );
        let st = run_node(
            &node,
            &preload,
            &pi,
            &["a b".into(), "-p".into()],
            &cwd,
            NodeEnv {
                token: "deadbeef",
                session: &env,
                extra: &[("PI_BRIDGE_TEST_ENV".to_string(), "set".into())],
            },
        )
        .await
        .unwrap();
        assert_eq!(exit_code(st), 7);
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&out).unwrap()).unwrap();
        assert_eq!(v["argv"], serde_json::json!(["a b", "-p"]));
        assert_eq!(v["token"], "deadbeef");
        assert_eq!(v["pre"], true);
        assert_eq!(v["session"]["cwd"], "/home/dev/app");
        assert_eq!(v["session"]["routes"], serde_json::json!(["/home/dev/app"]));
        assert_eq!(v["session"]["rpcTimeoutMs"], 1234);
        assert_eq!(v["session"]["trustProject"], false);
        assert_eq!(
            v["session"]["gate"]["configDirs"],
            serde_json::json!([".pi"])
        );
        assert_eq!(
            v["session"]["local"],
            serde_json::json!([{"path": "/l", "kind": "code", "why": "w"}])
        );
        assert_eq!(v["extra"], "set");
        assert_eq!(
            v["session"]["prefetch"],
            serde_json::json!([".", "AGENTS.md"])
        );
        assert_eq!(
            std::fs::canonicalize(v["cwd"].as_str().unwrap()).unwrap(),
            std::fs::canonicalize(&cwd).unwrap()
        );
    }
}
