//! The change tracker of `fs.changes` (see `changes` for the contract): one recursive inotify
//! instance per session, the feeds it delivers to, and the barrier (`flush`).

use crate::out::Out;
use protocol::rpc::{Message, Notification, SubscriptionId};
use protocol::watch::Change;
use protocol::{Errno, Subscription};
use serde_json::value::RawValue;
use std::collections::{HashMap, HashSet};

use super::tree::{Batch, Tree};
use crate::inotify::Watched;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, Mutex};

/// More children than this of one directory in one batch are reported as the directory.
pub const COALESCE: usize = 32;

/// At most this many paths in one notification (keeps frames far below the frame limit).
const PATHS_PER_NOTE: usize = 2048;

/// After delivering a batch, the reader lets the queue fill this long before reading again, so a
/// burst is read in few big batches (which coalesce) instead of one per event. The first change
/// after a quiet spell is still read at once, and `flush` never waits.
const BURST_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);

/// Directories watched before `fs.changes` is answered: all of a small project. A bigger one's
/// answer does not wait for the rest (10⁵ directories take seconds), which are watched in the
/// background, shallowest first; until a directory's watch exists, nothing in it is flagged
/// cacheable, so the client makes round trips there meanwhile.
const ARM_BEFORE_ANSWER: usize = 1024;

/// Directories watched per background step (one lock hold: what a `flush` may wait for).
const ARM_STEP: usize = 256;

/// A `flush` reads at most this many batches (a writer that never stops cannot hold it forever).
const FLUSH_BATCHES: usize = 256;

/// The watches a stat's answer relies on, taken before its syscall ([`Tracker::covered`]). A
/// stat is cacheable when its path's parent is watched (which reports the path's creation,
/// removal, moves, writes and attribute changes) and, when the path turns out to be a
/// directory, the directory itself too: an entry created or removed in it changes its mtime,
/// size and link count, and only its own watch reports that. While the project is still being
/// armed (or past `max_user_watches`) a directory can be listed by a watched parent and not
/// watched yet.
#[derive(Clone, Copy, Debug)]
pub struct Covered {
    parent: bool,
    itself: bool,
}

impl Covered {
    /// Whether a stat (or a lookup failure, `is_dir` false) of the path may be cached.
    pub fn stat(self, is_dir: bool) -> bool {
        self.parent && (self.itself || !is_dir)
    }
}

/// The session's change tracker (see the module docs).
pub struct Tracker {
    root: PathBuf,
    /// The canonical project root (`hello` sets it): what relative prefetch paths are under.
    project: RwLock<Option<PathBuf>>,
    /// The watcher runs (fast path for `flush` and the flags).
    live: AtomicBool,
    /// Canonical paths of the directories with a live watch; empty while stopped.
    watched: Watched,
    /// THE lock: reading the queue and handing its notifications to [`Out`].
    inner: Mutex<Inner>,
    next_key: AtomicU64,
}

#[derive(Default)]
struct Inner {
    run: Option<Running>,
    feeds: Vec<Feed>,
    out: Option<Out>,
}

struct Feed {
    key: u64,
    sub: SubscriptionId,
    /// Its answer was written: items may follow.
    active: bool,
    /// The lookups to make and send as its first item, once its answer is written.
    prefetch: Option<Prefetch>,
}

/// Builds a feed's [`Change::Prefetch`] (blocking file system work).
pub(crate) type Prefetch = Box<dyn FnOnce() -> Change + Send + Sync>;

struct Running {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// Taken while a batch is processed on a blocking thread.
    tree: Option<Tree>,
    /// Dropped to end the reader task.
    _stop: oneshot::Sender<()>,
}

impl Tracker {
    pub fn new(root: PathBuf) -> Self {
        Tracker {
            root,
            project: RwLock::new(None),
            live: AtomicBool::new(false),
            watched: Arc::default(),
            inner: Mutex::new(Inner::default()),
            next_key: AtomicU64::new(1),
        }
    }

    /// Whether the literal parent of `path` (an absolute path with no `.`, `..`, empty or
    /// trailing component) is a watched directory right now. Call it before the syscall.
    pub fn watched_parent(&self, path: &str) -> bool {
        if !self.live.load(Ordering::Acquire) || !is_normal(path) {
            return false;
        }
        let parent = match path.rfind('/') {
            Some(0) => "/",
            Some(i) => &path[..i],
            None => return false,
        };
        // A watched directory's own watch reports its attribute changes and its move or
        // removal, and its children's events drop its entry as their parent's: so the project
        // root (whose parent is not watched) is covered too.
        self.watched
            .read()
            .map(|w| w.contains(parent.as_bytes()) || w.contains(path.as_bytes()))
            .unwrap_or(false)
    }

    /// Whether `path` (normal, as for [`Tracker::watched_parent`]) is itself a watched directory
    /// right now, so that every change of its listing will be reported. Call it before the
    /// syscall.
    pub fn watched_dir(&self, path: &str) -> bool {
        self.live.load(Ordering::Acquire)
            && is_normal(path)
            && self
                .watched
                .read()
                .map(|w| w.contains(path.as_bytes()))
                .unwrap_or(false)
    }

    /// What a stat of `path` (normal, as for [`Tracker::watched_parent`]) may be flagged with,
    /// decided before the syscall; see [`Covered`].
    pub fn covered(&self, path: &str) -> Covered {
        Covered {
            parent: self.watched_parent(path),
            itself: self.watched_dir(path),
        }
    }

    /// The canonical project root (`hello` sets it).
    pub fn project(&self) -> Option<PathBuf> {
        self.project.read().ok().and_then(|p| p.clone())
    }

    /// The canonical project root, for relative prefetch paths (set by `hello`).
    pub fn set_project(&self, project: PathBuf) {
        if let Ok(mut p) = self.project.write() {
            *p = Some(project);
        }
    }

    /// Open a feed for subscription `sub` (its id as JSON), arming the watcher if it is the
    /// first. Items flow once [`Tracker::activate`] saw its answer go out.
    pub(crate) async fn open(
        self: &Arc<Self>,
        out: Out,
        sub: SubscriptionId,
        prefetch: Option<Prefetch>,
    ) -> Result<u64, Errno> {
        let mut inner = self.inner.lock().await;
        if inner.run.is_none() {
            self.start(&mut inner).await?;
        }
        inner.out = Some(out);
        let key = self.next_key.fetch_add(1, Ordering::Relaxed);
        inner.feeds.push(Feed {
            key,
            sub,
            active: false,
            prefetch,
        });
        Ok(key)
    }

    /// A feed ended; the last one stops the watcher.
    pub(crate) async fn close(&self, key: u64) {
        let mut inner = self.inner.lock().await;
        let before = inner.feeds.len();
        inner.feeds.retain(|f| f.key != key);
        if before != inner.feeds.len() && inner.feeds.is_empty() {
            self.stop_locked(&mut inner);
        }
    }

    /// The answer of feed `key`'s subscribe call was written: its feed may send items now.
    pub async fn activate(&self, key: u64) {
        let mut inner = self.inner.lock().await;
        let Some(i) = inner.feeds.iter().position(|f| f.key == key) else {
            return;
        };
        let f = &mut inner.feeds[i];
        // The prefetch is made now, under the lock: no batch is read (and lost to this feed, not
        // active yet) between its lookups and its delivery, and every change after them is
        // delivered after it.
        if let Some(make) = f.prefetch.take() {
            let sub = f.sub.clone();
            let t0 = std::time::Instant::now();
            if let Ok(item) = tokio::task::spawn_blocking(make).await {
                if let (Some(out), Ok(body)) = (&inner.out, serde_json::value::to_raw_value(&item))
                {
                    tracing::debug!(
                        "fs.changes: prefetch of {} bytes made in {:?}",
                        body.get().len(),
                        t0.elapsed()
                    );
                    out.note(note_frame(&sub, &body).into()).await;
                }
            }
        }
        inner.feeds[i].active = true;
    }

    /// Stop the watcher and end every feed's flow (the session is ending).
    pub async fn shutdown(&self) {
        let mut inner = self.inner.lock().await;
        inner.feeds.clear();
        self.stop_locked(&mut inner);
    }

    fn stop_locked(&self, inner: &mut Inner) {
        if inner.run.take().is_some() {
            self.live.store(false, Ordering::Release);
            if let Ok(mut w) = self.watched.write() {
                w.clear();
            }
            tracing::debug!("fs.changes: watcher stopped");
        }
    }

    /// Create the inotify instance, watch the tree (blocking thread), start the reader.
    async fn start(self: &Arc<Self>, inner: &mut Inner) -> Result<(), Errno> {
        let mut tree = Tree::new(self.root.clone(), self.watched.clone())
            .map_err(|(syscall, e)| Errno::from_io(&e, syscall, None))?;
        let fd = tree.fd();
        let t0 = std::time::Instant::now();
        // The root and the first directories (all of a small project) before the answer; the
        // rest in the background (`arm`), shallowest first.
        let tree = tokio::task::spawn_blocking(move || {
            let ok = tree.arm_root().map(|()| tree.arm_some(ARM_BEFORE_ANSWER));
            (tree, ok)
        })
        .await;
        let (tree, more) = match tree {
            Ok((tree, Ok(more))) => (tree, more),
            Ok((_, Err(e))) => {
                if let Ok(mut w) = self.watched.write() {
                    w.clear();
                }
                let root = self.root.to_string_lossy();
                return Err(Errno::from_io(&e, "inotify_add_watch", Some(&root)));
            }
            Err(e) => {
                return Err(Errno::new("EIO", "inotify_add_watch", None).with_detail(e.to_string()))
            }
        };
        tracing::debug!(
            "fs.changes: {} directories watched in {:?} before the answer{}",
            tree.walker.watch_count(),
            t0.elapsed(),
            if more {
                "; the rest in the background"
            } else {
                ""
            }
        );
        let (stop_tx, stop_rx) = oneshot::channel();
        inner.run = Some(Running {
            fd: fd.clone(),
            tree: Some(tree),
            _stop: stop_tx,
        });
        self.live.store(true, Ordering::Release);
        if more {
            tokio::spawn(arm(self.clone(), fd.clone(), t0));
        }
        tokio::spawn(reader(self.clone(), fd, stop_rx));
        Ok(())
    }

    /// The barrier: every event queued now is read and its `fs.changed` handed to the output
    /// before this returns. A no-op while nothing watches.
    pub async fn flush(&self) {
        if !self.live.load(Ordering::Acquire) {
            return;
        }
        let mut inner = self.inner.lock().await;
        for _ in 0..FLUSH_BATCHES {
            match self.pump(&mut inner).await {
                Some(true) => continue,
                _ => return,
            }
        }
    }

    /// Read and process one batch, then deliver it. `Some(more)`: whether more may be queued;
    /// `None` when the watcher is not running.
    async fn pump(&self, inner: &mut Inner) -> Option<bool> {
        let run = inner.run.as_mut()?;
        let mut tree = run.tree.take()?;
        let res = tokio::task::spawn_blocking(move || {
            let b = tree.read_batch();
            (tree, b)
        })
        .await;
        let Ok((tree, batch)) = res else {
            // The blocking task panicked: the tree is lost; stop rather than lie.
            tracing::error!("fs.changes: the reader failed; stopping the watcher");
            self.stop_locked(inner);
            return None;
        };
        if let Some(run) = inner.run.as_mut() {
            run.tree = Some(tree);
        }
        let items = items_of(&batch);
        deliver(inner, &items).await;
        Some(!batch.drained)
    }
}

/// Arm the rest of the project (see [`Tree::arm_some`]) a step at a time, each under the lock
/// on a blocking thread, so `flush` and the reader wait at most one step. Ends when everything
/// is watched or the watcher `fd` belongs to stopped.
async fn arm(tracker: Arc<Tracker>, fd: Arc<AsyncFd<OwnedFd>>, t0: std::time::Instant) {
    loop {
        #[cfg(test)]
        super::test_hold::released(&tracker.root).await;
        let mut inner = tracker.inner.lock().await;
        let Some(run) = inner.run.as_mut().filter(|r| Arc::ptr_eq(&r.fd, &fd)) else {
            return;
        };
        let Some(mut tree) = run.tree.take() else {
            return;
        };
        let res = tokio::task::spawn_blocking(move || {
            let more = tree.arm_some(ARM_STEP);
            (tree, more)
        })
        .await;
        let Ok((tree, more)) = res else {
            tracing::error!("fs.changes: arming failed; stopping the watcher");
            tracker.stop_locked(&mut inner);
            return;
        };
        let n = tree.walker.watch_count();
        if let Some(run) = inner.run.as_mut() {
            run.tree = Some(tree);
        }
        if !more {
            tracing::debug!("fs.changes: {n} directories watched in {:?}", t0.elapsed());
            return;
        }
        drop(inner);
        tokio::task::yield_now().await;
    }
}

/// Until stopped: wait for the queue to be readable, then take the lock and pump.
async fn reader(tracker: Arc<Tracker>, fd: Arc<AsyncFd<OwnedFd>>, mut stop: oneshot::Receiver<()>) {
    loop {
        let guard = tokio::select! {
            g = fd.readable() => g,
            _ = &mut stop => return,
        };
        let Ok(mut guard) = guard else { return };
        let mut inner = tracker.inner.lock().await;
        match &inner.run {
            Some(run) if Arc::ptr_eq(&run.fd, &fd) => {}
            _ => return,
        }
        match tracker.pump(&mut inner).await {
            None => return,
            // Empty now: wait for the next edge (a `flush` may have emptied it first).
            Some(false) => guard.clear_ready(),
            Some(true) => {}
        }
        drop(inner);
        drop(guard);
        tokio::select! {
            _ = tokio::time::sleep(BURST_PAUSE) => {}
            _ = &mut stop => return,
        }
    }
}

/// The batch as feed items.
fn items_of(batch: &Batch) -> Vec<Change> {
    let mut items = Vec::new();
    if batch.all {
        items.push(Change::All {});
    }
    let paths = coalesce(&batch.paths);
    for chunk in paths.chunks(PATHS_PER_NOTE) {
        items.push(Change::Paths {
            paths: chunk.to_vec(),
        });
    }
    items
}

/// Hand `items` to every active feed, in order.
async fn deliver(inner: &Inner, items: &[Change]) {
    if items.is_empty() {
        return;
    }
    let Some(out) = &inner.out else { return };
    let bodies: Vec<Box<RawValue>> = items
        .iter()
        .filter_map(|c| serde_json::value::to_raw_value(c).ok())
        .collect();
    for feed in inner.feeds.iter().filter(|f| f.active) {
        for body in &bodies {
            if !out.note(note_frame(&feed.sub, body).into()).await {
                return;
            }
        }
    }
}

/// An `fs.changed` notification of subscription `sub` carrying `body` (an item, JSON).
fn note_frame(sub: &SubscriptionId, body: &RawValue) -> String {
    let n = Notification::item_raw(protocol::methods::Changes::NOTIFICATION, sub, body);
    Message::from(n).to_json()
}

/// Deduplicate; more than [`COALESCE`] children of one directory become the directory; drop
/// what lies under another reported path.
pub fn coalesce(paths: &[PathBuf]) -> Vec<String> {
    let mut seen: HashSet<&Path> = HashSet::new();
    let mut uniq: Vec<&Path> = Vec::new();
    for p in paths {
        if seen.insert(p.as_path()) {
            uniq.push(p);
        }
    }
    let mut per_parent: HashMap<&Path, usize> = HashMap::new();
    for p in &uniq {
        if let Some(parent) = p.parent() {
            *per_parent.entry(parent).or_default() += 1;
        }
    }
    let mut set: HashSet<&Path> = HashSet::new();
    let mut order: Vec<&Path> = Vec::new();
    for p in uniq {
        let p = match p.parent() {
            Some(parent) if per_parent.get(parent).copied().unwrap_or(0) > COALESCE => parent,
            _ => p,
        };
        if set.insert(p) {
            order.push(p);
        }
    }
    order
        .into_iter()
        .filter(|p| !p.ancestors().skip(1).any(|a| set.contains(a)))
        .map(|p| p.to_string_lossy().into_owned())
        .collect()
}

/// An absolute path with no empty, `.` or `..` component and no trailing slash.
pub(crate) fn is_normal(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}
