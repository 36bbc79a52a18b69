//! The endpoint between the preload and `pii`.
//!
//! `pii` listens on a Unix socket in its private scratch directory (0700; the socket 0600), so
//! other local users cannot connect at all, and closes a connection from another uid at accept.
//! A client's first line must be the session token
//! (lowercase hex, [`TOKEN_BYTES`] random bytes); `pii` compares it in constant time and on any
//! mismatch closes the connection without reading further. After it, the connection carries the
//! same JSON-RPC frames as the agent link: `pii` answers `session.info` itself and forwards every
//! other request to the agent (rewriting only the id), routing responses and subscription
//! notifications back to the connection that asked.
//!
//! The token and endpoint reach node through its environment only ([`TOKEN_ENV`],
//! [`SESSION_ENV`]), never argv or a file; the preload deletes both from `process.env` at start.

use serde::{Deserialize, Serialize};

/// Environment variable holding the token (hex).
pub const TOKEN_ENV: &str = "PII_TOKEN";
/// Environment variable holding [`SessionEnv`] as JSON.
pub const SESSION_ENV: &str = "PII_SESSION";
/// Random bytes in a token (at least; `authTokenLength` may raise it).
pub const TOKEN_BYTES: usize = 32;

/// What the preload needs before its first call, passed in [`SESSION_ENV`].
///
/// node starts while pii is still connecting, so the remote facts (`cwd`, `routes`,
/// `remotePath`, `remoteHome`) are usually absent: the preload then asks `session.info` (a
/// blocking call pii answers once `hello` is done) the first time it must decide whether a path
/// is remote or what `process.cwd()` is. When present (all four), they are used as they are.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionEnv {
    /// The endpoint: the Unix socket's absolute path (what pii gives); `host:port` is also
    /// understood by the preload (test endpoints).
    pub endpoint: String,
    /// Canonical remote project root: the initial `process.cwd()`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    /// Path prefixes routed to the remote (the sandbox root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub routes: Option<Vec<String>>,
    /// Remote login PATH.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_path: Option<String>,
    /// Remote home directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub remote_home: Option<String>,
    /// Milliseconds a call may take before it fails with ETIMEDOUT-like error.
    pub rpc_timeout_ms: u64,
    /// `pii --trust-project`: let pi see everything of the project. Absent or false: the
    /// preload applies [`SessionEnv::gate`] (DESIGN.md "Trust").
    #[serde(default)]
    pub trust_project: bool,
    /// What an untrusted project's files may show pi ([`crate::trust`]).
    pub gate: crate::trust::Gate,
    /// The local allowlist: paths that stay on this machine. Every other path pi or its child
    /// processes name is the remote's (DESIGN.md "Paths as pi sees them"). pii computes it
    /// before anything connects; nothing the agent says changes it.
    pub local: Vec<LocalPath>,
    /// Project-relative paths this pi looked up when it started before (pii learns them per pi
    /// version): the preload asks the agent to prefetch them with its change feed (`fs.changes`
    /// `prefetch`), so their first lookups are cache hits.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub prefetch: Vec<String>,
}

/// One entry of [`SessionEnv::local`]: an absolute, normalised path that names itself and
/// everything under it (the longest entry holding a path decides its kind).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocalPath {
    pub path: String,
    pub kind: LocalKind,
    /// What it is (`pi's agent dir`, `the terminal`…), for messages.
    pub why: String,
}

/// What node may do with a local path, and what pi's tools (what the model asks for) may.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum LocalKind {
    /// pi's own configuration and state (its agent dir, sessions): node reads and writes it;
    /// pi's tools may not touch it (keys, other projects' sessions, settings).
    Config,
    /// Code node runs (pi's and node's install dirs, pi's extension and package dirs): nothing
    /// writes it through node's fs; pi's tools may read it (pi's docs).
    Code,
    /// pi's private temp dir: node reads and writes it; pi's tools may read it (pi points the
    /// model at full bash output saved there).
    Temp,
    /// The terminal and a few devices: node's own; pi's tools may not touch them.
    Device,
    /// pii's scratch dir (node's cwd, the preload): nothing writes it; tools may not touch it.
    Private,
    /// Paths the user keeps local on purpose (`localPaths` of their own config): read and
    /// written by node and by pi's tools.
    User,
}

/// `session.info` result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SessionInfo {
    pub agent_version: String,
    pub facts: crate::Facts,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn gate() -> crate::trust::Gate {
        crate::trust::Gate {
            config_dirs: vec![".pi".into()],
            hidden: vec!["extensions".into()],
            settings_file: "settings.json".into(),
            settings_keys: vec!["theme".into()],
        }
    }

    #[test]
    fn session_env_roundtrip() {
        crate::roundtrip::check(
            SessionEnv {
                endpoint: "127.0.0.1:4000".into(),
                cwd: Some("/p".into()),
                routes: Some(vec!["/p".into()]),
                remote_path: Some("/usr/bin".into()),
                remote_home: Some("/home/u".into()),
                rpc_timeout_ms: 30000,
                trust_project: true,
                gate: gate(),
                local: vec![LocalPath {
                    path: "/l".into(),
                    kind: LocalKind::Config,
                    why: "w".into(),
                }],
                prefetch: vec!["AGENTS.md".into()],
            },
            r#"{"endpoint":"127.0.0.1:4000","cwd":"/p","routes":["/p"],"remotePath":"/usr/bin","remoteHome":"/home/u","rpcTimeoutMs":30000,"trustProject":true,"gate":{"configDirs":[".pi"],"hidden":["extensions"],"settingsFile":"settings.json","settingsKeys":["theme"]},"local":[{"path":"/l","kind":"config","why":"w"}],"prefetch":["AGENTS.md"]}"#,
        );
        // No trustProject: untrusted, the safe default. No gate or no local list: refused.
        let old: SessionEnv = serde_json::from_str(&format!(
            r#"{{"endpoint":"e","cwd":"/","routes":[],"remotePath":"","remoteHome":"","rpcTimeoutMs":1,"gate":{},"local":[]}}"#,
            serde_json::to_string(&gate()).unwrap()
        ))
        .unwrap();
        assert!(!old.trust_project);
        for missing in [
            r#"{"endpoint":"e","rpcTimeoutMs":1,"local":[]}"#,
            r#"{"endpoint":"e","rpcTimeoutMs":1,"gate":{"configDirs":[],"hidden":[],"settingsFile":"s","settingsKeys":[]}}"#,
        ] {
            assert!(
                serde_json::from_str::<SessionEnv>(missing).is_err(),
                "{missing}"
            );
        }
        // Started before the session is up: only what pii knows locally.
        crate::roundtrip::check(
            SessionEnv {
                endpoint: "127.0.0.1:4000".into(),
                cwd: None,
                routes: None,
                remote_path: None,
                remote_home: None,
                rpc_timeout_ms: 30000,
                trust_project: false,
                gate: gate(),
                local: vec![],
                prefetch: vec![],
            },
            r#"{"endpoint":"127.0.0.1:4000","rpcTimeoutMs":30000,"trustProject":false,"gate":{"configDirs":[".pi"],"hidden":["extensions"],"settingsFile":"settings.json","settingsKeys":["theme"]},"local":[]}"#,
        );
        crate::roundtrip::rejects_unknown::<SessionEnv>(
            r#"{"endpoint":"e","cwd":"/","routes":[],"remotePath":"","remoteHome":"","rpcTimeoutMs":1,"token":"x"}"#,
        );
    }
}
