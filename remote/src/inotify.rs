//! The agent's one inotify walker: an inotify instance, its watch descriptors ↔ the directories
//! they cover (relative to the walker's root, "" for the root itself), the recursive add that
//! never follows a symlink, dropping a subtree's watches, and reading the queue into decoded
//! [`Event`]s. Two users build on it, each with its own mask and its own reading of the events:
//! `watch` (Node's `fs.watch`) and `changes` (the cache's change feed).
//!
//! The walk: a directory is watched (`IN_ONLYDIR|IN_DONT_FOLLOW` added to the user's mask) BEFORE
//! it is listed, so nothing created meanwhile is missed; it descends by `d_type` (`lstat` where
//! the filesystem does not say), so a symlink is never followed. The error of the top directory
//! is returned; below it, a directory that cannot be watched is left out with its subtree. The
//! same directory reached under a new name (a move seen only half) keeps its descriptor and takes
//! the new name. A watch the kernel dropped (`IN_IGNORED`) leaves the table ([`Walker::ignored`]).
//! A big tree can instead be armed a step at a time, breadth first ([`Walker::arm_root`], then
//! [`Walker::arm_some`]), each directory still watched before it is listed.
//!
//! Each user's own rules ([`Rules`]), which differ on purpose:
//! - `changes` asks for `IN_EXCL_UNLINK` too (an unlinked file still open raises nothing), leaves
//!   out directories on shared filesystems ([`shared_fs`]: inotify sees only this machine's
//!   changes there, and the cache must not trust it), lists directories with `O_NOATIME` (arming
//!   the feed must not change what a `stat` of a directory says), publishes the absolute paths
//!   of its watched directories ([`Watched`], read by the fs handlers' flags), drops a subtree's
//!   watches when the directory is moved away or deleted, and re-walks everything after a queue
//!   overflow ([`Walker::rescan`]).
//! - `watch` watches what Node's `fs.watch` does wherever it is (a shared filesystem too, as Node
//!   does), lists as Node's recursive watcher does (atime as the kernel decides), reports every
//!   entry it finds in a new directory, in name order ([`Walker::add_tree`]'s `found`), never
//!   walks into nor reports the agent's temp files ([`Rules::skip`]), and keeps the watches of a
//!   directory moved away until the kernel drops them.

use rustix::fs::inotify as sys;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::io::unix::AsyncFd;

/// The absolute paths (bytes) of the directories with a live watch.
pub(crate) type Watched = Arc<RwLock<HashSet<Box<[u8]>>>>;

/// What one user asks of the walker (see the module docs for why they differ).
pub(crate) struct Rules {
    /// Who logs ("fs.changes", "watch").
    pub(crate) name: &'static str,
    /// The events (and flags) every watch asks for; a directory of a tree adds
    /// `IN_ONLYDIR|IN_DONT_FOLLOW`.
    pub(crate) mask: u32,
    /// Leave out directories on shared filesystems, with their subtree.
    pub(crate) skip_shared: bool,
    /// List directories with `O_NOATIME` (where the agent owns them).
    pub(crate) noatime: bool,
    /// Entries the walk neither descends into nor reports.
    pub(crate) skip: fn(&OsStr) -> bool,
    /// Bytes read from the queue at a time.
    pub(crate) read_buf: usize,
    /// Told once when the kernel refuses a watch for `max_user_watches` (the directory refused,
    /// how many are watched).
    pub(crate) on_full: fn(&Path, usize),
}

/// One decoded inotify event.
pub(crate) struct Event {
    pub(crate) wd: i32,
    pub(crate) mask: u32,
    pub(crate) cookie: u32,
    /// The entry's name; `None` for an event of the watched inode itself.
    pub(crate) name: Option<OsString>,
}

/// The walker (used by one task or thread at a time; the descriptor is shared with a task that
/// waits for it to be readable).
pub(crate) struct Walker {
    fd: Arc<AsyncFd<OwnedFd>>,
    root: PathBuf,
    rules: Rules,
    wds: HashMap<i32, PathBuf>,
    /// Ordered by components, so a directory's subtree is one contiguous range.
    dirs: BTreeMap<PathBuf, i32>,
    watched: Option<Watched>,
    /// Directories found but not watched yet ([`Walker::arm_some`]), shallowest first.
    queued: VecDeque<PathBuf>,
    full_logged: bool,
    shared_logged: bool,
    buf: Vec<u8>,
}

impl Walker {
    /// A new inotify instance (non-blocking, registered with tokio: call it inside the runtime)
    /// for the tree at `root` (absolute). On error, the syscall that failed.
    pub(crate) fn new(
        root: PathBuf,
        rules: Rules,
        watched: Option<Watched>,
    ) -> Result<Self, (&'static str, io::Error)> {
        let fd = sys::init(sys::CreateFlags::NONBLOCK | sys::CreateFlags::CLOEXEC)
            .map_err(|e| ("inotify_init", e.into()))?;
        // Registered before any walk: what happens meanwhile makes it readable at once.
        // SAFETY: the OwnedFd stays open, and the same descriptor, for as long as the AsyncFd
        // that owns it lives (tokio has no safe constructor since its I/O-safety fix).
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| ("epoll_ctl", e.into_parts().1))?;
        Ok(Walker {
            fd: Arc::new(fd),
            root,
            buf: vec![0u8; rules.read_buf],
            rules,
            wds: HashMap::new(),
            dirs: BTreeMap::new(),
            watched,
            queued: VecDeque::new(),
            full_logged: false,
            shared_logged: false,
        })
    }

    /// The instance, to wait on ([`AsyncFd::readable`]) while [`Walker::read`] reads it.
    pub(crate) fn fd(&self) -> Arc<AsyncFd<OwnedFd>> {
        self.fd.clone()
    }

    /// `rel` (relative to the root, "" for the root) as an absolute path.
    pub(crate) fn abs(&self, rel: &Path) -> PathBuf {
        if rel.as_os_str().is_empty() {
            self.root.clone()
        } else {
            self.root.join(rel)
        }
    }

    /// How many directories are watched.
    pub(crate) fn watch_count(&self) -> usize {
        self.wds.len()
    }

    /// The directory (relative) watch `wd` covers.
    pub(crate) fn dir(&self, wd: i32) -> Option<&Path> {
        self.wds.get(&wd).map(PathBuf::as_path)
    }

    /// The watch of directory `rel`.
    pub(crate) fn wd(&self, rel: &Path) -> Option<i32> {
        self.dirs.get(rel).copied()
    }

    fn add_watch(&self, path: &Path, extra: u32) -> io::Result<i32> {
        let flags = sys::WatchFlags::from_bits_retain(self.rules.mask | extra);
        sys::add_watch(self.fd.get_ref(), path, flags).map_err(io::Error::from)
    }

    /// Watch `rel` alone (a file, or a directory without its subtree), with the user's mask only.
    pub(crate) fn add(&mut self, rel: &Path) -> io::Result<i32> {
        let wd = self.add_watch(&self.abs(rel), 0)?;
        self.map(wd, rel.to_path_buf());
        Ok(wd)
    }

    /// Map `wd` to `rel`; the same inode under another name: the new name wins.
    fn map(&mut self, wd: i32, rel: PathBuf) {
        if let Some(old) = self.wds.insert(wd, rel.clone()) {
            if old != rel && self.dirs.get(&old) == Some(&wd) {
                self.dirs.remove(&old);
                self.unpublish([&old]);
            }
        }
        self.dirs.insert(rel, wd);
    }

    /// Watch the directory `top` (relative) and every real directory under it (see the module
    /// docs). With `found`, every entry under `top` (relative names, a directory before what it
    /// holds, each directory's entries in name order) is appended to it.
    pub(crate) fn add_tree(
        &mut self,
        top: &Path,
        mut found: Option<&mut Vec<PathBuf>>,
    ) -> io::Result<()> {
        // (relative name, is a directory, is `top`), last to visit first.
        let mut stack = vec![(top.to_path_buf(), true, true)];
        let mut added: Vec<Box<[u8]>> = Vec::new();
        while let Some((rel, is_dir, first)) = stack.pop() {
            if !first {
                if let Some(found) = found.as_deref_mut() {
                    found.push(rel.clone());
                }
            }
            if !is_dir {
                continue;
            }
            let dir = self.abs(&rel);
            match self.watch_dir(&rel, &mut added) {
                Ok(true) => {}
                Ok(false) => continue,
                Err(e) if first => {
                    self.publish(added);
                    return Err(e);
                }
                Err(_) => continue,
            }
            let mut entries = list(&dir, self.rules.noatime, found.is_some());
            if found.is_some() {
                entries.sort_by(|a, b| a.0.cmp(&b.0));
            }
            for (name, is_dir) in entries.into_iter().rev() {
                if !(self.rules.skip)(&name) {
                    stack.push((rel.join(name), is_dir, false));
                }
            }
        }
        self.publish(added);
        Ok(())
    }

    /// Watch the directory `rel` itself (`IN_ONLYDIR|IN_DONT_FOLLOW` added) and note it in
    /// `added` (the caller publishes). `Ok(false)`: on a shared filesystem and left out (with its
    /// subtree) by the rules.
    fn watch_dir(&mut self, rel: &Path, added: &mut Vec<Box<[u8]>>) -> io::Result<bool> {
        let dir = self.abs(rel);
        if self.rules.skip_shared {
            if let Some(kind) = shared_fs(&dir) {
                if !self.shared_logged {
                    self.shared_logged = true;
                    tracing::info!(
                        "{}: {} is on a shared filesystem ({kind}); changes made from other \
                         machines raise no inotify event, so nothing there is watched",
                        self.rules.name,
                        dir.display()
                    );
                }
                return Ok(false);
            }
        }
        let wd = match self.add_watch(&dir, libc::IN_ONLYDIR | libc::IN_DONT_FOLLOW) {
            Ok(wd) => wd,
            Err(e) => {
                tracing::debug!("{}: watch {}: {e}", self.rules.name, dir.display());
                if e.raw_os_error() == Some(libc::ENOSPC) && !self.full_logged {
                    self.full_logged = true;
                    (self.rules.on_full)(&dir, self.wds.len());
                }
                return Err(e);
            }
        };
        self.map(wd, rel.to_path_buf());
        added.push(dir.as_os_str().as_bytes().into());
        Ok(true)
    }

    /// The subdirectories of `rel` the walk descends into, as relative names.
    fn subdirs(&self, rel: &Path) -> impl Iterator<Item = PathBuf> + '_ {
        let rel = rel.to_path_buf();
        list(&self.abs(&rel), self.rules.noatime, false)
            .into_iter()
            .filter(|(name, _)| !(self.rules.skip)(name))
            .map(move |(name, _)| rel.join(name))
    }

    /// Watch the root alone (its error is returned) and queue its subdirectories for
    /// [`Walker::arm_some`]: the tree is then armed breadth first, a step at a time, instead of
    /// all at once by [`Walker::add_tree`].
    pub(crate) fn arm_root(&mut self) -> io::Result<()> {
        let mut added = Vec::new();
        let watched = self.watch_dir(Path::new(""), &mut added);
        self.publish(added);
        if watched? {
            let subs: Vec<PathBuf> = self.subdirs(Path::new("")).collect();
            self.queued.extend(subs);
        }
        Ok(())
    }

    /// Watch up to `n` queued directories, shallowest first, queueing their subdirectories; each
    /// is listed after its own watch exists, so nothing created meanwhile is missed, and a queued
    /// directory's parent is always watched. `stop_before` (absolute path) ends the step before
    /// that directory (tests hold the arming with it). Whether any remain queued.
    pub(crate) fn arm_some(&mut self, n: usize, stop_before: &dyn Fn(&Path) -> bool) -> bool {
        let mut added = Vec::new();
        for _ in 0..n {
            let Some(rel) = self.queued.pop_front() else {
                break;
            };
            if stop_before(&self.abs(&rel)) {
                self.queued.push_front(rel);
                break;
            }
            if let Ok(true) = self.watch_dir(&rel, &mut added) {
                let subs: Vec<PathBuf> = self.subdirs(&rel).collect();
                self.queued.extend(subs);
            }
        }
        self.publish(added);
        !self.queued.is_empty()
    }

    fn publish(&self, added: Vec<Box<[u8]>>) {
        if added.is_empty() {
            return;
        }
        if let Some(Ok(mut w)) = self.watched.as_ref().map(|w| w.write()) {
            w.extend(added);
        }
    }

    fn unpublish<'a>(&self, gone: impl IntoIterator<Item = &'a PathBuf>) {
        if let Some(Ok(mut w)) = self.watched.as_ref().map(|w| w.write()) {
            for rel in gone {
                w.remove(self.abs(rel).as_os_str().as_bytes());
            }
        }
    }

    /// Drop the watches of `top` (relative) and everything under it.
    pub(crate) fn forget(&mut self, top: &Path) {
        let gone: Vec<(PathBuf, i32)> = self
            .dirs
            .range(top.to_path_buf()..)
            .take_while(|(p, _)| p.starts_with(top))
            .map(|(p, wd)| (p.clone(), *wd))
            .collect();
        if gone.is_empty() {
            return;
        }
        self.unpublish(gone.iter().map(|(p, _)| p));
        for (p, wd) in gone {
            self.dirs.remove(&p);
            if self.wds.get(&wd) == Some(&p) {
                self.wds.remove(&wd);
            }
            // A watch the kernel already dropped gives EINVAL: nothing to do.
            let _ = sys::remove_watch(self.fd.get_ref(), wd);
        }
    }

    /// The kernel dropped watch `wd` (`IN_IGNORED`): it leaves the table. Returns its directory.
    pub(crate) fn ignored(&mut self, wd: i32) -> Option<PathBuf> {
        let p = self.wds.remove(&wd)?;
        if self.dirs.get(&p) == Some(&wd) {
            self.dirs.remove(&p);
            self.unpublish([&p]);
        }
        Some(p)
    }

    /// Re-walk everything from the root (after an overflow): new directories get watches, and
    /// every path is mapped afresh; watches of what is gone are removed.
    pub(crate) fn rescan(&mut self) {
        let old: Vec<i32> = self.wds.keys().copied().collect();
        self.queued.clear();
        self.wds.clear();
        self.dirs.clear();
        if let Some(Ok(mut w)) = self.watched.as_ref().map(|w| w.write()) {
            w.clear();
        }
        if let Err(e) = self.add_tree(Path::new(""), None) {
            tracing::warn!("{}: re-watching the tree failed: {e}", self.rules.name);
        }
        for wd in old {
            if !self.wds.contains_key(&wd) {
                let _ = sys::remove_watch(self.fd.get_ref(), wd);
            }
        }
    }

    /// Read what is queued (up to one buffer), decoded. `None`: the queue is empty.
    pub(crate) fn read(&mut self) -> io::Result<Option<Vec<Event>>> {
        let n = loop {
            match rustix::io::read(self.fd.get_ref(), &mut self.buf[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            }
        };
        Ok(Some(decode(&self.buf[..n])))
    }
}

/// The events in `buf` (`struct inotify_event`s; a short last one is cut at the end).
fn decode(buf: &[u8]) -> Vec<Event> {
    const HEAD: usize = 16;
    let n = buf.len();
    let mut out = Vec::new();
    let mut off = 0;
    while off + HEAD <= n {
        let field = |i: usize| {
            let mut b = [0u8; 4];
            b.copy_from_slice(&buf[off + i..off + i + 4]);
            b
        };
        let len = u32::from_ne_bytes(field(12)) as usize;
        let end = (off + HEAD + len).min(n);
        let raw = &buf[off + HEAD..end];
        let name = &raw[..raw.iter().position(|&b| b == 0).unwrap_or(raw.len())];
        out.push(Event {
            wd: i32::from_ne_bytes(field(0)),
            mask: u32::from_ne_bytes(field(4)),
            cookie: u32::from_ne_bytes(field(8)),
            name: (!name.is_empty()).then(|| OsStr::from_bytes(name).to_os_string()),
        });
        off = end;
    }
    out
}

/// The kind of filesystem `dir` is on if other machines (or a VM host) can change it behind the
/// kernel's back — network, cluster and shared-folder filesystems, and FUSE (sshfs, virtiofs, …)
/// — where inotify only sees this machine's own changes. `None` for local filesystems.
pub(crate) fn shared_fs(dir: &Path) -> Option<&'static str> {
    let st = rustix::fs::statfs(dir).ok()?;
    shared_fs_kind((st.f_type as u64 & 0xffff_ffff) as u32)
}

/// `statfs.f_type` magic numbers (linux/magic.h and the filesystems' own headers).
pub(crate) fn shared_fs_kind(magic: u32) -> Option<&'static str> {
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

/// The entries of `dir` (not following symlinks) with whether each is a directory; only the
/// directories unless `all`. With `noatime`, listed with O_NOATIME where the agent owns `dir`.
fn list(dir: &Path, noatime: bool, all: bool) -> Vec<(OsString, bool)> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = if noatime {
        match rustix::fs::open(dir, flags | OFlags::NOATIME, Mode::empty()) {
            Err(rustix::io::Errno::PERM) => rustix::fs::open(dir, flags, Mode::empty()),
            r => r,
        }
    } else {
        rustix::fs::open(dir, flags, Mode::empty())
    };
    let Ok(d) = fd.and_then(rustix::fs::Dir::new) else {
        return vec![];
    };
    let mut out = vec![];
    for e in d {
        let Ok(e) = e else { break };
        let name = e.file_name().to_bytes();
        if name == b"." || name == b".." {
            continue;
        }
        let name = OsStr::from_bytes(name);
        let is_dir = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => {
                std::fs::symlink_metadata(dir.join(name)).is_ok_and(|m| m.is_dir())
            }
            _ => false,
        };
        if is_dir || all {
            out.push((name.to_os_string(), is_dir));
        }
    }
    out
}
