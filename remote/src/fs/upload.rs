//! Large whole-file writes (`fs.upload.*`): the target is opened at `begin`, the chunks are
//! staged in an anonymous file, and the commit copies them in (see ARCHITECTURE.md, the write
//! rule).

use super::sys::*;
use crate::rpc::Failure;
use protocol::{Empty, Errno};
use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Seek};
use std::sync::{Arc, Mutex};

/// A large write in progress: the target, open since `fs.upload.begin` (not truncated yet), and
/// the data so far, staged in an anonymous file.
pub(crate) struct Upload {
    pub(crate) staged: Arc<Mutex<File>>,
    pub(crate) target: File,
    pub(crate) append: bool,
    pub(crate) flush: bool,
    pub(crate) path: String,
}

/// Open uploads by id; their staged data disappears with them (it has no name).
#[derive(Default)]
pub struct Uploads {
    pub(crate) map: Mutex<HashMap<String, Upload>>,
}

impl Uploads {
    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Upload>> {
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn unknown(id: &str) -> Failure {
        Failure::Os(
            Errno::new("EBADF", "write", None).with_detail(format!("no upload with id '{id}'")),
        )
    }

    /// Copy the staged data into the target in one step (truncating it first, unless
    /// appending): a link that drops before this leaves the target as it was.
    pub(crate) fn commit(&self, id: &str) -> Result<Empty, Failure> {
        let mut up = self.lock().remove(id).ok_or_else(|| Self::unknown(id))?;
        let mut staged = up.staged.lock().unwrap_or_else(|p| p.into_inner());
        let werr = |e: io::Error| Failure::Os(Errno::from_io(&e, "write", None));
        staged.seek(io::SeekFrom::Start(0)).map_err(werr)?;
        if !up.append {
            up.target
                .set_len(0)
                .map_err(|e| Failure::Os(Errno::from_io(&e, "ftruncate", None)))?;
        }
        io::copy(&mut *staged, &mut up.target).map_err(werr)?;
        if up.flush {
            up.target
                .sync_all()
                .map_err(|e| os(&e, "fsync", &up.path))?;
        }
        Ok(Empty)
    }

    pub(crate) fn abort(&self, id: &str) {
        self.lock().remove(id);
    }

    /// Drop every unfinished upload (the agent is exiting); their targets are untouched.
    pub fn abort_all(&self) {
        self.lock().clear();
    }
}
