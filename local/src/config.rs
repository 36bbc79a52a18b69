//! `pi-bridge.config.json`: the current directory's, else `~/.config/pi-bridge/config.json`.
//!
//! Keys (all optional): `sandboxRoot` (string), `authTokenLength` (integer >= 32),
//! `rpcTimeout` (ms, > 0), `sshOptions` (array of
//! strings, each passed as `-o <option>` before the command line's `-o`), `localPaths` (array of
//! paths pi may use on this machine), `controlPersist` (how long pii keeps an ssh connection for the
//! next `pii` to the same host, ssh's time format like `"5m"`, or `false`: `crate::master`).
//! Command-line flags win over the file. An unknown key or a
//! bad value is an error naming the file and the key.
//!
//! Trust, as ssh treats `~/.ssh/config`: a file is read only when it is owned by the user and
//! not writable by group or others (checked on the opened file), else pii stops. The current
//! directory's file may come from a cloned repository or a shared directory, so it may set only
//! [`CWD_SSH_KEYS`] among `sshOptions` and no `localPaths`: options that run commands or load
//! code (ProxyCommand, LocalCommand, KnownHostsCommand, Match exec, PKCS11Provider …), forward
//! the agent or ports, or change where ssh connects, and paths kept local, are honoured only
//! from the user's own `~/.config/pi-bridge/config.json`.

use serde::Deserialize;
use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "pi-bridge.config.json";

/// The `sshOptions` keys (lowercase) a config in the current directory may set: they tune the
/// connection and nothing else.
pub const CWD_SSH_KEYS: [&str; 11] = [
    "compression",
    "serveraliveinterval",
    "serveralivecountmax",
    "connecttimeout",
    "connectionattempts",
    "tcpkeepalive",
    "ipqos",
    "addressfamily",
    "loglevel",
    "batchmode",
    "rekeylimit",
];

/// Where a config file was found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// `pi-bridge.config.json` in the current directory.
    Cwd,
    /// `~/.config/pi-bridge/config.json`.
    User,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Widen the remote sandbox beyond the project root.
    pub sandbox_root: Option<String>,
    /// Random bytes in the endpoint token (>= 32).
    pub auth_token_length: usize,
    /// Milliseconds a call may take.
    pub rpc_timeout_ms: u64,
    /// Extra `-o` options for ssh.
    pub ssh_options: Vec<String>,
    /// Paths that stay on this machine for pi and its tools (`localPaths`, user config only).
    pub local_paths: Vec<PathBuf>,
    /// ssh's `ControlPersist` for pii's own master (`controlPersist`); None = no master.
    pub control_persist: Option<String>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sandbox_root: None,
            auth_token_length: protocol::endpoint::TOKEN_BYTES,
            rpc_timeout_ms: 30_000,
            ssh_options: Vec::new(),
            local_paths: Vec::new(),
            control_persist: Some(crate::master::DEFAULT_PERSIST.into()),
            source: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {}: {source}", file.display())]
    Read {
        file: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not valid JSON: {msg}", file.display())]
    Syntax { file: PathBuf, msg: String },
    #[error("{}: the top level must be a JSON object", file.display())]
    NotObject { file: PathBuf },
    #[error("{}: unknown key `{key}` (known keys: {})", file.display(), KEYS.join(", "))]
    UnknownKey { file: PathBuf, key: String },
    #[error("{}: bad value for `{key}`: {msg}", file.display())]
    BadValue {
        file: PathBuf,
        key: String,
        msg: String,
    },
    #[error("{}: refusing a config file {why} (pii reads config only from files no one else can change, as ssh does): {fix}", file.display())]
    Untrusted {
        file: PathBuf,
        why: String,
        fix: String,
    },
    #[error("{}: {what} is honoured only from your own ~/.config/pi-bridge/config.json, not from a {FILE_NAME} in the current directory (which may come from a cloned repository or a shared directory){hint}", file.display())]
    NotHere {
        file: PathBuf,
        what: String,
        hint: String,
    },
}

/// Where the config is looked for, in order.
pub fn candidates(cwd: &Path, home: Option<&Path>) -> Vec<(PathBuf, Origin)> {
    let mut v = vec![(cwd.join(FILE_NAME), Origin::Cwd)];
    if let Some(h) = home {
        v.push((h.join(".config/pi-bridge/config.json"), Origin::User));
    }
    v
}

/// Load the first config file that exists; defaults if none does.
pub fn load(cwd: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
    for (file, origin) in candidates(cwd, home) {
        if let Some(text) = read_trusted(&file)? {
            return parse(&text, &file, origin);
        }
    }
    Ok(Config::default())
}

/// The text of `file` if it exists, is owned by this user and is not writable by group or
/// others (checked on the opened file, so a file swapped in after the check is not read).
fn read_trusted(file: &Path) -> Result<Option<String>, ConfigError> {
    use std::io::Read;
    use std::os::unix::fs::MetadataExt;
    let read_err = |source| ConfigError::Read {
        file: file.to_path_buf(),
        source,
    };
    let mut f = match std::fs::File::open(file) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(read_err(e)),
    };
    let md = f.metadata().map_err(read_err)?;
    // SAFETY: geteuid has no preconditions.
    let me = rustix::process::geteuid().as_raw();
    let untrusted = |why: String, fix: String| ConfigError::Untrusted {
        file: file.to_path_buf(),
        why,
        fix,
    };
    if md.uid() != me {
        return Err(untrusted(
            format!("owned by uid {} (you are uid {me})", md.uid()),
            format!(
                "remove it, or run pii from another directory, or take it over (cp it, then chown {me})"
            ),
        ));
    }
    if md.mode() & 0o022 != 0 {
        return Err(untrusted(
            format!(
                "writable by {} (mode {:o})",
                if md.mode() & 0o002 != 0 {
                    "everyone"
                } else {
                    "its group"
                },
                md.mode() & 0o7777
            ),
            format!("chmod go-w {}", file.display()),
        ));
    }
    let mut text = String::new();
    f.read_to_string(&mut text).map_err(read_err)?;
    Ok(Some(text))
}

/// The keys of a config file, as [`File`] names them (the unknown-key error lists them).
pub const KEYS: [&str; 6] = [
    "sandboxRoot",
    "authTokenLength",
    "rpcTimeout",
    "sshOptions",
    "localPaths",
    "controlPersist",
];

/// A config file as written: every key optional, no other key allowed. Each value type checks
/// itself, so a bad value is refused with what was expected and what was given.
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct File {
    /// `null` is the same as leaving it out.
    sandbox_root: Option<SandboxRoot>,
    auth_token_length: Option<TokenLength>,
    rpc_timeout: Option<Millis>,
    ssh_options: Option<SshOptionList>,
    local_paths: Option<LocalPathList>,
    control_persist: Option<Persist>,
}

/// `controlPersist`: `false` (no master), a number of seconds, or ssh's time format (`"90"`,
/// `"5m"`, `"1h30m"`). Not `0`/`yes` (a master that never exits) nor `no`.
#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct Persist(Option<String>);

impl TryFrom<serde_json::Value> for Persist {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        let bad = || {
            format!("expected false, a positive number of seconds, or a time like \"90s\", \"5m\", \"1h30m\" (ssh's ControlPersist format), got {v}")
        };
        let text = match &v {
            serde_json::Value::Bool(false) => return Ok(Persist(None)),
            serde_json::Value::Number(n) => {
                n.as_u64().filter(|n| *n > 0).ok_or_else(bad)?.to_string()
            }
            serde_json::Value::String(s) => s.clone(),
            _ => return Err(bad()),
        };
        // ssh's convtime: (digits unit?)+ with units s m h d w, any case; not all zero.
        let mut digits = false;
        let mut nonzero = false;
        for c in text.chars() {
            match c {
                '0'..='9' => {
                    digits = true;
                    nonzero |= c != '0';
                }
                's' | 'S' | 'm' | 'M' | 'h' | 'H' | 'd' | 'D' | 'w' | 'W' if digits => {
                    digits = false
                }
                _ => return Err(bad()),
            }
        }
        if text.is_empty() || !nonzero || text.len() > 16 {
            return Err(bad());
        }
        Ok(Persist(Some(text)))
    }
}

#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct SandboxRoot(String);

impl TryFrom<serde_json::Value> for SandboxRoot {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        match v {
            serde_json::Value::String(s) if !s.is_empty() => Ok(SandboxRoot(s)),
            _ => Err(format!("expected a non-empty path string, got {v}")),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct TokenLength(usize);

impl TryFrom<serde_json::Value> for TokenLength {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        let min = protocol::endpoint::TOKEN_BYTES;
        match v.as_u64() {
            Some(n) if n >= min as u64 && n <= 4096 => Ok(TokenLength(n as usize)),
            _ => Err(format!(
                "expected an integer between {min} and 4096 (bytes), got {v}"
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct Millis(u64);

impl TryFrom<serde_json::Value> for Millis {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        match v.as_u64() {
            Some(n) if n > 0 => Ok(Millis(n)),
            _ => Err(format!(
                "expected a positive integer (milliseconds), got {v}"
            )),
        }
    }
}

#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct SshOptionList(Vec<String>);

impl TryFrom<serde_json::Value> for SshOptionList {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        let arr = v
            .as_array()
            .ok_or_else(|| format!("expected an array of strings, got {v}"))?;
        let mut opts = Vec::new();
        for item in arr {
            match item.as_str() {
                Some(s) if !s.trim().is_empty() => opts.push(s.to_string()),
                _ => {
                    return Err(format!(
                    "every item must be a non-empty string like \"Compression=yes\", got {item}"
                ))
                }
            }
        }
        Ok(SshOptionList(opts))
    }
}

#[derive(Deserialize)]
#[serde(try_from = "serde_json::Value")]
struct LocalPathList(Vec<PathBuf>);

impl TryFrom<serde_json::Value> for LocalPathList {
    type Error = String;
    fn try_from(v: serde_json::Value) -> Result<Self, String> {
        let arr = v
            .as_array()
            .ok_or_else(|| format!("expected an array of paths, got {v}"))?;
        let mut paths = Vec::new();
        for item in arr {
            match item.as_str() {
                Some(s) if s.starts_with('/') || s == "~" || s.starts_with("~/") => {
                    if crate::boundary::normalize(Path::new(s)).as_deref() == Some("/") || s == "~"
                    {
                        return Err(format!(
                            "{s:?} would keep too much on this machine; name the directories pi needs"
                        ));
                    }
                    paths.push(PathBuf::from(s))
                }
                _ => {
                    return Err(format!(
                        "every item must be an absolute path or ~/…, got {item}"
                    ))
                }
            }
        }
        Ok(LocalPathList(paths))
    }
}

/// Parse a config file's text (`file` is only for messages; `origin` says what it may set).
pub fn parse(text: &str, file: &Path, origin: Origin) -> Result<Config, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_path_buf(),
        msg: e.to_string(),
    })?;
    if !value.is_object() {
        return Err(ConfigError::NotObject {
            file: file.to_path_buf(),
        });
    }
    // `localPaths` is refused from the current directory whatever its value.
    if origin == Origin::Cwd && value.get("localPaths").is_some() {
        return Err(ConfigError::NotHere {
            file: file.to_path_buf(),
            what: "`localPaths`".into(),
            hint: String::new(),
        });
    }
    let f: File = serde_path_to_error::deserialize(value).map_err(|e| {
        let key = e.path().to_string();
        let msg = e.into_inner().to_string();
        // deny_unknown_fields: "unknown field `x`, expected one of …", at the path of `x`.
        if msg.starts_with("unknown field `") {
            ConfigError::UnknownKey {
                file: file.to_path_buf(),
                key,
            }
        } else {
            ConfigError::BadValue {
                file: file.to_path_buf(),
                key,
                msg,
            }
        }
    })?;
    let defaults = Config::default();
    // A master kept alive is the user's choice: a file in the current directory may only turn it
    // off.
    if origin == Origin::Cwd && matches!(&f.control_persist, Some(Persist(Some(_)))) {
        return Err(ConfigError::NotHere {
            file: file.to_path_buf(),
            what: "`controlPersist` other than false".into(),
            hint: String::new(),
        });
    }
    let ssh_options = f.ssh_options.map(|o| o.0).unwrap_or_default();
    if origin == Origin::Cwd {
        if let Some(o) = ssh_options
            .iter()
            .find(|o| !CWD_SSH_KEYS.contains(&crate::ssh::option_key(o).as_str()))
        {
            return Err(ConfigError::NotHere {
                file: file.to_path_buf(),
                what: format!("the ssh option {o:?}"),
                hint: format!(" (here only: {})", CWD_SSH_KEYS.join(", ")),
            });
        }
    }
    Ok(Config {
        sandbox_root: f.sandbox_root.map(|s| s.0),
        auth_token_length: f
            .auth_token_length
            .map_or(defaults.auth_token_length, |n| n.0),
        rpc_timeout_ms: f.rpc_timeout.map_or(defaults.rpc_timeout_ms, |m| m.0),
        ssh_options,
        local_paths: f.local_paths.map(|p| p.0).unwrap_or_default(),
        control_persist: f.control_persist.map_or(defaults.control_persist, |p| p.0),
        source: Some(file.to_path_buf()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(
            text,
            Path::new("/x/.config/pi-bridge/config.json"),
            Origin::User,
        )
    }

    #[test]
    fn full_file() {
        let c = p(r#"{"sandboxRoot":"/srv","authTokenLength":64,"rpcTimeout":5000,"sshOptions":["Compression=yes"]}"#).unwrap();
        assert_eq!(c.sandbox_root.as_deref(), Some("/srv"));
        assert_eq!(c.auth_token_length, 64);
        assert_eq!(c.rpc_timeout_ms, 5000);
        assert_eq!(c.ssh_options, vec!["Compression=yes".to_string()]);
    }

    #[test]
    fn control_persist_values() {
        assert_eq!(Config::default().control_persist.as_deref(), Some("5m"));
        let c = |t: &str| p(t).unwrap().control_persist;
        assert_eq!(c(r#"{"controlPersist":false}"#), None);
        assert_eq!(c(r#"{"controlPersist":90}"#).as_deref(), Some("90"));
        assert_eq!(c(r#"{"controlPersist":"1h30m"}"#).as_deref(), Some("1h30m"));
        assert_eq!(c(r#"{"controlPersist":"60S"}"#).as_deref(), Some("60S"));
        // From the current directory: only off.
        let cwd = |t: &str| parse(t, Path::new("/p/pi-bridge.config.json"), Origin::Cwd);
        assert_eq!(
            cwd(r#"{"controlPersist":false}"#).unwrap().control_persist,
            None
        );
        let e = cwd(r#"{"controlPersist":"1w"}"#).unwrap_err().to_string();
        assert!(e.contains("controlPersist"), "{e}");
    }

    #[test]
    fn empty_object_is_defaults() {
        let c = p("{}").unwrap();
        assert_eq!(
            c,
            Config {
                source: c.source.clone(),
                ..Config::default()
            }
        );
        assert_eq!(c.auth_token_length, 32);
    }

    #[test]
    fn errors_name_file_and_key() {
        let e = p(r#"{"rpcTimeOut":1}"#).unwrap_err().to_string();
        assert!(
            e.contains("/x/.config/pi-bridge/config.json") && e.contains("`rpcTimeOut`"),
            "{e}"
        );
        let e = p(r#"{"authTokenLength":16}"#).unwrap_err().to_string();
        assert!(
            e.contains("/x/.config/pi-bridge/config.json") && e.contains("`authTokenLength`"),
            "{e}"
        );
        for bad in [
            r#"{"rpcTimeout":0}"#,
            r#"{"rpcTimeout":-1}"#,
            r#"{"rpcTimeout":"5s"}"#,
            r#"{"rpcTimeout":1.5}"#,
            r#"{"authTokenLength":4097}"#,
            r#"{"sandboxRoot":3}"#,
            r#"{"sshOptions":"x"}"#,
            r#"{"sshOptions":[1]}"#,
            r#"{"controlPersist":true}"#,
            r#"{"controlPersist":0}"#,
            r#"{"controlPersist":"0"}"#,
            r#"{"controlPersist":"yes"}"#,
            r#"{"controlPersist":"no"}"#,
            r#"{"controlPersist":"5x"}"#,
            r#"{"controlPersist":"m"}"#,
            r#"{"controlPersist":""}"#,
            r#"{"controlPersist":"5m;ls"}"#,
        ] {
            let e = p(bad).unwrap_err();
            assert!(matches!(e, ConfigError::BadValue { .. }), "{bad}: {e}");
        }
        assert!(matches!(
            p("[1]").unwrap_err(),
            ConfigError::NotObject { .. }
        ));
        assert!(matches!(p("{").unwrap_err(), ConfigError::Syntax { .. }));
    }

    #[test]
    fn unknown_keys_are_refused_by_name() {
        for (text, key) in [
            (r#"{"rpcTimeOut":1}"#, "rpcTimeOut"),
            (r#"{"rpcTimeout":5,"extra":{"a":1}}"#, "extra"),
            // Documented once, never used: removed, so it is refused like any unknown key.
            (
                r#"{"watchFallbackPollInterval":250}"#,
                "watchFallbackPollInterval",
            ),
        ] {
            let e = p(text).unwrap_err();
            match &e {
                ConfigError::UnknownKey { key: k, .. } => assert_eq!(k, key, "{text}"),
                other => panic!("{text}: {other}"),
            }
            let m = e.to_string();
            assert!(
                m.contains(&format!("unknown key `{key}`")) && m.contains("known keys: sandboxRoot, authTokenLength, rpcTimeout, sshOptions, localPaths"),
                "{m}"
            );
        }
        // KEYS is what the file type accepts: each one alone parses.
        for (key, v) in KEYS.iter().zip([r#""/srv""#, "64", "5", "[]", "[]"]) {
            p(&format!(r#"{{"{key}":{v}}}"#)).unwrap_or_else(|e| panic!("{key}: {e}"));
        }
        // A bad value names its key.
        let e = p(r#"{"sshOptions":["ok", ""]}"#).unwrap_err();
        assert!(
            matches!(&e, ConfigError::BadValue { key, .. } if key == "sshOptions"),
            "{e}"
        );
    }

    #[test]
    fn lookup_order_cwd_then_home() {
        let cwd = tempfile::tempdir().unwrap();
        let home = tempfile::tempdir().unwrap();
        assert_eq!(
            load(cwd.path(), Some(home.path())).unwrap(),
            Config::default()
        );
        std::fs::create_dir_all(home.path().join(".config/pi-bridge")).unwrap();
        std::fs::write(
            home.path().join(".config/pi-bridge/config.json"),
            r#"{"rpcTimeout":7}"#,
        )
        .unwrap();
        assert_eq!(
            load(cwd.path(), Some(home.path())).unwrap().rpc_timeout_ms,
            7
        );
        std::fs::write(cwd.path().join(FILE_NAME), r#"{"rpcTimeout":9}"#).unwrap();
        assert_eq!(
            load(cwd.path(), Some(home.path())).unwrap().rpc_timeout_ms,
            9
        );
        std::fs::write(cwd.path().join(FILE_NAME), r#"{"nope":9}"#).unwrap();
        let e = load(cwd.path(), Some(home.path())).unwrap_err().to_string();
        assert!(e.contains(FILE_NAME) && e.contains("nope"), "{e}");
    }

    /// A config file someone else owns or may write stops pii (even one that only sets a
    /// timeout: nothing of it is used); the user's own file through a symlink is read.
    #[test]
    fn only_files_only_the_user_can_change_are_read() {
        use std::os::unix::fs::PermissionsExt;
        let cwd = tempfile::tempdir().unwrap();
        let file = cwd.path().join(FILE_NAME);
        std::fs::write(&file, r#"{"rpcTimeout":9}"#).unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o664)).unwrap();
        let e = load(cwd.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("writable by its group") && e.contains("chmod go-w"),
            "{e}"
        );
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o646)).unwrap();
        let e = load(cwd.path(), None).unwrap_err().to_string();
        assert!(e.contains("writable by everyone"), "{e}");
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert_eq!(load(cwd.path(), None).unwrap().rpc_timeout_ms, 9);
        // Another user's file (tests run as root; 65534 is nobody).
        std::os::unix::fs::chown(&file, Some(65534), None).unwrap();
        let e = load(cwd.path(), None).unwrap_err().to_string();
        assert!(
            e.contains("owned by uid 65534") && e.contains("refusing"),
            "{e}"
        );
        // A symlink to the user's own file is the user's file.
        let own = tempfile::tempdir().unwrap();
        let target = own.path().join("real.json");
        std::fs::write(&target, r#"{"rpcTimeout":11}"#).unwrap();
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&target, &file).unwrap();
        assert_eq!(load(cwd.path(), None).unwrap().rpc_timeout_ms, 11);
        // …and one to another user's file is not.
        std::os::unix::fs::chown(&target, Some(65534), None).unwrap();
        assert!(load(cwd.path(), None).is_err());
    }

    /// From the current directory's file, only connection tuning among `sshOptions` (whatever
    /// the spelling of the key) and no `localPaths`; from the user's own file, anything.
    #[test]
    fn a_config_in_the_current_directory_cannot_run_commands_or_keep_paths_local() {
        let cwd = |text: &str| parse(text, Path::new("/x/pi-bridge.config.json"), Origin::Cwd);
        for bad in [
            "ProxyCommand=touch /tmp/pwned",
            "proxycommand touch /tmp/pwned",
            "  PROXYCOMMAND = sh -c x",
            "ProxyCommand\t=x",
            "\"ProxyCommand\" x",
            "LocalCommand=x",
            "PermitLocalCommand=yes",
            "KnownHostsCommand=x",
            "Match exec \"x\"",
            "PKCS11Provider=/tmp/x.so",
            "SecurityKeyProvider=/tmp/x.so",
            "ForwardAgent=yes",
            "SendEnv=*",
            "HostName=attacker",
            "StrictHostKeyChecking=no",
            "ControlPath=/tmp/x",
            "Include=/tmp/x",
        ] {
            let text = serde_json::json!({"sshOptions": ["Compression=yes", bad]}).to_string();
            let e = cwd(&text).unwrap_err();
            assert!(matches!(e, ConfigError::NotHere { .. }), "{bad}: {e}");
            assert!(
                e.to_string().contains("~/.config/pi-bridge/config.json"),
                "{e}"
            );
            p(&text).unwrap_or_else(|e| panic!("{bad} from the user's own config: {e}"));
        }
        let ok =
            cwd(r#"{"sshOptions":["Compression=yes","serveraliveinterval 5","ConnectTimeout=3"]}"#)
                .unwrap();
        assert_eq!(ok.ssh_options.len(), 3);
        let e = cwd(r#"{"localPaths":["/home/me/notes"]}"#).unwrap_err();
        assert!(matches!(e, ConfigError::NotHere { .. }), "{e}");
        let c = p(r#"{"localPaths":["/home/me/notes","~/x"]}"#).unwrap();
        assert_eq!(
            c.local_paths,
            [PathBuf::from("/home/me/notes"), PathBuf::from("~/x")]
        );
        for bad in [
            r#"["/"]"#,
            r#"["/a/.."]"#,
            r#"["~"]"#,
            r#"["rel"]"#,
            r#"[""]"#,
            r#""/x""#,
            r#"[1]"#,
        ] {
            let e = p(&format!(r#"{{"localPaths":{bad}}}"#)).unwrap_err();
            assert!(matches!(e, ConfigError::BadValue { .. }), "{bad}: {e}");
        }
    }
}
