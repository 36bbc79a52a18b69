//! Path confinement: every fs path must resolve inside the sandbox root.
//!
//! A path is checked on its canonical form, which this module computes itself, component by
//! component (like `realpath(3)`, but a missing tail is allowed so `mkdir -p` and new files work):
//!
//! * it must be absolute (`EINVAL` otherwise) and must not contain NUL (`EACCES`, like any other
//!   refused path: the preload never sends one, so a NUL is treated as an attack, not a typo);
//! * `..` is applied to the canonical prefix, so `/root/../etc` is `/etc`: refused;
//! * every symlink met is followed (absolute and relative targets, at most 40 — `ELOOP`), so a
//!   link anywhere in the path that leads outside is refused; a dangling link is followed too, so
//!   a write through it cannot create a file outside;
//! * [`Follow::NotLast`] (lstat, unlink, rm, rename, readlink, symlink, lutimes…): the parent is
//!   canonicalised and the final name kept, because those calls act on the link itself;
//! * the first missing component ends the walk; the rest is appended as is (a `..` after a
//!   missing component is `ENOENT`, as the kernel would say).
//!
//! A refused path is `EACCES` with a `detail` naming the sandbox root; nothing is touched (the
//! walk only lstats and readlinks). The returned path is canonical, and callers use it for the
//! real syscall, so the check and the use agree unless someone races a symlink into the tree
//! between them (processes run unsandboxed as the same user anyway; this guards pi's fs calls).

use protocol::Errno;
use std::ffi::OsString;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};

/// At most this many symlinks in one resolution (Linux's own limit).
const MAX_LINKS: usize = 40;

/// Whether the final component is followed if it is a symlink.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Follow {
    /// stat, open, chmod…: the final symlink is followed too.
    All,
    /// lstat, unlink, rename, readlink…: act on the final name itself.
    NotLast,
}

/// The sandbox: one canonical root directory.
#[derive(Debug, Clone)]
pub struct Sandbox {
    root: PathBuf,
}

impl Sandbox {
    /// `root` must already be canonical (it is, coming from `hello`).
    pub fn new(root: PathBuf) -> Self {
        Sandbox { root }
    }

    /// Whether a canonical path lies inside the root (or is it).
    pub fn contains(&self, canonical: &Path) -> bool {
        canonical.starts_with(&self.root)
    }

    /// Check `path` and return its canonical form for the real syscall. Errors carry `syscall`
    /// and `path` exactly as given, as Node reports them.
    pub fn resolve(&self, path: &str, follow: Follow, syscall: &str) -> Result<PathBuf, Errno> {
        if path.contains('\0') {
            return Err(
                Errno::new("EACCES", syscall, Some(&path.replace('\0', "\\0")))
                    .with_detail("the path contains a NUL byte; refused by the sandbox"),
            );
        }
        if !path.starts_with('/') {
            return Err(Errno::new("EINVAL", syscall, Some(path))
                .with_detail("paths sent to pi-bridge-agent must be absolute"));
        }
        let p = Path::new(path);
        let follow_last = follow == Follow::All
            || path.ends_with('/')
            || path.ends_with("/.")
            || path.ends_with("/..")
            || p.file_name().is_none();
        let resolved = if follow_last {
            self.walk(p)
        } else {
            match (p.parent(), p.file_name()) {
                (Some(parent), Some(name)) => self.walk(parent).map(|d| d.join(name)),
                _ => self.walk(p),
            }
        };
        let resolved = resolved.map_err(|e| Errno::from_io(&e, syscall, Some(path)))?;
        if self.contains(&resolved) {
            Ok(resolved)
        } else {
            Err(self.refused(path, &resolved, syscall))
        }
    }

    /// The EACCES error for a path outside the root.
    pub fn refused(&self, path: &str, resolved: &Path, syscall: &str) -> Errno {
        Errno::new("EACCES", syscall, Some(path)).with_detail(format!(
            "'{}' is outside the sandbox root '{}'",
            resolved.display(),
            self.root.display()
        ))
    }

    /// Canonicalise an absolute path, following every symlink; a missing tail is kept as is.
    fn walk(&self, path: &Path) -> io::Result<PathBuf> {
        // Components still to visit, last first (so `pop` yields the next one).
        let mut pending: Vec<OsString> = Vec::new();
        let mut out;
        // Fast start: the root is canonical, so a lexical prefix equal to it needs no lstat.
        match path.strip_prefix(&self.root) {
            Ok(rest) if !self.root.as_os_str().is_empty() => {
                out = self.root.clone();
                push_components(&mut pending, rest);
            }
            _ => {
                out = PathBuf::from("/");
                push_components(&mut pending, path);
            }
        }
        let mut links = 0;
        while let Some(comp) = pending.pop() {
            match comp.as_bytes() {
                b"" | b"." => continue,
                b".." => {
                    out.pop();
                    continue;
                }
                _ => {}
            }
            let candidate = out.join(&comp);
            match std::fs::symlink_metadata(&candidate) {
                Ok(md) if md.file_type().is_symlink() => {
                    links += 1;
                    if links > MAX_LINKS {
                        return Err(io::Error::from_raw_os_error(libc::ELOOP));
                    }
                    let target = std::fs::read_link(&candidate)?;
                    if target.is_absolute() {
                        out = PathBuf::from("/");
                    }
                    push_components(&mut pending, &target);
                }
                Ok(_) => out = candidate,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    out = candidate;
                    while let Some(rest) = pending.pop() {
                        match rest.as_bytes() {
                            b"" | b"." => {}
                            b".." => return Err(io::Error::from_raw_os_error(libc::ENOENT)),
                            _ => out.push(rest),
                        }
                    }
                    return Ok(out);
                }
                Err(e) => return Err(e),
            }
        }
        Ok(out)
    }
}

/// Push `path`'s components onto `pending` so that they pop in order.
fn push_components(pending: &mut Vec<OsString>, path: &Path) {
    let comps: Vec<OsString> = path
        .components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some(OsString::from("..")),
            Component::CurDir | Component::RootDir | Component::Prefix(_) => None,
        })
        .collect();
    pending.extend(comps.into_iter().rev());
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    struct Fixture {
        _tmp: tempfile::TempDir,
        outside: PathBuf,
        root: PathBuf,
        sb: Sandbox,
    }

    fn fixture() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let root = base.join("root");
        let outside = base.join("outside");
        std::fs::create_dir_all(root.join("sub/deep")).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret"), "s").unwrap();
        std::fs::write(root.join("sub/file"), "f").unwrap();
        symlink(&outside, root.join("out")).unwrap();
        symlink(outside.join("secret"), root.join("secret-link")).unwrap();
        symlink("sub", root.join("in")).unwrap();
        symlink(outside.join("nothing-yet"), root.join("dangling-out")).unwrap();
        let sb = Sandbox::new(root.clone());
        Fixture {
            _tmp: tmp,
            outside,
            root,
            sb,
        }
    }

    fn s(p: &Path) -> String {
        p.to_str().unwrap().to_string()
    }

    fn refused(r: Result<PathBuf, Errno>) -> Errno {
        let e = r.expect_err("should be refused");
        assert_eq!(e.code, "EACCES", "{e}");
        assert!(
            e.detail
                .as_deref()
                .unwrap_or("")
                .contains("outside the sandbox root"),
            "{e}"
        );
        e
    }

    #[test]
    fn inside_paths_resolve() {
        let f = fixture();
        assert_eq!(
            f.sb.resolve(&s(&f.root), Follow::All, "stat").unwrap(),
            f.root
        );
        let p = s(&f.root.join("sub/file"));
        assert_eq!(
            f.sb.resolve(&p, Follow::All, "stat").unwrap(),
            f.root.join("sub/file")
        );
        // A symlink inside that stays inside is fine, in the middle too.
        let p = s(&f.root.join("in/deep"));
        assert_eq!(
            f.sb.resolve(&p, Follow::All, "stat").unwrap(),
            f.root.join("sub/deep")
        );
        // `..` that stays inside.
        let p = format!("{}/sub/../sub/file", s(&f.root));
        assert_eq!(
            f.sb.resolve(&p, Follow::All, "stat").unwrap(),
            f.root.join("sub/file")
        );
        // Missing tails (mkdir -p, new files).
        let p = s(&f.root.join("sub/new/a/b"));
        assert_eq!(
            f.sb.resolve(&p, Follow::All, "mkdir").unwrap(),
            f.root.join("sub/new/a/b")
        );
    }

    #[test]
    fn dotdot_out_of_root_is_refused() {
        let f = fixture();
        let e = refused(f.sb.resolve(
            &format!("{}/../outside/secret", s(&f.root)),
            Follow::All,
            "open",
        ));
        assert_eq!(e.syscall, "open");
        refused(f.sb.resolve(&format!("{}/../etc", s(&f.root)), Follow::All, "stat"));
        refused(f.sb.resolve("/etc/passwd", Follow::All, "open"));
        refused(f.sb.resolve("/", Follow::All, "stat"));
    }

    #[test]
    fn symlinks_leading_outside_are_refused() {
        let f = fixture();
        // Final component.
        refused(f.sb.resolve(&s(&f.root.join("secret-link")), Follow::All, "open"));
        // Middle component.
        refused(f.sb.resolve(&s(&f.root.join("out/secret")), Follow::All, "open"));
        refused(f.sb.resolve(&s(&f.root.join("out/new-file")), Follow::NotLast, "unlink"));
        // Dangling link leading outside: a write through it must not be allowed.
        refused(f.sb.resolve(&s(&f.root.join("dangling-out")), Follow::All, "open"));
        assert!(!f.outside.join("nothing-yet").exists());
    }

    #[test]
    fn not_last_acts_on_the_link_itself() {
        let f = fixture();
        let link = f.root.join("secret-link");
        assert_eq!(
            f.sb.resolve(&s(&link), Follow::NotLast, "lstat").unwrap(),
            link
        );
        assert_eq!(
            f.sb.resolve(&s(&link), Follow::NotLast, "unlink").unwrap(),
            link
        );
        // A trailing slash means "follow".
        refused(f.sb.resolve(
            &format!("{}/", s(&f.root.join("out"))),
            Follow::NotLast,
            "lstat",
        ));
    }

    #[test]
    fn relative_nul_and_loops() {
        let f = fixture();
        assert_eq!(
            f.sb.resolve("sub/file", Follow::All, "stat")
                .unwrap_err()
                .code,
            "EINVAL"
        );
        let e =
            f.sb.resolve(&format!("{}/a\0b", s(&f.root)), Follow::All, "stat")
                .unwrap_err();
        assert_eq!(e.code, "EACCES");
        symlink("loop2", f.root.join("loop1")).unwrap();
        symlink("loop1", f.root.join("loop2")).unwrap();
        let e =
            f.sb.resolve(&s(&f.root.join("loop1")), Follow::All, "stat")
                .unwrap_err();
        assert_eq!(e.code, "ELOOP");
        let e =
            f.sb.resolve(&format!("{}/nope/../x", s(&f.root)), Follow::All, "stat")
                .unwrap_err();
        assert_eq!(e.code, "ENOENT");
        let e =
            f.sb.resolve(&s(&f.root.join("sub/file/x")), Follow::All, "stat")
                .unwrap_err();
        assert_eq!(e.code, "ENOTDIR");
    }
}
