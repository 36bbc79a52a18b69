//! `pii doctor --ssh DEST:PATH`: the pre-flight checklist. Each line is `✓` (fine), `!` (works,
//! but something is missing that some of pi needs) or `✗` (pi will not work as expected) followed
//! by `fix:` lines. Exit code 1 when any line is `✗`.
//!
//! It connects exactly like `pii --ssh` (same bootstrap, so a missing agent is installed), says
//! `hello` with the remote home as the project (the project itself may be what is broken), then
//! runs one POSIX sh script on the remote that inspects the project, and reads local facts
//! (pi's package.json and the node it needs, whether the pair is tested, `ssh -G`). pi itself is
//! never started.

use crate::pi::{self, PI_PACKAGE};
use crate::{config, install, launch, session, ssh};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, Instant};

#[derive(clap::Args, Debug)]
pub struct DoctorArgs {
    /// Remote project: DEST:PATH, as for `pii --ssh`.
    #[arg(long, value_name = "DEST:PATH")]
    ssh: String,
    #[command(flatten)]
    ssh_flags: ssh::SshFlags,
    #[command(flatten)]
    tools: launch::ToolFlags,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mark {
    Ok,
    Warn,
    Fail,
}

/// The checklist, printed as it grows.
#[derive(Default)]
struct Report {
    failed: usize,
    warned: usize,
}

impl Report {
    fn line(&mut self, mark: Mark, what: impl AsRef<str>, fix: &[String]) {
        let m = match mark {
            Mark::Ok => "✓",
            Mark::Warn => "!",
            Mark::Fail => {
                self.failed += 1;
                "✗"
            }
        };
        if mark == Mark::Warn {
            self.warned += 1;
        }
        println!("{m} {}", what.as_ref());
        for f in fix {
            println!("    fix: {f}");
        }
    }
    fn ok(&mut self, what: impl AsRef<str>) {
        self.line(Mark::Ok, what, &[]);
    }
    fn fail(&mut self, what: impl AsRef<str>, fix: impl Into<String>) {
        self.line(Mark::Fail, what, &[fix.into()]);
    }
    fn warn(&mut self, what: impl AsRef<str>, fix: impl Into<String>) {
        self.line(Mark::Warn, what, &[fix.into()]);
    }
}

pub fn main(args: DoctorArgs, rt: &tokio::runtime::Runtime) -> std::process::ExitCode {
    let mut report = Report::default();
    rt.block_on(run(&args, &mut report));
    if report.failed == 0 {
        println!(
            "all checks passed{}",
            if report.warned > 0 {
                format!(" ({} warning(s))", report.warned)
            } else {
                String::new()
            }
        );
        std::process::ExitCode::SUCCESS
    } else {
        println!("{} check(s) failed", report.failed);
        std::process::ExitCode::from(1)
    }
}

/// `ssh -G` with the options pii would pass: the effective keep-alive settings, lowercased keys.
async fn effective_ssh(
    opts: &ssh::SshOptions,
    dest: &str,
) -> Result<BTreeMap<String, String>, String> {
    let preset = ssh::preset_keys(opts, dest).await;
    let mut args = ssh::argv(opts, dest, "true", &preset);
    args.pop(); // the remote command
    args.remove(0); // -T (effective_config puts -G first)
    ssh::effective_config(args).await
}

/// The remote inspection (POSIX sh). `$1` = the project path as given after `:`, `$2` = the
/// agent's pid. Prints `key=value` lines; `context=` repeats, root first, like pi's prompt.
const REMOTE_SCRIPT: &str = r#"
p="$1"
case "$p" in
  ''|'~') p="$HOME" ;;
  '~/'*) p="$HOME/${p#\~/}" ;;
  /*) ;;
  *) p="$HOME/$p" ;;
esac
echo "path=$p"
echo "agent_exe=$(readlink "/proc/$2/exe" 2>/dev/null)"
v() { "$@" 2>/dev/null | head -n 1; }
command -v git >/dev/null 2>&1 && echo "git=$(v git --version)"
command -v bash >/dev/null 2>&1 && echo "bash=$(v bash --version)"
command -v rg >/dev/null 2>&1 && echo "rg=$(v rg --version)"
command -v fd >/dev/null 2>&1 && echo "fd=$(v fd --version)"
command -v fdfind >/dev/null 2>&1 && echo "fdfind=$(v fdfind --version)"
if [ -e "$p" ]; then echo exists=1; else echo exists=0; exit 0; fi
if [ -d "$p" ]; then echo dir=1; else echo dir=0; exit 0; fi
real="$(cd "$p" 2>/dev/null && pwd -P)" || { echo enter=0; exit 0; }
echo "real=$real"
t="$real/.pi-bridge-doctor.$$"
if (: > "$t") 2>/dev/null; then rm -f "$t"; echo writable=1; else echo writable=0; fi
if command -v git >/dev/null 2>&1; then
  if gd="$(cd "$real" && git rev-parse --absolute-git-dir 2>&1)"; then
    echo "gitdir=$gd"
    b="$(cd "$real" && git symbolic-ref --short -q HEAD 2>/dev/null)" || b=detached
    echo "branch=$b"
  else
    echo "giterr=$(printf '%s\n' "$gd" | head -n 1)"
  fi
fi
d="$real"; dotgit=
while :; do
  if [ -z "$dotgit" ] && [ -e "$d/.git" ]; then dotgit="$d/.git"; fi
  [ "$d" = / ] && break
  d="$(dirname "$d")"
done
echo "dotgit=$dotgit"
d="$real"; found=
while :; do
  for n in AGENTS.md AGENTS.MD CLAUDE.md CLAUDE.MD; do
    if [ -f "$d/$n" ]; then found="$d/$n
$found"; break; fi
  done
  [ "$d" = / ] && break
  d="$(dirname "$d")"
done
printf '%s' "$found" | while IFS= read -r f; do [ -n "$f" ] && echo "context=$f"; done
exit 0
"#;

async fn run(args: &DoctorArgs, r: &mut Report) {
    println!("pii doctor {}: {}", protocol::VERSION, args.ssh);

    // Local side.
    let cwd = std::env::current_dir().unwrap_or_else(|_| PathBuf::from("."));
    let home = std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from);
    let cfg = match config::load(&cwd, home.as_deref()) {
        Ok(c) => {
            match &c.source {
                Some(f) => r.ok(format!("config {}", f.display())),
                None => r.ok(format!(
                    "config: none ({} or ~/.config/pi-bridge/config.json; defaults apply)",
                    config::FILE_NAME
                )),
            }
            c
        }
        Err(e) => {
            r.fail(
                format!("config: {e}"),
                "do what the message says (README: Configuration)",
            );
            config::Config::default()
        }
    };
    // pi first: the node it needs comes from its package.json.
    let package = match launch::find_pi(args.tools.pi.as_deref()) {
        Ok(cli) => match pi::Package::of(&cli) {
            Some(p) if p.is_pi() => {
                let needs = p
                    .engines_node
                    .as_ref()
                    .map(|e| format!(" (needs Node {e})"))
                    .unwrap_or_default();
                r.ok(format!(
                    "pi {} {} at {}{needs}",
                    p.name,
                    p.version,
                    cli.display()
                ));
                Some(p)
            }
            Some(p) => {
                r.warn(
                    format!("{} at {} is not pi (any Node script runs, but this is not the coding agent)", p.label(), cli.display()),
                    format!("point --pi at the cli.js of an installed {PI_PACKAGE}"),
                );
                Some(p)
            }
            None => {
                r.warn(
                    format!(
                        "pi at {}: no package.json above it, version unknown",
                        cli.display()
                    ),
                    format!("point --pi at the cli.js inside an installed {PI_PACKAGE}"),
                );
                None
            }
        },
        Err(e) => {
            r.fail(
                format!("{e}"),
                format!("npm install -g {PI_PACKAGE}, or pass --pi PATH/TO/cli.js / set PII_PI"),
            );
            None
        }
    };
    let needs = package
        .as_ref()
        .and_then(|p| Some((p.label(), p.engines_node.clone()?)));
    match launch::find_node(args.tools.node.as_deref()).and_then(|n| launch::node_version(&n)) {
        Ok(n) => {
            let at = format!("node {} at {}", n.text, n.path.display());
            match (launch::check_node(&n, package.as_ref()), &needs) {
                (Ok(()), Some((pi, range))) => r.ok(format!("{at} ({pi} needs {range})")),
                (Ok(()), None) => r.ok(at),
                (Err(_), needs) => {
                    let (pi, range) = needs.clone().unwrap_or_default();
                    r.fail(
                        format!("{at} is too old: {pi} needs Node.js {range}"),
                        format!("install Node.js {range} (https://nodejs.org), or pass --node PATH / set PII_NODE"),
                    )
                }
            }
            match pi::untested(package.as_ref(), &n.text, n.version) {
                None => r.ok(format!(
                    "tested pair: {}Node {} (pi-bridge's test matrix: {})",
                    package
                        .as_ref()
                        .filter(|p| p.is_pi())
                        .map(|p| format!("pi {} on ", p.version))
                        .unwrap_or_default(),
                    n.version.0,
                    pi::tested_summary()
                )),
                Some(what) => r.warn(
                    format!("untested: {what}"),
                    "it should work; when something misbehaves, a tested pair tells whether pi-bridge is the cause",
                ),
            }
        }
        Err(e) => r.fail(
            format!("node: {e}"),
            "install Node.js (https://nodejs.org), or pass --node PATH / set PII_NODE",
        ),
    }

    // ssh.
    let (dest, path) = match ssh::parse_target(&args.ssh) {
        Ok(t) => t,
        Err(e) => {
            r.fail(format!("{e}"), "use --ssh DEST:PATH, e.g. user@host:~/app");
            return;
        }
    };
    let opts = args.ssh_flags.options(&cfg.ssh_options);
    match effective_ssh(&opts, &dest).await {
        Ok(g) => {
            let get = |k: &str| g.get(k).cloned().unwrap_or_else(|| "?".into());
            let (interval, count) = (get("serveraliveinterval"), get("serveralivecountmax"));
            let what = format!(
                "ssh keep-alive: ServerAliveInterval {interval}, ServerAliveCountMax {count}, ConnectTimeout {}{}",
                get("connecttimeout"),
                g.get("proxyjump").map(|j| format!(", ProxyJump {j}")).unwrap_or_default()
            );
            if interval == "0" {
                r.fail(
                    format!("{what}: ssh itself never notices a dead link"),
                    "drop ServerAliveInterval 0 from your ssh config / -o (pii's default is 30)",
                );
            } else {
                r.ok(what);
            }
        }
        Err(e) => r.fail(
            format!("ssh -G {dest}: {e}"),
            "check the ssh config file and options (ssh -G must accept them)",
        ),
    }

    // The master pii keeps (as `pii` would): doctor's own connection uses it.
    let master = match crate::master::prepare(
        &opts,
        &dest,
        cfg.control_persist.as_deref(),
        crate::master_dir().as_deref(),
    )
    .await
    {
        Ok((_, m)) => m,
        Err(e) => {
            r.fail(
                format!("{e}"),
                "remove that directory (pii recreates it 0700) or set \"controlPersist\": false",
            );
            return;
        }
    };
    let mut with = opts.clone();
    with.options.splice(0..0, master.options());
    let started = Instant::now();
    let link = install::connect_ssh(&with, &dest, args.tools.agent.as_deref(), false, None).await;
    let took = started.elapsed();
    let (mut child, reader, _tail) = match link {
        Ok(l) => l,
        Err(e) => {
            let fix = match &e {
                install::InstallError::NoAgentForArch { target, .. } => format!(
                    "build an agent for the remote (cargo build --release -p pi-bridge-agent --target {target}) and pass --agent"
                ),
                _ => format!(
                    "check that `ssh{} {dest} true` works from this shell (keys, host keys, ProxyJump)",
                    args.ssh_flags
                        .ssh_config
                        .as_ref()
                        .map(|f| format!(" -F {}", f.display()))
                        .unwrap_or_default()
                ),
            };
            r.fail(format!("ssh {dest}: {e}"), fix);
            return;
        }
    };
    r.ok(format!(
        "ssh {dest} reachable: the agent answered {} ms after ssh started (connect, login, agent start)",
        took.as_millis()
    ));

    let stdin = child.stdin.take().expect("piped");
    let timing = session::Timing::new(Duration::from_millis(cfg.rpc_timeout_ms));
    let sess = session::Session::start(reader, stdin, None, timing);
    remote_checks(r, &sess, &path).await;
    match &master {
        crate::master::Master::Ours { socket, .. } => {
            match crate::master::check(socket, &dest).await {
                Some(pid) => r.ok(format!("{} (running, pid {pid})", master.describe())),
                None => r.warn(
                    format!("{}: no master answers there", master.describe()),
                    "ssh could not start one (see ssh -v); pii runs without it",
                ),
            }
        }
        crate::master::Master::Cannot(_) => r.warn(
            master.describe(),
            "set XDG_RUNTIME_DIR (or XDG_CACHE_HOME) to a short private directory",
        ),
        _ => r.ok(master.describe()),
    }
    sess.close();
    let _ = tokio::time::timeout(Duration::from_secs(3), child.wait()).await;
}

async fn remote_checks(r: &mut Report, sess: &session::Session, path: &str) {
    let hello = match sess.hello("", None, None).await {
        Ok(h) => h,
        Err(e) => {
            r.fail(
                format!("agent handshake: {e}"),
                "run with PII_LOG=debug pii --ssh … --verbose and read the log",
            );
            return;
        }
    };
    let f = &hello.facts;
    let uploaded = install::UPLOADED_BYTES.load(std::sync::atomic::Ordering::Relaxed);
    let spawn = protocol::proc::SpawnParams {
        file: "sh".into(),
        args: vec![
            "-c".into(),
            REMOTE_SCRIPT.into(),
            "pii-doctor".into(),
            path.into(),
            f.agent_pid.to_string(),
        ],
        argv0: None,
        cwd: f.home.clone(),
        env: Default::default(),
        unset: vec![],
        stdin: false,
        stdout: true,
        stderr: true,
    };
    let run = protocol::proc::RunParams {
        spawn,
        input: None,
        timeout_ms: Some(30_000),
        kill_signal: "SIGTERM".into(),
        max_buffer: None,
    };
    let out = sess.request::<protocol::methods::Run>(&run).await;
    let kv: Vec<(String, String)> = match out {
        Ok(o) if o.code == Some(0) => String::from_utf8_lossy(&o.stdout.0)
            .lines()
            .filter_map(|l| {
                l.split_once('=')
                    .map(|(k, v)| (k.to_string(), v.to_string()))
            })
            .collect(),
        Ok(o) => {
            r.fail(
                format!(
                    "the remote inspection script failed ({:?}): {}",
                    o.code,
                    String::from_utf8_lossy(&o.stderr.0).trim()
                ),
                "the remote needs a POSIX sh on the login PATH",
            );
            return;
        }
        Err(e) => {
            r.fail(
                format!("running sh on the remote: {e}"),
                "the remote needs a POSIX sh on the login PATH",
            );
            return;
        }
    };
    let get = |k: &str| kv.iter().find(|(key, _)| key == k).map(|(_, v)| v.as_str());
    let agent_at = get("agent_exe")
        .filter(|s| !s.is_empty())
        .unwrap_or("(path unknown)");
    r.ok(format!(
        "agent {} at {agent_at} ({})",
        hello.agent_version,
        if uploaded > 0 {
            format!("installed now: {uploaded} bytes uploaded")
        } else {
            "already installed".to_string()
        }
    ));
    r.ok(format!(
        "remote {} {} ({}), user {}, login shell {}",
        f.os, f.arch, f.hostname, f.user, f.shell
    ));
    let path_fix = format!(
        "commands run with the remote login PATH ({}): install it, or add its directory to PATH in the login shell's profile (~/.profile, ~/.bash_profile)",
        f.login_path
    );
    match get("git") {
        Some(v) => r.ok(format!("git: {v}")),
        None => r.fail(
            "git: not found on the remote",
            format!("install git; {path_fix}"),
        ),
    }
    match get("bash") {
        Some(v) => r.ok(format!("bash: {v}")),
        None => r.fail(
            "bash: not found on the remote (pi's bash tool and !commands need it)",
            format!("install bash; {path_fix}"),
        ),
    }
    match get("rg") {
        Some(v) => r.ok(format!("rg: {v}")),
        None => r.warn(
            "rg: not found on the remote (only pi's grep tool needs it)",
            format!("install ripgrep; {path_fix}"),
        ),
    }
    match (get("fd"), get("fdfind")) {
        (Some(v), _) => r.ok(format!("fd: {v}")),
        (None, Some(v)) => r.warn(
            format!("fd: only `fdfind` ({v}); pi's find tool and @-completion run `fd`"),
            "symlink it: ln -s \"$(command -v fdfind)\" ~/.local/bin/fd (with ~/.local/bin on the login PATH)",
        ),
        (None, None) => r.warn(
            "fd: not found on the remote (pi's find tool and @-completion need it)",
            format!("install fd-find; {path_fix}"),
        ),
    }

    let p = get("path").unwrap_or(path).to_string();
    if get("exists") != Some("1") {
        r.fail(
            format!("project directory {p} does not exist on the remote"),
            format!(
                "create it (mkdir -p {p} on the remote) or correct the PATH after ':' in --ssh"
            ),
        );
        return;
    }
    if get("dir") != Some("1") {
        r.fail(
            format!("project {p} is not a directory"),
            "point --ssh at the project's directory",
        );
        return;
    }
    let Some(real) = get("real") else {
        r.fail(
            format!("project directory {p} cannot be entered"),
            format!("give {} search permission on it (chmod u+x {p})", f.user),
        );
        return;
    };
    r.ok(format!("project directory {real} exists"));
    if get("writable") == Some("1") {
        r.ok("project directory is writable");
    } else {
        r.fail(
            format!(
                "project directory {real} is not writable by {}: pi cannot create files there",
                f.user
            ),
            format!(
                "on the remote: chmod u+w {real} (or chown {} {real})",
                f.user
            ),
        );
    }
    match (get("gitdir"), get("dotgit").filter(|s| !s.is_empty())) {
        (Some(gd), _) => r.ok(format!("git repository: {gd}")),
        (None, Some(dg)) => r.fail(
            format!(
                "{dg} is not a valid git repository: {}",
                get("giterr").unwrap_or("git rev-parse failed")
            ),
            "repair or remove it on the remote (git fsck; or re-clone)",
        ),
        (None, None) => r.fail(
            format!(
                "no .git in {real} or above: pi's footer shows no branch and git commands fail"
            ),
            format!("run `git init` in {real} on the remote, or point --ssh at the repository"),
        ),
    }
    if let Some(b) = get("branch") {
        r.ok(format!("git branch pi will show: {b}"));
    }
    let contexts: Vec<&str> = kv
        .iter()
        .filter(|(k, _)| k == "context")
        .map(|(_, v)| v.as_str())
        .collect();
    if contexts.is_empty() {
        r.ok(format!(
            "AGENTS.md: none in {real} or its ancestors (optional)"
        ));
    } else {
        r.ok(format!(
            "AGENTS.md pi will load (in this order): {}",
            contexts.join(", ")
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ssh_g_output() {
        let g = ssh::parse_effective("user u\nServerAliveInterval 30\nproxyjump a@b:22\n");
        assert_eq!(g["serveraliveinterval"], "30");
        assert_eq!(g["proxyjump"], "a@b:22");
    }
}
