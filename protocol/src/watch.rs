//! File watches (inotify on the agent), shaped like Node's `fs.watch`.

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WatchParams {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
}

/// One event, as Node's `fs.watch` would emit it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum WatchEvent {
    /// Node's `'rename'` (created, deleted, moved) or `'change'` (content/metadata).
    Event {
        #[serde(rename = "eventType")]
        event_type: String,
        /// Relative to the watched directory (or the file's own name when watching a file).
        filename: Option<String>,
    },
    /// The watch failed or its target vanished; no more events follow.
    Error { error: crate::Errno },
}

/// An item of the `fs.changes` feed (subscription [`crate::methods::Changes`]), which lets a
/// client cache metadata and small files and stay coherent with the remote disk.
///
/// The contract:
/// - The agent watches the project recursively with inotify (every directory it can; new ones as
///   they appear). Answers that stay true until a change is reported carry `cache: true`
///   ([`crate::fs::Stat::cache`], [`crate::fs::ReadResult::cache`], [`crate::Errno::cache`]):
///   the path's parent directory is watched and was reached without symlinks, and a following
///   stat or a read did not go through a symlink at the path itself. Anything else is
///   `cache: false` (absent) and must not be cached.
/// - Every change under the project is reported on every open feed as [`Change::Paths`]: for each
///   path, the path itself, everything under it, and the stat and listing of its parent may have
///   changed. The agent may report a directory instead of many of its children.
/// - A process's end is a barrier: the agent reads every pending inotify event and sends its
///   `fs.changed` before the process's `exit` event (`proc.spawn`) or the `proc.run` answer, on
///   the same link, so a client that applies changes in arrival order never serves a stale entry
///   after a command it ran has finished.
/// - A client caches an answer only if its request was sent after its own feed's subscription
///   was answered, and only if no `fs.changed` arrived while the request was in flight.
/// - [`Change::All`]: anything may have changed (the kernel's queue overflowed): drop everything.
/// - [`Change::Error`] ends the feed (the session that held it is gone): drop everything and stop
///   caching until a new feed is answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum Change {
    /// Absolute remote paths.
    Paths {
        paths: Vec<String>,
    },
    All {},
    Error {
        error: crate::Errno,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roundtrip::{check, rejects_unknown};

    #[test]
    fn watch_roundtrip() {
        check(
            WatchParams {
                path: "/p/.git".into(),
                recursive: false,
            },
            r#"{"path":"/p/.git","recursive":false}"#,
        );
        rejects_unknown::<WatchParams>(r#"{"path":"/p","poll":1}"#);
        check(
            WatchEvent::Event {
                event_type: "rename".into(),
                filename: Some("HEAD".into()),
            },
            r#"{"type":"event","eventType":"rename","filename":"HEAD"}"#,
        );
        check(
            WatchEvent::Error {
                error: crate::Errno::new("ENOENT", "watch", Some("/p/x")),
            },
            r#"{"type":"error","error":{"code":"ENOENT","syscall":"watch","path":"/p/x"}}"#,
        );
    }

    #[test]
    fn change_roundtrip() {
        check(
            Change::Paths {
                paths: vec!["/p/a".into(), "/p/b/c".into()],
            },
            r#"{"type":"paths","paths":["/p/a","/p/b/c"]}"#,
        );
        check(Change::All {}, r#"{"type":"all"}"#);
        check(
            Change::Error {
                error: crate::Errno::new("EIO", "read", None),
            },
            r#"{"type":"error","error":{"code":"EIO","syscall":"read"}}"#,
        );
        rejects_unknown::<Change>(r#"{"type":"all","x":1}"#);
        let mut e = crate::Errno::new("ENOENT", "stat", Some("/p/x"));
        e.cache = true;
        check(
            e,
            r#"{"code":"ENOENT","syscall":"stat","path":"/p/x","cache":true}"#,
        );
    }
}
