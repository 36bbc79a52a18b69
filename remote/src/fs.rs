//! The `fs.*` methods. Every path goes through [`Sandbox::resolve`] first; errors are
//! [`Errno`]s carrying the path as the client gave it and the syscall name Node would report.
//!
//! The write rule (ARCHITECTURE.md §1a): every write goes into the target's own inode, opened
//! as Node opens it, so the kernel checks permissions at open exactly as for Node (a file the
//! user cannot write fails with EACCES and is untouched) and the file keeps its inode, mode,
//! owner, hard links and extended attributes. A whole-file write that fits one frame is one call
//! (open, write, close), which a dropped link cannot cut in half. A bigger one (`fs.upload.*`)
//! opens its target at begin (so its errors come first, as Node's open reports them) and stages
//! the chunks in an anonymous file in the temp directory (`O_TMPFILE`, mode 0600: no name
//! another user could open, nothing in the project a watch would see);
//! the commit truncates the target and copies the staged bytes in, so a link that drops before
//! the commit leaves the target as it was. Descriptors (`fs.open` …) are real ones, held by the
//! session (`crate::fds`).
//!
//! Every open is `O_NONBLOCK`: a FIFO or a device never holds an agent thread.

pub(crate) mod sys;
pub(crate) mod upload;

use crate::agent::{Agent, Session, Table};
use crate::rpc::{on_blocking_pool, Failure, Host};
use crate::sandbox::Follow;
use protocol::fs::*;
use protocol::methods as m;
use protocol::{Bytes, Empty, Errno};
use rustix::fs::AtFlags;
use std::fs::OpenOptions;
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use sys::*;
use upload::{Upload, Uploads};

/// Register every `fs.*` method except `fs.batch`.
pub fn register_all(t: &mut Table) {
    t.inline::<m::Stat, _>(stat);
    t.inline::<m::Access, _>(access);
    t.blocking::<m::ReadDir, _>(|_, s, p| readdir(s, p));
    // With `raw: true` (outside `fs.batch`), the bytes come in a binary frame.
    t.answer::<m::Read, _>(|_, s, p, binary_ok| {
        let raw = p.raw && binary_ok;
        read_answer(read(s, p).map_err(Failure::into_error_object)?, raw)
    });
    register_mutation::<m::Write, _>(t, |_, s, p| write(s, p));
    t.blocking::<m::UploadBegin, _>(upload_begin);
    t.method::<m::UploadChunk, _, _>(upload_chunk);
    register_mutation::<m::UploadCommit, _>(t, |a, _, p| a.uploads.commit(&p.id));
    t.blocking::<m::UploadAbort, _>(|a, _, p| {
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
    t.inline::<m::Realpath, _>(|s, p| {
        let r = s.sandbox.pin(&p.path, Follow::All, "realpath")?;
        std::fs::symlink_metadata(&*r).map_err(|e| os(&e, "realpath", &p.path))?;
        Ok(r.canonical().to_string_lossy().into_owned())
    });
    t.inline::<m::Readlink, _>(|s, p| {
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
            .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
            .open(&r)
            .map_err(|e| os(&e, "open", &p.path))?;
        f.set_len(p.length)
            .map_err(|e| os(&e, "ftruncate", &p.path))?;
        Ok(Empty)
    });
    register_mutation::<m::Mkdtemp, _>(t, |_, s, p| mkdtemp(s, p));
    register_mutation::<m::Chown, _>(t, |_, s, p| chown(s, p));
    t.blocking::<m::Statfs, _>(|_, s, p| statfs(s, p));
    crate::fds::register_all(t);
}

fn chown(s: &Session, p: ChownParams) -> Result<Empty, Failure> {
    let (follow, syscall) = if p.lstat {
        (Follow::NotLast, "lchown")
    } else {
        (Follow::All, "chown")
    };
    let r = s.sandbox.pin(&p.path, follow, syscall)?;
    // A pinned object is reached through its /proc/self/fd link (followed); lchown gets the
    // entry itself.
    let (uid, gid) = owner_ids(p.uid, p.gid);
    let flags = if p.lstat {
        AtFlags::SYMLINK_NOFOLLOW
    } else {
        AtFlags::empty()
    };
    rustix::fs::chownat(rustix::fs::CWD, &*r, uid, gid, flags)
        .map_err(|e| os(&e.into(), syscall, &p.path))?;
    Ok(Empty)
}

fn statfs(s: &Session, p: PathParams) -> Result<StatFs, Failure> {
    let r = s.sandbox.pin(&p.path, Follow::All, "statfs")?;
    let b = rustix::fs::statfs(&*r).map_err(|e| os(&e.into(), "statfs", &p.path))?;
    Ok(StatFs {
        fs_type: b.f_type as u64,
        bsize: b.f_bsize as u64,
        frsize: b.f_frsize as u64,
        blocks: b.f_blocks as u64,
        bfree: b.f_bfree as u64,
        bavail: b.f_bavail as u64,
        files: b.f_files as u64,
        ffree: b.f_ffree as u64,
    })
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
    t.method::<M, _, _>(move |agent: Arc<Agent>, p| {
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

pub(crate) fn stat(s: &Session, p: StatParams) -> Result<protocol::fs::Stat, Failure> {
    let (follow, syscall) = if p.lstat {
        (Follow::NotLast, "lstat")
    } else {
        (Follow::All, "stat")
    };
    let covered = s.changes.covered(&p.path);
    let r = s.sandbox.pin(&p.path, follow, syscall)?;
    let md = if p.lstat {
        std::fs::symlink_metadata(&r)
    } else {
        std::fs::metadata(&r)
    };
    let md = md.map_err(|e| {
        let plain = plain(covered.stat(false), &r, &p.path);
        cacheable(os(&e, syscall, &p.path), plain)
    })?;
    let mut st = to_stat(&md);
    st.cache = plain(covered.stat(md.is_dir()), &r, &p.path);
    Ok(st)
}

fn access(s: &Session, p: AccessParams) -> Result<Empty, Failure> {
    let watched = s.changes.watched_parent(&p.path);
    let r = s.sandbox.pin(&p.path, Follow::All, "access")?;
    let plain = plain(watched, &r, &p.path);
    let mode = rustix::fs::Access::from_bits_retain(p.mode & 7);
    if let Err(e) = rustix::fs::access(&*r, mode) {
        return Err(cacheable(os(&e.into(), "access", &p.path), plain));
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

fn readdir(s: &Session, p: ReadDirParams) -> Result<ReadDirResult, Failure> {
    // A listing is cacheable when the directory itself is watched (each change of its entries
    // is reported) and was reached without a symlink. Recursive listings never are.
    let watched = !p.recursive && s.changes.watched_dir(&p.path);
    let root = s.sandbox.pin(&p.path, Follow::All, "scandir")?;
    let first = list(&root).map_err(|e| os(&e, "scandir", &p.path))?;
    if !p.recursive {
        return Ok(ReadDirResult {
            entries: first
                .into_iter()
                .map(|(name, kind)| DirEntry { name, kind })
                .collect(),
            cache: plain(watched, &root, &p.path),
        });
    }
    // Node's order: breadth first, a queue of directories, each listed in turn. Symlinked
    // directories are descended only with `follow` (through the sandbox: never outside it, and
    // a loop ends where the kernel would say ELOOP).
    let mut out = Vec::new();
    // (prefix, its entries, whether it was reached through a followed symlink)
    type Listed = (String, Vec<(String, FileKind)>, bool);
    let mut queue: std::collections::VecDeque<Listed> = [(String::new(), first, false)].into();
    while let Some((prefix, entries, via_link)) = queue.pop_front() {
        for (name, kind) in entries {
            let rel = if prefix.is_empty() {
                name
            } else {
                format!("{prefix}/{name}")
            };
            // Under a followed link, by its path (checked and pinned like any path, so never
            // outside the sandbox, and a loop ends where the kernel would say ELOOP).
            let through = || {
                let p = format!("{}/{rel}", p.path.trim_end_matches('/'));
                s.sandbox
                    .pin(&p, Follow::All, "scandir")
                    .ok()
                    .filter(|d| d.is_dir())
                    .and_then(|d| list(&d).ok())
            };
            let sub = match kind {
                // A directory that vanished or cannot be read is skipped, like Node.
                // Pinned from the root with O_NOFOLLOW: a directory swapped for a symlink since
                // it was listed is skipped, never followed.
                FileKind::Dir if !via_link => s
                    .sandbox
                    .open_beneath(root.canonical().join(&rel), true)
                    .and_then(|d| list(&d))
                    .ok()
                    .map(|l| (l, false)),
                FileKind::Dir => through().map(|l| (l, true)),
                FileKind::Symlink if p.follow => through().map(|l| (l, true)),
                _ => None,
            };
            if let Some((sub, link)) = sub {
                queue.push_back((rel.clone(), sub, link));
            }
            out.push(DirEntry { name: rel, kind });
        }
    }
    Ok(ReadDirResult {
        entries: out,
        cache: false,
    })
}

pub(crate) fn read(s: &Session, p: ReadParams) -> Result<ReadResult, Failure> {
    let watched = s.changes.watched_parent(&p.path);
    let r = s.sandbox.pin(&p.path, Follow::All, "open")?;
    let plain = plain(watched, &r, &p.path);
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&r)
        .map_err(|e| cacheable(os(&e, "open", &p.path), plain))?;
    let md = f.metadata().map_err(|e| os(&e, "fstat", &p.path))?;
    if md.is_dir() {
        return Err(Errno::new("EISDIR", "read", None).into());
    }
    let want = p.length.unwrap_or(MAX_CHUNK as u64).min(MAX_CHUNK as u64) as usize;
    let size = md.len();
    let buf = read_at_most(&f, &md, p.offset, want).map_err(|e| os(&e, "read", &p.path))?;
    let got = buf.len();
    // Cacheable only as the whole file.
    let whole = p.offset == 0 && got as u64 == size;
    Ok(ReadResult {
        data: Bytes(buf),
        size,
        cache: plain && whole,
    })
}

fn write(s: &Session, p: WriteParams) -> Result<Empty, Failure> {
    if p.data.0.len() > MAX_CHUNK {
        return Err(Failure::Code(
            protocol::ErrorCode::InvalidParams,
            format!("fs.write carries at most {MAX_CHUNK} bytes; use fs.upload.* for more"),
        ));
    }
    let (mut f, _pin) = open_path(&s.sandbox, &p.path, &write_flags(p.flag, true), p.mode)?;
    f.write_all(&p.data.0)
        .map_err(|e| Failure::Os(Errno::from_io(&e, "write", None)))?;
    if p.flush {
        f.sync_all()
            .map_err(|e| Failure::Os(Errno::from_io(&e, "fsync", None)))?;
    }
    Ok(Empty)
}

fn upload_begin(a: &Agent, s: &Session, p: UploadBeginParams) -> Result<UploadId, Failure> {
    let (target, _pin) = open_path(&s.sandbox, &p.path, &write_flags(p.flag, false), p.mode)?;
    let staged = anonymous_file().map_err(|e| os(&e, "open", &p.path))?;
    let id = format!("u{}", random_suffix(16));
    a.uploads.lock().insert(
        id.clone(),
        Upload {
            staged: Arc::new(Mutex::new(staged)),
            target,
            append: matches!(p.flag, WriteFlag::Append | WriteFlag::AppendExclusive),
            flush: p.flush,
            path: p.path,
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
        (up.staged.clone(), up.path.clone())
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
    let mut src = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(&from)
        .map_err(|e| err(&e))?;
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
        (Follow::NotLast, "lutime", AtFlags::SYMLINK_NOFOLLOW)
    } else {
        (Follow::All, "utime", AtFlags::empty())
    };
    let r = s.sandbox.pin(&p.path, follow, syscall)?;
    let ts = timespecs(p.atime, p.mtime, syscall, Some(&p.path))?;
    rustix::fs::utimensat(rustix::fs::CWD, &*r, &ts, flags)
        .map_err(|e| os(&e.into(), syscall, &p.path))?;
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

#[cfg(test)]
mod tests;
