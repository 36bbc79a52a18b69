//! The boundary between this machine and the remote (DESIGN.md "Paths as pi sees them").
//!
//! - [`local_paths`]: the allowlist of paths that stay local. Every other path pi or a process
//!   it starts names is the remote's (the preload routes by exclusion), so nothing the remote or
//!   the model says can reach a laptop file outside this list. Computed here, before anything
//!   connects, from what pii knows locally; the agent cannot change it.
//! - [`check_roots`]: what the agent reports about its roots, checked against what pii asked
//!   for and against the allowlist; anything else stops pii.

use crate::pi::Package;
use protocol::endpoint::{LocalKind, LocalPath};
use std::ffi::OsString;
use std::path::{Component, Path, PathBuf};

/// Devices node and pi's terminal UI use by path.
pub const DEVICES: [&str; 8] = [
    "/dev/null",
    "/dev/tty",
    "/dev/stdin",
    "/dev/stdout",
    "/dev/stderr",
    "/dev/pts",
    "/dev/urandom",
    "/dev/random",
];

/// Entries of pi's agent dir that hold code pi loads (its user extensions and installed
/// packages): nothing writes them under pii, so a file pi's tools were talked into writing
/// there can never become code that runs here.
pub const AGENT_CODE_DIRS: [&str; 3] = ["extensions", "npm", "git"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum BoundaryError {
    #[error("{what} is `/`: pii keeps no such path local (everything would stay on this machine)")]
    Root { what: String },
    #[error("{what} {path:?} is not an absolute path pii can use")]
    NotAbsolute { what: String, path: String },
    #[error("the agent on the remote answered `hello` with {what} {path:?}, which {why}; a pi-bridge agent never does this: the remote (or something in its login scripts that answered for the agent) may be hostile. pii stopped before pi saw anything of it")]
    Lying {
        what: &'static str,
        path: String,
        why: String,
    },
    #[error("the remote {what} {remote} {relation} {local} ({why}), which stays on this machine: pi could not tell the two apart. Pick a project (and sandboxRoot) away from it")]
    Overlap {
        what: &'static str,
        remote: String,
        relation: &'static str,
        local: String,
        why: String,
    },
}

/// What the allowlist is computed from.
pub struct Inputs<'a> {
    pub home: Option<&'a Path>,
    /// pii's current directory: relative environment values are taken from it.
    pub cwd: &'a Path,
    pub env: &'a dyn Fn(&str) -> Option<OsString>,
    /// The script pii launches (pi's cli.js), canonical.
    pub script: &'a Path,
    pub package: Option<&'a Package>,
    pub node: &'a Path,
    pub scratch: &'a Path,
    /// The preload's directory (in the scratch dir, or pii's stable one: `launch::stable_preload`).
    pub preload: &'a Path,
    pub temp: &'a Path,
    /// `localPaths` of the user's own config.
    pub user_paths: &'a [PathBuf],
    pub pi_args: &'a [OsString],
}

/// The allowlist and the environment node gets with it (pi's agent dir variables made
/// absolute, so pi never takes them relative to its remote cwd).
#[derive(Debug, Default)]
pub struct Boundary {
    pub local: Vec<LocalPath>,
    pub env: Vec<(String, PathBuf)>,
}

impl Boundary {
    fn add(&mut self, p: &Path, kind: LocalKind, why: &str) -> Result<(), BoundaryError> {
        let Some(abs) = normalize(p) else {
            return Err(BoundaryError::NotAbsolute {
                what: why.to_string(),
                path: p.display().to_string(),
            });
        };
        if abs == "/" {
            return Err(BoundaryError::Root {
                what: why.to_string(),
            });
        }
        let mut forms = vec![abs];
        // The canonical form too: code that resolves symlinks (realpath) names that one.
        if let Some(real) = std::fs::canonicalize(p).ok().and_then(|r| normalize(&r)) {
            if real != "/" && !forms.contains(&real) {
                forms.push(real);
            }
        }
        for f in forms {
            if !self.local.iter().any(|l| l.path == f && l.kind == kind) {
                self.local.push(LocalPath {
                    path: f,
                    kind,
                    why: why.to_string(),
                });
            }
        }
        Ok(())
    }

    /// The entry that decides for `path` (the longest one holding it), if any.
    #[cfg(test)]
    pub fn find(&self, path: &str) -> Option<&LocalPath> {
        find(&self.local, path)
    }
}

/// The longest entry of `local` holding `path`.
#[cfg(test)]
pub fn find<'a>(local: &'a [LocalPath], path: &str) -> Option<&'a LocalPath> {
    local
        .iter()
        .filter(|l| is_under(path, &l.path))
        .max_by_key(|l| l.path.len())
}

/// Whether `path` is `dir` or under it (both absolute and normalised).
pub fn is_under(path: &str, dir: &str) -> bool {
    path == dir
        || (dir == "/" && path.starts_with('/'))
        || (path.starts_with(dir) && path.as_bytes().get(dir.len()) == Some(&b'/'))
}

/// An absolute path with `.`, `..` and repeated or trailing slashes resolved lexically, as
/// UTF-8; `None` when `p` is relative or not UTF-8.
pub fn normalize(p: &Path) -> Option<String> {
    if !p.is_absolute() {
        return None;
    }
    let mut parts: Vec<&str> = vec![];
    for c in p.components() {
        match c {
            Component::RootDir | Component::CurDir => {}
            Component::ParentDir => {
                parts.pop();
            }
            Component::Normal(s) => parts.push(s.to_str()?),
            Component::Prefix(_) => return None,
        }
    }
    Some(format!("/{}", parts.join("/")))
}

/// `~` and `~/x` as pi expands them (the local home), a relative path from `cwd`.
fn absolute(value: &std::ffi::OsStr, home: Option<&Path>, cwd: &Path) -> PathBuf {
    let s = value.to_string_lossy();
    let p = match (s.as_ref(), home) {
        ("~", Some(h)) => h.to_path_buf(),
        (s, Some(h)) if s.starts_with("~/") => h.join(&s[2..]),
        _ => PathBuf::from(value),
    };
    if p.is_absolute() {
        p
    } else {
        cwd.join(p)
    }
}

/// The `--session-dir` values among pi's arguments (before a lone `--`).
fn session_dir_args(args: &[OsString]) -> Vec<OsString> {
    let mut out = vec![];
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let s = a.to_string_lossy();
        if s == "--" {
            break;
        }
        if s == "--session-dir" {
            if let Some(v) = it.next() {
                out.push(v.clone());
            }
        } else if let Some(v) = s.strip_prefix("--session-dir=") {
            out.push(OsString::from(v));
        }
    }
    out
}

/// The directories Node looks for `dir`'s dependencies in: `dir` itself, every ancestor named
/// `node_modules`, and each ancestor's existing `node_modules`.
fn module_dirs(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![dir.to_path_buf()];
    let mut cur = Some(dir);
    while let Some(d) = cur {
        if d.file_name().is_some_and(|n| n == "node_modules") {
            out.push(d.to_path_buf());
        } else if d.join("node_modules").is_dir() {
            out.push(d.join("node_modules"));
        }
        cur = d.parent();
    }
    out
}

/// The allowlist for a session (see the module doc and README "What stays local").
pub fn local_paths(i: &Inputs) -> Result<Boundary, BoundaryError> {
    let mut b = Boundary::default();
    let config_dir = i.package.map_or(".pi", Package::config_dir_name);
    let env_name = |suffix: &str| {
        i.package.map_or(format!("PI_CODING_AGENT_{suffix}"), |p| {
            p.agent_dir_env(suffix)
        })
    };

    // pi's agent dir: its settings, keys, sessions, extensions.
    let agent_var = env_name("DIR");
    let agent_dir = match (i.env)(&agent_var).filter(|v| !v.is_empty()) {
        Some(v) => {
            let abs = absolute(&v, i.home, i.cwd);
            b.env.push((agent_var, abs.clone()));
            Some(abs)
        }
        None => i.home.map(|h| h.join(config_dir).join("agent")),
    };
    if let Some(dir) = &agent_dir {
        b.add(dir, LocalKind::Config, "pi's agent dir")?;
        for sub in AGENT_CODE_DIRS {
            b.add(
                &dir.join(sub),
                LocalKind::Private,
                "pi's extensions and packages (read-only under pii)",
            )?;
        }
    }
    // Where pi keeps sessions when told so by the user.
    let session_var = env_name("SESSION_DIR");
    if let Some(v) = (i.env)(&session_var).filter(|v| !v.is_empty()) {
        let abs = absolute(&v, i.home, i.cwd);
        b.add(&abs, LocalKind::Config, "pi's session dir")?;
        b.env.push((session_var, abs));
    }
    for v in session_dir_args(i.pi_args) {
        let abs = absolute(&v, i.home, i.cwd);
        b.add(&abs, LocalKind::Config, "pi's --session-dir")?;
    }
    // pi's user skills outside its agent dir (pi 1.x).
    if let Some(h) = i.home {
        b.add(
            &h.join(".agents").join("skills"),
            LocalKind::Config,
            "pi's user skills",
        )?;
    }
    // The code node runs: pi's package (or the script's directory) and where its dependencies
    // are found; node's global modules.
    let code = match i.package {
        Some(p) => p.dir().to_path_buf(),
        None => i
            .script
            .parent()
            .map_or_else(|| PathBuf::from("/"), Path::to_path_buf),
    };
    for d in module_dirs(&code) {
        b.add(&d, LocalKind::Code, "pi's install dir")?;
    }
    let mut nodes = vec![i.node.to_path_buf()];
    if let Ok(real) = std::fs::canonicalize(i.node) {
        nodes.push(real);
    }
    for n in nodes {
        b.add(&n, LocalKind::Code, "node itself")?;
        if let Some(prefix) = n.parent().and_then(Path::parent) {
            let global = prefix.join("lib").join("node_modules");
            if global.is_dir() {
                b.add(&global, LocalKind::Code, "node's global modules")?;
            }
        }
    }
    b.add(i.scratch, LocalKind::Private, "pii's scratch dir")?;
    b.add(i.preload, LocalKind::Private, "pii's preload")?;
    b.add(i.temp, LocalKind::Temp, "pi's private temp dir")?;
    for d in DEVICES {
        b.add(Path::new(d), LocalKind::Device, "the terminal")?;
    }
    for p in i.user_paths {
        let abs = absolute(p.as_os_str(), i.home, i.cwd);
        b.add(&abs, LocalKind::User, "localPaths of your config")?;
    }
    Ok(b)
}

/// The roots the agent reported, checked: both normalised absolute paths, never `/`; the
/// project inside the sandbox; the sandbox the project itself unless `sandboxRoot` was
/// configured; and neither holding nor inside any local path.
pub fn check_roots(
    facts: &protocol::Facts,
    sandbox_configured: bool,
    local: &[LocalPath],
) -> Result<(), BoundaryError> {
    let lie = |what: &'static str, path: &str, why: &str| BoundaryError::Lying {
        what,
        path: path.to_string(),
        why: why.to_string(),
    };
    let roots = [
        ("project root", facts.project_root.as_str()),
        ("sandbox root", facts.sandbox_root.as_str()),
    ];
    for (what, p) in roots {
        if normalize(Path::new(p)).as_deref() != Some(p) {
            return Err(lie(what, p, "is not a normalised absolute path"));
        }
        if p == "/" {
            return Err(lie(what, p, "would route every path to the remote"));
        }
    }
    if !is_under(&facts.project_root, &facts.sandbox_root) {
        return Err(lie(
            "sandbox root",
            &facts.sandbox_root,
            &format!("does not hold the project root {:?}", facts.project_root),
        ));
    }
    if !sandbox_configured && facts.project_root != facts.sandbox_root {
        return Err(lie(
            "sandbox root",
            &facts.sandbox_root,
            &format!(
                "is not the project root {:?} although pii asked for no wider sandbox",
                facts.project_root
            ),
        ));
    }
    for (what, remote) in [
        ("project", facts.project_root.as_str()),
        ("sandbox root", facts.sandbox_root.as_str()),
    ] {
        for l in local {
            let relation = if is_under(&l.path, remote) {
                "holds"
            } else if is_under(remote, &l.path) {
                "is inside"
            } else {
                continue;
            };
            return Err(BoundaryError::Overlap {
                what,
                remote: remote.to_string(),
                relation,
                local: l.path.clone(),
                why: l.why.clone(),
            });
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs<'a>(
        home: &'a Path,
        env: &'a dyn Fn(&str) -> Option<OsString>,
        script: &'a Path,
        scratch: &'a Path,
        args: &'a [OsString],
    ) -> Inputs<'a> {
        Inputs {
            home: Some(home),
            cwd: Path::new("/work"),
            env,
            script,
            package: None,
            node: Path::new("/nonexistent/bin/node"),
            scratch,
            preload: Path::new("/c/preload/0123"),
            temp: Path::new("/s/tmp"),
            user_paths: &[],
            pi_args: args,
        }
    }

    #[test]
    fn normalising() {
        assert_eq!(normalize(Path::new("/a/./b//c/../d/")).unwrap(), "/a/b/d");
        assert_eq!(normalize(Path::new("/..")).unwrap(), "/");
        assert_eq!(normalize(Path::new("rel")), None);
        assert!(is_under("/a/b", "/a") && is_under("/a", "/a") && is_under("/x", "/"));
        assert!(!is_under("/ab", "/a") && !is_under("/a", "/a/b"));
    }

    #[test]
    fn the_allowlist_of_a_plain_session() {
        let none = |_: &str| None;
        let args = [
            OsString::from("--session-dir"),
            OsString::from("~/sess"),
            OsString::from("--session-dir=/abs/s2"),
            OsString::from("--"),
            OsString::from("--session-dir=/after"),
        ];
        let b = local_paths(&inputs(
            Path::new("/h"),
            &none,
            Path::new("/opt/tool/cli.js"),
            Path::new("/s"),
            &args,
        ))
        .unwrap();
        let kind = |p: &str| b.find(p).map(|l| l.kind);
        assert_eq!(kind("/h/.pi/agent/auth.json"), Some(LocalKind::Config));
        assert_eq!(
            kind("/h/.pi/agent/extensions/x.ts"),
            Some(LocalKind::Private)
        );
        assert_eq!(kind("/h/.pi/agent/npm"), Some(LocalKind::Private));
        assert_eq!(kind("/h/sess/a.jsonl"), Some(LocalKind::Config));
        assert_eq!(kind("/abs/s2"), Some(LocalKind::Config));
        assert_eq!(kind("/after"), None);
        assert_eq!(
            kind("/h/.agents/skills/s/SKILL.md"),
            Some(LocalKind::Config)
        );
        assert_eq!(kind("/opt/tool/lib.js"), Some(LocalKind::Code));
        assert_eq!(kind("/s/preload/index.cjs"), Some(LocalKind::Private));
        assert_eq!(kind("/s/tmp/pi-bash-1.log"), Some(LocalKind::Temp));
        assert_eq!(kind("/dev/pts/3"), Some(LocalKind::Device));
        for remote in [
            "/h/.ssh/id_ed25519",
            "/h/.bashrc",
            "/tmp/AGENTS.md",
            "/etc/passwd",
            "/h/.pi/x",
            "/proc/self/environ",
            "/dev/shm/x",
        ] {
            assert_eq!(kind(remote), None, "{remote}");
        }
        assert!(b.env.is_empty());
    }

    #[test]
    fn agent_dir_variables_are_made_absolute_for_node() {
        let env = |k: &str| match k {
            "PI_CODING_AGENT_DIR" => Some(OsString::from("rel/agent")),
            "PI_CODING_AGENT_SESSION_DIR" => Some(OsString::from("~/s")),
            _ => None,
        };
        let b = local_paths(&inputs(
            Path::new("/h"),
            &env,
            Path::new("/opt/cli.js"),
            Path::new("/s"),
            &[],
        ))
        .unwrap();
        assert_eq!(
            b.env,
            vec![
                (
                    "PI_CODING_AGENT_DIR".to_string(),
                    PathBuf::from("/work/rel/agent")
                ),
                (
                    "PI_CODING_AGENT_SESSION_DIR".to_string(),
                    PathBuf::from("/h/s")
                ),
            ]
        );
        assert_eq!(
            b.find("/work/rel/agent/settings.json").unwrap().kind,
            LocalKind::Config
        );
        assert!(b.find("/h/.pi/agent/auth.json").is_none());
        // `/` is never kept local.
        let root = |k: &str| (k == "PI_CODING_AGENT_DIR").then(|| OsString::from("/"));
        assert!(matches!(
            local_paths(&inputs(
                Path::new("/h"),
                &root,
                Path::new("/o/c.js"),
                Path::new("/s"),
                &[]
            )),
            Err(BoundaryError::Root { .. })
        ));
    }

    fn facts(project: &str, sandbox: &str) -> protocol::Facts {
        protocol::Facts {
            project_root: project.into(),
            sandbox_root: sandbox.into(),
            ..protocol::Facts::example()
        }
    }

    #[test]
    fn roots_the_agent_reports_are_checked() {
        let local = vec![LocalPath {
            path: "/home/a/.pi/agent".into(),
            kind: LocalKind::Config,
            why: "pi's agent dir".into(),
        }];
        check_roots(&facts("/srv/app", "/srv/app"), false, &local).unwrap();
        check_roots(&facts("/srv/app", "/srv"), true, &local).unwrap();
        let err = |f, configured| check_roots(&f, configured, &local).unwrap_err().to_string();
        for (f, configured, want) in [
            (facts("/", "/"), false, "\"/\""),
            (facts("/srv/app", "/"), true, "\"/\""),
            (
                facts("/srv/app", "/srv"),
                false,
                "asked for no wider sandbox",
            ),
            (
                facts("/srv/app", "/opt"),
                true,
                "does not hold the project root",
            ),
            (facts("/srv/app/", "/srv/app/"), false, "normalised"),
            (facts("/srv/../etc", "/srv/../etc"), false, "normalised"),
            (facts("relative", "relative"), false, "normalised"),
            (
                facts("/home/a", "/home/a"),
                false,
                "holds /home/a/.pi/agent",
            ),
            (
                facts("/home/a/.pi/agent/x", "/home/a/.pi/agent/x"),
                false,
                "is inside /home/a/.pi/agent",
            ),
            (
                facts("/home/a/p", "/home"),
                true,
                "sandbox root /home holds",
            ),
        ] {
            let e = err(f, configured);
            assert!(e.contains(want), "{want}: {e}");
        }
    }
}
