//! Descriptor tests over the whole server (`server::tests::Client`): what the kernel does with a
//! real fd is what the client sees.

use crate::server::tests::{b64, base64_decode, raw_call, resumable, Client};
use serde_json::{json, Value};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use tokio::io::AsyncWriteExt;

async fn open(c: &mut Client, fd: &str, rel: &str, flags: Value) -> Value {
    let path = c.p(rel);
    c.ok("fs.open", json!({"fd": fd, "path": path, "flags": flags}))
        .await
}

fn os_code(e: &Value) -> &str {
    e["data"]["code"].as_str().unwrap_or("<no errno>")
}

#[tokio::test]
async fn writes_are_visible_at_once_and_append_appends() {
    let mut c = Client::ready().await;
    let r = open(
        &mut c,
        "w1",
        "f.txt",
        json!({"write": true, "create": true, "truncate": true}),
    )
    .await;
    assert_eq!(r["stat"]["size"], 0);
    assert!(
        r["stat"].get("cache").is_none(),
        "a creating open is not cacheable: {r}"
    );
    let w = c
        .ok(
            "fs.pwrite",
            json!({"fd": "w1", "offset": 0, "data": b64(b"hello")}),
        )
        .await;
    assert_eq!(w, json!({"written": 5, "position": 5}));
    // Another reader (by path) sees the bytes before any close.
    let path = c.p("f.txt");
    let r = c.ok("fs.read", json!({"path": path})).await;
    assert_eq!(base64_decode(&r["data"]), b"hello");
    assert_eq!(c.ok("fs.fstat", json!({"fd": "w1"})).await["size"], 5);
    // O_APPEND: every write lands at the end, whoever wrote in between.
    open(
        &mut c,
        "a1",
        "f.txt",
        json!({"write": true, "append": true}),
    )
    .await;
    std::fs::write(c.dir.path().join("f.txt"), "hello world").unwrap();
    let w = c
        .ok("fs.fappend", json!({"fd": "a1", "data": b64(b"!")}))
        .await;
    assert_eq!(w, json!({"written": 1, "position": 12}));
    assert_eq!(
        std::fs::read(c.dir.path().join("f.txt")).unwrap(),
        b"hello world!"
    );
    // pwrite is refused on an append descriptor (it would append: not idempotent), and
    // fappend on any other.
    let e = c
        .err(
            "fs.pwrite",
            json!({"fd": "a1", "offset": 0, "data": b64(b"x")}),
        )
        .await;
    assert_eq!(os_code(&e), "EINVAL");
    let e = c
        .err("fs.fappend", json!({"fd": "w1", "data": b64(b"x")}))
        .await;
    assert_eq!(os_code(&e), "EINVAL");
    // A read-only descriptor: writing is EBADF, as the kernel says.
    open(&mut c, "r1", "f.txt", json!({"read": true})).await;
    let e = c
        .err(
            "fs.pwrite",
            json!({"fd": "r1", "offset": 0, "data": b64(b"x")}),
        )
        .await;
    assert_eq!(os_code(&e), "EBADF");
    assert_eq!(e["data"]["syscall"], "write");
    assert!(
        e["data"].get("path").is_none(),
        "fd errors name no path: {e}"
    );
    // pread at offsets, raw and JSON.
    let r = c
        .ok("fs.pread", json!({"fd": "r1", "offset": 6, "length": 3}))
        .await;
    assert_eq!(base64_decode(&r["data"]), b"wor");
    assert_eq!(r["size"], 12);
    let (h, payload) = raw_call(&mut c, "fs.pread", json!({"fd": "r1", "offset": 10})).await;
    assert_eq!(h["result"]["size"], 12, "{h}");
    assert_eq!(payload.unwrap(), b"d!");
}

#[tokio::test]
async fn metadata_calls_work_on_any_open_mode() {
    let mut c = Client::ready().await;
    std::fs::write(c.dir.path().join("m.txt"), "abcdef").unwrap();
    open(&mut c, "r", "m.txt", json!({"read": true})).await;
    c.ok("fs.fchmod", json!({"fd": "r", "mode": 0o640})).await;
    let md = std::fs::metadata(c.dir.path().join("m.txt")).unwrap();
    assert_eq!(md.permissions().mode() & 0o777, 0o640);
    c.ok(
        "fs.futimes",
        json!({"fd": "r", "atime": [1000, 5], "mtime": [2000, 500_000_000]}),
    )
    .await;
    let st = c.ok("fs.fstat", json!({"fd": "r"})).await;
    assert_eq!(st["mtime"], json!([2000, 500_000_000]));
    assert_eq!(st["atime"], json!([1000, 5]));
    c.ok("fs.fsync", json!({"fd": "r"})).await;
    c.ok("fs.fsync", json!({"fd": "r", "data": true})).await;
    let (uid, gid) = (md.uid(), md.gid());
    c.ok("fs.fchown", json!({"fd": "r", "uid": uid, "gid": gid}))
        .await;
    c.ok("fs.fchown", json!({"fd": "r"})).await;
    // ftruncate needs a descriptor open for writing: EINVAL, as the kernel says.
    let e = c.err("fs.ftruncate", json!({"fd": "r", "length": 2})).await;
    assert_eq!(
        (os_code(&e), e["data"]["syscall"].as_str()),
        ("EINVAL", Some("ftruncate"))
    );
    open(&mut c, "rw", "m.txt", json!({"read": true, "write": true})).await;
    c.ok("fs.ftruncate", json!({"fd": "rw", "length": 2})).await;
    assert_eq!(std::fs::read(c.dir.path().join("m.txt")).unwrap(), b"ab");
}

#[tokio::test]
async fn opens_and_closes_can_be_resent() {
    let mut c = Client::ready().await;
    let excl = json!({"write": true, "create": true, "exclusive": true});
    let first = open(&mut c, "x", "new.txt", excl.clone()).await;
    c.ok(
        "fs.pwrite",
        json!({"fd": "x", "offset": 0, "data": b64(b"kept")}),
    )
    .await;
    // The same open again (a call resent after a dropped link): no EEXIST, no second open.
    let again = open(&mut c, "x", "new.txt", excl.clone()).await;
    assert_eq!(again["stat"]["ino"], first["stat"]["ino"]);
    assert_eq!(again["stat"]["size"], 4);
    // The name with other params is a client bug, not a reopen.
    let path = c.p("other.txt");
    let e = c
        .err("fs.open", json!({"fd": "x", "path": path, "flags": excl}))
        .await;
    assert_eq!(os_code(&e), "EINVAL");
    c.ok("fs.close", json!({"fd": "x"})).await;
    c.ok("fs.close", json!({"fd": "x"})).await;
    let e = c.err("fs.pread", json!({"fd": "x", "offset": 0})).await;
    assert_eq!(
        (os_code(&e), e["data"]["syscall"].as_str()),
        ("EBADF", Some("read"))
    );
    // A failed open leaves no name behind: the next try opens for real.
    let e = c
        .err(
            "fs.open",
            json!({"fd": "y", "path": c.p("nodir/f"), "flags": {"write": true, "create": true}}),
        )
        .await;
    assert_eq!(
        (os_code(&e), e["data"]["syscall"].as_str()),
        ("ENOENT", Some("open"))
    );
    std::fs::create_dir(c.dir.path().join("nodir")).unwrap();
    open(
        &mut c,
        "y",
        "nodir/f",
        json!({"write": true, "create": true}),
    )
    .await;
    let e = c
        .err(
            "fs.open",
            json!({"fd": "", "path": c.p("new.txt"), "flags": {}}),
        )
        .await;
    assert_eq!(e["code"], protocol::ErrorCode::InvalidParams.code());
}

#[tokio::test]
async fn a_descriptor_keeps_its_file_and_the_sandbox_holds() {
    let mut c = Client::ready().await;
    std::fs::write(c.dir.path().join("old.txt"), "original").unwrap();
    open(&mut c, "k", "old.txt", json!({"read": true})).await;
    std::fs::rename(c.dir.path().join("old.txt"), c.dir.path().join("moved.txt")).unwrap();
    std::fs::write(c.dir.path().join("old.txt"), "replacement").unwrap();
    let r = c.ok("fs.pread", json!({"fd": "k", "offset": 0})).await;
    assert_eq!(base64_decode(&r["data"]), b"original");
    // Outside the root: refused before anything is opened.
    let e = c
        .err(
            "fs.open",
            json!({"fd": "o", "path": "/etc/passwd", "flags": {"read": true}}),
        )
        .await;
    assert_eq!(os_code(&e), "EACCES");
    // O_NOFOLLOW on a symlink: ELOOP; O_DIRECTORY on a file: ENOTDIR.
    std::os::unix::fs::symlink("moved.txt", c.dir.path().join("l")).unwrap();
    let e = c
        .err(
            "fs.open",
            json!({"fd": "n", "path": c.p("l"), "flags": {"read": true, "nofollow": true}}),
        )
        .await;
    assert_eq!(os_code(&e), "ELOOP");
    let e = c
        .err(
            "fs.open",
            json!({"fd": "n", "path": c.p("moved.txt"), "flags": {"read": true, "directory": true}}),
        )
        .await;
    assert_eq!(os_code(&e), "ENOTDIR");
    // A directory opens for reading; reading it is EISDIR without a path.
    let root = c.root.clone();
    c.ok(
        "fs.open",
        json!({"fd": "d", "path": root, "flags": {"read": true}}),
    )
    .await;
    let e = c.err("fs.pread", json!({"fd": "d", "offset": 0})).await;
    assert_eq!(os_code(&e), "EISDIR");
}

#[tokio::test]
async fn read_ahead_and_cache_flags() {
    let mut c = Client::ready().await;
    std::fs::write(c.dir.path().join("s.txt"), "small file").unwrap();
    let path = c.p("s.txt");
    let r = c
        .ok(
            "fs.open",
            json!({"fd": "s", "path": path, "flags": {"read": true}, "ahead": 4}),
        )
        .await;
    assert_eq!(base64_decode(&r["ahead"]["data"]), b"smal");
    assert_eq!(r["ahead"]["size"], 10);
    assert!(
        r["ahead"].get("cache").is_none(),
        "a part is never cacheable: {r}"
    );
    // No feed subscribed: nothing is flagged cacheable.
    assert!(r["stat"].get("cache").is_none(), "{r}");
}

#[tokio::test]
async fn a_fifo_opens_without_blocking() {
    let mut c = Client::ready().await;
    let p = c.dir.path().join("fifo");
    let cp = std::ffi::CString::new(p.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: a valid C string.
    assert_eq!(unsafe { libc::mkfifo(cp.as_ptr(), 0o600) }, 0);
    // For reading: no writer is the end of the data.
    open(&mut c, "f", "fifo", json!({"read": true})).await;
    let r = c.ok("fs.pread", json!({"fd": "f", "offset": 0})).await;
    assert_eq!(base64_decode(&r["data"]), b"");
    c.ok("fs.close", json!({"fd": "f"})).await;
    // For writing without a reader: ENXIO (a blocking open would wait for one forever).
    let path = c.p("fifo");
    let e = c
        .err(
            "fs.open",
            json!({"fd": "g", "path": path, "flags": {"write": true}}),
        )
        .await;
    assert_eq!(os_code(&e), "ENXIO");
}

/// Descriptors of this process open on `path` (the agent runs in the test process).
fn open_descriptors_on(path: &std::path::Path) -> usize {
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path()).is_ok_and(|t| t == path))
        .count()
}

#[tokio::test]
async fn a_descriptor_lives_through_a_resume_and_closes_with_the_session() {
    let (mut a, ticket) = resumable(20_000).await;
    let file = std::fs::canonicalize(a.dir.path())
        .unwrap()
        .join("held.txt");
    let excl = json!({"read": true, "write": true, "create": true, "exclusive": true});
    let first = open(&mut a, "h", "held.txt", excl.clone()).await;
    a.ok(
        "fs.pwrite",
        json!({"fd": "h", "offset": 0, "data": b64(b"before")}),
    )
    .await;
    a.wr.shutdown().await.unwrap(); // a dropped link, no session.end
    tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    let mut b = Client::start().await;
    let root = a.root.clone();
    let r = b
        .ok(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": root,
                   "resume": {"session": ticket["id"], "secret": ticket["secret"], "lastSeq": 0}}),
        )
        .await;
    assert_eq!(r["resumed"], json!(true), "{r}");
    // pii resends what was in flight: the open (O_EXCL) is answered as before, not EEXIST.
    let path = a.p("held.txt");
    let again = b
        .ok("fs.open", json!({"fd": "h", "path": path, "flags": excl}))
        .await;
    assert_eq!(again["stat"]["ino"], first["stat"]["ino"]);
    let w = json!({"fd": "h", "offset": 6, "data": b64(b", after")});
    b.ok("fs.pwrite", w.clone()).await;
    b.ok("fs.pwrite", w).await; // resent: the same bytes at the same place
    let r = b.ok("fs.pread", json!({"fd": "h", "offset": 0})).await;
    assert_eq!(base64_decode(&r["data"]), b"before, after");
    assert_eq!(open_descriptors_on(&file), 1);
    // The session ends: its descriptors close.
    b.ok("session.end", json!(null)).await;
    b.wr.shutdown().await.unwrap();
    for server in [&mut b.server, &mut a.server] {
        tokio::time::timeout(std::time::Duration::from_secs(10), server)
            .await
            .unwrap()
            .unwrap()
            .unwrap();
    }
    assert_eq!(
        open_descriptors_on(&file),
        0,
        "a descriptor outlived its session"
    );
}
