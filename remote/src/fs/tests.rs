//! fs unit tests on temp directories, calling the handlers directly.

use super::*;
use crate::facts::LoginEnv;
use crate::sandbox::Sandbox;
use std::os::unix::fs::symlink;

struct Fx {
    _tmp: tempfile::TempDir,
    root: PathBuf,
    s: Session,
}

fn fx() -> Fx {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().canonicalize().unwrap().join("root");
    std::fs::create_dir(&root).unwrap();
    let s = Session::new(
        Sandbox::new(root.clone()),
        Arc::new(LoginEnv {
            vars: vec![],
            path: "/usr/bin:/bin".into(),
        }),
    );
    Fx { _tmp: tmp, root, s }
}

impl Fx {
    fn p(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root.display())
    }
}

fn code(r: Result<impl std::fmt::Debug, Failure>) -> String {
    match r {
        Err(Failure::Os(e)) => e.code,
        other => panic!("expected an OS error, got {other:?}"),
    }
}

fn wp(path: String, data: &[u8], flag: WriteFlag, mode: Option<u32>) -> WriteParams {
    WriteParams {
        path,
        data: Bytes(data.to_vec()),
        flag,
        mode,
        flush: false,
    }
}

#[test]
fn writes_go_in_place_and_flags_work() {
    let f = fx();
    let p = f.p("a.txt");
    write(&f.s, wp(p.clone(), b"one", WriteFlag::Write, Some(0o640))).unwrap();
    assert_eq!(
        std::fs::metadata(&p).unwrap().mode() & 0o777,
        0o640 & !umask()
    );
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o751)).unwrap();
    write(&f.s, wp(p.clone(), b"two", WriteFlag::Write, None)).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two");
    assert_eq!(std::fs::metadata(&p).unwrap().mode() & 0o7777, 0o751);
    assert_eq!(
        code(write(&f.s, wp(p.clone(), b"x", WriteFlag::Exclusive, None))),
        "EEXIST"
    );
    assert_eq!(
        code(write(
            &f.s,
            wp(p.clone(), b"x", WriteFlag::AppendExclusive, None)
        )),
        "EEXIST"
    );
    write(&f.s, wp(p.clone(), b"+", WriteFlag::Append, None)).unwrap();
    assert_eq!(std::fs::read(&p).unwrap(), b"two+");
    write(&f.s, wp(f.p("new"), b"n", WriteFlag::Exclusive, None)).unwrap();
    assert_eq!(
        code(write(
            &f.s,
            wp(f.p("missing/dir/x"), b"n", WriteFlag::Write, None)
        )),
        "ENOENT"
    );
    assert_eq!(
        code(write(
            &f.s,
            wp(f.root.display().to_string(), b"n", WriteFlag::Write, None)
        )),
        "EISDIR"
    );
    // Only the written files, no temp leftovers.
    let mut names: Vec<_> = std::fs::read_dir(&f.root)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, vec!["a.txt", "new"]);
}

/// The write rule: a rewrite keeps the file's inode, hard links, mode and extended attributes
/// (the old atomic temp+rename broke the hard link, and a new inode loses xattrs).
#[test]
fn a_rewrite_keeps_inode_hard_links_mode_and_xattrs() {
    let f = fx();
    let p = f.p("doc.txt");
    std::fs::write(&p, "first version, longer").unwrap();
    std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o640)).unwrap();
    std::fs::hard_link(&p, f.root.join("alias.txt")).unwrap();
    let c = std::ffi::CString::new(p.clone()).unwrap();
    // SAFETY: valid C strings and a value buffer of the given length.
    let xattr = unsafe {
        libc::setxattr(
            c.as_ptr(),
            c"user.pi-bridge-test".as_ptr(),
            b"kept".as_ptr().cast(),
            4,
            0,
        )
    } == 0; // tmpfs without user xattrs: the rest still holds
    let ino = std::fs::metadata(&p).unwrap().ino();
    write(
        &f.s,
        wp(p.clone(), b"second", WriteFlag::Write, Some(0o600)),
    )
    .unwrap();
    let md = std::fs::metadata(&p).unwrap();
    assert_eq!(md.ino(), ino);
    assert_eq!(md.nlink(), 2);
    assert_eq!(md.mode() & 0o7777, 0o640, "an existing file keeps its mode");
    assert_eq!(std::fs::read(f.root.join("alias.txt")).unwrap(), b"second");
    if xattr {
        let mut buf = [0u8; 8];
        // SAFETY: as above.
        let n = unsafe {
            libc::getxattr(
                c.as_ptr(),
                c"user.pi-bridge-test".as_ptr(),
                buf.as_mut_ptr().cast(),
                buf.len(),
            )
        };
        assert_eq!(&buf[..n.max(0) as usize], b"kept");
    }
}

/// A FIFO never holds the calling thread: a read of one without a writer is its end (empty), a
/// write to one without a reader fails with ENXIO, as the kernel says with O_NONBLOCK.
#[test]
fn a_fifo_never_blocks() {
    let f = fx();
    let p = f.p("AGENTS.md");
    let c = std::ffi::CString::new(p.clone()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(c.as_ptr(), 0o644) }, 0);
    let read_it = || {
        read(
            &f.s,
            ReadParams {
                path: p.clone(),
                offset: 0,
                length: None,
                raw: false,
            },
        )
    };
    assert!(read_it().unwrap().data.0.is_empty());
    assert_eq!(
        code(write(&f.s, wp(p.clone(), b"x", WriteFlag::Write, None))),
        "ENXIO"
    );
    // A writer that holds the FIFO open without writing: the read says EAGAIN.
    let writer = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&p)
        .unwrap();
    assert_eq!(code(read_it()), "EAGAIN");
    (&writer).write_all(b"data").unwrap();
    let r = read_it().unwrap();
    assert_eq!(r.data.0, b"data");
    assert_eq!(
        code(copy_file(
            &f.s,
            CopyFileParams {
                from: p.clone(),
                to: f.p("copy"),
                exclusive: false,
            }
        )),
        "EAGAIN"
    );
}

#[test]
fn write_through_inside_symlink_keeps_the_link() {
    let f = fx();
    std::fs::write(f.root.join("real"), "old").unwrap();
    symlink("real", f.root.join("link")).unwrap();
    write(&f.s, wp(f.p("link"), b"new", WriteFlag::Write, None)).unwrap();
    assert!(std::fs::symlink_metadata(f.root.join("link"))
        .unwrap()
        .file_type()
        .is_symlink());
    assert_eq!(std::fs::read(f.root.join("real")).unwrap(), b"new");
}

#[test]
fn read_caps_and_reports_size() {
    let f = fx();
    let data = vec![7u8; MAX_CHUNK + 100];
    std::fs::write(f.root.join("big"), &data).unwrap();
    let r = read(
        &f.s,
        ReadParams {
            path: f.p("big"),
            offset: 0,
            length: Some(u64::MAX),
            raw: false,
        },
    )
    .unwrap();
    assert_eq!(r.data.0.len(), MAX_CHUNK);
    assert_eq!(r.size, data.len() as u64);
    let r = read(
        &f.s,
        ReadParams {
            path: f.p("big"),
            offset: MAX_CHUNK as u64,
            length: None,
            raw: false,
        },
    )
    .unwrap();
    assert_eq!(r.data.0.len(), 100);
    let r = read(
        &f.s,
        ReadParams {
            path: f.p("big"),
            offset: 10 * MAX_CHUNK as u64,
            length: None,
            raw: false,
        },
    )
    .unwrap();
    assert!(r.data.0.is_empty());
    assert_eq!(
        code(read(
            &f.s,
            ReadParams {
                path: f.p("nope"),
                offset: 0,
                length: None,
                raw: false,
            }
        )),
        "ENOENT"
    );
    assert_eq!(
        code(read(
            &f.s,
            ReadParams {
                path: f.p(""),
                offset: 0,
                length: None,
                raw: false,
            }
        )),
        "EISDIR"
    );
}

#[test]
fn mkdir_like_node() {
    let f = fx();
    let r = mkdir(
        &f.s,
        MkdirParams {
            path: f.p("a/b/c"),
            recursive: true,
            mode: None,
        },
    )
    .unwrap();
    assert_eq!(r.first, Some(f.p("a")));
    let r = mkdir(
        &f.s,
        MkdirParams {
            path: f.p("a/b/c"),
            recursive: true,
            mode: None,
        },
    )
    .unwrap();
    assert_eq!(r.first, None);
    let r = mkdir(
        &f.s,
        MkdirParams {
            path: f.p("a/b/d/e"),
            recursive: true,
            mode: None,
        },
    )
    .unwrap();
    assert_eq!(r.first, Some(f.p("a/b/d")));
    assert_eq!(
        code(mkdir(
            &f.s,
            MkdirParams {
                path: f.p("a"),
                recursive: false,
                mode: None
            }
        )),
        "EEXIST"
    );
    std::fs::write(f.root.join("file"), "").unwrap();
    assert_eq!(
        code(mkdir(
            &f.s,
            MkdirParams {
                path: f.p("file"),
                recursive: true,
                mode: None
            }
        )),
        "EEXIST"
    );
    assert_eq!(
        code(mkdir(
            &f.s,
            MkdirParams {
                path: f.p("file/x"),
                recursive: true,
                mode: None
            }
        )),
        "ENOTDIR"
    );
    assert_eq!(
        code(mkdir(
            &f.s,
            MkdirParams {
                path: f.p("x/y"),
                recursive: false,
                mode: None
            }
        )),
        "ENOENT"
    );
}

#[test]
fn rm_like_node() {
    let f = fx();
    std::fs::create_dir_all(f.root.join("d/e")).unwrap();
    std::fs::write(f.root.join("d/e/f"), "").unwrap();
    let e = rm(
        &f.s,
        RmParams {
            path: f.p("d"),
            recursive: false,
            force: false,
        },
    )
    .unwrap_err();
    match e {
        Failure::Os(e) => assert_eq!((e.code.as_str(), e.syscall.as_str()), ("EISDIR", "rm")),
        other => panic!("{other:?}"),
    }
    rm(
        &f.s,
        RmParams {
            path: f.p("d"),
            recursive: true,
            force: false,
        },
    )
    .unwrap();
    assert!(!f.root.join("d").exists());
    assert_eq!(
        code(rm(
            &f.s,
            RmParams {
                path: f.p("d"),
                recursive: true,
                force: false
            }
        )),
        "ENOENT"
    );
    rm(
        &f.s,
        RmParams {
            path: f.p("d"),
            recursive: true,
            force: true,
        },
    )
    .unwrap();
    // A symlink to a directory outside is removed itself, never followed.
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("keep"), "").unwrap();
    symlink(outside.path(), f.root.join("l")).unwrap();
    rm(
        &f.s,
        RmParams {
            path: f.p("l"),
            recursive: true,
            force: false,
        },
    )
    .unwrap();
    assert!(outside.path().join("keep").exists());
}

#[test]
fn readdir_sorted_and_recursive_in_node_order() {
    let f = fx();
    std::fs::create_dir_all(f.root.join("b/x")).unwrap();
    std::fs::create_dir_all(f.root.join("a")).unwrap();
    std::fs::write(f.root.join("c"), "").unwrap();
    std::fs::write(f.root.join("a/f"), "").unwrap();
    symlink("b", f.root.join("l")).unwrap();
    let names = |v: ReadDirResult| {
        v.entries
            .into_iter()
            .map(|e| (e.name, e.kind))
            .collect::<Vec<_>>()
    };
    let r = readdir(
        &f.s,
        ReadDirParams {
            path: f.p(""),
            recursive: false,
            follow: false,
        },
    )
    .unwrap();
    assert_eq!(
        names(r),
        vec![
            ("a".into(), FileKind::Dir),
            ("b".into(), FileKind::Dir),
            ("c".into(), FileKind::File),
            ("l".into(), FileKind::Symlink)
        ]
    );
    let r = readdir(
        &f.s,
        ReadDirParams {
            path: f.p(""),
            recursive: true,
            follow: false,
        },
    )
    .unwrap();
    let n: Vec<String> = r.entries.into_iter().map(|e| e.name).collect();
    assert_eq!(n, vec!["a", "b", "c", "l", "a/f", "b/x"]);
    // With `follow`, through the link too; a link to the outside and a loop end quietly.
    symlink("/", f.root.join("out")).unwrap();
    std::fs::create_dir(f.root.join("b/y")).unwrap();
    symlink("..", f.root.join("b/y/up")).unwrap();
    let r = readdir(
        &f.s,
        ReadDirParams {
            path: f.p(""),
            recursive: true,
            follow: true,
        },
    )
    .unwrap();
    let n: Vec<String> = r.entries.into_iter().map(|e| e.name).collect();
    assert!(
        n.contains(&"l/x".to_string()) && n.contains(&"l/y/up".to_string()),
        "{n:?}"
    );
    assert!(!n.iter().any(|e| e.starts_with("out/")), "{n:?}");
    assert!(
        n.len() < 2000,
        "a loop ended where the kernel would: {}",
        n.len()
    );
    assert_eq!(
        code(readdir(
            &f.s,
            ReadDirParams {
                path: f.p("c"),
                recursive: false,
                follow: false,
            }
        )),
        "ENOTDIR"
    );
}

#[test]
fn copy_link_symlink_utimes_truncate_mkdtemp() {
    let f = fx();
    std::fs::write(f.root.join("src"), "data").unwrap();
    std::fs::set_permissions(f.root.join("src"), std::fs::Permissions::from_mode(0o700)).unwrap();
    copy_file(
        &f.s,
        CopyFileParams {
            from: f.p("src"),
            to: f.p("dst"),
            exclusive: false,
        },
    )
    .unwrap();
    assert_eq!(std::fs::read(f.root.join("dst")).unwrap(), b"data");
    assert_eq!(
        std::fs::metadata(f.root.join("dst")).unwrap().mode() & 0o777,
        0o700
    );
    assert_eq!(
        code(copy_file(
            &f.s,
            CopyFileParams {
                from: f.p("src"),
                to: f.p("dst"),
                exclusive: true
            }
        )),
        "EEXIST"
    );

    let t = Time(1_600_000_000, 123_456_789);
    utimes(
        &f.s,
        UtimesParams {
            path: f.p("dst"),
            atime: t,
            mtime: t,
            lstat: false,
        },
    )
    .unwrap();
    let md = std::fs::metadata(f.root.join("dst")).unwrap();
    assert_eq!((md.mtime(), md.mtime_nsec()), (1_600_000_000, 123_456_789));

    symlink("dst", f.root.join("ln")).unwrap();
    let t2 = Time(1_500_000_000, 5);
    utimes(
        &f.s,
        UtimesParams {
            path: f.p("ln"),
            atime: t2,
            mtime: t2,
            lstat: true,
        },
    )
    .unwrap();
    assert_eq!(
        std::fs::symlink_metadata(f.root.join("ln"))
            .unwrap()
            .mtime(),
        1_500_000_000
    );
    assert_eq!(
        std::fs::metadata(f.root.join("ln")).unwrap().mtime(),
        1_600_000_000
    );

    let st = stat(
        &f.s,
        StatParams {
            path: f.p("ln"),
            lstat: true,
        },
    )
    .unwrap();
    assert_eq!(st.mode & 0o170000, 0o120000);
    let st = stat(
        &f.s,
        StatParams {
            path: f.p("ln"),
            lstat: false,
        },
    )
    .unwrap();
    assert_eq!((st.mode & 0o170000, st.size), (0o100000, 4));

    let root = f.root.clone();
    let e = truncate_via(&f, "dst", 2);
    assert!(e.is_ok());
    assert_eq!(std::fs::read(root.join("dst")).unwrap(), b"da");

    let d = mkdtemp(
        &f.s,
        MkdtempParams {
            prefix: f.p("tmp-"),
        },
    )
    .unwrap();
    assert!(
        d.starts_with(&f.p("tmp-")) && d.len() == f.p("tmp-").len() + 6,
        "{d}"
    );
    assert_eq!(std::fs::metadata(&d).unwrap().mode() & 0o777, 0o700);
}

fn truncate_via(f: &Fx, rel: &str, len: u64) -> Result<(), Failure> {
    let r = f.s.sandbox.resolve(&f.p(rel), Follow::All, "open")?;
    let file = OpenOptions::new()
        .write(true)
        .open(&r)
        .map_err(|e| os(&e, "open", rel))?;
    file.set_len(len).map_err(|e| os(&e, "ftruncate", rel))
}

#[test]
fn two_path_errors_name_both() {
    let f = fx();
    let e = copy_file(
        &f.s,
        CopyFileParams {
            from: f.p("nope"),
            to: f.p("x"),
            exclusive: false,
        },
    )
    .unwrap_err();
    match e {
        Failure::Os(e) => {
            assert_eq!(
                e.message(),
                format!(
                    "ENOENT: no such file or directory, copyfile '{}' -> '{}'",
                    f.p("nope"),
                    f.p("x")
                )
            );
        }
        other => panic!("{other:?}"),
    }
}

fn umask() -> u32 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let line = status.lines().find(|l| l.starts_with("Umask:")).unwrap();
    u32::from_str_radix(line.split_whitespace().nth(1).unwrap(), 8).unwrap()
}

#[test]
fn temp_names_are_recognised_exactly() {
    assert_eq!(
        temp_target(".x.y.pi-bridge-AbC12345.tmp"),
        Some(("x.y", false))
    );
    assert_eq!(
        temp_target(".x.pi-bridge-new-AbC12345.tmp"),
        Some(("x", true))
    );
    for other in [
        ".a.txt.pi-bridge-new-AbC1234.tmp",
        ".a.txt.pi-bridge-old-AbC12345.tmp",
        "a.txt",
        ".a.txt.pi-bridge-AbC1234.tmp",   // 7 characters
        ".a.txt.pi-bridge-AbC123456.tmp", // 9
        ".a.txt.pi-bridge-AbC1234-.tmp",
        "..pi-bridge-AbC12345.tmp",
        "a.txt.pi-bridge-AbC12345.tmp",
        ".a.txt.pi-bridge-AbC12345.tmpx",
    ] {
        assert_eq!(temp_target(other), None, "{other}");
    }
}

#[test]
fn the_root_itself_is_a_directory_to_lstat_and_stat() {
    // The root is pinned by a descriptor; lstat of `/proc/self/fd/N` would be the magic link.
    let f = fx();
    let root = f.root.to_str().unwrap().to_string();
    let want = std::fs::symlink_metadata(&f.root).unwrap();
    for lstat in [true, false] {
        let st = stat(
            &f.s,
            StatParams {
                path: root.clone(),
                lstat,
            },
        )
        .unwrap();
        assert_eq!(st.mode, want.mode(), "lstat={lstat}");
        assert_eq!(st.ino, want.ino(), "lstat={lstat}");
    }
}
