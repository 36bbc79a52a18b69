//! The session's descriptor table ([`Fds`]): each open descriptor under the client's name,
//! opened lazily for a read-only open the cache answered (see `fds`).

use crate::fs::sys::{open_path, os, plain, read_at_most, to_stat};
use crate::rpc::Failure;
use crate::session::Session;
use protocol::fs::*;
use protocol::{Bytes, Errno, ErrorCode};
use std::collections::HashMap;
use std::fs::File;
use std::io;
use std::sync::{Arc, Mutex, OnceLock};

/// One open descriptor.
pub(crate) struct Entry {
    pub(crate) file: File,
    pub(crate) append: bool,
}

/// A name's open: done once, whoever asks first (a resent `fs.open` waits for it).
pub(crate) struct Slot {
    pub(crate) params: (String, OpenFlags, Option<u32>),
    pub(crate) opened: OnceLock<Result<Arc<Entry>, Failure>>,
}

/// The session's descriptors by the client's names.
#[derive(Default)]
pub struct Fds {
    pub(crate) map: Mutex<HashMap<String, Arc<Slot>>>,
}

pub(crate) fn fd_error(e: &io::Error, syscall: &str) -> Failure {
    Failure::Os(Errno::from_io(e, syscall, None))
}

impl Fds {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<Slot>>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The open descriptor `fd`, or EBADF (as `syscall`).
    pub(crate) fn get(&self, fd: &str, syscall: &str) -> Result<Arc<Entry>, Failure> {
        let slot = self.lock().get(fd).cloned();
        match slot.as_ref().and_then(|s| s.opened.get()) {
            Some(Ok(e)) => Ok(e.clone()),
            _ => Err(Errno::new("EBADF", syscall, None)
                .with_detail(format!("no open descriptor '{fd}'"))
                .into()),
        }
    }

    pub(crate) fn open(
        &self,
        s: &Session,
        p: &OpenParams,
    ) -> Result<(Arc<Entry>, OpenResult), Failure> {
        if p.fd.is_empty() || p.fd.len() > MAX_FD_NAME {
            return Err(Failure::Code(
                ErrorCode::InvalidParams,
                format!("a descriptor name has 1 to {MAX_FD_NAME} bytes"),
            ));
        }
        let key = (p.path.clone(), p.flags, p.mode);
        let slot = {
            let mut map = self.lock();
            match map.get(&p.fd) {
                Some(slot) if slot.params != key => {
                    return Err(Errno::new("EINVAL", "open", Some(&p.path))
                        .with_detail(format!("descriptor name '{}' is already in use", p.fd))
                        .into());
                }
                Some(slot) => slot.clone(),
                None => {
                    if map.len() >= MAX_FDS {
                        return Err(Errno::new("EMFILE", "open", Some(&p.path))
                            .with_detail(format!("a session holds at most {MAX_FDS} descriptors"))
                            .into());
                    }
                    let slot = Arc::new(Slot {
                        params: key,
                        opened: OnceLock::new(),
                    });
                    map.insert(p.fd.clone(), slot.clone());
                    slot
                }
            }
        };
        let covered = s.changes.covered(&p.path);
        let mut plain_path = false;
        let opened = slot.opened.get_or_init(|| {
            let (file, pin) = open_path(&s.sandbox, &p.path, &p.flags, p.mode)?;
            plain_path = plain(true, &pin, &p.path);
            Ok(Arc::new(Entry {
                file,
                append: p.flags.append,
            }))
        });
        let entry = match opened {
            Ok(e) => e.clone(),
            Err(f) => {
                let f = f.clone();
                let mut map = self.lock();
                if map.get(&p.fd).is_some_and(|s| Arc::ptr_eq(s, &slot)) {
                    map.remove(&p.fd);
                }
                return Err(f);
            }
        };
        // Only the open that did the work knows the path was reached without a symlink; one
        // that creates or truncates changes what it would cache.
        let md = entry
            .file
            .metadata()
            .map_err(|e| os(&e, "fstat", &p.path))?;
        let cacheable = plain_path && covered.stat(md.is_dir()) && !p.flags.mutates();
        let mut stat = to_stat(&md);
        stat.cache = cacheable;
        let ahead = if p.ahead > 0 && (p.flags.read || !p.flags.write) && md.is_file() {
            let want = p.ahead.min(MAX_CHUNK as u64) as usize;
            let data = read_at_most(&entry.file, &md, 0, want).map_err(|e| fd_error(&e, "read"))?;
            let whole = data.len() as u64 == md.len();
            Some(ReadResult {
                data: Bytes(data),
                size: md.len(),
                cache: cacheable && whole,
            })
        } else {
            None
        };
        Ok((entry, OpenResult { stat, ahead }))
    }

    pub(crate) fn close(&self, fd: &str) {
        self.lock().remove(fd);
    }

    /// Close every descriptor (the session ends).
    pub fn close_all(&self) {
        self.lock().clear();
    }
}
