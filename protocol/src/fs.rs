//! File-system calls. Every path is an absolute remote path; the agent confines each one to the
//! sandbox root after canonicalisation and answers a refused path with `EACCES` (with a
//! `detail`), touching nothing.

use crate::Bytes;
use serde::{Deserialize, Serialize};

/// The most raw bytes one `fs.read` returns or one `fs.write`/`fs.upload.chunk` carries
/// (base64 of it stays well under [`crate::MAX_FRAME`]).
pub const MAX_CHUNK: usize = 4 * 1024 * 1024;

/// A timestamp: `[seconds, nanoseconds]` since the epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub struct Time(pub i64, pub u32);

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PathParams {
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatParams {
    pub path: String,
    /// `true`: lstat (do not follow a final symlink).
    #[serde(default)]
    pub lstat: bool,
}

/// All of `fs.Stats`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Stat {
    pub dev: u64,
    pub ino: u64,
    pub mode: u32,
    pub nlink: u64,
    pub uid: u32,
    pub gid: u32,
    pub rdev: u64,
    pub size: u64,
    pub blksize: u64,
    pub blocks: u64,
    pub atime: Time,
    pub mtime: Time,
    pub ctime: Time,
    pub birthtime: Time,
    /// Set by the agent when this answer stays true until an `fs.changed` notification names
    /// this path or an ancestor (see [`crate::watch::Change`]); clients may cache it.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AccessParams {
    pub path: String,
    /// F_OK = 0, R_OK = 4, W_OK = 2, X_OK = 1.
    #[serde(default)]
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadDirParams {
    pub path: String,
    /// List the whole tree; names are then relative paths (`a/b`), in Node's order.
    #[serde(default)]
    pub recursive: bool,
}

/// What `d_type` says (or lstat, where the file system does not fill it in).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum FileKind {
    File,
    Dir,
    Symlink,
    Block,
    Char,
    Fifo,
    Socket,
    Unknown,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DirEntry {
    pub name: String,
    pub kind: FileKind,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadParams {
    pub path: String,
    #[serde(default)]
    pub offset: u64,
    /// At most this many bytes (capped at [`MAX_CHUNK`]); default: up to the cap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    /// Answer with a binary frame ([`crate::frame`]): header `result` = [`RawReadResult`], the
    /// bytes as the payload. Errors stay JSON error frames. Only the agent's direct line loop
    /// honours it (inside `fs.batch` a read answers as usual, with `data`).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub raw: bool,
}

/// The `result` of a raw [`ReadParams`] read's binary frame: [`ReadResult`] without `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RawReadResult {
    pub size: u64,
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub cache: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadResult {
    pub data: Bytes,
    /// The file's size when it was opened: the reader knows whether more chunks follow.
    pub size: u64,
    /// As [`Stat::cache`]: the bytes stay valid until an `fs.changed` names the path or an
    /// ancestor.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub cache: bool,
}

/// How a whole-file write opens its target (Node's flags).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WriteFlag {
    /// Create or replace (atomically: temp file in the same directory, fsync, rename).
    #[default]
    #[serde(rename = "w")]
    Write,
    /// Like `w`, but fail with EEXIST if the target exists.
    #[serde(rename = "wx")]
    Exclusive,
    /// Append (O_APPEND; not atomic by nature).
    #[serde(rename = "a")]
    Append,
    /// Append, failing with EEXIST if the target exists.
    #[serde(rename = "ax")]
    AppendExclusive,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteParams {
    pub path: String,
    pub data: Bytes,
    #[serde(default)]
    pub flag: WriteFlag,
    /// Mode for a NEW file (before umask); an existing file keeps its mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadBeginParams {
    pub path: String,
    #[serde(default)]
    pub flag: WriteFlag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadId {
    pub id: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadChunkParams {
    pub id: String,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MkdirParams {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MkdirResult {
    /// With `recursive`: the first directory created, as Node returns it.
    pub first: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RmParams {
    pub path: String,
    #[serde(default)]
    pub recursive: bool,
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RenameParams {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CopyFileParams {
    pub from: String,
    pub to: String,
    /// COPYFILE_EXCL: fail with EEXIST if `to` exists.
    #[serde(default)]
    pub exclusive: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SymlinkParams {
    /// What the link points at (stored as given; not confined — it is only text).
    pub target: String,
    /// The link to create (confined).
    pub path: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChmodParams {
    pub path: String,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UtimesParams {
    pub path: String,
    pub atime: Time,
    pub mtime: Time,
    /// `true`: lutimes (do not follow a final symlink).
    #[serde(default)]
    pub lstat: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct TruncateParams {
    pub path: String,
    #[serde(default)]
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct MkdtempParams {
    pub prefix: String,
}

/// One call inside `fs.batch`: any plain `fs.*` method and its params.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchCall {
    pub method: String,
    pub params: serde_json::Value,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BatchParams {
    pub calls: Vec<BatchCall>,
}

/// One outcome in a batch, in call order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub enum BatchResult {
    Ok(serde_json::Value),
    Err {
        code: i32,
        message: String,
        data: Option<serde_json::Value>,
    },
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roundtrip::{check, rejects_unknown};

    #[test]
    fn params_roundtrip() {
        check(PathParams { path: "/p".into() }, r#"{"path":"/p"}"#);
        rejects_unknown::<PathParams>(r#"{"path":"/p","x":1}"#);
        check(
            StatParams {
                path: "/p".into(),
                lstat: true,
            },
            r#"{"path":"/p","lstat":true}"#,
        );
        assert!(
            !serde_json::from_str::<StatParams>(r#"{"path":"/p"}"#)
                .unwrap()
                .lstat
        );
        rejects_unknown::<StatParams>(r#"{"path":"/p","follow":true}"#);
        check(
            AccessParams {
                path: "/p".into(),
                mode: 6,
            },
            r#"{"path":"/p","mode":6}"#,
        );
        check(
            ReadDirParams {
                path: "/p".into(),
                recursive: false,
            },
            r#"{"path":"/p","recursive":false}"#,
        );
        check(
            ReadParams {
                path: "/p".into(),
                offset: 4,
                length: Some(10),
                raw: false,
            },
            r#"{"path":"/p","offset":4,"length":10}"#,
        );
        check(
            ReadParams {
                path: "/p".into(),
                offset: 0,
                length: None,
                raw: true,
            },
            r#"{"path":"/p","offset":0,"raw":true}"#,
        );
        check(
            RawReadResult {
                size: 5,
                cache: true,
            },
            r#"{"size":5,"cache":true}"#,
        );
        check(
            WriteParams {
                path: "/p".into(),
                data: Bytes(vec![0xff, 0]),
                flag: WriteFlag::Exclusive,
                mode: Some(0o644),
            },
            r#"{"path":"/p","data":"/wA=","flag":"wx","mode":420}"#,
        );
        rejects_unknown::<WriteParams>(r#"{"path":"/p","data":"","encoding":"utf8"}"#);
        check(
            UploadBeginParams {
                path: "/p".into(),
                flag: WriteFlag::Write,
                mode: None,
            },
            r#"{"path":"/p","flag":"w"}"#,
        );
        check(UploadId { id: "u1".into() }, r#"{"id":"u1"}"#);
        check(
            UploadChunkParams {
                id: "u1".into(),
                data: Bytes(vec![1]),
            },
            r#"{"id":"u1","data":"AQ=="}"#,
        );
        check(
            MkdirParams {
                path: "/p".into(),
                recursive: true,
                mode: None,
            },
            r#"{"path":"/p","recursive":true}"#,
        );
        check(
            RmParams {
                path: "/p".into(),
                recursive: true,
                force: false,
            },
            r#"{"path":"/p","recursive":true,"force":false}"#,
        );
        check(
            RenameParams {
                from: "/a".into(),
                to: "/b".into(),
            },
            r#"{"from":"/a","to":"/b"}"#,
        );
        check(
            CopyFileParams {
                from: "/a".into(),
                to: "/b".into(),
                exclusive: true,
            },
            r#"{"from":"/a","to":"/b","exclusive":true}"#,
        );
        check(
            SymlinkParams {
                target: "x".into(),
                path: "/p/l".into(),
            },
            r#"{"target":"x","path":"/p/l"}"#,
        );
        check(
            ChmodParams {
                path: "/p".into(),
                mode: 0o755,
            },
            r#"{"path":"/p","mode":493}"#,
        );
        check(
            UtimesParams {
                path: "/p".into(),
                atime: Time(1, 2),
                mtime: Time(3, 4),
                lstat: false,
            },
            r#"{"path":"/p","atime":[1,2],"mtime":[3,4],"lstat":false}"#,
        );
        check(
            TruncateParams {
                path: "/p".into(),
                length: 3,
            },
            r#"{"path":"/p","length":3}"#,
        );
        check(
            MkdtempParams {
                prefix: "/p/t-".into(),
            },
            r#"{"prefix":"/p/t-"}"#,
        );
        check(
            BatchParams {
                calls: vec![BatchCall {
                    method: "fs.stat".into(),
                    params: serde_json::json!({"path":"/p"}),
                }],
            },
            r#"{"calls":[{"method":"fs.stat","params":{"path":"/p"}}]}"#,
        );
    }

    #[test]
    fn results_roundtrip() {
        let t = Time(1_700_000_000, 123_456_789);
        check(
            Stat {
                dev: 1,
                ino: 2,
                mode: 0o100644,
                nlink: 1,
                uid: 3,
                gid: 4,
                rdev: 0,
                size: 5,
                blksize: 4096,
                blocks: 8,
                atime: t,
                mtime: t,
                ctime: t,
                birthtime: Time(0, 0),
                cache: false,
            },
            r#"{"dev":1,"ino":2,"mode":33188,"nlink":1,"uid":3,"gid":4,"rdev":0,"size":5,"blksize":4096,"blocks":8,"atime":[1700000000,123456789],"mtime":[1700000000,123456789],"ctime":[1700000000,123456789],"birthtime":[0,0]}"#,
        );
        check(
            vec![
                DirEntry {
                    name: "a".into(),
                    kind: FileKind::Dir,
                },
                DirEntry {
                    name: "l".into(),
                    kind: FileKind::Symlink,
                },
            ],
            r#"[{"name":"a","kind":"dir"},{"name":"l","kind":"symlink"}]"#,
        );
        check(
            ReadResult {
                data: Bytes(vec![0xff, 0x00, 0x80]),
                size: 3,
                cache: false,
            },
            r#"{"data":"/wCA","size":3}"#,
        );
        check(
            ReadResult {
                data: Bytes(vec![]),
                size: 0,
                cache: true,
            },
            r#"{"data":"","size":0,"cache":true}"#,
        );
        check(
            MkdirResult {
                first: Some("/p/a".into()),
            },
            r#"{"first":"/p/a"}"#,
        );
        check(
            vec![
                BatchResult::Ok(serde_json::json!(null)),
                BatchResult::Err {
                    code: -32000,
                    message: "m".into(),
                    data: None,
                },
            ],
            r#"[{"ok":null},{"err":{"code":-32000,"message":"m","data":null}}]"#,
        );
    }
}
