//! Installing and starting the agent over ssh (ARCHITECTURE.md §2): the remote bootstrap
//! script, the upload, and reconnecting the same way. Finding the binaries is [`agents`]; reading
//! what the remote says first is [`announce`].

mod agents;
mod announce;

pub use agents::*;
pub use announce::*;

use crate::session::Activity;
use crate::ssh::{SshError, SshOptions};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdout};

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

/// What a started connection gives: the child (ssh or agent), its stdout after the
/// announcement, and the tail of its stderr.
pub type Connected = (Child, BufReader<Activity<ChildStdout>>, Tail);

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
/// Failures print `PI-BRIDGE-ERROR <why>` and exit 1. The script is `bootstrap.sh` (checked by
/// shellcheck in `scripts/lint.sh`), sent as one line after the values it needs (`v`, `age`,
/// `known`; see its header).
pub fn bootstrap_script(known: &[(String, String, u64)]) -> String {
    let mut cases = String::new();
    for (uname, dir, size) in known {
        cases.push_str(&format!(
            "{}) d={dir}; sz={size};; ",
            crate::ssh::sh_quote(uname)
        ));
    }
    format!(
        "v={}; age={}; known() {{ case \"$1\" in {cases}*) ;; esac; }}; {}",
        crate::ssh::sh_quote(protocol::VERSION),
        PRUNE_MIN_AGE_MIN,
        one_line(BOOTSTRAP)
    )
}

/// The bootstrap, as written (a multi-line POSIX sh file).
const BOOTSTRAP: &str = include_str!("bootstrap.sh");

/// A script whose every line (with its `\`-continuations) is one complete command, as one line:
/// comment and blank lines dropped, continuations joined with a space, lines with "; ".
fn one_line(script: &str) -> String {
    let mut commands: Vec<String> = Vec::new();
    let mut open = false;
    for line in script.lines() {
        let t = line.trim();
        if !open && (t.is_empty() || t.starts_with('#')) {
            continue;
        }
        let (text, more) = match t.strip_suffix('\\') {
            Some(head) => (head.trim_end(), true),
            None => (t, false),
        };
        match commands.last_mut() {
            Some(last) if open => {
                last.push(' ');
                last.push_str(text);
            }
            _ => commands.push(text.to_string()),
        }
        open = more;
    }
    commands.join("; ")
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

/// Run ssh with the bootstrap, install the agent if asked, and return the link positioned
/// after the agent's magic line. `preset`: the keys of `ssh::DEFAULTS` the user's config sets,
/// if already known (else one `ssh -G` asks).
pub async fn connect_ssh(
    opts: &SshOptions,
    dest: &str,
    agent: Option<&Path>,
    verbose: bool,
    preset: Option<&[String]>,
) -> Result<Connected, InstallError> {
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
    let preset = match preset {
        Some(p) => p.to_vec(),
        None => crate::ssh::preset_keys(opts, dest).await,
    };
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
) -> Result<Connected, InstallError> {
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
                let sha = protocol::secret::hex(&Sha256::digest(&bytes));
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

/// Opens new links for a session whose ssh died (see `session::Reconnect`): the same ssh
/// command line as the first connection, with `BatchMode=yes` first (ssh keeps the first value of
/// an option), so a reconnect never asks for a password, passphrase or host key on the terminal
/// while pi's TUI owns it: it fails and is retried instead. ssh's stdin is the agent pipe, never
/// the terminal.
///
/// A reconnect never goes through pii's own master (`crate::master`): the dead link may be the
/// master's connection, which ssh notices only after ServerAlive's 90 s. The first attempt tells
/// that master to stop taking sessions (`ssh -O stop`: its socket goes, it exits after its last
/// session), then every attempt connects directly; the next `pii` starts a fresh master.
pub struct SshReconnect {
    opts: SshOptions,
    dest: String,
    agent: Option<PathBuf>,
    /// pii's master socket, to stop before the first attempt (taken then).
    master: std::sync::Mutex<Option<PathBuf>>,
}

impl SshReconnect {
    /// `opts`: the user's options (without pii's master options).
    pub fn new(
        opts: &SshOptions,
        dest: &str,
        agent: Option<PathBuf>,
        master: Option<PathBuf>,
    ) -> Self {
        let mut opts = opts.clone();
        opts.options.insert(0, "BatchMode=yes".into());
        SshReconnect {
            opts,
            dest: dest.to_string(),
            agent,
            master: std::sync::Mutex::new(master),
        }
    }

    /// The options a reconnect runs ssh with.
    #[cfg(test)]
    pub fn options(&self) -> &SshOptions {
        &self.opts
    }
}

impl crate::session::Reconnect for SshReconnect {
    fn connect(
        &self,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<crate::session::Link, String>> + Send + '_>,
    > {
        Box::pin(async move {
            let stop = self.master.lock().unwrap_or_else(|e| e.into_inner()).take();
            if let Some(socket) = stop {
                crate::master::stop(&socket, &self.dest).await;
            }
            let (mut child, reader, _tail) =
                connect_ssh(&self.opts, &self.dest, self.agent.as_deref(), false, None)
                    .await
                    .map_err(|e| e.to_string())?;
            let stdin = child.stdin.take().ok_or("ssh has no stdin pipe")?;
            let activity = reader.get_ref().counter();
            Ok(crate::session::Link {
                reader: Box::new(reader),
                writer: Box::new(stdin),
                activity: Some(activity),
                child: Some(child),
            })
        })
    }
}

#[cfg(test)]
mod tests;
