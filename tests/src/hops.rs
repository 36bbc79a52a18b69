//! `PI_BRIDGE_HOPS` files (`protocol::hops`) joined per blocking call.
//!
//! The preload's main thread and helper, pii and the agent each append `<id> <hop> <ns>` lines
//! (CLOCK_MONOTONIC ns). The main thread's call ids are the helper's and the ids pii's endpoint
//! sees; pii renumbers toward the agent and says so with a `<agent id> client <client id>` line.
//! Endpoint ids are per connection (the main thread's own async connection numbers its calls
//! too), so an endpoint or agent stamp belongs to a call only between its `m_post` and the next
//! call's (the blocking calls of one thread follow each other).

use std::collections::HashMap;

/// The hops of one blocking call, in the order it passes them: (stamp, who stamps it).
pub const HOPS: [(&str, &str); 14] = [
    ("m_post", "preload main: request posted to the helper"),
    ("h_recv", "helper: request received"),
    (
        "h_write",
        "helper: request encoded, written to pii's socket",
    ),
    ("ep_read", "pii endpoint: frame read"),
    ("mux_send", "pii mux: handed to the link writer"),
    ("link_write", "pii link writer: writing to ssh"),
    ("ag_read", "agent: frame read"),
    ("ag_done", "agent: handler done"),
    ("ag_write", "agent: answer being written to ssh"),
    (
        "link_read",
        "pii link reader: answer read, put in the client's queue",
    ),
    ("ep_write", "pii endpoint: answer being written"),
    ("h_data", "helper: answer bytes arrived"),
    ("h_post", "helper: answer parsed, posting, waking main"),
    ("m_got", "preload main: answer taken"),
];

/// The last stamp: the call returns.
pub const RETURN: &str = "m_ret";

/// One call: each hop's time in ns (`HOPS` order, then [`RETURN`]).
#[derive(Debug, Clone, PartialEq)]
pub struct Call {
    pub id: u64,
    pub at: Vec<u64>,
}

impl Call {
    /// The segments between consecutive stamps, in µs: `(from, to, µs)`.
    pub fn segments(&self) -> Vec<(&'static str, &'static str, f64)> {
        let names: Vec<&'static str> = HOPS.iter().map(|h| h.0).chain([RETURN]).collect();
        names
            .windows(2)
            .zip(self.at.windows(2))
            .map(|(n, t)| (n[0], n[1], (t[1] as f64 - t[0] as f64) / 1000.0))
            .collect()
    }

    /// From the request posted to the call's return, µs.
    pub fn total_us(&self) -> f64 {
        (self.at[self.at.len() - 1] - self.at[0]) as f64 / 1000.0
    }
}

/// Parse a hops file: `(id, hop, ns)` per line. Posts nobody waits for (`sync.cjs` `post`,
/// negative ids) are left out. Panics on a line of another shape.
pub fn parse(text: &str) -> Vec<(u64, String, u64)> {
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('-'))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            assert!(f.len() == 3, "hops: not `<id> <hop> <ns>`: {l:?}");
            let n = |s: &str| {
                s.parse::<u64>()
                    .unwrap_or_else(|_| panic!("hops: not a number {s:?} in {l:?}"))
            };
            (n(f[0]), f[1].to_string(), n(f[2]))
        })
        .collect()
}

/// The blocking calls whose every hop was stamped, in order; and how many calls (`m_post`)
/// missed one or more (with the first hop missing of one of them).
pub fn calls(text: &str) -> (Vec<Call>, usize, Option<String>) {
    let stamps = parse(text);
    // (hop, id) → every ns stamped (endpoint ids repeat across connections).
    let mut by: HashMap<(&str, u64), Vec<u64>> = HashMap::new();
    // client id → agent ids (with their mux_send time, found below).
    let mut agent_ids: HashMap<u64, Vec<u64>> = HashMap::new();
    for (id, hop, ns) in &stamps {
        if hop == "client" {
            agent_ids.entry(*ns).or_default().push(*id);
        } else {
            by.entry((hop.as_str(), *id)).or_default().push(*ns);
        }
    }
    let one_in = |hop: &str, id: u64, from: u64, to: u64| -> Option<u64> {
        by.get(&(hop, id))?
            .iter()
            .copied()
            .find(|t| (from..=to).contains(t))
    };
    let mut posted: Vec<(u64, u64)> = stamps
        .iter()
        .filter(|s| s.1 == "m_post")
        .map(|s| (s.0, s.2))
        .collect();
    posted.sort_by_key(|p| p.1);
    let mut out = vec![];
    let mut missing = 0;
    let mut first_missing = None;
    for (k, &(id, post)) in posted.iter().enumerate() {
        let until = posted.get(k + 1).map_or(u64::MAX, |p| p.1);
        let Some(ret) = one_in(RETURN, id, post, until) else {
            missing += 1;
            first_missing.get_or_insert_with(|| RETURN.to_string());
            continue;
        };
        let aid = agent_ids.get(&id).and_then(|ids| {
            ids.iter()
                .copied()
                .find(|a| one_in("mux_send", *a, post, until).is_some())
        });
        let mut at = vec![];
        for (hop, _) in HOPS {
            let key = match hop {
                "mux_send" | "link_write" | "ag_read" | "ag_done" | "ag_write" | "link_read" => aid,
                _ => Some(id),
            };
            match key.and_then(|k| one_in(hop, k, post, until)) {
                Some(t) => at.push(t),
                None => {
                    first_missing.get_or_insert_with(|| hop.to_string());
                    break;
                }
            }
        }
        if at.len() < HOPS.len() {
            missing += 1;
            continue;
        }
        at.push(ret);
        out.push(Call { id, at });
    }
    (out, missing, first_missing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn joins_the_three_processes_by_id_and_time() {
        // Call 1 (agent id 7); the async connection's own id 1 (agent id 8) at another time.
        let mut text = String::new();
        let mut t = 1000;
        for (hop, _) in HOPS {
            let id = if [
                "mux_send",
                "link_write",
                "ag_read",
                "ag_done",
                "ag_write",
                "link_read",
            ]
            .contains(&hop)
            {
                7
            } else {
                1
            };
            text.push_str(&format!("{id} {hop} {t}\n"));
            t += 1000;
        }
        text.push_str(&format!(
            "1 m_ret {t}\n7 client 1\n8 client 1\n8 mux_send 99999999\n"
        ));
        text.push_str("1 ep_read 99999998\n");
        let (calls, missing, _) = calls(&text);
        assert_eq!(missing, 0);
        assert_eq!(calls.len(), 1);
        assert_eq!(calls[0].at.len(), HOPS.len() + 1);
        assert!(calls[0].segments().iter().all(|s| s.2 == 1.0));
        assert_eq!(calls[0].total_us(), HOPS.len() as f64);
        // Without the agent's stamps the call is incomplete, and says which hop is missing.
        let partial: String = text
            .lines()
            .filter(|l| !l.contains(" ag_"))
            .map(|l| format!("{l}\n"))
            .collect();
        let (calls, missing, first) = super::calls(&partial);
        assert!(calls.is_empty());
        assert_eq!(missing, 1);
        assert_eq!(first.as_deref(), Some("ag_read"));
    }
}
