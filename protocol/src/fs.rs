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
    /// With `recursive`: also list what is under a symlink to a directory, through the link
    /// (`link/f`), as Node's recursive readdir does in some of its forms (which ones depends on
    /// the Node version; the client knows). A link leading outside the sandbox is listed but not
    /// descended.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub follow: bool,
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

/// What `fs.readdir` answers.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ReadDirResult {
    pub entries: Vec<DirEntry>,
    /// Set by the agent on a non-recursive listing of a directory that was watched before the
    /// call and reached without a symlink (not even at its end): the listing stays true until an
    /// `fs.changed` names one of its entries, the directory or an ancestor (see
    /// [`crate::watch::Change`]); clients may cache it.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub cache: bool,
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

/// How a whole-file write opens its target (Node's flags). Every write goes into the target's
/// own inode, through the kernel's permission check at open, as Node's does: mode, owner, hard
/// links and extended attributes stay (ARCHITECTURE.md §1a, "The write rule").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum WriteFlag {
    /// Create or truncate, then write (`O_WRONLY|O_CREAT|O_TRUNC`).
    #[default]
    #[serde(rename = "w")]
    Write,
    /// Like `w`, but fail with EEXIST if the target exists.
    #[serde(rename = "wx")]
    Exclusive,
    /// Append (`O_APPEND`).
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
    /// fsync(2) the file before answering (Node's `flush: true`).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub flush: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UploadBeginParams {
    pub path: String,
    #[serde(default)]
    pub flag: WriteFlag,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// fsync(2) the file at commit (Node's `flush: true`).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub flush: bool,
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

/// How `fs.open` opens a file: Node's flags spelled out, because the numeric `O_*` values of
/// the laptop's OS (where the preload runs) are not Linux's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenFlags {
    /// Open for reading (with `write`: O_RDWR).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub read: bool,
    /// Open for writing (without `read`: O_WRONLY).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub write: bool,
    /// O_CREAT.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub create: bool,
    /// O_EXCL.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub exclusive: bool,
    /// O_TRUNC.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub truncate: bool,
    /// O_APPEND.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub append: bool,
    /// O_SYNC.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub sync: bool,
    /// O_DSYNC.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub dsync: bool,
    /// O_NOFOLLOW: a final symlink is an error (ELOOP).
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub nofollow: bool,
    /// O_DIRECTORY.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub directory: bool,
    /// O_NOATIME.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub noatime: bool,
}

impl OpenFlags {
    /// Whether opening with these flags may change the file system (create or truncate).
    pub fn mutates(&self) -> bool {
        self.create || self.truncate
    }
}

/// `fs.open`: open `path` and keep the descriptor in the session's table under the client's
/// name `fd` (unique in the session; at most [`MAX_FD_NAME`] bytes). Naming it on the client
/// makes the call idempotent: an `fs.open` whose descriptor is already open answers as the
/// first one did, so a call resent after a dropped link never opens (creates, truncates) twice.
/// Every open is non-blocking (`O_NONBLOCK`): a FIFO or a device never holds an agent thread;
/// reads of an empty FIFO then fail with `EAGAIN`, an open for writing of a FIFO without a
/// reader with `ENXIO`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenParams {
    pub fd: String,
    pub path: String,
    pub flags: OpenFlags,
    /// Mode of a file the open creates (before umask); default 0o666.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mode: Option<u32>,
    /// Also read up to this many bytes from offset 0 and answer them (`ahead`); only for an
    /// open that reads (capped at [`MAX_CHUNK`]).
    #[serde(default, skip_serializing_if = "is_zero")]
    pub ahead: u64,
}

fn is_zero(n: &u64) -> bool {
    *n == 0
}

/// The longest descriptor name a client may choose.
pub const MAX_FD_NAME: usize = 64;
/// The most descriptors one session may hold open at once (beyond: `EMFILE`).
pub const MAX_FDS: usize = 4096;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct OpenResult {
    /// fstat(2) of the descriptor just opened. `cache` as for `fs.stat` (only for an open that
    /// neither creates nor truncates): the path's stat, cacheable under the same rules.
    pub stat: Stat,
    /// The first bytes, when `ahead` asked for them (`size` is the file's size; `cache` as for
    /// `fs.read`: set when these are the whole file and the stat is cacheable).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ahead: Option<ReadResult>,
}

/// A call on an open descriptor.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FdParams {
    pub fd: String,
}

/// pread(2): up to `length` bytes (at most [`MAX_CHUNK`]) at `offset`. The answer's `size` is
/// the file's size after the read (fstat); `cache` is never set. `raw` as in [`ReadParams`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PreadParams {
    pub fd: String,
    pub offset: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub length: Option<u64>,
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub raw: bool,
}

/// pwrite(2) of all of `data` (at most [`MAX_CHUNK`]) at `offset`. Refused (`EINVAL`) on an
/// `O_APPEND` descriptor, where the kernel would append instead: use `fs.fappend` there, so
/// that this call stays idempotent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PwriteParams {
    pub fd: String,
    pub offset: u64,
    pub data: Bytes,
}

/// write(2) of all of `data` on an `O_APPEND` descriptor (anything else: `EINVAL`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AppendParams {
    pub fd: String,
    pub data: Bytes,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WriteResult {
    pub written: u64,
    /// The descriptor's offset afterwards (for an append: the end of the file).
    pub position: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FtruncateParams {
    pub fd: String,
    #[serde(default)]
    pub length: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FchmodParams {
    pub fd: String,
    pub mode: u32,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FutimesParams {
    pub fd: String,
    pub atime: Time,
    pub mtime: Time,
}

/// fchown(2); an absent id is left as it is (Node's -1).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FchownParams {
    pub fd: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
}

/// chown(2) or lchown(2) (`lstat`); an absent id is left as it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChownParams {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub uid: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gid: Option<u32>,
    #[serde(default)]
    pub lstat: bool,
}

/// fsync(2), or fdatasync(2) with `data`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct FsyncParams {
    pub fd: String,
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub data: bool,
}

/// statfs(2), as Node's `fs.StatFs`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StatFs {
    #[serde(rename = "type")]
    pub fs_type: u64,
    pub bsize: u64,
    /// The fragment size (`f_frsize`; Node 24+ reports it).
    pub frsize: u64,
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
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
                follow: false,
            },
            r#"{"path":"/p","recursive":false}"#,
        );
        check(
            ReadDirParams {
                path: "/p".into(),
                recursive: true,
                follow: true,
            },
            r#"{"path":"/p","recursive":true,"follow":true}"#,
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
                flush: false,
            },
            r#"{"path":"/p","data":"/wA=","flag":"wx","mode":420}"#,
        );
        rejects_unknown::<WriteParams>(r#"{"path":"/p","data":"","encoding":"utf8"}"#);
        check(
            UploadBeginParams {
                path: "/p".into(),
                flag: WriteFlag::Write,
                mode: None,
                flush: true,
            },
            r#"{"path":"/p","flag":"w","flush":true}"#,
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
    fn fd_messages_roundtrip() {
        check(
            OpenParams {
                fd: "a1.7".into(),
                path: "/p".into(),
                flags: OpenFlags {
                    read: true,
                    write: true,
                    create: true,
                    truncate: true,
                    ..OpenFlags::default()
                },
                mode: Some(0o600),
                ahead: 0,
            },
            r#"{"fd":"a1.7","path":"/p","flags":{"read":true,"write":true,"create":true,"truncate":true},"mode":384}"#,
        );
        check(
            OpenParams {
                fd: "x".into(),
                path: "/p".into(),
                flags: OpenFlags {
                    read: true,
                    ..OpenFlags::default()
                },
                mode: None,
                ahead: 65536,
            },
            r#"{"fd":"x","path":"/p","flags":{"read":true},"ahead":65536}"#,
        );
        check(OpenFlags::default(), "{}");
        check(
            OpenFlags {
                write: true,
                exclusive: true,
                append: true,
                sync: true,
                dsync: true,
                nofollow: true,
                directory: true,
                noatime: true,
                ..OpenFlags::default()
            },
            r#"{"write":true,"exclusive":true,"append":true,"sync":true,"dsync":true,"nofollow":true,"directory":true,"noatime":true}"#,
        );
        rejects_unknown::<OpenFlags>(r#"{"read":true,"rdwr":true}"#);
        rejects_unknown::<OpenParams>(r#"{"fd":"x","path":"/p","flags":{},"position":0}"#);
        let stat = Stat {
            dev: 1,
            ino: 2,
            mode: 0o100600,
            nlink: 1,
            uid: 3,
            gid: 4,
            rdev: 0,
            size: 2,
            blksize: 4096,
            blocks: 8,
            atime: Time(1, 0),
            mtime: Time(2, 0),
            ctime: Time(3, 0),
            birthtime: Time(0, 0),
            cache: true,
        };
        check(
            OpenResult {
                stat: stat.clone(),
                ahead: Some(ReadResult {
                    data: Bytes(b"hi".to_vec()),
                    size: 2,
                    cache: true,
                }),
            },
            r#"{"stat":{"dev":1,"ino":2,"mode":33152,"nlink":1,"uid":3,"gid":4,"rdev":0,"size":2,"blksize":4096,"blocks":8,"atime":[1,0],"mtime":[2,0],"ctime":[3,0],"birthtime":[0,0],"cache":true},"ahead":{"data":"aGk=","size":2,"cache":true}}"#,
        );
        check(FdParams { fd: "x".into() }, r#"{"fd":"x"}"#);
        rejects_unknown::<FdParams>(r#"{"fd":"x","path":"/p"}"#);
        check(
            PreadParams {
                fd: "x".into(),
                offset: 5,
                length: Some(7),
                raw: true,
            },
            r#"{"fd":"x","offset":5,"length":7,"raw":true}"#,
        );
        check(
            PwriteParams {
                fd: "x".into(),
                offset: 3,
                data: Bytes(vec![0xff]),
            },
            r#"{"fd":"x","offset":3,"data":"/w=="}"#,
        );
        rejects_unknown::<PwriteParams>(r#"{"fd":"x","data":"","offset":0,"append":true}"#);
        check(
            AppendParams {
                fd: "x".into(),
                data: Bytes(vec![1]),
            },
            r#"{"fd":"x","data":"AQ=="}"#,
        );
        check(
            WriteResult {
                written: 1,
                position: 9,
            },
            r#"{"written":1,"position":9}"#,
        );
        check(
            FtruncateParams {
                fd: "x".into(),
                length: 0,
            },
            r#"{"fd":"x","length":0}"#,
        );
        check(
            FchmodParams {
                fd: "x".into(),
                mode: 0o444,
            },
            r#"{"fd":"x","mode":292}"#,
        );
        check(
            FutimesParams {
                fd: "x".into(),
                atime: Time(1, 2),
                mtime: Time(3, 4),
            },
            r#"{"fd":"x","atime":[1,2],"mtime":[3,4]}"#,
        );
        check(
            FchownParams {
                fd: "x".into(),
                uid: None,
                gid: Some(5),
            },
            r#"{"fd":"x","gid":5}"#,
        );
        check(
            ChownParams {
                path: "/p".into(),
                uid: Some(0),
                gid: None,
                lstat: true,
            },
            r#"{"path":"/p","uid":0,"lstat":true}"#,
        );
        check(
            FsyncParams {
                fd: "x".into(),
                data: true,
            },
            r#"{"fd":"x","data":true}"#,
        );
        check(
            StatFs {
                fs_type: 0x01021994,
                bsize: 4096,
                frsize: 4096,
                blocks: 10,
                bfree: 5,
                bavail: 4,
                files: 100,
                ffree: 50,
            },
            r#"{"type":16914836,"bsize":4096,"frsize":4096,"blocks":10,"bfree":5,"bavail":4,"files":100,"ffree":50}"#,
        );
        check(
            WriteParams {
                path: "/p".into(),
                data: Bytes(vec![]),
                flag: WriteFlag::Append,
                mode: None,
                flush: true,
            },
            r#"{"path":"/p","data":"","flag":"a","flush":true}"#,
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
            ReadDirResult {
                entries: vec![
                    DirEntry {
                        name: "a".into(),
                        kind: FileKind::Dir,
                    },
                    DirEntry {
                        name: "l".into(),
                        kind: FileKind::Symlink,
                    },
                ],
                cache: false,
            },
            r#"{"entries":[{"name":"a","kind":"dir"},{"name":"l","kind":"symlink"}]}"#,
        );
        check(
            ReadDirResult {
                entries: vec![],
                cache: true,
            },
            r#"{"entries":[],"cache":true}"#,
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
