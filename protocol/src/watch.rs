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
}
