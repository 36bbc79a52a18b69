//! The first words of a started bootstrap or agent: the announcement (or the install request,
//! or the bootstrap's error) after any login noise, and the tail of its stderr.

use super::InstallError;
use protocol::Magic;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, BufReader};
use tokio::process::ChildStderr;

/// What the remote bootstrap prints when it needs the agent binary.
pub const INSTALL_PREFIX: &str = "PI-BRIDGE-INSTALL";
/// What the bootstrap prints when it fails (followed by a reason).
pub const ERROR_PREFIX: &str = "PI-BRIDGE-ERROR";
/// The longest pre-magic line kept (MOTD noise beyond it is skipped in pieces).
const MAX_NOISE_LINE: usize = 64 * 1024;

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
