//! Open descriptors: `fs.open`, `fs.pread`, `fs.pwrite`, `fs.fappend`, `fs.fstat`,
//! `fs.ftruncate`, `fs.fchmod`, `fs.fchown`, `fs.futimes`, `fs.fsync`, `fs.close`.
//!
//! A remote fd is a real descriptor held by the session ([`Fds`], in [`Agent`]), so it behaves
//! as the kernel makes it: writes are visible to every reader at once, `O_APPEND` appends,
//! permissions are checked at open, fchmod/futimes work on a read-only descriptor, and it keeps
//! naming the file it opened whatever happens to the path. The table lives as long as the
//! session: through a dropped link and its resume (the session's agent keeps serving), and is
//! closed with it.
//!
//! The client names each descriptor (`fd`, unique in the session). An `fs.open` of a name that
//! is already open answers as the first open did without opening again, and `fs.close` of a name
//! that is not open succeeds: both can be resent after a dropped link. `fs.pwrite` names its
//! offset (the client keeps the file position), so it is idempotent too; only `fs.fappend`
//! (write(2) on an `O_APPEND` descriptor) is not.
//!
//! Errors name the syscall and no path, as Node's fd calls do.

pub(crate) mod table;

use crate::agent::{Agent, Table};
use crate::fs::sys::{owner_ids, read_at_most, to_stat};
use crate::rpc::{on_blocking_pool, Failure, Host};
use protocol::fs::*;
use protocol::methods as m;
use protocol::{Bytes, Empty, Errno, ErrorCode};
use std::io::Write;
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use table::fd_error;

pub fn pread(a: &Agent, p: &PreadParams) -> Result<ReadResult, Failure> {
    let e = a.fds.get(&p.fd, "read")?;
    let md = e.file.metadata().map_err(|er| fd_error(&er, "read"))?;
    if md.is_dir() {
        return Err(Errno::new("EISDIR", "read", None).into());
    }
    let want = p.length.unwrap_or(MAX_CHUNK as u64).min(MAX_CHUNK as u64) as usize;
    let data = read_at_most(&e.file, &md, p.offset, want).map_err(|er| fd_error(&er, "read"))?;
    // The size now (the file may have grown while it was read).
    let size = e.file.metadata().map(|m| m.len()).unwrap_or(md.len());
    Ok(ReadResult {
        data: Bytes(data),
        size,
        cache: false,
    })
}

fn pwrite(a: &Agent, p: PwriteParams) -> Result<WriteResult, Failure> {
    let e = a.fds.get(&p.fd, "write")?;
    if e.append {
        return Err(Errno::new("EINVAL", "write", None)
            .with_detail("an O_APPEND descriptor is written with fs.fappend")
            .into());
    }
    check_chunk(&p.data)?;
    let md = e.file.metadata().map_err(|er| fd_error(&er, "write"))?;
    if crate::fs::sys::seekable(&md) {
        e.file
            .write_all_at(&p.data.0, p.offset)
            .map_err(|er| fd_error(&er, "write"))?;
    } else {
        (&e.file)
            .write_all(&p.data.0)
            .map_err(|er| fd_error(&er, "write"))?;
    }
    Ok(WriteResult {
        written: p.data.0.len() as u64,
        position: p.offset + p.data.0.len() as u64,
    })
}

fn fappend(a: &Agent, p: AppendParams) -> Result<WriteResult, Failure> {
    let e = a.fds.get(&p.fd, "write")?;
    if !e.append {
        return Err(Errno::new("EINVAL", "write", None)
            .with_detail("fs.fappend writes only O_APPEND descriptors")
            .into());
    }
    check_chunk(&p.data)?;
    (&e.file)
        .write_all(&p.data.0)
        .map_err(|er| fd_error(&er, "write"))?;
    let pos = rustix::fs::tell(&e.file).unwrap_or(0);
    Ok(WriteResult {
        written: p.data.0.len() as u64,
        position: pos,
    })
}

fn check_chunk(data: &Bytes) -> Result<(), Failure> {
    if data.0.len() > MAX_CHUNK {
        return Err(Failure::Code(
            ErrorCode::InvalidParams,
            format!("one write carries at most {MAX_CHUNK} bytes"),
        ));
    }
    Ok(())
}

/// `f(raw fd)` as `syscall`: 0 is success, anything else the errno.
fn raw(
    a: &Agent,
    fd: &str,
    syscall: &str,
    f: impl FnOnce(BorrowedFd<'_>) -> rustix::io::Result<()>,
) -> Result<Empty, Failure> {
    let e = a.fds.get(fd, syscall)?;
    f(e.file.as_fd()).map_err(|er| fd_error(&er.into(), syscall))?;
    Ok(Empty)
}

fn futimes(a: &Agent, p: FutimesParams) -> Result<Empty, Failure> {
    let ts = crate::fs::sys::timespecs(p.atime, p.mtime, "futime", None)?;
    raw(a, &p.fd, "futime", |fd| rustix::fs::futimens(fd, &ts))
}

/// Register a descriptor call that changes the file system: the change feed is flushed before
/// its answer, as for every mutation (see `fs::register_mutation`).
fn register_fd_mutation<M, F>(t: &mut Table, f: F)
where
    M: protocol::Method,
    F: Fn(&Agent, M::Params) -> Result<M::Result, Failure> + Send + Sync + Clone + 'static,
{
    t.method::<M, _, _>(move |agent: Arc<Agent>, p| {
        let f = f.clone();
        async move {
            let session = agent.session()?;
            let a = agent.clone();
            let r = on_blocking_pool(move || f(&a, p)).await;
            session.changes.flush().await;
            r
        }
    });
}

pub fn register_all(t: &mut Table) {
    t.method::<m::Open, _, _>(|agent: Arc<Agent>, p: OpenParams| async move {
        let session = agent.session()?;
        let mutates = p.flags.mutates();
        let (a, s) = (agent.clone(), session.clone());
        let r = on_blocking_pool(move || a.fds.open(&s, &p).map(|(_, r)| r)).await;
        if mutates {
            session.changes.flush().await;
        }
        r
    });
    // With `raw: true` (outside `fs.batch`), the bytes come in a binary frame.
    t.answer::<m::Pread, _>(|a, _, p, binary_ok| {
        let r = pread(a, &p).map_err(Failure::into_error_object)?;
        crate::fs::sys::read_answer(r, p.raw && binary_ok)
    });
    t.blocking::<m::Fstat, _>(|a, _, p| {
        let e = a.fds.get(&p.fd, "fstat")?;
        let md = e.file.metadata().map_err(|er| fd_error(&er, "fstat"))?;
        Ok(to_stat(&md))
    });
    t.blocking::<m::Fsync, _>(|a, _, p| {
        let syscall = if p.data { "fdatasync" } else { "fsync" };
        let e = a.fds.get(&p.fd, syscall)?;
        let r = if p.data {
            e.file.sync_data()
        } else {
            e.file.sync_all()
        };
        r.map_err(|er| fd_error(&er, syscall))?;
        Ok(Empty)
    });
    t.blocking::<m::Close, _>(|a, _, p| {
        a.fds.close(&p.fd);
        Ok(Empty)
    });
    register_fd_mutation::<m::Pwrite, _>(t, pwrite);
    register_fd_mutation::<m::Fappend, _>(t, fappend);
    register_fd_mutation::<m::Ftruncate, _>(t, |a, p| {
        let len = libc::off_t::try_from(p.length)
            .map_err(|_| Failure::Os(Errno::new("EINVAL", "ftruncate", None)))?;
        raw(a, &p.fd, "ftruncate", |fd| {
            rustix::fs::ftruncate(fd, len as u64)
        })
    });
    register_fd_mutation::<m::Fchmod, _>(t, |a, p| {
        raw(a, &p.fd, "fchmod", |fd| {
            rustix::fs::fchmod(fd, rustix::fs::Mode::from_raw_mode(p.mode & 0o7777))
        })
    });
    register_fd_mutation::<m::Fchown, _>(t, |a, p| {
        let (uid, gid) = owner_ids(p.uid, p.gid);
        raw(a, &p.fd, "fchown", |fd| rustix::fs::fchown(fd, uid, gid))
    });
    register_fd_mutation::<m::Futimes, _>(t, futimes);
}

#[cfg(test)]
mod tests;
