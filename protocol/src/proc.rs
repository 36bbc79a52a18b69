//! Processes on the remote. They are not sandboxed (they run as the ssh user, as `ssh host cmd`
//! would), but their `cwd` must lie inside the sandbox root. Every process starts in a process
//! group of its own, so a kill of the group reaches its whole tree, and the agent kills every
//! group it started when its stdin closes.
//!
//! Environment: the agent's captured login environment, then `env` set on top, then `unset`
//! removed. The client sends only what the caller changed relative to its own environment.

use crate::{Bytes, Errno};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SpawnParams {
    /// Program: a path, or a name looked up in the remote login PATH.
    pub file: String,
    /// Arguments after argv[0].
    #[serde(default)]
    pub args: Vec<String>,
    /// argv[0]; default `file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub argv0: Option<String>,
    /// Working directory (absolute, inside the sandbox root).
    pub cwd: String,
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub unset: Vec<String>,
    /// Pipe stdin (else /dev/null).
    #[serde(default)]
    pub stdin: bool,
    /// Whether stdout/stderr are wanted (else /dev/null).
    #[serde(default = "yes")]
    pub stdout: bool,
    #[serde(default = "yes")]
    pub stderr: bool,
}

fn yes() -> bool {
    true
}

/// A `proc.event` notification item, in order: `spawned` (or `error`), output chunks, `exit`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", deny_unknown_fields)]
pub enum ProcEvent {
    /// The process is running; `pid` is its remote pid and process-group id.
    Spawned {
        pid: i32,
    },
    Stdout {
        data: Bytes,
    },
    Stderr {
        data: Bytes,
    },
    /// The process ended; output is complete. Exactly one of code/signal is set.
    Exit {
        code: Option<i32>,
        signal: Option<String>,
    },
    /// The spawn failed (e.g. ENOENT for the program, or the cwd refused); nothing ran.
    Error {
        error: Errno,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct StdinParams {
    pub pid: i32,
    #[serde(default)]
    pub data: Bytes,
    /// Close stdin after writing.
    #[serde(default)]
    pub eof: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct KillParams {
    /// A pid the agent spawned (anything else is refused with ESRCH/EPERM).
    pub pid: i32,
    /// `SIGTERM`, `SIGKILL`, … or a number as a string.
    pub signal: String,
    /// Signal the whole process group.
    #[serde(default)]
    pub group: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunParams {
    pub spawn: SpawnParams,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Bytes>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default = "sigterm")]
    pub kill_signal: String,
    /// Kill the process once stdout or stderr exceeds this many bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_buffer: Option<u64>,
}

fn sigterm() -> String {
    "SIGTERM".into()
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RunResult {
    pub pid: i32,
    pub stdout: Bytes,
    pub stderr: Bytes,
    pub code: Option<i32>,
    pub signal: Option<String>,
    /// The spawn failed (nothing ran), as for [`ProcEvent::Error`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Errno>,
    #[serde(default)]
    pub timed_out: bool,
    #[serde(default)]
    pub max_buffer_exceeded: bool,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roundtrip::{check, rejects_unknown};

    fn spawn() -> SpawnParams {
        SpawnParams {
            file: "/bin/bash".into(),
            args: vec!["-c".into(), "pwd".into()],
            argv0: None,
            cwd: "/p".into(),
            env: BTreeMap::from([("A".into(), "1".into())]),
            unset: vec!["B".into()],
            stdin: false,
            stdout: true,
            stderr: true,
        }
    }

    #[test]
    fn spawn_roundtrip() {
        check(
            spawn(),
            r#"{"file":"/bin/bash","args":["-c","pwd"],"cwd":"/p","env":{"A":"1"},"unset":["B"],"stdin":false,"stdout":true,"stderr":true}"#,
        );
        let minimal: SpawnParams = serde_json::from_str(r#"{"file":"true","cwd":"/p"}"#).unwrap();
        assert!(minimal.stdout && minimal.stderr && !minimal.stdin);
        rejects_unknown::<SpawnParams>(r#"{"file":"true","cwd":"/p","shell":true}"#);
    }

    #[test]
    fn events_roundtrip() {
        check(
            ProcEvent::Spawned { pid: 7 },
            r#"{"type":"spawned","pid":7}"#,
        );
        check(
            ProcEvent::Stdout {
                data: Bytes(b"hi".to_vec()),
            },
            r#"{"type":"stdout","data":"aGk="}"#,
        );
        check(
            ProcEvent::Stderr {
                data: Bytes(vec![0xff]),
            },
            r#"{"type":"stderr","data":"/w=="}"#,
        );
        check(
            ProcEvent::Exit {
                code: None,
                signal: Some("SIGKILL".into()),
            },
            r#"{"type":"exit","code":null,"signal":"SIGKILL"}"#,
        );
        check(
            ProcEvent::Error {
                error: Errno::new("ENOENT", "spawn nope", Some("nope")),
            },
            r#"{"type":"error","error":{"code":"ENOENT","syscall":"spawn nope","path":"nope"}}"#,
        );
    }

    #[test]
    fn control_roundtrip() {
        check(
            StdinParams {
                pid: 7,
                data: Bytes(b"x".to_vec()),
                eof: true,
            },
            r#"{"pid":7,"data":"eA==","eof":true}"#,
        );
        check(
            KillParams {
                pid: 7,
                signal: "SIGKILL".into(),
                group: true,
            },
            r#"{"pid":7,"signal":"SIGKILL","group":true}"#,
        );
        rejects_unknown::<KillParams>(r#"{"pid":7,"signal":"SIGKILL","tree":true}"#);
    }

    #[test]
    fn run_roundtrip() {
        let json = r#"{"spawn":{"file":"/bin/bash","args":["-c","pwd"],"cwd":"/p","env":{"A":"1"},"unset":["B"],"stdin":false,"stdout":true,"stderr":true},"input":"eA==","timeoutMs":100,"killSignal":"SIGTERM","maxBuffer":1024}"#;
        check(
            RunParams {
                spawn: spawn(),
                input: Some(Bytes(b"x".to_vec())),
                timeout_ms: Some(100),
                kill_signal: "SIGTERM".into(),
                max_buffer: Some(1024),
            },
            json,
        );
        check(
            RunResult {
                pid: 7,
                stdout: Bytes(b"/p\n".to_vec()),
                stderr: Bytes::default(),
                code: Some(0),
                signal: None,
                error: None,
                timed_out: false,
                max_buffer_exceeded: false,
            },
            r#"{"pid":7,"stdout":"L3AK","stderr":"","code":0,"signal":null,"timedOut":false,"maxBufferExceeded":false}"#,
        );
    }
}
