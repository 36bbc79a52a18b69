//! pi's interactive TUI through `pii --ssh`, driven under tmux (send-keys / capture-pane): the
//! footer shows the remote branch and follows a branch switch made on the remote, `!git status`
//! runs remotely, a prompt edits a remote file, Escape aborts a long remote command (and the
//! remote process is gone), and `/quit` gives the shell back with pi's exit code 0. pi 1.x is
//! driven in its default fullscreen mode and again with `--tui-mode regular` (inline, as 0.x).
//!
//! No timing is asserted: every wait polls the screen (or the remote) against a generous deadline.

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::json;

const DEADLINE: Duration = Duration::from_secs(60);

/// A private tmux server (its own socket), killed on drop.
struct Tmux {
    socket: String,
}

impl Tmux {
    fn start(script: &Path) -> Tmux {
        let t = Tmux {
            socket: format!("pi-bridge-test-{}", std::process::id()),
        };
        let out = t
            .cmd(&["new-session", "-d", "-s", "pii", "-x", "150", "-y", "45"])
            .arg(format!("sh {}", script.display()))
            .output()
            .expect("run tmux (apt install tmux; scripts/test.sh does)");
        assert!(out.status.success(), "tmux new-session: {}", text(&out));
        t
    }

    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new("tmux");
        c.arg("-L").arg(&self.socket).args(args);
        c
    }

    fn screen(&self) -> String {
        text(
            &self
                .cmd(&["capture-pane", "-p", "-t", "pii"])
                .output()
                .unwrap(),
        )
    }

    /// Type text literally, then press Enter.
    fn line(&self, s: &str) {
        assert!(self
            .cmd(&["send-keys", "-t", "pii", "-l", s])
            .status()
            .unwrap()
            .success());
        // A separate key event, so the editor does not take it as part of a paste.
        std::thread::sleep(Duration::from_millis(150));
        self.key("Enter");
    }

    fn key(&self, k: &str) {
        assert!(self
            .cmd(&["send-keys", "-t", "pii", k])
            .status()
            .unwrap()
            .success());
    }

    fn wait_for(&self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let s = self.screen();
            if pred(&s) {
                return s;
            }
            if Instant::now() > deadline {
                panic!("timed out waiting for {what}; screen:\n{s}");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    fn wait_text(&self, needle: &str) -> String {
        self.wait_for(needle, |s| s.contains(needle))
    }
}

impl Drop for Tmux {
    fn drop(&mut self) {
        let _ = self.cmd(&["kill-server"]).output();
    }
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

fn remote_sleepers(sshd: &Sshd) -> Vec<String> {
    sshd.remote_processes()
        .into_iter()
        .filter(|p| p.contains("sleep 300"))
        .collect()
}

fn wait_remote(what: &str, pred: impl Fn() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !pred() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether the pane shows the terminal's alternate screen (pi 1.x's fullscreen TUI).
fn alternate_screen(tmux: &Tmux) -> bool {
    let out = tmux
        .cmd(&["display-message", "-p", "-t", "pii", "#{alternate_on}"])
        .output()
        .unwrap();
    text(&out).trim() == "1"
}

/// pi 0.x draws inline; pi 1.x is fullscreen (the alternate screen) by default and inline with
/// `--tui-mode regular`: every mode a user gets by default or by flag is driven the same way.
#[test]
fn pi_tui_over_ssh_under_tmux() {
    if paths::pi().major() == 0 {
        tui_session(&[], false);
    } else {
        tui_session(&[], true);
        tui_session(&["--tui-mode", "regular"], false);
    }
}

fn tui_session(tui_args: &[&str], fullscreen: bool) {
    let sshd = Sshd::builder().branch("tui-branch").start();
    let project = sshd.project().to_string();
    sshd.write_remote("remote-only-untracked.txt", b"only on the remote\n");
    let llm = FakeLlm::start(json!([
        llm::tool(
            "edit",
            json!({"path": "notes.md", "edits": [{"oldText": "status: draft", "newText": "status: edited from the TUI"}]})
        ),
        llm::text("TUI-EDIT-DONE"),
    ]));
    let (_agent_dir, env) = pi_env(&llm);
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pii.log");
    let mut script = format!(
        "cd /\nexport XDG_CACHE_HOME={}\n",
        sh_quote(&dir.path().join("xdg-cache").display().to_string())
    );
    for (k, v) in &env {
        script.push_str(&format!("export {k}={}\n", sh_quote(v)));
    }
    let mut argv = vec![
        paths::bin("pii").display().to_string(),
        "--ssh".into(),
        sshd.dest(),
        "-F".into(),
        sshd.ssh_config().display().to_string(),
        "--log-file".into(),
        log.display().to_string(),
        "--pi".into(),
        paths::pi_cli().display().to_string(),
        "--".into(),
    ];
    argv.extend(PI_ARGS.iter().chain(tui_args).map(|s| s.to_string()));
    let quoted: Vec<String> = argv.iter().map(|a| sh_quote(a)).collect();
    script.push_str(&format!(
        "{}\necho \"PII-EXIT=$?\"\nexec sleep 3600\n",
        quoted.join(" ")
    ));
    let script_path = dir.path().join("run.sh");
    std::fs::write(&script_path, script).unwrap();
    let tmux = Tmux::start(&script_path);

    // The footer: the remote cwd and the remote branch.
    let footer = format!("{project} (tui-branch)");
    tmux.wait_text(&footer);
    assert_eq!(
        alternate_screen(&tmux),
        fullscreen,
        "pi {:?}: the TUI is not drawn in the expected mode",
        tui_args
    );

    // A user shell command runs on the remote.
    tmux.line("!git status --short");
    tmux.wait_text("remote-only-untracked.txt");
    assert!(
        !Path::new(&project).exists(),
        "the project must be remote-only"
    );

    // A prompt: the fake LLM edits a remote file.
    tmux.line("please edit the notes");
    tmux.wait_text("TUI-EDIT-DONE");
    assert_eq!(
        String::from_utf8(sshd.read_remote("notes.md")).unwrap(),
        "# Notes\n\nstatus: edited from the TUI\n"
    );

    // Escape aborts a long remote command, and the remote process is gone.
    tmux.line("!sleep 300");
    wait_remote("the remote sleep to start", || {
        !remote_sleepers(&sshd).is_empty()
    });
    // pi reads ESC followed by another byte within a few ms as Alt+key: nothing follows here.
    tmux.key("Escape");
    wait_remote("the remote sleep to be killed", || {
        remote_sleepers(&sshd).is_empty()
    });
    // pi marks an aborted user command `(cancelled)` under its `$ sleep 300` block.
    tmux.wait_for("the abort to show", |s| {
        s.split("$ sleep 300")
            .nth(1)
            .is_some_and(|after| after.contains("(cancelled)"))
    });

    // A branch switched on the remote shows in the footer (remote watch events).
    sshd.run_remote_ok("git checkout -q -b switched-remotely");
    tmux.wait_text(&format!("{project} (switched-remotely)"));

    // /quit: pi exits 0, pii passes it on, the shell continues.
    tmux.line("/quit");
    let screen = tmux.wait_text("PII-EXIT=");
    assert!(screen.contains("PII-EXIT=0"), "{screen}");
    wait_remote("the agent to exit", || {
        sshd.remote_processes()
            .iter()
            .all(|p| !p.contains("pi-bridge-agent"))
    });
}
