//! Finding the agent binary, the remote bootstrap script, and the upload (ARCHITECTURE.md §2).

use crate::session::Activity;
use crate::ssh::{SshError, SshOptions};
use protocol::Magic;
use sha2::{Digest, Sha256};
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStderr, ChildStdout};

/// What the remote bootstrap prints when it needs the agent binary.
pub const INSTALL_PREFIX: &str = "PI-BRIDGE-INSTALL";
/// What the bootstrap prints when it fails (followed by a reason).
pub const ERROR_PREFIX: &str = "PI-BRIDGE-ERROR";
pub const AGENT_NAME: &str = "pi-bridge-agent";
/// The longest pre-magic line kept (MOTD noise beyond it is skipped in pieces).
const MAX_NOISE_LINE: usize = 64 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum InstallError {
    #[error("{0}")]
    VersionMismatch(String),
    #[error("reading from the agent failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the remote bootstrap failed: {0}")]
    Remote(String),
    #[error("no pi-bridge-agent binary found{}. Pass one with --agent PATH, or put it next to pii", for_what(.0))]
    AgentNotFound(Option<String>),
    #[error("no pi-bridge-agent binary for the remote ({uname}, needs {need}). Looked at: {looked}. `npm install -g pi-bridge` installs pii with agents for Linux x86_64 and aarch64 (package {NPM_AGENTS}); or build one with `cargo build --release -p pi-bridge-agent --target {target}` and pass it with --agent target/{target}/release/pi-bridge-agent, or copy it to ~/.local/share/pi-bridge/agents/{target}/pi-bridge-agent")]
    NoAgentForArch {
        uname: String,
        need: String,
        target: String,
        looked: String,
    },
    #[error("the remote is {0}; pi-bridge-agent runs on Linux x86_64 and aarch64 only")]
    UnsupportedRemote(String),
    #[error("the local agent asked to be installed ({0}); --local needs a runnable agent binary")]
    UnexpectedInstall(String),
    #[error(transparent)]
    Ssh(#[from] SshError),
}

fn for_what(s: &Option<String>) -> String {
    s.as_ref().map(|s| format!(" ({s})")).unwrap_or_default()
}

/// The first line of the agent that matters.
#[derive(Debug, PartialEq, Eq)]
pub enum Announce {
    /// The agent runs; frames follow.
    Agent(Magic),
    /// The bootstrap wants a binary for this `uname -sm`.
    Install(String),
}

/// Read lines until the magic line echoing this connection's `nonce` or an install request;
/// noise before it is skipped (and logged), including magic lines without the nonce (an rc
/// file's echo, another program's output). A protocol mismatch is an error naming both
/// versions. `Ok(None)` at end of stream.
pub async fn read_announce<R: AsyncBufRead + Unpin>(
    reader: &mut R,
    nonce: &str,
) -> Result<Option<Announce>, InstallError> {
    let mut buf = Vec::new();
    loop {
        buf.clear();
        let n = (&mut *reader)
            .take(MAX_NOISE_LINE as u64)
            .read_until(b'\n', &mut buf)
            .await?;
        if n == 0 {
            return Ok(None);
        }
        let line = String::from_utf8_lossy(&buf);
        let line = line.trim_end_matches(['\n', '\r']);
        if let Some(m) = Magic::parse(line) {
            if m.nonce.as_deref() != Some(nonce) {
                tracing::warn!(
                    "skipping an agent announcement without this connection's nonce: {line:.200}"
                );
                continue;
            }
            m.check_compatible()
                .map_err(InstallError::VersionMismatch)?;
            return Ok(Some(Announce::Agent(m)));
        }
        if let Some(rest) = line.strip_prefix(INSTALL_PREFIX) {
            return Ok(Some(Announce::Install(rest.trim().to_string())));
        }
        if let Some(rest) = line.strip_prefix(ERROR_PREFIX) {
            return Err(InstallError::Remote(rest.trim().to_string()));
        }
        if line.starts_with(protocol::hello::MAGIC_PREFIX) && line.contains(nonce) {
            return Err(InstallError::VersionMismatch(format!(
                "the agent announced itself as {line:?}, which pii {} (protocol {}) cannot parse",
                protocol::VERSION,
                protocol::PROTOCOL_VERSION
            )));
        }
        tracing::debug!("skipping pre-agent output: {line:.200}");
    }
}

/// The local agent for `--local`: `--agent`, else `pi-bridge-agent` next to pii, else (on Linux)
/// the agent for this machine's architecture where an ssh upload would find it (the npm package).
pub fn find_local_agent(flag: Option<&Path>) -> Result<PathBuf, InstallError> {
    if let Some(p) = flag {
        return if p.is_file() {
            Ok(p.to_path_buf())
        } else {
            Err(InstallError::AgentNotFound(Some(format!(
                "{} does not exist",
                p.display()
            ))))
        };
    }
    if let Some(p) = sibling_agent() {
        return Ok(p);
    }
    let local = ARCHES
        .iter()
        .find(|(a, _)| cfg!(target_os = "linux") && *a == std::env::consts::ARCH);
    local
        .and_then(|(arch, machine)| find_agent(arch, *machine, None).0)
        .ok_or(InstallError::AgentNotFound(None))
}

/// `pi-bridge-agent` in the directory of the running pii.
pub fn sibling_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(AGENT_NAME);
    p.is_file().then_some(p)
}

/// The link a connection gives: the child (ssh or agent), its stdout after the announcement,
/// and the tail of its stderr.
pub type Link = (Child, BufReader<Activity<ChildStdout>>, Tail);

/// The last lines a child wrote on stderr (each also goes to the log).
pub type Tail = Arc<Mutex<VecDeque<String>>>;

/// Drain a child's stderr into the log, keeping the last lines for error messages.
pub fn capture_stderr(stderr: ChildStderr, who: &'static str) -> Tail {
    let tail: Tail = Arc::default();
    let t = tail.clone();
    tokio::spawn(async move {
        let mut r = BufReader::new(stderr);
        let mut buf = Vec::new();
        loop {
            buf.clear();
            match (&mut r).take(64 * 1024).read_until(b'\n', &mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(_) => {
                    let l = String::from_utf8_lossy(&buf).trim_end().to_string();
                    tracing::info!(target: "pii::remote", "{who}: {l}");
                    let mut t = t.lock().unwrap_or_else(|p| p.into_inner());
                    if t.len() >= 30 {
                        t.pop_front();
                    }
                    t.push_back(l);
                }
            }
        }
    });
    tail
}

pub fn tail_text(t: &Tail) -> String {
    t.lock()
        .unwrap_or_else(|p| p.into_inner())
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n")
}

/// Remote architectures the agent is built for: (`uname -m`, ELF e_machine).
pub const ARCHES: &[(&str, u16)] = &[("x86_64", 62), ("aarch64", 183)];

/// The arch for a `uname -sm` answer.
pub fn arch_of(uname: &str) -> Result<(&'static str, u16), InstallError> {
    let mut it = uname.split_whitespace();
    let (os, m) = (it.next().unwrap_or(""), it.next().unwrap_or(""));
    let m = if m == "arm64" { "aarch64" } else { m };
    if os != "Linux" {
        return Err(InstallError::UnsupportedRemote(uname.to_string()));
    }
    ARCHES
        .iter()
        .copied()
        .find(|(a, _)| *a == m)
        .ok_or_else(|| InstallError::UnsupportedRemote(uname.to_string()))
}

/// The ELF e_machine of a 64-bit Linux-or-SysV ELF file, `None` if it is not one.
pub fn elf_machine(path: &Path) -> Option<u16> {
    let mut f = std::fs::File::open(path).ok()?;
    let mut h = [0u8; 20];
    std::io::Read::read_exact(&mut f, &mut h).ok()?;
    if h[..4] != *b"\x7fELF" || h[4] != 2 {
        return None;
    }
    match h[5] {
        1 => Some(u16::from_le_bytes([h[18], h[19]])),
        2 => Some(u16::from_be_bytes([h[18], h[19]])),
        _ => None,
    }
}

/// The npm package with the agents of pii's release: a dependency of each pii platform package
/// (`@pi-bridge/<os>-<cpu>`), pinned to the same version.
pub const NPM_AGENTS: &str = "@pi-bridge/agents";

/// The `@pi-bridge/agents` package as Node would resolve it from pii's own package: the first
/// `node_modules/@pi-bridge/agents` in the directories above pii's real path. That covers npm
/// (global, local, nested or hoisted), pnpm's `.pnpm/<pkg>/node_modules` and yarn's layout,
/// and is the one copy the package manager installed for this pii.
pub fn npm_agents_dir() -> Option<PathBuf> {
    npm_agents_dir_from(&std::fs::canonicalize(std::env::current_exe().ok()?).ok()?)
}

fn npm_agents_dir_from(exe: &Path) -> Option<PathBuf> {
    exe.ancestors()
        .skip(1)
        .filter(|d| d.file_name().is_some_and(|n| n != "node_modules"))
        .map(|d| d.join("node_modules").join(NPM_AGENTS))
        .find(|d| d.is_dir())
}

/// Where an agent binary for `arch` is looked for, in order: `--agent`, next to pii, the npm
/// package ([`npm_agents_dir`]), then `~/.local/share/pi-bridge/agents/`. The npm package and
/// the data directory hold one directory per Rust target (`x86_64-unknown-linux-musl/`).
pub fn agent_candidates(arch: &str, flag: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![];
    if let Some(f) = flag {
        v.push(f.to_path_buf());
    }
    if let Some(exe) = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(|p| p.join(AGENT_NAME)))
    {
        v.push(exe);
    }
    if let Some(npm) = npm_agents_dir() {
        v.push(
            npm.join(format!("{arch}-unknown-linux-musl"))
                .join(AGENT_NAME),
        );
    }
    if let Some(home) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        let dir = PathBuf::from(home).join(".local/share/pi-bridge/agents");
        for libc in ["musl", "gnu"] {
            v.push(
                dir.join(format!("{arch}-unknown-linux-{libc}"))
                    .join(AGENT_NAME),
            );
        }
    }
    v
}

/// The first candidate that is an ELF binary for `arch`; and every path looked at.
pub fn find_agent(arch: &str, machine: u16, flag: Option<&Path>) -> (Option<PathBuf>, Vec<String>) {
    let mut looked = vec![];
    for c in agent_candidates(arch, flag) {
        match elf_machine(&c) {
            Some(m) if m == machine => return (Some(c), looked),
            Some(m) => looked.push(format!("{} (ELF machine {m}, not {arch})", c.display())),
            None if c.exists() => looked.push(format!("{} (not a 64-bit ELF binary)", c.display())),
            None => looked.push(format!("{} (missing)", c.display())),
        }
    }
    (None, looked)
}

/// What `pii --version` says about the agents: for each remote architecture, the binary pii
/// would upload and the release it announces (read from its bytes), or where pii looked.
pub fn version_report() -> Vec<String> {
    ARCHES
        .iter()
        .map(|(arch, machine)| match find_agent(arch, *machine, None) {
            (Some(path), _) => {
                let what = match std::fs::read(&path).map(|b| Magic::find_in(&b)) {
                    Ok(Some(m)) => match m.check_compatible() {
                        Ok(()) => format!("{} (protocol {})", m.version, m.protocol),
                        Err(e) => format!(
                            "{} (protocol {}), NOT this release, never uploaded: {e}",
                            m.version, m.protocol
                        ),
                    },
                    Ok(None) => "no announcement inside: not a pi-bridge agent".into(),
                    Err(e) => format!("unreadable: {e}"),
                };
                format!("agent for Linux {arch}: {what}, {}", path.display())
            }
            (None, looked) => format!(
                "agent for Linux {arch}: none found (looked at: {})",
                looked.join("; ")
            ),
        })
        .collect()
}

/// Refuse to upload bytes that are not the agent of this release: what the binary would
/// announce is read from it ([`Magic::find_in`]) before anything is sent.
fn check_release(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
    match Magic::find_in(bytes) {
        Some(m) => m.check_compatible().map_err(|e| {
            InstallError::VersionMismatch(format!("{}: {e}; not uploaded", path.display()))
        }),
        None => Err(InstallError::VersionMismatch(format!(
            "{} is not a pi-bridge agent (it holds no `{} protocol=` line); not uploaded",
            path.display(),
            protocol::hello::MAGIC_PREFIX
        ))),
    }
}

/// sha256 of a file, lowercase hex.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = std::fs::File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = std::io::Read::read(&mut f, &mut buf)?;
        if k == 0 {
            break;
        }
        n += k as u64;
        h.update(&buf[..k]);
    }
    Ok((hex(&h.finalize()), n))
}

/// [`sha256_file`], remembered in `~/.cache/pi-bridge/agent-hashes` by (path, size, mtime,
/// inode), so a debug-built pii does not re-hash a 60 MB debug agent on every start.
pub fn cached_sha256(path: &Path) -> std::io::Result<(String, u64)> {
    let cache = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".cache/pi-bridge/agent-hashes"));
    match cache {
        Some(c) => cached_sha256_in(path, &c),
        None => sha256_file(path),
    }
}

fn cached_sha256_in(path: &Path, cache: &Path) -> std::io::Result<(String, u64)> {
    use std::os::unix::fs::MetadataExt;
    let real = std::fs::canonicalize(path)?;
    let m = std::fs::metadata(&real)?;
    let key = format!(
        "{} {} {} {} {}",
        m.size(),
        m.mtime(),
        m.mtime_nsec(),
        m.ino(),
        real.display()
    );
    let old = std::fs::read_to_string(cache).unwrap_or_default();
    for line in old.lines() {
        if let Some((sha, k)) = line.split_once(' ') {
            if k == key && sha.len() == 64 {
                return Ok((sha.to_string(), m.size()));
            }
        }
    }
    let (sha, size) = sha256_file(&real)?;
    // Best effort: keep the newest 20 entries, other paths' first.
    let mut lines: Vec<String> = old
        .lines()
        .filter(|l| !l.ends_with(&format!(" {}", real.display())))
        .map(str::to_string)
        .collect();
    lines.push(format!("{sha} {key}"));
    let keep = lines.len().saturating_sub(20);
    let text = lines[keep..].join("\n") + "\n";
    if let Some(dir) = cache.parent() {
        let _ = std::fs::create_dir_all(dir);
        let tmp = dir.join(format!(".agent-hashes.{}", std::process::id()));
        if std::fs::write(&tmp, text).is_ok() && std::fs::rename(&tmp, cache).is_err() {
            let _ = std::fs::remove_file(&tmp);
        }
    }
    Ok((sha, size))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The versioned directory name of an agent build: `<version>-<first 12 hex of sha256>`.
pub fn dir_name(sha: &str) -> String {
    format!("{}-{}", protocol::VERSION, &sha[..12.min(sha.len())])
}

/// Minutes an installed agent directory is safe from pruning (see [`bootstrap_script`]).
pub const PRUNE_MIN_AGE_MIN: u32 = 10;

/// The remote bootstrap (POSIX sh, one line so any login shell passes it on intact).
///
/// `known`: (`uname -sm`, dir name, size in bytes) of the binaries pii could upload.
///
/// - Refused outright: `~/.cache/pi-bridge` or its `agent/` being a symlink or owned by someone
///   else (a clear `PI-BRIDGE-ERROR`).
/// - Start (every run, cheap): the cached agent for this arch is exec'd only if its directory
///   and the two above it are `drwx------` owned by the current uid and the binary is
///   `-rwx------`, owned by the uid, of the expected size. Anything else (a tampered or
///   half-removed agent) is reinstalled.
/// - Install: print `PI-BRIDGE-INSTALL <uname>`, read `<size> <sha256> <dirname>`, receive the
///   bytes into a unique temp file, verify the sha256, `mv` into place 0700. Under umask 077, put
///   back before the exec, so the agent keeps the login umask.
/// - Lock: the install and the prune run under `agent/.lock` (`flock`, or an `mkdir` lock whose
///   holder's pid is gone or which is older than 10 min is stale), released before the exec so a
///   running agent never holds it.
/// - Prune (under the lock): other version directories, except those younger than
///   [`PRUNE_MIN_AGE_MIN`] minutes (another session may be between its check and its exec) and
///   those whose binary a running process executes (`/proc/*/exe`: another live session).
///
/// Failures print `PI-BRIDGE-ERROR <why>` and exit 1.
pub fn bootstrap_script(known: &[(String, String, u64)]) -> String {
    let mut cases = String::new();
    for (uname, dir, size) in known {
        cases.push_str(&format!(
            "{}) d={dir}; sz={size};; ",
            crate::ssh::sh_quote(uname)
        ));
    }
    let v = protocol::VERSION;
    let age = PRUNE_MIN_AGE_MIN;
    [
        // No umask here: the agent (and every process pi runs) must keep the login's umask, or
        // files pi creates on the remote would come out 0600. Only the install step is private.
        "c=\"$HOME/.cache/pi-bridge\"; base=\"$c/agent\"; me=$(id -u)",
        "unlock() { :; }",
        "fail() { echo \"PI-BRIDGE-ERROR $*\"; unlock; exit 1; }",
        // Never a path another user could redirect or write.
        "mine() { for p in \"$c\" \"$base\"; do if test -L \"$p\"; then fail \"$p is a symlink; pi-bridge keeps its agent only in a private directory of yours (remove the link: rm '$p')\"; fi; if test -e \"$p\" && ! test -O \"$p\"; then fail \"$p is not owned by you (uid $me); pi-bridge refuses to run or install its agent there\"; fi; done; }",
        "mine",
        "u=\"$(uname -sm)\"",
        &format!("d=; sz=; case \"$u\" in {cases}*) ;; esac"),
        // `ls -ldn`: mode owner size in one call (a trailing `.` is an SELinux label; `+`, an
        // ACL, fails the check).
        "st() { set -f; set -- $(ls -ldn \"$1\" 2>/dev/null); set +f; m=\"${1%.}\"; o=\"$3\"; s=\"$5\"; }",
        "pdir() { st \"$1\"; test \"$m\" = drwx------ && test \"$o\" = \"$me\"; }",
        "ok() { pdir \"$c\" && pdir \"$base\" && pdir \"${1%/*}\" && st \"$1\" && test \"$m\" = -rwx------ && test \"$o\" = \"$me\" && { test -z \"$2\" || test \"$s\" = \"$2\"; }; }",
        "if test -n \"$d\" && ok \"$base/$d/pi-bridge-agent\" \"$sz\"; then exec \"$base/$d/pi-bridge-agent\" --stdio; fi",
        &format!("if test -z \"$d\"; then for a in \"$base\"/{v}-*/pi-bridge-agent; do if ok \"$a\" ''; then exec \"$a\" --stdio; fi; done; fi"),
        "if test -n \"$d\" && test -e \"$base/$d\"; then echo \"pi-bridge: $base/$d failed the start check (0700 dirs and binary owned by uid $me, $sz bytes): reinstalling\" >&2; fi",
        "echo \"PI-BRIDGE-INSTALL $u\"",
        "read size sum dir || fail no upload header received",
        "case \"$dir\" in ''|*/*|.*) fail bad directory name \"$dir\";; esac",
        "test \"$size\" -ge 0 2>/dev/null || fail bad size \"$size\"",
        "d=\"$base/$dir\"",
        "um=$(umask); umask 077",
        "mkdir -p \"$base\" || fail cannot create \"$base\"",
        "mine",
        "chmod 700 \"$c\" \"$base\" || fail cannot chmod \"$base\"",
        "lk=\"$base/.lock\"",
        "if command -v flock >/dev/null 2>&1; then exec 9>\"$lk\" || fail cannot open \"$lk\"; flock -w 600 9 || fail \"another install held $lk for 10 minutes\"; unlock() { exec 9>&-; }; else n=0; until mkdir \"$lk.d\" 2>/dev/null; do op=$(cat \"$lk.d/pid\" 2>/dev/null); if { test -n \"$op\" && ! kill -0 \"$op\" 2>/dev/null; } || test -n \"$(find \"$lk.d\" -prune -mmin +10 2>/dev/null)\"; then rm -rf \"$lk.d\"; continue; fi; n=$((n+1)); test $n -lt 600 || fail \"another install held $lk.d for 10 minutes\"; sleep 1; done; echo $$ > \"$lk.d/pid\"; unlock() { rm -rf \"$lk.d\"; }; fi",
        "mkdir -p \"$d\" || fail cannot create \"$d\"",
        "if test -L \"$d\" || ! test -O \"$d\"; then fail \"$d is a symlink or not owned by you; refused\"; fi",
        "chmod 700 \"$d\" || fail cannot chmod \"$d\"",
        "t=\"$d/.upload.$$\"",
        "head -c \"$size\" > \"$t\" || { rm -f \"$t\"; fail cannot write \"$t\"; }",
        "if command -v sha256sum >/dev/null 2>&1; then got=$(sha256sum \"$t\"); elif command -v shasum >/dev/null 2>&1; then got=$(shasum -a 256 \"$t\"); else rm -f \"$t\"; rmdir \"$d\" 2>/dev/null; fail neither sha256sum nor shasum is installed; fi",
        "got=\"${got%% *}\"",
        "if test \"$got\" = \"$sum\"; then :; else rm -f \"$t\"; rmdir \"$d\" 2>/dev/null; fail \"sha256 mismatch: expected $sum, got $got (upload of $size bytes corrupted)\"; fi",
        "chmod 700 \"$t\" && mv -f \"$t\" \"$d/pi-bridge-agent\" || { rm -f \"$t\"; fail cannot install \"$d/pi-bridge-agent\"; }",
        "inuse() { ls -l /proc/[0-9]*/exe 2>/dev/null | grep -qF -- \"-> $1/\"; }",
        &format!("for o in \"$base\"/*; do if test \"$o\" = \"$d\" || ! test -d \"$o\"; then continue; fi; if test -n \"$(find \"$o\" -prune -mmin -{age} 2>/dev/null)\" || inuse \"$o\"; then continue; fi; rm -rf \"$o\"; done"),
        "unlock",
        "umask \"$um\"",
        "exec \"$d/pi-bridge-agent\" --stdio",
    ]
    .join("; ")
}

/// Bytes this process uploaded as agent binaries (`pii doctor` reports a fresh install).
pub static UPLOADED_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// The upload is written in pieces this big, so progress moves on a slow link.
const UPLOAD_CHUNK: usize = 32 * 1024;

/// Upload progress on stderr: one line redrawn in place (`\r`), at most every 200 ms and at
/// whole percents, finished with a newline. Only before node starts (the upload is part of the
/// bootstrap), and only when stderr is a terminal or with --verbose.
struct Progress {
    total: u64,
    sent: u64,
    show: bool,
    started: std::time::Instant,
    last: Option<std::time::Instant>,
    last_pct: u64,
}

impl Progress {
    fn new(total: u64, show: bool) -> Progress {
        Progress {
            total,
            sent: 0,
            show,
            started: std::time::Instant::now(),
            last: None,
            last_pct: u64::MAX,
        }
    }

    fn add(&mut self, n: u64) {
        self.sent += n;
        let pct = (self.sent * 100).checked_div(self.total).unwrap_or(100);
        let due = self
            .last
            .is_none_or(|t| t.elapsed() >= Duration::from_millis(200));
        if self.show && due && pct != self.last_pct {
            self.last = Some(std::time::Instant::now());
            self.last_pct = pct;
            eprint!("\r{}", self.line(pct));
        }
    }

    fn line(&self, pct: u64) -> String {
        let secs = self.started.elapsed().as_secs_f64().max(0.001);
        format!(
            "pii: uploading the agent: {pct:3}% ({} of {} KiB, {:.0} KiB/s)",
            self.sent / 1024,
            self.total / 1024,
            self.sent as f64 / 1024.0 / secs
        )
    }

    fn done(&mut self) {
        if self.show && self.last.is_some() {
            eprintln!("\r{}", self.line(100));
        }
    }
}

/// One agent binary pii can upload.
#[derive(Debug, Clone)]
pub struct Upload {
    pub uname: String,
    pub path: PathBuf,
    pub sha: String,
    pub size: u64,
}

/// The binaries pii has for each supported remote arch.
pub fn known_agents(flag: Option<&Path>) -> Vec<Upload> {
    let mut v = vec![];
    for (arch, machine) in ARCHES {
        if let (Some(path), _) = find_agent(arch, *machine, flag) {
            match cached_sha256(&path) {
                Ok((sha, size)) => v.push(Upload {
                    uname: format!("Linux {arch}"),
                    path,
                    sha,
                    size,
                }),
                Err(e) => tracing::warn!("cannot hash {}: {e}", path.display()),
            }
        }
    }
    v
}

/// Run ssh with the bootstrap, install the agent if asked, and return the link positioned
/// after the agent's magic line.
pub async fn connect_ssh(
    opts: &SshOptions,
    dest: &str,
    agent: Option<&Path>,
    verbose: bool,
) -> Result<Link, InstallError> {
    let known = known_agents(agent);
    let mut table: Vec<(String, String, u64)> = known
        .iter()
        .map(|k| (k.uname.clone(), dir_name(&k.sha), k.size))
        .collect();
    if let Some((_, d, size)) = table.iter().find(|(u, _, _)| u == "Linux aarch64").cloned() {
        table.push(("Linux arm64".into(), d, size));
    }
    // A fresh nonce per connection: the agent echoes it in its magic line (protocol::hello).
    let nonce = crate::endpoint::new_token(16);
    let script = format!(
        "{}={nonce}; export {}; {}",
        protocol::hello::NONCE_ENV,
        protocol::hello::NONCE_ENV,
        bootstrap_script(&table)
    );
    let preset = crate::ssh::preset_keys(opts, dest).await;
    let args = crate::ssh::argv(opts, dest, &script, &preset);
    let shown = crate::ssh::display("ssh", &args[..args.len() - 1]) + " 'sh -c <bootstrap>'";
    tracing::info!("running {}", crate::ssh::display("ssh", &args));
    if verbose {
        eprintln!("pii: {shown}");
    }
    let child = tokio::process::Command::new("ssh")
        .args(&args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| SshError::Spawn(format!("ssh: {e} (is OpenSSH installed and on PATH?)")))?;
    bootstrap(child, &known, agent, dest, verbose, &nonce).await
}

/// Drive a started bootstrap (ssh, or `sh -c` in tests) until the agent announces itself.
pub async fn bootstrap(
    mut child: Child,
    known: &[Upload],
    agent: Option<&Path>,
    dest: &str,
    verbose: bool,
    nonce: &str,
) -> Result<Link, InstallError> {
    let tail = capture_stderr(child.stderr.take().expect("piped"), "ssh");
    let mut reader = BufReader::new(Activity::new(child.stdout.take().expect("piped")));
    let mut uploaded = false;
    loop {
        match read_announce(&mut reader, nonce).await? {
            Some(Announce::Agent(m)) => {
                tracing::info!("agent {} (protocol {}) is up", m.version, m.protocol);
                return Ok((child, reader, tail));
            }
            Some(Announce::Install(uname)) if !uploaded => {
                let (arch, machine) = arch_of(&uname)?;
                let up = match known.iter().find(|k| k.uname == format!("Linux {arch}")) {
                    Some(u) => u.clone(),
                    None => {
                        let (_, looked) = find_agent(arch, machine, agent);
                        return Err(InstallError::NoAgentForArch {
                            uname,
                            need: format!("Linux {arch} ELF"),
                            target: format!("{arch}-unknown-linux-musl"),
                            looked: looked.join("; "),
                        });
                    }
                };
                if verbose {
                    eprintln!(
                        "pii: installing {} ({} bytes) on the remote ({uname})",
                        up.path.display(),
                        up.size
                    );
                }
                tracing::info!(
                    "uploading {} ({} bytes, sha256 {}) for {uname}",
                    up.path.display(),
                    up.size,
                    up.sha
                );
                let stdin = child.stdin.as_mut().expect("piped");
                let bytes = tokio::fs::read(&up.path).await?;
                check_release(&up.path, &bytes)?;
                // The file may have changed since it was hashed: hash what is sent.
                let sha = hex(&Sha256::digest(&bytes));
                let header = format!("{} {} {}\n", bytes.len(), sha, dir_name(&sha));
                let show = verbose || std::io::IsTerminal::is_terminal(&std::io::stderr());
                let sent = async {
                    stdin.write_all(header.as_bytes()).await?;
                    let mut progress = Progress::new(bytes.len() as u64, show);
                    for chunk in bytes.chunks(UPLOAD_CHUNK) {
                        stdin.write_all(chunk).await?;
                        progress.add(chunk.len() as u64);
                    }
                    stdin.flush().await?;
                    progress.done();
                    Ok::<_, std::io::Error>(())
                }
                .await;
                UPLOADED_BYTES.fetch_add(bytes.len() as u64, std::sync::atomic::Ordering::Relaxed);
                if let Err(e) = sent {
                    tracing::warn!("upload failed: {e}");
                }
                uploaded = true;
            }
            Some(Announce::Install(uname)) => {
                return Err(InstallError::Remote(format!(
                    "the remote ({uname}) asked for the agent again after the upload"
                )))
            }
            None => {
                let status = match tokio::time::timeout(Duration::from_secs(5), child.wait()).await
                {
                    Ok(Ok(st)) => st.to_string(),
                    _ => "still running".into(),
                };
                // Let the stderr reader catch up with the last lines.
                tokio::time::sleep(Duration::from_millis(100)).await;
                return Err(crate::ssh::classify(dest, &tail_text(&tail), &status).into());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NONCE: &str = "0123456789abcdef0123456789abcdef";

    async fn announce(input: &[u8]) -> Result<Option<Announce>, InstallError> {
        let mut r = tokio::io::BufReader::new(input);
        read_announce(&mut r, NONCE).await
    }

    #[tokio::test]
    async fn skips_noise_until_magic() {
        let mut input = b"Welcome!\n\xff\xfe motd\r\n".to_vec();
        input.extend_from_slice(protocol::hello::announcement(Some(NONCE)).as_bytes());
        input.extend_from_slice(b"{\"x\":1}\n");
        let got = announce(&input).await.unwrap();
        assert_eq!(
            got,
            Some(Announce::Agent(Magic::with_nonce(Some(NONCE.into()))))
        );
        // Announcements without this connection's nonce are noise, whatever they claim.
        let got = announce(
            b"PI-BRIDGE-AGENT protocol=1 version=0.1.0\nPI-BRIDGE-AGENT protocol=0 version=0.0.1 nonce=ffffffffffffffff\nPI-BRIDGE-AGENT protocol=two\nPI-BRIDGE-AGENT protocol=1 version=0.1.0 nonce=0123456789abcdef0123456789abcdef\n",
        )
        .await
        .unwrap();
        assert!(matches!(got, Some(Announce::Agent(m)) if m.nonce.as_deref() == Some(NONCE)));
        assert_eq!(
            announce(b"PI-BRIDGE-AGENT protocol=1 version=0.1.0\n")
                .await
                .unwrap(),
            None
        );
        let got = announce(b"noise\nPI-BRIDGE-INSTALL Linux x86_64\n")
            .await
            .unwrap();
        assert_eq!(got, Some(Announce::Install("Linux x86_64".into())));
        assert_eq!(announce(b"only noise\n").await.unwrap(), None);
        let long = vec![b'x'; 200_000];
        assert_eq!(announce(&long).await.unwrap(), None);
    }

    /// A fake agent: noise, this release's announcement with the connection's nonce, then it
    /// swallows its input.
    fn fake() -> String {
        format!(
            "#!/bin/sh\necho noise-from-agent-rc\necho \"{} nonce=$PI_BRIDGE_NONCE\"\necho \"args: $*\" >&2\ncat >/dev/null\n",
            magic()
        )
    }

    fn magic() -> &'static str {
        protocol::hello::MAGIC_LINE.trim_end()
    }

    fn uname() -> String {
        let o = std::process::Command::new("uname")
            .arg("-sm")
            .output()
            .unwrap();
        String::from_utf8(o.stdout).unwrap().trim().to_string()
    }

    struct Run {
        child: std::process::Child,
        out: std::io::BufReader<std::process::ChildStdout>,
    }

    impl Run {
        fn start(home: &Path, script: &str) -> Run {
            Run::start_with(home, script, &std::env::var("PATH").unwrap_or_default())
        }
        fn start_with(home: &Path, script: &str, path: &str) -> Run {
            let mut child = std::process::Command::new("sh")
                .arg("-c")
                .arg(script)
                .env("HOME", home)
                .env("PATH", path)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let out = std::io::BufReader::new(child.stdout.take().unwrap());
            Run { child, out }
        }
        fn line(&mut self) -> String {
            let mut l = String::new();
            std::io::BufRead::read_line(&mut self.out, &mut l).unwrap();
            l.trim_end().to_string()
        }
        fn send(&mut self, b: &[u8]) {
            std::io::Write::write_all(self.child.stdin.as_mut().unwrap(), b).unwrap();
        }
        fn finish(mut self) -> i32 {
            drop(self.child.stdin.take());
            self.child.wait().unwrap().code().unwrap_or(-1)
        }
    }

    fn sha(b: &[u8]) -> String {
        hex(&Sha256::digest(b))
    }

    fn mode(p: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn bootstrap_script_installs_verifies_reuses_and_prunes() {
        let home = tempfile::tempdir().unwrap();
        let base = home.path().join(".cache/pi-bridge/agent");
        let stale = base.join("0.0.9-aaaaaaaaaaaa");
        std::fs::create_dir_all(&stale).unwrap();
        std::fs::write(stale.join(AGENT_NAME), "old").unwrap();
        // Older than the prune grace (PRUNE_MIN_AGE_MIN), and no process runs it: pruned.
        let old = std::time::SystemTime::now() - Duration::from_secs(3600);
        std::fs::File::open(&stale)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let u = uname();
        let fake = fake();
        let bin = fake.as_bytes();
        let dir = dir_name(&sha(bin));
        let script = bootstrap_script(&[(u.clone(), dir.clone(), bin.len() as u64)]);
        assert!(!script.contains('\n'));

        // First run: asks, receives, verifies, installs, prunes, execs.
        let mut r = Run::start(home.path(), &script);
        assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
        r.send(format!("{} {} {dir}\n", bin.len(), sha(bin)).as_bytes());
        r.send(bin);
        assert_eq!(r.line(), "noise-from-agent-rc");
        assert_eq!(r.line(), format!("{} nonce=", magic()));
        assert_eq!(r.finish(), 0);
        let installed = base.join(&dir).join(AGENT_NAME);
        assert_eq!(std::fs::read(&installed).unwrap(), bin);
        assert_eq!(mode(&installed), 0o700);
        assert_eq!(mode(&base.join(&dir)), 0o700);
        assert_eq!(mode(&base), 0o700);
        assert!(!stale.exists(), "old version pruned");
        assert_eq!(
            std::fs::read_dir(base.join(&dir)).unwrap().count(),
            1,
            "no temp file left"
        );

        // Second run: straight to the agent.
        let mut r = Run::start(home.path(), &script);
        assert_eq!(r.line(), "noise-from-agent-rc");
        assert_eq!(r.line(), format!("{} nonce=", magic()));
        assert_eq!(r.finish(), 0);

        // A new build whose bytes arrive corrupted: refused, nothing installed, old kept.
        let bin2 = format!("{fake}# v2\n").into_bytes();
        let dir2 = dir_name(&sha(&bin2));
        let script2 = bootstrap_script(&[(u.clone(), dir2.clone(), bin2.len() as u64)]);
        let mut r = Run::start(home.path(), &script2);
        assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
        let mut bad = bin2.clone();
        bad[3] ^= 1;
        r.send(format!("{} {} {dir2}\n", bad.len(), sha(&bin2)).as_bytes());
        r.send(&bad);
        let l = r.line();
        assert!(l.starts_with("PI-BRIDGE-ERROR sha256 mismatch"), "{l}");
        assert_eq!(r.finish(), 1);
        assert!(!base.join(&dir2).exists());
        assert!(installed.exists());

        // A short upload (connection cut) is a mismatch too.
        let mut r = Run::start(home.path(), &script2);
        r.line();
        r.send(format!("{} {} {dir2}\n", bin2.len(), sha(&bin2)).as_bytes());
        r.send(&bin2[..10]);
        drop(r.child.stdin.take());
        assert!(r.line().starts_with("PI-BRIDGE-ERROR sha256 mismatch"));
        assert!(!base.join(&dir2).exists());

        // Hostile header: refused before anything is written.
        for header in ["1 x ../evil\n", "1 x a/b\n", "-1 x ok\n", "\n"] {
            let mut r = Run::start(home.path(), &script2);
            r.line();
            r.send(header.as_bytes());
            let l = r.line();
            assert!(l.starts_with("PI-BRIDGE-ERROR"), "{header:?}: {l}");
            assert_eq!(r.finish(), 1);
        }
        assert!(!home.path().join(".cache/pi-bridge/evil").exists());
        let visible = std::fs::read_dir(&base)
            .unwrap()
            .filter(|e| {
                !e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .starts_with('.')
            })
            .count();
        assert_eq!(visible, 1, "only the installed version (and the lock file)");
    }

    #[test]
    fn without_flock_a_stale_mkdir_lock_is_broken_and_released() {
        // A PATH with every command of /usr/bin and /bin except flock.
        let home = tempfile::tempdir().unwrap();
        let bin_dir = home.path().join("noflock");
        std::fs::create_dir(&bin_dir).unwrap();
        for d in ["/usr/bin", "/bin"] {
            for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
                let name = e.file_name();
                if name != "flock" && !bin_dir.join(&name).exists() {
                    let _ = std::os::unix::fs::symlink(e.path(), bin_dir.join(&name));
                }
            }
        }
        let base = home.path().join(".cache/pi-bridge/agent");
        std::fs::create_dir_all(base.join(".lock.d")).unwrap();
        // The holder is gone (pids this high are never reached here): the lock is stale.
        std::fs::write(base.join(".lock.d/pid"), "4194304999").unwrap();
        let u = uname();
        let fake = fake();
        let bin = fake.as_bytes();
        let dir = dir_name(&sha(bin));
        let script = bootstrap_script(&[(u.clone(), dir.clone(), bin.len() as u64)]);
        let mut r = Run::start_with(home.path(), &script, bin_dir.to_str().unwrap());
        assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
        r.send(format!("{} {} {dir}\n", bin.len(), sha(bin)).as_bytes());
        r.send(bin);
        assert_eq!(r.line(), "noise-from-agent-rc");
        assert_eq!(r.finish(), 0);
        assert!(base.join(&dir).join(AGENT_NAME).exists());
        assert!(!base.join(".lock.d").exists(), "mkdir lock not released");
        assert!(
            !base.join(".lock").exists(),
            "flock was used although hidden"
        );
    }

    #[test]
    fn hash_cache_follows_content_changes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("agent");
        let cache = d.path().join("cache/agent-hashes");
        std::fs::write(&f, "one").unwrap();
        let (a, n) = cached_sha256_in(&f, &cache).unwrap();
        assert_eq!((a.as_str(), n), (sha(b"one").as_str(), 3));
        assert!(std::fs::read_to_string(&cache).unwrap().starts_with(&a));
        assert_eq!(cached_sha256_in(&f, &cache).unwrap().0, a);
        // A rebuilt file (new size/mtime/inode) is hashed again.
        std::fs::remove_file(&f).unwrap();
        std::fs::write(&f, "two!").unwrap();
        assert_eq!(cached_sha256_in(&f, &cache).unwrap().0, sha(b"two!"));
        assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 1);
    }

    #[test]
    fn elf_headers() {
        let d = tempfile::tempdir().unwrap();
        let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1];
        h.resize(18, 0);
        h.extend_from_slice(&62u16.to_le_bytes());
        std::fs::write(d.path().join("x86"), &h).unwrap();
        assert_eq!(elf_machine(&d.path().join("x86")), Some(62));
        std::fs::write(d.path().join("sh"), fake()).unwrap();
        assert_eq!(elf_machine(&d.path().join("sh")), None);
        assert_eq!(elf_machine(&d.path().join("missing")), None);
        let (found, looked) = find_agent("aarch64", 183, Some(&d.path().join("x86")));
        assert!(found.is_none() || found.as_deref() != Some(&d.path().join("x86")));
        assert!(looked[0].contains("ELF machine 62"), "{looked:?}");
        assert_eq!(
            find_agent("x86_64", 62, Some(&d.path().join("x86"))).0,
            Some(d.path().join("x86"))
        );
        assert_eq!(arch_of("Linux x86_64").unwrap().0, "x86_64");
        assert_eq!(arch_of("Linux arm64").unwrap().0, "aarch64");
        assert!(matches!(
            arch_of("Darwin arm64"),
            Err(InstallError::UnsupportedRemote(_))
        ));
        assert!(matches!(
            arch_of("Linux riscv64"),
            Err(InstallError::UnsupportedRemote(_))
        ));
    }

    #[cfg(target_os = "linux")]
    fn sh_child(home: &Path, script: &str) -> Child {
        tokio::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .env(protocol::hello::NONCE_ENV, NONCE)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn pii_uploads_through_the_bootstrap() {
        let home = tempfile::tempdir().unwrap();
        let bin = home.path().join("fake-agent");
        std::fs::write(&bin, fake()).unwrap();
        let (sha, size) = sha256_file(&bin).unwrap();
        let u = uname();
        let known = vec![Upload {
            uname: u.clone(),
            path: bin.clone(),
            sha: sha.clone(),
            size,
        }];
        let script = bootstrap_script(&[(u, dir_name(&sha), size)]);
        let (mut child, _reader, _tail) = bootstrap(
            sh_child(home.path(), &script),
            &known,
            None,
            "test",
            false,
            NONCE,
        )
        .await
        .unwrap();
        let installed = home
            .path()
            .join(".cache/pi-bridge/agent")
            .join(dir_name(&sha))
            .join(AGENT_NAME);
        assert_eq!(std::fs::read(&installed).unwrap(), fake().as_bytes());
        drop(child.stdin.take());
        assert!(child.wait().await.unwrap().success());
        // Second time: no upload needed (an empty table would still find it).
        let (mut child, _r, _t) = bootstrap(
            sh_child(home.path(), &bootstrap_script(&[])),
            &[],
            None,
            "test",
            false,
            NONCE,
        )
        .await
        .unwrap();
        drop(child.stdin.take());
        child.wait().await.unwrap();
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn no_binary_for_the_arch_says_how_to_build_one() {
        let home = tempfile::tempdir().unwrap();
        let e = match bootstrap(
            sh_child(home.path(), &bootstrap_script(&[])),
            &[],
            Some(Path::new("/nonexistent/agent")),
            "test",
            false,
            NONCE,
        )
        .await
        {
            Err(e) => e.to_string(),
            Ok(_) => panic!("no agent to upload, yet connected"),
        };
        assert!(
            e.contains("cargo build --release -p pi-bridge-agent --target"),
            "{e}"
        );
        assert!(e.contains("/nonexistent/agent (missing)"), "{e}");
    }

    #[tokio::test]
    async fn mismatch_names_both_versions() {
        let e = announce(
            b"PI-BRIDGE-AGENT protocol=9 version=9.9.9 nonce=0123456789abcdef0123456789abcdef\n",
        )
        .await
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("9.9.9")
                && e.contains("protocol 9")
                && e.contains(&format!("protocol {}", protocol::PROTOCOL_VERSION)),
            "{e}"
        );
        let e = announce(b"PI-BRIDGE-AGENT protocol=two nonce=0123456789abcdef0123456789abcdef\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse"), "{e}");
        let e = announce(b"PI-BRIDGE-ERROR sha256 mismatch\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
        // The same protocol but another release: refused as well.
        let e = announce(
            b"PI-BRIDGE-AGENT protocol=1 version=0.0.1-old nonce=0123456789abcdef0123456789abcdef\n",
        )
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("0.0.1-old") && e.contains(protocol::VERSION),
            "{e}"
        );
    }

    #[cfg(target_os = "linux")]
    #[tokio::test]
    async fn an_agent_of_another_release_is_never_uploaded() {
        let home = tempfile::tempdir().unwrap();
        let u = uname();
        for (name, body) in [
            (
                "old-agent",
                fake().replace(protocol::VERSION, "0.0.1-old").into_bytes(),
            ),
            ("not-an-agent", b"#!/bin/sh\necho hi\n".to_vec()),
        ] {
            let bin = home.path().join(name);
            std::fs::write(&bin, &body).unwrap();
            let (sha, size) = sha256_file(&bin).unwrap();
            let known = vec![Upload {
                uname: u.clone(),
                path: bin.clone(),
                sha: sha.clone(),
                size,
            }];
            let script = bootstrap_script(&[(u.clone(), dir_name(&sha), size)]);
            let e = match bootstrap(
                sh_child(home.path(), &script),
                &known,
                None,
                "test",
                false,
                NONCE,
            )
            .await
            {
                Err(e) => e.to_string(),
                Ok(_) => panic!("{name} was uploaded and answered"),
            };
            assert!(e.contains(&bin.display().to_string()), "{e}");
            assert!(e.contains("not uploaded"), "{e}");
            assert!(
                !home
                    .path()
                    .join(".cache/pi-bridge/agent")
                    .join(dir_name(&sha))
                    .join(AGENT_NAME)
                    .exists(),
                "{name} installed"
            );
        }
    }

    #[test]
    fn npm_agents_package_is_found_the_way_node_resolves_it() {
        let d = tempfile::tempdir().unwrap();
        let mk = |p: &str| {
            let p = d.path().join(p);
            std::fs::create_dir_all(&p).unwrap();
            p
        };
        // npm -g: pi-bridge/node_modules/@pi-bridge/{linux-x64,agents}.
        let nm = "lib/node_modules/pi-bridge/node_modules";
        let bin = mk(&format!("{nm}/@pi-bridge/linux-x64/bin"));
        assert_eq!(npm_agents_dir_from(&bin.join("pii")), None);
        let agents = mk(&format!("{nm}/{NPM_AGENTS}"));
        assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(agents.clone()));
        // A copy nested under the platform package is nearer, so it wins (as in Node).
        let nested = mk(&format!(
            "{nm}/@pi-bridge/linux-x64/node_modules/{NPM_AGENTS}"
        ));
        assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(nested));
        // pnpm: the dependency sits beside the package in .pnpm/<pkg>/node_modules.
        let pn = "proj/node_modules/.pnpm/@pi-bridge+linux-x64@1.0.0/node_modules";
        let bin = mk(&format!("{pn}/@pi-bridge/linux-x64/bin"));
        let agents = mk(&format!("{pn}/{NPM_AGENTS}"));
        assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(agents));
        // A `node_modules/node_modules` is never looked at.
        let odd = mk("x/node_modules/bin");
        mk(&format!("x/node_modules/node_modules/{NPM_AGENTS}"));
        assert_eq!(npm_agents_dir_from(&odd.join("pii")), None);
    }
}
