//! The liveness watchdog of a link: any byte from the agent (or a frame read) is life;
//! `dead_after` of silence declares the link dead. Time in which pii itself could not run is
//! not the agent's silence.

use super::link::LinkEvents;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::{Duration, Instant};

/// Watch link `gen` until it is replaced or dead. `seen` changes when a frame is read, `bytes`
/// when bytes arrive.
pub async fn run<E: LinkEvents>(
    events: Weak<E>,
    seen: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    gen: u64,
) {
    let mut last_bytes = bytes.load(Ordering::Relaxed);
    let mut last_life = Instant::now();
    let mut last_seen = seen.load(Ordering::Relaxed);
    loop {
        let (dead_after, period) = match events.upgrade() {
            Some(e) => {
                if !e.watched(gen) {
                    return;
                }
                let t = e.timing();
                (t.dead_after, t.heartbeat.min(t.dead_after) / 4)
            }
            None => return,
        };
        let period = period.max(Duration::from_millis(10));
        let before = Instant::now();
        tokio::time::sleep(period).await;
        // Time this task could not run (pii itself descheduled or its runtime blocked, e.g. on a
        // loaded machine) is time in which no byte could have been observed either: it is not
        // the agent's silence, so it does not count.
        let stalled = before.elapsed().saturating_sub(period);
        if stalled > period {
            last_life = (last_life + stalled).min(Instant::now());
        }
        let b = bytes.load(Ordering::Relaxed);
        let s = seen.load(Ordering::Relaxed);
        if b != last_bytes || s != last_seen {
            last_bytes = b;
            last_seen = s;
            last_life = Instant::now();
        }
        if last_life.elapsed() > dead_after {
            if let Some(e) = events.upgrade() {
                e.lost(
                    gen,
                    format!(
                        "no data from the agent for {} s (heartbeat lost)",
                        dead_after.as_secs_f32()
                    ),
                );
            }
            return;
        }
    }
}
