//! Finding the agent binaries pii can upload (next to pii, the npm package, the data directory)
//! and what they are: architecture, release, sha256, versioned directory name.

use super::InstallError;
use protocol::secret::hex;
use protocol::Magic;
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};

pub const AGENT_NAME: &str = "pi-bridge-agent";

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

pub(crate) fn npm_agents_dir_from(exe: &Path) -> Option<PathBuf> {
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
pub(crate) fn check_release(path: &Path, bytes: &[u8]) -> Result<(), InstallError> {
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

pub(crate) fn cached_sha256_in(path: &Path, cache: &Path) -> std::io::Result<(String, u64)> {
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

/// The versioned directory name of an agent build: `<version>-<first 12 hex of sha256>`.
pub fn dir_name(sha: &str) -> String {
    format!("{}-{}", protocol::VERSION, &sha[..12.min(sha.len())])
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
