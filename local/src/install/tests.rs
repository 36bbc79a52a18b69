//! Finding agents, the announcement, and the bootstrap run by a real `sh` in a temp HOME.

use super::*;
use protocol::Magic;

const NONCE: &str = "0123456789abcdef0123456789abcdef";

async fn announce(input: &[u8]) -> Result<Option<Announce>, InstallError> {
    let mut r = tokio::io::BufReader::new(input);
    read_announce(&mut r, NONCE).await
}

#[tokio::test]
async fn skips_noise_until_magic() {
    let mut input = b"Welcome!\n\xff\xfe motd\r\n".to_vec();
    input.extend_from_slice(protocol::hello::announcement(Some(NONCE)).as_bytes());
    input.extend_from_slice(b"{\"x\":1}\n");
    let got = announce(&input).await.unwrap();
    assert_eq!(
        got,
        Some(Announce::Agent(Magic::with_nonce(Some(NONCE.into()))))
    );
    // Announcements without this connection's nonce are noise, whatever they claim.
    let got = announce(
        b"PI-BRIDGE-AGENT protocol=1 version=0.1.0\nPI-BRIDGE-AGENT protocol=0 version=0.0.1 nonce=ffffffffffffffff\nPI-BRIDGE-AGENT protocol=two\nPI-BRIDGE-AGENT protocol=1 version=0.1.0 nonce=0123456789abcdef0123456789abcdef\n",
    )
    .await
    .unwrap();
    assert!(matches!(got, Some(Announce::Agent(m)) if m.nonce.as_deref() == Some(NONCE)));
    assert_eq!(
        announce(b"PI-BRIDGE-AGENT protocol=1 version=0.1.0\n")
            .await
            .unwrap(),
        None
    );
    let got = announce(b"noise\nPI-BRIDGE-INSTALL Linux x86_64\n")
        .await
        .unwrap();
    assert_eq!(got, Some(Announce::Install("Linux x86_64".into())));
    assert_eq!(announce(b"only noise\n").await.unwrap(), None);
    let long = vec![b'x'; 200_000];
    assert_eq!(announce(&long).await.unwrap(), None);
}

/// A fake agent: noise, this release's announcement with the connection's nonce, then it
/// swallows its input.
fn fake() -> String {
    format!(
        "#!/bin/sh\necho noise-from-agent-rc\necho \"{} nonce=$PI_BRIDGE_NONCE\"\necho \"args: $*\" >&2\ncat >/dev/null\n",
        magic()
    )
}

fn magic() -> &'static str {
    protocol::hello::MAGIC_LINE.trim_end()
}

fn uname() -> String {
    let o = std::process::Command::new("uname")
        .arg("-sm")
        .output()
        .unwrap();
    String::from_utf8(o.stdout).unwrap().trim().to_string()
}

struct Run {
    child: std::process::Child,
    out: std::io::BufReader<std::process::ChildStdout>,
}

impl Run {
    fn start(home: &Path, script: &str) -> Run {
        Run::start_with(home, script, &std::env::var("PATH").unwrap_or_default())
    }
    fn start_with(home: &Path, script: &str, path: &str) -> Run {
        let mut child = std::process::Command::new("sh")
            .arg("-c")
            .arg(script)
            .env("HOME", home)
            .env("PATH", path)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = std::io::BufReader::new(child.stdout.take().unwrap());
        Run { child, out }
    }
    fn line(&mut self) -> String {
        let mut l = String::new();
        std::io::BufRead::read_line(&mut self.out, &mut l).unwrap();
        l.trim_end().to_string()
    }
    fn send(&mut self, b: &[u8]) {
        std::io::Write::write_all(self.child.stdin.as_mut().unwrap(), b).unwrap();
    }
    fn finish(mut self) -> i32 {
        drop(self.child.stdin.take());
        self.child.wait().unwrap().code().unwrap_or(-1)
    }
}

fn sha(b: &[u8]) -> String {
    protocol::secret::hex(&Sha256::digest(b))
}

fn mode(p: &Path) -> u32 {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).unwrap().permissions().mode() & 0o777
}

#[test]
fn bootstrap_travels_as_one_line_that_sh_parses() {
    let s = bootstrap_script(&[("Linux x86_64".into(), "0.0.0-abc".into(), 5)]);
    assert!(!s.contains('\n'), "{s}");
    assert!(!s.contains(" \\ "), "a continuation left in: {s}");
    let st = std::process::Command::new("sh")
        .args(["-n", "-c", &s])
        .status()
        .unwrap();
    assert!(st.success(), "sh -n refuses the one-line bootstrap: {s}");
    // Every command of the file is in it, the last one last.
    assert!(s.ends_with("exec \"$d/pi-bridge-agent\" --stdio"), "{s}");
}

#[test]
fn bootstrap_script_installs_verifies_reuses_and_prunes() {
    let home = tempfile::tempdir().unwrap();
    let base = home.path().join(".cache/pi-bridge/agent");
    let stale = base.join("0.0.9-aaaaaaaaaaaa");
    std::fs::create_dir_all(&stale).unwrap();
    std::fs::write(stale.join(AGENT_NAME), "old").unwrap();
    // Older than the prune grace (PRUNE_MIN_AGE_MIN), and no process runs it: pruned.
    let old = std::time::SystemTime::now() - Duration::from_secs(3600);
    std::fs::File::open(&stale)
        .unwrap()
        .set_modified(old)
        .unwrap();
    let u = uname();
    let fake = fake();
    let bin = fake.as_bytes();
    let dir = dir_name(&sha(bin));
    let script = bootstrap_script(&[(u.clone(), dir.clone(), bin.len() as u64)]);
    assert!(!script.contains('\n'));

    // First run: asks, receives, verifies, installs, prunes, execs.
    let mut r = Run::start(home.path(), &script);
    assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
    r.send(format!("{} {} {dir}\n", bin.len(), sha(bin)).as_bytes());
    r.send(bin);
    assert_eq!(r.line(), "noise-from-agent-rc");
    assert_eq!(r.line(), format!("{} nonce=", magic()));
    assert_eq!(r.finish(), 0);
    let installed = base.join(&dir).join(AGENT_NAME);
    assert_eq!(std::fs::read(&installed).unwrap(), bin);
    assert_eq!(mode(&installed), 0o700);
    assert_eq!(mode(&base.join(&dir)), 0o700);
    assert_eq!(mode(&base), 0o700);
    assert!(!stale.exists(), "old version pruned");
    assert_eq!(
        std::fs::read_dir(base.join(&dir)).unwrap().count(),
        1,
        "no temp file left"
    );

    // Second run: straight to the agent.
    let mut r = Run::start(home.path(), &script);
    assert_eq!(r.line(), "noise-from-agent-rc");
    assert_eq!(r.line(), format!("{} nonce=", magic()));
    assert_eq!(r.finish(), 0);

    // A new build whose bytes arrive corrupted: refused, nothing installed, old kept.
    let bin2 = format!("{fake}# v2\n").into_bytes();
    let dir2 = dir_name(&sha(&bin2));
    let script2 = bootstrap_script(&[(u.clone(), dir2.clone(), bin2.len() as u64)]);
    let mut r = Run::start(home.path(), &script2);
    assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
    let mut bad = bin2.clone();
    bad[3] ^= 1;
    r.send(format!("{} {} {dir2}\n", bad.len(), sha(&bin2)).as_bytes());
    r.send(&bad);
    let l = r.line();
    assert!(l.starts_with("PI-BRIDGE-ERROR sha256 mismatch"), "{l}");
    assert_eq!(r.finish(), 1);
    assert!(!base.join(&dir2).exists());
    assert!(installed.exists());

    // A short upload (connection cut) is a mismatch too.
    let mut r = Run::start(home.path(), &script2);
    r.line();
    r.send(format!("{} {} {dir2}\n", bin2.len(), sha(&bin2)).as_bytes());
    r.send(&bin2[..10]);
    drop(r.child.stdin.take());
    assert!(r.line().starts_with("PI-BRIDGE-ERROR sha256 mismatch"));
    assert!(!base.join(&dir2).exists());

    // Hostile header: refused before anything is written.
    for header in ["1 x ../evil\n", "1 x a/b\n", "-1 x ok\n", "\n"] {
        let mut r = Run::start(home.path(), &script2);
        r.line();
        r.send(header.as_bytes());
        let l = r.line();
        assert!(l.starts_with("PI-BRIDGE-ERROR"), "{header:?}: {l}");
        assert_eq!(r.finish(), 1);
    }
    assert!(!home.path().join(".cache/pi-bridge/evil").exists());
    let visible = std::fs::read_dir(&base)
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count();
    assert_eq!(visible, 1, "only the installed version (and the lock file)");
}

#[test]
fn without_flock_a_stale_mkdir_lock_is_broken_and_released() {
    // A PATH with every command of /usr/bin and /bin except flock.
    let home = tempfile::tempdir().unwrap();
    let bin_dir = home.path().join("noflock");
    std::fs::create_dir(&bin_dir).unwrap();
    for d in ["/usr/bin", "/bin"] {
        for e in std::fs::read_dir(d).into_iter().flatten().flatten() {
            let name = e.file_name();
            if name != "flock" && !bin_dir.join(&name).exists() {
                let _ = std::os::unix::fs::symlink(e.path(), bin_dir.join(&name));
            }
        }
    }
    let base = home.path().join(".cache/pi-bridge/agent");
    std::fs::create_dir_all(base.join(".lock.d")).unwrap();
    // The holder is gone (pids this high are never reached here): the lock is stale.
    std::fs::write(base.join(".lock.d/pid"), "4194304999").unwrap();
    let u = uname();
    let fake = fake();
    let bin = fake.as_bytes();
    let dir = dir_name(&sha(bin));
    let script = bootstrap_script(&[(u.clone(), dir.clone(), bin.len() as u64)]);
    let mut r = Run::start_with(home.path(), &script, bin_dir.to_str().unwrap());
    assert_eq!(r.line(), format!("PI-BRIDGE-INSTALL {u}"));
    r.send(format!("{} {} {dir}\n", bin.len(), sha(bin)).as_bytes());
    r.send(bin);
    assert_eq!(r.line(), "noise-from-agent-rc");
    assert_eq!(r.finish(), 0);
    assert!(base.join(&dir).join(AGENT_NAME).exists());
    assert!(!base.join(".lock.d").exists(), "mkdir lock not released");
    assert!(
        !base.join(".lock").exists(),
        "flock was used although hidden"
    );
}

#[test]
fn hash_cache_follows_content_changes() {
    let d = tempfile::tempdir().unwrap();
    let f = d.path().join("agent");
    let cache = d.path().join("cache/agent-hashes");
    std::fs::write(&f, "one").unwrap();
    let (a, n) = cached_sha256_in(&f, &cache).unwrap();
    assert_eq!((a.as_str(), n), (sha(b"one").as_str(), 3));
    assert!(std::fs::read_to_string(&cache).unwrap().starts_with(&a));
    assert_eq!(cached_sha256_in(&f, &cache).unwrap().0, a);
    // A rebuilt file (new size/mtime/inode) is hashed again.
    std::fs::remove_file(&f).unwrap();
    std::fs::write(&f, "two!").unwrap();
    assert_eq!(cached_sha256_in(&f, &cache).unwrap().0, sha(b"two!"));
    assert_eq!(std::fs::read_to_string(&cache).unwrap().lines().count(), 1);
}

#[test]
fn elf_headers() {
    let d = tempfile::tempdir().unwrap();
    let mut h = vec![0x7f, b'E', b'L', b'F', 2, 1];
    h.resize(18, 0);
    h.extend_from_slice(&62u16.to_le_bytes());
    std::fs::write(d.path().join("x86"), &h).unwrap();
    assert_eq!(elf_machine(&d.path().join("x86")), Some(62));
    std::fs::write(d.path().join("sh"), fake()).unwrap();
    assert_eq!(elf_machine(&d.path().join("sh")), None);
    assert_eq!(elf_machine(&d.path().join("missing")), None);
    let (found, looked) = find_agent("aarch64", 183, Some(&d.path().join("x86")));
    assert!(found.is_none() || found.as_deref() != Some(&d.path().join("x86")));
    assert!(looked[0].contains("ELF machine 62"), "{looked:?}");
    assert_eq!(
        find_agent("x86_64", 62, Some(&d.path().join("x86"))).0,
        Some(d.path().join("x86"))
    );
    assert_eq!(arch_of("Linux x86_64").unwrap().0, "x86_64");
    assert_eq!(arch_of("Linux arm64").unwrap().0, "aarch64");
    assert!(matches!(
        arch_of("Darwin arm64"),
        Err(InstallError::UnsupportedRemote(_))
    ));
    assert!(matches!(
        arch_of("Linux riscv64"),
        Err(InstallError::UnsupportedRemote(_))
    ));
}

#[cfg(target_os = "linux")]
fn sh_child(home: &Path, script: &str) -> Child {
    tokio::process::Command::new("sh")
        .arg("-c")
        .arg(script)
        .env("HOME", home)
        .env(protocol::hello::NONCE_ENV, NONCE)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap()
}

/// [`bootstrap`] of `script` run by `sh` in `home`, as the tests call it (no ssh, quiet, [`NONCE`]).
#[cfg(target_os = "linux")]
async fn bootstrap_sh(
    home: &Path,
    script: &str,
    known: &[Upload],
    agent: Option<&Path>,
) -> Result<Connected, InstallError> {
    bootstrap(sh_child(home, script), known, agent, "test", false, NONCE).await
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn pii_uploads_through_the_bootstrap() {
    let home = tempfile::tempdir().unwrap();
    let bin = home.path().join("fake-agent");
    std::fs::write(&bin, fake()).unwrap();
    let (sha, size) = sha256_file(&bin).unwrap();
    let u = uname();
    let known = vec![Upload {
        uname: u.clone(),
        path: bin.clone(),
        sha: sha.clone(),
        size,
    }];
    let script = bootstrap_script(&[(u, dir_name(&sha), size)]);
    let (mut child, _reader, _tail) = bootstrap_sh(home.path(), &script, &known, None)
        .await
        .unwrap();
    let installed = home
        .path()
        .join(".cache/pi-bridge/agent")
        .join(dir_name(&sha))
        .join(AGENT_NAME);
    assert_eq!(std::fs::read(&installed).unwrap(), fake().as_bytes());
    drop(child.stdin.take());
    assert!(child.wait().await.unwrap().success());
    // Second time: no upload needed (an empty table would still find it).
    let (mut child, _r, _t) = bootstrap_sh(home.path(), &bootstrap_script(&[]), &[], None)
        .await
        .unwrap();
    drop(child.stdin.take());
    child.wait().await.unwrap();
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn no_binary_for_the_arch_says_how_to_build_one() {
    let home = tempfile::tempdir().unwrap();
    let e = match bootstrap_sh(
        home.path(),
        &bootstrap_script(&[]),
        &[],
        Some(Path::new("/nonexistent/agent")),
    )
    .await
    {
        Err(e) => e.to_string(),
        Ok(_) => panic!("no agent to upload, yet connected"),
    };
    assert!(
        e.contains("cargo build --release -p pi-bridge-agent --target"),
        "{e}"
    );
    assert!(e.contains("/nonexistent/agent (missing)"), "{e}");
}

#[tokio::test]
async fn mismatch_names_both_versions() {
    let e = announce(
        b"PI-BRIDGE-AGENT protocol=9 version=9.9.9 nonce=0123456789abcdef0123456789abcdef\n",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("9.9.9")
            && e.contains("protocol 9")
            && e.contains(&format!("protocol {}", protocol::PROTOCOL_VERSION)),
        "{e}"
    );
    let e = announce(b"PI-BRIDGE-AGENT protocol=two nonce=0123456789abcdef0123456789abcdef\n")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("cannot parse"), "{e}");
    let e = announce(b"PI-BRIDGE-ERROR sha256 mismatch\n")
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("sha256 mismatch"), "{e}");
    // The same protocol but another release: refused as well.
    let e = announce(
        b"PI-BRIDGE-AGENT protocol=1 version=0.0.1-old nonce=0123456789abcdef0123456789abcdef\n",
    )
    .await
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("0.0.1-old") && e.contains(protocol::VERSION),
        "{e}"
    );
}

#[cfg(target_os = "linux")]
#[tokio::test]
async fn an_agent_of_another_release_is_never_uploaded() {
    let home = tempfile::tempdir().unwrap();
    let u = uname();
    for (name, body) in [
        (
            "old-agent",
            fake().replace(protocol::VERSION, "0.0.1-old").into_bytes(),
        ),
        ("not-an-agent", b"#!/bin/sh\necho hi\n".to_vec()),
    ] {
        let bin = home.path().join(name);
        std::fs::write(&bin, &body).unwrap();
        let (sha, size) = sha256_file(&bin).unwrap();
        let known = vec![Upload {
            uname: u.clone(),
            path: bin.clone(),
            sha: sha.clone(),
            size,
        }];
        let script = bootstrap_script(&[(u.clone(), dir_name(&sha), size)]);
        let e = match bootstrap_sh(home.path(), &script, &known, None).await {
            Err(e) => e.to_string(),
            Ok(_) => panic!("{name} was uploaded and answered"),
        };
        assert!(e.contains(&bin.display().to_string()), "{e}");
        assert!(e.contains("not uploaded"), "{e}");
        assert!(
            !home
                .path()
                .join(".cache/pi-bridge/agent")
                .join(dir_name(&sha))
                .join(AGENT_NAME)
                .exists(),
            "{name} installed"
        );
    }
}

#[test]
fn npm_agents_package_is_found_the_way_node_resolves_it() {
    let d = tempfile::tempdir().unwrap();
    let mk = |p: &str| {
        let p = d.path().join(p);
        std::fs::create_dir_all(&p).unwrap();
        p
    };
    // npm -g: pi-bridge/node_modules/@pi-bridge/{linux-x64,agents}.
    let nm = "lib/node_modules/pi-bridge/node_modules";
    let bin = mk(&format!("{nm}/@pi-bridge/linux-x64/bin"));
    assert_eq!(npm_agents_dir_from(&bin.join("pii")), None);
    let agents = mk(&format!("{nm}/{NPM_AGENTS}"));
    assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(agents.clone()));
    // A copy nested under the platform package is nearer, so it wins (as in Node).
    let nested = mk(&format!(
        "{nm}/@pi-bridge/linux-x64/node_modules/{NPM_AGENTS}"
    ));
    assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(nested));
    // pnpm: the dependency sits beside the package in .pnpm/<pkg>/node_modules.
    let pn = "proj/node_modules/.pnpm/@pi-bridge+linux-x64@1.0.0/node_modules";
    let bin = mk(&format!("{pn}/@pi-bridge/linux-x64/bin"));
    let agents = mk(&format!("{pn}/{NPM_AGENTS}"));
    assert_eq!(npm_agents_dir_from(&bin.join("pii")), Some(agents));
    // A `node_modules/node_modules` is never looked at.
    let odd = mk("x/node_modules/bin");
    mk(&format!("x/node_modules/node_modules/{NPM_AGENTS}"));
    assert_eq!(npm_agents_dir_from(&odd.join("pii")), None);
}
