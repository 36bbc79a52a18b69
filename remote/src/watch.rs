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

use crate::agent::{Agent, Session};
use crate::fs::sys::temp_target;
use crate::rpc::{Events, Pending};
use crate::sandbox::Follow;
use futures::StreamExt;
use inotify::{EventMask, Inotify, WatchDescriptor, WatchMask, Watches};
use protocol::methods::Watch;
use protocol::watch::{WatchEvent, WatchParams};
use protocol::Errno;
use std::collections::{HashMap, VecDeque};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

fn mask() -> WatchMask {
    WatchMask::ATTRIB
        | WatchMask::CREATE
        | WatchMask::MODIFY
        | WatchMask::DELETE
        | WatchMask::DELETE_SELF
        | WatchMask::MOVE_SELF
        | WatchMask::MOVED_FROM
        | WatchMask::MOVED_TO
}

/// Watch descriptors and the relative directory each one covers ("" for the root).
struct Tree {
    watches: Watches,
    dirs: HashMap<WatchDescriptor, String>,
}

impl Tree {
    /// Watch `abs` (a directory whose relative name is `rel`) and, recursively, its
    /// subdirectories. Returns the relative names of every entry found below `abs`.
    fn add_recursive(&mut self, abs: &Path, rel: &str, found: &mut Vec<String>) {
        match self
            .watches
            .add(abs, mask() | WatchMask::ONLYDIR | WatchMask::DONT_FOLLOW)
        {
            Ok(wd) => {
                self.dirs.insert(wd, rel.to_string());
            }
            Err(e) => {
                tracing::debug!("watch {}: {e}", abs.display());
                return;
            }
        }
        let Ok(rd) = std::fs::read_dir(abs) else {
            return;
        };
        let mut entries: Vec<_> = rd.flatten().collect();
        entries.sort_by_key(|e| e.file_name());
        for e in entries {
            let name = e.file_name().to_string_lossy().into_owned();
            if temp_target(&name).is_some() {
                continue;
            }
            let child_rel = if rel.is_empty() {
                name
            } else {
                format!("{rel}/{name}")
            };
            found.push(child_rel.clone());
            if e.file_type().map(|t| t.is_dir()).unwrap_or(false) {
                self.add_recursive(&abs.join(e.file_name()), &child_rel, found);
            }
        }
    }
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
    abs: PathBuf,
    is_dir: bool,
    own_name: Option<String>,
    tree: Tree,
    root_wd: WatchDescriptor,
    stream: inotify::EventStream<Vec<u8>>,
}

fn arm(session: &Session, p: &WatchParams) -> Result<Armed, Errno> {
    let abs = session.sandbox.resolve(&p.path, Follow::All, "watch")?;
    let md = std::fs::metadata(&abs).map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
    let inotify = Inotify::init().map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
    let own_name = abs.file_name().map(|n| n.to_string_lossy().into_owned());
    let mut tree = Tree {
        watches: inotify.watches(),
        dirs: HashMap::new(),
    };
    let root_wd = if md.is_dir() && p.recursive {
        let mut found = Vec::new();
        tree.add_recursive(&abs, "", &mut found);
        tree.dirs
            .iter()
            .find(|(_, rel)| rel.is_empty())
            .map(|(wd, _)| wd.clone())
    } else {
        let wd = tree
            .watches
            .add(&abs, mask())
            .map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
        tree.dirs.insert(wd.clone(), String::new());
        Some(wd)
    };
    let Some(root_wd) = root_wd else {
        return Err(Errno::new("ENOENT", "watch", Some(&p.path)));
    };
    let stream = inotify
        .into_event_stream(vec![0u8; 64 * 1024])
        .map_err(|e| Errno::from_io(&e, "watch", Some(&p.path)))?;
    Ok(Armed {
        abs,
        is_dir: md.is_dir(),
        own_name,
        tree,
        root_wd,
        stream,
    })
}

impl Armed {
    async fn run(self, p: &WatchParams, events: &Events<Watch>) -> Result<(), Errno> {
        let Armed {
            abs,
            is_dir,
            own_name,
            mut tree,
            root_wd,
            mut stream,
        } = self;
        // (cookie, whether the write creates its target)
        let mut temp_moves: VecDeque<(u32, bool)> = VecDeque::new();
        loop {
            let ev = tokio::select! {
                ev = stream.next() => ev,
                _ = events.closed() => return Ok(()),
            };
            let ev = match ev {
                Some(Ok(ev)) => ev,
                Some(Err(e)) => return Err(Errno::from_io(&e, "watch", Some(&p.path))),
                None => return Ok(()),
            };
            if ev.mask.contains(EventMask::Q_OVERFLOW) {
                tracing::debug!("inotify queue overflow on {}", p.path);
                continue;
            }
            if ev.mask.contains(EventMask::IGNORED) {
                tree.dirs.remove(&ev.wd);
                if ev.wd == root_wd {
                    return Err(Errno::new("ENOENT", "watch", Some(&p.path))
                        .with_detail("the watched path is gone"));
                }
                continue;
            }
            let self_gone = ev
                .mask
                .intersects(EventMask::DELETE_SELF | EventMask::MOVE_SELF);
            if self_gone && ev.wd != root_wd {
                // A subdirectory: its parent already reported it.
                continue;
            }
            let Some(rel_dir) = tree.dirs.get(&ev.wd).cloned() else {
                continue;
            };
            if let Some((_, creates)) = ev
                .name
                .as_deref()
                .and_then(OsStr::to_str)
                .and_then(temp_target)
            {
                // One of our atomic writes: only its final rename is reported (below).
                if ev.mask.contains(EventMask::MOVED_FROM) {
                    if temp_moves.len() == TEMP_MOVES {
                        temp_moves.pop_front();
                    }
                    temp_moves.push_back((ev.cookie, creates));
                }
                continue;
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
                None => own_name.clone(),
            };
            // `Some(creates)` when this is one of our writes landing.
            let written = if ev.mask.contains(EventMask::MOVED_TO) {
                let at = temp_moves.iter().position(|&(c, _)| c == ev.cookie);
                at.and_then(|i| temp_moves.remove(i))
                    .map(|(_, creates)| creates)
            } else {
                None
            };
            let types: &[&str] = match written {
                Some(true) => &["rename", "change"],
                Some(false) => &["change"],
                None if ev.mask.intersects(EventMask::MODIFY | EventMask::ATTRIB) => &["change"],
                None => &["rename"],
            };
            for t in types {
                let item = WatchEvent::Event {
                    event_type: (*t).into(),
                    filename: filename.clone(),
                };
                if !events.send(&item).await {
                    return Ok(());
                }
            }
            if self_gone {
                return Err(Errno::new("ENOENT", "watch", Some(&p.path))
                    .with_detail("the watched path is gone"));
            }
            if p.recursive
                && is_dir
                && ev.mask.contains(EventMask::ISDIR)
                && ev.mask.intersects(EventMask::CREATE | EventMask::MOVED_TO)
            {
                if let Some(rel) = filename {
                    let mut found = Vec::new();
                    let dir: PathBuf = abs.join(&rel);
                    tree.add_recursive(&dir, &rel, &mut found);
                    for f in found {
                        let ev = WatchEvent::Event {
                            event_type: "rename".into(),
                            filename: Some(f),
                        };
                        if !events.send(&ev).await {
                            return Ok(());
                        }
                    }
                }
            }
        }
    }
}
