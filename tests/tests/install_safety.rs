//! Agent install on a shared host, over the real sshd: two pii sessions starting at once
//! against a fresh remote home both succeed, and what is left is exactly one installed agent in
//! 0700 directories owned by the user, no temp files, nothing group- or world-writable.

use std::path::PathBuf;

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::Sshd;

#[test]
fn two_concurrent_first_installs_leave_one_private_agent() {
    let sshd = Sshd::start();
    assert!(
        !sshd.remote_exists(&format!("{}/.cache/pi-bridge", sshd.remote_home())),
        "the fixture's remote home is not fresh"
    );
    let dir = tempfile::tempdir().unwrap();
    let script = dir.path().join("quick.cjs");
    std::fs::write(
        &script,
        "console.log(require('fs').readFileSync('src/hello.txt', 'utf8'));\n",
    )
    .unwrap();
    let logs: Vec<PathBuf> = (0..2)
        .map(|i| dir.path().join(format!("pii-{i}.log")))
        .collect();
    let children: Vec<_> = logs
        .iter()
        .map(|log| pii_ssh(&sshd, log, &script, &[], &[]).spawn().unwrap())
        .collect();
    for (child, log) in children.into_iter().zip(&logs) {
        let out = child.wait_with_output().unwrap();
        assert_success("a concurrent first start", &out, log);
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("{}\n", pi_bridge_tests::PROJECT_HELLO)
        );
    }
    let uploads = logs
        .iter()
        .filter(|l| {
            std::fs::read_to_string(l)
                .unwrap_or_default()
                .contains("uploading")
        })
        .count();
    let listing = sshd.run_remote_ok(
        "cd ~/.cache/pi-bridge && find . -printf '%M %u %p\\n' | sort && \
         echo writable: && find ~/.cache/pi-bridge -perm /022 && echo end",
    );
    let agents: Vec<&str> = listing
        .lines()
        .filter(|l| l.ends_with("/pi-bridge-agent"))
        .collect();
    assert_eq!(agents.len(), 1, "{listing}");
    assert!(agents[0].starts_with("-rwx------ "), "{listing}");
    assert!(
        !listing.contains(".upload"),
        "temp files left behind: {listing}"
    );
    for l in listing
        .lines()
        .filter(|l| l.contains("./agent") && l.starts_with('d'))
    {
        assert!(l.starts_with("drwx------ "), "not 0700: {l}\n{listing}");
    }
    let user = sshd.user().to_string();
    assert!(
        listing
            .lines()
            .filter(|l| l.starts_with('d') || l.starts_with('-'))
            .all(|l| l.split(' ').nth(1) == Some(&user)),
        "{listing}"
    );
    let writable = listing
        .split("writable:\n")
        .nth(1)
        .unwrap_or("")
        .trim_end_matches("end\n")
        .trim();
    assert!(
        writable.is_empty(),
        "group/world-writable paths: {writable}"
    );
    println!(
        "install safety: 2 concurrent first starts, both ok ({uploads} uploaded); remote cache: \
         {} agent binary, 0 temp files, dirs 0700, 0 group/world-writable paths",
        agents.len()
    );
}
