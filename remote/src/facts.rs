//! What the agent knows of its host (the `hello` handler, in `methods`, reports it).
//!
//! The probe runs once per connection, started as soon as the session starts: uname, the passwd
//! entry, the login environment (captured ONCE through `$SHELL -lc`, after a random marker line
//! so rc-file noise is ignored, within [`LOGIN_TIMEOUT`], else the agent's own environment), then
//! `git --version`, `bash --version` and whether `rg`/`fd` are on the login PATH, concurrently.

use crate::rpc::Failure;
use protocol::Errno;
use std::ffi::{CStr, OsStr, OsString};
use std::os::unix::ffi::OsStringExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

/// How long the login shell may take to print its environment.
pub const LOGIN_TIMEOUT: Duration = Duration::from_secs(3);
/// How long `git --version` and friends may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(3);

/// The login environment processes start from.
#[derive(Debug, Clone)]
pub struct LoginEnv {
    pub vars: Vec<(OsString, OsString)>,
    pub path: String,
}

impl LoginEnv {
    /// Find `name` (no `/`) on the login PATH: the first executable regular file.
    pub fn which(&self, name: &str) -> Option<PathBuf> {
        which_in(&self.path, name)
    }
}

pub fn which_in(path_var: &str, name: &str) -> Option<PathBuf> {
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let cand = Path::new(dir).join(name);
        if let Ok(md) = std::fs::metadata(&cand) {
            if md.is_file() && is_executable(&cand) {
                return Some(cand);
            }
        }
    }
    None
}

fn is_executable(p: &Path) -> bool {
    rustix::fs::access(p, rustix::fs::Access::EXEC_OK).is_ok()
}

/// Everything about the host that does not depend on `hello`'s params.
#[derive(Debug, Clone)]
pub struct Probe {
    pub os: String,
    pub arch: String,
    pub hostname: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub shell: String,
    pub login: Arc<LoginEnv>,
    pub git_version: Option<String>,
    pub bash_version: Option<String>,
    pub has_rg: bool,
    pub has_fd: bool,
}

struct Passwd {
    name: String,
    dir: String,
    shell: String,
}

fn passwd(uid: u32) -> Option<Passwd> {
    let mut buf = vec![0u8; 16 * 1024];
    // SAFETY: zeroed passwd is a valid out-parameter; buf outlives the borrowed strings we copy.
    // (No safe wrapper in rustix; nix's User::from_uid would add a dependency for one call.)
    unsafe {
        let mut pw: libc::passwd = std::mem::zeroed();
        let mut result: *mut libc::passwd = std::ptr::null_mut();
        let rc = libc::getpwuid_r(
            uid,
            &mut pw,
            buf.as_mut_ptr().cast(),
            buf.len(),
            &mut result,
        );
        if rc != 0 || result.is_null() {
            return None;
        }
        let s = |p: *const libc::c_char| {
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        Some(Passwd {
            name: s(pw.pw_name),
            dir: s(pw.pw_dir),
            shell: s(pw.pw_shell),
        })
    }
}

fn uname() -> (String, String, String) {
    let u = rustix::system::uname();
    let s = |c: &CStr| c.to_string_lossy().into_owned();
    (
        s(u.sysname()).to_lowercase(),
        s(u.machine()),
        s(u.nodename()),
    )
}

/// Probe the host (never fails: every part has a fallback).
pub async fn probe() -> Probe {
    let started = std::time::Instant::now();
    let (uid, gid) = (
        rustix::process::getuid().as_raw(),
        rustix::process::getgid().as_raw(),
    );
    let (os, arch, hostname) = uname();
    let pw = passwd(uid);
    let env_home = std::env::var("HOME").ok().filter(|h| h.starts_with('/'));
    let home = env_home
        .or_else(|| pw.as_ref().map(|p| p.dir.clone()))
        .unwrap_or_else(|| "/".into());
    let user = pw
        .as_ref()
        .map(|p| p.name.clone())
        .or_else(|| std::env::var("USER").ok())
        .unwrap_or_else(|| uid.to_string());
    let shell = pw
        .as_ref()
        .map(|p| p.shell.clone())
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("SHELL").ok())
        .unwrap_or_else(|| "/bin/sh".into());
    let login = Arc::new(login_env(&shell).await);
    let login_done = started.elapsed();
    let git = tool_version(&login, "git", |out| {
        out.split_whitespace().nth(2).map(str::to_string)
    });
    let bash = tool_version(&login, "bash", |out| {
        let rest = out.lines().next()?.split("version ").nth(1)?;
        let v: String = rest
            .chars()
            .take_while(|c| c.is_ascii_digit() || *c == '.')
            .collect();
        (!v.is_empty()).then_some(v)
    });
    let (git_version, bash_version) = tokio::join!(git, bash);
    tracing::debug!(
        "probe: login environment of {shell} after {login_done:?}, tool versions after {:?}",
        started.elapsed()
    );
    Probe {
        os,
        arch,
        hostname,
        user,
        uid,
        gid,
        home,
        shell,
        has_rg: login.which("rg").is_some(),
        has_fd: login.which("fd").is_some(),
        login,
        git_version,
        bash_version,
    }
}

/// Run `<tool> --version` from the login PATH and parse its output.
async fn tool_version(
    login: &LoginEnv,
    tool: &str,
    parse: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    let prog = login.which(tool)?;
    let mut cmd = tokio::process::Command::new(prog);
    cmd.arg("--version")
        .env_clear()
        .envs(login.vars.iter().map(|(k, v)| (k, v)))
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true);
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .ok()?
        .ok()?;
    parse(&String::from_utf8_lossy(&out.stdout))
}

/// Variables of the login shell's own that make no sense for other processes, and the ones sshd
/// sets for the agent's own ssh session. A command must see what a plain non-interactive
/// `bash -c` on the remote would: bash sources `~/.bashrc` when it believes sshd started it
/// (`SSH_CLIENT`/`SSH2_CLIENT` set, shell level < 2), so every tool result would begin with
/// whatever the rc file prints. `SSH_CONNECTION`, `SSH_TTY` and `SSH_ORIGINAL_COMMAND` describe
/// the agent's link, not the command's. `SSH_AUTH_SOCK` stays: it is how a forwarded agent
/// reaches `git push` (the user's own `ForwardAgent` choice), and no shell reads it.
const DROP_VARS: &[&str] = &[
    "PWD",
    "OLDPWD",
    "SHLVL",
    "_",
    "SSH_CLIENT",
    "SSH2_CLIENT",
    "SSH_CONNECTION",
    "SSH_TTY",
    "SSH_ORIGINAL_COMMAND",
];

/// Capture the login environment through `shell -lc`, or fall back to our own.
async fn login_env(shell: &str) -> LoginEnv {
    let vars = match capture_login_env(shell).await {
        Some(v) => v,
        None => {
            tracing::warn!(
                "could not capture the login environment of {shell}; using the agent's own"
            );
            std::env::vars_os().collect()
        }
    };
    let vars: Vec<(OsString, OsString)> = vars.into_iter().filter(|(k, _)| kept(k)).collect();
    let path = vars
        .iter()
        .find(|(k, _)| k == "PATH")
        .map(|(_, v)| v.to_string_lossy().into_owned())
        .unwrap_or_else(|| "/usr/local/bin:/usr/bin:/bin".into());
    LoginEnv { vars, path }
}

/// Whether a variable of the login environment is passed on to commands (see [`DROP_VARS`]).
fn kept(name: &OsStr) -> bool {
    !DROP_VARS.iter().any(|d| OsStr::new(d) == name)
}

async fn capture_login_env(shell: &str) -> Option<Vec<(OsString, OsString)>> {
    let marker = format!("__PI_BRIDGE_ENV_{:016x}__", rand::random::<u64>());
    let script = format!("echo {marker}; exec env -0");
    let mut cmd = tokio::process::Command::new(shell);
    cmd.arg("-lc")
        .arg(&script)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .process_group(0)
        .kill_on_drop(true);
    let child = cmd.spawn().ok()?;
    let pid = child.id();
    let out = match tokio::time::timeout(LOGIN_TIMEOUT, child.wait_with_output()).await {
        Ok(r) => r.ok()?,
        Err(_) => {
            if let Some(pid) = pid {
                // The group we just created.
                if let Some(pid) = rustix::process::Pid::from_raw(pid as i32) {
                    let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
                }
            }
            return None;
        }
    };
    parse_env_output(&out.stdout, &marker)
}

/// The NUL-separated `KEY=VALUE` list after the marker line.
fn parse_env_output(stdout: &[u8], marker: &str) -> Option<Vec<(OsString, OsString)>> {
    let needle = format!("{marker}\n");
    let start = find(stdout, needle.as_bytes())? + needle.len();
    let vars: Vec<(OsString, OsString)> = stdout[start..]
        .split(|&b| b == 0)
        .filter_map(|kv| {
            let eq = kv.iter().position(|&b| b == b'=')?;
            (eq > 0).then(|| {
                (
                    OsString::from_vec(kv[..eq].to_vec()),
                    OsString::from_vec(kv[eq + 1..].to_vec()),
                )
            })
        })
        .collect();
    (!vars.is_empty()).then_some(vars)
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// `~`, `~/x`, relative and absolute roots, against `home`.
pub fn expand_root(root: &str, home: &str) -> PathBuf {
    let home = Path::new(home);
    if root.is_empty() || root == "~" {
        home.to_path_buf()
    } else if let Some(rest) = root.strip_prefix("~/") {
        home.join(rest)
    } else if root.starts_with('/') {
        PathBuf::from(root)
    } else {
        home.join(root)
    }
}

pub fn canonical_dir(given: &str, expanded: &Path, what: &str) -> Result<PathBuf, Failure> {
    let canon = std::fs::canonicalize(expanded).map_err(|e| {
        Errno::from_io(&e, "realpath", Some(given)).with_detail(format!(
            "the {what} '{}' cannot be used: {e}",
            expanded.display()
        ))
    })?;
    if !canon.is_dir() {
        return Err(Errno::new("ENOTDIR", "realpath", Some(given))
            .with_detail(format!(
                "the {what} '{}' is not a directory",
                canon.display()
            ))
            .into());
    }
    if canon.to_str().is_none() {
        return Err(Errno::new("EINVAL", "realpath", Some(given))
            .with_detail(format!(
                "the {what} '{}' is not valid UTF-8",
                canon.display()
            ))
            .into());
    }
    Ok(canon)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roots_expand_like_ssh_paths() {
        assert_eq!(expand_root("", "/home/u"), PathBuf::from("/home/u"));
        assert_eq!(expand_root("~", "/home/u"), PathBuf::from("/home/u"));
        assert_eq!(
            expand_root("~/app", "/home/u"),
            PathBuf::from("/home/u/app")
        );
        assert_eq!(
            expand_root("app/x", "/home/u"),
            PathBuf::from("/home/u/app/x")
        );
        assert_eq!(
            expand_root("/srv/app", "/home/u"),
            PathBuf::from("/srv/app")
        );
    }

    #[test]
    fn env_output_after_marker_only() {
        let out = b"motd noise\nPATH=/evil\0\nM\nA=1\0PATH=/usr/bin:/bin\0EMPTY=\0junk\0";
        let vars = parse_env_output(out, "M").unwrap();
        assert_eq!(
            vars,
            vec![
                ("A".into(), "1".into()),
                ("PATH".into(), "/usr/bin:/bin".into()),
                ("EMPTY".into(), "".into())
            ]
        );
        assert!(parse_env_output(b"no marker", "M").is_none());
    }

    #[test]
    fn sshd_session_variables_never_reach_commands() {
        for name in [
            "SSH_CLIENT",
            "SSH2_CLIENT",
            "SSH_CONNECTION",
            "SSH_TTY",
            "SHLVL",
            "PWD",
        ] {
            assert!(!kept(OsStr::new(name)), "{name}");
        }
        for name in ["PATH", "HOME", "SSH_AUTH_SOCK", "LANG", "XDG_RUNTIME_DIR"] {
            assert!(kept(OsStr::new(name)), "{name}");
        }
    }

    #[tokio::test]
    async fn probe_finds_the_basics() {
        let p = probe().await;
        assert_eq!(p.os, "linux");
        assert!(!p.arch.is_empty() && !p.hostname.is_empty());
        assert!(p.home.starts_with('/'));
        assert!(p.login.path.contains("/bin"), "{}", p.login.path);
        assert!(p.login.which("sh").is_some());
        if let Some(v) = &p.bash_version {
            assert!(v.chars().next().is_some_and(|c| c.is_ascii_digit()), "{v}");
        }
    }
}
