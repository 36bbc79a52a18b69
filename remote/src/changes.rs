//! `fs.changes`: the project's change feed, which keeps clients' metadata caches coherent (the
//! contract is [`protocol::watch::Change`]).
//!
//! One recursive inotify instance per session ([`Tracker`]), armed on the first subscription
//! (on a blocking thread: a big tree takes a while) and stopped when the last one ends. Every
//! real directory under the canonical project root gets a watch; symlinks are never followed
//! (`IN_DONT_FOLLOW|IN_ONLYDIR`, and the walk descends by `d_type` only). A directory created or
//! moved in is watched with its subtree BEFORE its path is reported, so whatever a client cached
//! under it before the watch existed is dropped; a directory moved away or deleted loses its
//! watches. The queue overflowing (`IN_Q_OVERFLOW`) re-walks the whole tree and reports `All`.
//! A directory the kernel will not watch (`ENOSPC`: `max_user_watches` reached) is left out with
//! its subtree: nothing under it is ever flagged cacheable. So is a directory on a shared
//! filesystem (NFS, SMB, FUSE, 9p, cluster filesystems…: [`shared_fs`]), where inotify sees only
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
//! way, nor at the end for a following call).
//!
//! Coalescing: per batch read from the kernel, paths are deduplicated, more than [`COALESCE`]
//! children of one directory are reported as the directory, and a path under another reported
//! path is dropped. The agent's own atomic-write temp files are not reported (their rename over
//! the target is, as the target).
//!
//! The inotify syscalls are made through `libc` rather than the `inotify` crate (used by
//! `watch`): the reader waits for readiness while `flush` reads the same descriptor, which needs
//! reads through a shared reference, and the crate's `read_events` takes `&mut`.

use crate::agent::{Agent, Session};
use crate::fs::temp_target;
use crate::out::Out;
use crate::rpc::{Failure, Pending};
use futures::FutureExt;
use protocol::rpc::{Message, Notification, SubscriptionId};
use protocol::watch::{Change, ChangesParams, PrefetchEntry, PREFETCH_MAX_DATA};
use protocol::{Errno, Subscription};
use serde_json::value::RawValue;
use std::collections::{BTreeMap, HashMap, HashSet};
use std::ffi::{CString, OsStr};
use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use tokio::io::unix::AsyncFd;
use tokio::sync::{oneshot, Mutex};

/// More children than this of one directory in one batch are reported as the directory.
pub const COALESCE: usize = 32;
/// At most this many paths in one notification (keeps frames far below the frame limit).
const PATHS_PER_NOTE: usize = 2048;
/// Bytes read from the queue per batch.
const READ_BUF: usize = 256 * 1024;
/// After delivering a batch, the reader lets the queue fill this long before reading again, so a
/// burst is read in few big batches (which coalesce) instead of one per event. The first change
/// after a quiet spell is still read at once, and `flush` never waits.
const BURST_PAUSE: std::time::Duration = std::time::Duration::from_millis(5);
/// A `flush` reads at most this many batches (a writer that never stops cannot hold it forever).
const FLUSH_BATCHES: usize = 256;

const MASK: u32 = libc::IN_CREATE
    | libc::IN_DELETE
    | libc::IN_MODIFY
    | libc::IN_ATTRIB
    | libc::IN_MOVED_FROM
    | libc::IN_MOVED_TO
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF
    | libc::IN_ONLYDIR
    | libc::IN_DONT_FOLLOW
    | libc::IN_EXCL_UNLINK;

type Watched = Arc<RwLock<HashSet<Box<[u8]>>>>;

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
type Prefetch = Box<dyn FnOnce() -> Change + Send + Sync>;

struct Running {
    fd: Arc<AsyncFd<OwnedFd>>,
    /// Taken while a batch is processed on a blocking thread.
    tree: Option<Tree>,
    /// Dropped to end the reader task.
    _stop: oneshot::Sender<()>,
}

/// What one batch found.
#[derive(Default)]
struct Batch {
    paths: Vec<PathBuf>,
    all: bool,
    /// The last read found the queue empty.
    drained: bool,
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

    /// The canonical project root, for relative prefetch paths (set by `hello`).
    pub fn set_project(&self, project: PathBuf) {
        if let Ok(mut p) = self.project.write() {
            *p = Some(project);
        }
    }

    /// Open a feed for subscription `sub` (its id as JSON), arming the watcher if it is the
    /// first. Items flow once [`Tracker::activate`] saw its answer go out.
    async fn open(
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
    async fn close(&self, key: u64) {
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
        // SAFETY: plain syscall; the fd is owned right below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(Errno::from_io(
                &io::Error::last_os_error(),
                "inotify_init",
                None,
            ));
        }
        // SAFETY: a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let mut tree = Tree::new(raw, self.root.clone(), self.watched.clone());
        let root = self.root.clone();
        let t0 = std::time::Instant::now();
        let tree = tokio::task::spawn_blocking(move || {
            let ok = tree.add_tree(&root);
            (tree, ok)
        })
        .await;
        let tree = match tree {
            Ok((tree, Ok(()))) => tree,
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
            "fs.changes: {} directories watched in {:?}",
            tree.wds.len(),
            t0.elapsed()
        );
        // SAFETY: the OwnedFd stays open, and the same descriptor, for as long as the AsyncFd
        // that owns it lives.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) };
        let fd = Arc::new(fd.map_err(|e| {
            let (_, e) = e.into_parts();
            Errno::from_io(&e, "epoll_ctl", None)
        })?);
        let (stop_tx, stop_rx) = oneshot::channel();
        inner.run = Some(Running {
            fd: fd.clone(),
            tree: Some(tree),
            _stop: stop_tx,
        });
        self.live.store(true, Ordering::Release);
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
        let project = tracker.project.read().ok().and_then(|p| p.clone());
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
fn is_normal(path: &str) -> bool {
    path.len() > 1
        && path.starts_with('/')
        && path[1..]
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..")
}

/// The watch table (used on blocking threads, one at a time, under the tracker's lock).
struct Tree {
    fd: RawFd,
    root: PathBuf,
    wds: HashMap<i32, PathBuf>,
    /// Ordered by components, so a directory's subtree is one contiguous range.
    dirs: BTreeMap<PathBuf, i32>,
    watched: Watched,
    full_logged: bool,
    shared_logged: bool,
    buf: Vec<u8>,
}

impl Tree {
    fn new(fd: RawFd, root: PathBuf, watched: Watched) -> Self {
        Tree {
            fd,
            root,
            wds: HashMap::new(),
            dirs: BTreeMap::new(),
            watched,
            full_logged: false,
            shared_logged: false,
            buf: vec![0u8; READ_BUF],
        }
    }

    fn add_watch(&self, path: &Path) -> io::Result<i32> {
        let c = CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
        // SAFETY: valid fd and C string.
        let wd = unsafe { libc::inotify_add_watch(self.fd, c.as_ptr(), MASK) };
        if wd < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(wd)
        }
    }

    /// Watch `top` and every real directory under it (never through a symlink). Watches are
    /// added before each directory is listed, so nothing created meanwhile is missed. The error
    /// is that of `top` itself; below it, what cannot be watched is left out with its subtree.
    fn add_tree(&mut self, top: &Path) -> io::Result<()> {
        let mut stack = vec![top.to_path_buf()];
        let mut added: Vec<Box<[u8]>> = Vec::new();
        let mut first = true;
        while let Some(dir) = stack.pop() {
            if let Some(kind) = shared_fs(&dir) {
                // Other machines change these without an inotify event here: never cached.
                if !self.shared_logged {
                    self.shared_logged = true;
                    tracing::info!(
                        "fs.changes: {} is on a shared filesystem ({kind}); changes made from \
                         other machines raise no inotify event, so nothing there is cached",
                        dir.display()
                    );
                }
                first = false;
                continue;
            }
            let wd = match self.add_watch(&dir) {
                Ok(wd) => wd,
                Err(e) => {
                    if e.raw_os_error() == Some(libc::ENOSPC) && !self.full_logged {
                        self.full_logged = true;
                        tracing::warn!(
                            "fs.changes: the inotify watch limit is reached \
                             (fs.inotify.max_user_watches); {} and other directories are not \
                             watched and their answers are never cached",
                            dir.display()
                        );
                    }
                    if first {
                        self.publish(added);
                        return Err(e);
                    }
                    continue;
                }
            };
            first = false;
            // The same inode under another name (a move we saw only half of): the new name wins.
            if let Some(old) = self.wds.insert(wd, dir.clone()) {
                if old != dir && self.dirs.get(&old) == Some(&wd) {
                    self.dirs.remove(&old);
                    if let Ok(mut w) = self.watched.write() {
                        w.remove(old.as_os_str().as_bytes());
                    }
                }
            }
            self.dirs.insert(dir.clone(), wd);
            added.push(dir.as_os_str().as_bytes().into());
            stack.extend(subdirs(&dir));
        }
        self.publish(added);
        Ok(())
    }

    fn publish(&self, added: Vec<Box<[u8]>>) {
        if added.is_empty() {
            return;
        }
        if let Ok(mut w) = self.watched.write() {
            w.extend(added);
        }
    }

    /// Drop the watches of `top` and everything under it.
    fn forget(&mut self, top: &Path) {
        let gone: Vec<(PathBuf, i32)> = self
            .dirs
            .range(top.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(top))
            .map(|(p, wd)| (p.clone(), *wd))
            .collect();
        if gone.is_empty() {
            return;
        }
        if let Ok(mut w) = self.watched.write() {
            for (p, _) in &gone {
                w.remove(p.as_os_str().as_bytes());
            }
        }
        for (p, wd) in gone {
            self.dirs.remove(&p);
            if self.wds.get(&wd) == Some(&p) {
                self.wds.remove(&wd);
            }
            // SAFETY: plain syscall; a watch the kernel already dropped gives EINVAL.
            unsafe { libc::inotify_rm_watch(self.fd, wd) };
        }
    }

    /// Re-walk everything (after an overflow): new directories get watches, and every path is
    /// mapped afresh; watches of what is gone are removed.
    fn rescan(&mut self) {
        let old: Vec<i32> = self.wds.keys().copied().collect();
        self.wds.clear();
        self.dirs.clear();
        if let Ok(mut w) = self.watched.write() {
            w.clear();
        }
        let root = self.root.clone();
        if let Err(e) = self.add_tree(&root) {
            tracing::warn!("fs.changes: re-watching the project failed: {e}");
        }
        for wd in old {
            if !self.wds.contains_key(&wd) {
                // SAFETY: as in `forget`.
                unsafe { libc::inotify_rm_watch(self.fd, wd) };
            }
        }
    }

    /// Read what is queued (up to one buffer) and apply it to the table.
    fn read_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        let n = loop {
            // SAFETY: the buffer is ours and as long as stated.
            let n = unsafe {
                libc::read(
                    self.fd,
                    self.buf.as_mut_ptr() as *mut libc::c_void,
                    self.buf.len(),
                )
            };
            if n >= 0 {
                break n as usize;
            }
            let e = io::Error::last_os_error();
            match e.raw_os_error() {
                Some(libc::EINTR) => continue,
                Some(libc::EAGAIN) => {
                    batch.drained = true;
                    return batch;
                }
                _ => {
                    tracing::warn!("fs.changes: reading inotify: {e}");
                    batch.drained = true;
                    return batch;
                }
            }
        };
        let buf = std::mem::take(&mut self.buf);
        let mut off = 0;
        const HEAD: usize = 16;
        while off + HEAD <= n {
            let field = |i: usize| {
                let mut b = [0u8; 4];
                b.copy_from_slice(&buf[off + i..off + i + 4]);
                b
            };
            let wd = i32::from_ne_bytes(field(0));
            let mask = u32::from_ne_bytes(field(4));
            let len = u32::from_ne_bytes(field(12)) as usize;
            let end = (off + HEAD + len).min(n);
            let raw = &buf[off + HEAD..end];
            let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
            self.apply(wd, mask, name, &mut batch);
            off = end;
        }
        self.buf = buf;
        if batch.all {
            self.rescan();
        }
        batch
    }

    fn apply(&mut self, wd: i32, mask: u32, name: &[u8], batch: &mut Batch) {
        if mask & libc::IN_Q_OVERFLOW != 0 {
            batch.all = true;
            return;
        }
        if mask & libc::IN_IGNORED != 0 {
            if let Some(p) = self.wds.remove(&wd) {
                if self.dirs.get(&p) == Some(&wd) {
                    self.dirs.remove(&p);
                    if let Ok(mut w) = self.watched.write() {
                        w.remove(p.as_os_str().as_bytes());
                    }
                }
            }
            return;
        }
        let Some(dir) = self.wds.get(&wd) else {
            return;
        };
        if name.is_empty() {
            // The watched directory itself. Its deletion or move is reported by its parent,
            // except for the root, which has none inside the project.
            if mask & (libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                if *dir == self.root {
                    batch.all = true;
                }
            } else {
                batch.paths.push(dir.clone());
            }
            return;
        }
        let name = OsStr::from_bytes(name);
        if name.to_str().is_some_and(|n| temp_target(n).is_some()) {
            return;
        }
        let path = dir.join(name);
        if mask & libc::IN_ISDIR != 0 {
            if mask & (libc::IN_MOVED_FROM | libc::IN_DELETE) != 0 {
                self.forget(&path);
            }
            if mask & (libc::IN_CREATE | libc::IN_MOVED_TO) != 0 {
                // Watched (with its subtree) before it is reported.
                let _ = self.add_tree(&path);
            }
        }
        batch.paths.push(path);
    }
}

#[cfg(test)]
mod tests;

/// The kind of filesystem `dir` is on if other machines (or a VM host) can change it behind the
/// kernel's back — network, cluster and shared-folder filesystems, and FUSE (sshfs, virtiofs, …)
/// — where inotify only sees this machine's own changes. `None` for local filesystems.
fn shared_fs(dir: &Path) -> Option<&'static str> {
    let c = CString::new(dir.as_os_str().as_bytes()).ok()?;
    // SAFETY: a zeroed statfs is a valid out-parameter; `c` is a valid C string.
    let mut st: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: as above.
    if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
        return None;
    }
    shared_fs_kind((st.f_type as u64 & 0xffff_ffff) as u32)
}

/// `statfs.f_type` magic numbers (linux/magic.h and the filesystems' own headers).
fn shared_fs_kind(magic: u32) -> Option<&'static str> {
    Some(match magic {
        0x6969 => "nfs",
        0x517b => "smb",
        0xff53_4d42 => "cifs",
        0xfe53_4d42 => "smb2",
        0x6573_5546 => "fuse",
        0x0102_1997 => "9p",
        0x00c3_6400 => "ceph",
        0x5346_414f | 0x6b41_4653 => "afs",
        0x7375_7245 => "coda",
        0x0bd0_0bd0 => "lustre",
        0x4750_4653 => "gpfs",
        0x0116_1970 => "gfs2",
        0x7461_636f => "ocfs2",
        0x2003_0528 => "orangefs",
        0x786f_4256 => "vboxsf",
        _ => return None,
    })
}

/// The subdirectories of `dir` (not following symlinks), listed without touching its atime
/// (O_NOATIME, where the agent owns the directory): arming the feed must not change what a
/// `stat` of the directory says, or the client's view would differ from a plain run's.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(c) = CString::new(dir.as_os_str().as_bytes()) else {
        return vec![];
    };
    let flags = libc::O_RDONLY | libc::O_DIRECTORY | libc::O_NOFOLLOW | libc::O_CLOEXEC;
    // SAFETY: `c` is a valid NUL-terminated path; the fd is owned by the DIR stream below.
    let mut fd = unsafe { libc::open(c.as_ptr(), flags | libc::O_NOATIME) };
    if fd < 0 && io::Error::last_os_error().raw_os_error() == Some(libc::EPERM) {
        // SAFETY: as above.
        fd = unsafe { libc::open(c.as_ptr(), flags) };
    }
    if fd < 0 {
        return vec![];
    }
    // SAFETY: `fd` is an open directory fd; on success the DIR stream owns it.
    let d = unsafe { libc::fdopendir(fd) };
    if d.is_null() {
        // SAFETY: fdopendir failed, so the fd is still ours to close.
        unsafe { libc::close(fd) };
        return vec![];
    }
    let mut out = vec![];
    loop {
        // SAFETY: `d` is a valid DIR stream until closedir below.
        let e = unsafe { libc::readdir(d) };
        if e.is_null() {
            break;
        }
        // SAFETY: readdir returned a valid entry whose d_name is NUL-terminated.
        let (ty, name) = unsafe { ((*e).d_type, std::ffi::CStr::from_ptr((*e).d_name.as_ptr())) };
        let name = name.to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let path = dir.join(OsStr::from_bytes(name));
        let is_dir = match ty {
            libc::DT_DIR => true,
            libc::DT_UNKNOWN => std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()),
            _ => false,
        };
        if is_dir {
            out.push(path);
        }
    }
    // SAFETY: `d` came from fdopendir and is closed once.
    unsafe { libc::closedir(d) };
    out
}
