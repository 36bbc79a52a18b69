//! pii and the pi versions it meets, with the real pinned pi and node binaries:
//!
//! - a node too old for the pi (pi 1.6.0 on Node 20) stops pii before anything starts, with one
//!   line naming both versions, and `pii doctor` marks it ✗;
//! - `pi` on PATH is found whichever package it was installed from (`@earendil-works/…` or
//!   `@mariozechner/…`);
//! - the cell's pi learns its startup lookups: the first session sends them to the remote, the
//!   second finds them prefetched; a pi version outside the tested matrix (a copy of the cell's pi
//!   with a bumped version) runs after a one-line notice and does not reuse that list.

use std::collections::BTreeSet;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use pi_bridge_tests::pii::{assert_success, cache_home, pii_ssh};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::{json, Value};

const NOTICE: &str = "pii: note:";

/// The matrix's newest pi and its node requirement, and the node 20 binary.
fn pi_1_and_node_20() -> (paths::Pi, PathBuf) {
    let cell = paths::matrix()
        .into_iter()
        .find(|c| c.pi.starts_with("1."))
        .expect("a pi 1.x cell in the matrix");
    (paths::pi_of(&cell.pi), paths::node_of("20"))
}

#[test]
fn a_node_too_old_for_pi_stops_pii_in_one_line() {
    let (pi, node20) = pi_1_and_node_20();
    let found = String::from_utf8(
        Command::new(&node20)
            .arg("--version")
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let found = found.trim();
    assert!(found.starts_with("v20."), "{found}");
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pii.log");
    let node_flag = node20.display().to_string();
    let out = pii_ssh(&sshd, &log, &pi.cli, &["--node", &node_flag], &["-p", "hi"])
        .output()
        .expect("run pii");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert_eq!(
        stderr.trim_end(),
        format!(
            "pii: pi {} ({}) needs Node.js {}, but {} is Node.js {found}: install a newer Node.js, or pick one with --node PATH or PII_NODE",
            pi.version, pi.package, pi.engines_node, node_flag
        )
    );
    assert!(out.stdout.is_empty());
    // Refused before any connection: nothing was installed on the remote.
    assert!(!sshd.remote_exists(&format!("{}/.cache/pi-bridge", sshd.remote_home())));

    // The doctor says the same, as a failed check with the fix.
    let out = Command::new(paths::bin("pii"))
        .args(["doctor", "--ssh", &sshd.dest(), "-F"])
        .arg(sshd.ssh_config())
        .arg("--pi")
        .arg(&pi.cli)
        .arg("--node")
        .arg(&node20)
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let line = format!(
        "✗ node {found} at {} is too old: pi {} ({}) needs Node.js {}",
        node20.display(),
        pi.version,
        pi.package,
        pi.engines_node
    );
    assert!(text.lines().any(|l| l == line), "no `{line}`:\n{text}");
    assert!(
        text.contains(&format!("fix: install Node.js {}", pi.engines_node)),
        "{text}"
    );
}

/// `pi` on PATH as `npm install -g` leaves it (a symlink to the package's bin) is found under
/// both package names; each runs with a node it accepts.
#[test]
fn pi_on_path_is_found_under_either_package_name() {
    let mut names = BTreeSet::new();
    for version in paths::matrix()
        .iter()
        .map(|c| c.pi.clone())
        .collect::<BTreeSet<_>>()
    {
        let pi = paths::pi_of(&version);
        let node = paths::matrix()
            .into_iter()
            .find(|c| c.pi == version)
            .map(|c| paths::node_of(&c.node))
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        std::os::unix::fs::symlink(&pi.cli, bin.join("pi")).unwrap();
        let project = dir.path().join("project");
        std::fs::create_dir(&project).unwrap();
        let log = dir.path().join("pii.log");
        let out = Command::new(paths::bin("pii"))
            .arg("--local")
            .arg(&project)
            .arg("--log-file")
            .arg(&log)
            .arg("--node")
            .arg(&node)
            .args(["--", "--version"])
            .env("PATH", format!("{}:/usr/bin:/bin", bin.display()))
            .env_remove("PII_PI")
            .env("XDG_CACHE_HOME", cache_home(&log))
            .env("PI_CODING_AGENT_DIR", dir.path().join("agent"))
            .env("PI_OFFLINE", "1")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        assert_success(&format!("pi {version} from PATH"), &out, &log);
        // 0.73 prints its version on stderr, 1.x on stdout.
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(printed.trim(), version, "pi --version");
        names.insert(pi.package);
    }
    assert_eq!(
        names,
        BTreeSet::from([
            "@earendil-works/pi-coding-agent".to_string(),
            "@mariozechner/pi-coding-agent".to_string()
        ]),
        "the matrix must hold a pi of each package name for this test to mean anything"
    );
}

/// A copy of `pi`'s package in `dir` (its dependencies linked from the fixture), with `version`
/// in its package.json; returns its cli.js.
fn pi_copy(pi: &paths::Pi, dir: &Path, version: &str) -> PathBuf {
    let modules = pi
        .dir
        .ancestors()
        .find(|a| a.ends_with("node_modules"))
        .unwrap();
    let here = dir.join("node_modules");
    let (scope, name) = pi.package.split_once('/').unwrap();
    std::fs::create_dir_all(here.join(scope)).unwrap();
    for e in std::fs::read_dir(modules).unwrap() {
        let e = e.unwrap();
        if e.file_name() == scope {
            for s in std::fs::read_dir(e.path()).unwrap() {
                let s = s.unwrap();
                if s.file_name() != name {
                    std::os::unix::fs::symlink(s.path(), here.join(scope).join(s.file_name()))
                        .unwrap();
                }
            }
        } else {
            std::os::unix::fs::symlink(e.path(), here.join(e.file_name())).unwrap();
        }
    }
    let copy = here.join(&pi.package);
    let st = Command::new("cp")
        .arg("-r")
        .arg(&pi.dir)
        .arg(&copy)
        .status()
        .unwrap();
    assert!(st.success());
    let manifest = copy.join("package.json");
    let mut pkg: Value = serde_json::from_slice(&std::fs::read(&manifest).unwrap()).unwrap();
    pkg["version"] = json!(version);
    std::fs::write(&manifest, serde_json::to_vec_pretty(&pkg).unwrap()).unwrap();
    copy.join(pi.cli.strip_prefix(&pi.dir).unwrap())
}

struct Run {
    stderr: String,
    /// (method, path) of every lookup that went to the remote (PI_BRIDGE_TRACE).
    lookups: Vec<(String, String)>,
}

/// `pi -p` through pii with a one-answer script, PI_BRIDGE_TRACE on; pii's cache dir is shared by
/// every run with the same `log`.
fn run_pi(sshd: &Sshd, log: &Path, cli: &Path) -> Run {
    let llm = FakeLlm::start(json!([llm::text("VERSIONS-ANSWER")]));
    let (_agent_dir, env) = pi_env(&llm);
    let trace = log.with_file_name(format!(
        "trace-{}.txt",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    ));
    let mut args = vec!["-p", "hello"];
    args.extend(PI_ARGS);
    let mut cmd = pii_ssh(sshd, log, cli, &[], &args);
    cmd.envs(env).env("PI_BRIDGE_TRACE", &trace);
    let out = cmd.output().expect("run pii");
    assert_success("pii running pi", &out, log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("VERSIONS-ANSWER"), "{stdout}");
    let lookups = std::fs::read_to_string(&trace)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let lookup = ["fs.stat", "fs.access", "fs.read", "fs.realpath"].contains(&f[2]);
            lookup.then(|| (f[2].to_string(), f[3].to_string()))
        })
        .collect();
    Run {
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        lookups,
    }
}

fn learned(log: &Path, pi: &paths::Pi, version: &str) -> Vec<String> {
    let dir = cache_home(log).join("pi-bridge/prefetch");
    let file = dir.join(format!("{}@{version}.json", pi.package.replace('/', "+")));
    let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&dir), 0o700, "{}", dir.display());
    assert_eq!(mode(&file), 0o600, "{}", file.display());
    assert_eq!(std::fs::metadata(&file).unwrap().uid(), unsafe {
        libc::geteuid()
    });
    let v: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(v["key"], format!("{}@{version}", pi.package), "{v}");
    v["paths"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn startup_lookups_are_learned_per_pi_version_and_an_untested_pi_gets_a_notice() {
    let pi = paths::pi();
    let sshd = Sshd::start();
    let project = sshd.project().to_string();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pii.log");

    // First session: nothing learned, its startup lookups go to the remote and are kept.
    let first = run_pi(&sshd, &log, &pi.cli);
    assert!(!first.stderr.contains(NOTICE), "{}", first.stderr);
    assert!(first.lookups.len() >= 5, "{:?}", first.lookups);
    let list = learned(&log, &pi, &pi.version);
    for p in &list {
        assert!(
            !p.starts_with('/') && !p.split('/').any(|c| c == ".." || c.is_empty()),
            "not project-relative: {p}"
        );
    }
    for (_, path) in &first.lookups {
        let rel = path
            .strip_prefix(&project)
            .map(|r| r.trim_start_matches('/'))
            .map(|r| if r.is_empty() { "." } else { r });
        assert!(
            rel.is_some_and(|r| list.iter().any(|p| p == r)),
            "a startup lookup was not learned: {path} (learned: {list:?})"
        );
    }

    // Second session: every startup lookup is answered from the prefetch.
    let second = run_pi(&sshd, &log, &pi.cli);
    eprintln!(
        "startup lookups sent to the remote: {} first, {} second",
        first.lookups.len(),
        second.lookups.len()
    );
    assert_eq!(
        second.lookups,
        Vec::<(String, String)>::new(),
        "learned startup lookups went to the remote again"
    );

    // A pi version outside the matrix: a notice, it works, and it learns from scratch.
    let untested = format!("{}.{}", pi.version, 9999);
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = pi_copy(&pi, copy_dir.path(), &untested);
    let third = run_pi(&sshd, &log, &copy);
    let notices: Vec<&str> = third
        .stderr
        .lines()
        .filter(|l| l.starts_with(NOTICE))
        .collect();
    assert_eq!(notices.len(), 1, "{}", third.stderr);
    assert!(
        notices[0].starts_with(&format!(
            "pii: note: pi {untested} ({}) on Node v{}.",
            pi.package,
            paths::cell().node
        )) && notices[0].contains("outside pi-bridge's tested matrix"),
        "{}",
        notices[0]
    );
    assert_eq!(
        third.lookups.len(),
        first.lookups.len(),
        "the other version's list was reused: {:?}",
        third.lookups
    );
    assert_eq!(learned(&log, &pi, &untested).len(), list.len());
}
