//! The pi pii launches: its package (name, version, `engines.node`) read from the `package.json`
//! above its cli.js, whether a node can run it, and whether the pair is in the matrix pi-bridge
//! is tested on (`fixtures/matrix.json`, embedded at build time by `build.rs` as [`TESTED`]).
//!
//! A node older than pi's `engines.node` is refused (pi would die at once, e.g. pi 1.x on Node 20
//! with a SyntaxError about `enableCompileCache`); a pi or node outside the matrix is only named in
//! a one-line notice: a new pi release must keep working, or fail loudly, never silently.

use std::path::{Path, PathBuf};

/// pi's npm packages, the current name first (0.74 and later are published under it; 0.73.1 and
/// earlier under the second).
pub const PI_PACKAGES: [&str; 2] = [
    "@earendil-works/pi-coding-agent",
    "@mariozechner/pi-coding-agent",
];
/// What messages tell users to install.
pub const PI_PACKAGE: &str = PI_PACKAGES[0];

/// One cell of the tested matrix: a pi package and version on a Node major version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TestedCell {
    pub package: &'static str,
    pub version: &'static str,
    pub node_major: u64,
}

include!(concat!(env!("OUT_DIR"), "/matrix.rs"));

/// A version as (major, minor, patch).
pub type Version = (u64, u64, u64);

/// Parse `v20.18.1` (any suffix ignored).
pub fn parse_version(s: &str) -> Option<Version> {
    let s = s.trim().strip_prefix('v').unwrap_or(s.trim());
    let mut it = s.split(|c: char| !c.is_ascii_digit());
    Some((
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
        it.next()?.parse().ok()?,
    ))
}

/// One path component (no `/`, not empty, not `.` or `..`).
fn is_name(s: &str) -> bool {
    !s.is_empty() && s != "." && s != ".." && !s.contains('/') && !s.contains('\0')
}

/// The package a script belongs to: the nearest `package.json` with a `name` above it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Package {
    pub name: String,
    pub version: String,
    /// `engines.node`, as written.
    pub engines_node: Option<String>,
    pub manifest: PathBuf,
    /// `piConfig.name` (a fork's app name: its agent dir variable is `<NAME>_CODING_AGENT_DIR`).
    pub app_name: Option<String>,
    /// `piConfig.configDir` (a fork's `.pi`).
    pub config_dir: Option<String>,
}

impl Package {
    /// The package `cli` (a file) belongs to; `None` when no readable `package.json` with a name
    /// is above it.
    pub fn of(cli: &Path) -> Option<Package> {
        let mut dir = cli.parent();
        while let Some(d) = dir {
            let f = d.join("package.json");
            if let Ok(text) = std::fs::read_to_string(&f) {
                let v: serde_json::Value = serde_json::from_str(&text).ok()?;
                if let Some(name) = v["name"].as_str() {
                    return Some(Package {
                        name: name.to_string(),
                        version: v["version"].as_str().unwrap_or("?").to_string(),
                        engines_node: v["engines"]["node"].as_str().map(str::to_string),
                        manifest: f,
                        app_name: v["piConfig"]["name"].as_str().map(str::to_string),
                        config_dir: v["piConfig"]["configDir"].as_str().map(str::to_string),
                    });
                }
            }
            dir = d.parent();
        }
        None
    }

    /// `name@version`: what the learned prefetch is kept under (`crate::prefetch`).
    pub fn key(&self) -> String {
        format!("{}@{}", self.name, self.version)
    }

    /// The package's directory.
    pub fn dir(&self) -> &Path {
        self.manifest.parent().unwrap_or(Path::new("/"))
    }

    /// pi's project (and home) config directory name: `piConfig.configDir`, else `.pi`.
    pub fn config_dir_name(&self) -> &str {
        self.config_dir
            .as_deref()
            .filter(|d| is_name(d))
            .unwrap_or(".pi")
    }

    /// The environment variable naming pi's agent dir: `<APP>_CODING_AGENT_DIR`, APP from
    /// `piConfig.name` (`pi` by default), as pi's config.js derives it; `suffix` `DIR` or
    /// `SESSION_DIR`.
    pub fn agent_dir_env(&self, suffix: &str) -> String {
        let app = self
            .app_name
            .as_deref()
            .filter(|n| !n.is_empty())
            .unwrap_or("pi");
        format!("{}_CODING_AGENT_{suffix}", app.to_uppercase())
    }

    pub fn is_pi(&self) -> bool {
        PI_PACKAGES.contains(&self.name.as_str())
    }

    /// `pi 1.6.0 (@earendil-works/pi-coding-agent)`, or `<name> <version>` for another package.
    pub fn label(&self) -> String {
        if self.is_pi() {
            format!("pi {} ({})", self.version, self.name)
        } else {
            format!("{} {}", self.name, self.version)
        }
    }

    /// Node `v` against `engines.node`: `None` without one, `Err` when it is not a range pii
    /// understands.
    pub fn node_fit(&self, v: Version) -> Option<Result<Fit, String>> {
        self.engines_node.as_deref().map(|r| fit(r, v))
    }
}

/// A node version against a package's `engines.node`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fit {
    Yes,
    /// Below every alternative's lower bound: the package cannot run on it.
    TooOld,
    /// Outside the range otherwise (above an upper bound): it may still run.
    Outside,
}

/// Whether the node version `v` satisfies the npm range `range`: `||` alternatives of
/// space-separated comparators (`>=`, `>`, `<=`, `<`, `=`, `^`, `~`, bare and x-range versions like
/// `20.x`, hyphen ranges `a - b`), as npm reads `engines`. Prerelease tags are ignored.
pub fn fit(range: &str, v: Version) -> Result<Fit, String> {
    let mut too_old = true;
    for alt in range.split("||") {
        let bounds = alternative(alt).map_err(|e| format!("{range:?}: {e}"))?;
        let mut fails_low = false;
        let mut fails = false;
        for (op, b) in bounds {
            let ok = match op {
                Op::Ge => v >= b,
                Op::Gt => v > b,
                Op::Le => v <= b,
                Op::Lt => v < b,
            };
            if !ok {
                fails = true;
                fails_low |= matches!(op, Op::Ge | Op::Gt);
            }
        }
        if !fails {
            return Ok(Fit::Yes);
        }
        too_old &= fails_low;
    }
    Ok(if too_old { Fit::TooOld } else { Fit::Outside })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Op {
    Ge,
    Gt,
    Le,
    Lt,
}

/// A version with trailing parts left out or written `x`/`*`.
type Partial = (Option<u64>, Option<u64>, Option<u64>);

fn partial(s: &str) -> Result<Partial, String> {
    let s = s.strip_prefix('v').unwrap_or(s);
    // A prerelease or build tag after the version is ignored.
    let core = s.split(['-', '+']).next().unwrap_or("");
    let mut parts = [None; 3];
    let mut wild = false;
    let pieces: Vec<&str> = core.split('.').collect();
    if pieces.len() > 3 || core.is_empty() {
        return Err(format!("`{s}` is not a version"));
    }
    for (i, p) in pieces.iter().enumerate() {
        if matches!(*p, "x" | "X" | "*") {
            wild = true;
        } else if !wild && !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit()) {
            parts[i] = Some(p.parse().map_err(|_| format!("`{s}`: number too large"))?);
        } else if !wild {
            return Err(format!("`{s}` is not a version"));
        }
    }
    Ok((parts[0], parts[1], parts[2]))
}

/// The first version past a partial one (`1.2` → 1.3.0, `1` → 2.0.0).
fn next_after(p: Partial) -> Version {
    match p {
        (Some(m), Some(n), _) => (m, n + 1, 0),
        (Some(m), None, _) => (m + 1, 0, 0),
        _ => (0, 0, 0),
    }
}

fn floor(p: Partial) -> Version {
    (p.0.unwrap_or(0), p.1.unwrap_or(0), p.2.unwrap_or(0))
}

/// What matches nothing.
const NOTHING: (Op, Version) = (Op::Lt, (0, 0, 0));

/// One `||` alternative as bounds that must all hold.
fn alternative(alt: &str) -> Result<Vec<(Op, Version)>, String> {
    let mut tokens: Vec<String> = vec![];
    let mut pending_op = String::new();
    for t in alt.split_whitespace() {
        // `>= 22` is `>=22`.
        if matches!(t, ">=" | ">" | "<=" | "<" | "=" | "^" | "~") {
            pending_op = t.to_string();
            continue;
        }
        tokens.push(format!("{}{t}", std::mem::take(&mut pending_op)));
    }
    if !pending_op.is_empty() {
        return Err(format!("`{pending_op}` without a version"));
    }
    if tokens.len() == 3 && tokens[1] == "-" {
        let (a, b) = (partial(&tokens[0])?, partial(&tokens[2])?);
        let mut out = vec![];
        if a.0.is_some() {
            out.push((Op::Ge, floor(a)));
        }
        match b {
            (None, _, _) => {}
            (Some(_), Some(_), Some(_)) => out.push((Op::Le, floor(b))),
            _ => out.push((Op::Lt, next_after(b))),
        }
        return Ok(out);
    }
    let mut out = vec![];
    for t in &tokens {
        let (op, rest) = [">=", "<=", ">", "<", "=", "^", "~"]
            .iter()
            .find_map(|op| t.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("", t.as_str()));
        let p = partial(rest)?;
        let full = p.2.is_some();
        match (op, p) {
            (_, (None, _, _)) => {
                if matches!(op, ">" | "<") {
                    out.push(NOTHING);
                }
            }
            (">=", _) => out.push((Op::Ge, floor(p))),
            (">", _) if full => out.push((Op::Gt, floor(p))),
            (">", _) => out.push((Op::Ge, next_after(p))),
            ("<", _) => out.push((Op::Lt, floor(p))),
            ("<=", _) if full => out.push((Op::Le, floor(p))),
            ("<=", _) => out.push((Op::Lt, next_after(p))),
            ("" | "=", _) if full => {
                out.push((Op::Ge, floor(p)));
                out.push((Op::Le, floor(p)));
            }
            ("" | "=", _) => {
                out.push((Op::Ge, floor(p)));
                out.push((Op::Lt, next_after(p)));
            }
            ("~", (Some(m), None, _)) => {
                out.push((Op::Ge, (m, 0, 0)));
                out.push((Op::Lt, (m + 1, 0, 0)));
            }
            ("~", (Some(m), Some(n), _)) => {
                out.push((Op::Ge, floor(p)));
                out.push((Op::Lt, (m, n + 1, 0)));
            }
            ("^", (Some(m), minor, patch)) => {
                out.push((Op::Ge, floor(p)));
                out.push((
                    Op::Lt,
                    match (m, minor, patch) {
                        (0, Some(0), Some(z)) => (0, 0, z + 1),
                        (0, Some(n), _) => (0, n + 1, 0),
                        _ => (m + 1, 0, 0),
                    },
                ));
            }
            _ => return Err(format!("`{t}` is not a comparator")),
        }
    }
    Ok(out)
}

/// Whether pi (or, for another script, any pi) has been tested on Node major `node_major`.
pub fn is_tested(pkg: Option<&Package>, node_major: u64) -> bool {
    match pkg.filter(|p| p.is_pi()) {
        Some(p) => TESTED
            .iter()
            .any(|c| c.package == p.name && c.version == p.version && c.node_major == node_major),
        None => TESTED.iter().any(|c| c.node_major == node_major),
    }
}

/// The matrix in one phrase: `pi 1.6.0 on Node 26/24/22, pi 0.73.1 on Node 20`.
pub fn tested_summary() -> String {
    let mut groups: Vec<(&str, Vec<String>)> = vec![];
    for c in TESTED {
        match groups.iter_mut().find(|(v, _)| *v == c.version) {
            Some((_, nodes)) => nodes.push(c.node_major.to_string()),
            None => groups.push((c.version, vec![c.node_major.to_string()])),
        }
    }
    groups
        .iter()
        .map(|(v, nodes)| format!("pi {v} on Node {}", nodes.join("/")))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What is untested about running `pkg` on this node: the pi (or the node) is outside the tested
/// matrix, or pi's `engines.node` could not be checked; `None` for a tested pair. One line.
pub fn untested(pkg: Option<&Package>, node_text: &str, node: Version) -> Option<String> {
    let unchecked = match pkg.and_then(|p| p.node_fit(node)) {
        Some(Err(e)) => Some(format!(
            "; its engines.node {e} is not a range pii understands, so Node was not checked against it"
        )),
        Some(Ok(Fit::Outside)) => Some(format!(
            "; its engines.node {:?} does not include Node {node_text}",
            pkg.and_then(|p| p.engines_node.as_deref()).unwrap_or_default()
        )),
        _ => None,
    };
    if is_tested(pkg, node.0) && unchecked.is_none() {
        return None;
    }
    let what = match pkg.filter(|p| p.is_pi()) {
        Some(p) => format!("{} on Node {node_text}", p.label()),
        None => format!("Node {node_text}"),
    };
    Some(format!(
        "{what} is outside pi-bridge's tested matrix ({}){}",
        tested_summary(),
        unchecked.unwrap_or_default()
    ))
}

/// The line pii prints on stderr before pi starts when [`untested`] has something to say.
pub fn notice(pkg: Option<&Package>, node_text: &str, node: Version) -> Option<String> {
    untested(pkg, node_text, node).map(|what| {
        format!("pii: note: {what}; it should work, but if something misbehaves, `pii doctor` and this line help a bug report")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(s: &str) -> Version {
        parse_version(s).unwrap()
    }

    #[test]
    fn versions() {
        assert_eq!(parse_version("v20.18.1\n"), Some((20, 18, 1)));
        assert_eq!(parse_version("v22.0.0-nightly"), Some((22, 0, 0)));
        assert_eq!(parse_version("garbage"), None);
    }

    #[test]
    fn engines_ranges_as_npm_reads_them() {
        let yes = |r: &str, x: &str| assert_eq!(fit(r, v(x)), Ok(Fit::Yes), "{r} {x}");
        let old = |r: &str, x: &str| assert_eq!(fit(r, v(x)), Ok(Fit::TooOld), "{r} {x}");
        let out = |r: &str, x: &str| assert_eq!(fit(r, v(x)), Ok(Fit::Outside), "{r} {x}");
        // pi 1.6.0 and 0.73.1.
        yes(">=22.19.0", "22.19.0");
        yes(">=22.19.0", "26.12.1");
        old(">=22.19.0", "22.18.9");
        old(">=22.19.0", "20.20.2");
        yes(">=20.6.0", "20.20.2");
        old(">=20.6.0", "18.20.0");
        // Spaces after operators, partial and x-range versions, any.
        yes(">= 22", "22.0.0");
        yes("", "1.0.0");
        yes("*", "1.0.0");
        yes("22.x", "22.23.5");
        out("22.x", "24.0.0");
        old("22.x", "20.0.0");
        yes("22", "22.1.0");
        yes("=22.1.0", "22.1.0");
        out("22.1.0", "22.1.1");
        yes(">21", "22.0.0");
        old(">21", "21.9.9");
        yes(">21.1.1", "21.1.2");
        yes("<=22", "22.9.0");
        out("<=22", "23.0.0");
        out("<=22.1.0", "22.1.1");
        out("<22", "22.0.0");
        // Tilde and caret.
        yes("~22.19", "22.19.5");
        out("~22.19", "22.20.0");
        old("~22.19.2", "22.19.1");
        yes("~22", "22.99.0");
        yes("^22.19.0", "22.30.0");
        out("^22.19.0", "23.0.0");
        yes("^0.2.3", "0.2.9");
        out("^0.2.3", "0.3.0");
        out("^0.0.3", "0.0.4");
        // Alternatives, sets, hyphens.
        yes("^20.18.1 || >=22.12", "22.12.0");
        yes("^20.18.1 || >=22.12", "20.19.0");
        out("^20.18.1 || >=22.12", "21.0.0");
        old("^20.18.1 || >=22.12", "20.18.0");
        yes(">=22 <24", "23.1.0");
        out(">=22 <24", "24.0.0");
        yes("22.19.0 - 24", "24.5.0");
        out("22.19.0 - 24", "25.0.0");
        old("22.19.0 - 24", "22.18.0");
        yes(">=22.19.0-rc.1", "22.19.0");
        out("<*", "1.0.0");
        // Not ranges.
        for bad in ["garbage", ">=", ">=22.a", "22.1.2.3", "~>22", "node 22"] {
            assert!(fit(bad, (22, 0, 0)).is_err(), "{bad}");
        }
    }

    fn package(dir: &Path, json: &str) -> PathBuf {
        let dist = dir.join("pkg/dist/bundle");
        std::fs::create_dir_all(&dist).unwrap();
        // A nested package.json without a name (`{"type":"module"}`) is not the package.
        std::fs::write(dist.join("package.json"), r#"{"type":"module"}"#).unwrap();
        std::fs::write(dist.join("cli.js"), "").unwrap();
        std::fs::write(dir.join("pkg/package.json"), json).unwrap();
        dist.join("cli.js")
    }

    #[test]
    fn the_package_above_the_cli() {
        let d = tempfile::tempdir().unwrap();
        let cli = package(
            d.path(),
            r#"{"name":"@earendil-works/pi-coding-agent","version":"1.6.0","engines":{"node":">=22.19.0"}}"#,
        );
        let p = Package::of(&cli).unwrap();
        assert_eq!(p.name, "@earendil-works/pi-coding-agent");
        assert_eq!(p.version, "1.6.0");
        assert_eq!(p.engines_node.as_deref(), Some(">=22.19.0"));
        assert_eq!(p.manifest, d.path().join("pkg/package.json"));
        assert!(p.is_pi());
        assert_eq!(p.label(), "pi 1.6.0 (@earendil-works/pi-coding-agent)");
        assert_eq!(p.key(), "@earendil-works/pi-coding-agent@1.6.0");
        assert_eq!(p.node_fit(v("20.20.2")), Some(Ok(Fit::TooOld)));
        let old = package(
            d.path(),
            r#"{"name":"@mariozechner/pi-coding-agent","version":"0.73.1"}"#,
        );
        let p = Package::of(&old).unwrap();
        assert!(p.is_pi() && p.engines_node.is_none() && p.node_fit((20, 0, 0)).is_none());
        let other = package(d.path(), r#"{"name":"list-files","version":"1.0.0"}"#);
        let p = Package::of(&other).unwrap();
        assert!(!p.is_pi());
        assert_eq!(p.label(), "list-files 1.0.0");
        let bad = package(d.path(), "{not json");
        assert_eq!(Package::of(&bad), None);
    }

    /// The embedded matrix is fixtures/matrix.json, read again here, with each cell's package.
    #[test]
    fn the_embedded_matrix_is_the_fixture() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("../fixtures");
        let m: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(fixtures.join("matrix.json")).unwrap())
                .unwrap();
        let cells = m["cells"].as_array().unwrap();
        assert_eq!(TESTED.len(), cells.len());
        for (c, t) in cells.iter().zip(TESTED) {
            assert_eq!(c["pi"], t.version);
            assert_eq!(c["node"], t.node_major.to_string());
            let pkg: serde_json::Value = serde_json::from_str(
                &std::fs::read_to_string(fixtures.join("pi").join(t.version).join("package.json"))
                    .unwrap(),
            )
            .unwrap();
            assert!(pkg["dependencies"].get(t.package).is_some(), "{t:?}");
            assert!(PI_PACKAGES.contains(&t.package), "{t:?}");
        }
    }

    #[test]
    fn notices_name_what_is_untested_and_nothing_else() {
        let pi = |name: &str, version: &str, engines: Option<&str>| Package {
            name: name.into(),
            version: version.into(),
            engines_node: engines.map(Into::into),
            manifest: PathBuf::from("/x/package.json"),
            app_name: None,
            config_dir: None,
        };
        let cell = TESTED[0];
        let tested = pi(cell.package, cell.version, Some(">=1"));
        let node = (cell.node_major, 1, 0);
        let text = format!("v{}.1.0", cell.node_major);
        assert_eq!(notice(Some(&tested), &text, node), None);
        assert!(is_tested(Some(&tested), cell.node_major));
        // A newer pi, the same pi on an untested Node, a range pii cannot read: one line each.
        let newer = pi(cell.package, "99.0.0", Some(">=1"));
        let n = notice(Some(&newer), &text, node).unwrap();
        assert!(n.starts_with("pii: note: pi 99.0.0 ("), "{n}");
        assert!(n.contains(&tested_summary()) && !n.contains('\n'), "{n}");
        let n = notice(Some(&tested), "v99.0.0", (99, 0, 0)).unwrap();
        assert!(
            n.contains(&format!("pi {} (", cell.version)) && n.contains("Node v99.0.0"),
            "{n}"
        );
        let odd = pi(cell.package, cell.version, Some("node>=22"));
        let n = notice(Some(&odd), &text, node).unwrap();
        assert!(n.contains("not a range pii understands"), "{n}");
        let capped = pi(cell.package, cell.version, Some("<1"));
        let n = notice(Some(&capped), &text, node).unwrap();
        assert!(n.contains("does not include Node"), "{n}");
        // Another script: only an untested Node is worth a line.
        let script = pi("list-files", "1.0.0", None);
        assert_eq!(notice(Some(&script), &text, node), None);
        assert_eq!(notice(None, &text, node), None);
        assert!(notice(None, "v99.0.0", (99, 0, 0)).is_some());
        let summary = tested_summary();
        assert!(summary.starts_with(&format!("pi {} on Node {}", cell.version, cell.node_major)));
    }
}
