//! Whole-server tests over an in-memory pipe (`tokio::io::duplex`), speaking raw frames. The
//! [`Client`] is shared with other modules' tests (`changes`).

use super::*;
use crate::{facts, proc};
use serde_json::{json, Value};
use std::os::unix::fs::MetadataExt;
use std::time::Duration;
use tokio::io::{AsyncWriteExt, DuplexStream, ReadHalf, WriteHalf};

pub(crate) struct Client {
    pub(crate) rd: protocol::FrameReader<BufReader<ReadHalf<DuplexStream>>>,
    pub(crate) wr: WriteHalf<DuplexStream>,
    pub(crate) server: tokio::task::JoinHandle<anyhow::Result<()>>,
    pub(crate) stash: Vec<Value>,
    pub(crate) next_id: u64,
    pub(crate) dir: tempfile::TempDir,
    pub(crate) root: String,
}

impl Client {
    pub(crate) async fn start() -> Client {
        let (ours, theirs) = tokio::io::duplex(1 << 20);
        let (sr, sw) = tokio::io::split(theirs);
        let server = tokio::spawn(serve(sr, sw));
        let (cr, cw) = tokio::io::split(ours);
        let mut rd = protocol::FrameReader::new(BufReader::new(cr));
        let magic = tokio::time::timeout(Duration::from_secs(5), rd.next_frame())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        assert_eq!(magic, protocol::Magic::current().line());
        let dir = tempfile::tempdir().unwrap();
        let root = dir
            .path()
            .canonicalize()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        Client {
            rd,
            wr: cw,
            server,
            stash: vec![],
            next_id: 1,
            dir,
            root,
        }
    }

    pub(crate) async fn ready() -> Client {
        let mut c = Client::start().await;
        let r = c
            .call(
                "hello",
                json!({"protocol": 1, "clientVersion": "test", "root": c.root.clone()}),
            )
            .await;
        assert_eq!(r["result"]["facts"]["projectRoot"], json!(c.root), "{r}");
        c
    }

    pub(crate) fn p(&self, rel: &str) -> String {
        format!("{}/{rel}", self.root)
    }

    pub(crate) async fn send_raw(&mut self, bytes: &[u8]) {
        self.wr.write_all(bytes).await.unwrap();
        self.wr.flush().await.unwrap();
    }

    pub(crate) async fn frame(&mut self) -> Value {
        let f = tokio::time::timeout(Duration::from_secs(10), self.rd.next_frame())
            .await
            .expect("no frame within 10 s")
            .unwrap()
            .expect("server closed");
        serde_json::from_str(&f).unwrap_or_else(|e| panic!("not JSON ({e}): {f}"))
    }

    /// The reply with this id (other frames are stashed).
    pub(crate) async fn reply(&mut self, id: &Value) -> Value {
        if let Some(i) = self
            .stash
            .iter()
            .position(|f| &f["id"] == id && f.get("method").is_none())
        {
            return self.stash.remove(i);
        }
        loop {
            let f = self.frame().await;
            if &f["id"] == id && f.get("method").is_none() {
                return f;
            }
            self.stash.push(f);
        }
    }

    /// The next notification of subscription `sub`.
    pub(crate) async fn notification(&mut self, sub: &Value) -> Value {
        if let Some(i) = self
            .stash
            .iter()
            .position(|f| &f["params"]["subscription"] == sub)
        {
            return self.stash.remove(i)["params"]["result"].clone();
        }
        loop {
            let f = self.frame().await;
            if &f["params"]["subscription"] == sub {
                return f["params"]["result"].clone();
            }
            self.stash.push(f);
        }
    }

    pub(crate) async fn call(&mut self, method: &str, params: Value) -> Value {
        let id = json!(self.next_id);
        self.next_id += 1;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
        self.send_raw(format!("{req}\n").as_bytes()).await;
        self.reply(&id).await
    }

    pub(crate) async fn ok(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert!(r.get("error").is_none(), "{method} failed: {r}");
        r["result"].clone()
    }

    pub(crate) async fn err(&mut self, method: &str, params: Value) -> Value {
        let r = self.call(method, params).await;
        assert!(r.get("result").is_none(), "{method} should fail: {r}");
        r["error"].clone()
    }

    /// Spawn and collect events until exit/error.
    pub(crate) async fn spawn_events(&mut self, params: Value) -> Vec<Value> {
        let sub = self.ok("proc.spawn", params).await;
        let mut evs = vec![];
        loop {
            let ev = self.notification(&sub).await;
            let done = ev["type"] == "exit" || ev["type"] == "error";
            evs.push(ev);
            if done {
                return evs;
            }
        }
    }
}

pub(crate) fn b64(bytes: &[u8]) -> Value {
    json!(base64_encode(bytes))
}

fn base64_encode(bytes: &[u8]) -> String {
    serde_json::to_value(protocol::Bytes(bytes.to_vec()))
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

pub(crate) fn base64_decode(v: &Value) -> Vec<u8> {
    serde_json::from_value::<protocol::Bytes>(v.clone())
        .unwrap()
        .0
}

#[tokio::test]
async fn magic_line_first_then_heartbeat() {
    let mut c = Client::start().await;
    c.send_raw(b"\n").await;
    let f = tokio::time::timeout(Duration::from_secs(5), c.rd.next_frame())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(f, "");
}

#[tokio::test]
async fn not_ready_before_hello_then_stat() {
    let mut c = Client::start().await;
    let path = c.root.clone();
    let e = c.err("fs.stat", json!({"path": path})).await;
    assert_eq!(e["code"], json!(ErrorCode::NotReady.code()));
    let e = c
        .err(
            "hello",
            json!({"protocol": 99, "clientVersion": "9.9.9", "root": path}),
        )
        .await;
    assert_eq!(e["code"], json!(ErrorCode::VersionMismatch.code()));
    let msg = e["message"].as_str().unwrap();
    assert!(
        msg.contains("99") && msg.contains(protocol::VERSION),
        "{msg}"
    );
    let e = c
        .err(
            "hello",
            json!({"protocol": 1, "clientVersion": "t", "root": format!("{path}/missing")}),
        )
        .await;
    assert_eq!(e["data"]["code"], "ENOENT", "{e}");
    let r = c
        .ok(
            "hello",
            json!({"protocol": 1, "clientVersion": "t", "root": path}),
        )
        .await;
    assert_eq!(r["facts"]["sandboxRoot"], json!(path));
    let st = c.ok("fs.stat", json!({"path": path})).await;
    assert_eq!(st["mode"].as_u64().unwrap() & 0o170000, 0o040000);
    let e = c
        .err("fs.stat", json!({"path": format!("{path}/nope")}))
        .await;
    assert_eq!(e["code"], json!(-32000));
    assert_eq!(
        e["data"],
        json!({"code": "ENOENT", "syscall": "stat", "path": format!("{path}/nope")})
    );
}

#[tokio::test]
async fn bad_input_gets_errors_and_the_server_goes_on() {
    let mut c = Client::ready().await;
    let null = Value::Null;
    c.send_raw(b"{not json\n").await;
    let f = c.reply(&null).await;
    assert_eq!(f["error"]["code"], json!(-32700));
    c.send_raw(b"\xff\xfe\x00\n").await;
    let f = c.reply(&null).await;
    assert_eq!(f["error"]["code"], json!(-32700));
    let mut big = vec![b'x'; protocol::MAX_FRAME + 10];
    big.push(b'\n');
    c.send_raw(&big).await;
    let f = c.reply(&null).await;
    assert_eq!(f["error"]["code"], json!(ErrorCode::FrameTooLarge.code()));
    c.send_raw(br#"[{"jsonrpc":"2.0","id":1,"method":"fs.stat"}]"#)
        .await;
    c.send_raw(b"\n").await;
    let f = c.reply(&null).await;
    assert_eq!(f["error"]["code"], json!(-32600));
    let e = c.err("no.such", json!({})).await;
    assert_eq!(e["code"], json!(-32601));
    let e = c.err("fs.stat", json!({"path": 5})).await;
    assert_eq!(e["code"], json!(-32602));
    let e = c.err("fs.stat", json!({"path": "/x", "bogus": true})).await;
    assert_eq!(e["code"], json!(-32602));
    let e = c.err("proc.spawn", json!({"file": 1})).await;
    assert_eq!(e["code"], json!(-32602));
    // Still alive.
    let root = c.root.clone();
    c.ok("fs.stat", json!({"path": root})).await;
}

#[tokio::test]
async fn binary_bytes_roundtrip() {
    let mut c = Client::ready().await;
    let path = c.p("bin");
    c.ok(
        "fs.write",
        json!({"path": path, "data": b64(&[0xff, 0x00, 0x80, 0xfe])}),
    )
    .await;
    let r = c.ok("fs.read", json!({"path": path})).await;
    assert_eq!(base64_decode(&r["data"]), vec![0xff, 0x00, 0x80, 0xfe]);
    assert_eq!(r["size"], json!(4));
    assert_eq!(
        std::fs::read(c.dir.path().join("bin")).unwrap(),
        vec![0xff, 0x00, 0x80, 0xfe]
    );
    let r = c
        .ok("fs.read", json!({"path": path, "offset": 1, "length": 2}))
        .await;
    assert_eq!(base64_decode(&r["data"]), vec![0x00, 0x80]);
}

/// Send `fs.read` with `raw: true`; the answer as (header, payload) for a binary frame or
/// (error frame, empty) for a JSON one.
async fn raw_read(c: &mut Client, params: Value) -> (Value, Option<Vec<u8>>) {
    raw_call(c, "fs.read", params).await
}

/// [`raw_read`] of any reading method (`fs.read`, `fs.pread`).
pub(crate) async fn raw_call(
    c: &mut Client,
    method: &str,
    params: Value,
) -> (Value, Option<Vec<u8>>) {
    let id = json!(c.next_id);
    c.next_id += 1;
    let mut params = params;
    params["raw"] = json!(true);
    let req = json!({"jsonrpc": "2.0", "id": id, "method": method, "params": params});
    c.send_raw(format!("{req}\n").as_bytes()).await;
    loop {
        let f = tokio::time::timeout(Duration::from_secs(10), c.rd.next_item())
            .await
            .expect("no frame within 10 s")
            .unwrap()
            .expect("server closed");
        let (v, payload) = match f {
            protocol::frame::Frame::Text(t) => (serde_json::from_str::<Value>(&t).unwrap(), None),
            protocol::frame::Frame::Binary { header, payload } => (
                serde_json::from_str::<Value>(&header).unwrap(),
                Some(payload),
            ),
        };
        if v["id"] == id {
            return (v, payload);
        }
        assert!(payload.is_none(), "someone else's binary frame: {v}");
        c.stash.push(v);
    }
}

#[tokio::test]
async fn raw_reads_answer_with_exact_bytes_in_binary_frames() {
    let mut c = Client::ready().await;
    // Every byte value, newlines, the frame mark and 0xff at the end.
    let data: Vec<u8> = (0..=255u8)
        .cycle()
        .take(70_000)
        .chain([0x00, b'\n', 0x1e, 0xff])
        .collect();
    std::fs::write(c.dir.path().join("bin"), &data).unwrap();
    let path = c.p("bin");
    let (h, p) = raw_read(&mut c, json!({"path": path})).await;
    assert_eq!(p.as_deref(), Some(&data[..]), "{h}");
    assert_eq!(h["result"]["size"], json!(data.len()));
    assert!(h["result"].get("data").is_none(), "{h}");
    assert_eq!(h["jsonrpc"], "2.0");
    // A partial read at the end of the file, then one past it.
    let (h, p) = raw_read(
        &mut c,
        json!({"path": path, "offset": 69_990, "length": 100}),
    )
    .await;
    assert_eq!(p.as_deref(), Some(&data[69_990..]), "{h}");
    let (h, p) = raw_read(
        &mut c,
        json!({"path": path, "offset": 80_000, "length": 100}),
    )
    .await;
    assert_eq!(p.as_deref(), Some(&[][..]), "{h}");
    assert_eq!(h["result"]["size"], json!(data.len()));
    // Errors stay JSON error frames.
    let missing = c.p("missing");
    let (h, p) = raw_read(&mut c, json!({"path": missing})).await;
    assert!(p.is_none());
    assert_eq!(h["error"]["code"], json!(-32000), "{h}");
    assert_eq!(h["error"]["data"]["code"], "ENOENT", "{h}");
    let root = c.root.clone();
    let (h, p) = raw_read(&mut c, json!({"path": root})).await;
    assert!(p.is_none());
    assert_eq!(h["error"]["data"]["code"], "EISDIR", "{h}");
    // Many in flight at once, each answer its own bytes; JSON calls in between still work.
    for i in 0..8u64 {
        let id = 1000 + i;
        let req = json!({"jsonrpc": "2.0", "id": id, "method": "fs.read",
            "params": {"path": path, "offset": i * 8000, "length": 8000, "raw": true}});
        c.send_raw(format!("{req}\n").as_bytes()).await;
    }
    let mut seen = 0;
    while seen < 8 {
        match c.rd.next_item().await.unwrap().unwrap() {
            protocol::frame::Frame::Binary { header, payload } => {
                let h: Value = serde_json::from_str(&header).unwrap();
                let i = h["id"].as_u64().unwrap() - 1000;
                let start = (i * 8000) as usize;
                let end = (start + 8000).min(data.len());
                assert_eq!(payload, data[start..end], "piece {i}");
                seen += 1;
            }
            protocol::frame::Frame::Text(t) => panic!("unexpected {t}"),
        }
    }
    // Without `raw` (and inside fs.batch) a read answers in JSON as before.
    let r = c
        .ok("fs.read", json!({"path": path, "offset": 1, "length": 2}))
        .await;
    assert_eq!(base64_decode(&r["data"]), vec![1, 2]);
    let r = c
        .ok(
            "fs.batch",
            json!({"calls": [{"method": "fs.read", "params": {"path": path, "length": 3, "raw": true}}]}),
        )
        .await;
    assert_eq!(base64_decode(&r[0]["ok"]["data"]), vec![0, 1, 2], "{r}");
}

#[tokio::test]
async fn upload_ten_megabytes_in_chunks() {
    let mut c = Client::ready().await;
    let path = c.p("big.bin");
    let data: Vec<u8> = (0..10 * 1024 * 1024u32)
        .map(|i| (i * 7 + i / 4096) as u8)
        .collect();
    let id = c.ok("fs.upload.begin", json!({"path": path})).await["id"].clone();
    for chunk in data.chunks(1024 * 1024) {
        c.ok("fs.upload.chunk", json!({"id": id, "data": b64(chunk)}))
            .await;
        // Created by the open at begin, as Node's open creates it; no byte before the commit.
        assert_eq!(
            std::fs::metadata(c.dir.path().join("big.bin"))
                .unwrap()
                .len(),
            0,
            "bytes in the target before the commit"
        );
    }
    c.ok("fs.upload.commit", json!({"id": id})).await;
    assert_eq!(std::fs::read(c.dir.path().join("big.bin")).unwrap(), data);
    // No temp files left behind.
    let names: Vec<_> = std::fs::read_dir(c.dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names, vec![std::ffi::OsString::from("big.bin")]);
    // Read back through the protocol in chunks.
    let mut back = Vec::new();
    loop {
        let r = c
            .ok("fs.read", json!({"path": path, "offset": back.len()}))
            .await;
        let chunk = base64_decode(&r["data"]);
        assert!(chunk.len() <= protocol::fs::MAX_CHUNK);
        if chunk.is_empty() {
            break;
        }
        back.extend_from_slice(&chunk);
    }
    assert_eq!(back, data);
    // Abort leaves the target as it was (and the staged bytes never had a name).
    let ino = std::fs::metadata(c.dir.path().join("big.bin"))
        .unwrap()
        .ino();
    let id = c.ok("fs.upload.begin", json!({"path": path})).await["id"].clone();
    c.ok("fs.upload.chunk", json!({"id": id, "data": b64(b"junk")}))
        .await;
    c.ok("fs.upload.abort", json!({"id": id})).await;
    assert_eq!(std::fs::read_dir(c.dir.path()).unwrap().count(), 1);
    assert_eq!(std::fs::read(c.dir.path().join("big.bin")).unwrap(), data);
    let e = c
        .err("fs.upload.chunk", json!({"id": id, "data": ""}))
        .await;
    assert_eq!(e["data"]["code"], "EBADF");
    // A committed rewrite lands in the same inode (hard links, owner and mode stay).
    let id = c.ok("fs.upload.begin", json!({"path": path})).await["id"].clone();
    c.ok("fs.upload.chunk", json!({"id": id, "data": b64(b"short")}))
        .await;
    c.ok("fs.upload.commit", json!({"id": id})).await;
    let md = std::fs::metadata(c.dir.path().join("big.bin")).unwrap();
    assert_eq!((md.ino(), md.len()), (ino, 5));
}

#[tokio::test]
async fn spawn_events_in_order() {
    let mut c = Client::ready().await;
    let cwd = c.root.clone();
    let evs = c
        .spawn_events(json!({"file": "sh", "args": ["-c", "echo hi; sleep 0.05; echo err >&2; exit 3"], "cwd": cwd}))
        .await;
    assert_eq!(evs[0]["type"], "spawned");
    assert!(evs[0]["pid"].as_i64().unwrap() > 0);
    let out: Vec<u8> = evs
        .iter()
        .filter(|e| e["type"] == "stdout")
        .flat_map(|e| base64_decode(&e["data"]))
        .collect();
    let err: Vec<u8> = evs
        .iter()
        .filter(|e| e["type"] == "stderr")
        .flat_map(|e| base64_decode(&e["data"]))
        .collect();
    assert_eq!(out, b"hi\n");
    assert_eq!(err, b"err\n");
    let first_out = evs.iter().position(|e| e["type"] == "stdout").unwrap();
    let first_err = evs.iter().position(|e| e["type"] == "stderr").unwrap();
    assert!(first_out < first_err, "{evs:?}");
    assert_eq!(
        evs.last().unwrap(),
        &json!({"type": "exit", "code": 3, "signal": null})
    );
}

#[tokio::test]
async fn spawn_errors_like_node() {
    let mut c = Client::ready().await;
    let cwd = c.root.clone();
    let evs = c
        .spawn_events(json!({"file": "no-such-program-xyz", "cwd": cwd}))
        .await;
    assert_eq!(evs.len(), 1);
    assert_eq!(
        evs[0],
        json!({"type": "error", "error": {"code": "ENOENT", "syscall": "spawn no-such-program-xyz", "path": "no-such-program-xyz"}})
    );
    let evs = c.spawn_events(json!({"file": "true", "cwd": "/"})).await;
    assert_eq!(evs[0]["error"]["code"], "EACCES", "{evs:?}");
}

#[tokio::test]
async fn spawn_env_cwd_and_stdin() {
    let mut c = Client::ready().await;
    let cwd = c.p("");
    let sub = c
        .ok(
            "proc.spawn",
            json!({"file": "sh", "args": ["-c", "pwd; echo $FOO; echo ${HOME:-unset}; cat"], "cwd": cwd,
                   "env": {"FOO": "bar"}, "unset": ["HOME"], "stdin": true}),
        )
        .await;
    let ev = c.notification(&sub).await;
    let pid = ev["pid"].clone();
    c.ok(
        "proc.stdin",
        json!({"pid": pid, "data": b64(b"from stdin"), "eof": true}),
    )
    .await;
    let mut out = Vec::new();
    loop {
        let ev = c.notification(&sub).await;
        match ev["type"].as_str().unwrap() {
            "stdout" => out.extend(base64_decode(&ev["data"])),
            "exit" => {
                assert_eq!(ev["code"], json!(0));
                break;
            }
            _ => {}
        }
    }
    let root = c.root.clone();
    assert_eq!(
        String::from_utf8(out).unwrap(),
        format!("{root}\nbar\nunset\nfrom stdin")
    );
}

#[tokio::test]
async fn kill_group_leaves_no_process() {
    let mut c = Client::ready().await;
    let cwd = c.root.clone();
    let sub = c
        .ok(
            "proc.spawn",
            json!({"file": "sh", "args": ["-c", "sleep 100 & sleep 100"], "cwd": cwd}),
        )
        .await;
    let pid = c.notification(&sub).await["pid"].as_i64().unwrap() as i32;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proc::table::group_alive(pid));
    let e = c
        .err("proc.kill", json!({"pid": 1, "signal": "SIGKILL"}))
        .await;
    assert_eq!(e["data"]["code"], "ESRCH");
    assert_eq!(
        c.ok(
            "proc.kill",
            json!({"pid": pid, "signal": "SIGKILL", "group": true})
        )
        .await,
        json!(true)
    );
    let ev = c.notification(&sub).await;
    assert_eq!(
        ev,
        json!({"type": "exit", "code": null, "signal": "SIGKILL"})
    );
    assert!(!proc::table::group_alive(pid), "group {pid} survived");
}

#[tokio::test]
async fn eof_kills_running_processes() {
    let mut c = Client::ready().await;
    let cwd = c.root.clone();
    let sub = c
        .ok("proc.spawn", json!({"file": "sh", "args": ["-c", "trap '' TERM; sleep 100 & sleep 100"], "cwd": cwd}))
        .await;
    let pid = c.notification(&sub).await["pid"].as_i64().unwrap() as i32;
    let sub2 = c
        .ok(
            "proc.spawn",
            json!({"file": "sleep", "args": ["100"], "cwd": cwd}),
        )
        .await;
    let pid2 = c.notification(&sub2).await["pid"].as_i64().unwrap() as i32;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(proc::table::group_alive(pid) && proc::table::group_alive(pid2));
    // A clean close: `session.end`, then the end of input.
    assert_eq!(c.ok("session.end", json!(null)).await, json!(null));
    c.wr.shutdown().await.unwrap();
    let t0 = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(10), &mut c.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(t0.elapsed() < Duration::from_secs(5));
    assert!(!proc::table::group_alive(pid), "group {pid} survived EOF");
    assert!(!proc::table::group_alive(pid2), "group {pid2} survived EOF");
}

/// A hello'd client with a short grace period; returns it and its session ticket.
pub(crate) async fn resumable(grace_ms: u64) -> (Client, Value) {
    let mut c = Client::start().await;
    let r = c
        .ok(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": c.root.clone(), "graceMs": grace_ms}),
        )
        .await;
    let ticket = r["session"].clone();
    assert_eq!(ticket["graceMs"], json!(grace_ms), "{r}");
    assert_eq!(ticket["id"].as_str().unwrap().len(), 32, "{r}");
    assert_eq!(ticket["secret"].as_str().unwrap().len(), 64, "{r}");
    (c, ticket)
}

async fn socket_of(ticket: &Value) -> std::path::PathBuf {
    let home = facts::probe().await.home;
    resume::run_dir(&home).join(format!("{}.sock", ticket["id"].as_str().unwrap()))
}

#[tokio::test]
async fn a_dropped_link_keeps_processes_for_the_grace_period_only() {
    let (mut c, ticket) = resumable(1500).await;
    let sock = socket_of(&ticket).await;
    {
        use std::os::unix::fs::{MetadataExt, PermissionsExt};
        let md = std::fs::symlink_metadata(&sock).unwrap();
        assert_eq!(md.permissions().mode() & 0o777, 0o600);
        let dir = std::fs::symlink_metadata(sock.parent().unwrap()).unwrap();
        assert_eq!(dir.mode() & 0o777, 0o700);
    }
    let cwd = c.root.clone();
    let sub = c
        .ok(
            "proc.spawn",
            json!({"file": "sleep", "args": ["100"], "cwd": cwd}),
        )
        .await;
    let pid = c.notification(&sub).await["pid"].as_i64().unwrap() as i32;
    c.wr.shutdown().await.unwrap(); // no session.end: a drop
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        proc::table::group_alive(pid),
        "killed before the grace period ended"
    );
    assert!(sock.exists());
    tokio::time::timeout(Duration::from_secs(15), &mut c.server)
        .await
        .expect("the agent outlived its grace period")
        .unwrap()
        .unwrap();
    assert!(
        !proc::table::group_alive(pid),
        "group {pid} survived the grace period"
    );
    assert!(!sock.exists(), "socket {} left behind", sock.display());
}

#[tokio::test]
async fn a_new_agent_resumes_the_session_with_every_line_once() {
    let (mut a, ticket) = resumable(20_000).await;
    let cwd = a.root.clone();
    let sub = a
        .ok(
            "proc.spawn",
            json!({"file": "sh", "args": ["-c", "for i in $(seq 1 300); do echo line $i; sleep 0.005; done"], "cwd": cwd}),
        )
        .await;
    // Read a few events (with their seqs), then drop the link mid-stream.
    let mut out = Vec::new();
    let mut last_seq = 0u64;
    while out.len() < 20 {
        let f = a.frame().await;
        if f["params"]["subscription"] == sub {
            let seq = f["params"]["seq"]
                .as_u64()
                .expect("notifications carry seq");
            assert_eq!(seq, last_seq + 1, "seq is dense");
            last_seq = seq;
            if f["params"]["result"]["type"] == "stdout" {
                out.extend(base64_decode(&f["params"]["result"]["data"]));
            }
        }
    }
    a.wr.shutdown().await.unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await; // output piles up meanwhile

    // A wrong secret is refused like a gone session; the real one resumes.
    let mut b = Client::start().await;
    let mut bad = ticket.clone();
    bad["secret"] = json!("00".repeat(32));
    let e = b
        .err(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": a.root.clone(),
                   "resume": {"session": bad["id"], "secret": bad["secret"], "lastSeq": last_seq}}),
        )
        .await;
    assert_eq!(e["code"], json!(ErrorCode::SessionGone.code()), "{e}");
    let mut b = Client::start().await;
    let r = b
        .ok(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": a.root.clone(),
                   "resume": {"session": ticket["id"], "secret": ticket["secret"], "lastSeq": last_seq}}),
        )
        .await;
    assert_eq!(r["resumed"], json!(true), "{r}");
    loop {
        let f = b.frame().await;
        if f["params"]["subscription"] != sub {
            continue;
        }
        let seq = f["params"]["seq"].as_u64().unwrap();
        assert_eq!(seq, last_seq + 1, "replay continues the sequence: {f}");
        last_seq = seq;
        // Acks keep the replay buffer small (and prove the method is taken as a notification).
        b.send_raw(
            format!(
                "{}\n",
                json!({"jsonrpc": "2.0", "method": "session.ack", "params": {"seq": seq}})
            )
            .as_bytes(),
        )
        .await;
        let ev = &f["params"]["result"];
        match ev["type"].as_str().unwrap() {
            "stdout" => out.extend(base64_decode(&ev["data"])),
            "exit" => {
                assert_eq!(ev["code"], json!(0));
                break;
            }
            other => panic!("unexpected {other}: {f}"),
        }
    }
    let text = String::from_utf8(out).unwrap();
    let want: String = (1..=300).map(|i| format!("line {i}\n")).collect();
    assert_eq!(text, want, "every line exactly once, in order");
    // The resumed session still serves calls, then ends cleanly.
    assert_eq!(b.ok("session.end", json!(null)).await, json!(null));
    b.wr.shutdown().await.unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut b.server)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(10), &mut a.server)
        .await
        .expect("the session's agent ends when its resumed link ends cleanly")
        .unwrap()
        .unwrap();
    assert!(!socket_of(&ticket).await.exists());
}

#[tokio::test]
async fn resume_of_an_unknown_session_is_refused_then_a_fresh_hello_works() {
    let mut c = Client::start().await;
    let root = c.root.clone();
    let e = c
        .err(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": root,
                   "resume": {"session": "00112233445566778899aabbccddeeff", "secret": "x", "lastSeq": 0}}),
        )
        .await;
    assert_eq!(e["code"], json!(ErrorCode::SessionGone.code()), "{e}");
    let e = c
        .err(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": root,
                   "resume": {"session": "../../etc/passwd", "secret": "x", "lastSeq": 0}}),
        )
        .await;
    assert_eq!(e["code"], json!(ErrorCode::SessionGone.code()), "{e}");
    let r = c
        .ok(
            "hello",
            json!({"protocol": 1, "clientVersion": "test", "root": root}),
        )
        .await;
    assert!(r["session"]["id"].is_string());
    assert_eq!(c.ok("session.end", json!(null)).await, json!(null));
}

#[tokio::test]
async fn run_collects_and_times_out() {
    let mut c = Client::ready().await;
    let cwd = c.root.clone();
    let r = c
        .ok("proc.run", json!({"spawn": {"file": "sh", "args": ["-c", "cat; echo e >&2; exit 4"], "cwd": cwd}, "input": b64(b"in")}))
        .await;
    assert_eq!(base64_decode(&r["stdout"]), b"in");
    assert_eq!(base64_decode(&r["stderr"]), b"e\n");
    assert_eq!(r["code"], json!(4));
    assert_eq!(r["timedOut"], json!(false));
    let t0 = std::time::Instant::now();
    let r = c
        .ok(
            "proc.run",
            json!({"spawn": {"file": "sleep", "args": ["10"], "cwd": cwd}, "timeoutMs": 200}),
        )
        .await;
    assert!(t0.elapsed() < Duration::from_secs(3));
    assert_eq!(r["timedOut"], json!(true));
    assert_eq!(r["signal"], json!("SIGTERM"));
    let r = c
        .ok("proc.run", json!({"spawn": {"file": "sh", "args": ["-c", "yes"], "cwd": cwd}, "maxBuffer": 1000, "killSignal": "SIGKILL"}))
        .await;
    assert_eq!(r["maxBufferExceeded"], json!(true));
    assert_eq!(base64_decode(&r["stdout"]).len(), 1000);
    let r = c
        .ok(
            "proc.run",
            json!({"spawn": {"file": "nope-xyz", "cwd": cwd}}),
        )
        .await;
    assert_eq!(r["error"]["code"], "ENOENT");
}

#[tokio::test]
async fn refused_paths_touch_nothing() {
    let mut c = Client::ready().await;
    let outside = tempfile::tempdir().unwrap();
    let target = outside.path().join("victim");
    std::fs::write(&target, "keep").unwrap();
    std::os::unix::fs::symlink(outside.path(), c.dir.path().join("out")).unwrap();
    let via_link = c.p("out/victim");
    let e = c
        .err("fs.write", json!({"path": via_link, "data": b64(b"evil")}))
        .await;
    assert_eq!(e["data"]["code"], "EACCES");
    let e = c.err("fs.unlink", json!({"path": via_link})).await;
    assert_eq!(e["data"]["code"], "EACCES");
    let e = c
        .err(
            "fs.mkdir",
            json!({"path": c.p("out/newdir"), "recursive": true}),
        )
        .await;
    assert_eq!(e["data"]["code"], "EACCES");
    let e = c
        .err(
            "fs.rename",
            json!({"from": c.p("x"), "to": format!("{}/../escaped", c.root)}),
        )
        .await;
    assert_eq!(e["data"]["code"], "EACCES");
    assert_eq!(std::fs::read_to_string(&target).unwrap(), "keep");
    assert_eq!(std::fs::read_dir(outside.path()).unwrap().count(), 1);
}

#[tokio::test]
async fn batch_runs_each_call() {
    let mut c = Client::ready().await;
    std::fs::write(c.dir.path().join("a"), "x").unwrap();
    let r = c
        .ok(
            "fs.batch",
            json!({"calls": [
                {"method": "fs.stat", "params": {"path": c.p("a")}},
                {"method": "fs.stat", "params": {"path": c.p("missing")}},
                {"method": "proc.kill", "params": {"pid": 1, "signal": "SIGKILL"}},
                {"method": "fs.readdir", "params": {"path": c.root}},
            ]}),
        )
        .await;
    let r = r.as_array().unwrap();
    assert_eq!(r[0]["ok"]["size"], json!(1));
    assert_eq!(r[1]["err"]["data"]["code"], "ENOENT");
    assert_eq!(r[2]["err"]["code"], json!(-32602));
    assert_eq!(
        r[3]["ok"],
        json!({"entries": [{"name": "a", "kind": "file"}]})
    );
}

#[tokio::test]
async fn watch_reports_creation_and_deletion() {
    let mut c = Client::ready().await;
    std::fs::create_dir(c.dir.path().join("w")).unwrap();
    let sub = c
        .ok("watch.start", json!({"path": c.p("w"), "recursive": true}))
        .await;
    // No pause: the answer comes only once inotify is armed.
    std::fs::write(c.dir.path().join("w/HEAD"), "ref").unwrap();
    let ev = c.notification(&sub).await;
    assert_eq!(
        ev,
        json!({"type": "event", "eventType": "rename", "filename": "HEAD"})
    );
    let ev = c.notification(&sub).await;
    assert_eq!(
        ev,
        json!({"type": "event", "eventType": "change", "filename": "HEAD"})
    );
    std::fs::create_dir(c.dir.path().join("w/sub")).unwrap();
    assert_eq!(c.notification(&sub).await["filename"], "sub");
    tokio::time::sleep(Duration::from_millis(50)).await;
    std::fs::write(c.dir.path().join("w/sub/f"), "").unwrap();
    assert_eq!(
        c.notification(&sub).await,
        json!({"type": "event", "eventType": "rename", "filename": "sub/f"})
    );
    std::fs::remove_dir_all(c.dir.path().join("w")).unwrap();
    loop {
        let ev = c.notification(&sub).await;
        if ev["type"] == "error" {
            assert_eq!(ev["error"]["code"], "ENOENT");
            break;
        }
    }
    // A path that cannot be watched fails the call itself (Node's fs.watch throws).
    let e = c.err("watch.start", json!({"path": "/etc"})).await;
    assert_eq!(e["data"]["code"], "EACCES", "{e}");
    let e = c.err("watch.start", json!({"path": c.p("missing")})).await;
    assert_eq!(
        (&e["data"]["code"], &e["data"]["syscall"]),
        (&json!("ENOENT"), &json!("watch")),
        "{e}"
    );
}

/// The notifications of `sub` up to and including the `rename` of `marker`.
async fn events_until(c: &mut Client, sub: &Value, marker: &str) -> Vec<(String, String)> {
    let mut evs = vec![];
    loop {
        let ev = c.notification(sub).await;
        assert_eq!(ev["type"], "event", "{ev}");
        let e = (
            ev["eventType"].as_str().unwrap().to_string(),
            ev["filename"].as_str().unwrap().to_string(),
        );
        let done = e == ("rename".to_string(), marker.to_string());
        evs.push(e);
        if done {
            return evs;
        }
    }
}

#[tokio::test]
async fn own_writes_show_as_node_writes() {
    let mut c = Client::ready().await;
    std::fs::create_dir_all(c.dir.path().join("w/sub")).unwrap();
    std::fs::write(c.dir.path().join("w/a.txt"), "old").unwrap();
    std::fs::write(c.dir.path().join("w/sub/b.txt"), "old").unwrap();
    for recursive in [false, true] {
        let sub = c
            .ok(
                "watch.start",
                json!({"path": c.p("w"), "recursive": recursive}),
            )
            .await;
        c.ok(
            "fs.write",
            json!({"path": c.p("w/a.txt"), "data": b64(b"new"), "flag": "w"}),
        )
        .await;
        if recursive {
            c.ok(
                "fs.write",
                json!({"path": c.p("w/sub/b.txt"), "data": b64(b"new"), "flag": "w"}),
            )
            .await;
        }
        // A file the write creates: 'rename' then 'change', as Node reports a new file.
        c.ok(
            "fs.write",
            json!({"path": c.p("w/n.txt"), "data": b64(b"n"), "flag": "w"}),
        )
        .await;
        std::fs::remove_file(c.dir.path().join("w/n.txt")).unwrap();
        // A plain rename (not one of ours) is still a rename, on both sides.
        std::fs::rename(c.dir.path().join("w/a.txt"), c.dir.path().join("w/c.txt")).unwrap();
        std::fs::rename(c.dir.path().join("w/c.txt"), c.dir.path().join("w/a.txt")).unwrap();
        std::fs::write(c.dir.path().join("w/marker"), "").unwrap();
        let mut want = vec![("change", "a.txt")];
        if recursive {
            want.push(("change", "sub/b.txt"));
        }
        want.extend([
            ("rename", "n.txt"),
            ("change", "n.txt"),
            ("rename", "n.txt"),
            ("rename", "a.txt"),
            ("rename", "c.txt"),
            ("rename", "c.txt"),
            ("rename", "a.txt"),
            ("rename", "marker"),
        ]);
        let want: Vec<(String, String)> = want
            .into_iter()
            .map(|(t, f)| (t.to_string(), f.to_string()))
            .collect();
        // A write in place is a truncate and a write: two IN_MODIFY, which the kernel merges
        // into one when nobody read the first yet (as for Node watching its own writes) and
        // this watch may have read in between. Compare with consecutive repeats collapsed, as
        // tests/tests/conformance_watch.rs does.
        let mut got = events_until(&mut c, &sub, "marker").await;
        got.dedup();
        let mut want = want;
        want.dedup();
        assert_eq!(got, want, "recursive: {recursive}");
        std::fs::remove_file(c.dir.path().join("w/marker")).unwrap();
        c.ok("watch.stop", json!([sub])).await;
    }
    assert_eq!(
        std::fs::read_to_string(c.dir.path().join("w/sub/b.txt")).unwrap(),
        "new"
    );
}

#[test]
fn every_protocol_method_is_served() {
    let t = crate::methods::table();
    for (name, _) in protocol::METHODS {
        if *name == "session.info" {
            assert!(!t.has_method(name));
        } else {
            assert!(t.has_method(name), "{name} missing");
        }
    }
    assert_eq!(t.methods(), protocol::METHODS.len() - 1);
}
