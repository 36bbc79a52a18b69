//! `fs.changes`: the project's change feed, which keeps clients' metadata caches coherent (the
//! contract is [`protocol::watch::Change`]).
//!
//! One recursive inotify instance per session ([`Tracker`]), armed on the first subscription
//! and stopped when the last one ends. The root and the first 1024 directories (all of a small
//! project) are watched before the subscription is answered; the rest in the background,
//! breadth first (the root's neighbourhood, which a client touches first, before the depths of
//! `node_modules`), a step of 256 directories per hold of the lock, on a blocking thread: a
//! project of 10⁵ directories takes seconds, which no answer waits for. Until a directory's
//! watch exists nothing in it is flagged cacheable (see Flags), so the client makes round trips
//! there meanwhile and caches from then on. Every
//! real directory under the canonical project root gets a watch; symlinks are never followed
//! (`IN_DONT_FOLLOW|IN_ONLYDIR`, and the walk descends by `d_type` only). A directory created or
//! moved in is watched with its subtree BEFORE its path is reported, so whatever a client cached
//! under it before the watch existed is dropped; a directory moved away or deleted loses its
//! watches. The queue overflowing (`IN_Q_OVERFLOW`) re-walks the whole tree and reports `All`.
//! A directory the kernel will not watch (`ENOSPC`: `max_user_watches` reached) is left out with
//! its subtree: nothing under it is ever flagged cacheable, and one line on the agent's stderr
//! (pii's log) says so. So is a directory on a shared
//! filesystem (NFS, SMB, FUSE, 9p, cluster filesystems…: [`crate::inotify::shared_fs`]), where inotify sees only
//! this machine's own changes and another machine's write would leave a client's cache stale.
//!
//! Ordering. One lock ([`Tracker::inner`]) covers reading the inotify queue and handing the
//! resulting `fs.changed` notifications to the session's ordered output ([`Out`]). The reader
//! task takes it when the descriptor is readable; [`Tracker::flush`] takes it, reads whatever is
//! pending (non-blocking) and hands it on before returning. `proc` calls `flush` before a
//! process's `exit` event and before a `proc.run` answer, so every change a finished command
//! made reaches the client before the client learns the command finished. Notifications go to
//! [`Out`] directly (one ordered output for every feed), but only once the subscription's answer
//! was written ([`Tracker::activate`]), so a client never sees an item of a subscription id it
//! does not know yet; an unsubscribe ends its feed before it is answered.
//!
//! Flags. [`Tracker::watched_parent`] is the cheap check the fs handlers make BEFORE their
//! syscall: the literal parent of the (already normal) path the client sent is a watched
//! directory. The handlers add that the canonical path equals the literal one (no symlink on the
//! way, nor at the end for a following call). A stat that finds a directory needs that
//! directory's own watch too ([`tracker::Covered`]): an entry created in it changes its mtime,
//! size and link count, and only its own watch reports that (its parent's does not). Both checks
//! are made before the syscall, so a flag is only ever given by a watch that existed before the
//! answer was read: coverage that grows meanwhile (the background arming) is learned by the
//! client answer by answer.
//!
//! Coalescing: per batch read from the kernel, paths are deduplicated, more than [`COALESCE`]
//! children of one directory are reported as the directory, and a path under another reported
//! path is dropped. The agent's own atomic-write temp files are not reported (their rename over
//! the target is, as the target).
//!
//! The watches and the walk are the agent's one inotify walker ([`crate::inotify`], shared with
//! `watch`), with this feed's rules; `tree` turns what it reads into batches. The reader task
//! waits for the walker's descriptor to be readable while `flush` reads it on a blocking thread.

#[cfg(test)]
pub(crate) mod test_hold;
pub(crate) mod tracker;
mod tree;

use crate::agent::{Agent, Session};
use crate::rpc::{Failure, Pending};
use futures::FutureExt;
use protocol::watch::{Change, ChangesParams, PrefetchEntry, PREFETCH_MAX_DATA};
use protocol::Errno;
use std::collections::HashSet;
use std::path::Path;
use std::sync::Arc;
use tracker::{is_normal, Prefetch};

/// `fs.changes`: arm (or join) the watcher, answer, then serve until unsubscribed.
pub async fn subscribe(
    agent: Arc<Agent>,
    session: Arc<Session>,
    p: ChangesParams,
    pending: Pending<protocol::methods::Changes>,
) {
    let out = agent.out.clone();
    let tracker = session.changes.clone();
    let prefetch = (!p.prefetch.is_empty()).then(|| {
        let s = session.clone();
        let project = tracker.project();
        let paths = p.prefetch;
        Box::new(move || prefetch(&s, project.as_deref(), &paths)) as Prefetch
    });
    let sub = pending.subscription_id().clone();
    let key = match tracker.open(out, sub, prefetch).await {
        Ok(k) => k,
        Err(e) => return pending.reject(e.into()).await,
    };
    // An unsubscribe ends the feed before it is answered: nothing follows its answer.
    let t = tracker.clone();
    let accepted = pending
        .accept_then(move || async move { t.close(key).await }.boxed())
        .await;
    if let Some(events) = accepted {
        tracker.activate(key).await;
        events.closed().await;
    }
    tracker.close(key).await;
}

/// The feed's [`Change::Prefetch`]: each path (absolute, or relative to `project`) normalised
/// lexically, then looked up as `fs.stat {lstat: true}` would, with its flags; a small regular
/// file's bytes too when its lstat is cacheable. Paths that are not usable are left out.
fn prefetch(s: &Session, project: Option<&Path>, paths: &[String]) -> Change {
    let mut entries = Vec::new();
    let mut seen = HashSet::new();
    for p in paths {
        let Some(path) = resolve(project, p) else {
            continue;
        };
        if seen.insert(path.clone()) {
            entries.push(prefetch_one(s, path));
        }
    }
    Change::Prefetch { entries }
}

/// `p` (not empty) made absolute against `project` and normalised (`.`, `..`, empty components),
/// or `None`.
fn resolve(project: Option<&Path>, p: &str) -> Option<String> {
    if p.is_empty() {
        return None;
    }
    let base = if p.starts_with('/') {
        String::new()
    } else {
        project?.to_str()?.to_string()
    };
    let mut parts: Vec<&str> = base.split('/').filter(|c| !c.is_empty()).collect();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let out = format!("/{}", parts.join("/"));
    is_normal(&out).then_some(out)
}

fn prefetch_one(s: &Session, path: String) -> PrefetchEntry {
    let lstat = crate::fs::stat(
        s,
        protocol::fs::StatParams {
            path: path.clone(),
            lstat: true,
        },
    );
    let mut entry = PrefetchEntry {
        path,
        lstat: None,
        error: None,
        data: None,
    };
    match lstat {
        Ok(st) => {
            if st.cache && st.mode & libc::S_IFMT == libc::S_IFREG && st.size <= PREFETCH_MAX_DATA {
                entry.data = small_file(s, &entry.path, &st).map(protocol::Bytes);
            }
            entry.lstat = Some(st);
        }
        Err(Failure::Os(e)) => entry.error = Some(e),
        Err(Failure::Code(_, m)) => {
            entry.error = Some(Errno::new("EIO", "lstat", Some(&entry.path)).with_detail(m))
        }
    }
    entry
}

/// The whole contents of the regular file `path` whose lstat is `st`, read with O_NOATIME (the
/// prefetch must change nothing a later `stat` would see), and only if the open file is still
/// the one `st` describes. `None` where any of that fails.
fn small_file(s: &Session, path: &str, st: &protocol::fs::Stat) -> Option<Vec<u8>> {
    use std::io::Read;
    use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
    let r = s
        .sandbox
        .pin(path, crate::sandbox::Follow::NotLast, "open")
        .ok()?;
    let mut f = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME | libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&*r)
        .ok()?;
    let mut buf = Vec::with_capacity(st.size as usize);
    (&mut f)
        .take(PREFETCH_MAX_DATA + 1)
        .read_to_end(&mut buf)
        .ok()?;
    let md = f.metadata().ok()?;
    let same = md.is_file()
        && md.ino() == st.ino
        && md.dev() == st.dev
        && md.size() == st.size
        && buf.len() as u64 == st.size
        && md.mtime() == st.mtime.0
        && md.mtime_nsec() == i64::from(st.mtime.1)
        && md.ctime() == st.ctime.0
        && md.ctime_nsec() == i64::from(st.ctime.1);
    same.then_some(buf)
}

#[cfg(test)]
mod tests;
