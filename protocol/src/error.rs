//! Errors on the wire.
//!
//! OS failures are errno-shaped ([`Errno`]): the symbolic `code` (`ENOENT`…), the `syscall` and
//! the path(s) involved. The numeric errno is deliberately NOT sent: it differs between Linux (the
//! agent) and macOS (where pi often runs), so the preload derives it from `code` with the local
//! `os.constants.errno`, and builds Node's exact message from its own table.

use serde::{Deserialize, Serialize};

/// JSON-RPC error codes used by pi-bridge (besides the standard -32700…-32603).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum ErrorCode {
    /// An OS error; `data` is an [`Errno`].
    Os = -32000,
    /// Protocol versions differ; the message names both.
    VersionMismatch = -32001,
    /// A call other than `hello` before the handshake.
    NotReady = -32002,
    /// The frame exceeded [`crate::MAX_FRAME`].
    FrameTooLarge = -32003,
    /// The connection to the agent was lost and the call was not idempotent, so it was not
    /// retried (it may or may not have been applied).
    ConnectionLost = -32004,
    /// The call did not complete within the configured `rpcTimeout`.
    Timeout = -32005,
    /// `hello` asked to resume a session the agent does not hold any more (its grace period
    /// ended, or the remote restarted): start a new session.
    SessionGone = -32006,
    /// Standard JSON-RPC: the frame is not JSON.
    ParseError = -32700,
    /// Standard JSON-RPC: not a valid request object.
    InvalidRequest = -32600,
    /// Standard JSON-RPC.
    MethodNotFound = -32601,
    /// Standard JSON-RPC: params of the wrong shape.
    InvalidParams = -32602,
}

impl ErrorCode {
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// An OS error as Node reports it: `code`, `syscall`, `path`, `dest`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Errno {
    /// Symbolic errno name: `ENOENT`, `EACCES`, …
    pub code: String,
    /// The syscall name as Node reports it (`open`, `stat`, `lstat`, `scandir`, `rename`, …).
    pub syscall: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dest: Option<String>,
    /// Extra words for humans (e.g. why a path was refused). Not part of Node's message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub detail: Option<String>,
    /// Set by the agent on a failed lookup (ENOENT, ENOTDIR) that stays true until an
    /// `fs.changed` notification names this path or an ancestor: a cacheable negative lookup.
    #[serde(default, skip_serializing_if = "crate::is_false")]
    pub cache: bool,
}

impl Errno {
    pub fn new(code: &str, syscall: &str, path: Option<&str>) -> Self {
        Errno {
            code: code.to_string(),
            syscall: syscall.to_string(),
            path: path.map(str::to_string),
            dest: None,
            detail: None,
            cache: false,
        }
    }

    /// From an `io::Error` raised by `syscall` on `path`.
    pub fn from_io(err: &std::io::Error, syscall: &str, path: Option<&str>) -> Self {
        let code = err
            .raw_os_error()
            .map(errno_name)
            .unwrap_or(match err.kind() {
                std::io::ErrorKind::NotFound => "ENOENT",
                std::io::ErrorKind::PermissionDenied => "EACCES",
                std::io::ErrorKind::AlreadyExists => "EEXIST",
                std::io::ErrorKind::InvalidInput => "EINVAL",
                _ => "EIO",
            });
        Errno::new(code, syscall, path)
    }

    pub fn with_dest(mut self, dest: &str) -> Self {
        self.dest = Some(dest.to_string());
        self
    }

    pub fn with_detail(mut self, detail: impl Into<String>) -> Self {
        self.detail = Some(detail.into());
        self
    }

    /// A message in Node's shape: `ENOENT: no such file or directory, open '/x'`.
    pub fn message(&self) -> String {
        let mut m = format!("{}: {}, {}", self.code, describe(&self.code), self.syscall);
        if let Some(p) = &self.path {
            m.push_str(&format!(" '{p}'"));
        }
        if let Some(d) = &self.dest {
            m.push_str(&format!(" -> '{d}'"));
        }
        if let Some(d) = &self.detail {
            m.push_str(&format!(" ({d})"));
        }
        m
    }
}

impl std::fmt::Display for Errno {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message())
    }
}

impl std::error::Error for Errno {}

macro_rules! errnos {
    ($($name:ident => $desc:literal),* $(,)?) => {
        /// The symbolic name of an errno value of the platform this runs on.
        pub fn errno_name(n: i32) -> &'static str {
            $( if n == libc::$name { return stringify!($name); } )*
            "EIO"
        }
        /// libuv's description of a symbolic errno (what Node puts in messages).
        pub fn describe(code: &str) -> &'static str {
            match code { $( stringify!($name) => $desc, )* _ => "unknown error" }
        }
    };
}

errnos! {
    ENOENT => "no such file or directory",
    EACCES => "permission denied",
    EEXIST => "file already exists",
    EISDIR => "illegal operation on a directory",
    ENOTDIR => "not a directory",
    ENOTEMPTY => "directory not empty",
    EPERM => "operation not permitted",
    ELOOP => "too many symbolic links encountered",
    EINVAL => "invalid argument",
    EIO => "i/o error",
    EBADF => "bad file descriptor",
    EBUSY => "resource busy or locked",
    EXDEV => "cross-device link not permitted",
    ENOSPC => "no space left on device",
    EROFS => "read-only file system",
    ENAMETOOLONG => "name too long",
    EMFILE => "too many open files",
    ENFILE => "file table overflow",
    ETXTBSY => "text file is busy",
    EFBIG => "file too large",
    ESRCH => "no such process",
    EAGAIN => "resource temporarily unavailable",
    ENOSYS => "function not implemented",
    ENOTSUP => "operation not supported on socket",
    EDQUOT => "disk quota exceeded",
    ENXIO => "no such device or address",
    ENODEV => "no such device",
    ECHILD => "no child processes",
    EINTR => "interrupted system call",
    ENOMEM => "not enough memory",
    EFAULT => "bad address in system call argument",
    EPIPE => "broken pipe",
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errno_roundtrip() {
        crate::roundtrip::check(
            Errno::new("ENOENT", "open", Some("/p/x")),
            r#"{"code":"ENOENT","syscall":"open","path":"/p/x"}"#,
        );
        crate::roundtrip::check(
            Errno::new("EXDEV", "rename", Some("/a"))
                .with_dest("/b")
                .with_detail("why"),
            r#"{"code":"EXDEV","syscall":"rename","path":"/a","dest":"/b","detail":"why"}"#,
        );
        crate::roundtrip::rejects_unknown::<Errno>(r#"{"code":"E","syscall":"s","errno":2}"#);
    }

    #[test]
    fn node_shaped_message() {
        let e = Errno::new("ENOENT", "open", Some("/p/x"));
        assert_eq!(
            e.message(),
            "ENOENT: no such file or directory, open '/p/x'"
        );
        let e = Errno::new("EEXIST", "rename", Some("/a")).with_dest("/b");
        assert_eq!(
            e.message(),
            "EEXIST: file already exists, rename '/a' -> '/b'"
        );
    }

    #[test]
    fn io_errors_map_to_names() {
        let e = std::io::Error::from_raw_os_error(libc::ENOTEMPTY);
        assert_eq!(Errno::from_io(&e, "rmdir", None).code, "ENOTEMPTY");
        let e = std::io::Error::new(std::io::ErrorKind::NotFound, "x");
        assert_eq!(Errno::from_io(&e, "stat", None).code, "ENOENT");
    }
}
