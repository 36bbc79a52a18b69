//! The bridge over a real sshd, driven by small Node scripts run through `pii --ssh --pi`:
//! byte-exact transfers, sandbox refusals, and the loopback endpoint's token.

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::Sshd;
use serde_json::Value;

/// Writes `body` as a script and runs it through `pii --ssh`; returns its stdout parsed as JSON.
fn run_script(sshd: &Sshd, body: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("script.cjs");
    std::fs::write(&script, body).unwrap();
    let log = dir.path().join("pii.log");
    let out = pii_ssh(sshd, &log, &script, &[], &[])
        .output()
        .expect("run pii");
    assert_success("pii running a script", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("script output is not JSON ({e}): {stdout}"))
}

/// A deterministic pseudo-random buffer of `n` bytes (every byte value occurs).
fn pattern(n: usize) -> Vec<u8> {
    let mut x: u32 = 0x9e37_79b9;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x >> 24) as u8
        })
        .collect()
}

#[test]
fn binary_and_5mb_files_cross_the_bridge_byte_exact() {
    let sshd = Sshd::start();
    let binary: Vec<u8> = vec![
        0xff, 0x00, 0x80, 0xfe, 0x0a, 0x0d, 0x00, 0xc3, 0x28, 0xef, 0xbb, 0xbf,
    ];
    let big = pattern(5 * 1024 * 1024 + 17);
    sshd.write_remote("remote-binary.bin", &binary);
    sshd.write_remote("remote-big.bin", &big);
    let sha = |b: &[u8]| {
        let out = std::process::Command::new("sha256sum")
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                c.stdin.take().unwrap().write_all(b)?;
                c.wait_with_output()
            })
            .unwrap();
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_string()
    };

    // Read both (sync and promise forms), write copies (sync and promise), report hex/sha.
    let result = run_script(
        &sshd,
        r#"
const fs = require('fs'); const crypto = require('crypto');
const sha = (b) => crypto.createHash('sha256').update(b).digest('hex');
(async () => {
  const bin = fs.readFileSync('remote-binary.bin');
  const big = await fs.promises.readFile(process.cwd() + '/remote-big.bin');
  fs.writeFileSync('copy-binary.bin', bin);
  await fs.promises.writeFile('copy-big.bin', big);
  fs.writeFileSync('fresh-binary.bin', Buffer.from([0xff, 0x00, 0x80, 0xfe]));
  console.log(JSON.stringify({ binHex: bin.toString('hex'), bigLen: big.length, bigSha: sha(big),
    statSize: fs.statSync('copy-big.bin').size, cwd: process.cwd() }));
})().catch((e) => { console.error(e); process.exit(1); });
"#,
    );
    assert_eq!(result["binHex"], hex(&binary));
    assert_eq!(result["bigLen"], big.len());
    assert_eq!(result["bigSha"], sha(&big));
    assert_eq!(result["statSize"], big.len());
    assert_eq!(result["cwd"], sshd.project());
    // The written copies are exact on the remote, and nowhere locally.
    assert_eq!(sshd.read_remote("copy-binary.bin"), binary);
    assert_eq!(sha(&sshd.read_remote("copy-big.bin")), sha(&big));
    assert_eq!(
        sshd.read_remote("fresh-binary.bin"),
        vec![0xff, 0x00, 0x80, 0xfe]
    );
    assert!(!Path::new(sshd.project()).join("copy-big.bin").exists());
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn paths_escaping_the_project_are_refused_and_untouched() {
    let sshd = Sshd::start();
    let home = sshd.remote_home().to_string();
    sshd.run_remote_ok(&format!(
        "printf 'outside secret' > {home}/secret.txt && ln -s {home} escape-link && ln -s {home}/secret.txt secret-link"
    ));
    let result = run_script(
        &sshd,
        r#"
const fs = require('fs');
const attempt = (f) => { try { return { ok: String(f()) }; } catch (e) { return { code: e.code, syscall: e.syscall, message: e.message }; } };
console.log(JSON.stringify({
  dotdot: attempt(() => fs.readFileSync('../secret.txt', 'utf8')),
  dotdotAbs: attempt(() => fs.readFileSync(process.cwd() + '/src/../../secret.txt', 'utf8')),
  viaDirLink: attempt(() => fs.readFileSync('escape-link/secret.txt', 'utf8')),
  viaFileLink: attempt(() => fs.readFileSync('secret-link', 'utf8')),
  writeViaLink: attempt(() => fs.writeFileSync('escape-link/planted.txt', 'x')),
  overwriteViaLink: attempt(() => fs.writeFileSync('secret-link', 'overwritten')),
  mkdirViaLink: attempt(() => fs.mkdirSync('escape-link/newdir')),
  spawnCwdOutside: attempt(() => require('child_process').execSync('pwd', { cwd: process.cwd() + '/escape-link' }).toString()),
  inside: attempt(() => fs.readFileSync('src/hello.txt', 'utf8')),
}));
"#,
    );
    // `../secret.txt` resolves outside the routed project, so it is a LOCAL path (which does not
    // exist here); everything that names the project and escapes it through a symlink or `..`
    // after routing is refused by the agent with EACCES.
    for case in [
        "viaDirLink",
        "viaFileLink",
        "writeViaLink",
        "overwriteViaLink",
        "mkdirViaLink",
    ] {
        assert_eq!(result[case]["code"], "EACCES", "{case}: {}", result[case]);
    }
    assert_ne!(
        result["dotdot"]["ok"], "outside secret",
        "{}",
        result["dotdot"]
    );
    assert_ne!(
        result["dotdotAbs"]["ok"], "outside secret",
        "{}",
        result["dotdotAbs"]
    );
    assert!(
        result["spawnCwdOutside"]["ok"].is_null(),
        "{}",
        result["spawnCwdOutside"]
    );
    assert!(
        result["inside"]["ok"].as_str().unwrap().contains("hello"),
        "{}",
        result["inside"]
    );
    // Nothing outside was created or changed.
    assert_eq!(
        sshd.read_remote(&format!("{home}/secret.txt")),
        b"outside secret"
    );
    assert!(!sshd.remote_exists(&format!("{home}/planted.txt")));
    assert!(!sshd.remote_exists(&format!("{home}/newdir")));
}

/// Reads a variable from a process's initial environment.
fn environ_var(pid: u32, name: &str) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/environ")).ok()?;
    raw.split(|&b| b == 0)
        .filter_map(|kv| std::str::from_utf8(kv).ok())
        .find_map(|kv| kv.strip_prefix(&format!("{name}=")).map(str::to_string))
}

/// The pid of the node process (started with `--require`, the preload) running `script`.
fn find_node(script: &str, deadline: Instant) -> u32 {
    loop {
        let found = pi_bridge_tests::pii::local_processes_matching(script);
        if let Some(line) = found.iter().find(|l| l.contains("--require")) {
            return line.split(' ').next().unwrap().parse().unwrap();
        }
        assert!(
            Instant::now() < deadline,
            "no node process running {script}: {found:?}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

fn write_request(path: &str) -> String {
    format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"fs.write\",\"params\":{{\"path\":\"{path}\",\"data\":\"cHduZWQ=\"}}}}\n"
    )
}

#[test]
fn a_wrong_token_executes_nothing_and_the_right_one_does() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let marker = format!("token-test-{}", std::process::id());
    let script: PathBuf = dir.path().join(format!("{marker}.cjs"));
    // Keeps the session open while the test talks to the endpoint: longer than the right
    // token's answer may take (90 s below; on a loaded machine the debug agent's upload alone
    // took over 20 s, and pii ends a session whose node has exited).
    std::fs::write(&script, "setTimeout(() => {}, 120000);\n").unwrap();
    let log = dir.path().join("pii.log");
    let mut child = pii_ssh(&sshd, &log, &script, &[], &[]).spawn().unwrap();
    let node = find_node(
        &format!("{marker}.cjs"),
        Instant::now() + Duration::from_secs(20),
    );
    let session: Value = serde_json::from_str(
        &environ_var(node, "PII_SESSION").expect("session in node's initial environment"),
    )
    .unwrap();
    let token = environ_var(node, "PII_TOKEN").expect("token in node's environment");
    assert!(
        token.len() >= 64,
        "token shorter than 32 bytes: {}",
        token.len()
    );
    // The token is never in any process's argv.
    assert!(pi_bridge_tests::pii::local_processes_matching(&token).is_empty());
    let endpoint = session["endpoint"].as_str().unwrap().to_string();
    let target = format!("{}/pwned.txt", sshd.project());

    let mut wrong = token.clone().into_bytes();
    wrong[10] = if wrong[10] == b'a' { b'b' } else { b'a' };
    let attempts: Vec<Vec<u8>> = vec![
        wrong,
        token.as_bytes()[..32].to_vec(),
        b"".to_vec(),
        format!("{token}x").into_bytes(),
    ];
    for bad in attempts {
        let mut s = UnixStream::connect(&endpoint).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut frame = bad.clone();
        frame.push(b'\n');
        frame.extend_from_slice(write_request(&target).as_bytes());
        let _ = s.write_all(&frame);
        let mut rest = vec![];
        let _ = s.read_to_end(&mut rest);
        assert!(
            rest.is_empty(),
            "server answered a bad token ({:?}): {}",
            String::from_utf8_lossy(&bad),
            String::from_utf8_lossy(&rest)
        );
    }
    assert!(
        !sshd.remote_exists(&target),
        "a request with a wrong token was executed"
    );

    // The same request with the right token is executed: the check above could fail. (node
    // starts while ssh connects and the agent uploads: the answer waits for the session.)
    let mut s = UnixStream::connect(&endpoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(90))).unwrap();
    s.write_all(format!("{token}\n{}", write_request(&target)).as_bytes())
        .unwrap();
    let mut line = String::new();
    BufReader::new(&s).read_line(&mut line).unwrap();
    assert!(line.contains("\"result\""), "{line}");
    assert_eq!(sshd.read_remote(&target), b"pwned");

    let _ = child.kill();
    let _ = child.wait();
}
