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

/// Most bytes of a file's contents a [`PrefetchEntry`] carries.
pub const PREFETCH_MAX_DATA: u64 = 64 * 1024;
/// Most paths one `fs.changes` call may ask to prefetch.
pub const PREFETCH_MAX_PATHS: usize = 256;

/// `fs.changes` params. `null`, `{}` and `[]` mean no prefetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ChangesParams {
    /// Paths to look up for the client right after the answer ([`Change::Prefetch`], the feed's
    /// first item): absolute, or relative to the canonical project root (the agent knows it; the
    /// client may not yet when it subscribes). At most [`PREFETCH_MAX_PATHS`].
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<String>,
}

impl<'de> Deserialize<'de> for ChangesParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase", deny_unknown_fields)]
        struct Wire {
            #[serde(default)]
            prefetch: Vec<String>,
        }
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(Self::default()),
            serde_json::Value::Array(a) if a.is_empty() => Ok(Self::default()),
            v @ serde_json::Value::Object(_) => {
                let w: Wire = serde_json::from_value(v).map_err(D::Error::custom)?;
                if w.prefetch.len() > PREFETCH_MAX_PATHS {
                    return Err(D::Error::custom(format!(
                        "at most {PREFETCH_MAX_PATHS} prefetch paths"
                    )));
                }
                Ok(ChangesParams {
                    prefetch: w.prefetch,
                })
            }
            other => Err(D::Error::custom(format!(
                "expected fs.changes params, got {other}"
            ))),
        }
    }
}

/// One prefetched path: what `fs.stat {lstat: true}` and, for a small regular file, a whole-file
/// `fs.read` would have answered, with the same `cache` flags (computed after the answer, by the
/// watches existing then: in a big project still being armed, a deep path's may be false).
/// Exactly one of `lstat` and `error` is present.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PrefetchEntry {
    /// Absolute (as resolved by the agent, without symlinks resolved).
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lstat: Option<crate::fs::Stat>,
    /// The lstat's failure (with `cache` as an `fs.stat` answer would carry it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::Errno>,
    /// The whole contents of a regular file of at most [`PREFETCH_MAX_DATA`] bytes, only when
    /// `lstat.cache` is true; it is as valid as the lstat. Read without touching the file's
    /// atime (a prefetch changes nothing on the remote; where O_NOATIME is refused it is left out).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub data: Option<crate::Bytes>,
}

/// An item of the `fs.changes` feed (subscription [`crate::methods::Changes`]), which lets a
/// client cache metadata and small files and stay coherent with the remote disk.
///
/// The contract:
/// - The agent watches the project recursively with inotify (every directory it can; new ones as
///   they appear; a big project's in the background after the answer, shallowest first).
///   Answers that stay true until a change is reported carry `cache: true`
///   ([`crate::fs::Stat::cache`], [`crate::fs::ReadResult::cache`], [`crate::Errno::cache`]):
///   the path's parent directory was watched before the lookup (and, for a stat that found a
///   directory, that directory too) and was reached without symlinks, and a following stat or
///   a read did not go through a symlink at the path itself. Anything else is `cache: false`
///   (absent) and must not be cached. So coverage that grows while a client runs is learned
///   answer by answer; nothing else announces it.
/// - Every change under the project is reported on every open feed as [`Change::Paths`]: for each
///   path, the path itself, everything under it, and the stat and listing of its parent may have
///   changed. The agent may report a directory instead of many of its children.
/// - A process's end is a barrier: the agent reads every pending inotify event and sends its
///   `fs.changed` before the process's `exit` event (`proc.spawn`) or the `proc.run` answer, on
///   the same link, so a client that applies changes in arrival order never serves a stale entry
///   after a command it ran has finished.
/// - A client caches an answer only if its request was sent after its own feed's subscription
///   was answered, and only if no `fs.changed` arrived while the request was in flight.
/// - Every mutating `fs.*` call (write, upload commit, mkdir, rmdir, unlink, rm, rename, copyFile,
///   symlink, link, chmod, utimes, truncate, mkdtemp, and those inside `fs.batch`) is a barrier
///   too: the agent sends the `fs.changed` of what it did before the call's answer, on the same
///   link. A client with a live feed on the connection it made the call on therefore needs no
///   guess about where the call landed (a symlinked path's target is reported as itself).
/// - [`Change::Prefetch`], when the subscription asked for it ([`ChangesParams::prefetch`]), is
///   the feed's first item: lookups made for the client after the watcher was armed, answered on
///   the feed after its answer, so a client stores its flagged entries as if it had asked.
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
    /// Answers to the subscription's `prefetch` paths (the feed's first item).
    Prefetch {
        entries: Vec<PrefetchEntry>,
    },
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
    fn changes_params_roundtrip() {
        check(ChangesParams::default(), r#"{}"#);
        check(
            ChangesParams {
                prefetch: vec![".pi/settings.json".into(), "/p/AGENTS.md".into()],
            },
            r#"{"prefetch":[".pi/settings.json","/p/AGENTS.md"]}"#,
        );
        for none in ["null", "{}", "[]", r#"{"prefetch":[]}"#] {
            assert_eq!(
                serde_json::from_str::<ChangesParams>(none).unwrap(),
                ChangesParams::default(),
                "{none}"
            );
        }
        assert!(serde_json::from_str::<ChangesParams>(r#"{"prefetch":[],"x":1}"#).is_err());
        assert!(serde_json::from_str::<ChangesParams>(r#"{"prefetch":"a"}"#).is_err());
        assert!(serde_json::from_str::<ChangesParams>(r#"["a"]"#).is_err());
        let many = serde_json::json!({ "prefetch": vec!["a"; PREFETCH_MAX_PATHS + 1] });
        assert!(serde_json::from_value::<ChangesParams>(many).is_err());
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
        let st = crate::fs::Stat {
            dev: 1,
            ino: 2,
            mode: 0o100644,
            nlink: 1,
            uid: 0,
            gid: 0,
            rdev: 0,
            size: 2,
            blksize: 4096,
            blocks: 8,
            atime: crate::fs::Time(1, 0),
            mtime: crate::fs::Time(1, 0),
            ctime: crate::fs::Time(1, 0),
            birthtime: crate::fs::Time(0, 0),
            cache: true,
        };
        let mut missing = crate::Errno::new("ENOENT", "lstat", Some("/p/CLAUDE.md"));
        missing.cache = true;
        let item = Change::Prefetch {
            entries: vec![
                PrefetchEntry {
                    path: "/p/AGENTS.md".into(),
                    lstat: Some(st),
                    error: None,
                    data: Some(crate::Bytes(b"hi".to_vec())),
                },
                PrefetchEntry {
                    path: "/p/CLAUDE.md".into(),
                    lstat: None,
                    error: Some(missing),
                    data: None,
                },
            ],
        };
        let json = serde_json::to_value(&item).unwrap();
        assert_eq!(json["type"], "prefetch");
        assert_eq!(json["entries"][0]["data"], "aGk=");
        assert_eq!(json["entries"][0]["lstat"]["cache"], true);
        assert_eq!(
            json["entries"][1],
            serde_json::json!({"path":"/p/CLAUDE.md","error":{"code":"ENOENT","syscall":"lstat","path":"/p/CLAUDE.md","cache":true}})
        );
        let back: Change = serde_json::from_value(json).unwrap();
        assert_eq!(back, item);
        rejects_unknown::<PrefetchEntry>(r#"{"path":"/p/a","size":1}"#);
        rejects_unknown::<Change>(r#"{"type":"prefetch","entries":[],"x":1}"#);
        let mut e = crate::Errno::new("ENOENT", "stat", Some("/p/x"));
        e.cache = true;
        check(
            e,
            r#"{"code":"ENOENT","syscall":"stat","path":"/p/x","cache":true}"#,
        );
    }
}
