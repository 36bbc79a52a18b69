//! `PI_BRIDGE_TRACE` files split into a pi session's phases.
//!
//! The preload writes one line per round trip to the remote (`<ms> <sync|async> <method> <what>
//! <ms taken>`, `preload/trace.cjs`); a [`crate::FakeLlm::start_marking`] server appends
//! `llm request <step>` to the same file as each model request arrives. pi waits for the model's
//! answer before it runs the answer's tool calls and sends the next request once they are done,
//! so the round trips between `llm request N` and `llm request N+1` are step N's tool calls (and
//! whatever pi does around them); those before the first request are pi's start, those after the
//! last its exit. A round trip is in the phase in which its answer arrived.

/// One round trip of the trace.
///
/// `bg` ones (a read-only descriptor's close, the main connection's feed subscription) may
/// answer in the phase after the one that sent them: nobody waits, so where they land is a race.
#[derive(Clone, Debug, PartialEq)]
pub struct RoundTrip {
    /// When it was sent, ms since the preload started.
    pub at: f64,
    /// How long its answer took, ms.
    pub took: f64,
    /// `sync`, `async`, or `bg` (sent without anyone waiting for it: not on a critical path).
    pub kind: String,
    /// The protocol method, e.g. `fs.stat`.
    pub method: String,
    /// The path or program (may be empty).
    pub what: String,
}

impl std::fmt::Display for RoundTrip {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {} {} (at {:.1} ms, {:.2} ms)",
            self.kind, self.method, self.what, self.at, self.took
        )
    }
}

/// Where in the session a round trip happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Phase {
    /// Before the first model request.
    Start,
    /// Between model request N and N+1: the tool calls of script step N.
    Step(usize),
    /// After the last model request.
    Exit,
}

impl std::fmt::Display for Phase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Phase::Start => write!(f, "start"),
            Phase::Step(n) => write!(f, "step {n}"),
            Phase::Exit => write!(f, "exit"),
        }
    }
}

/// The round trips of a marked trace, by phase, in order. Panics on a line that is neither.
pub fn phases(text: &str) -> Vec<(Phase, Vec<RoundTrip>)> {
    let mut out: Vec<(Phase, Vec<RoundTrip>)> = vec![(Phase::Start, vec![])];
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        if let Some(step) = line.strip_prefix("llm request ") {
            let n: usize = step
                .trim()
                .parse()
                .unwrap_or_else(|_| panic!("trace: bad mark {line:?}"));
            // A retried request of the same step keeps its phase going.
            if out.last().map(|(p, _)| *p) != Some(Phase::Step(n)) {
                out.push((Phase::Step(n), vec![]));
            }
            continue;
        }
        let f: Vec<&str> = line.split_whitespace().collect();
        assert!(
            f.len() >= 4 && ["sync", "async", "bg"].contains(&f[1]),
            "trace: not a round trip line: {line:?}"
        );
        let what = if f.len() >= 5 {
            f[3..f.len() - 1].join(" ")
        } else {
            String::new()
        };
        let ms = |s: &str| {
            s.parse::<f64>()
                .unwrap_or_else(|_| panic!("trace: not a time {s:?} in {line:?}"))
        };
        out.last_mut().unwrap().1.push(RoundTrip {
            at: ms(f[0]),
            took: ms(f[f.len() - 1]),
            kind: f[1].to_string(),
            method: f[2].to_string(),
            what,
        });
    }
    // The phase after the last request is the exit (pi answered with text there).
    if let Some(last) = out.last_mut().filter(|(p, _)| matches!(p, Phase::Step(_))) {
        last.0 = Phase::Exit;
    }
    out
}

/// The tools of [`session_script`]'s steps, in order.
pub const SESSION_TOOLS: [&str; 4] = ["read", "bash", "edit", "write"];

/// The scripted pi session of the benchmark (`pi-bridge-bench --only pi`) and of
/// `tests/tests/round_trips.rs`, on `fixtures/project`: read, bash, edit, write, then the text
/// `BENCH-DONE`. The remote is put back with `rm -rf created && git checkout -q notes.md`.
pub fn session_script() -> serde_json::Value {
    use crate::llm::{text, tool};
    use serde_json::json;
    json!([
        tool("read", json!({"path": "src/hello.txt"})),
        tool(
            "bash",
            json!({"command": "ls; git status --short | head -5"})
        ),
        tool(
            "edit",
            json!({"path": "notes.md", "edits": [{"oldText": "status: draft", "newText": "status: edited"}]})
        ),
        tool(
            "write",
            json!({"path": "created/bench.txt", "content": "benchmark\n"})
        ),
        text("BENCH-DONE"),
    ])
}

/// A phase of [`session_script`] by name: `start`, the tool of a step, `exit`.
pub fn session_phase_name(phase: Phase) -> String {
    match phase {
        Phase::Step(n) => SESSION_TOOLS
            .get(n)
            .map_or_else(|| phase.to_string(), |t| t.to_string()),
        other => other.to_string(),
    }
}
