//! Finding the agent binary, the remote bootstrap script, and the upload (ARCHITECTURE.md §2).

use protocol::Magic;
use std::path::{Path, PathBuf};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt};

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
    #[error("the agent's output ended before it announced itself{}", tail_note(.0))]
    NoMagic(String),
    #[error("reading from the agent failed: {0}")]
    Io(#[from] std::io::Error),
    #[error("the remote bootstrap failed: {0}")]
    Remote(String),
    #[error("no pi-bridge-agent binary found{}. Pass one with --agent PATH, or put it next to pii", for_what(.0))]
    AgentNotFound(Option<String>),
    #[error("no pi-bridge-agent binary for the remote ({uname}, needs {need}). Looked at: {looked}. Build one with `cargo build --release -p pi-bridge-agent --target {target}` and pass it with --agent target/{target}/release/pi-bridge-agent, or copy it to ~/.local/share/pi-bridge/agents/{target}/pi-bridge-agent")]
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
}

fn tail_note(tail: &str) -> String {
    if tail.trim().is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.trim_end())
    }
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

/// Read lines until the magic line or an install request; noise before it is skipped (and
/// logged). A protocol mismatch is an error naming both versions. `Ok(None)` at end of stream.
pub async fn read_announce<R: AsyncBufRead + Unpin>(
    reader: &mut R,
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
        if line.starts_with(protocol::hello::MAGIC_PREFIX) {
            return Err(InstallError::VersionMismatch(format!(
                "the agent announced itself as {line:?}, which pii {} (protocol {}) cannot parse",
                protocol::VERSION,
                protocol::PROTOCOL_VERSION
            )));
        }
        tracing::debug!("skipping pre-agent output: {line:.200}");
    }
}

/// The local agent for `--local`: `--agent`, else `pi-bridge-agent` next to pii.
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
    sibling_agent().ok_or(InstallError::AgentNotFound(None))
}

/// `pi-bridge-agent` in the directory of the running pii.
pub fn sibling_agent() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    let p = exe.parent()?.join(AGENT_NAME);
    p.is_file().then_some(p)
}

/// The link a connection gives: the child (ssh or agent), its stdout after the announcement,
/// and the tail of its stderr.
pub type Link = (
    tokio::process::Child,
    tokio::io::BufReader<crate::session::Activity<tokio::process::ChildStdout>>,
    std::sync::Arc<std::sync::Mutex<std::collections::VecDeque<String>>>,
);

/// Connect over ssh (not yet implemented).
pub async fn connect_ssh(
    _opts: &crate::ssh::SshOptions,
    _dest: &str,
    _agent: Option<&Path>,
    _verbose: bool,
) -> Result<Link, crate::ssh::SshError> {
    Err(crate::ssh::SshError::Spawn(
        "--ssh is not implemented yet".into(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn announce(input: &[u8]) -> Result<Option<Announce>, InstallError> {
        let mut r = tokio::io::BufReader::new(input);
        read_announce(&mut r).await
    }

    #[tokio::test]
    async fn skips_noise_until_magic() {
        let got = announce(
            b"Welcome!\n\xff\xfe motd\r\nPI-BRIDGE-AGENT protocol=1 version=0.1.0\n{\"x\":1}\n",
        )
        .await
        .unwrap();
        assert_eq!(
            got,
            Some(Announce::Agent(Magic {
                protocol: 1,
                version: "0.1.0".into()
            }))
        );
        let got = announce(b"noise\nPI-BRIDGE-INSTALL Linux x86_64\n")
            .await
            .unwrap();
        assert_eq!(got, Some(Announce::Install("Linux x86_64".into())));
        assert_eq!(announce(b"only noise\n").await.unwrap(), None);
        let long = vec![b'x'; 200_000];
        assert_eq!(announce(&long).await.unwrap(), None);
    }

    #[tokio::test]
    async fn mismatch_names_both_versions() {
        let e = announce(b"PI-BRIDGE-AGENT protocol=9 version=9.9.9\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("9.9.9")
                && e.contains("protocol 9")
                && e.contains(&format!("protocol {}", protocol::PROTOCOL_VERSION)),
            "{e}"
        );
        let e = announce(b"PI-BRIDGE-AGENT protocol=two\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("cannot parse"), "{e}");
        let e = announce(b"PI-BRIDGE-ERROR sha256 mismatch\n")
            .await
            .unwrap_err()
            .to_string();
        assert!(e.contains("sha256 mismatch"), "{e}");
    }
}
