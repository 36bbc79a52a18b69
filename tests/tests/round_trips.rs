//! Round trips per tool call of a scripted pi session through `pii --ssh` (the real pi, the fake
//! LLM, a real sshd): read, bash, edit, write, each counted from `PI_BRIDGE_TRACE` between the
//! fake LLM's requests (`pi_bridge_tests::trace`). Counts, not times: they are the same on a busy
//! machine, and at a real link's latency each is a round trip the user waits for.
//!
//! A session starts with nothing learned (a fresh pii cache dir, no prefetch), so every count is
//! the same on every run. A tool call must not take a round trip more than the list below: the
//! test fails naming the calls of that tool call (from the trace) against the expected ones.
//! When a change saves a round trip, lower the list.
//!
//! Not counted: `session.info` (pii answers it itself, from `hello`) and `bg` round trips, which
//! nobody waits for when they are sent (a read-only descriptor's close, the main connection's
//! feed subscription): where their answers land is a race, and they cost no waiting.

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::trace::{phases, session_phase_name, session_script, Phase, RoundTrip};
use pi_bridge_tests::{paths, pi_env, FakeLlm, Sshd, PI_ARGS};

/// The remote calls each tool call may make (in any order), with nothing learned. Beyond what
/// its work needs (a read: 1, a bash: 1 + its output, an edit: its read and its write, a write:
/// its mkdir and its write), what is left and why:
/// - read: pi 1.x checks F_OK, then R_OK, then reads: a cold path's access answers carry no
///   stat, so the second check is a round trip too (warm, with the stat cached, both are none).
/// - bash: `proc.run which` is pi's own shell lookup (`/bin/bash` is outside the project, so the
///   boundary answers it EACCES and pi asks `which bash`); the `fs.access` (pi 0.73: `fs.stat`)
///   of the project is the spawn's cwd check, cold only.
/// - edit: `realpath` (cold only) and `access R_OK|W_OK` (never cached: a read-only mount or an
///   immutable file is not in a stat).
/// - write: `realpath` of the new file (cold only).
fn expected(major: u64) -> Vec<(&'static str, Vec<&'static str>)> {
    // pi 0.73 checks the spawn's cwd with a stat where 1.x uses access; the rest is the same.
    let cwd_check = if major == 0 { "fs.stat" } else { "fs.access" };
    vec![
        ("read", vec!["fs.access", "fs.access", "fs.open"]),
        ("bash", vec!["proc.run", cwd_check, "proc.spawn"]),
        (
            "edit",
            vec!["fs.realpath", "fs.access", "fs.read", "fs.write"],
        ),
        ("write", vec!["fs.realpath", "fs.mkdir", "fs.write"]),
    ]
}

/// Whether a round trip counts (see the header): one the remote answered and someone waited for.
fn counted(r: &RoundTrip) -> bool {
    r.method != "session.info" && r.kind != "bg"
}

/// The counted calls' methods, sorted.
fn methods(rts: &[RoundTrip]) -> Vec<String> {
    let mut m: Vec<String> = rts
        .iter()
        .filter(|r| counted(r))
        .map(|r| r.method.clone())
        .collect();
    m.sort();
    m
}

#[test]
fn each_tool_call_takes_only_the_round_trips_its_work_needs() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pii.log");
    let trace = dir.path().join("trace.txt");
    let llm = FakeLlm::start_marking(session_script(), &trace);
    let (_agent_dir, env) = pi_env(&llm);
    let mut args = vec!["-p", "do the scripted steps"];
    args.extend(PI_ARGS);
    let mut cmd = pii_ssh(&sshd, &log, &paths::pi_cli(), &[], &args);
    cmd.envs(env).env("PI_BRIDGE_TRACE", &trace);
    let out = cmd.output().expect("run pii");
    assert_success("pii running the scripted session", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("BENCH-DONE"),
        "the script did not finish: {stdout}"
    );
    // What the tools did is on the remote.
    assert_eq!(sshd.read_remote("created/bench.txt"), b"benchmark\n");
    assert!(String::from_utf8_lossy(&sshd.read_remote("notes.md")).contains("status: edited"));

    let text = std::fs::read_to_string(&trace).unwrap();
    let got: Vec<(Phase, Vec<RoundTrip>)> = phases(&text);
    let listing: String = got
        .iter()
        .flat_map(|(p, rts)| {
            rts.iter()
                .map(move |r| format!("  {}: {r}\n", session_phase_name(*p)))
        })
        .collect();
    eprintln!("round trips by phase:\n{listing}");
    let names: Vec<String> = got.iter().map(|(p, _)| session_phase_name(*p)).collect();
    assert_eq!(
        names,
        ["start", "read", "bash", "edit", "write", "exit"],
        "the trace's phases (one per model request): {text}"
    );
    let mut failures = vec![];
    for (tool, want) in expected(paths::pi().major()) {
        let rts = &got
            .iter()
            .find(|(p, _)| session_phase_name(*p) == tool)
            .unwrap()
            .1;
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        let have = methods(rts);
        if have.len() > want.len() {
            let calls: Vec<String> = rts.iter().map(|r| r.to_string()).collect();
            failures.push(format!(
                "{tool}: {} round trips, expected at most {} ({}); its calls (bg and session.info not counted):\n    {}",
                have.len(),
                want.len(),
                want.join(", "),
                calls.join("\n    ")
            ));
        } else if have != want {
            failures.push(format!(
                "{tool}: calls {have:?}, expected {want:?} (fewer is progress: lower the list in this test)"
            ));
        }
    }
    let exit = methods(&got.last().unwrap().1);
    if !exit.is_empty() {
        failures.push(format!(
            "exit: round trips after the last answer, expected none: {exit:?}"
        ));
    }
    assert!(
        failures.is_empty(),
        "round trips per tool call:\n{}\nall of them:\n{listing}",
        failures.join("\n")
    );
}
