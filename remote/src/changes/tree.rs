//! The watch table of the change tracker: one inotify instance, a watch on every real directory
//! under the root (added before each directory is listed, never through a symlink), and reading
//! its queue into [`Batch`]es of changed paths.

use crate::fs::sys::temp_target;
use rustix::fs::inotify;
use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::ffi::OsStr;
use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use tokio::io::unix::AsyncFd;

/// Bytes read from the queue per batch.
const READ_BUF: usize = 256 * 1024;

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

pub(crate) type Watched = Arc<RwLock<HashSet<Box<[u8]>>>>;

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
    /// The inotify instance (shared with the tracker's reader, which waits on it).
    fd: Arc<AsyncFd<OwnedFd>>,
    root: PathBuf,
    pub(crate) wds: HashMap<i32, PathBuf>,
    /// Ordered by components, so a directory's subtree is one contiguous range.
    dirs: BTreeMap<PathBuf, i32>,
    watched: Watched,
    /// Directories found but not watched yet, for [`Tree::arm_some`] (breadth first).
    queued: VecDeque<PathBuf>,
    full_logged: bool,
    shared_logged: bool,
    buf: Vec<u8>,
}

impl Tree {
    pub(crate) fn new(fd: Arc<AsyncFd<OwnedFd>>, root: PathBuf, watched: Watched) -> Self {
        Tree {
            fd,
            root,
            wds: HashMap::new(),
            dirs: BTreeMap::new(),
            watched,
            queued: VecDeque::new(),
            full_logged: false,
            shared_logged: false,
            buf: vec![0u8; READ_BUF],
        }
    }

    fn add_watch(&self, path: &Path) -> io::Result<i32> {
        inotify::add_watch(
            self.fd.get_ref(),
            path,
            inotify::WatchFlags::from_bits_retain(MASK),
        )
        .map_err(io::Error::from)
    }

    /// A watch the kernel already dropped gives EINVAL: nothing to do.
    fn remove_watch(&self, wd: i32) {
        let _ = inotify::remove_watch(self.fd.get_ref(), wd);
    }

    /// Watch `top` and every real directory under it (never through a symlink). Watches are
    /// added before each directory is listed, so nothing created meanwhile is missed. The error
    /// is that of `top` itself; below it, what cannot be watched is left out with its subtree.
    pub(crate) fn add_tree(&mut self, top: &Path) -> io::Result<()> {
        let mut stack = vec![top.to_path_buf()];
        let mut added: Vec<Box<[u8]>> = Vec::new();
        let mut first = true;
        while let Some(dir) = stack.pop() {
            match self.watch_dir(&dir, &mut added) {
                Ok(true) => stack.extend(subdirs(&dir)),
                Ok(false) => {}
                Err(e) if first => {
                    self.publish(added);
                    return Err(e);
                }
                Err(_) => {}
            }
            first = false;
        }
        self.publish(added);
        Ok(())
    }

    /// Watch the root alone (its error is the walk's) and queue its subdirectories for
    /// [`Tree::arm_some`]: the project is then armed breadth first, a step at a time.
    pub(crate) fn arm_root(&mut self) -> io::Result<()> {
        let root = self.root.clone();
        let mut added = Vec::new();
        let watched = self.watch_dir(&root, &mut added);
        self.publish(added);
        if watched? {
            self.queued.extend(subdirs(&root));
        }
        Ok(())
    }

    /// Watch up to `n` queued directories, shallowest first, queueing their subdirectories
    /// (each is listed after its own watch exists, so nothing created meanwhile is missed; a
    /// queued directory's parent is always watched). Whether any remain queued.
    pub(crate) fn arm_some(&mut self, n: usize) -> bool {
        let mut added = Vec::new();
        for _ in 0..n {
            let Some(dir) = self.queued.pop_front() else {
                break;
            };
            #[cfg(test)]
            if super::test_hold::held(&dir) {
                self.queued.push_front(dir);
                break;
            }
            if let Ok(true) = self.watch_dir(&dir, &mut added) {
                self.queued.extend(subdirs(&dir));
            }
        }
        self.publish(added);
        !self.queued.is_empty()
    }

    /// Watch `dir` itself and note it in `added` (published by the caller). `Ok(false)`: on a
    /// shared filesystem, left out with its subtree.
    fn watch_dir(&mut self, dir: &Path, added: &mut Vec<Box<[u8]>>) -> io::Result<bool> {
        if let Some(kind) = shared_fs(dir) {
            // Other machines change these without an inotify event here: never cached.
            if !self.shared_logged {
                self.shared_logged = true;
                tracing::info!(
                    "fs.changes: {} is on a shared filesystem ({kind}); changes made from \
                     other machines raise no inotify event, so nothing there is cached",
                    dir.display()
                );
            }
            return Ok(false);
        }
        let wd = match self.add_watch(dir) {
            Ok(wd) => wd,
            Err(e) => {
                if e.raw_os_error() == Some(libc::ENOSPC) && !self.full_logged {
                    self.full_logged = true;
                    full_notice(dir, self.wds.len());
                }
                return Err(e);
            }
        };
        // The same inode under another name (a move we saw only half of): the new name wins.
        if let Some(old) = self.wds.insert(wd, dir.to_path_buf()) {
            if old != dir && self.dirs.get(&old) == Some(&wd) {
                self.dirs.remove(&old);
                if let Ok(mut w) = self.watched.write() {
                    w.remove(old.as_os_str().as_bytes());
                }
            }
        }
        self.dirs.insert(dir.to_path_buf(), wd);
        added.push(dir.as_os_str().as_bytes().into());
        Ok(true)
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
            self.remove_watch(wd);
        }
    }

    /// Re-walk everything (after an overflow): new directories get watches, and every path is
    /// mapped afresh; watches of what is gone are removed.
    fn rescan(&mut self) {
        let old: Vec<i32> = self.wds.keys().copied().collect();
        self.queued.clear();
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
                self.remove_watch(wd);
            }
        }
    }

    /// Read what is queued (up to one buffer) and apply it to the table.
    pub(crate) fn read_batch(&mut self) -> Batch {
        let mut batch = Batch::default();
        let n = loop {
            match rustix::io::read(self.fd.get_ref(), &mut self.buf[..]) {
                Ok(n) => break n,
                Err(rustix::io::Errno::INTR) => continue,
                Err(rustix::io::Errno::AGAIN) => {
                    batch.drained = true;
                    return batch;
                }
                Err(e) => {
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

/// The subdirectories of `dir` (not following symlinks), listed without touching its atime
/// (O_NOATIME, where the agent owns the directory): arming the feed must not change what a
/// `stat` of the directory says, or the client's view would differ from a plain run's.
fn subdirs(dir: &Path) -> Vec<PathBuf> {
    use rustix::fs::{FileType, Mode, OFlags};
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::NOFOLLOW | OFlags::CLOEXEC;
    let fd = match rustix::fs::open(dir, flags | OFlags::NOATIME, Mode::empty()) {
        Err(rustix::io::Errno::PERM) => rustix::fs::open(dir, flags, Mode::empty()),
        r => r,
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
        let path = dir.join(OsStr::from_bytes(name));
        let is_dir = match e.file_type() {
            FileType::Directory => true,
            FileType::Unknown => std::fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()),
            _ => false,
        };
        if is_dir {
            out.push(path);
        }
    }
    out
}
