//! Per-hop timestamps of calls (`PI_BRIDGE_HOPS`): where the time of one round trip goes.
//!
//! Off by default; when off a stamp costs one relaxed atomic load. pii turns its own recording
//! on when `PI_BRIDGE_HOPS` names a file, and the agent's with [`SessionHops`]
//! (`session.hops {on: true}`, a call only pii makes); `session.hops {on: false}` stops the
//! agent's and answers with what it recorded. Every stamp is CLOCK_MONOTONIC in nanoseconds,
//! the clock Node's `process.hrtime.bigint()` reads too, so on one host (the benchmark's loopback
//! sshd) the stamps of the preload, pii and the agent line up. `pi-bridge-bench --only hops`
//! joins them per call.
//!
//! [`SessionHops`]: crate::methods::SessionHops

use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

/// `session.hops` params.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HopsParams {
    /// Record from now on (true) or stop (false).
    pub on: bool,
}

/// One stamp: call `id` passed `hop` at `ns` (CLOCK_MONOTONIC).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Stamp {
    pub id: u64,
    pub hop: String,
    pub ns: u64,
}

/// The most stamps a process keeps, 8 MiB (then it stops recording: a forgotten switch cannot
/// grow memory without bound). About 40 000 calls' worth.
pub const MAX_STAMPS: usize = 1 << 18;

/// A process's stamps. One per process: [`STAMPS`].
pub struct Recorder {
    on: AtomicBool,
    stamps: Mutex<Vec<(u64, &'static str, u64)>>,
}

/// This process's recorder.
pub static STAMPS: Recorder = Recorder {
    on: AtomicBool::new(false),
    stamps: Mutex::new(Vec::new()),
};

impl Recorder {
    /// Whether stamps are recorded.
    #[inline]
    pub fn on(&self) -> bool {
        self.on.load(Ordering::Relaxed)
    }

    pub fn set(&self, on: bool) {
        self.on.store(on, Ordering::Relaxed);
    }

    /// Call `id` passed `hop` now.
    #[inline]
    pub fn stamp(&self, id: u64, hop: &'static str) {
        if self.on() {
            self.stamp_at(id, hop, now_ns());
        }
    }

    /// Call `id` passed `hop` at `ns` (or a pair: `ns` is then another id).
    pub fn stamp_at(&self, id: u64, hop: &'static str, ns: u64) {
        if !self.on() {
            return;
        }
        let mut v = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        if v.len() < MAX_STAMPS {
            v.push((id, hop, ns));
        }
    }

    /// `hop` now for the id of each frame in `bytes` (frames written together).
    pub fn stamp_frames(&self, bytes: &[u8], hop: &'static str) {
        if !self.on() {
            return;
        }
        let now = now_ns();
        for line in bytes.split(|b| *b == b'\n') {
            if let Some(id) = frame_id(line) {
                self.stamp_at(id, hop, now);
            }
        }
    }

    /// The stamps so far, forgotten here.
    pub fn take(&self) -> Vec<Stamp> {
        let mut v = self.stamps.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::take(&mut *v)
            .into_iter()
            .map(|(id, hop, ns)| Stamp {
                id,
                hop: hop.to_string(),
                ns,
            })
            .collect()
    }
}

/// CLOCK_MONOTONIC in nanoseconds.
pub fn now_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; CLOCK_MONOTONIC always exists.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// The numeric top-level `id` of a JSON-RPC frame as this crate writes it (`{"jsonrpc":"2.0",
/// "id":N,…`); `None` for anything else. Only for stamps: it reads no further than the id.
pub fn frame_id(frame: &[u8]) -> Option<u64> {
    let rest = frame.strip_prefix(b"{\"jsonrpc\":\"2.0\",\"id\":")?;
    let digits = rest.iter().take_while(|b| b.is_ascii_digit()).count();
    if digits == 0 || digits > 19 {
        return None;
    }
    std::str::from_utf8(&rest[..digits]).ok()?.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_ids() {
        assert_eq!(
            frame_id(br#"{"jsonrpc":"2.0","id":42,"result":{}}"#),
            Some(42)
        );
        assert_eq!(
            frame_id(br#"{"jsonrpc":"2.0","id":"h1","result":{}}"#),
            None
        );
        assert_eq!(frame_id(br#"{"jsonrpc":"2.0","method":"x"}"#), None);
        assert_eq!(frame_id(b""), None);
    }

    #[test]
    fn off_records_nothing_on_records_every_stamp() {
        let r = Recorder {
            on: AtomicBool::new(false),
            stamps: Mutex::new(Vec::new()),
        };
        r.stamp(1, "a");
        r.stamp_frames(b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":1}\n", "w");
        assert!(r.take().is_empty());
        r.set(true);
        r.stamp(1, "a");
        r.stamp_frames(
            b"{\"jsonrpc\":\"2.0\",\"id\":2,\"result\":1}\n{\"jsonrpc\":\"2.0\",\"id\":3,\"result\":1}\n\n",
            "w",
        );
        let got: Vec<(u64, String)> = r.take().into_iter().map(|s| (s.id, s.hop)).collect();
        assert_eq!(got, [(1, "a".into()), (2, "w".into()), (3, "w".into())]);
        assert!(r.take().is_empty());
    }

    #[test]
    fn clock_is_monotonic_ns() {
        let a = now_ns();
        std::thread::sleep(std::time::Duration::from_millis(2));
        let b = now_ns();
        assert!(b - a >= 2_000_000, "{a} {b}");
    }
}
