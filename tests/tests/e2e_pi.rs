//! The real pi 0.73.1, through `pii --ssh`, over a real sshd whose project the test process
//! cannot see, driven by the scripted fake LLM: read, bash, write, edit, final answer.

use std::path::Path;
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, local_processes_matching, pii_ssh};
use pi_bridge_tests::{
    llm, paths, pi_env, prompt_cwd, FakeLlm, Sshd, PI_ARGS, PROJECT_AGENTS_SENTENCE, PROJECT_HELLO,
};
use serde_json::json;

const BRANCH: &str = "remote-only-branch";
const NEW_FILE: &str = "created/by-pi.txt";
const NEW_CONTENT: &str = "written through the bridge\nsecond line ✓\n";

fn script() -> serde_json::Value {
    json!([
        llm::tool("read", json!({"path": "src/hello.txt"})),
        llm::tool(
            "bash",
            json!({"command": "pwd; git rev-parse --abbrev-ref HEAD; hostname; echo uid=$(id -un)"})
        ),
        llm::tool("write", json!({"path": NEW_FILE, "content": NEW_CONTENT})),
        llm::tool(
            "edit",
            json!({"path": "notes.md", "edits": [{"oldText": "status: draft", "newText": "status: edited remotely"}]})
        ),
        llm::text("All done: FINAL-E2E-ANSWER"),
    ])
}

/// The cached agent binaries on the remote: (path, inode, mtime) of each.
fn cached_agents(sshd: &Sshd) -> Vec<String> {
    let out = sshd.run_remote(
        "for f in \"$HOME\"/.cache/pi-bridge/agent/*/pi-bridge-agent; do [ -e \"$f\" ] && stat -c '%n %i %Y' \"$f\"; done; true",
    );
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(str::to_string)
        .collect()
}

fn wait_until_no_remote_processes(sshd: &Sshd) -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let left: Vec<String> = sshd
            .remote_processes()
            .into_iter()
            .filter(|p| !p.contains("sshd:"))
            .collect();
        if left.is_empty() || Instant::now() > deadline {
            return left;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn real_pi_reads_runs_writes_and_edits_on_the_remote() {
    let sshd = Sshd::builder().branch(BRANCH).start();
    let project = sshd.project().to_string();
    assert!(
        !Path::new(&project).join("src/hello.txt").exists(),
        "the remote project must be invisible locally for this test to prove anything"
    );
    assert!(
        cached_agents(&sshd).is_empty(),
        "fresh remote home has no agent"
    );

    let mut runs = vec![];
    for run in 0..2 {
        if run == 1 {
            // Undo the first run's changes so the second run repeats the same script.
            sshd.run_remote_ok("rm -r created && git checkout -q notes.md");
        }
        let llm = FakeLlm::start(script());
        let (_agent_dir, env) = pi_env(&llm);
        let logdir = tempfile::tempdir().unwrap();
        let log = logdir.path().join("pii.log");
        let mut args = vec!["-p", "do the scripted steps"];
        args.extend(PI_ARGS);
        let mut cmd = pii_ssh(&sshd, &log, &paths::pi_cli(), &["--verbose"], &args);
        cmd.envs(env);
        let out = cmd.output().expect("run pii");
        assert_success("pii running pi", &out, &log);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(
            stdout.contains("FINAL-E2E-ANSWER"),
            "pi's final answer missing: {stdout}\n{stderr}"
        );
        runs.push((stderr, llm.requests(), cached_agents(&sshd)));

        // Nothing of the session keeps running: not on the remote, not locally.
        let left = wait_until_no_remote_processes(&sshd);
        assert!(
            left.is_empty(),
            "remote processes left after pii exited: {left:?}"
        );
        let local = local_processes_matching(sshd.alias());
        assert!(local.is_empty(), "local ssh processes left: {local:?}");
    }

    // The agent was uploaded on the first run and reused on the second.
    let (first_stderr, requests, agents_after_first) = &runs[0];
    let (second_stderr, _, agents_after_second) = &runs[1];
    assert!(
        first_stderr.contains("installing"),
        "first run did not install: {first_stderr}"
    );
    assert!(
        !second_stderr.contains("installing"),
        "second run reinstalled: {second_stderr}"
    );
    assert_eq!(agents_after_first.len(), 1, "{agents_after_first:?}");
    assert_eq!(
        agents_after_first, agents_after_second,
        "agent binary replaced on the second run"
    );

    // What reached the model: the remote AGENTS.md and the remote cwd.
    assert_eq!(
        requests.len(),
        5,
        "one request per script step: {requests:#?}"
    );
    let system = llm::system_prompt(&requests[0]);
    assert!(
        system.contains(PROJECT_AGENTS_SENTENCE),
        "remote AGENTS.md not in the prompt: {system}"
    );
    assert!(
        system.contains(&prompt_cwd(&project)),
        "cwd is not the remote project: {system}"
    );

    // Each tool result holds remote content.
    let results = llm::tool_results(&requests[4]);
    assert_eq!(results.len(), 4, "{results:#?}");
    assert!(
        results[0].contains(PROJECT_HELLO.trim()),
        "read: {}",
        results[0]
    );
    let bash = &results[1];
    assert!(
        bash.contains(&project),
        "bash pwd is not the remote project: {bash}"
    );
    assert!(
        bash.contains(BRANCH),
        "bash git branch is not the remote one: {bash}"
    );
    assert!(
        bash.contains("uid=pibridge"),
        "bash did not run as the remote user: {bash}"
    );
    assert!(
        results[2].to_lowercase().contains("wrote") || results[2].contains("Successfully"),
        "write: {}",
        results[2]
    );
    assert!(
        results[3].to_lowercase().contains("edit") || results[3].contains("Successfully"),
        "edit: {}",
        results[3]
    );

    // The files exist with exact bytes on the remote, and not on the local side.
    assert_eq!(sshd.read_remote(NEW_FILE), NEW_CONTENT.as_bytes());
    assert_eq!(
        String::from_utf8(sshd.read_remote("notes.md")).unwrap(),
        "# Notes\n\nstatus: edited remotely\n"
    );
    assert!(
        !Path::new(&project).join(NEW_FILE).exists(),
        "new file leaked to the local side"
    );
    assert!(
        !Path::new(&project).join("notes.md").exists(),
        "notes.md exists locally"
    );
}
