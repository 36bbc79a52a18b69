//! Tests: stop the arming right before a given directory until it is released, so that a test
//! can look at the state where its parent is watched and it is not yet (the background arming
//! of a big project, made to last).

use std::path::{Path, PathBuf};
use std::sync::Mutex;

static HELD: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

fn with<T>(f: impl FnOnce(&mut Vec<PathBuf>) -> T) -> T {
    f(&mut HELD.lock().unwrap_or_else(|p| p.into_inner()))
}

/// Held until the guard is dropped.
pub(crate) struct Hold(PathBuf);

impl Drop for Hold {
    fn drop(&mut self) {
        with(|h| h.retain(|d| *d != self.0));
    }
}

pub(crate) fn hold(dir: &Path) -> Hold {
    with(|h| h.push(dir.to_path_buf()));
    Hold(dir.to_path_buf())
}

/// The arming stops before `dir`.
pub(crate) fn held(dir: &Path) -> bool {
    with(|h| h.iter().any(|d| d == dir))
}

/// Returns once no directory under `root` is held.
pub(crate) async fn released(root: &Path) {
    while with(|h| h.iter().any(|d| d.starts_with(root))) {
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}
