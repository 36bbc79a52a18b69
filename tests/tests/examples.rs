//! `pii --pi some-cli.js`: any Node CLI runs through the bridge, not only pi. The README's
//! example script, run against the ssh fixture's project, which the test process cannot see.

use std::path::Path;

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{paths, Sshd};

#[test]
fn list_files_example_sees_the_remote_project() {
    let sshd = Sshd::start();
    assert!(
        !Path::new(sshd.project()).exists(),
        "the project must be remote-only"
    );
    let script = paths::fixture("examples").join("list-files.js");
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let out = pii_ssh(&sshd, &log, &script, &[], &["--sizes"])
        .output()
        .expect("run pii");
    assert_success("pii --pi list-files.js", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let remote_host = sshd.run_remote_ok("uname -n");
    let size = |f: &str| {
        std::fs::metadata(paths::fixture("project").join(f))
            .unwrap()
            .len()
    };
    let want = format!(
        "cwd: {}\nhost: {}\n.git/\n.gitignore {}\nAGENTS.md {}\nnotes.md {}\nsrc/\n",
        sshd.project(),
        remote_host.trim(),
        size(".gitignore"),
        size("AGENTS.md"),
        size("notes.md"),
    );
    assert_eq!(stdout, want);
}
