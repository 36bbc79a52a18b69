//! The change tracker's reading of the walker ([`crate::inotify`]): its rules (a watch on every
//! real directory under the root, shared filesystems left out, listed without touching atime, the
//! watched set published), and each read of the queue turned into a [`Batch`] of changed paths.

use crate::fs::sys::temp_target;
use crate::inotify::{Rules, Walker, Watched};
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use tokio::io::unix::AsyncFd;

/// Bytes read from the queue per batch.
const READ_BUF: usize = 256 * 1024;

/// The events; `IN_EXCL_UNLINK`: a file unlinked while open raises nothing more.
const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_EXCL_UNLINK;

/// What one batch found.
#[derive(Default)]
pub(crate) struct Batch {
    pub(crate) paths: Vec<PathBuf>,
    pub(crate) all: bool,
    /// The last read found the queue empty.
    pub(crate) drained: bool,
}

/// The watch table (used on blocking threads, one at a time, under the tracker's lock).
pub(crate) struct Tree {
    pub(crate) walker: Walker,
}

impl Tree {
    /// A new inotify instance for the tree at `root` (nothing watched yet; [`Tree::arm_root`]),
    /// publishing its watched directories in `watched`. On error, the syscall that failed.
    pub(crate) fn new(root: PathBuf, watched: Watched) -> Result<Self, (&'static str, io::Error)> {
        let rules = Rules {
            name: "fs.changes",
            mask: MASK,
            skip_shared: true,
            noatime: true,
            skip: |_| false,
            read_buf: READ_BUF,
            on_full: full_notice,
        };
        Ok(Tree {
            walker: Walker::new(root, rules, Some(watched))?,
        })
    }

    /// The instance, for the reader to wait on.
    pub(crate) fn fd(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.walker.fd()
    }

    /// Watch the root (its error is returned) and queue the rest for [`Tree::arm_some`].
    pub(crate) fn arm_root(&mut self) -> io::Result<()> {
        self.walker.arm_root()
    }

    /// Watch up to `n` more directories, shallowest first; whether any remain.
    pub(crate) fn arm_some(&mut self, n: usize) -> bool {
        #[cfg(test)]
        let held = super::test_hold::held;
        #[cfg(not(test))]
        let held = |_: &Path| false;
        self.walker.arm_some(n, &held)
    }

    /// Read what is queued (up to one buffer) and apply it to the table.
    pub(crate) fn read_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        match self.walker.read() {
            Ok(Some(events)) => {
                for ev in events {
                    self.apply(ev, &mut batch);
                }
            }
            Ok(None) => batch.drained = true,
            Err(e) => {
                tracing::warn!("fs.changes: reading inotify: {e}");
                batch.drained = true;
            }
        }
        if batch.all {
            self.walker.rescan();
        }
        batch
    }

    fn apply(&mut self, ev: crate::inotify::Event, batch: &mut Batch) {
        let mask = ev.mask;
        if mask & libc::IN_Q_OVERFLOW != 0 {
            batch.all = true;
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            self.walker.ignored(ev.wd);
            return;
        }
        let Some(dir) = self.walker.dir(ev.wd) else {
            return;
        };
        let Some(name) = ev.name else {
            // The watched directory itself. Its deletion or move is reported by its parent,
            // except for the root, which has none inside the project.
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                if dir.as_os_str().is_empty() {
                    batch.all = true;
                }
            } else {
                batch.paths.push(self.walker.abs(dir));
            }
            return;
        };
        if name.to_str().is_some_and(|n| temp_target(n).is_some()) {
            return;
        }
        let rel = dir.join(name);
        if mask & libc::IN_ISDIR != 0 {
            if mask & (libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
                self.walker.forget(&rel);
            }
            if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                // Watched (with its subtree) before it is reported.
                let _ = self.walker.add_tree(&rel, None);
            }
        }
        batch.paths.push(self.walker.abs(&rel));
    }
}

/// The one line (on the agent's stderr, which pii writes to its log, whatever the log level)
/// saying that the watch limit left `dir` and other directories uncached.
fn full_notice(dir: &Path, watched: usize) {
    let limit = std::fs::read_to_string("/proc/sys/fs/inotify/max_user_watches")
        .map(|l| format!(" = {}", l.trim()))
        .unwrap_or_default();
    eprintln!(
        "pi-bridge-agent: the inotify watch limit (fs.inotify.max_user_watches{limit}, for all of \
         this user's processes) is reached with {watched} directories of the project watched; {} \
         and the other directories left out are answered by a round trip every time, never from \
         the cache",
        dir.display()
    );
}
