//! The ssh command line, `DEST:PATH` parsing, and making sense of ssh's failures.

use std::ffi::OsString;
use std::path::PathBuf;

/// Options passed through to ssh.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SshOptions {
    pub config_file: Option<PathBuf>,
    /// `-o` options: the command line's first, then the config file's (ssh keeps the first value
    /// it sees for a key, so the command line wins).
    pub options: Vec<String>,
    pub port: Option<u16>,
    pub identity: Option<PathBuf>,
    pub jump: Option<String>,
}

/// The ssh flags pii passes through to ssh, shared by `pii --ssh` and `pii doctor`.
#[derive(clap::Args, Debug, Clone, Default)]
pub struct SshFlags {
    /// ssh config file (ssh -F).
    #[arg(short = 'F', long = "ssh-config", value_name = "FILE")]
    pub ssh_config: Option<PathBuf>,

    /// ssh option (ssh -o), repeatable, e.g. -o Compression=yes.
    #[arg(short = 'o', value_name = "SSH_OPTION")]
    pub ssh_option: Vec<String>,

    /// ssh port (ssh -p).
    #[arg(short = 'p', value_name = "PORT")]
    pub port: Option<u16>,

    /// ssh identity file (ssh -i).
    #[arg(short = 'i', value_name = "IDENTITY")]
    pub identity: Option<PathBuf>,

    /// ssh jump host(s) (ssh -J).
    #[arg(short = 'J', value_name = "JUMP")]
    pub jump: Option<String>,
}

impl SshFlags {
    /// The options for ssh: these flags, then the config file's `sshOptions`.
    pub fn options(&self, config_options: &[String]) -> SshOptions {
        let mut options = self.ssh_option.clone();
        options.extend(config_options.iter().cloned());
        SshOptions {
            config_file: self.ssh_config.clone(),
            options,
            port: self.port,
            identity: self.identity.clone(),
            jump: self.jump.clone(),
        }
    }
}

/// Defaults pii adds unless the user's `-o` sets the same key.
pub const DEFAULTS: &[(&str, &str)] = &[
    ("ServerAliveInterval", "30"),
    ("ServerAliveCountMax", "3"),
    ("ConnectTimeout", "15"),
];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum TargetError {
    #[error("--ssh wants DEST:PATH (e.g. user@host:~/app or host:/srv/app); {0:?} has no ':'")]
    NoColon(String),
    #[error("--ssh {0:?}: the destination before ':' is empty")]
    EmptyDest(String),
    #[error("--ssh {0:?}: unbalanced '[' in the destination")]
    Bracket(String),
    #[error("--ssh {0:?}: the destination must not start with '-'")]
    Dash(String),
}

/// Split `DEST:PATH` at the first ':' outside `[...]`. `[v6]` brackets are removed from the
/// destination (ssh wants the bare address). PATH is returned as written.
pub fn parse_target(s: &str) -> Result<(String, String), TargetError> {
    let mut depth = 0i32;
    let mut split = None;
    for (i, c) in s.char_indices() {
        match c {
            '[' => depth += 1,
            ']' => depth -= 1,
            ':' if depth == 0 => {
                split = Some(i);
                break;
            }
            _ => {}
        }
        if depth < 0 {
            return Err(TargetError::Bracket(s.into()));
        }
    }
    if depth != 0 {
        return Err(TargetError::Bracket(s.into()));
    }
    let i = split.ok_or_else(|| TargetError::NoColon(s.into()))?;
    let (dest, path) = (&s[..i], &s[i + 1..]);
    if dest.is_empty() {
        return Err(TargetError::EmptyDest(s.into()));
    }
    if dest.starts_with('-') {
        return Err(TargetError::Dash(s.into()));
    }
    // user@[::1] → user@::1
    let dest = match dest.rfind('@') {
        Some(at) => format!("{}@{}", &dest[..at], unbracket(&dest[at + 1..])),
        None => unbracket(dest).to_string(),
    };
    Ok((dest, path.to_string()))
}

fn unbracket(h: &str) -> &str {
    h.strip_prefix('[')
        .and_then(|x| x.strip_suffix(']'))
        .unwrap_or(h)
}

/// The key of an `-o` option (`Key=Value` or `Key Value`), lowercase.
pub fn option_key(o: &str) -> String {
    o.trim_start()
        .split(|c: char| c == '=' || c.is_whitespace())
        .next()
        .unwrap_or("")
        .to_ascii_lowercase()
}

/// Quote `s` for a POSIX shell: `'...'` with `'` as `'\''`.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// ssh's argv (without the program): `-T`, defaults, the user's options, DEST, then the remote
/// command as one argument (`sh -c '<script>'`, so the login shell's flavour does not matter).
/// A default is left out when the user's `-o` sets its key, or when `preset` (keys the user's
/// ssh config sets, from [`preset_keys`]) names it.
pub fn argv(opts: &SshOptions, dest: &str, script: &str, preset: &[String]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec!["-T".into()];
    a.extend(defaults(opts, preset));
    a.extend(passthrough(opts));
    a.push("--".into());
    a.push(dest.into());
    a.push(format!("sh -c {}", sh_quote(script)).into());
    a
}

fn defaults(opts: &SshOptions, preset: &[String]) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![];
    let user_keys: Vec<String> = opts.options.iter().map(|o| option_key(o)).collect();
    for (k, v) in DEFAULTS {
        let k_low = k.to_ascii_lowercase();
        if !user_keys.contains(&k_low) && !preset.contains(&k_low) {
            a.push("-o".into());
            a.push(format!("{k}={v}").into());
        }
    }
    a
}

/// `-F -p -i -J -o` as the user gave them.
fn passthrough(opts: &SshOptions) -> Vec<OsString> {
    let mut a: Vec<OsString> = vec![];
    if let Some(f) = &opts.config_file {
        a.push("-F".into());
        a.push(f.into());
    }
    if let Some(p) = opts.port {
        a.push("-p".into());
        a.push(p.to_string().into());
    }
    if let Some(i) = &opts.identity {
        a.push("-i".into());
        a.push(i.into());
    }
    if let Some(j) = &opts.jump {
        a.push("-J".into());
        a.push(j.into());
    }
    for o in &opts.options {
        a.push("-o".into());
        a.push(o.into());
    }
    a
}

/// Which of [`DEFAULTS`] the user's ssh configuration already sets for `dest` (asked with
/// `ssh -G`, which reads the config without connecting). Empty if ssh cannot tell.
pub async fn preset_keys(opts: &SshOptions, dest: &str) -> Vec<String> {
    match effective_config(probe_args(opts, dest)).await {
        Ok(effective) => preset_in(&effective),
        Err(_) => vec![],
    }
}

/// The arguments of `ssh -G` for a connection: the user's flags and DEST.
pub fn probe_args(opts: &SshOptions, dest: &str) -> Vec<OsString> {
    let mut args = passthrough(opts);
    args.push("--".into());
    args.push(dest.into());
    args
}

/// `ssh -G <args>` (ssh reads its configuration and prints the result, never connects): the
/// effective settings, keys lowercased. The error is ssh's own message.
pub async fn effective_config(
    mut args: Vec<OsString>,
) -> Result<std::collections::BTreeMap<String, String>, String> {
    args.insert(0, "-G".into());
    let out = tokio::process::Command::new("ssh")
        .args(&args)
        .stdin(std::process::Stdio::null())
        .output();
    let out = match tokio::time::timeout(std::time::Duration::from_secs(5), out).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("cannot run ssh -G: {e}")),
        Err(_) => return Err("ssh -G did not answer within 5 s".into()),
    };
    if !out.status.success() {
        return Err(String::from_utf8_lossy(&out.stderr).trim().to_string());
    }
    Ok(parse_effective(&String::from_utf8_lossy(&out.stdout)))
}

/// `ssh -G` output as (lowercased key, value).
pub fn parse_effective(text: &str) -> std::collections::BTreeMap<String, String> {
    text.lines()
        .filter_map(|l| {
            let (k, v) = l.split_once(' ')?;
            Some((k.to_ascii_lowercase(), v.trim().to_string()))
        })
        .collect()
}

/// Keys of [`DEFAULTS`] whose value in `ssh -G` output differs from ssh's built-in default.
pub fn preset_in(effective: &std::collections::BTreeMap<String, String>) -> Vec<String> {
    let builtin = [
        ("serveraliveinterval", "0"),
        ("serveralivecountmax", "3"),
        ("connecttimeout", "none"),
    ];
    builtin
        .iter()
        .filter(|(k, default)| effective.get(*k).is_some_and(|v| v != default))
        .map(|(k, _)| k.to_string())
        .collect()
}

/// A shell-like rendering of a command line (for --verbose).
pub fn display(program: &str, args: &[OsString]) -> String {
    let mut s = program.to_string();
    for a in args {
        let a = a.to_string_lossy();
        s.push(' ');
        if !a.is_empty()
            && a.chars()
                .all(|c| c.is_ascii_alphanumeric() || "-_=.,/:@%+".contains(c))
        {
            s.push_str(&a);
        } else {
            s.push_str(&sh_quote(&a));
        }
    }
    s
}

/// Why ssh failed, from its stderr.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SshError {
    #[error("ssh: authentication failed for {dest} (check your key, ssh-agent, -i, or the remote user)\n{tail}")]
    PermissionDenied { dest: String, tail: String },
    #[error("ssh: cannot resolve the host name of {dest}\n{tail}")]
    UnknownHost { dest: String, tail: String },
    #[error("ssh: connection to {dest} refused (is sshd running, is the port right?)\n{tail}")]
    Refused { dest: String, tail: String },
    #[error("ssh: host key verification failed for {dest} (run `ssh {dest}` once to check and accept the key)\n{tail}")]
    HostKey { dest: String, tail: String },
    #[error("ssh: timed out connecting to {dest}\n{tail}")]
    Timeout { dest: String, tail: String },
    #[error("ssh: no route to {dest}\n{tail}")]
    Unreachable { dest: String, tail: String },
    #[error("ssh to {dest} ended before the agent started ({status})\n{tail}")]
    Other {
        dest: String,
        status: String,
        tail: String,
    },
    #[error("cannot run ssh: {0}")]
    Spawn(String),
}

/// Map ssh's stderr tail (and exit status) to a clear error.
pub fn classify(dest: &str, stderr_tail: &str, status: &str) -> SshError {
    let d = dest.to_string();
    let tail = stderr_tail.trim_end().to_string();
    let has = |s: &str| stderr_tail.contains(s);
    if has("Host key verification failed") || has("REMOTE HOST IDENTIFICATION HAS CHANGED") {
        SshError::HostKey { dest: d, tail }
    } else if has("Permission denied") || has("Too many authentication failures") {
        SshError::PermissionDenied { dest: d, tail }
    } else if has("Could not resolve hostname") || has("Name or service not known") {
        SshError::UnknownHost { dest: d, tail }
    } else if has("Connection refused") {
        SshError::Refused { dest: d, tail }
    } else if has("timed out") {
        SshError::Timeout { dest: d, tail }
    } else if has("No route to host") || has("Network is unreachable") {
        SshError::Unreachable { dest: d, tail }
    } else {
        SshError::Other {
            dest: d,
            status: status.to_string(),
            tail,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(v: &[OsString]) -> Vec<String> {
        v.iter().map(|x| x.to_string_lossy().into_owned()).collect()
    }

    #[test]
    fn targets() {
        let ok = |t: &str, d: &str, p: &str| {
            assert_eq!(parse_target(t), Ok((d.into(), p.into())), "{t}")
        };
        ok("host:/srv/app", "host", "/srv/app");
        ok("user@host:~/app", "user@host", "~/app");
        ok("alias:", "alias", "");
        ok("alias:~", "alias", "~");
        ok("h:rel/dir", "h", "rel/dir");
        ok("h:/a:b", "h", "/a:b");
        ok("[::1]:/p", "::1", "/p");
        ok("u@[fe80::1%eth0]:x", "u@fe80::1%eth0", "x");
        assert!(matches!(parse_target("host"), Err(TargetError::NoColon(_))));
        assert!(matches!(
            parse_target(":/p"),
            Err(TargetError::EmptyDest(_))
        ));
        assert!(matches!(
            parse_target("[::1:/p"),
            Err(TargetError::Bracket(_))
        ));
        assert!(matches!(
            parse_target("-oProxyCommand=x:/p"),
            Err(TargetError::Dash(_))
        ));
    }

    #[test]
    fn argv_defaults_and_passthrough() {
        let a = s(&argv(&SshOptions::default(), "h", "echo hi", &[]));
        assert_eq!(
            a,
            [
                "-T",
                "-o",
                "ServerAliveInterval=30",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "ConnectTimeout=15",
                "--",
                "h",
                "sh -c 'echo hi'"
            ]
        );
        let opts = SshOptions {
            config_file: Some("/c".into()),
            options: vec![
                "serveraliveinterval=5".into(),
                "ConnectTimeout 3".into(),
                "Compression=yes".into(),
            ],
            port: Some(2222),
            identity: Some("/k".into()),
            jump: Some("b@j:22".into()),
        };
        let a = s(&argv(&opts, "u@h", "x", &[]));
        assert_eq!(
            a,
            [
                "-T",
                "-o",
                "ServerAliveCountMax=3",
                "-F",
                "/c",
                "-p",
                "2222",
                "-i",
                "/k",
                "-J",
                "b@j:22",
                "-o",
                "serveraliveinterval=5",
                "-o",
                "ConnectTimeout 3",
                "-o",
                "Compression=yes",
                "--",
                "u@h",
                "sh -c 'x'"
            ]
        );
    }

    #[test]
    fn ssh_config_settings_are_respected() {
        let g = "user u\nserveraliveinterval 10\nserveralivecountmax 3\nconnecttimeout none\n";
        assert_eq!(
            preset_in(&parse_effective(g)),
            vec!["serveraliveinterval".to_string()]
        );
        let a = s(&argv(
            &SshOptions::default(),
            "h",
            "x",
            &preset_in(&parse_effective(g)),
        ));
        assert_eq!(
            a,
            [
                "-T",
                "-o",
                "ServerAliveCountMax=3",
                "-o",
                "ConnectTimeout=15",
                "--",
                "h",
                "sh -c 'x'"
            ]
        );
        let g = "serveraliveinterval 0\nserveralivecountmax 5\nconnecttimeout 4\n";
        assert_eq!(
            preset_in(&parse_effective(g)),
            vec![
                "serveralivecountmax".to_string(),
                "connecttimeout".to_string()
            ]
        );
    }

    #[tokio::test]
    async fn preset_keys_from_a_real_ssh_config() {
        if crate::launch::which("ssh").is_none() {
            return;
        }
        let d = tempfile::tempdir().unwrap();
        let cfg = d.path().join("config");
        std::fs::write(
            &cfg,
            "Host alias\n  HostName 127.0.0.1\n  ConnectTimeout 7\n",
        )
        .unwrap();
        let opts = SshOptions {
            config_file: Some(cfg),
            ..Default::default()
        };
        assert_eq!(
            preset_keys(&opts, "alias").await,
            vec!["connecttimeout".to_string()]
        );
        assert!(preset_keys(&opts, "other").await.is_empty());
    }

    #[test]
    fn quoting_survives_a_real_shell() {
        let script = r#"printf '%s|' "it's" 'a "b"' '$HOME' \; ; echo"#;
        let q = format!("sh -c {}", sh_quote(script));
        let out = std::process::Command::new("sh")
            .arg("-c")
            .arg(&q)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            "it's|a \"b\"|$HOME|;|\n"
        );
    }

    #[test]
    fn reconnects_never_prompt() {
        let user = SshOptions {
            options: vec!["BatchMode=no".into(), "Compression=yes".into()],
            port: Some(2222),
            ..Default::default()
        };
        let r = crate::install::SshReconnect::new(&user, "h", None, None);
        let a = s(&argv(r.options(), "h", "x", &[]));
        let first_batch = a
            .iter()
            .position(|x| x.to_lowercase().starts_with("batchmode"));
        assert_eq!(a[first_batch.unwrap()], "BatchMode=yes", "{a:?}");
        assert!(a.contains(&"Compression=yes".to_string()));
    }

    #[test]
    fn classify_stderr() {
        let c = |t: &str| classify("h", t, "exit 255");
        assert!(matches!(
            c("u@h: Permission denied (publickey).\n"),
            SshError::PermissionDenied { .. }
        ));
        assert!(matches!(
            c("ssh: Could not resolve hostname nope: Name or service not known\n"),
            SshError::UnknownHost { .. }
        ));
        assert!(matches!(
            c("ssh: connect to host h port 22: Connection refused\n"),
            SshError::Refused { .. }
        ));
        assert!(matches!(
            c("Host key verification failed.\n"),
            SshError::HostKey { .. }
        ));
        assert!(matches!(
            c("ssh: connect to host h port 22: Connection timed out\n"),
            SshError::Timeout { .. }
        ));
        let e = c("weird\n");
        assert!(matches!(e, SshError::Other { .. }));
        assert!(e.to_string().contains("weird") && e.to_string().contains("exit 255"));
    }
}
