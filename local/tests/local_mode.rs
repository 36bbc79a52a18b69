//! The `pii` binary end to end in `--local` mode, with a fake agent written in node (so the
//! test needs nothing but node, which pii needs anyway): exit code and argv pass through, the
//! token and session reach node through its environment only, the agent's stdin is closed when
//! node exits, the scratch dir is removed, SIGTERM is forwarded, SIGINT is survived. The fake pi
//! reports through files in a directory the user keeps local on purpose (`localPaths` of the
//! user's own config): under pii, nothing else on this machine is writable by node's fs.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const FAKE_AGENT: &str = r#"#!/usr/bin/env node
const fs = require('fs');
const out = process.env.FAKE_AGENT_OUT;
process.stdout.write('motd noise\nPI-BRIDGE-AGENT protocol=1 version=@VERSION@\nPI-BRIDGE-AGENT protocol=1 version=@VERSION@ nonce=' + process.env.PI_BRIDGE_NONCE + '\n');
let buf = '';
process.stdin.on('data', (d) => {
  buf += d;
  let i;
  while ((i = buf.indexOf('\n')) >= 0) {
    const line = buf.slice(0, i); buf = buf.slice(i + 1);
    if (!line) { process.stdout.write('\n'); continue; }
    const m = JSON.parse(line);
    fs.appendFileSync(out + '.calls', m.method + '\n');
    if (m.method === 'hello') {
      const root = fs.realpathSync(m.params.root);
      process.stdout.write(JSON.stringify({jsonrpc: '2.0', id: m.id, result: {protocol: 1, agentVersion: '0.1.0', facts: {
        os: 'linux', arch: 'x86_64', user: 'u', uid: 1, gid: 1, home: '/home/u', hostname: 'h', shell: '/bin/sh',
        loginPath: '/usr/bin:/bin', projectRoot: root, sandboxRoot: root, agentPid: process.pid, hasRg: false, hasFd: false},
        // The trust check pii asks for (nothing of the gate in the fake's project).
        ...(m.params.gate ? {trust: []} : {})}}) + '\n');
    } else {
      process.stdout.write(JSON.stringify({jsonrpc: '2.0', id: m.id, error: {code: -32601, message: 'fake agent: no ' + m.method}}) + '\n');
    }
  }
});
process.stdin.on('end', () => { fs.writeFileSync(out + '.stdin-closed', 'yes'); process.exit(0); });
"#;

const FAKE_PI: &str = r#"
const fs = require('fs');
const out = process.env.FAKE_AGENT_OUT;
fs.writeFileSync(out + '.pi', JSON.stringify({argv: process.argv.slice(2), execArgv: process.execArgv}));
if (process.argv[2] === 'wait') {
  process.on('SIGTERM', () => { fs.writeFileSync(out + '.sigterm', 'yes'); process.exit(42); });
  process.on('SIGINT', () => { fs.writeFileSync(out + '.sigint', 'yes'); });
  fs.writeFileSync(out + '.ready', 'yes');
  setInterval(() => {}, 1000);
} else {
  process.exit(7);
}
"#;

struct Env {
    dir: tempfile::TempDir,
    tmp: PathBuf,
}

impl Env {
    fn new() -> Option<Env> {
        if Command::new("node").arg("--version").output().is_err() {
            eprintln!("node is not installed; skipping");
            return None;
        }
        let dir = tempfile::tempdir().unwrap();
        for sub in ["bin", "project", "tmp", "out", "home/.config/pi-bridge"] {
            std::fs::create_dir_all(dir.path().join(sub)).unwrap();
        }
        let agent = dir.path().join("bin/agent.js");
        // pii runs only the agent of its own release: the fake announces this one.
        let fake = FAKE_AGENT.replace("@VERSION@", env!("CARGO_PKG_VERSION"));
        std::fs::write(&agent, fake).unwrap();
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&agent, std::fs::Permissions::from_mode(0o755)).unwrap();
        std::fs::write(dir.path().join("bin/pi.js"), FAKE_PI).unwrap();
        std::fs::write(
            dir.path().join("home/.config/pi-bridge/config.json"),
            serde_json::json!({"localPaths": [dir.path().join("out")]}).to_string(),
        )
        .unwrap();
        let tmp = dir.path().join("tmp");
        Some(Env { dir, tmp })
    }

    fn p(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    /// Where the fake pi and agent report.
    fn o(&self, name: &str) -> PathBuf {
        self.dir.path().join("out").join(name)
    }

    fn pii(&self, pi_args: &[&str]) -> Command {
        self.pii_with(&[], pi_args)
    }

    fn pii_with(&self, flags: &[&str], pi_args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_pii"));
        c.arg("--local")
            .arg(self.p("project"))
            .arg("--agent")
            .arg(self.p("bin/agent.js"))
            .arg("--pi")
            .arg(self.p("bin/pi.js"))
            .arg("--log-file")
            .arg(self.p("pii.log"))
            .args(flags)
            .arg("--")
            .args(pi_args)
            .current_dir(self.dir.path())
            .env("TMPDIR", &self.tmp)
            .env("HOME", self.p("home"))
            .env("FAKE_AGENT_OUT", self.o("out"))
            .env_remove("PII_TOKEN")
            .env_remove("PII_SESSION");
        c
    }

    fn read(&self, name: &str) -> String {
        std::fs::read_to_string(self.o(name)).unwrap_or_default()
    }

    fn scratch_left(&self) -> Vec<PathBuf> {
        std::fs::read_dir(&self.tmp)
            .unwrap()
            .map(|e| e.unwrap().path())
            .collect()
    }
}

fn wait_for(path: &Path) {
    let t = Instant::now();
    while !path.exists() {
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{} never appeared",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn runs_node_and_passes_exit_code_and_args() {
    let Some(env) = Env::new() else { return };
    let out = env
        .pii(&["a b", "-p", "--x"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(7),
        "stderr: {}\nlog: {}",
        String::from_utf8_lossy(&out.stderr),
        std::fs::read_to_string(env.p("pii.log")).unwrap_or_default()
    );
    let pi: serde_json::Value = serde_json::from_str(&env.read("out.pi")).unwrap();
    assert_eq!(pi["argv"], serde_json::json!(["a b", "-p", "--x"]));
    // The token is never in argv.
    assert!(!pi.to_string().contains("PII_TOKEN"));
    assert!(
        env.read("out.calls").starts_with("hello\n"),
        "{}",
        env.read("out.calls")
    );
    assert_eq!(
        env.read("out.stdin-closed"),
        "yes",
        "pii closes the agent's stdin when node exits"
    );
    assert!(
        env.scratch_left().is_empty(),
        "scratch dir left behind: {:?}",
        env.scratch_left()
    );
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "pii wrote to the terminal: {out:?}"
    );
}

#[test]
fn sigint_is_survived_and_sigterm_forwarded() {
    let Some(env) = Env::new() else { return };
    let mut child = env.pii(&["wait"]).stdin(Stdio::null()).spawn().unwrap();
    wait_for(&env.o("out.ready"));
    let pid = child.id() as libc::pid_t;
    // SAFETY: signalling our own child.
    unsafe { libc::kill(pid, libc::SIGINT) };
    std::thread::sleep(Duration::from_millis(300));
    assert!(child.try_wait().unwrap().is_none(), "pii died of SIGINT");
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let t = Instant::now();
    let st = loop {
        if let Some(st) = child.try_wait().unwrap() {
            break st;
        }
        assert!(
            t.elapsed() < Duration::from_secs(10),
            "pii did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(st.code(), Some(42));
    assert_eq!(env.read("out.sigterm"), "yes");
    assert_eq!(
        env.read("out.sigint"),
        "",
        "pii must not forward SIGINT (the terminal sends it to node)"
    );
    assert_eq!(env.read("out.stdin-closed"), "yes");
    assert!(env.scratch_left().is_empty());
}

#[test]
fn errors_before_node_are_clear() {
    let Some(env) = Env::new() else { return };
    let out = env
        .pii_with(&["--node", "/nonexistent/node"], &[])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("node not found") && e.contains("/nonexistent/node"),
        "{e}"
    );

    std::fs::write(env.p("pi-bridge.config.json"), r#"{"rpcTimeout":"soon"}"#).unwrap();
    let out = env.pii(&[]).output().unwrap();
    let e = String::from_utf8_lossy(&out.stderr);
    assert!(
        e.contains("pi-bridge.config.json") && e.contains("`rpcTimeout`"),
        "{e}"
    );
}
