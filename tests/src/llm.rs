//! The scripted fake LLM (`fixtures/fake-llm/server.mjs`) as a child process.

use std::fs;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use serde_json::{json, Value};
use tempfile::TempDir;

use crate::paths;

/// A script step: call tool `name` with `arguments`.
pub fn tool(name: &str, arguments: Value) -> Value {
    json!({ "tool": name, "arguments": arguments })
}

/// A script step: answer with the final text `text`.
pub fn text(text: &str) -> Value {
    json!({ "text": text })
}

/// The system prompt of a recorded chat completions request (the first `system` or `developer`
/// message), or `""` if there is none.
pub fn system_prompt(request: &Value) -> String {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|m| m["role"] == "system" || m["role"] == "developer")
        .map(|m| content_text(&m["content"]))
        .unwrap_or_default()
}

/// The text of a message `content` (a string, or an array of `{type:"text", text}` parts).
pub fn content_text(content: &Value) -> String {
    match content {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p["text"].as_str())
            .collect::<Vec<_>>()
            .join(""),
        _ => String::new(),
    }
}

/// The `role: "tool"` messages (tool results) of a recorded request, as text.
pub fn tool_results(request: &Value) -> Vec<String> {
    request["messages"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|m| m["role"] == "tool")
        .map(|m| content_text(&m["content"]))
        .collect()
}

/// A running fake LLM. Dropping it kills the server.
pub struct FakeLlm {
    child: Child,
    port: u16,
    record: PathBuf,
    stderr: PathBuf,
    _dir: TempDir,
}

impl std::fmt::Debug for FakeLlm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FakeLlm").field("port", &self.port).finish()
    }
}

impl FakeLlm {
    /// Starts the server with `script`, a JSON array of steps ([`tool`], [`text`], or raw
    /// `{"tool_calls": […]}` / `"delay_ms"` steps as `server.mjs` documents), and waits until it
    /// listens.
    pub fn start(script: Value) -> FakeLlm {
        FakeLlm::spawn(script, None)
    }

    /// [`FakeLlm::start`], appending `llm request <step>` to `mark` as each request arrives
    /// (`FAKE_LLM_MARK`): given pi-bridge's `PI_BRIDGE_TRACE` file, it splits the round trips
    /// there into pi's start, each step's tool calls and the exit ([`crate::trace`]).
    pub fn start_marking(script: Value, mark: &Path) -> FakeLlm {
        FakeLlm::spawn(script, Some(mark))
    }

    fn spawn(script: Value, mark: Option<&Path>) -> FakeLlm {
        assert!(
            script.is_array(),
            "FakeLlm::start wants a JSON array of steps, got {script}"
        );
        let dir = tempfile::Builder::new()
            .prefix("pi-bridge-fake-llm-")
            .tempdir()
            .expect("tempdir for the fake LLM");
        let script_path = dir.path().join("script.json");
        let record = dir.path().join("requests.jsonl");
        let stderr = dir.path().join("stderr.log");
        fs::write(&script_path, script.to_string()).unwrap();
        fs::write(&record, "").unwrap();
        let server = paths::fake_llm_server();
        let mut cmd = Command::new(paths::node());
        if let Some(mark) = mark {
            cmd.env("FAKE_LLM_MARK", mark);
        }
        let mut child = cmd
            .arg(&server)
            .arg(&script_path)
            .arg(&record)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run `node {}`: {e}", server.display()));
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut line = String::new();
            let _ = BufReader::new(stdout).read_line(&mut line);
            let _ = tx.send(line);
        });
        let line = rx.recv_timeout(Duration::from_secs(20)).unwrap_or_default();
        let port = line
            .strip_prefix("LISTENING ")
            .and_then(|p| p.trim().parse::<u16>().ok());
        let Some(port) = port else {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "fake LLM did not print `LISTENING <port>` (got {line:?}); stderr:\n{}",
                fs::read_to_string(&stderr).unwrap_or_default()
            );
        };
        FakeLlm {
            child,
            port,
            record,
            stderr,
            _dir: dir,
        }
    }

    /// The port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `http://127.0.0.1:<port>/v1`, the OpenAI base URL.
    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}/v1", self.port)
    }

    /// Every request body received so far, in order.
    pub fn requests(&self) -> Vec<Value> {
        fs::read_to_string(&self.record)
            .unwrap_or_default()
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| {
                serde_json::from_str(l)
                    .unwrap_or_else(|e| panic!("fake LLM record line is not JSON ({e}): {l}"))
            })
            .collect()
    }

    /// The server's stderr so far (for diagnostics).
    pub fn stderr(&self) -> String {
        fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for FakeLlm {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
