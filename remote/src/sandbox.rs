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
//! walk only lstats and readlinks).
//!
//! Check and use must agree even when something swaps a directory or file for a symlink between
//! them (`renameat2(RENAME_EXCHANGE)` wins that race easily: the corpus test does it). So the fs
//! calls use [`Sandbox::pin`]: after the check, the canonical path is opened again from the root,
//! one component at a time with `O_PATH|O_NOFOLLOW` (any symlink met now is a swap: refused), and
//! the call is made through `/proc/self/fd/<fd>` — the kernel then acts on exactly the directory
//! (or object) that was checked, never re-walking names. Where `/proc/self/fd` is missing the
//! canonical path is used as before (and the race stays open).

use protocol::Errno;
use std::ffi::{OsStr, OsString};
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Component, Path, PathBuf};
use std::sync::OnceLock;

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

    /// The canonical root.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Whether a canonical path lies inside the root (or is it).
    pub fn contains(&self, canonical: &Path) -> bool {
        canonical.starts_with(&self.root)
    }

    /// Check `path` and return its canonical form. Errors carry `syscall` and `path` exactly as
    /// given, as Node reports them. For a syscall on the path, use [`Sandbox::pin`].
    pub fn resolve(&self, path: &str, follow: Follow, syscall: &str) -> Result<PathBuf, Errno> {
        self.check(path, follow, syscall).map(|(p, _)| p)
    }

    /// Check `path` and pin what it names (see the module docs): the result derefs to the path
    /// to hand to the syscall, valid while the [`Pinned`] lives.
    pub fn pin(&self, path: &str, follow: Follow, syscall: &str) -> Result<Pinned, Errno> {
        if follow == Follow::NotLast && names_a_directory(path) {
            // `x/` for a call on the entry itself (rmdir, rename, unlink…): it acts on x, which
            // must be a directory (not a file, nor a symlink to a directory): else ENOTDIR.
            let entry = self.pin(without_trailing(path), Follow::NotLast, syscall)?;
            return match std::fs::symlink_metadata(&*entry) {
                Ok(md) if !md.is_dir() => Err(Errno::new("ENOTDIR", syscall, Some(path))),
                _ => Ok(entry),
            };
        }
        let (canonical, follow_last) = self.check(path, follow, syscall)?;
        let pinned =
            self.open_beneath(canonical, follow_last)
                .map_err(|e| match e.raw_os_error() {
                    Some(libc::ELOOP) => Errno::new("EACCES", syscall, Some(path)).with_detail(
                        "a path component was replaced by a symlink during the check; refused by \
                     the sandbox",
                    ),
                    _ => Errno::from_io(&e, syscall, Some(path)),
                })?;
        // `x/` (or `x/.`) names a directory: the kernel says ENOTDIR when x is anything else.
        if names_a_directory(path) && pinned.is_object() {
            match std::fs::metadata(&*pinned) {
                Ok(md) if !md.is_dir() => return Err(Errno::new("ENOTDIR", syscall, Some(path))),
                _ => {}
            }
        }
        Ok(pinned)
    }

    /// Pin an already canonical path inside the root: every component is opened with
    /// `O_NOFOLLOW`, so a symlink anywhere (even one leading inside) is `ELOOP`. A missing tail
    /// is kept as names under the deepest existing directory.
    pub fn open_beneath(&self, canonical: PathBuf, follow_last: bool) -> io::Result<Pinned> {
        let unpinned = |canonical: PathBuf| Pinned {
            path: canonical.clone(),
            entry: canonical.clone(),
            canonical,
            _fds: Vec::new(),
        };
        if !proc_fd_works() {
            return Ok(unpinned(canonical));
        }
        let rel = match canonical.strip_prefix(&self.root) {
            Ok(r) => r.to_path_buf(),
            Err(_) => return Err(io::Error::from_raw_os_error(libc::EACCES)),
        };
        let comps: Vec<&OsStr> = rel
            .components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(n),
                _ => None,
            })
            .collect();
        let mut dir = open_at(None, self.root.as_os_str(), libc::O_DIRECTORY)?;
        let Some((last, parents)) = comps.split_last() else {
            // The root itself (trusted, like its ancestors). Through `/.`: the bare
            // `/proc/self/fd/N` is a symlink to it, which lstat and friends would act on.
            let p = fd_path(&dir).join(".");
            return Ok(Pinned {
                path: p,
                entry: canonical.clone(),
                canonical,
                _fds: vec![dir],
            });
        };
        for (i, c) in parents.iter().enumerate() {
            match open_at(Some(&dir), c, libc::O_DIRECTORY | libc::O_NOFOLLOW) {
                Ok(fd) => dir = fd,
                Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                    // A missing tail: names under the deepest existing directory.
                    let mut p = fd_path(&dir);
                    for c in &comps[i..] {
                        p.push(c);
                    }
                    return Ok(Pinned {
                        path: p.clone(),
                        entry: p,
                        canonical,
                        _fds: vec![dir],
                    });
                }
                Err(e) => return Err(not_a_dir_or_swapped(&dir, c, e)),
            }
        }
        let entry = fd_path(&dir).join(last);
        if !follow_last {
            return Ok(Pinned {
                path: entry.clone(),
                entry,
                canonical,
                _fds: vec![dir],
            });
        }
        match open_at(Some(&dir), last, libc::O_NOFOLLOW) {
            Ok(obj) => {
                // With O_PATH|O_NOFOLLOW a symlink opens as itself: the check followed it, so
                // it was swapped in since.
                if is_symlink(&obj)? {
                    return Err(io::Error::from_raw_os_error(libc::ELOOP));
                }
                Ok(Pinned {
                    path: fd_path(&obj),
                    entry,
                    canonical,
                    _fds: vec![dir, obj],
                })
            }
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => Ok(Pinned {
                path: entry.clone(),
                entry,
                canonical,
                _fds: vec![dir],
            }),
            Err(e) => Err(e),
        }
    }

    /// The canonical path and whether its last component was followed.
    fn check(&self, path: &str, follow: Follow, syscall: &str) -> Result<(PathBuf, bool), Errno> {
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
            Ok((resolved, follow_last))
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

/// A checked path, pinned by open descriptors (see [`Sandbox::pin`]). Derefs to the path for the
/// syscall: the object itself when the last component was followed and exists, else the last
/// name under its pinned directory.
#[derive(Debug)]
pub struct Pinned {
    path: PathBuf,
    entry: PathBuf,
    canonical: PathBuf,
    _fds: Vec<OwnedFd>,
}

impl Pinned {
    /// The last name under its pinned directory (for calls that replace or create the entry,
    /// e.g. a temp file next to it and a rename over it).
    pub fn entry(&self) -> &Path {
        &self.entry
    }

    /// The canonical path (for messages and results, never for syscalls).
    pub fn canonical(&self) -> &Path {
        &self.canonical
    }

    /// Whether this pins the object itself (an existing, followed last component, reached
    /// through its `/proc/self/fd` link, which an open must follow) rather than a name under
    /// its pinned directory (which an open must not follow: a symlink there was swapped in).
    pub fn is_object(&self) -> bool {
        self.path != self.entry
    }
}

impl std::ops::Deref for Pinned {
    type Target = Path;
    fn deref(&self) -> &Path {
        &self.path
    }
}

impl AsRef<Path> for Pinned {
    fn as_ref(&self) -> &Path {
        &self.path
    }
}

/// Whether `path` ends in a way that only a directory satisfies (`/`, `/.`).
pub fn names_a_directory(path: &str) -> bool {
    path.len() > 1 && (path.ends_with('/') || path.ends_with("/."))
}

/// `path` without its trailing `/` and `/.` (`a/./` → `a`; `/` stays).
fn without_trailing(mut path: &str) -> &str {
    loop {
        if path.len() > 1 && path.ends_with('/') {
            path = &path[..path.len() - 1];
        } else if path.len() > 2 && path.ends_with("/.") {
            path = &path[..path.len() - 2];
        } else {
            return path;
        }
    }
}

/// Whether `/proc/self/fd/<n>` paths reach our descriptors (probed once).
fn proc_fd_works() -> bool {
    static WORKS: OnceLock<bool> = OnceLock::new();
    *WORKS.get_or_init(|| match open_at(None, OsStr::new("/"), libc::O_DIRECTORY) {
        Ok(fd) => std::fs::metadata(fd_path(&fd))
            .map(|m| m.is_dir())
            .unwrap_or(false),
        Err(_) => false,
    })
}

fn fd_path(fd: &OwnedFd) -> PathBuf {
    PathBuf::from(format!("/proc/self/fd/{}", fd.as_raw_fd()))
}

/// `openat(dir, name, O_PATH|O_CLOEXEC|flags)` (`dir` `None`: an absolute `name`).
fn open_at(dir: Option<&OwnedFd>, name: &OsStr, flags: libc::c_int) -> io::Result<OwnedFd> {
    use rustix::fs::{Mode, OFlags};
    let flags = OFlags::PATH | OFlags::CLOEXEC | OFlags::from_bits_retain(flags as u32);
    let fd = match dir {
        Some(d) => rustix::fs::openat(d, name, flags, Mode::empty()),
        None => rustix::fs::openat(rustix::fs::CWD, name, flags, Mode::empty()),
    };
    Ok(fd?)
}

/// Whether `fd` (opened `O_PATH|O_NOFOLLOW`) is a symlink itself.
fn is_symlink(fd: &OwnedFd) -> io::Result<bool> {
    let st = rustix::fs::fstat(fd)?;
    Ok(rustix::fs::FileType::from_raw_mode(st.st_mode) == rustix::fs::FileType::Symlink)
}

/// `ENOTDIR` from `O_DIRECTORY|O_NOFOLLOW` on a symlink means it was swapped in: `ELOOP`.
fn not_a_dir_or_swapped(dir: &OwnedFd, name: &OsStr, e: io::Error) -> io::Error {
    if e.raw_os_error() == Some(libc::ENOTDIR) {
        if let Ok(fd) = open_at(Some(dir), name, libc::O_NOFOLLOW) {
            if is_symlink(&fd).unwrap_or(false) {
                return io::Error::from_raw_os_error(libc::ELOOP);
            }
        }
    }
    e
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
    fn a_pinned_path_ignores_a_later_swap_and_a_new_pin_refuses_it() {
        let f = fixture();
        let pinned =
            f.sb.pin(&s(&f.root.join("sub/file")), Follow::All, "open")
                .unwrap();
        assert_eq!(pinned.canonical(), f.root.join("sub/file"));
        let dir =
            f.sb.pin(&s(&f.root.join("sub/new")), Follow::All, "open")
                .unwrap();
        // Swap `sub` for a symlink to the outside, which has a `file` of its own.
        std::fs::rename(f.root.join("sub"), f.root.join("sub-moved")).unwrap();
        symlink(&f.outside, f.root.join("sub")).unwrap();
        std::fs::write(f.outside.join("file"), "outside").unwrap();
        assert_eq!(std::fs::read_to_string(&*pinned).unwrap(), "f");
        std::fs::write(dir.entry(), "created").unwrap();
        assert!(f.root.join("sub-moved/new").exists());
        assert!(!f.outside.join("new").exists());
        // The old canonical path now crosses a symlink: refused, not followed.
        let e =
            f.sb.open_beneath(f.root.join("sub/file"), true)
                .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ELOOP));
        refused(
            f.sb.pin(&s(&f.root.join("sub/file")), Follow::All, "open")
                .map(|_| PathBuf::new()),
        );
    }

    #[test]
    fn a_trailing_slash_requires_a_directory() {
        let f = fixture();
        let file = format!("{}/", s(&f.root.join("sub/file")));
        for follow in [Follow::All, Follow::NotLast] {
            let e = f.sb.pin(&file, follow, "stat").unwrap_err();
            assert_eq!(
                (e.code.as_str(), e.path.as_deref()),
                ("ENOTDIR", Some(file.as_str()))
            );
            let e = f.sb.pin(&format!("{file}."), follow, "stat").unwrap_err();
            assert_eq!(e.code, "ENOTDIR");
        }
        // A directory, through a symlink or not, for calls that follow; the entry itself, a
        // real directory, for calls on it; a missing name is still missing (mkdir 'new/').
        assert!(f
            .sb
            .pin(&format!("{}/", s(&f.root.join("in"))), Follow::All, "stat")
            .is_ok());
        let e =
            f.sb.pin(
                &format!("{}/", s(&f.root.join("in"))),
                Follow::NotLast,
                "rmdir",
            )
            .unwrap_err();
        assert_eq!(e.code, "ENOTDIR");
        let d =
            f.sb.pin(
                &format!("{}/", s(&f.root.join("sub"))),
                Follow::NotLast,
                "rmdir",
            )
            .unwrap();
        assert!(!d.is_object());
        assert!(f
            .sb
            .pin(
                &format!("{}/", s(&f.root.join("new"))),
                Follow::NotLast,
                "mkdir"
            )
            .is_ok());
        assert_eq!(without_trailing("/a/./"), "/a");
        assert_eq!(without_trailing("/"), "/");
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
