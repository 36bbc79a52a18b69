//! The file system as the handlers use it: opening a path inside the sandbox as Node opens it,
//! reading, stats in the protocol's shape, OS errors as [`Failure`]s, and the names of earlier
//! agents' temp files. No handler and no session state here: descriptors (`fds`), uploads and
//! the change feed build on it.

use crate::rpc::Failure;
use crate::sandbox::{Follow, Pinned, Sandbox};
use protocol::fs::*;
use protocol::Errno;
use rand::Rng;
use std::fs::{File, OpenOptions};
use std::io::{self, Read};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, OpenOptionsExt};
use std::time::UNIX_EPOCH;

/// An OS error on one path.
pub fn os(e: &io::Error, syscall: &str, path: &str) -> Failure {
    Failure::Os(Errno::from_io(e, syscall, Some(path)))
}

/// An OS error on two paths (`path -> dest`).
pub(crate) fn os2(e: &io::Error, syscall: &str, path: &str, dest: &str) -> Failure {
    Failure::Os(Errno::from_io(e, syscall, Some(path)).with_dest(dest))
}

/// Resolve both paths of a two-path call; errors name both.
pub(crate) fn two(
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

/// chown's ids: `None` (or -1, `u32::MAX`, as Node passes it) leaves an id as it is.
pub(crate) fn owner_ids(
    uid: Option<u32>,
    gid: Option<u32>,
) -> (Option<rustix::fs::Uid>, Option<rustix::fs::Gid>) {
    (
        uid.filter(|&u| u != u32::MAX)
            .map(rustix::fs::Uid::from_raw),
        gid.filter(|&g| g != u32::MAX)
            .map(rustix::fs::Gid::from_raw),
    )
}

pub(crate) fn time_of(secs: i64, nsecs: i64) -> Time {
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
pub(crate) fn plain(watched: bool, r: &Pinned, path: &str) -> bool {
    watched && r.canonical().as_os_str().as_bytes() == path.as_bytes()
}

/// A failed lookup that stays true until a change is reported: ENOENT, ENOTDIR.
pub(crate) fn cacheable(f: Failure, plain: bool) -> Failure {
    match f {
        Failure::Os(mut e) if plain && (e.code == "ENOENT" || e.code == "ENOTDIR") => {
            e.cache = true;
            Failure::Os(e)
        }
        f => f,
    }
}

/// Whether reads of a file of this type go by offset (pread); FIFOs, sockets and character
/// devices have no offset (pread fails with ESPIPE there) and are read where they stand.
pub fn seekable(md: &std::fs::Metadata) -> bool {
    use std::os::unix::fs::FileTypeExt;
    let t = md.file_type();
    !(t.is_fifo() || t.is_socket() || t.is_char_device())
}

/// Up to `want` bytes of `f` (whose metadata is `md`) from `offset`: until `want`, the end of
/// the file or, on a non-blocking FIFO or device, the end of what is there now (nothing there
/// at all: `EAGAIN`, as the kernel says).
pub fn read_at_most(
    f: &File,
    md: &std::fs::Metadata,
    offset: u64,
    want: usize,
) -> io::Result<Vec<u8>> {
    let by_offset = seekable(md);
    let initial = if by_offset {
        md.len().saturating_sub(offset).min(want as u64) as usize
    } else {
        want.min(64 * 1024)
    };
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
        let r = if by_offset {
            f.read_at(&mut buf[got..], offset + got as u64)
        } else {
            (&*f).read(&mut buf[got..])
        };
        match r {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && got > 0 => break,
            Err(e) => return Err(e),
        }
    }
    buf.truncate(got);
    Ok(buf)
}

/// The open(2) flags of Node's whole-file write flags.
pub fn write_flags(flag: WriteFlag, truncate: bool) -> OpenFlags {
    let exclusive = matches!(flag, WriteFlag::Exclusive | WriteFlag::AppendExclusive);
    let append = matches!(flag, WriteFlag::Append | WriteFlag::AppendExclusive);
    OpenFlags {
        write: true,
        create: true,
        exclusive,
        append,
        truncate: truncate && !append,
        ..OpenFlags::default()
    }
}

/// open(2) `path` as Node would with `flags` (creating with `mode`, default 0o666, umask
/// applied), confined to the sandbox. Always `O_NONBLOCK` (a FIFO or a device never holds the
/// calling thread: see [`protocol::fs::OpenParams`]) and `O_NOCTTY`. The returned [`Pinned`]
/// keeps the directory of the entry open (uploads stage their data next to it).
pub fn open_path(
    sandbox: &Sandbox,
    path: &str,
    flags: &OpenFlags,
    mode: Option<u32>,
) -> Result<(File, Pinned), Failure> {
    if flags.create && crate::sandbox::names_a_directory(path) {
        // O_CREAT of `x/`: EISDIR, whatever x is.
        return Err(Errno::new("EISDIR", "open", Some(path)).into());
    }
    let follow = if flags.nofollow {
        Follow::NotLast
    } else {
        Follow::All
    };
    let r = sandbox.pin(path, follow, "open")?;
    let mut o = OpenOptions::new();
    o.read(flags.read || !flags.write).write(flags.write);
    if flags.append {
        o.append(true);
    }
    if flags.exclusive && flags.create {
        o.create_new(true);
    } else if flags.create {
        o.create(true);
    }
    if flags.truncate {
        o.truncate(true);
    }
    let mut custom = libc::O_NONBLOCK | libc::O_NOCTTY;
    for (on, bit) in [
        (flags.sync, libc::O_SYNC),
        (flags.dsync, libc::O_DSYNC),
        (flags.directory, libc::O_DIRECTORY),
        (flags.noatime, libc::O_NOATIME),
        // The entry (a missing file, or the link itself): never follow a symlink swapped in
        // there since the check. The pinned object itself is opened through its
        // /proc/self/fd link, which must be followed.
        (flags.nofollow || !r.is_object(), libc::O_NOFOLLOW),
    ] {
        if on {
            custom |= bit;
        }
    }
    if flags.exclusive && !flags.create {
        custom |= libc::O_EXCL;
    }
    o.custom_flags(custom);
    if flags.create {
        o.mode(mode.unwrap_or(0o666) & 0o7777);
    }
    if flags.truncate && !flags.write {
        // O_RDONLY|O_TRUNC: Linux truncates; std refuses the combination, so say it ourselves.
        let f = OpenOptions::new()
            .read(true)
            .custom_flags(custom)
            .open(&*r)
            .map_err(|e| os(&e, "open", path))?;
        rustix::fs::ftruncate(&f, 0).map_err(|e| os(&e.into(), "open", path))?;
        return Ok((f, r));
    }
    let f = o.open(&*r).map_err(|e| os(&e, "open", path))?;
    Ok((f, r))
}

/// An anonymous file for staging data, in the temp directory (never in the project: even an
/// unnamed `O_TMPFILE` there shows in inotify as `#<inode>`, which a watch would report and Node's
/// own write never causes): `O_TMPFILE` (no name anyone could open), or, where the file system
/// lacks it, a fresh 0600 file unlinked at once.
pub(crate) fn anonymous_file() -> io::Result<File> {
    let tmp = std::env::temp_dir();
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .mode(0o600)
        .custom_flags(libc::O_TMPFILE)
        .open(&tmp);
    if let Ok(f) = f {
        return Ok(f);
    }
    for _ in 0..100 {
        let name = tmp.join(format!(".pi-bridge-stage-{}.tmp", random_suffix(16)));
        match OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&name)
        {
            Ok(f) => {
                let _ = std::fs::remove_file(&name);
                return Ok(f);
            }
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(e),
        }
    }
    Err(io::Error::from_raw_os_error(libc::EEXIST))
}

/// Length of the random part of a temp file's name.
pub(crate) const TEMP_SUFFIX: usize = 8;

/// Marks the temp name of a write that creates its target (none existed), so that a watch can
/// report the rename as Node reports a new file ('rename', then 'change').
pub(crate) const TEMP_NEW: &str = "new-";

/// If `name` is a temp file name of an atomic write of earlier agents (`.<target>.pi-bridge-
/// [new-]<8 letters or digits>.tmp`; this agent writes in place and stages uploads in anonymous
/// files): the target's name, and whether the write creates it. Watches and the change feed
/// never report these, so a session running next to an older agent sees its writes as Node's.
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

/// The `[atime, mtime]` of utimensat(2)/futimens(2); nanoseconds out of range are EINVAL.
pub fn timespecs(
    atime: Time,
    mtime: Time,
    syscall: &str,
    path: Option<&str>,
) -> Result<rustix::fs::Timestamps, Failure> {
    if atime.1 >= 1_000_000_000 || mtime.1 >= 1_000_000_000 {
        return Err(Errno::new("EINVAL", syscall, path)
            .with_detail("nanoseconds out of range")
            .into());
    }
    let ts = |t: Time| rustix::fs::Timespec {
        tv_sec: t.0 as _,
        tv_nsec: t.1 as _,
    };
    Ok(rustix::fs::Timestamps {
        last_access: ts(atime),
        last_modification: ts(mtime),
    })
}

/// `n` random characters from `[A-Za-z0-9]`.
pub fn random_suffix(n: usize) -> String {
    let mut rng = rand::thread_rng();
    (0..n)
        .map(|_| rng.sample(rand::distributions::Alphanumeric) as char)
        .collect()
}

/// The answer of a read (`fs.read`, `fs.pread`): with `raw` (asked for, and outside `fs.batch`)
/// the bytes come in a binary frame after the metadata, else as JSON.
pub(crate) fn read_answer(
    r: ReadResult,
    raw: bool,
) -> Result<crate::rpc::Answer, protocol::rpc::ErrorObject> {
    if raw {
        let meta = RawReadResult {
            size: r.size,
            cache: r.cache,
        };
        crate::rpc::Answer::binary(&meta, r.data.0)
    } else {
        crate::rpc::Answer::json(&r)
    }
}
