//! `pi-bridge.config.json`: the current directory's, else `~/.config/pi-bridge/config.json`.
//!
//! Keys (all optional): `sandboxRoot` (string), `authTokenLength` (integer >= 32),
//! `rpcTimeout` (ms, > 0), `watchFallbackPollInterval` (ms, > 0), `sshOptions` (array of
//! strings, each passed as `-o <option>` before the command line's `-o`). Command-line flags win
//! over the file. An unknown key or a bad value is an error naming the file and the key.

use std::path::{Path, PathBuf};

pub const FILE_NAME: &str = "pi-bridge.config.json";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    /// Widen the remote sandbox beyond the project root.
    pub sandbox_root: Option<String>,
    /// Random bytes in the loopback token (>= 32).
    pub auth_token_length: usize,
    /// Milliseconds a call may take.
    pub rpc_timeout_ms: u64,
    /// Poll interval where the remote has no inotify (passed on; unused by pii itself).
    pub watch_fallback_poll_interval_ms: u64,
    /// Extra `-o` options for ssh.
    pub ssh_options: Vec<String>,
    /// The file this came from, if any.
    pub source: Option<PathBuf>,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            sandbox_root: None,
            auth_token_length: protocol::endpoint::TOKEN_BYTES,
            rpc_timeout_ms: 30_000,
            watch_fallback_poll_interval_ms: 1_000,
            ssh_options: Vec::new(),
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
    #[error("{}: unknown key `{key}` (known keys: sandboxRoot, authTokenLength, rpcTimeout, watchFallbackPollInterval, sshOptions)", file.display())]
    UnknownKey { file: PathBuf, key: String },
    #[error("{}: bad value for `{key}`: {msg}", file.display())]
    BadValue {
        file: PathBuf,
        key: String,
        msg: String,
    },
}

/// Where the config is looked for, in order.
pub fn candidates(cwd: &Path, home: Option<&Path>) -> Vec<PathBuf> {
    let mut v = vec![cwd.join(FILE_NAME)];
    if let Some(h) = home {
        v.push(h.join(".config/pi-bridge/config.json"));
    }
    v
}

/// Load the first config file that exists; defaults if none does.
pub fn load(cwd: &Path, home: Option<&Path>) -> Result<Config, ConfigError> {
    for file in candidates(cwd, home) {
        match std::fs::read_to_string(&file) {
            Ok(text) => return parse(&text, &file),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(source) => return Err(ConfigError::Read { file, source }),
        }
    }
    Ok(Config::default())
}

/// Parse a config file's text (`file` is only for messages).
pub fn parse(text: &str, file: &Path) -> Result<Config, ConfigError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| ConfigError::Syntax {
        file: file.to_path_buf(),
        msg: e.to_string(),
    })?;
    let obj = value.as_object().ok_or_else(|| ConfigError::NotObject {
        file: file.to_path_buf(),
    })?;
    let mut cfg = Config {
        source: Some(file.to_path_buf()),
        ..Config::default()
    };
    let bad = |key: &str, msg: &str| ConfigError::BadValue {
        file: file.to_path_buf(),
        key: key.to_string(),
        msg: msg.to_string(),
    };
    let positive = |key: &str, v: &serde_json::Value| -> Result<u64, ConfigError> {
        match v.as_u64() {
            Some(n) if n > 0 => Ok(n),
            _ => Err(bad(
                key,
                &format!("expected a positive integer (milliseconds), got {v}"),
            )),
        }
    };
    for (key, v) in obj {
        match key.as_str() {
            "sandboxRoot" => match v {
                serde_json::Value::String(s) if !s.is_empty() => cfg.sandbox_root = Some(s.clone()),
                serde_json::Value::Null => cfg.sandbox_root = None,
                _ => {
                    return Err(bad(
                        key,
                        &format!("expected a non-empty path string, got {v}"),
                    ))
                }
            },
            "authTokenLength" => match v.as_u64() {
                Some(n) if n >= protocol::endpoint::TOKEN_BYTES as u64 && n <= 4096 => {
                    cfg.auth_token_length = n as usize
                }
                _ => {
                    return Err(bad(
                        key,
                        &format!(
                            "expected an integer between {} and 4096 (bytes), got {v}",
                            protocol::endpoint::TOKEN_BYTES
                        ),
                    ))
                }
            },
            "rpcTimeout" => cfg.rpc_timeout_ms = positive(key, v)?,
            "watchFallbackPollInterval" => cfg.watch_fallback_poll_interval_ms = positive(key, v)?,
            "sshOptions" => {
                let arr = v
                    .as_array()
                    .ok_or_else(|| bad(key, &format!("expected an array of strings, got {v}")))?;
                let mut opts = Vec::new();
                for item in arr {
                    match item.as_str() {
                        Some(s) if !s.trim().is_empty() => opts.push(s.to_string()),
                        _ => return Err(bad(key, &format!("every item must be a non-empty string like \"Compression=yes\", got {item}"))),
                    }
                }
                cfg.ssh_options = opts;
            }
            _ => {
                return Err(ConfigError::UnknownKey {
                    file: file.to_path_buf(),
                    key: key.clone(),
                })
            }
        }
    }
    Ok(cfg)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(text: &str) -> Result<Config, ConfigError> {
        parse(text, Path::new("/x/pi-bridge.config.json"))
    }

    #[test]
    fn full_file() {
        let c = p(r#"{"sandboxRoot":"/srv","authTokenLength":64,"rpcTimeout":5000,"watchFallbackPollInterval":250,"sshOptions":["Compression=yes"]}"#).unwrap();
        assert_eq!(c.sandbox_root.as_deref(), Some("/srv"));
        assert_eq!(c.auth_token_length, 64);
        assert_eq!(c.rpc_timeout_ms, 5000);
        assert_eq!(c.watch_fallback_poll_interval_ms, 250);
        assert_eq!(c.ssh_options, vec!["Compression=yes".to_string()]);
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
            e.contains("/x/pi-bridge.config.json") && e.contains("`rpcTimeOut`"),
            "{e}"
        );
        let e = p(r#"{"authTokenLength":16}"#).unwrap_err().to_string();
        assert!(
            e.contains("/x/pi-bridge.config.json") && e.contains("`authTokenLength`"),
            "{e}"
        );
        for bad in [
            r#"{"rpcTimeout":0}"#,
            r#"{"rpcTimeout":-1}"#,
            r#"{"rpcTimeout":"5s"}"#,
            r#"{"watchFallbackPollInterval":1.5}"#,
            r#"{"sandboxRoot":3}"#,
            r#"{"sshOptions":"x"}"#,
            r#"{"sshOptions":[1]}"#,
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
}
