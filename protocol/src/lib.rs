//! The one definition of every message `pii`, the preload and `pi-bridge-agent` speak.
//!
//! Wire format: JSON-RPC 2.0, one JSON object per line ([`frame`]), on ssh's stdin/stdout between
//! `pii` and the agent, and on the token-protected loopback socket between the preload and `pii`
//! ([`endpoint`]). `pii` forwards preload frames to the agent, rewriting only the `id`.
//!
//! Every method is a type implementing [`Method`] (plain call) or [`Subscription`] (a call that
//! answers with a subscription id, then pushes notifications). The lists [`METHODS`] and
//! [`SUBSCRIPTIONS`] are what both ends register and route.
//!
//! Conventions: field names are camelCase; bytes are base64 strings ([`Bytes`]); times are
//! `[seconds, nanoseconds]` ([`Time`]); paths are absolute remote paths as UTF-8 strings; params
//! reject unknown fields. OS failures travel as JSON-RPC errors with code [`error::OS_ERROR`] and
//! an [`Errno`] in `data`.

pub mod endpoint;
pub mod error;
pub mod frame;
pub mod fs;
pub mod hello;
pub mod hops;
pub mod proc;
pub mod rpc;
pub mod secret;
pub mod session;
pub mod trust;
pub mod watch;

mod bytes;

pub use crate::bytes::Bytes;
pub use error::{Errno, ErrorCode};
pub use frame::{FrameError, FrameReader, MAX_FRAME};
pub use hello::{Facts, Hello, HelloResult, Magic};

use serde::{de::DeserializeOwned, Serialize};

/// The wire protocol version as a literal, for `concat!` ([`PROTOCOL_VERSION`] and
/// [`hello::MAGIC_LINE`] both come from it, so they cannot drift apart).
#[doc(hidden)]
#[macro_export]
macro_rules! protocol_version_literal {
    () => {
        1
    };
}

/// Version of the wire protocol. Bumped on any incompatible change; both ends refuse a mismatch
/// with an error naming both versions.
pub const PROTOCOL_VERSION: u32 = protocol_version_literal!();

/// Version of the pi-bridge release (the same for `pii`, the agent and this crate).
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// A plain JSON-RPC method: one request, one response.
pub trait Method {
    /// The JSON-RPC method name.
    const NAME: &'static str;
    /// Whether repeating the call after a lost response cannot change the outcome (the session
    /// retries these after a reconnect; others fail instead of risking a double apply).
    const IDEMPOTENT: bool;
    type Params: Serialize + DeserializeOwned + Send + 'static;
    type Result: Serialize + DeserializeOwned + Clone + Send + 'static;
}

/// A JSON-RPC subscription: the call answers with a subscription id, then the server sends
/// `NOTIFICATION` frames (`params: {subscription, result: Item}`) until it ends the subscription.
pub trait Subscription {
    const NAME: &'static str;
    const NOTIFICATION: &'static str;
    const UNSUBSCRIBE: &'static str;
    type Params: Serialize + DeserializeOwned + Send + 'static;
    type Item: Serialize + DeserializeOwned + Clone + Send + 'static;
}

macro_rules! methods {
    ($( $(#[$doc:meta])* $ty:ident = $name:literal, idempotent = $idem:literal, ($params:ty) -> $result:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $ty {}
            impl Method for $ty {
                const NAME: &'static str = $name;
                const IDEMPOTENT: bool = $idem;
                type Params = $params;
                type Result = $result;
            }
        )*
        /// Every plain method: (name, idempotent).
        pub const METHODS: &[(&str, bool)] = &[$(($name, $idem)),*];
    };
}

macro_rules! subscriptions {
    ($( $(#[$doc:meta])* $ty:ident = $name:literal, notification = $notif:literal, unsubscribe = $unsub:literal, ($params:ty) -> $item:ty; )*) => {
        $(
            $(#[$doc])*
            #[derive(Debug)]
            pub enum $ty {}
            impl Subscription for $ty {
                const NAME: &'static str = $name;
                const NOTIFICATION: &'static str = $notif;
                const UNSUBSCRIBE: &'static str = $unsub;
                type Params = $params;
                type Item = $item;
            }
        )*
        /// Every subscription: (subscribe, notification, unsubscribe).
        pub const SUBSCRIPTIONS: &[(&str, &str, &str)] = &[$(($name, $notif, $unsub)),*];
    };
}

/// Method types, one per JSON-RPC method.
pub mod methods {
    use super::*;
    use crate::fs::*;
    use crate::proc::*;

    methods! {
        /// The first call on a connection to the agent: checks versions, sets the project root.
        HelloCall = "hello", idempotent = true, (Hello) -> HelloResult;
        /// Answered by `pii` itself on the loopback endpoint: the session's facts.
        SessionInfo = "session.info", idempotent = true, (Empty) -> endpoint::SessionInfo;
        /// stat(2) or lstat(2).
        Stat = "fs.stat", idempotent = true, (StatParams) -> crate::fs::Stat;
        /// access(2); `mode` is F_OK/R_OK/W_OK/X_OK bits.
        Access = "fs.access", idempotent = true, (AccessParams) -> Empty;
        /// Directory entries with their types (never `.`/`..`), sorted by name; `cache` as
        /// [`fs::ReadDirResult`] says.
        ReadDir = "fs.readdir", idempotent = true, (ReadDirParams) -> ReadDirResult;
        /// Read up to `length` bytes (at most [`fs::MAX_CHUNK`]) from `offset`.
        Read = "fs.read", idempotent = true, (ReadParams) -> ReadResult;
        /// Write a whole file (data at most [`fs::MAX_CHUNK`]) in place: open, write, close.
        Write = "fs.write", idempotent = false, (WriteParams) -> Empty;
        /// Start a chunked write of a large file: the target is opened now (so EACCES, EEXIST,
        /// EISDIR come first, as Node's open reports them) and left as it is until the commit;
        /// the chunks are staged in an anonymous file only the agent can reach.
        UploadBegin = "fs.upload.begin", idempotent = false, (UploadBeginParams) -> UploadId;
        /// Append a chunk to an upload's staged data.
        UploadChunk = "fs.upload.chunk", idempotent = false, (UploadChunkParams) -> Empty;
        /// Copy the staged data into the target (truncating it first unless appending).
        UploadCommit = "fs.upload.commit", idempotent = false, (UploadId) -> Empty;
        /// Drop an upload; the target is untouched.
        UploadAbort = "fs.upload.abort", idempotent = true, (UploadId) -> Empty;
        /// mkdir(2), or `mkdir -p` with `recursive`.
        Mkdir = "fs.mkdir", idempotent = false, (MkdirParams) -> MkdirResult;
        /// rmdir(2).
        Rmdir = "fs.rmdir", idempotent = false, (PathParams) -> Empty;
        /// unlink(2).
        Unlink = "fs.unlink", idempotent = false, (PathParams) -> Empty;
        /// `rm` with Node's `recursive`/`force` semantics.
        Rm = "fs.rm", idempotent = false, (RmParams) -> Empty;
        /// rename(2).
        Rename = "fs.rename", idempotent = false, (RenameParams) -> Empty;
        /// Copy a file's bytes and mode.
        CopyFile = "fs.copyFile", idempotent = false, (CopyFileParams) -> Empty;
        /// realpath(3).
        Realpath = "fs.realpath", idempotent = true, (PathParams) -> String;
        /// readlink(2).
        Readlink = "fs.readlink", idempotent = true, (PathParams) -> String;
        /// symlink(2): create `path` pointing at `target`.
        Symlink = "fs.symlink", idempotent = false, (SymlinkParams) -> Empty;
        /// link(2).
        Link = "fs.link", idempotent = false, (RenameParams) -> Empty;
        /// chmod(2).
        Chmod = "fs.chmod", idempotent = true, (ChmodParams) -> Empty;
        /// utimensat(2).
        Utimes = "fs.utimes", idempotent = true, (UtimesParams) -> Empty;
        /// truncate(2).
        Truncate = "fs.truncate", idempotent = false, (TruncateParams) -> Empty;
        /// mkdtemp(3): `prefix` + six random characters.
        Mkdtemp = "fs.mkdtemp", idempotent = false, (MkdtempParams) -> String;
        /// open(2): a descriptor kept in the session's table under the client's name.
        Open = "fs.open", idempotent = true, (OpenParams) -> OpenResult;
        /// pread(2) on an open descriptor.
        Pread = "fs.pread", idempotent = true, (PreadParams) -> ReadResult;
        /// pwrite(2) on an open descriptor (not an `O_APPEND` one).
        Pwrite = "fs.pwrite", idempotent = true, (PwriteParams) -> WriteResult;
        /// write(2) on an `O_APPEND` descriptor.
        Fappend = "fs.fappend", idempotent = false, (AppendParams) -> WriteResult;
        /// fstat(2).
        Fstat = "fs.fstat", idempotent = true, (FdParams) -> crate::fs::Stat;
        /// ftruncate(2).
        Ftruncate = "fs.ftruncate", idempotent = true, (FtruncateParams) -> Empty;
        /// fchmod(2).
        Fchmod = "fs.fchmod", idempotent = true, (FchmodParams) -> Empty;
        /// fchown(2).
        Fchown = "fs.fchown", idempotent = true, (FchownParams) -> Empty;
        /// futimens(2).
        Futimes = "fs.futimes", idempotent = true, (FutimesParams) -> Empty;
        /// fsync(2) / fdatasync(2).
        Fsync = "fs.fsync", idempotent = true, (FsyncParams) -> Empty;
        /// close(2); a descriptor the session does not hold (closed already) is not an error,
        /// so a close resent after a dropped link succeeds.
        Close = "fs.close", idempotent = true, (FdParams) -> Empty;
        /// chown(2) / lchown(2).
        Chown = "fs.chown", idempotent = true, (ChownParams) -> Empty;
        /// statfs(2).
        Statfs = "fs.statfs", idempotent = true, (PathParams) -> crate::fs::StatFs;
        /// Several calls in one round trip; each gets its own result or error.
        Batch = "fs.batch", idempotent = false, (BatchParams) -> Vec<BatchResult>;
        /// Run a process to completion (spawnSync/execSync).
        Run = "proc.run", idempotent = false, (RunParams) -> RunResult;
        /// Write to (or close) a spawned process's stdin.
        Stdin = "proc.stdin", idempotent = false, (StdinParams) -> Empty;
        /// Send a signal to a spawned process or its process group.
        Kill = "proc.kill", idempotent = false, (KillParams) -> bool;
        /// The client has every notification up to `seq` (see [`crate::session`]). Sent as a
        /// notification (no id, no answer); a call with an id is answered with `null`.
        SessionAck = "session.ack", idempotent = true, (crate::session::AckParams) -> Empty;
        /// A clean end: when the input closes after this, the agent kills the session's
        /// processes at once instead of keeping them for a resume.
        SessionEnd = "session.end", idempotent = true, (Empty) -> Empty;
        /// Per-hop timestamps ([`crate::hops`]): start the agent's recording, or stop it and
        /// take what it recorded. Only pii calls it, and only under `PI_BRIDGE_HOPS`.
        SessionHops = "session.hops", idempotent = true, (crate::hops::HopsParams) -> Vec<crate::hops::Stamp>;
    }

    subscriptions! {
        /// Spawn a process; its output and exit arrive as `proc.event` notifications.
        Spawn = "proc.spawn", notification = "proc.event", unsubscribe = "proc.unsubscribe", (SpawnParams) -> ProcEvent;
        /// Watch a path with inotify; events arrive as `watch.event` notifications.
        Watch = "watch.start", notification = "watch.event", unsubscribe = "watch.stop", (crate::watch::WatchParams) -> crate::watch::WatchEvent;
        /// The project's change feed, which keeps clients' metadata caches coherent: what may
        /// have changed since the subscription began (see [`crate::watch::Change`]).
        Changes = "fs.changes", notification = "fs.changed", unsubscribe = "fs.changes.stop", (crate::watch::ChangesParams) -> crate::watch::Change;
    }
}

pub use methods::{METHODS, SUBSCRIPTIONS};

/// Whether `method` may be repeated safely (unknown methods are not).
pub fn is_idempotent(method: &str) -> bool {
    METHODS.iter().any(|(name, idem)| *name == method && *idem)
}

/// The subscription whose subscribe method is `method`, if any.
pub fn subscription(method: &str) -> Option<(&'static str, &'static str, &'static str)> {
    SUBSCRIPTIONS
        .iter()
        .copied()
        .find(|(name, _, _)| *name == method)
}

/// For `skip_serializing_if` on flags that are absent unless set.
pub(crate) fn is_false(b: &bool) -> bool {
    !*b
}

/// A result or params with no fields (`null` on the wire, `{}` also accepted as params).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Empty;

impl Serialize for Empty {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_unit()
    }
}

impl<'de> serde::Deserialize<'de> for Empty {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        use serde::de::Error;
        match serde_json::Value::deserialize(d)? {
            serde_json::Value::Null => Ok(Empty),
            serde_json::Value::Object(m) if m.is_empty() => Ok(Empty),
            serde_json::Value::Array(a) if a.is_empty() => Ok(Empty),
            other => Err(D::Error::custom(format!("expected no params, got {other}"))),
        }
    }
}

#[cfg(test)]
pub(crate) mod roundtrip {
    use serde::{de::DeserializeOwned, Serialize};
    use std::fmt::Debug;

    /// Serialize, parse back, compare; and check the JSON is what we expect.
    pub fn check<T: Serialize + DeserializeOwned + PartialEq + Debug>(value: T, json: &str) {
        let text = serde_json::to_string(&value).unwrap();
        let expected: serde_json::Value = serde_json::from_str(json).unwrap();
        let actual: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(actual, expected, "wire form of {value:?}");
        let back: T = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    /// Params must refuse fields they do not know.
    pub fn rejects_unknown<T: DeserializeOwned + Debug>(json_with_extra: &str) {
        let r = serde_json::from_str::<T>(json_with_extra);
        assert!(r.is_err(), "accepted unknown field: {r:?}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn method_names_are_unique() {
        let mut names: Vec<&str> = METHODS.iter().map(|m| m.0).collect();
        for s in SUBSCRIPTIONS {
            names.extend([s.0, s.1, s.2]);
        }
        let n = names.len();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), n);
    }

    #[test]
    fn idempotence_table() {
        assert!(is_idempotent("fs.stat"));
        assert!(!is_idempotent("fs.write"));
        assert!(!is_idempotent("no.such"));
        assert_eq!(subscription("proc.spawn").unwrap().1, "proc.event");
        assert!(subscription("fs.stat").is_none());
    }

    #[test]
    fn empty_accepts_null_and_empty_object() {
        roundtrip::check(Empty, "null");
        assert!(serde_json::from_str::<Empty>("{}").is_ok());
        assert!(serde_json::from_str::<Empty>("{\"a\":1}").is_err());
    }
}
