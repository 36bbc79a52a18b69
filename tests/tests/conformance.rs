//! The Node conformance suite over ssh: `fixtures/conformance/cases.cjs` (one case table, ~670
//! fs and child_process cases, from stat to descriptors, permissions, FileHandle, streams and
//! glob) runs once as plain node on a local copy of the project and once through `pii --ssh` on
//! the real sshd fixture, whose copy the test process cannot see. The two reports are compared
//! field by field by `fixtures/conformance/compare.cjs`, which prints
//! `conformance: N passed, M failed`; any failure fails the test.
//!
//! The plain run happens under the same conditions as the remote one: as the remote user
//! (uid/gid, permission checks: the 0444 and 0000 cases mean something only here, as root can
//! write anything), on a fresh tmpfs (directory sizes, block counts), from a copy made the same
//! way (`cp -a`, `chown -R`), with the cell's node binary, the one pii runs (a case compares
//! `process.version` and the binary). The `pii --local` mode runs in preload/test/pii.test.cjs.

use std::path::Path;
use std::process::{Command, Stdio};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{paths, Sshd};

fn conformance(file: &str) -> std::path::PathBuf {
    paths::fixture("conformance").join(file)
}

/// Runs run.cjs as plain node, as `user`, on a tmpfs copy of `project` in a private mount namespace.
fn plain_run(project: &Path, mount: &Path, sshd: &Sshd) -> Vec<u8> {
    let out = Command::new("unshare")
        .args(["--mount", "--propagation", "private", "--", "sh", "-c"])
        .arg(
            r#"set -e
mount -t tmpfs -o mode=0755 conformance-plain "$D"
cp -a "$SRC/." "$D/"
chown -R "$U:" "$D"
cd "$D"
exec runuser -u "$U" -- env -i HOME="$H" USER="$U" LOGNAME="$U" SHELL=/bin/bash \
  PATH="$NODE_DIR:/usr/local/bin:/usr/bin:/bin" LANG=C.UTF-8 PII_PROBE=1 node "$RUN""#,
        )
        .env("D", mount)
        .env("SRC", project)
        .env("U", sshd.user())
        .env("H", sshd.remote_home())
        .env("RUN", conformance("run.cjs"))
        .env("NODE_DIR", paths::node().parent().unwrap())
        .stdin(Stdio::null())
        .output()
        .expect("run unshare");
    assert!(
        out.status.success(),
        "plain run failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[test]
fn node_conformance_over_ssh() {
    let dir = tempfile::Builder::new()
        .prefix("pi-bridge-conformance-")
        .tempdir()
        .unwrap();
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    // Two identical sources: copying one updates its atimes, which the other copy must not see.
    let project = dir.path().join("project");
    let plain_source = dir.path().join("plain-source");
    for d in [&project, &plain_source] {
        let populated = Command::new(paths::node())
            .arg(conformance("populate.cjs"))
            .arg(d)
            .status()
            .expect("run node populate.cjs");
        assert!(populated.success(), "populate.cjs failed");
    }

    let sshd = Sshd::builder().project_fixture(&project).no_git().start();
    assert!(
        !Path::new(sshd.project()).join("a.txt").exists(),
        "the remote project must be invisible locally"
    );

    let mount = dir.path().join("plain");
    std::fs::create_dir(&mount).unwrap();
    let plain = plain_run(&plain_source, &mount, &sshd);

    let log = dir.path().join("pii.log");
    let mut cmd = pii_ssh(&sshd, &log, &conformance("run.cjs"), &[], &[]);
    cmd.env("PII_PROBE", "1").env("CONFORMANCE_TIMES", "1");
    let bridged = cmd.output().expect("run pii --ssh");
    assert_success("pii --ssh running the conformance cases", &bridged, &log);
    eprintln!("{}", String::from_utf8_lossy(&bridged.stderr));

    let plain_file = dir.path().join("plain.out");
    let bridged_file = dir.path().join("bridged.out");
    std::fs::write(&plain_file, &plain).unwrap();
    std::fs::write(&bridged_file, &bridged.stdout).unwrap();
    let cmp = Command::new(paths::node())
        .arg(conformance("compare.cjs"))
        .arg("ssh")
        .arg(&plain_file)
        .arg(&bridged_file)
        .output()
        .expect("run node compare.cjs");
    let report = String::from_utf8_lossy(&cmp.stdout);
    // The plain line CI logs show: `conformance: N passed, M failed`.
    println!("{report}");
    assert!(
        report.contains("conformance: ") && report.contains(" passed, "),
        "no summary from compare.cjs: {report}\n{}",
        String::from_utf8_lossy(&cmp.stderr)
    );
    assert!(
        cmp.status.success(),
        "conformance over ssh failed:\n{report}"
    );
}
