//! The handshake.
//!
//! 1. The agent's FIRST output on stdout is the magic line ([`Magic::line`]). The client skips
//!    any line before it (MOTD, rc-file echo), so login-shell noise never breaks a session. The
//!    agent writes nothing to stdout but the magic line and JSON-RPC frames. The client names a
//!    fresh random nonce per connection ([`NONCE_ENV`] in the agent's environment); the agent
//!    echoes it in the magic line, and a magic line without it is noise to the client (an rc
//!    file's echo, another program's output). The nonce is no secret from the remote account
//!    (its rc files see the command line): it keeps stray output from being taken for the agent,
//!    while what the agent then says is checked by the client anyway (its roots).
//! 2. The client checks the magic line: the same protocol AND the same release as its own
//!    (`pii` only ever runs the agent of its own release; a mismatch is an error naming both
//!    versions, never a parse failure), then calls `hello` ([`Hello`] → [`HelloResult`]).
//! 3. Any other call before `hello` succeeds is refused with [`crate::ErrorCode::NotReady`].

use serde::{Deserialize, Serialize};

/// The prefix of the agent's announcement line.
pub const MAGIC_PREFIX: &str = "PI-BRIDGE-AGENT";

/// The announcement of this build, byte for byte (with its newline). The agent writes exactly
/// this constant, so a built agent binary holds it verbatim: [`Magic::find_in`] reads which
/// release and protocol a binary is without running it (pii before an upload and in
/// `--version`; `scripts/dist.sh --check` for the npm packages).
pub const MAGIC_LINE: &str = concat!(
    "PI-BRIDGE-AGENT protocol=",
    crate::protocol_version_literal!(),
    " version=",
    env!("CARGO_PKG_VERSION"),
    "\n"
);

/// The environment variable through which the client gives the agent its connection's nonce.
pub const NONCE_ENV: &str = "PI_BRIDGE_NONCE";

/// The line the agent writes: [`MAGIC_LINE`] (read through `black_box`, so that the binary holds
/// the constant verbatim) with the connection's nonce, when it is a valid one, before its newline.
pub fn announcement(nonce: Option<&str>) -> String {
    let base = std::hint::black_box(MAGIC_LINE).trim_end_matches('\n');
    match nonce.filter(|n| Magic::valid_nonce(n)) {
        Some(n) => format!("{base} nonce={n}\n"),
        None => format!("{base}\n"),
    }
}

/// The agent's announcement: `PI-BRIDGE-AGENT protocol=1 version=0.1.0 nonce=<hex>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magic {
    pub protocol: u32,
    pub version: String,
    /// The client's nonce for this connection, echoed.
    pub nonce: Option<String>,
}

impl Magic {
    pub fn current() -> Self {
        Magic {
            protocol: crate::PROTOCOL_VERSION,
            version: crate::VERSION.to_string(),
            nonce: None,
        }
    }

    /// The current agent echoing `nonce` (a valid one, see [`Magic::valid_nonce`]).
    pub fn with_nonce(nonce: Option<String>) -> Self {
        Magic {
            nonce: nonce.filter(|n| Magic::valid_nonce(n)),
            ..Magic::current()
        }
    }

    /// A nonce is 16 to 128 lowercase hex digits.
    pub fn valid_nonce(n: &str) -> bool {
        (16..=128).contains(&n.len())
            && n.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    }

    pub fn line(&self) -> String {
        let mut l = format!(
            "{MAGIC_PREFIX} protocol={} version={}",
            self.protocol, self.version
        );
        if let Some(n) = &self.nonce {
            l.push_str(" nonce=");
            l.push_str(n);
        }
        l
    }

    /// Parse a line; `None` if it is not a magic line (so it is noise to skip).
    pub fn parse(line: &str) -> Option<Magic> {
        let rest = line
            .trim_end()
            .strip_prefix(MAGIC_PREFIX)?
            .strip_prefix(' ')?;
        let mut protocol = None;
        let mut version = None;
        let mut nonce = None;
        for word in rest.split(' ') {
            if let Some(v) = word.strip_prefix("protocol=") {
                protocol = v.parse().ok();
            } else if let Some(v) = word.strip_prefix("version=") {
                version = Some(v.to_string());
            } else if let Some(v) = word.strip_prefix("nonce=") {
                nonce = Some(v.to_string());
            }
        }
        Some(Magic {
            protocol: protocol?,
            version: version?,
            nonce,
        })
    }

    /// The announcement inside a binary (or any bytes): the first `PI-BRIDGE-AGENT protocol=`
    /// followed by a parsable line, read up to the first byte that cannot be part of one (so a
    /// quote or a newline ends it). `None` if there is none.
    pub fn find_in(bytes: &[u8]) -> Option<Magic> {
        let needle = b"PI-BRIDGE-AGENT protocol=";
        let mut from = 0;
        while let Some(at) = bytes[from..]
            .windows(needle.len())
            .position(|w| w == needle)
        {
            let start = from + at;
            let len = bytes[start..]
                .iter()
                .position(|b| !(b.is_ascii_alphanumeric() || b"-=. +_".contains(b)))
                .unwrap_or(bytes.len() - start);
            let line = std::str::from_utf8(&bytes[start..start + len]).ok();
            if let Some(m) = line.and_then(Magic::parse) {
                return Some(m);
            }
            from = start + 1;
        }
        None
    }

    /// `Err` with a message naming both versions unless this is the agent of this very release
    /// (same protocol and same version): pii never talks to an agent of another release.
    pub fn check_compatible(&self) -> Result<(), String> {
        if self.protocol != crate::PROTOCOL_VERSION {
            Err(format!(
                "pi-bridge-agent {} speaks protocol {}, but pii {} speaks protocol {}",
                self.version,
                self.protocol,
                crate::VERSION,
                crate::PROTOCOL_VERSION
            ))
        } else if self.version != crate::VERSION {
            Err(format!(
                "pi-bridge-agent {} (protocol {}) is not the agent of pii {} (protocol {}): \
                 pii runs only the agent of its own release",
                self.version,
                self.protocol,
                crate::VERSION,
                crate::PROTOCOL_VERSION
            ))
        } else {
            Ok(())
        }
    }
}

/// `hello` params.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Hello {
    pub protocol: u32,
    pub client_version: String,
    /// The project directory as the user wrote it: absolute, `~`, `~/x`, or relative to the
    /// remote home. The agent resolves and canonicalises it.
    pub root: String,
    /// Widen the sandbox beyond the project root (must contain it). Default: the project root.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox_root: Option<String>,
    /// Take over a session whose link dropped (see [`crate::session`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume: Option<crate::session::Resume>,
    /// How long (ms) the agent keeps the session after its link drops without `session.end`.
    /// Default [`crate::session::DEFAULT_GRACE_MS`].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub grace_ms: Option<u64>,
    /// Check the project root against this trust gate and answer what it hides in
    /// [`HelloResult::trust`] (pii's notice, without a round trip of its own). Absent when the
    /// client shows nothing (`--trust-project`, `pii doctor`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gate: Option<crate::trust::Gate>,
}

/// `hello` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct HelloResult {
    pub protocol: u32,
    pub agent_version: String,
    pub facts: Facts,
    /// What a later `hello` needs to resume this session; absent when the agent cannot offer
    /// resumption (e.g. no writable runtime directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<crate::session::SessionTicket>,
    /// This `hello` resumed an existing session (processes and subscriptions live on).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub resumed: bool,
    /// What [`Hello::gate`] hides at the project root (empty: nothing); present exactly when
    /// the `hello` had a gate. A client that sent a gate refuses an answer without it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trust: Option<Vec<crate::trust::Finding>>,
}

/// What the agent knows of the remote, once per connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Facts {
    /// `uname -s`, lowercase (`linux`).
    pub os: String,
    /// `uname -m` (`x86_64`, `aarch64`).
    pub arch: String,
    pub user: String,
    pub uid: u32,
    pub gid: u32,
    pub home: String,
    pub hostname: String,
    /// The login shell from the passwd entry.
    pub shell: String,
    /// PATH as the login shell sets it (what commands run with).
    pub login_path: String,
    /// Canonical absolute project root: pi's `process.cwd()`.
    pub project_root: String,
    /// Canonical sandbox root (the project root unless widened).
    pub sandbox_root: String,
    /// The agent's pid on the remote (for diagnostics).
    pub agent_pid: u32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub git_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bash_version: Option<String>,
    pub has_rg: bool,
    pub has_fd: bool,
}

impl Facts {
    /// A plausible remote, for tests of code that consumes facts (feature `test-support`).
    #[cfg(any(test, feature = "test-support"))]
    pub fn example() -> Facts {
        Facts {
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "dev".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/dev".into(),
            hostname: "box".into(),
            shell: "/bin/bash".into(),
            login_path: "/usr/bin:/bin".into(),
            project_root: "/home/dev/app".into(),
            sandbox_root: "/home/dev/app".into(),
            agent_pid: 42,
            git_version: Some("2.39.2".into()),
            bash_version: None,
            has_rg: false,
            has_fd: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::roundtrip::{check, rejects_unknown};

    #[test]
    fn magic_line_roundtrip_and_noise() {
        let m = Magic {
            protocol: 1,
            version: "0.1.0".into(),
            nonce: None,
        };
        assert_eq!(m.line(), "PI-BRIDGE-AGENT protocol=1 version=0.1.0");
        let n = Magic::with_nonce(Some("0123456789abcdef".into()));
        assert!(
            n.line().ends_with(" nonce=0123456789abcdef"),
            "{}",
            n.line()
        );
        assert_eq!(Magic::parse(&n.line()), Some(n));
        // A nonce that is not one is not echoed (the client then skips the line).
        for bad in [
            "",
            "short",
            "0123456789ABCDEF",
            "0123456789abcdef\n",
            "0123456789abcdeg",
        ] {
            assert_eq!(Magic::with_nonce(Some(bad.into())).nonce, None, "{bad}");
            assert_eq!(announcement(Some(bad)), MAGIC_LINE, "{bad}");
        }
        assert_eq!(
            announcement(Some("0123456789abcdef")),
            format!("{} nonce=0123456789abcdef\n", MAGIC_LINE.trim_end())
        );
        assert_eq!(Magic::parse(&m.line()), Some(m.clone()));
        assert_eq!(
            Magic::parse("PI-BRIDGE-AGENT protocol=1 version=0.1.0\r"),
            Some(m)
        );
        assert_eq!(Magic::parse("Welcome to Ubuntu"), None);
        assert_eq!(Magic::parse("PI-BRIDGE-AGENTX protocol=1 version=1"), None);
        assert_eq!(Magic::parse("PI-BRIDGE-AGENT protocol=x version=1"), None);
    }

    #[test]
    fn version_mismatch_names_both() {
        let err = Magic {
            protocol: 99,
            version: "9.9.9".into(),
            nonce: None,
        }
        .check_compatible()
        .unwrap_err();
        assert!(err.contains("9.9.9") && err.contains("99"), "{err}");
        assert!(err.contains(&crate::PROTOCOL_VERSION.to_string()), "{err}");
        assert!(Magic::current().check_compatible().is_ok());
        // Same protocol, another release: refused too, naming both.
        let err = Magic {
            protocol: crate::PROTOCOL_VERSION,
            version: "0.0.1-other".into(),
            nonce: None,
        }
        .check_compatible()
        .unwrap_err();
        assert!(
            err.contains("0.0.1-other") && err.contains(crate::VERSION),
            "{err}"
        );
    }

    #[test]
    fn magic_line_constant_is_the_current_announcement() {
        assert_eq!(MAGIC_LINE, format!("{}\n", Magic::current().line()));
        assert!(MAGIC_LINE.starts_with(MAGIC_PREFIX));
        assert_eq!(
            crate::PROTOCOL_VERSION,
            Magic::parse(MAGIC_LINE).unwrap().protocol
        );
    }

    #[test]
    fn magic_found_inside_binary_bytes() {
        let mut bin = b"\x7fELF\0\0junk PI-BRIDGE-AGENT protocol=x \0".to_vec();
        bin.extend_from_slice(MAGIC_LINE.as_bytes());
        bin.extend_from_slice(b"nextliteral\0");
        assert_eq!(Magic::find_in(&bin), Some(Magic::current()));
        // A shell script's quoted line ends at the quote.
        let script = b"echo 'PI-BRIDGE-AGENT protocol=1 version=2.0.0-rc.1'\ncat\n";
        assert_eq!(
            Magic::find_in(script),
            Some(Magic {
                protocol: 1,
                version: "2.0.0-rc.1".into(),
                nonce: None,
            })
        );
        assert_eq!(Magic::find_in(b"no agent here"), None);
        assert_eq!(Magic::find_in(b"PI-BRIDGE-AGENT protocol="), None);
    }

    #[test]
    fn hello_roundtrip() {
        check(
            Hello {
                protocol: 1,
                client_version: "0.1.0".into(),
                root: "~/app".into(),
                sandbox_root: None,
                resume: None,
                grace_ms: None,
                gate: None,
            },
            r#"{"protocol":1,"clientVersion":"0.1.0","root":"~/app"}"#,
        );
        check(
            Hello {
                protocol: 1,
                client_version: "0.1.0".into(),
                root: "/p".into(),
                sandbox_root: None,
                resume: Some(crate::session::Resume {
                    session: "ab".into(),
                    secret: "cd".into(),
                    last_seq: 3,
                }),
                grace_ms: Some(500),
                gate: None,
            },
            r#"{"protocol":1,"clientVersion":"0.1.0","root":"/p","resume":{"session":"ab","secret":"cd","lastSeq":3},"graceMs":500}"#,
        );
        check(
            Hello {
                protocol: 1,
                client_version: "0.1.0".into(),
                root: "/p".into(),
                sandbox_root: None,
                resume: None,
                grace_ms: None,
                gate: Some(crate::trust::Gate {
                    config_dirs: vec![".pi".into()],
                    hidden: vec!["mcp.json".into()],
                    settings_file: "settings.json".into(),
                    settings_keys: vec!["theme".into()],
                }),
            },
            r#"{"protocol":1,"clientVersion":"0.1.0","root":"/p","gate":{"configDirs":[".pi"],"hidden":["mcp.json"],"settingsFile":"settings.json","settingsKeys":["theme"]}}"#,
        );
        rejects_unknown::<Hello>(r#"{"protocol":1,"clientVersion":"0","root":"/","x":1}"#);
        // A malformed gate is refused, not taken for no gate.
        for bad in [
            r#"{"protocol":1,"clientVersion":"0","root":"/","gate":{}}"#,
            r#"{"protocol":1,"clientVersion":"0","root":"/","gate":[".pi"]}"#,
            r#"{"protocol":1,"clientVersion":"0","root":"/","gate":{"configDirs":[".pi"],"hidden":[],"settingsFile":"s","settingsKeys":[],"more":1}}"#,
        ] {
            assert!(serde_json::from_str::<Hello>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn hello_result_roundtrip() {
        let facts = Facts::example();
        check(
            HelloResult {
                protocol: 1,
                agent_version: "0.1.0".into(),
                facts: facts.clone(),
                session: None,
                resumed: false,
                trust: None,
            },
            r#"{"protocol":1,"agentVersion":"0.1.0","facts":{"os":"linux","arch":"x86_64","user":"dev","uid":1000,"gid":1000,"home":"/home/dev","hostname":"box","shell":"/bin/bash","loginPath":"/usr/bin:/bin","projectRoot":"/home/dev/app","sandboxRoot":"/home/dev/app","agentPid":42,"gitVersion":"2.39.2","hasRg":false,"hasFd":true}}"#,
        );
        let r = HelloResult {
            protocol: 1,
            agent_version: "0.1.0".into(),
            facts,
            session: Some(crate::session::SessionTicket {
                id: "ab".into(),
                secret: "cd".into(),
                grace_ms: 60000,
            }),
            resumed: true,
            trust: None,
        };
        let text = serde_json::to_string(&r).unwrap();
        assert!(
            text.ends_with(
                r#""session":{"id":"ab","secret":"cd","graceMs":60000},"resumed":true}"#
            ),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<HelloResult>(&text).unwrap(), r);
        // The trust check's answer: empty (nothing hidden) and with findings.
        let with = |trust| HelloResult {
            protocol: 1,
            agent_version: "0.1.0".into(),
            facts: Facts::example(),
            session: None,
            resumed: false,
            trust,
        };
        let text = serde_json::to_string(&with(Some(vec![]))).unwrap();
        assert!(text.ends_with(r#","trust":[]}"#), "{text}");
        assert_eq!(
            serde_json::from_str::<HelloResult>(&text).unwrap(),
            with(Some(vec![]))
        );
        let found = with(Some(vec![crate::trust::Finding::Present {
            path: ".pi/extensions".into(),
        }]));
        let text = serde_json::to_string(&found).unwrap();
        assert!(
            text.ends_with(r#","trust":[{"kind":"present","path":".pi/extensions"}]}"#),
            "{text}"
        );
        assert_eq!(serde_json::from_str::<HelloResult>(&text).unwrap(), found);
        // A malformed answer is an error, never "nothing found".
        let bad = text.replace(r#""kind":"present""#, r#""kind":"maybe""#);
        assert!(serde_json::from_str::<HelloResult>(&bad).is_err(), "{bad}");
        let bad = text.replace(r#""trust":[{"#, r#""trust":{"x":[{"#);
        assert!(serde_json::from_str::<HelloResult>(&bad).is_err(), "{bad}");
    }
}
