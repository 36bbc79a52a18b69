//! Every process group the session started ([`Procs`]), and ending them.

use rustix::process::{Pid, Signal};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::process::ChildStdin;

/// How long the agent waits after SIGTERM before SIGKILL when it exits.
pub(crate) const KILL_GRACE: Duration = Duration::from_secs(2);

pub(crate) type StdinHandle = Arc<tokio::sync::Mutex<Option<ChildStdin>>>;

pub(crate) struct Entry {
    pub(crate) stdin: Option<StdinHandle>,
    /// The leader was reaped; its group may live on.
    pub(crate) exited: bool,
}

/// Every process (group) this agent started, by pid.
#[derive(Default)]
pub struct Procs {
    pub(crate) map: Mutex<HashMap<i32, Entry>>,
}

impl Procs {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<i32, Entry>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn exited(&self, pid: i32) {
        let mut map = self.lock();
        if let Some(e) = map.get_mut(&pid) {
            e.exited = true;
            e.stdin = None;
        }
        // Forget the group once it is empty, so a reused pid is never signalled.
        if !group_exists(pid) {
            map.remove(&pid);
        }
    }

    /// SIGTERM every group, SIGKILL what is left after [`KILL_GRACE`].
    pub async fn kill_all(&self) {
        let pids: Vec<i32> = self.lock().keys().copied().collect();
        if pids.is_empty() {
            return;
        }
        for &pid in &pids {
            signal_group(pid, Signal::TERM);
        }
        let deadline = tokio::time::Instant::now() + KILL_GRACE;
        loop {
            let alive: Vec<i32> = pids.iter().copied().filter(|&p| group_alive(p)).collect();
            if alive.is_empty() {
                return;
            }
            if tokio::time::Instant::now() >= deadline {
                for &pid in &alive {
                    signal_group(pid, Signal::KILL);
                }
                // SIGKILL is delivered asynchronously: wait (briefly) until the groups are
                // really gone, so that "the agent exited" means "nothing is left running".
                let until = tokio::time::Instant::now() + Duration::from_secs(1);
                while alive.iter().any(|&p| group_alive(p)) && tokio::time::Instant::now() < until {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Whether process group `pgid` has a member that is not a zombie.
pub fn group_alive(pgid: i32) -> bool {
    if !group_exists(pgid) {
        return false;
    }
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true;
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{name}/stat")) else {
            continue;
        };
        let Some(close) = stat.rfind(')') else {
            continue;
        };
        let mut fields = stat[close + 1..].split_whitespace();
        let state = fields.next().unwrap_or("");
        let _ppid = fields.next();
        let pgrp: i32 = fields.next().and_then(|f| f.parse().ok()).unwrap_or(0);
        if pgrp == pgid && state != "Z" && state != "X" {
            return true;
        }
    }
    false
}

/// Whether process group `pgid` exists (kill(-pgid, 0)).
fn group_exists(pgid: i32) -> bool {
    Pid::from_raw(pgid).is_some_and(|p| rustix::process::test_kill_process_group(p).is_ok())
}

/// Signal process group `pgid` (a group this agent created); a gone group is not an error.
fn signal_group(pgid: i32, sig: Signal) {
    if let Some(p) = Pid::from_raw(pgid) {
        let _ = rustix::process::kill_process_group(p, sig);
    }
}
