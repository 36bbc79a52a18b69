//! Surviving a dropped link: session tickets, resume, the output sequence and its acks, and the
//! clean end of a session.
//!
//! - `hello` answers with a [`SessionTicket`] (a random session id and secret, known only to
//!   `pii` and the agent holding the session). That agent listens on a Unix socket
//!   `~/.cache/pi-bridge/run/<id>.sock` (directory 0700, socket 0600; never a TCP port).
//! - Every notification the agent sends (`proc.event`, `watch.event`) carries a session-wide
//!   sequence number in its params: `{"subscription":…,"result":…,"seq":N}` (N = 1, 2, …). The
//!   agent keeps each one until the client acknowledges it with a [`SessionAck`] notification
//!   (`{"jsonrpc":"2.0","method":"session.ack","params":{"seq":N}}`, meaning "I have everything up
//!   to N"). At most [`REPLAY_BOUND`] bytes stay unacknowledged: past that, the producers wait
//!   (a process blocks on its pipe), so output is paused, never dropped.
//! - If the link drops WITHOUT a [`SessionEnd`], the agent keeps the session (processes, watches,
//!   unacknowledged output) for the grace period ([`Hello::grace_ms`](crate::Hello), default
//!   [`DEFAULT_GRACE_MS`]). A new connection (a new ssh, hence a new agent process) sends `hello`
//!   with [`Resume`]; that agent relays the connection to the one holding the session, which
//!   answers `hello` (`resumed: true`) and then replays every notification after `lastSeq`, in
//!   order. After the grace period the session's process groups are killed and its socket removed.
//! - A resume the agent cannot serve (session gone) is refused with
//!   [`ErrorCode::SessionGone`](crate::ErrorCode); the client then starts a new session.
//! - [`SessionEnd`] before closing the link: the agent kills everything at once when the input
//!   ends (a clean exit), instead of waiting for a resume.

use serde::{Deserialize, Serialize};

/// How long a dropped session waits for a resume, unless `hello` says otherwise.
pub const DEFAULT_GRACE_MS: u64 = 60_000;
/// The longest grace period an agent accepts.
pub const MAX_GRACE_MS: u64 = 24 * 3600 * 1000;
/// Bytes of notifications the agent keeps unacknowledged before its producers wait.
pub const REPLAY_BOUND: usize = 16 << 20;
/// The client acknowledges at least every this many notification bytes (and at each heartbeat).
pub const ACK_EVERY: usize = 1 << 20;

/// `hello`'s `resume`: take over the session the link to which dropped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Resume {
    /// [`SessionTicket::id`]: lowercase hex.
    pub session: String,
    /// [`SessionTicket::secret`].
    pub secret: String,
    /// The highest notification `seq` the client has (0: none); the agent replays what follows.
    pub last_seq: u64,
}

/// In `hello`'s result: what a later `hello` needs to resume this session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionTicket {
    pub id: String,
    pub secret: String,
    /// The grace period this agent applies (ms).
    pub grace_ms: u64,
}

/// `session.ack` params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AckParams {
    pub seq: u64,
}

/// The `seq` of a notification frame (`params.seq`), if it has one.
pub fn seq_of(params: &serde_json::value::RawValue) -> Option<u64> {
    #[derive(Deserialize)]
    struct P {
        #[serde(default)]
        seq: Option<u64>,
    }
    serde_json::from_str::<P>(params.get()).ok()?.seq
}

/// Add `"seq":N` to a notification frame `{"jsonrpc":"2.0","method":…,"params":{…}}` (compact,
/// as serde_json writes it, params last). `None` if the frame does not end in `}}`.
pub fn with_seq(frame: &str, seq: u64) -> Option<String> {
    let body = frame.trim_end().strip_suffix("}}")?;
    Some(format!("{body},\"seq\":{seq}}}}}"))
}

pub use crate::methods::{SessionAck, SessionEnd};

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roundtrip::{check, rejects_unknown};

    #[test]
    fn resume_and_ticket_roundtrip() {
        check(
            Resume {
                session: "ab12".into(),
                secret: "ff".into(),
                last_seq: 7,
            },
            r#"{"session":"ab12","secret":"ff","lastSeq":7}"#,
        );
        rejects_unknown::<Resume>(r#"{"session":"a","secret":"b","lastSeq":0,"x":1}"#);
        check(
            SessionTicket {
                id: "ab".into(),
                secret: "cd".into(),
                grace_ms: 60000,
            },
            r#"{"id":"ab","secret":"cd","graceMs":60000}"#,
        );
        check(AckParams { seq: 9 }, r#"{"seq":9}"#);
        rejects_unknown::<AckParams>(r#"{"seq":9,"all":true}"#);
    }

    #[test]
    fn seq_is_spliced_into_notifications() {
        let n = r#"{"jsonrpc":"2.0","method":"proc.event","params":{"subscription":"s1","result":{"type":"stdout","data":"aGk="}}}"#;
        let f = with_seq(n, 42).unwrap();
        let v: serde_json::Value = serde_json::from_str(&f).unwrap();
        assert_eq!(v["params"]["seq"], 42);
        assert_eq!(v["params"]["subscription"], "s1");
        assert_eq!(v["params"]["result"]["data"], "aGk=");
        let raw = serde_json::value::to_raw_value(&v["params"]).unwrap();
        assert_eq!(seq_of(&raw), Some(42));
        assert_eq!(with_seq("[1]", 1), None);
        let no = serde_json::value::RawValue::from_string("{\"subscription\":1}".into()).unwrap();
        assert_eq!(seq_of(&no), None);
    }
}
