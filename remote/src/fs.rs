//! The `fs.*` methods. Every path goes through [`Sandbox::resolve`] first; errors are
//! [`Errno`]s carrying the path as the client gave it and the syscall name Node would report.
//!
//! Whole-file writes (`w`/`wx`) and uploads are atomic: a temp file with a unique name in the
//! target's directory, written, fsynced, then renamed over the target (an existing file keeps its
//! mode, and its owner where permitted). The directory itself is not fsynced. A replaced file
//! that had other hard links is a new inode afterwards (the price of atomicity). Appends use
//! `O_APPEND` directly.

use crate::sandbox::{Follow, Pinned, Sandbox};
use crate::server::{
    on_blocking_pool, register, register_blocking, register_inline, Agent, Failure, Session, Table,
};
use protocol::fs::*;
use protocol::methods as m;
use protocol::{Bytes, Empty, Errno};
use rand::Rng;
use std::collections::HashMap;
use std::ffi::CString;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::UNIX_EPOCH;

/// Register every `fs.*` method except `fs.batch`.
pub fn register_all(t: &mut Table) {
    register_inline::<m::Stat, _>(t, stat);
    register_inline::<m::Access, _>(t, access);
    register_blocking::<m::ReadDir, _>(t, |_, s, p| readdir(s, p));
    register_blocking::<m::Read, _>(t, |_, s, p| read(s, p));
    register_mutation::<m::Write, _>(t, |_, s, p| write(s, p));
    register_blocking::<m::UploadBegin, _>(t, upload_begin);
    register::<m::UploadChunk, _, _>(t, upload_chunk);
    register_mutation::<m::UploadCommit, _>(t, |a, _, p| a.uploads.commit(&p.id));
    register_blocking::<m::UploadAbort, _>(t, |a, _, p| {
        a.uploads.abort(&p.id);
        Ok(Empty)
    });
    register_mutation::<m::Mkdir, _>(t, |_, s, p| mkdir(s, p));
    register_mutation::<m::Rmdir, _>(t, |_, s, p| {
        let r = s.sandbox.pin(&p.path, Follow::NotLast, "rmdir")?;
        std::fs::remove_dir(&r).map_err(|e| os(&e, "rmdir", &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Unlink, _>(t, |_, s, p| {
        let r = s.sandbox.pin(&p.path, Follow::NotLast, "unlink")?;
        std::fs::remove_file(&r).map_err(|e| os(&e, "unlink", &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Rm, _>(t, |_, s, p| rm(s, p));
    register_mutation::<m::Rename, _>(t, |_, s, p| {
        let (from, to) = two(&s.sandbox, &p.from, &p.to, Follow::NotLast, "rename")?;
        std::fs::rename(&from, &to).map_err(|e| os2(&e, "rename", &p.from, &p.to))?;
        Ok(Empty)
    });
    register_mutation::<m::CopyFile, _>(t, |_, s, p| copy_file(s, p));
    register_inline::<m::Realpath, _>(t, |s, p| {
        let r = s.sandbox.pin(&p.path, Follow::All, "realpath")?;
        std::fs::symlink_metadata(&*r).map_err(|e| os(&e, "realpath", &p.path))?;
        Ok(r.canonical().to_string_lossy().into_owned())
    });
    register_inline::<m::Readlink, _>(t, |s, p| {
        let r = s.sandbox.pin(&p.path, Follow::NotLast, "readlink")?;
        let target = std::fs::read_link(&r).map_err(|e| os(&e, "readlink", &p.path))?;
        Ok(target.to_string_lossy().into_owned())
    });
    register_mutation::<m::Symlink, _>(t, |_, s, p| {
        let err = |e: Errno| e.with_dest(&p.path);
        if p.target.contains('\0') {
            return Err(Errno::new("EINVAL", "symlink", Some(&p.target))
                .with_dest(&p.path)
                .into());
        }
        let r = s
            .sandbox
            .pin(&p.path, Follow::NotLast, "symlink")
            .map_err(|mut e| {
                e.path = Some(p.target.clone());
                err(e)
            })?;
        std::os::unix::fs::symlink(&p.target, &r)
            .map_err(|e| os2(&e, "symlink", &p.target, &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Link, _>(t, |_, s, p| {
        let (from, to) = two(&s.sandbox, &p.from, &p.to, Follow::NotLast, "link")?;
        std::fs::hard_link(&from, &to).map_err(|e| os2(&e, "link", &p.from, &p.to))?;
        Ok(Empty)
    });
    register_mutation::<m::Chmod, _>(t, |_, s, p| {
        let r = s.sandbox.pin(&p.path, Follow::All, "chmod")?;
        std::fs::set_permissions(&r, std::fs::Permissions::from_mode(p.mode & 0o7777))
            .map_err(|e| os(&e, "chmod", &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Utimes, _>(t, |_, s, p| utimes(s, p));
    register_mutation::<m::Truncate, _>(t, |_, s, p| {
        let r = s.sandbox.pin(&p.path, Follow::All, "open")?;
        let f = OpenOptions::new()
            .write(true)
            .open(&r)
            .map_err(|e| os(&e, "open", &p.path))?;
        f.set_len(p.length)
            .map_err(|e| os(&e, "ftruncate", &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Mkdtemp, _>(t, |_, s, p| mkdtemp(s, p));
}

/// Register a blocking handler that changes the file system. Whatever its outcome, the change
/// feed is flushed before the answer (`Tracker::flush`, a no-op without a subscriber), so the
/// `fs.changed` of what it did reach the client first (protocol::watch::Change): the client then
/// never has to guess where a call through a symlink landed. Inside `fs.batch` each call does it.
fn register_mutation<M, F>(t: &mut Table, f: F)
where
    M: protocol::Method,
    F: Fn(&Agent, &Session, M::Params) -> Result<M::Result, Failure>
        + Send
        + Sync
        + Clone
        + 'static,
{
    register::<M, _, _>(t, move |agent: Arc<Agent>, p| {
        let f = f.clone();
        async move {
            let session = agent.session()?;
            let s = session.clone();
            let r = on_blocking_pool(move || f(&agent, &s, p)).await;
            session.changes.flush().await;
            r
        }
    });
}

/// An OS error on one path.
pub fn os(e: &io::Error, syscall: &str, path: &str) -> Failure {
    Failure::Os(Errno::from_io(e, syscall, Some(path)))
}

/// An OS error on two paths (`path -> dest`).
fn os2(e: &io::Error, syscall: &str, path: &str, dest: &str) -> Failure {
    Failure::Os(Errno::from_io(e, syscall, Some(path)).with_dest(dest))
}

/// Resolve both paths of a two-path call; errors name both.
fn two(
    sb: &Sandbox,
    from: &str,
    to: &str,
    follow: Follow,
    syscall: &str,
) -> Result<(Pinned, Pinned), Failure> {
    let a = sb.pin(from, follow, syscall).map_err(|e| e.with_dest(to))?;
    let b = sb.pin(to, follow, syscall).map_err(|mut e| {
        e.path = Some(from.to_string());
        e.with_dest(to)
    })?;
    Ok((a, b))
}

fn cpath(p: &Path) -> io::Result<CString> {
    CString::new(p.as_os_str().as_bytes()).map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))
}

fn time_of(secs: i64, nsecs: i64) -> Time {
    Time(secs, nsecs.clamp(0, 999_999_999) as u32)
}

/// `fs.Stats` from a metadata.
pub fn to_stat(md: &std::fs::Metadata) -> protocol::fs::Stat {
    let birthtime = md
        .created()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map(|d| Time(d.as_secs() as i64, d.subsec_nanos()))
        .unwrap_or_default();
    protocol::fs::Stat {
        dev: md.dev(),
        ino: md.ino(),
        mode: md.mode(),
        nlink: md.nlink(),
        uid: md.uid(),
        gid: md.gid(),
        rdev: md.rdev(),
        size: md.size(),
        blksize: md.blksize(),
        blocks: md.blocks(),
        atime: time_of(md.atime(), md.atime_nsec()),
        mtime: time_of(md.mtime(), md.mtime_nsec()),
        ctime: time_of(md.ctime(), md.ctime_nsec()),
        birthtime,
        cache: false,
    }
}

/// Whether an answer about `path` may carry `cache: true` (see `changes`): its parent was a
/// watched directory before the call (`watched`, decided before any syscall) and the path was
/// reached without a symlink (for a following call, not even at its end).
fn plain(watched: bool, r: &Pinned, path: &str) -> bool {
    watched && r.canonical().as_os_str().as_bytes() == path.as_bytes()
}

/// A failed lookup that stays true until a change is reported: ENOENT, ENOTDIR.
fn cacheable(f: Failure, plain: bool) -> Failure {
    match f {
        Failure::Os(mut e) if plain && (e.code == "ENOENT" || e.code == "ENOTDIR") => {
            e.cache = true;
            Failure::Os(e)
        }
        f => f,
    }
}

pub(crate) fn stat(s: &Session, p: StatParams) -> Result<protocol::fs::Stat, Failure> {
    let (follow, syscall) = if p.lstat {
        (Follow::NotLast, "lstat")
    } else {
        (Follow::All, "stat")
    };
    let watched = s.changes.watched_parent(&p.path);
    let r = s.sandbox.pin(&p.path, follow, syscall)?;
    let plain = plain(watched, &r, &p.path);
    let md = if p.lstat {
        std::fs::symlink_metadata(&r)
    } else {
        std::fs::metadata(&r)
    };
    let mut st = to_stat(&md.map_err(|e| cacheable(os(&e, syscall, &p.path), plain))?);
    st.cache = plain;
    Ok(st)
}

fn access(s: &Session, p: AccessParams) -> Result<Empty, Failure> {
    let watched = s.changes.watched_parent(&p.path);
    let r = s.sandbox.pin(&p.path, Follow::All, "access")?;
    let plain = plain(watched, &r, &p.path);
    let c = cpath(&r).map_err(|e| os(&e, "access", &p.path))?;
    // SAFETY: valid C string.
    if unsafe { libc::access(c.as_ptr(), (p.mode & 7) as libc::c_int) } != 0 {
        return Err(cacheable(
            os(&io::Error::last_os_error(), "access", &p.path),
            plain,
        ));
    }
    Ok(Empty)
}

fn kind_of(ft: std::fs::FileType) -> FileKind {
    use std::os::unix::fs::FileTypeExt;
    if ft.is_symlink() {
        FileKind::Symlink
    } else if ft.is_dir() {
        FileKind::Dir
    } else if ft.is_file() {
        FileKind::File
    } else if ft.is_block_device() {
        FileKind::Block
    } else if ft.is_char_device() {
        FileKind::Char
    } else if ft.is_fifo() {
        FileKind::Fifo
    } else if ft.is_socket() {
        FileKind::Socket
    } else {
        FileKind::Unknown
    }
}

/// One directory's entries, sorted by name (d_type; std falls back to lstat where it is unset).
fn list(dir: &Path) -> io::Result<Vec<(String, FileKind)>> {
    let mut v = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let kind = e.file_type().map(kind_of).unwrap_or(FileKind::Unknown);
        v.push((e.file_name().to_string_lossy().into_owned(), kind));
    }
    v.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
    Ok(v)
}

fn readdir(s: &Session, p: ReadDirParams) -> Result<Vec<DirEntry>, Failure> {
    let root = s.sandbox.pin(&p.path, Follow::All, "scandir")?;
    let first = list(&root).map_err(|e| os(&e, "scandir", &p.path))?;
    if !p.recursive {
        return Ok(first
            .into_iter()
            .map(|(name, kind)| DirEntry { name, kind })
            .collect());
    }
    // Node's order: breadth first, a queue of directories, each listed in turn. Symlinked
    // directories are not descended (no loops, nothing outside the sandbox).
    let mut out = Vec::new();
    let mut queue: std::collections::VecDeque<(String, Vec<(String, FileKind)>)> =
        [(String::new(), first)].into();
    while let Some((prefix, entries)) = queue.pop_front() {
        for (name, kind) in entries {
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            if kind == FileKind::Dir {
                // A directory that vanished or cannot be read is skipped, like Node.
                // Pinned from the root with O_NOFOLLOW: a directory swapped for a symlink since
                // it was listed is skipped, never followed.
                let sub = s
                    .sandbox
                    .open_beneath(root.canonical().join(&rel), true)
                    .and_then(|d| list(&d));
                if let Ok(sub) = sub {
                    queue.push_back((rel.clone(), sub));
                }
            }
            out.push(DirEntry { name: rel, kind });
        }
    }
    Ok(out)
}

pub(crate) fn read(s: &Session, p: ReadParams) -> Result<ReadResult, Failure> {
    let watched = s.changes.watched_parent(&p.path);
    let r = s.sandbox.pin(&p.path, Follow::All, "open")?;
    let plain = plain(watched, &r, &p.path);
    let f = File::open(&r).map_err(|e| cacheable(os(&e, "open", &p.path), plain))?;
    let md = f.metadata().map_err(|e| os(&e, "fstat", &p.path))?;
    if md.is_dir() {
        return Err(Errno::new("EISDIR", "read", None).into());
    }
    let want = p.length.unwrap_or(MAX_CHUNK as u64).min(MAX_CHUNK as u64) as usize;
    let size = md.len();
    let initial = size.saturating_sub(p.offset).min(want as u64) as usize;
    let mut buf = vec![0u8; initial];
    let mut got = 0;
    loop {
        if got == buf.len() {
            // The file may have grown, or stat says 0 (e.g. /proc): read on, up to the cap.
            if got >= want {
                break;
            }
            buf.resize(want.min(got + 64 * 1024), 0);
        }
        match f.read_at(&mut buf[got..], p.offset + got as u64) {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(os(&e, "read", &p.path)),
        }
    }
    buf.truncate(got);
    // Cacheable only as the whole file.
    let whole = p.offset == 0 && got as u64 == size;
    Ok(ReadResult {
        data: Bytes(buf),
        size,
        cache: plain && whole,
    })
}

/// Where a whole-file write lands: the resolved target and what to do with it.
struct Target {
    /// The entry under its pinned directory (`pin` keeps that directory open).
    resolved: PathBuf,
    pin: Pinned,
    /// Mode and owner of the file being replaced.
    existing: Option<(u32, u32, u32)>,
}

/// Resolve and check a write target (EEXIST for exclusive flags, EISDIR for directories).
fn write_target(s: &Session, path: &str, flag: WriteFlag) -> Result<Target, Failure> {
    let r = s.sandbox.pin(path, Follow::All, "open")?;
    match std::fs::metadata(&*r) {
        Ok(md) => {
            if md.is_dir() {
                return Err(Errno::new("EISDIR", "open", Some(path)).into());
            }
            if matches!(flag, WriteFlag::Exclusive | WriteFlag::AppendExclusive) {
                return Err(Errno::new("EEXIST", "open", Some(path)).into());
            }
            Ok(Target {
                resolved: r.entry().to_path_buf(),
                pin: r,
                existing: Some((md.mode() & 0o7777, md.uid(), md.gid())),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(Target {
            resolved: r.entry().to_path_buf(),
            pin: r,
            existing: None,
        }),
        Err(e) => Err(os(&e, "open", path)),
    }
}

/// Length of the random part of a temp file's name.
const TEMP_SUFFIX: usize = 8;

/// Marks the temp name of a write that creates its target (none existed), so that a watch can
/// report the rename as Node reports a new file ('rename', then 'change').
const TEMP_NEW: &str = "new-";

/// If `name` is one of [`create_temp`]'s names (`.<target>.pi-bridge-[new-]<8 letters or
/// digits>.tmp`, which watches never report): the target's name, and whether the write creates it.
pub fn temp_target(name: &str) -> Option<(&str, bool)> {
    let rest = name.strip_prefix('.')?.strip_suffix(".tmp")?;
    let (target, suffix) = rest.rsplit_once(".pi-bridge-")?;
    let (creates, random) = match suffix.strip_prefix(TEMP_NEW) {
        Some(r) => (true, r),
        None => (false, suffix),
    };
    let ours = !target.is_empty()
        && random.len() == TEMP_SUFFIX
        && random.bytes().all(|b| b.is_ascii_alphanumeric());
    ours.then_some((target, creates))
}

/// A fresh temp file next to `target`, created with `mode` (umask applies) or `existing`'s mode.
fn create_temp(target: &Target, mode: Option<u32>, path: &str) -> Result<(File, PathBuf), Failure> {
    let dir = target.resolved.parent().unwrap_or(Path::new("/"));
    let name = target
        .resolved
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let create_mode = mode.unwrap_or(0o666) & 0o7777;
    let tag = if target.existing.is_some() {
        ""
    } else {
        TEMP_NEW
    };
    for _ in 0..100 {
        let tmp = dir.join(format!(
            ".{name}.pi-bridge-{tag}{}.tmp",
            random_suffix(TEMP_SUFFIX)
        ));
        match OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(create_mode)
            .open(&tmp)
        {
            Ok(f) => {
                if let Some((mode, uid, gid)) = target.existing {
                    let _ = f.set_permissions(std::fs::Permissions::from_mode(mode));
                    // Best effort: only root (or the owner, for the group) may keep the owner.
                    let _ = std::os::unix::fs::fchown(&f, Some(uid), Some(gid));
                }
                return Ok((f, tmp));
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(os(&e, "open", path)),
        }
    }
    Err(Errno::new("EEXIST", "open", Some(path))
        .with_detail("no unique temp file name")
        .into())
}

/// Rename the temp file into place; `exclusive` refuses to replace an existing target.
fn place(tmp: &Path, target: &Path, exclusive: bool, path: &str) -> Result<(), Failure> {
    let res = if exclusive {
        rename_noreplace(tmp, target)
    } else {
        std::fs::rename(tmp, target)
    };
    res.map_err(|e| {
        let _ = std::fs::remove_file(tmp);
        let syscall = if e.raw_os_error() == Some(libc::EEXIST) {
            "open"
        } else {
            "rename"
        };
        os(&e, syscall, path)
    })
}

fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    let (a, b) = (cpath(from)?, cpath(to)?);
    // SAFETY: valid C strings; renameat2 via syscall (glibc wrappers vary by version).
    let rc = unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            b.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    if rc == 0 {
        return Ok(());
    }
    let e = io::Error::last_os_error();
    match e.raw_os_error() {
        // File systems without RENAME_NOREPLACE: link (which never replaces), then unlink.
        Some(libc::EINVAL) | Some(libc::ENOSYS) => {
            std::fs::hard_link(from, to)?;
            let _ = std::fs::remove_file(from);
            Ok(())
        }
        _ => Err(e),
    }
}

fn open_append(
    target: &Target,
    flag: WriteFlag,
    mode: Option<u32>,
    path: &str,
) -> Result<File, Failure> {
    let mut o = OpenOptions::new();
    // The entry is the canonical last name: a symlink there now was swapped in; never follow.
    o.append(true)
        .mode(mode.unwrap_or(0o666) & 0o7777)
        .custom_flags(libc::O_NOFOLLOW);
    if flag == WriteFlag::AppendExclusive {
        o.create_new(true);
    } else {
        o.create(true);
    }
    o.open(&target.resolved).map_err(|e| os(&e, "open", path))
}

fn write(s: &Session, p: WriteParams) -> Result<Empty, Failure> {
    if p.data.0.len() > MAX_CHUNK {
        return Err(Failure::Code(
            protocol::ErrorCode::InvalidParams,
            format!("fs.write carries at most {MAX_CHUNK} bytes; use fs.upload.* for more"),
        ));
    }
    let target = write_target(s, &p.path, p.flag)?;
    match p.flag {
        WriteFlag::Append | WriteFlag::AppendExclusive => {
            let mut f = open_append(&target, p.flag, p.mode, &p.path)?;
            f.write_all(&p.data.0)
                .map_err(|e| os(&e, "write", &p.path))?;
        }
        WriteFlag::Write | WriteFlag::Exclusive => {
            let (mut f, tmp) = create_temp(&target, p.mode, &p.path)?;
            let res = f.write_all(&p.data.0).and_then(|_| f.sync_all());
            if let Err(e) = res {
                let _ = std::fs::remove_file(&tmp);
                return Err(os(&e, "write", &p.path));
            }
            drop(f);
            place(
                &tmp,
                &target.resolved,
                p.flag == WriteFlag::Exclusive,
                &p.path,
            )?;
        }
    }
    Ok(Empty)
}

/// A large write in progress.
struct Upload {
    file: Arc<Mutex<File>>,
    /// The temp file (atomic modes) or `None` (appending straight to the target).
    tmp: Option<PathBuf>,
    target: PathBuf,
    /// Keeps the directories `tmp` and `target` name open.
    _pin: Pinned,
    path: String,
    exclusive: bool,
}

/// Open uploads by id; temp files are removed on abort and when the agent exits.
#[derive(Default)]
pub struct Uploads {
    map: Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn unknown(id: &str) -> Failure {
        Failure::Os(
            Errno::new("EBADF", "write", None).with_detail(format!("no upload with id '{id}'")),
        )
    }

    fn commit(&self, id: &str) -> Result<Empty, Failure> {
        let up = self.lock().remove(id).ok_or_else(|| Self::unknown(id))?;
        let file = up.file.lock().unwrap_or_else(|p| p.into_inner());
        if let Err(e) = file.sync_all() {
            if let Some(tmp) = &up.tmp {
                let _ = std::fs::remove_file(tmp);
            }
            return Err(os(&e, "fsync", &up.path));
        }
        drop(file);
        if let Some(tmp) = &up.tmp {
            place(tmp, &up.target, up.exclusive, &up.path)?;
        }
        Ok(Empty)
    }

    fn abort(&self, id: &str) {
        if let Some(up) = self.lock().remove(id) {
            if let Some(tmp) = up.tmp {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }

    /// Drop every unfinished upload (the agent is exiting).
    pub fn abort_all(&self) {
        for (_, up) in self.lock().drain() {
            if let Some(tmp) = up.tmp {
                let _ = std::fs::remove_file(tmp);
            }
        }
    }
}

fn upload_begin(a: &Agent, s: &Session, p: UploadBeginParams) -> Result<UploadId, Failure> {
    let target = write_target(s, &p.path, p.flag)?;
    let (file, tmp) = match p.flag {
        WriteFlag::Append | WriteFlag::AppendExclusive => {
            (open_append(&target, p.flag, p.mode, &p.path)?, None)
        }
        WriteFlag::Write | WriteFlag::Exclusive => {
            let (f, tmp) = create_temp(&target, p.mode, &p.path)?;
            (f, Some(tmp))
        }
    };
    let id = format!("u{}", random_suffix(16));
    a.uploads.lock().insert(
        id.clone(),
        Upload {
            file: Arc::new(Mutex::new(file)),
            tmp,
            target: target.resolved,
            _pin: target.pin,
            path: p.path,
            exclusive: p.flag == WriteFlag::Exclusive,
        },
    );
    Ok(UploadId { id })
}

/// Chunks of one upload are appended in the order their requests arrived: the file lock is
/// taken in arrival order (tokio runs new tasks in order), then the write runs on the blocking
/// pool. Clients should still wait for each chunk's reply (it is their flow control).
async fn upload_chunk(a: Arc<Agent>, p: UploadChunkParams) -> Result<Empty, Failure> {
    if p.data.0.len() > MAX_CHUNK {
        return Err(Failure::Code(
            protocol::ErrorCode::InvalidParams,
            format!("a chunk carries at most {MAX_CHUNK} bytes"),
        ));
    }
    let (file, path) = {
        let map = a.uploads.lock();
        let up = map.get(&p.id).ok_or_else(|| Uploads::unknown(&p.id))?;
        (up.file.clone(), up.path.clone())
    };
    on_blocking_pool(move || {
        let mut f = file.lock().unwrap_or_else(|p| p.into_inner());
        f.write_all(&p.data.0).map_err(|e| os(&e, "write", &path))
    })
    .await?;
    Ok(Empty)
}

fn mkdir(s: &Session, p: MkdirParams) -> Result<MkdirResult, Failure> {
    let mode = p.mode.unwrap_or(0o777) & 0o7777;
    if !p.recursive {
        let r = s.sandbox.pin(&p.path, Follow::NotLast, "mkdir")?;
        std::fs::DirBuilder::new()
            .mode(mode)
            .create(&r)
            .map_err(|e| os(&e, "mkdir", &p.path))?;
        return Ok(MkdirResult { first: None });
    }
    let r = s.sandbox.pin(&p.path, Follow::All, "mkdir")?;
    // Find the missing tail.
    let mut missing = Vec::new();
    let mut cur: &Path = &r;
    loop {
        match std::fs::metadata(cur) {
            Ok(md) if md.is_dir() => break,
            Ok(_) => {
                let code = if missing.is_empty() {
                    "EEXIST"
                } else {
                    "ENOTDIR"
                };
                return Err(Errno::new(code, "mkdir", Some(&p.path)).into());
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                missing.push(cur.to_path_buf());
                match cur.parent() {
                    Some(parent) => cur = parent,
                    None => break,
                }
            }
            Err(e) => return Err(os(&e, "mkdir", &p.path)),
        }
    }
    if missing.is_empty() {
        return Ok(MkdirResult { first: None });
    }
    // Each level is pinned again just before it is created, so a level swapped for a symlink
    // after its own creation cannot redirect the next one outside.
    for k in (0..missing.len()).rev() {
        let mut level = r.canonical().to_path_buf();
        for _ in 0..k {
            level.pop();
        }
        let dir = s
            .sandbox
            .open_beneath(level, false)
            .map_err(|e| os(&e, "mkdir", &p.path))?;
        match std::fs::DirBuilder::new().mode(mode).create(&*dir) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(os(&e, "mkdir", &p.path)),
        }
    }
    // Node answers with the first directory created, spelled like the path it was given.
    let normal = lexical_normal(&p.path);
    let mut first = PathBuf::from(&normal);
    for _ in 1..missing.len() {
        first.pop();
    }
    Ok(MkdirResult {
        first: Some(first.to_string_lossy().into_owned()),
    })
}

/// `path.resolve`-style normalisation of an absolute path (`.`/`..` applied lexically).
fn lexical_normal(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    format!("/{}", parts.join("/"))
}

fn rm(s: &Session, p: RmParams) -> Result<Empty, Failure> {
    let r = s.sandbox.pin(&p.path, Follow::NotLast, "rm")?;
    let md = match std::fs::symlink_metadata(&r) {
        Ok(md) => md,
        Err(e) if e.kind() == io::ErrorKind::NotFound && p.force => return Ok(Empty),
        Err(e) => return Err(os(&e, "lstat", &p.path)),
    };
    if md.is_dir() {
        if !p.recursive {
            return Err(Errno::new("EISDIR", "rm", Some(&p.path))
                .with_detail("is a directory")
                .into());
        }
        // remove_dir_all never follows symlinks inside the tree.
        match std::fs::remove_dir_all(&r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && p.force => {}
            Err(e) => return Err(os(&e, "rm", &p.path)),
        }
    } else {
        match std::fs::remove_file(&r) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound && p.force => {}
            Err(e) => return Err(os(&e, "unlink", &p.path)),
        }
    }
    Ok(Empty)
}

fn copy_file(s: &Session, p: CopyFileParams) -> Result<Empty, Failure> {
    let (from, to) = two(&s.sandbox, &p.from, &p.to, Follow::All, "copyfile")?;
    let err = |e: &io::Error| os2(e, "copyfile", &p.from, &p.to);
    let mut src = File::open(&from).map_err(|e| err(&e))?;
    let md = src.metadata().map_err(|e| err(&e))?;
    if md.is_dir() {
        return Err(Errno::new("EISDIR", "copyfile", Some(&p.from))
            .with_dest(&p.to)
            .into());
    }
    let mut o = OpenOptions::new();
    o.write(true)
        .mode(md.mode() & 0o7777)
        .custom_flags(libc::O_NOFOLLOW);
    if p.exclusive {
        o.create_new(true);
    } else {
        o.create(true).truncate(true);
    }
    // The entry (canonical last name under its pinned dir), never followed if swapped.
    let mut dst = o.open(to.entry()).map_err(|e| err(&e))?;
    io::copy(&mut src, &mut dst).map_err(|e| err(&e))?;
    dst.set_permissions(std::fs::Permissions::from_mode(md.mode() & 0o7777))
        .map_err(|e| err(&e))?;
    Ok(Empty)
}

fn utimes(s: &Session, p: UtimesParams) -> Result<Empty, Failure> {
    let (follow, syscall, flags) = if p.lstat {
        (Follow::NotLast, "lutime", libc::AT_SYMLINK_NOFOLLOW)
    } else {
        (Follow::All, "utime", 0)
    };
    let r = s.sandbox.pin(&p.path, follow, syscall)?;
    if p.atime.1 >= 1_000_000_000 || p.mtime.1 >= 1_000_000_000 {
        return Err(Errno::new("EINVAL", syscall, Some(&p.path))
            .with_detail("nanoseconds out of range")
            .into());
    }
    let c = cpath(&r).map_err(|e| os(&e, syscall, &p.path))?;
    let ts = [
        libc::timespec {
            tv_sec: p.atime.0 as _,
            tv_nsec: p.atime.1 as _,
        },
        libc::timespec {
            tv_sec: p.mtime.0 as _,
            tv_nsec: p.mtime.1 as _,
        },
    ];
    // SAFETY: valid C string and a two-element timespec array.
    if unsafe { libc::utimensat(libc::AT_FDCWD, c.as_ptr(), ts.as_ptr(), flags) } != 0 {
        return Err(os(&io::Error::last_os_error(), syscall, &p.path));
    }
    Ok(Empty)
}

fn mkdtemp(s: &Session, p: MkdtempParams) -> Result<String, Failure> {
    let shown = format!("{}XXXXXX", p.prefix);
    for _ in 0..100 {
        let candidate = format!("{}{}", p.prefix, random_suffix(6));
        let r = s
            .sandbox
            .pin(&candidate, Follow::NotLast, "mkdtemp")
            .map_err(|mut e| {
                e.path = Some(shown.clone());
                e
            })?;
        match std::fs::DirBuilder::new().mode(0o700).create(&r) {
            Ok(()) => return Ok(candidate),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(os(&e, "mkdtemp", &shown)),
        }
    }
    Err(Errno::new("EEXIST", "mkdtemp", Some(&shown)).into())
}

/// `n` random characters from `[A-Za-z0-9]`.
pub fn random_suffix(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

#[cfg(test)]
mod tests;
