//! The trust gate: what pi may see of an untrusted remote project (DESIGN.md "Trust").
//!
//! Through the bridge a project's files come from the remote host, yet pi runs on the laptop:
//! whatever in the project pi would *execute* or *write locally* must stay out of its sight
//! unless the user passed `pii --trust-project`. pii sends this gate to the preload in
//! [`crate::endpoint::SessionEnv`] and uses it for its one notice; the preload applies it to
//! every remote path, at any depth (a resumed session may adopt any cwd under the project):
//!
//! - `<configDir>/extensions` (code pi loads into its own process) and `<configDir>/mcp.json`
//!   (processes pi 1.x starts) are hidden: every call naming them or a path under them fails
//!   with `ENOENT`, listings omit them;
//! - `<configDir>/settings.json` reads back with only the keys of [`SETTINGS_KEYS`]: an
//!   allowlist, so a key a later pi adds stays hidden until someone decides it is harmless. The
//!   hidden keys are put back when pi writes the file.

use serde::{Deserialize, Serialize};

/// pi's project config directory (`piConfig.configDir` of its package.json, `.pi` by default).
pub const CONFIG_DIR: &str = ".pi";

/// Entries of a project config directory that are hidden whole.
pub const HIDDEN: [&str; 2] = ["extensions", "mcp.json"];

/// The settings file of a project config directory.
pub const SETTINGS_FILE: &str = "settings.json";

/// The keys of an untrusted project's `settings.json` pi may read: presentation, model choice,
/// limits and modes (pi 0.73 and 1.x, read from their settings schema). Hidden, by not being
/// here: code and where it comes from (`packages`, `extensions`, `skills`, `prompts`, `themes`),
/// commands (`npmCommand`, `selfUpdateCommand`, `shellPath`, `shellCommandPrefix`,
/// `externalEditor`), where pi writes or sends data (`sessionDir`, `httpProxy`,
/// `sessionShareDestination`), settings pi reads only from the user's own file
/// (`defaultProjectTrust`, `cacheWarming`, `deviceId`, analytics and telemetry), pi's own
/// bookkeeping (`lastChangelogVersion`, `extensionChangelogVersions`), and every key pi adds later.
pub const SETTINGS_KEYS: [&str; 40] = [
    "$schema",
    "defaultProvider",
    "defaultModel",
    "defaultThinkingLevel",
    "modelThinkingLevels",
    "enabledModels",
    "transport",
    "websockets",
    "steeringMode",
    "followUpMode",
    "queueMode",
    "theme",
    "compaction",
    "branchSummary",
    "retry",
    "hideThinkingBlock",
    "showCacheMissNotices",
    "quietStartup",
    "collapseChangelog",
    "enableSkillCommands",
    "terminal",
    "images",
    "defaultTools",
    "doubleEscapeAction",
    "treeFilterMode",
    "thinkingBudgets",
    "editorPaddingX",
    "outputPad",
    "autocompleteMaxVisible",
    "showHardwareCursor",
    "markdown",
    "warnings",
    "codemode",
    "httpIdleTimeoutMs",
    "websocketConnectTimeoutMs",
    "tuiMode",
    "fullscreenExitOutput",
    "fullscreenScrollbar",
    "fullscreenCopyOnSelect",
    "fullscreenWheelScrollLines",
];

/// The gate as the preload applies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Gate {
    /// Names of project config directories (`.pi`, and pi's `piConfig.configDir` if another).
    pub config_dirs: Vec<String>,
    /// Entries of a config directory hidden whole ([`HIDDEN`]).
    pub hidden: Vec<String>,
    /// The settings file name ([`SETTINGS_FILE`]).
    pub settings_file: String,
    /// Settings keys pi may read ([`SETTINGS_KEYS`]).
    pub settings_keys: Vec<String>,
}

impl Gate {
    /// The gate for pi with project config directory `config_dir` (`.pi` is always covered).
    pub fn new(config_dir: Option<&str>) -> Gate {
        let mut config_dirs = vec![CONFIG_DIR.to_string()];
        if let Some(d) = config_dir.filter(|d| *d != CONFIG_DIR && !d.is_empty()) {
            config_dirs.push(d.to_string());
        }
        Gate {
            config_dirs,
            hidden: HIDDEN.iter().map(|s| s.to_string()).collect(),
            settings_file: SETTINGS_FILE.to_string(),
            settings_keys: SETTINGS_KEYS.iter().map(|s| s.to_string()).collect(),
        }
    }

    /// The keys of a settings object that the gate hides, sorted; `None` when the
    /// text is not a JSON object (the preload then shows pi an empty object).
    pub fn hidden_keys(&self, settings: &[u8]) -> Option<Vec<String>> {
        let text = std::str::from_utf8(settings).ok()?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let v: serde_json::Map<String, serde_json::Value> = serde_json::from_str(text).ok()?;
        Some(
            v.keys()
                .filter(|k| !self.settings_keys.iter().any(|a| a == *k))
                .cloned()
                .collect(),
        )
    }
}

/// What the agent found of the gate at the project root, answered in `hello` when pii asks
/// ([`crate::hello::Hello::gate`]): pii's one notice comes from these, so it costs no round trip
/// of its own. `path` is relative to the project root (`.pi/extensions`). Nothing found, nothing
/// listed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "camelCase", deny_unknown_fields)]
pub enum Finding {
    /// A hidden entry exists (`lstat` succeeded: a dangling symlink counts).
    Present { path: String },
    /// The settings file has keys the gate hides (sorted).
    HiddenKeys { path: String, keys: Vec<String> },
    /// The settings file is not a plain JSON object: pi sees it empty.
    NotAnObject { path: String },
    /// Whether it is there could not be told (`code`: the errno, e.g. `EACCES`; `EFBIG` for a
    /// settings file too big to read at once). The gate hides it all the same.
    Unchecked { path: String, code: String },
}

impl Gate {
    /// Every name of the gate is one plain path component (the agent joins them to the project
    /// root): not empty, no `/`, not `.` or `..`, no NUL.
    pub fn check_names(&self) -> Result<(), String> {
        let names = self
            .config_dirs
            .iter()
            .chain(&self.hidden)
            .chain(std::iter::once(&self.settings_file));
        for n in names {
            if n.is_empty() || n == "." || n == ".." || n.contains(['/', '\0']) {
                return Err(format!(
                    "the trust gate names {n:?}, which is not one file name"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gate_roundtrip_and_hidden_keys() {
        let g = Gate::new(Some(".tau"));
        assert_eq!(g.config_dirs, [".pi", ".tau"]);
        assert_eq!(Gate::new(Some(".pi")).config_dirs, [".pi"]);
        crate::roundtrip::check(
            Gate {
                config_dirs: vec![".pi".into()],
                hidden: vec!["extensions".into()],
                settings_file: "settings.json".into(),
                settings_keys: vec!["theme".into()],
            },
            r#"{"configDirs":[".pi"],"hidden":["extensions"],"settingsFile":"settings.json","settingsKeys":["theme"]}"#,
        );
        let g = Gate::new(None);
        assert_eq!(
            g.hidden_keys(br#"{"theme":"dark","packages":[],"sessionDir":"/x","newKey":1}"#),
            Some(vec![
                "newKey".to_string(),
                "packages".to_string(),
                "sessionDir".to_string()
            ])
        );
        assert_eq!(
            g.hidden_keys("\u{feff}{\"npmCommand\":[\"x\"]}".as_bytes()),
            Some(vec!["npmCommand".to_string()])
        );
        assert_eq!(g.hidden_keys(b"[1]"), None);
        assert_eq!(g.hidden_keys(b"{ // jsonc\n}"), None);
    }

    #[test]
    fn finding_roundtrip() {
        use crate::roundtrip::{check, rejects_unknown};
        check(
            Finding::Present {
                path: ".pi/extensions".into(),
            },
            r#"{"kind":"present","path":".pi/extensions"}"#,
        );
        check(
            Finding::HiddenKeys {
                path: ".pi/settings.json".into(),
                keys: vec!["packages".into()],
            },
            r#"{"kind":"hiddenKeys","path":".pi/settings.json","keys":["packages"]}"#,
        );
        check(
            Finding::NotAnObject {
                path: ".pi/settings.json".into(),
            },
            r#"{"kind":"notAnObject","path":".pi/settings.json"}"#,
        );
        check(
            Finding::Unchecked {
                path: ".pi/mcp.json".into(),
                code: "EACCES".into(),
            },
            r#"{"kind":"unchecked","path":".pi/mcp.json","code":"EACCES"}"#,
        );
        rejects_unknown::<Finding>(r#"{"kind":"present","path":"x","extra":1}"#);
        for bad in [
            r#"{"kind":"gone","path":"x"}"#,
            r#"{"kind":"present"}"#,
            r#"{"kind":"hiddenKeys","path":"x"}"#,
            r#"{"path":"x"}"#,
        ] {
            assert!(serde_json::from_str::<Finding>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn gate_names_are_single_components() {
        assert_eq!(Gate::new(Some(".tau")).check_names(), Ok(()));
        for bad in ["", ".", "..", "a/b", "/etc", "x\0y"] {
            let mut g = Gate::new(None);
            g.config_dirs.push(bad.into());
            assert!(g.check_names().is_err(), "{bad:?}");
            let mut g = Gate::new(None);
            g.hidden.push(bad.into());
            assert!(g.check_names().is_err(), "{bad:?}");
            let mut g = Gate::new(None);
            g.settings_file = bad.into();
            assert!(g.check_names().is_err(), "{bad:?}");
        }
    }

    /// What the doc comment of [`SETTINGS_KEYS`] names as hidden is not allowed.
    #[test]
    fn no_key_is_both_allowed_and_named_hidden() {
        for k in [
            "packages",
            "extensions",
            "skills",
            "prompts",
            "themes",
            "npmCommand",
            "selfUpdateCommand",
            "shellPath",
            "shellCommandPrefix",
            "externalEditor",
            "sessionDir",
            "httpProxy",
            "sessionShareDestination",
            "defaultProjectTrust",
            "cacheWarming",
            "deviceId",
        ] {
            assert!(!SETTINGS_KEYS.contains(&k), "{k}");
        }
    }
}
