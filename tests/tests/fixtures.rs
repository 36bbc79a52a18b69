//! The fixtures are real: each test here fails if its fixture is a fake.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use pi_bridge_tests::{
    copy_dir, llm, local_pi, paths, prompt_cwd, FakeLlm, Sshd, PROJECT_AGENTS_SENTENCE,
    PROJECT_HELLO, REMOTE_USER,
};
use serde_json::json;

fn ssh(sshd: &Sshd, args: &[&str]) -> Output {
    let mut cmd = Command::new("ssh");
    cmd.arg("-F").arg(sshd.ssh_config());
    cmd.args(args);
    cmd.stdin(Stdio::null());
    cmd.output().expect("run ssh")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn ssh_alias_logs_in_as_the_remote_user_in_its_home() {
    let sshd = Sshd::start();
    let out = ssh(&sshd, &[sshd.alias(), "id -un; pwd"]);
    assert!(
        out.status.success(),
        "ssh failed: {}\nsshd log:\n{}",
        text(&out.stderr),
        sshd.log()
    );
    assert_eq!(
        text(&out.stdout),
        format!("{REMOTE_USER}\n{}\n", sshd.remote_home()),
    );
    assert_eq!(sshd.dest(), format!("{}:{}", sshd.alias(), sshd.project()));
}

#[test]
fn remote_project_is_invisible_locally_but_real_remotely() {
    let sshd = Sshd::start();
    let project = Path::new(sshd.project());
    let local_view: Vec<_> = std::fs::read_dir(project)
        .map(|d| d.flatten().map(|e| e.file_name()).collect())
        .unwrap_or_default();
    assert!(
        local_view.is_empty(),
        "the test process must not see the remote project at {}, saw {local_view:?}",
        project.display()
    );

    // The remote sees a fresh home holding only the project, with the fixture's files in git.
    assert_eq!(sshd.run_remote_ok("ls -A ~"), "project\n");
    assert_eq!(sshd.read_remote("src/hello.txt"), PROJECT_HELLO.as_bytes());
    assert_eq!(
        sshd.run_remote_ok("git symbolic-ref --short HEAD"),
        "main\n"
    );
    let tracked = sshd.run_remote_ok("git ls-files");
    assert!(
        tracked.contains("AGENTS.md") && tracked.contains("src/hello.txt"),
        "{tracked}"
    );
    assert_eq!(
        sshd.run_remote_ok("stat -c %U src/hello.txt"),
        format!("{REMOTE_USER}\n")
    );

    // And so does ssh.
    let out = ssh(&sshd, &[sshd.alias(), "cat project/src/hello.txt"]);
    assert_eq!(text(&out.stdout), PROJECT_HELLO, "{}", text(&out.stderr));
}

#[test]
fn remote_files_round_trip_bytes_and_builder_options_apply() {
    let sshd = Sshd::builder()
        .project_fixture(paths::fixture("sample-project"))
        .project_name("app")
        .branch("feature-x")
        .start();
    assert_eq!(sshd.project(), format!("{}/app", sshd.remote_home()));
    assert_eq!(
        sshd.run_remote_ok("git symbolic-ref --short HEAD"),
        "feature-x\n"
    );
    assert!(sshd.remote_exists("README.md"));
    assert!(!sshd.remote_exists("nope"));
    sshd.write_remote("bin.dat", &[0xff, 0x00, 0x80]);
    assert_eq!(sshd.read_remote("bin.dat"), vec![0xff, 0x00, 0x80]);
    assert_eq!(sshd.run_remote_ok("od -An -tx1 bin.dat").trim(), "ff 00 80");
    assert!(!Path::new(&format!("{}/bin.dat", sshd.project())).exists());
}

fn forward_to_sshd_itself(sshd: &Sshd) -> Output {
    // `-W` asks sshd to open a TCP connection for us: to sshd's own port, which answers with a
    // banner if forwarding works.
    ssh(
        sshd,
        &["-W", &format!("127.0.0.1:{}", sshd.port()), sshd.alias()],
    )
}

#[test]
fn port_forwarding_is_refused() {
    let sshd = Sshd::start();
    let out = forward_to_sshd_itself(&sshd);
    assert!(
        !out.status.success() && !text(&out.stdout).starts_with("SSH-"),
        "forwarding must be refused; stdout {:?} stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );

    let deadline = Instant::now() + Duration::from_secs(5);
    while !sshd.log().contains("refused local port forward") {
        assert!(
            Instant::now() < deadline,
            "sshd did not log the refusal:\n{}",
            sshd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }

    // Control: the same request works when the fixture allows forwarding.
    let open = Sshd::builder().extra_config("DisableForwarding no").start();
    let out = forward_to_sshd_itself(&open);
    assert!(
        text(&out.stdout).starts_with("SSH-"),
        "forwarding with DisableForwarding no should reach sshd's banner; stdout {:?} stderr {:?}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

#[test]
fn remote_processes_are_listed_and_killed_with_the_fixture() {
    let sshd = Sshd::start();
    let mut client = Command::new("ssh")
        .arg("-F")
        .arg(sshd.ssh_config())
        .arg(sshd.alias())
        .arg("exec sleep 3141")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while !sshd
        .remote_processes()
        .iter()
        .any(|p| p.ends_with(" sleep 3141"))
    {
        assert!(
            Instant::now() < deadline,
            "sleep never showed: {:?}",
            sshd.remote_processes()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(sshd.sshd_pid() > 1);
    drop(sshd);
    let _ = client.wait();
    let out = Command::new("ps")
        .args(["-u", REMOTE_USER, "-o", "stat=,args="])
        .output()
        .unwrap();
    let left: Vec<String> = text(&out.stdout)
        .lines()
        .filter(|l| l.contains("sleep 3141") && !l.starts_with('Z'))
        .map(str::to_string)
        .collect();
    assert!(left.is_empty(), "processes outlived the fixture: {left:?}");
}

/// One HTTP/1.0 request (so no chunked encoding); returns the whole response.
fn http(port: u16, method: &str, path: &str, body: &str) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    out
}

#[test]
fn fake_llm_replays_the_script_and_records_requests() {
    let llm = FakeLlm::start(json!([
        llm::tool("read", json!({"path": "src/hello.txt"})),
        llm::text("all done"),
    ]));
    let first = json!({"model": "fake-model", "stream": true,
        "messages": [{"role": "user", "content": "hi"}]});
    let resp = http(
        llm.port(),
        "POST",
        "/v1/chat/completions",
        &first.to_string(),
    );
    assert!(resp.starts_with("HTTP/1.1 200 "), "{resp}");
    assert!(resp.contains("text/event-stream"), "{resp}");
    let chunks: Vec<serde_json::Value> = resp
        .lines()
        .filter_map(|l| l.strip_prefix("data: "))
        .filter(|d| *d != "[DONE]")
        .map(|d| serde_json::from_str(d).unwrap())
        .collect();
    assert!(resp.trim_end().ends_with("data: [DONE]"), "{resp}");
    let call = &chunks[0]["choices"][0]["delta"]["tool_calls"][0];
    assert_eq!(call["function"]["name"], "read");
    assert_eq!(call["type"], "function");
    let args = chunks[1]["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"]
        .as_str()
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(args).unwrap(),
        json!({"path": "src/hello.txt"})
    );
    assert_eq!(chunks[2]["choices"][0]["finish_reason"], "tool_calls");
    assert!(chunks[3]["usage"].is_object());

    // One assistant message in the history → step 2; two → past the script.
    let second = json!({"stream": true, "messages": [
        {"role": "user", "content": "hi"}, {"role": "assistant", "content": "x"}]});
    let resp = http(
        llm.port(),
        "POST",
        "/v1/chat/completions",
        &second.to_string(),
    );
    assert!(
        resp.contains(r#""content":"all done""#) && resp.contains(r#""finish_reason":"stop""#),
        "{resp}"
    );
    let third = json!({"stream": true, "messages": [
        {"role": "assistant", "content": "x"}, {"role": "assistant", "content": "y"}]});
    let resp = http(
        llm.port(),
        "POST",
        "/v1/chat/completions",
        &third.to_string(),
    );
    assert!(resp.contains("(script exhausted)"), "{resp}");

    let models = http(llm.port(), "GET", "/v1/models", "");
    assert!(models.contains(r#""id":"fake-model""#), "{models}");

    assert_eq!(llm.requests(), vec![first, second, third]);
}

#[test]
fn real_pi_runs_a_scripted_turn_against_the_fake_llm() {
    let work = tempfile::tempdir().unwrap();
    let project = work.path().join("project");
    copy_dir(&paths::fixture("project"), &project);
    let llm = FakeLlm::start(json!([
        llm::tool("read", json!({"path": "src/hello.txt"})),
        llm::text("Read it: FINAL-ANSWER-7"),
    ]));
    let (_agent_dir, mut cmd) = local_pi(&llm, &project, "read src/hello.txt");
    let out = cmd.output().expect("run pi");
    assert!(
        out.status.success(),
        "pi failed ({}): stdout {}\nstderr {}\nfake LLM stderr {}",
        out.status,
        text(&out.stdout),
        text(&out.stderr),
        llm.stderr()
    );
    assert!(
        text(&out.stdout).contains("FINAL-ANSWER-7"),
        "stdout: {}",
        text(&out.stdout)
    );

    let requests = llm.requests();
    assert_eq!(requests.len(), 2, "{requests:#?}");
    let system = llm::system_prompt(&requests[0]);
    assert!(
        system.contains(PROJECT_AGENTS_SENTENCE),
        "system prompt: {system}"
    );
    assert!(
        system.contains(&prompt_cwd(&project.display().to_string())),
        "system prompt: {system}"
    );
    let results = llm::tool_results(&requests[1]);
    assert_eq!(results.len(), 1, "{:#?}", requests[1]);
    assert!(
        results[0].contains(PROJECT_HELLO.trim()),
        "tool result: {}",
        results[0]
    );
}
