//! The `fs.changes` feed through the agent's real JSON-RPC handling (`serve` over an in-memory
//! pipe), with real inotify and real processes. No timing: every wait is "until a marker file
//! shows up in the feed" or "until a process's exit / answer", and the 10 s frame guard of the
//! shared [`Client`] only turns a hang into a failure.

use super::tracker::{coalesce, COALESCE};
use super::*;
use crate::inotify::{shared_fs, shared_fs_kind};
use crate::server::tests::Client;
use serde_json::{json, Value};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

/// What the feed reported, in arrival order.
#[derive(Default, Debug)]
struct Seen {
    paths: Vec<String>,
    all: usize,
}

impl Seen {
    fn add(&mut self, item: &Value) {
        match item["type"].as_str() {
            Some("paths") => {
                for p in item["paths"].as_array().expect("paths array") {
                    self.paths
                        .push(p.as_str().expect("path string").to_string());
                }
            }
            Some("all") => self.all += 1,
            other => panic!("unexpected fs.changed item {other:?}: {item}"),
        }
    }

    /// `path` itself was reported.
    fn has(&self, path: &str) -> bool {
        self.paths.iter().any(|p| p == path)
    }

    /// `path` or a directory above it was reported (the contract: a path covers its subtree).
    fn covers(&self, path: &str) -> bool {
        self.all > 0
            || self
                .paths
                .iter()
                .any(|p| p == path || path.starts_with(&format!("{p}/")))
    }
}

async fn subscribe(c: &mut Client) -> Value {
    let sub = c.ok("fs.changes", json!(null)).await;
    assert!(sub.is_string() || sub.is_number(), "{sub}");
    sub
}

/// Write a fresh marker file and collect the feed until it shows up: everything the feed
/// reported for changes made before the marker (inotify queues in order).
async fn until_marker(c: &mut Client, sub: &Value, n: &mut u32) -> Seen {
    *n += 1;
    let marker = c.p(&format!("marker-{n}"));
    std::fs::write(&marker, b"m").unwrap();
    let mut seen = Seen::default();
    while !seen.covers(&marker) {
        let item = c.notification(sub).await;
        seen.add(&item);
    }
    seen
}

fn stat_cache(v: &Value) -> bool {
    match v.get("cache") {
        None => false,
        Some(Value::Bool(b)) => *b,
        Some(other) => panic!("cache is not a bool: {other}"),
    }
}

#[tokio::test]
async fn file_changes_are_reported() {
    let mut c = Client::ready().await;
    let sub = subscribe(&mut c).await;
    let mut n = 0;
    let f = c.p("f.txt");
    let g = c.p("g.txt");

    std::fs::write(&f, b"one").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&f), "create: {s:?}");

    let mut h = std::fs::OpenOptions::new().append(true).open(&f).unwrap();
    std::io::Write::write_all(&mut h, b"two").unwrap();
    drop(h);
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&f), "modify: {s:?}");

    std::fs::set_permissions(&f, std::fs::Permissions::from_mode(0o600)).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&f), "chmod: {s:?}");

    std::fs::rename(&f, &g).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&f) && s.has(&g), "rename: {s:?}");

    std::fs::remove_file(&g).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&g), "delete: {s:?}");
    assert!(!s.has(&f), "only what changed: {s:?}");

    // The agent's own atomic write shows as the target, not as its temp file.
    c.ok(
        "fs.write",
        json!({"path": f, "data": crate::server::tests::b64(b"w")}),
    )
    .await;
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&f), "fs.write: {s:?}");
    assert!(
        s.paths.iter().all(|p| !p.contains(".pi-bridge-")),
        "temp files: {s:?}"
    );
    c.ok("fs.changes.stop", json!([sub])).await;
}

#[tokio::test]
async fn directory_subtrees_are_followed() {
    let mut c = Client::ready().await;
    let sub = subscribe(&mut c).await;
    let mut n = 0;

    // mkdir -p, then a file deep inside: the new directories were watched as they appeared.
    std::fs::create_dir_all(c.p("a/b/c")).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.covers(&c.p("a/b/c")), "mkdir -p: {s:?}");
    std::fs::write(c.p("a/b/c/f"), b"x").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("a/b/c/f")), "file in a new subtree: {s:?}");

    // A chmod of a directory.
    std::fs::set_permissions(c.p("a/b"), std::fs::Permissions::from_mode(0o700)).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("a/b")), "chmod dir: {s:?}");

    // A chmod of the project root itself (its stat is cacheable: its own watch reports it).
    let root = c.root.clone();
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o750)).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.covers(&root), "chmod root: {s:?}");
    std::fs::set_permissions(&root, std::fs::Permissions::from_mode(0o755)).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.covers(&root), "chmod root back: {s:?}");

    // Renamed: both names reported, the watches follow the new name.
    std::fs::rename(c.p("a"), c.p("z")).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("a")) && s.has(&c.p("z")), "rename dir: {s:?}");
    std::fs::write(c.p("z/b/c/g"), b"x").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("z/b/c/g")), "file under the renamed dir: {s:?}");
    assert!(
        s.paths.iter().all(|p| !p.starts_with(&c.p("a/"))),
        "stale name: {s:?}"
    );
    let st = c.ok("fs.stat", json!({"path": c.p("z/b/c/g")})).await;
    assert!(stat_cache(&st), "renamed subtree is watched: {st}");

    // Deleted: reported, and nothing under it is cacheable any more.
    std::fs::remove_dir_all(c.p("z")).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(
        s.covers(&c.p("z/b/c/g")) && s.has(&c.p("z")),
        "rm -rf: {s:?}"
    );
    let e = c.err("fs.stat", json!({"path": c.p("z/b/c/g")})).await;
    assert_eq!(e["data"]["code"], "ENOENT");
    assert!(!stat_cache(&e["data"]), "under a deleted dir: {e}");
}

#[tokio::test]
async fn a_directory_moved_in_from_outside_is_watched() {
    let mut c = Client::ready().await;
    let outside = tempfile::tempdir_in(c.dir.path().parent().unwrap()).unwrap();
    let src = outside.path().join("pkg");
    std::fs::create_dir_all(src.join("sub/deep")).unwrap();
    std::fs::write(src.join("sub/deep/old"), b"x").unwrap();
    let sub = subscribe(&mut c).await;
    let mut n = 0;

    std::fs::rename(&src, c.p("pkg")).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("pkg")), "moved in: {s:?}");
    std::fs::write(c.p("pkg/sub/deep/new"), b"y").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(
        s.has(&c.p("pkg/sub/deep/new")),
        "inside the moved-in tree: {s:?}"
    );
    let st = c
        .ok("fs.stat", json!({"path": c.p("pkg/sub/deep/old")}))
        .await;
    assert!(stat_cache(&st), "{st}");

    // Moved out again: reported, no longer watched, its later changes are not ours.
    std::fs::rename(c.p("pkg"), outside.path().join("back")).unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("pkg")), "moved out: {s:?}");
    std::fs::write(outside.path().join("back/sub/deep/later"), b"z").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(
        s.paths.iter().all(|p| !p.contains("later")),
        "a change outside the project: {s:?}"
    );
}

#[tokio::test]
async fn every_feed_gets_every_change() {
    let mut c = Client::ready().await;
    let one = subscribe(&mut c).await;
    let two = subscribe(&mut c).await;
    assert_ne!(one, two);
    let mut n = 0;
    std::fs::write(c.p("shared"), b"x").unwrap();
    let s1 = until_marker(&mut c, &one, &mut n).await;
    let mut s2 = Seen::default();
    while !s2.covers(&c.p("marker-1")) {
        let item = c.notification(&two).await;
        s2.add(&item);
    }
    assert!(s1.has(&c.p("shared")) && s2.has(&c.p("shared")));
    assert_eq!(s1.paths, s2.paths, "same items, same order");
    // One feed stopping leaves the watcher to the other.
    c.ok("fs.changes.stop", json!([one])).await;
    let st = c.ok("fs.stat", json!({"path": c.p("shared")})).await;
    assert!(stat_cache(&st), "{st}");
    c.ok("fs.changes.stop", json!([two])).await;
    let st = c.ok("fs.stat", json!({"path": c.p("shared")})).await;
    assert!(!stat_cache(&st), "no feed, no watcher: {st}");
}

/// The command of a barrier test: 200 files, `r<round>f1` … `r<round>f200`. Each test runs
/// a few rounds: without the barrier, the last changes of a round often (not always) trail its
/// end, so rounds make a missing barrier fail the test nearly every time.
fn burst(round: u32) -> String {
    format!("for i in $(seq 200); do echo $i > r{round}f$i; done")
}
const ROUNDS: u32 = 3;

/// Every file of [`burst`]`(round)` is covered by what `seen` holds.
fn all_files_covered(c: &Client, seen: &Seen, round: u32) {
    for i in 1..=200 {
        let f = c.p(&format!("r{round}f{i}"));
        assert!(seen.covers(&f), "{f} not reported before the end: {seen:?}");
    }
}

/// After the command ended and its changes were taken: only the marker may arrive now (anything
/// about the command's files would be a change reported after its end).
async fn nothing_late(c: &mut Client, sub: &Value, n: &mut u32) {
    let late = until_marker(c, sub, n).await;
    assert_eq!(late.all, 0, "{late:?}");
    for p in &late.paths {
        assert!(
            p.contains("marker-"),
            "reported after the command ended: {p} ({late:?})"
        );
    }
}

#[tokio::test]
async fn a_spawned_process_changes_arrive_before_its_exit() {
    let mut c = Client::ready().await;
    let feed = subscribe(&mut c).await;
    let cwd = c.root.clone();
    let mut n = 0;
    for round in 0..ROUNDS {
        let proc_sub = c
            .ok(
                "proc.spawn",
                json!({"file": "sh", "args": ["-c", burst(round)], "cwd": cwd}),
            )
            .await;
        // In arrival order: the feed's items until the process's exit.
        let mut seen = Seen::default();
        let mut pending: std::collections::VecDeque<Value> = std::mem::take(&mut c.stash).into();
        loop {
            let f = match pending.pop_front() {
                Some(f) => f,
                None => c.frame().await,
            };
            let s = &f["params"]["subscription"];
            if s == &feed {
                seen.add(&f["params"]["result"]);
            } else if s == &proc_sub {
                let ev = &f["params"]["result"];
                assert_ne!(ev["type"], "error", "{ev}");
                if ev["type"] == "exit" {
                    assert_eq!(ev["code"], 0, "{ev}");
                    break;
                }
            }
        }
        c.stash.extend(pending);
        all_files_covered(&c, &seen, round);
        nothing_late(&mut c, &feed, &mut n).await;
    }
}

#[tokio::test]
async fn proc_run_answers_after_its_changes() {
    let mut c = Client::ready().await;
    let feed = subscribe(&mut c).await;
    let cwd = c.root.clone();
    let mut n = 0;
    for round in 0..ROUNDS {
        let r = c
            .ok(
                "proc.run",
                json!({"spawn": {"file": "sh", "args": ["-c", burst(round)], "cwd": cwd}}),
            )
            .await;
        assert_eq!(r["code"], 0, "{r}");
        // Everything that arrived before the answer was stashed, in order.
        let mut seen = Seen::default();
        for f in std::mem::take(&mut c.stash) {
            if f["params"]["subscription"] == feed {
                seen.add(&f["params"]["result"]);
            }
        }
        all_files_covered(&c, &seen, round);
        nothing_late(&mut c, &feed, &mut n).await;
    }
}

#[tokio::test]
async fn cache_flags_only_for_plain_paths_under_watched_dirs() {
    let mut c = Client::ready().await;
    std::fs::create_dir_all(c.p("sub")).unwrap();
    std::fs::write(c.p("sub/file"), b"hello").unwrap();
    std::os::unix::fs::symlink("sub", c.p("link")).unwrap();
    std::os::unix::fs::symlink("sub/file", c.p("flink")).unwrap();
    std::os::unix::fs::symlink("nowhere", c.p("dangling")).unwrap();

    // Before any subscription: nothing is cacheable.
    let st = c.ok("fs.stat", json!({"path": c.p("sub/file")})).await;
    assert!(!stat_cache(&st), "before fs.changes: {st}");
    let e = c.err("fs.stat", json!({"path": c.p("sub/missing")})).await;
    assert!(!stat_cache(&e["data"]), "before fs.changes: {e}");
    let l = c.ok("fs.readdir", json!({"path": c.p("sub")})).await;
    assert!(!stat_cache(&l), "listing before fs.changes: {l}");

    let sub = subscribe(&mut c).await;
    let yes = |v: &Value, what: &str| assert!(stat_cache(v), "{what} should be cacheable: {v}");
    let no = |v: &Value, what: &str| assert!(!stat_cache(v), "{what} must not be cached: {v}");

    // Plain file, directory, root-level entry, lstat.
    yes(
        &c.ok("fs.stat", json!({"path": c.p("sub/file")})).await,
        "file",
    );
    yes(&c.ok("fs.stat", json!({"path": c.p("sub")})).await, "dir");
    yes(
        &c.ok("fs.stat", json!({"path": c.p("sub/file"), "lstat": true}))
            .await,
        "lstat file",
    );
    // A missing child of a watched directory: a cacheable negative answer.
    for (m, params) in [
        ("fs.stat", json!({"path": c.p("sub/missing")})),
        (
            "fs.stat",
            json!({"path": c.p("sub/missing"), "lstat": true}),
        ),
        ("fs.access", json!({"path": c.p("sub/missing")})),
        ("fs.read", json!({"path": c.p("sub/missing")})),
    ] {
        let e = c.err(m, params).await;
        assert_eq!(e["data"]["code"], "ENOENT", "{m}: {e}");
        yes(&e["data"], m);
    }
    // A whole small file read from offset 0; not a part of it.
    let r = c.ok("fs.read", json!({"path": c.p("sub/file")})).await;
    yes(&r, "whole read");
    no(
        &c.ok("fs.read", json!({"path": c.p("sub/file"), "offset": 1}))
            .await,
        "read at an offset",
    );
    no(
        &c.ok("fs.read", json!({"path": c.p("sub/file"), "length": 2}))
            .await,
        "partial read",
    );

    // Through a symlinked directory.
    no(
        &c.ok("fs.stat", json!({"path": c.p("link/file")})).await,
        "via link/",
    );
    let e = c.err("fs.stat", json!({"path": c.p("link/missing")})).await;
    no(&e["data"], "missing via link/");
    no(
        &c.ok("fs.read", json!({"path": c.p("link/file")})).await,
        "read via link/",
    );
    // A symlink as the final component of a following stat (the link itself under lstat is
    // plain: its parent lists it).
    no(
        &c.ok("fs.stat", json!({"path": c.p("flink")})).await,
        "stat of a symlink",
    );
    no(
        &c.ok("fs.stat", json!({"path": c.p("link")})).await,
        "stat of a dir symlink",
    );
    no(
        &c.ok("fs.read", json!({"path": c.p("flink")})).await,
        "read via a symlink",
    );
    yes(
        &c.ok("fs.stat", json!({"path": c.p("flink"), "lstat": true}))
            .await,
        "lstat of a symlink",
    );
    let e = c.err("fs.stat", json!({"path": c.p("dangling")})).await;
    assert_eq!(e["data"]["code"], "ENOENT");
    no(&e["data"], "dangling symlink");
    // A missing path whose parent is missing too.
    let e = c.err("fs.stat", json!({"path": c.p("nope/x")})).await;
    assert_eq!(e["data"]["code"], "ENOENT");
    no(&e["data"], "missing parent");
    // Not in normal form.
    no(
        &c.ok("fs.stat", json!({"path": c.p("sub/../sub/file")}))
            .await,
        "with ..",
    );
    no(
        &c.ok("fs.stat", json!({"path": c.p("sub//file")})).await,
        "with //",
    );
    // Outside the project root.
    let e = c.err("fs.stat", json!({"path": "/etc/passwd"})).await;
    no(&e["data"], "outside the root");
    let outside = c
        .dir
        .path()
        .parent()
        .unwrap()
        .join("pi-bridge-no-such-dir/x");
    let e = c
        .err("fs.stat", json!({"path": outside.to_str().unwrap()}))
        .await;
    no(&e["data"], "missing outside the root");
    // The root itself: its parent is not watched, but its own watch reports what changes it.
    assert!(
        stat_cache(&c.ok("fs.stat", json!({"path": c.root.clone()})).await),
        "root"
    );

    // Listings: a watched directory reached without a symlink, not recursive.
    yes(
        &c.ok("fs.readdir", json!({"path": c.p("sub")})).await,
        "listing",
    );
    yes(
        &c.ok("fs.readdir", json!({"path": c.root.clone()})).await,
        "root listing",
    );
    no(
        &c.ok("fs.readdir", json!({"path": c.p("sub"), "recursive": true}))
            .await,
        "recursive listing",
    );
    no(
        &c.ok("fs.readdir", json!({"path": c.p("link")})).await,
        "listing via a link",
    );
    no(
        &c.ok("fs.readdir", json!({"path": c.p("sub/../sub")})).await,
        "listing with ..",
    );

    // Through fs.batch too.
    let b = c
        .ok(
            "fs.batch",
            json!({"calls": [{"method": "fs.stat", "params": {"path": c.p("sub/file")}}]}),
        )
        .await;
    assert_eq!(b[0]["ok"]["cache"], json!(true), "{b}");

    c.ok("fs.changes.stop", json!([sub])).await;
    no(
        &c.ok("fs.stat", json!({"path": c.p("sub/file")})).await,
        "after stop",
    );
}

/// Set `path`'s atime and mtime (seconds), without following a symlink.
fn set_times(path: &str, atime: i64, mtime: i64) {
    let c = std::ffi::CString::new(path).unwrap();
    let ts = [
        libc::timespec {
            tv_sec: atime,
            tv_nsec: 0,
        },
        libc::timespec {
            tv_sec: mtime,
            tv_nsec: 0,
        },
    ];
    // SAFETY: valid C string and two timespecs.
    let r = unsafe {
        libc::utimensat(
            libc::AT_FDCWD,
            c.as_ptr(),
            ts.as_ptr(),
            libc::AT_SYMLINK_NOFOLLOW,
        )
    };
    assert_eq!(r, 0, "utimensat {path}");
}

#[tokio::test]
async fn prefetch_is_the_feeds_first_item_with_the_usual_flags() {
    use std::os::unix::fs::MetadataExt;
    let mut c = Client::ready().await;
    std::fs::create_dir_all(c.p(".pi")).unwrap();
    std::fs::create_dir_all(c.p(".git")).unwrap();
    std::fs::create_dir_all(c.p("sub")).unwrap();
    std::fs::write(c.p("AGENTS.md"), b"be nice").unwrap();
    std::fs::write(c.p(".git/HEAD"), b"ref: refs/heads/main\n").unwrap();
    std::fs::write(c.p("sub/x"), b"x").unwrap();
    std::fs::write(c.p("big.md"), vec![b'b'; 64 * 1024 + 1]).unwrap();
    std::fs::write(c.p("abs.txt"), b"").unwrap();
    std::os::unix::fs::symlink("AGENTS.md", c.p("CLAUDE.md")).unwrap();
    std::os::unix::fs::symlink("sub", c.p("ln")).unwrap();
    // relatime would move an atime older than the mtime on the first read: the prefetch must not.
    set_times(&c.p("AGENTS.md"), 1_000, 2_000);

    let abs = c.p("abs.txt");
    let ask = json!([
        ".",
        "AGENTS.md",
        "CLAUDE.md",
        "missing.md",
        "nodir/x",
        ".git/HEAD",
        ".pi",
        "big.md",
        "ln/x",
        "sub/../AGENTS.md",
        "./sub//x",
        abs,
        "../outside",
        ""
    ]);
    let sub = c.ok("fs.changes", json!({ "prefetch": ask })).await;
    // The first item of the feed, right after the answer.
    let item = c.notification(&sub).await;
    assert_eq!(item["type"], "prefetch", "{item}");
    let entries = item["entries"].as_array().unwrap();
    let get = |rel: &str| -> &Value {
        let p = c.p(rel);
        entries
            .iter()
            .find(|e| e["path"] == json!(p))
            .unwrap_or_else(|| panic!("no entry for {p}: {item}"))
    };
    let data = |e: &Value| {
        e.get("data").map(|d| {
            serde_json::from_value::<protocol::Bytes>(d.clone())
                .unwrap()
                .0
        })
    };

    let agents = get("AGENTS.md");
    assert!(stat_cache(&agents["lstat"]), "{agents}");
    assert_eq!(data(agents).as_deref(), Some(&b"be nice"[..]));
    let head = get(".git/HEAD");
    assert_eq!(data(head).as_deref(), Some(&b"ref: refs/heads/main\n"[..]));
    assert_eq!(get("sub/x")["data"], json!("eA=="), "normalised ./sub//x");
    assert_eq!(
        get("abs.txt")["data"],
        json!(""),
        "absolute path, empty file"
    );
    // A symlink: its lstat is cacheable, its target's bytes are not sent.
    let claude = get("CLAUDE.md");
    assert!(stat_cache(&claude["lstat"]), "{claude}");
    assert_eq!(
        claude["lstat"]["mode"].as_u64().unwrap() as u32 & libc::S_IFMT,
        libc::S_IFLNK
    );
    assert!(claude.get("data").is_none(), "{claude}");
    // Missing: a cacheable ENOENT; under a missing (so unwatched) directory, as fs.stat: not.
    for (rel, cache) in [("missing.md", json!(true)), ("nodir/x", Value::Null)] {
        let e = &get(rel)["error"];
        assert_eq!(e["code"], "ENOENT", "{rel}: {e}");
        assert_eq!(e["syscall"], "lstat", "{rel}: {e}");
        assert_eq!(e["cache"], cache, "{rel}: {e}");
    }
    // A directory: no data; a big file: no data.
    assert!(stat_cache(&get(".pi")["lstat"]));
    assert!(get(".pi").get("data").is_none());
    assert!(stat_cache(&get("big.md")["lstat"]));
    assert!(get("big.md").get("data").is_none());
    // Reached through a symlinked directory: answered, never cacheable, no bytes.
    let through = get("ln/x");
    assert!(!stat_cache(&through["lstat"]), "{through}");
    assert!(through.get("data").is_none(), "{through}");
    // `..` resolved lexically, duplicates once; outside the sandbox: an error nobody may cache.
    assert_eq!(
        entries
            .iter()
            .filter(|e| e["path"] == json!(c.p("AGENTS.md")))
            .count(),
        1
    );
    let parent = std::path::Path::new(&c.root).parent().unwrap();
    let outside = entries
        .iter()
        .find(|e| e["path"] == json!(parent.join("outside").to_str().unwrap()))
        .expect("../outside");
    assert!(
        outside["error"].is_object() && outside["error"].get("cache").is_none(),
        "{outside}"
    );
    // The project root itself: cacheable (its own watch reports what changes it).
    let root = entries
        .iter()
        .find(|e| e["path"] == json!(c.root))
        .expect("the root");
    assert!(stat_cache(&root["lstat"]), "{root}");
    assert_eq!(entries.len(), 12, "{item}");
    // Nothing the prefetch did changed what a stat says.
    assert_eq!(std::fs::metadata(c.p("AGENTS.md")).unwrap().atime(), 1_000);

    // Changes come after it, as usual.
    let mut n = 0;
    std::fs::write(c.p("AGENTS.md"), b"changed").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("AGENTS.md")), "{s:?}");

    // A second feed without prefetch gets none; bad params are refused.
    let plain = subscribe(&mut c).await;
    let s = until_marker(&mut c, &plain, &mut n).await;
    assert_eq!(s.all, 0);
    let e = c.err("fs.changes", json!({"prefetch": [], "x": 1})).await;
    assert!(e.to_string().contains("unknown field"), "{e}");
}

/// The paths of `fs.changed` items of `feed` stashed before the last reply, taken.
fn before_answer(c: &mut Client, feed: &Value) -> Seen {
    let mut seen = Seen::default();
    for f in std::mem::take(&mut c.stash) {
        if f["params"]["subscription"] == *feed {
            seen.add(&f["params"]["result"]);
        }
    }
    seen
}

#[tokio::test]
async fn every_mutation_answers_after_its_changes() {
    let mut c = Client::ready().await;
    std::fs::create_dir_all(c.p("real/d")).unwrap();
    std::fs::write(c.p("real/src"), b"src").unwrap();
    std::os::unix::fs::symlink("real", c.p("via")).unwrap();
    let feed = subscribe(&mut c).await;
    let mut n = 0;
    until_marker(&mut c, &feed, &mut n).await;
    let b64 = crate::server::tests::b64;
    let t = json!([5, 0]);
    // (method, params, the real path that must be reported before the answer), all through the
    // symlinked directory `via`, in an order where each succeeds.
    let calls: Vec<(&str, Value, &str)> = vec![
        (
            "fs.write",
            json!({"path": c.p("via/w"), "data": b64(b"w")}),
            "real/w",
        ),
        (
            "fs.write",
            json!({"path": c.p("via/w"), "data": b64(b"+"), "flag": "a"}),
            "real/w",
        ),
        (
            "fs.mkdir",
            json!({"path": c.p("via/m/n"), "recursive": true}),
            "real/m",
        ),
        ("fs.rmdir", json!({"path": c.p("via/m/n")}), "real/m/n"),
        (
            "fs.rename",
            json!({"from": c.p("via/w"), "to": c.p("via/w2")}),
            "real/w2",
        ),
        (
            "fs.copyFile",
            json!({"from": c.p("via/src"), "to": c.p("via/cp")}),
            "real/cp",
        ),
        (
            "fs.symlink",
            json!({"target": "src", "path": c.p("via/sl")}),
            "real/sl",
        ),
        (
            "fs.link",
            json!({"from": c.p("via/src"), "to": c.p("via/hl")}),
            "real/hl",
        ),
        (
            "fs.chmod",
            json!({"path": c.p("via/src"), "mode": 0o600}),
            "real/src",
        ),
        (
            "fs.utimes",
            json!({"path": c.p("via/src"), "atime": t, "mtime": t}),
            "real/src",
        ),
        (
            "fs.truncate",
            json!({"path": c.p("via/src"), "length": 1}),
            "real/src",
        ),
        ("fs.unlink", json!({"path": c.p("via/hl")}), "real/hl"),
        (
            "fs.rm",
            json!({"path": c.p("via/m"), "recursive": true}),
            "real/m",
        ),
        ("fs.mkdtemp", json!({"prefix": c.p("via/t-")}), "real"),
        (
            "fs.batch",
            json!({"calls": [{"method": "fs.write", "params": {"path": c.p("via/b"), "data": b64(b"b")}}]}),
            "real/b",
        ),
    ];
    for (method, params, real) in calls {
        c.stash.clear();
        let r = c.ok(method, params.clone()).await;
        let seen = before_answer(&mut c, &feed);
        let real = c.p(real);
        let covered = seen.covers(&real)
            || (method == "fs.mkdtemp"
                && seen
                    .paths
                    .iter()
                    .any(|p| p.starts_with(&format!("{real}/t-"))));
        assert!(
            covered,
            "{method} {params}: {real} not reported before the answer {r}: {seen:?}"
        );
        nothing_late(&mut c, &feed, &mut n).await;
    }
    // An upload's commit too.
    let id = c
        .ok("fs.upload.begin", json!({"path": c.p("via/up")}))
        .await["id"]
        .clone();
    c.ok("fs.upload.chunk", json!({"id": id, "data": b64(b"up")}))
        .await;
    c.stash.clear();
    c.ok("fs.upload.commit", json!({"id": id})).await;
    let seen = before_answer(&mut c, &feed);
    assert!(seen.covers(&c.p("real/up")), "upload commit: {seen:?}");
}

#[test]
fn coalescing() {
    let p = |s: &str| PathBuf::from(s);
    // Dedupe, order kept.
    assert_eq!(
        coalesce(&[p("/r/a"), p("/r/b"), p("/r/a")]),
        vec!["/r/a".to_string(), "/r/b".to_string()]
    );
    // A path under another reported one is dropped.
    assert_eq!(
        coalesce(&[p("/r/d/x"), p("/r/d"), p("/r/e")]),
        vec!["/r/d".to_string(), "/r/e".to_string()]
    );
    // Up to COALESCE children stay; one more and the directory stands for them.
    let kids: Vec<PathBuf> = (0..COALESCE).map(|i| p(&format!("/r/d/{i}"))).collect();
    assert_eq!(coalesce(&kids).len(), COALESCE);
    let mut more = kids.clone();
    more.push(p("/r/d/last"));
    more.push(p("/r/other"));
    assert_eq!(
        coalesce(&more),
        vec!["/r/d".to_string(), "/r/other".to_string()]
    );
}

#[test]
fn normal_paths() {
    assert!(is_normal("/a"));
    assert!(is_normal("/a/b.c/d"));
    for bad in ["/", "", "a/b", "/a/", "/a//b", "/a/./b", "/a/../b", "/a/.."] {
        assert!(!is_normal(bad), "{bad}");
    }
}

#[test]
fn shared_filesystems_are_never_watched() {
    for (magic, kind) in [
        (0x6969, "nfs"),
        (0xff53_4d42, "cifs"),
        (0xfe53_4d42, "smb2"),
        (0x6573_5546, "fuse"),
        (0x0102_1997, "9p"),
    ] {
        assert_eq!(shared_fs_kind(magic), Some(kind));
    }
    // ext4, tmpfs, xfs, btrfs, overlayfs: local, watched.
    for magic in [0xef53, 0x0102_1994, 0x5846_5342, 0x9123_683e, 0x794c_7630] {
        assert_eq!(shared_fs_kind(magic), None, "{magic:#x}");
    }
    // The directories these tests use are local: their answers get flagged (the other tests
    // rely on that), and a shared filesystem would be named here.
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(shared_fs(dir.path()), None);
}

/// A big project is armed in the background after the answer, shallowest first. Held here right
/// before one directory (the state a big project is in for seconds): nothing in it is flagged
/// cacheable, not even its own stat, which its watched parent would not keep true (an entry
/// created in it changes its mtime and size with an event on its own watch only); its parent's
/// answers are. Once it is armed, its answers are flagged and its changes reported.
#[tokio::test]
async fn nothing_is_flagged_under_a_directory_not_armed_yet() {
    let mut c = Client::ready().await;
    std::fs::create_dir_all(c.p("a/p/d/e")).unwrap();
    std::fs::write(c.p("a/p/d/f"), b"one").unwrap();
    std::fs::write(c.p("a/p/g"), b"g").unwrap();
    let hold = super::test_hold::hold(Path::new(&c.p("a/p/d")));
    let sub = subscribe(&mut c).await;
    let yes = |v: &Value, what: &str| assert!(stat_cache(v), "{what} should be cacheable: {v}");
    let no = |v: &Value, what: &str| assert!(!stat_cache(v), "{what} must not be cached: {v}");

    // The parent is watched: its own answers are flagged.
    yes(&c.ok("fs.stat", json!({"path": c.p("a/p/g")})).await, "p/g");
    yes(
        &c.ok("fs.readdir", json!({"path": c.p("a/p")})).await,
        "p's listing",
    );
    yes(&c.ok("fs.stat", json!({"path": c.p("a/p")})).await, "p");
    // d is not: neither its stat (through its parent) nor anything in it.
    let d = c.ok("fs.stat", json!({"path": c.p("a/p/d")})).await;
    no(&d, "d (a directory not armed yet)");
    no(
        &c.ok("fs.stat", json!({"path": c.p("a/p/d"), "lstat": true}))
            .await,
        "lstat of d",
    );
    no(
        &c.ok("fs.readdir", json!({"path": c.p("a/p/d")})).await,
        "d's listing",
    );
    no(
        &c.ok("fs.stat", json!({"path": c.p("a/p/d/f")})).await,
        "d/f",
    );
    no(
        &c.ok("fs.read", json!({"path": c.p("a/p/d/f")})).await,
        "read of d/f",
    );
    no(
        &c.ok("fs.stat", json!({"path": c.p("a/p/d/e")})).await,
        "d/e",
    );
    let e = c
        .err("fs.stat", json!({"path": c.p("a/p/d/missing")}))
        .await;
    no(&e["data"], "a missing entry of d");
    let fd = c
        .ok(
            "fs.open",
            json!({"fd": "d", "path": c.p("a/p/d"), "flags": {"read": true}}),
        )
        .await;
    no(&fd["stat"], "the stat of an open of d");
    c.ok("fs.close", json!({"fd": "d"})).await;

    // Changed meanwhile: the answers (round trips) are the new state.
    std::fs::write(c.p("a/p/d/f"), b"two!").unwrap();
    std::fs::write(c.p("a/p/d/new"), b"").unwrap();
    let d2 = c.ok("fs.stat", json!({"path": c.p("a/p/d")})).await;
    assert_ne!(
        (&d["mtime"], &d["size"]),
        (&d2["mtime"], &d2["size"]),
        "an entry created in d changes its stat: {d} {d2}"
    );
    let r = c.ok("fs.read", json!({"path": c.p("a/p/d/f")})).await;
    assert_eq!(crate::server::tests::base64_decode(&r["data"]), b"two!");

    // Armed: flagged, and its changes are reported.
    drop(hold);
    let mut polls = 0;
    while !stat_cache(&c.ok("fs.stat", json!({"path": c.p("a/p/d")})).await) {
        polls += 1;
        assert!(polls < 2000, "d was never armed");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    yes(
        &c.ok("fs.readdir", json!({"path": c.p("a/p/d")})).await,
        "d's listing",
    );
    yes(
        &c.ok("fs.stat", json!({"path": c.p("a/p/d/e")})).await,
        "d/e",
    );
    let mut n = 0;
    std::fs::write(c.p("a/p/d/f"), b"three").unwrap();
    std::fs::write(c.p("a/p/d/e/x"), b"").unwrap();
    let s = until_marker(&mut c, &sub, &mut n).await;
    assert!(s.has(&c.p("a/p/d/f")), "a write in d: {s:?}");
    assert!(s.has(&c.p("a/p/d/e/x")), "a file created under d: {s:?}");
}
