//! `watch.start`: inotify watches shaped like Node's `fs.watch` on Linux.
//!
//! The mask is libuv's (attrib, create, modify, delete, delete_self, move_self, moved_from,
//! moved_to) and so is the mapping: `change` for modify/attrib, `rename` for everything else.
//! `IN_CLOSE_WRITE` is deliberately not watched: Node does not, and it would double every write
//! as a second `change`. Filenames are relative to the watched directory (the file's own name
//! when a file is watched). With `recursive`, every subdirectory (not symlinked ones) is watched,
//! new ones too, and entries found in a newly created directory are reported as `rename`. When the
//! watched path itself is deleted or moved, a `rename` for it is sent, then an `error` (ENOENT),
//! and the subscription ends.
//!
//! The call is answered only once inotify is armed, so a change made right after the client has
//! its subscription id is reported (Node's `fs.watch` is live when it returns); a path that cannot
//! be watched fails the call itself (ENOENT, EACCES …), as Node's `fs.watch` throws.
//!
//! The agent's own atomic writes (temp file + rename, see `fs`) are reported as Node reports a
//! write in place: the temp names are never reported, and a rename of one of them over a target
//! (`IN_MOVED_FROM` temp + `IN_MOVED_TO` target, paired by cookie) is a `change` of the target,
//! preceded by a `rename` when the write created it (its temp name says so), as for a new file.
//!
//! The watches are the agent's one inotify walker ([`crate::inotify`], shared with `changes`),
//! with this module's rules: libuv's mask, no shared-filesystem or atime rule (Node has none),
//! the temp files never walked into.

use crate::agent::{Agent, Session};
use crate::fs::sys::temp_target;
use crate::inotify::{Event, Rules, Walker};
use crate::rpc::{Events, Pending};
use crate::sandbox::Follow;
use protocol::methods::Watch;
use protocol::watch::{WatchEvent, WatchParams};
use protocol::Errno;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// libuv's mask.
const MASK: u32 = libc::IN_ATTRIB
    | libc::IN_CREATE
    | libc::IN_MODIFY
    | libc::IN_DELETE
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO;

/// Bytes read from the queue at a time.
const READ_BUF: usize = 64 * 1024;

/// Whether `name` is one of the agent's temp files (never walked into nor reported).
fn is_temp(name: &OsStr) -> bool {
    temp_target(&name.to_string_lossy()).is_some()
}

/// Cookies of our temp files' `IN_MOVED_FROM`s still waiting for their `IN_MOVED_TO` (bounded:
/// a temp moved out of the watch never gets one).
const TEMP_MOVES: usize = 64;

/// Arm the watch, answer the call (or fail it), then run until the client unsubscribes or the
/// watched path goes away.
pub async fn run(
    _agent: Arc<Agent>,
    session: Arc<Session>,
    p: WatchParams,
    pending: Pending<Watch>,
) {
    let armed = match arm(&session, &p) {
        Ok(a) => a,
        Err(e) => return pending.reject(e.into()).await,
    };
    let Some(events) = pending.accept().await else {
        return;
    };
    if let Err(error) = armed.run(&p, &events).await {
        events.send(&WatchEvent::Error { error }).await;
    }
}

/// A watch whose inotify descriptors are in place: every change from now on is queued.
struct Armed {
    is_dir: bool,
    own_name: Option<String>,
    walker: Walker,
    root_wd: i32,
    /// (cookie, whether the write creates its target)
    temp_moves: VecDeque<(u32, bool)>,
}

fn arm(session: &Session, p: &WatchParams) -> Result<Armed, Errno> {
    let abs = session.sandbox.resolve(&p.path, Follow::All, "watch")?;
    let md = std::fs::metadata(&abs).map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
    let own_name = abs.file_name().map(|n| n.to_string_lossy().into_owned());
    let rules = Rules {
        name: "watch",
        mask: MASK,
        skip_shared: false,
        noatime: false,
        skip: is_temp,
        read_buf: READ_BUF,
        on_full: |dir, _| {
            tracing::warn!(
                "watch: the inotify watch limit is reached (fs.inotify.max_user_watches); {} and \
                 other directories are not watched",
                dir.display()
            )
        },
    };
    let mut walker = Walker::new(abs, rules, None)
        .map_err(|(_, e)| Errno::from_io(&e, "watch", Some(&p.path)))?;
    let root = Path::new("");
    let root_wd = if md.is_dir() && p.recursive {
        // The entries already there are not reported.
        let _ = walker.add_tree(root, Some(&mut Vec::new()));
        walker.wd(root)
    } else {
        let wd = walker
            .add(root)
            .map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
        Some(wd)
    };
    let Some(root_wd) = root_wd else {
        return Err(Errno::new("ENOENT", "watch", Some(&p.path)));
    };
    Ok(Armed {
        is_dir: md.is_dir(),
        own_name,
        walker,
        root_wd,
        temp_moves: VecDeque::new(),
    })
}

/// What the subscription does after an event.
enum Next {
    Go,
    /// The client is gone.
    Stop,
    /// The watched path is gone.
    Gone,
}

impl Armed {
    async fn run(mut self, p: &WatchParams, events: &Events<Watch>) -> Result<(), Errno> {
        let fd = self.walker.fd();
        let gone = || {
            Err(Errno::new("ENOENT", "watch", Some(&p.path))
                .with_detail("the watched path is gone"))
        };
        loop {
            let guard = tokio::select! {
                g = fd.readable() => g,
                _ = events.closed() => return Ok(()),
            };
            let mut guard = guard.map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
            let batch = match self.walker.read() {
                Ok(Some(batch)) => batch,
                Ok(None) => {
                    guard.clear_ready();
                    continue;
                }
                Err(e) => return Err(Errno::from_io(&e, "watch", Some(&p.path))),
            };
            drop(guard);
            for ev in batch {
                match self.event(ev, p, events).await {
                    Next::Go => {}
                    Next::Stop => return Ok(()),
                    Next::Gone => return gone(),
                }
            }
        }
    }

    /// Report one event as Node would, and follow a new directory of a recursive watch.
    async fn event(&mut self, ev: Event, p: &WatchParams, events: &Events<Watch>) -> Next {
        if ev.mask & libc::IN_Q_OVERFLOW != 0 {
            tracing::debug!("inotify queue overflow on {}", p.path);
            return Next::Go;
        }
        if ev.mask & libc::IN_IGNORED != 0 {
            self.walker.ignored(ev.wd);
            return if ev.wd == self.root_wd {
                Next::Gone
            } else {
                Next::Go
            };
        }
        let self_gone = ev.mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0;
        if self_gone && ev.wd != self.root_wd {
            // A subdirectory: its parent already reported it.
            return Next::Go;
        }
        let Some(rel_dir) = self
            .walker
            .dir(ev.wd)
            .map(|d| d.to_string_lossy().into_owned())
        else {
            return Next::Go;
        };
        if let Some((_, creates)) = ev
            .name
            .as_deref()
            .and_then(OsStr::to_str)
            .and_then(temp_target)
        {
            // One of our atomic writes: only its final rename is reported (below).
            if ev.mask & libc::IN_MOVED_FROM != 0 {
                if self.temp_moves.len() == TEMP_MOVES {
                    self.temp_moves.pop_front();
                }
                self.temp_moves.push_back((ev.cookie, creates));
            }
            return Next::Go;
        }
        let filename = match &ev.name {
            Some(name) => {
                let name = name.to_string_lossy();
                Some(if rel_dir.is_empty() {
                    name.into_owned()
                } else {
                    format!("{rel_dir}/{name}")
                })
            }
            None => self.own_name.clone(),
        };
        // `Some(creates)` when this is one of our writes landing.
        let written = if ev.mask & libc::IN_MOVED_TO != 0 {
            let at = self.temp_moves.iter().position(|&(c, _)| c == ev.cookie);
            at.and_then(|i| self.temp_moves.remove(i))
                .map(|(_, creates)| creates)
        } else {
            None
        };
        let types: &[&str] = match written {
            Some(true) => &["rename", "change"],
            Some(false) => &["change"],
            None if ev.mask & (libc::IN_MODIFY | libc::IN_ATTRIB) != 0 => &["change"],
            None => &["rename"],
        };
        for t in types {
            let item = WatchEvent::Event {
                event_type: (*t).into(),
                filename: filename.clone(),
            };
            if !events.send(&item).await {
                return Next::Stop;
            }
        }
        if self_gone {
            return Next::Gone;
        }
        if p.recursive
            && self.is_dir
            && ev.mask & libc::IN_ISDIR != 0
            && ev.mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0
        {
            if let Some(rel) = filename {
                // What the new directory already holds is reported as created.
                let mut found = Vec::new();
                let _ = self.walker.add_tree(&PathBuf::from(rel), Some(&mut found));
                for f in found {
                    let ev = WatchEvent::Event {
                        event_type: "rename".into(),
                        filename: Some(f.to_string_lossy().into_owned()),
                    };
                    if !events.send(&ev).await {
                        return Next::Stop;
                    }
                }
            }
        }
        Next::Go
    }
}
