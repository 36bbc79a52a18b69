//! Processes: `proc.spawn` (a subscription streaming [`ProcEvent`]s), `proc.run` (spawnSync),
//! `proc.stdin`, `proc.kill`, and the table of everything this agent started.
//!
//! Every process leads its own process group (`process_group(0)`), runs in a cwd inside the
//! sandbox, with the login environment plus the caller's `env` minus `unset`, and a program name
//! without `/` is looked up in the LOGIN PATH. Output is read in chunks of at most
//! [`CHUNK`] bytes and only read again once the previous chunk was handed on, so a process
//! writing gigabytes blocks on its pipe instead of growing the agent's memory. `exit` comes
//! after both pipes reached EOF and the process was reaped, and after every change the process
//! made to the project was handed on as `fs.changed` (`changes`). Processes outlive their
//! subscription; they end when killed or when the agent exits ([`Procs::kill_all`]).

pub(crate) mod table;

use crate::agent::{Agent, Session, Table};
use crate::rpc::{Events, Failure, Host};
use crate::sandbox::Follow;
use protocol::methods::*;
use protocol::proc::*;
use protocol::{Bytes, Empty, Errno};
use std::os::unix::process::ExitStatusExt;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::Duration;
use table::{Entry, KILL_GRACE};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::process::Child;

/// The most bytes one `stdout`/`stderr` event carries.
pub const CHUNK: usize = 64 * 1024;
pub fn register_all(t: &mut Table) {
    t.method::<Run, _, _>(run);
    t.method::<Stdin, _, _>(stdin);
    t.method::<Kill, _, _>(|agent: Arc<Agent>, p| async move { kill(&agent, p) });
}

const SIGNALS: &[(&str, i32)] = &[
    ("SIGHUP", libc::SIGHUP),
    ("SIGINT", libc::SIGINT),
    ("SIGQUIT", libc::SIGQUIT),
    ("SIGILL", libc::SIGILL),
    ("SIGTRAP", libc::SIGTRAP),
    ("SIGABRT", libc::SIGABRT),
    ("SIGIOT", libc::SIGIOT),
    ("SIGBUS", libc::SIGBUS),
    ("SIGFPE", libc::SIGFPE),
    ("SIGKILL", libc::SIGKILL),
    ("SIGUSR1", libc::SIGUSR1),
    ("SIGSEGV", libc::SIGSEGV),
    ("SIGUSR2", libc::SIGUSR2),
    ("SIGPIPE", libc::SIGPIPE),
    ("SIGALRM", libc::SIGALRM),
    ("SIGTERM", libc::SIGTERM),
    ("SIGCHLD", libc::SIGCHLD),
    ("SIGCONT", libc::SIGCONT),
    ("SIGSTOP", libc::SIGSTOP),
    ("SIGTSTP", libc::SIGTSTP),
    ("SIGTTIN", libc::SIGTTIN),
    ("SIGTTOU", libc::SIGTTOU),
    ("SIGURG", libc::SIGURG),
    ("SIGXCPU", libc::SIGXCPU),
    ("SIGXFSZ", libc::SIGXFSZ),
    ("SIGVTALRM", libc::SIGVTALRM),
    ("SIGPROF", libc::SIGPROF),
    ("SIGWINCH", libc::SIGWINCH),
    ("SIGIO", libc::SIGIO),
    ("SIGPOLL", libc::SIGPOLL),
    ("SIGPWR", libc::SIGPWR),
    ("SIGSYS", libc::SIGSYS),
];

/// `SIGTERM`, `TERM`, `15` → 15.
pub fn parse_signal(s: &str) -> Option<i32> {
    if let Ok(n) = s.parse::<i32>() {
        return (0..=64).contains(&n).then_some(n);
    }
    let upper = s.to_ascii_uppercase();
    let name = if upper.starts_with("SIG") {
        upper
    } else {
        format!("SIG{upper}")
    };
    SIGNALS.iter().find(|(n, _)| *n == name).map(|(_, v)| *v)
}

/// Node's name for a signal number (the number as text if it has none).
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|(name, v)| *v == n && *name != "SIGIOT" && *name != "SIGPOLL")
        .map(|(name, _)| name.to_string())
        .unwrap_or_else(|| n.to_string())
}

fn exit_event(status: Option<ExitStatus>) -> (Option<i32>, Option<String>) {
    match status {
        Some(s) => match (s.code(), s.signal()) {
            (Some(c), _) => (Some(c), None),
            (None, Some(sig)) => (None, Some(signal_name(sig))),
            (None, None) => (Some(-1), None),
        },
        None => (Some(-1), None),
    }
}

struct Started {
    child: Child,
    pid: i32,
}

/// Resolve cwd and program, build the environment, spawn, and enter the process in the table.
fn start(
    agent: &Agent,
    session: &Session,
    p: &SpawnParams,
    pipe_stdin: bool,
) -> Result<Started, Errno> {
    let syscall = format!("spawn {}", p.file);
    let fail = |code: &str| Errno::new(code, &syscall, Some(&p.file));
    let cwd = session
        .sandbox
        .resolve(&p.cwd, Follow::All, &syscall)
        .map_err(|e| {
            let detail = format!(
                "cwd '{}': {}",
                p.cwd,
                e.detail
                    .clone()
                    .unwrap_or_else(|| protocol::error::describe(&e.code).into())
            );
            fail(&e.code).with_detail(detail)
        })?;
    if !cwd.is_dir() {
        return Err(fail("ENOENT").with_detail(format!("cwd '{}' is not a directory", p.cwd)));
    }
    if p.file.is_empty() || p.file.contains('\0') {
        return Err(fail("EINVAL"));
    }
    let program: PathBuf = if p.file.contains('/') {
        PathBuf::from(&p.file)
    } else {
        session.login.which(&p.file).ok_or_else(|| fail("ENOENT"))?
    };
    let mut cmd = tokio::process::Command::new(&program);
    cmd.arg0(p.argv0.as_deref().unwrap_or(&p.file))
        .args(&p.args)
        .current_dir(&cwd)
        .env_clear()
        .envs(session.login.vars.iter().map(|(k, v)| (k, v)))
        .envs(&p.env)
        .stdin(if p.stdin || pipe_stdin {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(if p.stdout {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stderr(if p.stderr {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .process_group(0);
    for name in &p.unset {
        cmd.env_remove(name);
    }
    let mut child = cmd
        .spawn()
        .map_err(|e| Errno::from_io(&e, &syscall, Some(&p.file)))?;
    let pid = child.id().map(|id| id as i32).unwrap_or(0);
    let stdin = child
        .stdin
        .take()
        .map(|s| Arc::new(tokio::sync::Mutex::new(Some(s))));
    agent.procs.lock().insert(
        pid,
        Entry {
            stdin,
            exited: false,
        },
    );
    Ok(Started { child, pid })
}

/// Read once from an optional pipe: `Some(n)` bytes, `None` at EOF/error (then the pipe is
/// dropped). Pends forever on an absent pipe (the select arm is disabled anyway).
async fn read_some<R: AsyncRead + Unpin>(pipe: &mut Option<R>, buf: &mut [u8]) -> Option<usize> {
    match pipe {
        Some(r) => match r.read(buf).await {
            Ok(0) | Err(_) => None,
            Ok(n) => Some(n),
        },
        None => std::future::pending().await,
    }
}

/// `proc.spawn`: events until `exit` (or one `error`).
pub async fn spawn_subscription(
    agent: Arc<Agent>,
    session: Arc<Session>,
    p: SpawnParams,
    events: Events<Spawn>,
) {
    let Started { mut child, pid } = match start(&agent, &session, &p, false) {
        Ok(s) => s,
        Err(error) => {
            events.send(&ProcEvent::Error { error }).await;
            return;
        }
    };
    let mut live = events.send(&ProcEvent::Spawned { pid }).await;
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let (mut bo, mut be) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let mut status: Option<Option<ExitStatus>> = None;
    while out.is_some() || err.is_some() || status.is_none() {
        tokio::select! {
            r = read_some(&mut out, &mut bo), if out.is_some() => match r {
                Some(n) => if live {
                    live = events.send(&ProcEvent::Stdout { data: Bytes(bo[..n].to_vec()) }).await;
                },
                None => out = None,
            },
            r = read_some(&mut err, &mut be), if err.is_some() => match r {
                Some(n) => if live {
                    live = events.send(&ProcEvent::Stderr { data: Bytes(be[..n].to_vec()) }).await;
                },
                None => err = None,
            },
            s = child.wait(), if status.is_none() => status = Some(s.ok()),
        }
    }
    agent.procs.exited(pid);
    let (code, signal) = exit_event(status.flatten());
    // The barrier: every change the process made is on its way before its exit.
    session.changes.flush().await;
    if live {
        events.send(&ProcEvent::Exit { code, signal }).await;
    }
}

/// `proc.stdin`: write (and/or close) a spawned process's stdin.
async fn stdin(agent: Arc<Agent>, p: StdinParams) -> Result<Empty, Failure> {
    let handle = {
        let map = agent.procs.lock();
        match map.get(&p.pid) {
            None => {
                return Err(Errno::new("ESRCH", "write", None)
                    .with_detail(format!("no process {} of this agent", p.pid))
                    .into())
            }
            Some(e) => e.stdin.clone(),
        }
    };
    let Some(handle) = handle else {
        return Err(Errno::new("EPIPE", "write", None)
            .with_detail("stdin is not a pipe or was closed")
            .into());
    };
    let mut guard = handle.lock().await;
    let Some(w) = guard.as_mut() else {
        if p.data.0.is_empty() && p.eof {
            return Ok(Empty);
        }
        return Err(Errno::new("EPIPE", "write", None)
            .with_detail("stdin was closed")
            .into());
    };
    if !p.data.0.is_empty() {
        let res = async {
            w.write_all(&p.data.0).await?;
            w.flush().await
        }
        .await;
        if let Err(e) = res {
            guard.take();
            return Err(Errno::from_io(&e, "write", None).into());
        }
    }
    if p.eof {
        if let Some(mut w) = guard.take() {
            let _ = w.shutdown().await;
        }
    }
    Ok(Empty)
}

/// `proc.kill`: only pids this agent spawned; `group` signals the whole process group.
fn kill(agent: &Agent, p: KillParams) -> Result<bool, Failure> {
    let sig = parse_signal(&p.signal).ok_or_else(|| {
        Errno::new("EINVAL", "kill", None).with_detail(format!("unknown signal '{}'", p.signal))
    })?;
    let known = agent.procs.lock().get(&p.pid).map(|e| e.exited);
    match known {
        None => {
            return Err(Errno::new("ESRCH", "kill", None)
                .with_detail(format!("process {} was not started by this agent", p.pid))
                .into())
        }
        Some(true) if !p.group => return Err(Errno::new("ESRCH", "kill", None).into()),
        _ => {}
    }
    // SAFETY: plain signal to a pid/group this agent started. (Raw libc: the client may name any
    // signal number 0..=64, real-time ones included, which rustix's Signal cannot carry.)
    let rc = unsafe {
        if p.group {
            libc::killpg(p.pid, sig)
        } else {
            libc::kill(p.pid, sig)
        }
    };
    if rc != 0 {
        return Err(Errno::from_io(&std::io::Error::last_os_error(), "kill", None).into());
    }
    Ok(true)
}

/// `proc.run`: spawnSync.
async fn run(agent: Arc<Agent>, p: RunParams) -> Result<RunResult, Failure> {
    let session = agent.session()?;
    let mut result = RunResult {
        pid: 0,
        stdout: Bytes::default(),
        stderr: Bytes::default(),
        code: None,
        signal: None,
        error: None,
        timed_out: false,
        max_buffer_exceeded: false,
    };
    let kill_sig = parse_signal(&p.kill_signal).ok_or_else(|| {
        Failure::Code(
            protocol::ErrorCode::InvalidParams,
            format!("unknown signal '{}'", p.kill_signal),
        )
    })?;
    let Started { mut child, pid } = match start(&agent, &session, &p.spawn, p.input.is_some()) {
        Ok(s) => s,
        Err(e) => {
            result.error = Some(e);
            return Ok(result);
        }
    };
    result.pid = pid;
    // spawnSync: stdin gets `input` (or nothing) and is closed.
    let handle = agent
        .procs
        .lock()
        .get_mut(&pid)
        .and_then(|e| e.stdin.take());
    if let Some(handle) = handle {
        let input = p.input.map(|b| b.0).unwrap_or_default();
        tokio::spawn(async move {
            if let Some(mut w) = handle.lock().await.take() {
                let _ = w.write_all(&input).await;
                let _ = w.shutdown().await;
            }
        });
    }
    let max = p.max_buffer.map(|m| m as usize).unwrap_or(usize::MAX);
    let mut out = child.stdout.take();
    let mut err = child.stderr.take();
    let (mut bo, mut be) = (vec![0u8; CHUNK], vec![0u8; CHUNK]);
    let (mut so, mut se) = (Vec::new(), Vec::new());
    let mut status: Option<Option<ExitStatus>> = None;
    let far = tokio::time::Instant::now() + Duration::from_secs(365 * 24 * 3600);
    let deadline = p
        .timeout_ms
        .filter(|&t| t > 0)
        .map(|t| tokio::time::Instant::now() + Duration::from_millis(t));
    let timer = tokio::time::sleep_until(deadline.unwrap_or(far));
    tokio::pin!(timer);
    // After a kill: SIGKILL the group if it lingers, and stop waiting for pipes held open by
    // stray descendants.
    let mut hard_stop: Option<tokio::time::Instant> = None;
    let hard = tokio::time::sleep_until(far);
    tokio::pin!(hard);
    let send_kill = |sig: i32| {
        // SAFETY: signal to the group this call started (`kill_signal` may be any number, as
        // above, so raw libc).
        unsafe { libc::killpg(pid, sig) };
    };
    while out.is_some() || err.is_some() || status.is_none() {
        tokio::select! {
            r = read_some(&mut out, &mut bo), if out.is_some() => match r {
                Some(n) => {
                    so.extend_from_slice(&bo[..n]);
                    if so.len() > max && !result.max_buffer_exceeded {
                        so.truncate(max);
                        result.max_buffer_exceeded = true;
                        send_kill(kill_sig);
                    }
                    if result.max_buffer_exceeded { so.truncate(max); }
                }
                None => out = None,
            },
            r = read_some(&mut err, &mut be), if err.is_some() => match r {
                Some(n) => {
                    se.extend_from_slice(&be[..n]);
                    if se.len() > max && !result.max_buffer_exceeded {
                        result.max_buffer_exceeded = true;
                        send_kill(kill_sig);
                    }
                    if result.max_buffer_exceeded { se.truncate(max); }
                }
                None => err = None,
            },
            s = child.wait(), if status.is_none() => status = Some(s.ok()),
            _ = &mut timer, if deadline.is_some() && !result.timed_out => {
                result.timed_out = true;
                send_kill(kill_sig);
            },
            _ = &mut hard, if hard_stop.is_some() => {
                send_kill(libc::SIGKILL);
                if status.is_some() { break; }
                hard.as_mut().reset(tokio::time::Instant::now() + Duration::from_millis(200));
            },
        }
        if (result.timed_out || result.max_buffer_exceeded) && hard_stop.is_none() {
            let at = tokio::time::Instant::now() + KILL_GRACE;
            hard_stop = Some(at);
            hard.as_mut().reset(at);
        }
    }
    agent.procs.exited(pid);
    let (code, signal) = exit_event(status.flatten());
    result.code = code;
    result.signal = signal;
    result.stdout = Bytes(so);
    result.stderr = Bytes(se);
    // The barrier, as for `exit` in `spawn_subscription`.
    session.changes.flush().await;
    Ok(result)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_parse_and_name() {
        assert_eq!(parse_signal("SIGTERM"), Some(libc::SIGTERM));
        assert_eq!(parse_signal("KILL"), Some(libc::SIGKILL));
        assert_eq!(parse_signal("9"), Some(9));
        assert_eq!(parse_signal("0"), Some(0));
        assert_eq!(parse_signal("SIGNOPE"), None);
        assert_eq!(parse_signal("-3"), None);
        assert_eq!(signal_name(libc::SIGKILL), "SIGKILL");
        assert_eq!(signal_name(libc::SIGABRT), "SIGABRT");
        assert_eq!(signal_name(libc::SIGIO), "SIGIO");
        assert_eq!(signal_name(99), "99");
    }
}
