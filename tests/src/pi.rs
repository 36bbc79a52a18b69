//! Running the pinned pi against the fake LLM.

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::llm::FakeLlm;
use crate::paths;

/// The pi arguments that select the fake model and keep sessions off disk.
pub const PI_ARGS: [&str; 5] = [
    "--provider",
    "fake",
    "--model",
    "fake-model",
    "--no-session",
];

/// How pi's system prompt names its working directory `cwd`: `Current working directory: <cwd>`
/// (0.x) or a `<cwd>` block (1.x).
pub fn prompt_cwd(cwd: &str) -> String {
    if paths::pi().major() == 0 {
        format!("Current working directory: {cwd}")
    } else {
        format!("<cwd>\n{cwd}\n</cwd>")
    }
}

/// `models.json` declaring provider `fake` / model `fake-model` at the fake LLM.
pub fn models_json(llm: &FakeLlm) -> Value {
    json!({
        "providers": {
            "fake": {
                "baseUrl": llm.base_url(),
                "api": "openai-completions",
                "apiKey": "FAKE_LLM_KEY",
                "compat": { "supportsDeveloperRole": false, "supportsReasoningEffort": false },
                "models": [{
                    "id": "fake-model",
                    "reasoning": false,
                    "input": ["text"],
                    "contextWindow": 128000,
                    "maxTokens": 4096
                }]
            }
        }
    })
}

/// A temporary `PI_CODING_AGENT_DIR` holding `models.json` for `llm`, and the environment pi needs:
/// `PI_CODING_AGENT_DIR`, `PI_OFFLINE=1`, `NO_PROXY=127.0.0.1,localhost`, `FAKE_LLM_KEY=x`.
/// Keep the `TempDir` alive while pi runs. Pass [`PI_ARGS`] to pi.
pub fn pi_env(llm: &FakeLlm) -> (TempDir, Vec<(String, String)>) {
    let dir = tempfile::Builder::new()
        .prefix("pi-bridge-pi-agent-")
        .tempdir()
        .expect("tempdir for PI_CODING_AGENT_DIR");
    fs::write(
        dir.path().join("models.json"),
        serde_json::to_string_pretty(&models_json(llm)).unwrap(),
    )
    .unwrap();
    let env = vec![
        (
            "PI_CODING_AGENT_DIR".to_string(),
            dir.path().to_string_lossy().into_owned(),
        ),
        ("PI_OFFLINE".to_string(), "1".to_string()),
        ("NO_PROXY".to_string(), "127.0.0.1,localhost".to_string()),
        ("no_proxy".to_string(), "127.0.0.1,localhost".to_string()),
        ("FAKE_LLM_KEY".to_string(), "x".to_string()),
    ];
    (dir, env)
}

/// Plain local pi, no bridge: `node cli.js -p <prompt> PI_ARGS…` in `cwd`, stdin from /dev/null,
/// stdout and stderr piped. The baseline the bridged runs are compared against.
pub fn local_pi(llm: &FakeLlm, cwd: &Path, prompt: &str) -> (TempDir, Command) {
    let (dir, env) = pi_env(llm);
    let mut cmd = Command::new(paths::node());
    cmd.arg(paths::pi_cli())
        .arg("-p")
        .arg(prompt)
        .args(PI_ARGS)
        .current_dir(cwd)
        .envs(env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    (dir, cmd)
}
