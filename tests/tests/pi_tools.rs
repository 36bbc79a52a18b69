//! pi's seven tools (read, bash, edit, write, grep, find, ls) through `pii --ssh`, each once, on
//! a real sshd whose project the test process cannot see; and grep on a remote without `rg`.
//!
//! rg and fd: pi looks for `<PI_CODING_AGENT_DIR>/bin/rg` (a LOCAL path) first, else probes
//! `rg --version` / `fd --version` / `fdfind --version` on PATH. Through the bridge a local
//! absolute helper path runs the remote binary of that name, and the probes run on the remote.
//! Here the local agent dir holds fake `bin/rg` and `bin/fd` scripts that would drop a marker
//! file: the markers must never appear while grep/find return remote matches.
//!
//! Debian 12's fd is `fdfind` 8.6, which rejects the `--no-require-git` pi 0.73 passes (pi 1.x
//! passes it only outside a git repository). The bridge does
//! not rewrite pi's arguments; the remote host needs an `fd` that accepts them. The fixture does
//! what README's troubleshooting suggests: a `~/.local/bin/fd` wrapper on the remote login PATH
//! that drops `--no-require-git` (fd 8.6 applies .gitignore inside git repositories anyway) and
//! execs `fdfind`.

use std::path::Path;

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::{json, Value};

const WORD: &str = "zephyrquill";
const NEEDLE: &str = "remote-only-dir/inner/needle-remote-7f3a.txt";
const NEEDLE_TEXT: &str = "the zephyrquill nests only on the remote\n";
const LISTED: &str = "listed-remote-entry-c41e.md";
const WRITTEN: &str = "out/written-by-pi.txt";
const WRITTEN_TEXT: &str = "written by pi's write tool\nbytes: ✓ tab\tend\n";

const FD_WRAPPER: &str = r#"#!/bin/sh
# fd for Debian's fdfind 8.6, which rejects --no-require-git (fd >= 8.7 has it).
for a; do shift; [ "$a" = --no-require-git ] || set -- "$@" "$a"; done
exec fdfind "$@"
"#;

/// Remote-only content for the tools to find.
fn seed_remote(sshd: &Sshd) {
    sshd.run_remote_ok("mkdir -p remote-only-dir/inner ~/.local/bin");
    sshd.write_remote(NEEDLE, NEEDLE_TEXT.as_bytes());
    sshd.write_remote(&format!("remote-only-dir/{LISTED}"), b"status: listed\n");
}

/// A fake local helper binary that leaves `marker` behind if it is ever run locally.
fn fake_local_helper(agent_dir: &Path, name: &str) -> std::path::PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let bin = agent_dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let marker = agent_dir.join(format!("LOCAL-{name}-RAN"));
    let script = bin.join(name);
    std::fs::write(
        &script,
        format!(
            "#!/bin/sh\necho \"$@\" > '{}'\necho 'local {name} ran' >&2\nexit 3\n",
            marker.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    marker
}

/// Runs pi with `--tools read,bash,edit,write,grep,find,ls` and `script`; returns the tool
/// results of the last request, in order.
fn run_pi(
    sshd: &Sshd,
    script: Value,
    prepare: impl FnOnce(&Path) -> Vec<std::path::PathBuf>,
) -> (Vec<String>, Vec<std::path::PathBuf>) {
    let steps = script.as_array().unwrap().len();
    let llm = FakeLlm::start(script);
    let (agent_dir, env) = pi_env(&llm);
    let markers = prepare(agent_dir.path());
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut args = vec![
        "-p",
        "use the tools",
        "--tools",
        "read,bash,edit,write,grep,find,ls",
    ];
    args.extend(PI_ARGS);
    let mut cmd = pii_ssh(sshd, &log, &paths::pi_cli(), &[], &args);
    cmd.envs(env);
    let out = cmd.output().expect("run pii");
    assert_success("pii running pi", &out, &log);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("TOOLS-DONE"),
        "no final answer: {}\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let requests = llm.requests();
    assert_eq!(requests.len(), steps, "one request per step: {requests:#?}");
    let results = llm::tool_results(requests.last().unwrap());
    assert_eq!(results.len(), steps - 1, "{results:#?}");
    // The markers must be checked while the agent dir still exists.
    let ran: Vec<_> = markers.iter().filter(|m| m.exists()).cloned().collect();
    drop(agent_dir);
    (results, ran)
}

#[test]
fn seven_tools_work_on_the_remote() {
    let sshd = Sshd::start();
    let project = sshd.project().to_string();
    seed_remote(&sshd);
    sshd.write_remote(
        &format!("{}/.local/bin/fd", sshd.remote_home()),
        FD_WRAPPER.as_bytes(),
    );
    sshd.run_remote_ok(
        "chmod 755 ~/.local/bin/fd && printf '%s\\n' 'PATH=\"$HOME/.local/bin:$PATH\"' > ~/.profile",
    );
    assert!(
        !Path::new(&project).join(NEEDLE).exists(),
        "the remote project must be invisible locally"
    );

    let script = json!([
        llm::tool("read", json!({"path": NEEDLE})),
        llm::tool(
            "bash",
            json!({"command": "echo BASH-OUT; pwd; cat remote-only-dir/inner/*.txt"})
        ),
        llm::tool("grep", json!({"pattern": WORD})),
        llm::tool("find", json!({"pattern": "needle-remote-*.txt"})),
        llm::tool("ls", json!({"path": "remote-only-dir"})),
        llm::tool("write", json!({"path": WRITTEN, "content": WRITTEN_TEXT})),
        llm::tool(
            "edit",
            json!({"path": format!("remote-only-dir/{LISTED}"),
                   "edits": [{"oldText": "status: listed", "newText": "status: edited by pi"}]})
        ),
        llm::text("TOOLS-DONE"),
    ]);
    let (r, ran) = run_pi(&sshd, script, |agent_dir| {
        vec![
            fake_local_helper(agent_dir, "rg"),
            fake_local_helper(agent_dir, "fd"),
        ]
    });
    for (i, res) in r.iter().enumerate() {
        eprintln!("tool result {i}: {res}");
    }
    assert!(
        ran.is_empty(),
        "pi's local helper binaries ran locally: {ran:?}"
    );
    assert!(r[0].contains(NEEDLE_TEXT.trim()), "read: {}", r[0]);
    assert!(
        r[1].contains("BASH-OUT") && r[1].contains(&project) && r[1].contains(NEEDLE_TEXT.trim()),
        "bash: {}",
        r[1]
    );
    assert!(
        r[2].contains("needle-remote-7f3a.txt") && r[2].contains(NEEDLE_TEXT.trim()),
        "grep (remote rg): {}",
        r[2]
    );
    assert!(r[3].contains(NEEDLE), "find (remote fd): {}", r[3]);
    assert!(
        r[4].contains("inner/") && r[4].contains(LISTED),
        "ls: {}",
        r[4]
    );
    assert!(
        r[5].contains("Successfully") || r[5].to_lowercase().contains("wrote"),
        "write: {}",
        r[5]
    );
    assert!(
        r[6].contains("Successfully") || r[6].to_lowercase().contains("edit"),
        "edit: {}",
        r[6]
    );
    assert_eq!(sshd.read_remote(WRITTEN), WRITTEN_TEXT.as_bytes());
    assert_eq!(
        sshd.read_remote(&format!("remote-only-dir/{LISTED}")),
        b"status: edited by pi\n"
    );
    assert!(
        !Path::new(&project).join(WRITTEN).exists(),
        "write leaked locally"
    );
}

#[test]
fn grep_names_rg_when_the_remote_has_none() {
    let sshd = Sshd::start();
    seed_remote(&sshd);
    // A login PATH holding everything of /usr/local/bin and /usr/bin (Debian 12: /bin is /usr/bin)
    // except rg. No ~/.local/bin/fd either: pi 0.73 then finds Debian's fdfind, which rejects
    // its --no-require-git, and the find tool reports fdfind's own error (why README says to add
    // fd); pi 1.x probes `fdfind` too and, inside a git repository, does not pass that flag.
    sshd.run_remote_ok(
        r#"mkdir ~/no-rg-bin && for f in /usr/local/bin/* /usr/bin/*; do
             n=${f##*/}; [ "$n" = rg ] || [ -e ~/no-rg-bin/"$n" ] || ln -s "$f" ~/no-rg-bin/"$n"; done
           printf '%s\n' 'PATH="$HOME/no-rg-bin"' > ~/.profile
           test ! -e ~/no-rg-bin/rg && test -x /usr/bin/rg"#,
    );
    assert!(
        which("rg"),
        "this test needs rg on the LOCAL PATH, to show the local one is not used"
    );
    let script = json!([
        llm::tool("grep", json!({"pattern": WORD})),
        llm::tool("find", json!({"pattern": "needle-remote-*.txt"})),
        llm::text("TOOLS-DONE"),
    ]);
    let (r, _) = run_pi(&sshd, script, |_| vec![]);
    eprintln!(
        "grep without remote rg: {}\nfind with only fdfind: {}",
        r[0], r[1]
    );
    assert!(
        r[0].contains("ripgrep (rg) is not available"),
        "grep must name the missing tool: {}",
        r[0]
    );
    assert!(!r[0].contains(NEEDLE_TEXT.trim()), "grep found: {}", r[0]);
    if paths::pi().major() == 0 {
        assert!(
            r[1].contains("--no-require-git"),
            "find with Debian's fdfind 8.6: {}",
            r[1]
        );
    } else {
        // pi 1.x runs `fdfind` itself and passes --no-require-git only outside a git repository.
        assert!(
            r[1].contains(NEEDLE),
            "find with the remote's fdfind: {}",
            r[1]
        );
    }
}

fn which(name: &str) -> bool {
    std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).any(|d| d.join(name).is_file()))
        .unwrap_or(false)
}
