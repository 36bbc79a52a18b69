//! Bad input against the REAL agent binary (`pi-bridge-agent --stdio` over pipes).
//!
//! A corpus of well over 1000 cases — malformed JSON, truncated frames, frames over the size cap,
//! unknown methods, wrong parameter types, huge numbers, invalid base64, paths that try to leave
//! the sandbox (`..` chains, absolute paths, symlinks in every position, NUL bytes, non-UTF-8) —
//! generated systematically plus a seeded random part (`PI_BRIDGE_CORPUS_SEED` overrides the seed).
//! Every case must get a JSON-RPC error (legit in-sandbox cases: a correct result); the agent must
//! stay up; and nothing outside the sandbox may be read, written or created: the tree around the
//! sandbox is snapshotted (paths, sizes, mtimes, sha-like content hashes) before and after, and
//! canary files planted outside must never show up in any reply.
//!
//! A second test races a thread that swaps directories and files for symlinks leading outside
//! (`renameat2(RENAME_EXCHANGE)`) against a hammer of reads, writes and stats: the classic
//! check-then-use escape.

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsStr;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, MetadataExt};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

use pi_bridge_tests::paths;
use serde_json::{json, Value};

const REPLY_TIMEOUT: Duration = Duration::from_secs(20);

// ---------------------------------------------------------------------------------------------
// The tree: <outer>/{sandbox, outside, sibling-sandbox-prefix, home}; canaries outside.
// ---------------------------------------------------------------------------------------------

struct Tree {
    _tmp: tempfile::TempDir,
    /// The agent's HOME (its own state lives there): outside the snapshotted tree.
    home: tempfile::TempDir,
    outer: PathBuf,
    root: PathBuf,
    outside: PathBuf,
    canaries: Vec<String>,
}

fn canary(tag: &str) -> String {
    let mut b = [0u8; 12];
    let f = std::fs::File::open("/dev/urandom").unwrap();
    std::io::Read::read_exact(&mut &f, &mut b).unwrap();
    format!(
        "CANARY-{tag}-{}",
        b.iter().map(|x| format!("{x:02x}")).collect::<String>()
    )
}

fn build_tree() -> Tree {
    let tmp = tempfile::Builder::new()
        .prefix("pi-bridge-corpus-")
        .tempdir()
        .unwrap();
    let outer = tmp.path().canonicalize().unwrap();
    let root = outer.join("sandbox");
    let outside = outer.join("outside");
    let mut canaries = vec![];
    for d in [
        "sandbox/sub/deep",
        "sandbox/d",
        "sandbox/swapdir",
        "outside/dir",
        "outside/swapdir",
        "sandbox-sibling",
        "home",
    ] {
        std::fs::create_dir_all(outer.join(d)).unwrap();
    }
    let mut plant = |rel: &str, tag: &str| {
        let c = canary(tag);
        std::fs::write(outer.join(rel), &c).unwrap();
        canaries.push(c);
    };
    plant("outside/canary", "outside");
    plant("outside/dir/canary", "outside-dir");
    plant("outside/swapdir/f", "swapdir");
    plant("outside/swapfile", "swapfile");
    plant("sandbox-sibling/canary", "sibling");
    plant("canary-top", "top");
    plant("home/.secret", "home");
    // Inside.
    std::fs::write(root.join("sub/file"), "inside file\n").unwrap();
    std::fs::create_dir_all(root.join("keep")).unwrap();
    std::fs::write(root.join("keep/kept"), "kept by the corpus\n").unwrap();
    std::fs::write(root.join("d/f"), "inside d\n").unwrap();
    std::fs::write(root.join("swapdir/f"), "inside swapdir\n").unwrap();
    std::fs::write(root.join("swapfile"), "inside swapfile\n").unwrap();
    std::fs::write(
        root.join(OsStr::from_bytes(b"non-utf8-\xff\xfe")),
        "bytes name\n",
    )
    .unwrap();
    // Symlinks in every position, leading outside (absolute and relative), and inside ones.
    symlink(&outside, root.join("out-abs")).unwrap();
    symlink("../outside", root.join("out-rel")).unwrap();
    symlink(outside.join("canary"), root.join("out-file")).unwrap();
    symlink(outside.join("not-yet"), root.join("out-dangling")).unwrap();
    symlink("..", root.join("up")).unwrap();
    symlink("/", root.join("slash")).unwrap();
    symlink("/etc/passwd", root.join("passwd")).unwrap();
    symlink("../../outside", root.join("sub/out-deep")).unwrap();
    symlink("chain2", root.join("chain1")).unwrap();
    symlink("chain3", root.join("chain2")).unwrap();
    symlink(outer.join("sandbox-sibling"), root.join("chain3")).unwrap();
    symlink("sub", root.join("in")).unwrap();
    symlink("loop-b", root.join("loop-a")).unwrap();
    symlink("loop-a", root.join("loop-b")).unwrap();
    // Swap partners for the race: exchanged with swapdir/swapfile.
    symlink(outside.join("swapdir"), root.join("swapdir-alt")).unwrap();
    symlink(outside.join("swapfile"), root.join("swapfile-alt")).unwrap();
    Tree {
        _tmp: tmp,
        home: tempfile::tempdir().unwrap(),
        outer,
        root,
        outside,
        canaries,
    }
}

/// Every path under `outer` except the sandbox's contents: kind, size, mode, mtime, content hash.
fn snapshot(outer: &Path, sandbox: &Path) -> BTreeMap<PathBuf, String> {
    let mut out = BTreeMap::new();
    fn walk(p: &Path, sandbox: &Path, out: &mut BTreeMap<PathBuf, String>) {
        let md = std::fs::symlink_metadata(p).unwrap();
        let ft = md.file_type();
        let mut desc = format!(
            "mode={:o} size={} mtime={}.{} ino={}",
            md.mode(),
            md.size(),
            md.mtime(),
            md.mtime_nsec(),
            md.ino()
        );
        if ft.is_file() {
            desc.push_str(&format!(" hash={:016x}", fnv(&std::fs::read(p).unwrap())));
        } else if ft.is_symlink() {
            desc.push_str(&format!(" -> {}", std::fs::read_link(p).unwrap().display()));
        }
        if p != sandbox {
            // (The sandbox root itself is inside: legit calls may touch it.)
            out.insert(p.to_path_buf(), desc);
        }
        if ft.is_dir() && p != sandbox {
            for e in std::fs::read_dir(p).unwrap() {
                walk(&e.unwrap().path(), sandbox, out);
            }
        }
    }
    walk(outer, sandbox, &mut out);
    out
}

fn fnv(b: &[u8]) -> u64 {
    b.iter().fold(0xcbf29ce484222325u64, |h, &x| {
        (h ^ x as u64).wrapping_mul(0x100000001b3)
    })
}

fn assert_same_tree(before: &BTreeMap<PathBuf, String>, after: &BTreeMap<PathBuf, String>) {
    let mut diffs = vec![];
    for (p, d) in before {
        match after.get(p) {
            None => diffs.push(format!("removed: {}", p.display())),
            Some(a) if a != d => diffs.push(format!("changed: {} ({d} -> {a})", p.display())),
            _ => {}
        }
    }
    for p in after.keys() {
        if !before.contains_key(p) {
            diffs.push(format!("created: {}", p.display()));
        }
    }
    assert!(
        diffs.is_empty(),
        "the tree outside the sandbox changed:\n{}",
        diffs.join("\n")
    );
}

// ---------------------------------------------------------------------------------------------
// The agent over pipes.
// ---------------------------------------------------------------------------------------------

struct Agent {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Vec<u8>>,
    /// Every line the agent wrote, for the canary check.
    seen: Vec<Vec<u8>>,
    /// Notifications (proc.event/watch.event) not yet looked at.
    notes: Vec<Value>,
}

impl Agent {
    fn start(home: &Path) -> Agent {
        let mut child = Command::new(paths::bin("pi-bridge-agent"))
            .arg("--stdio")
            .env("HOME", home)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start pi-bridge-agent");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut r = BufReader::with_capacity(1 << 20, stdout);
            loop {
                let mut l = Vec::new();
                match r.read_until(b'\n', &mut l) {
                    Ok(0) | Err(_) => return,
                    Ok(_) => {
                        if l.last() == Some(&b'\n') {
                            l.pop();
                        }
                        if tx.send(l).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let stdin = child.stdin.take();
        let mut a = Agent {
            child,
            stdin,
            lines: rx,
            seen: vec![],
            notes: vec![],
        };
        let magic = a.line().expect("magic line");
        assert!(
            magic.starts_with(b"PI-BRIDGE-AGENT protocol="),
            "{}",
            String::from_utf8_lossy(&magic)
        );
        a
    }

    fn line(&mut self) -> Option<Vec<u8>> {
        let l = self.lines.recv_timeout(REPLY_TIMEOUT).ok()?;
        self.seen.push(l.clone());
        Some(l)
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        let w = self.stdin.as_mut().unwrap();
        w.write_all(bytes).expect("agent stdin");
        w.flush().unwrap();
    }

    /// The next reply (a frame with an `id` key); notifications are kept aside.
    fn reply(&mut self, what: &str) -> Value {
        loop {
            let l = self
                .line()
                .unwrap_or_else(|| panic!("no reply from the agent for {what}"));
            if l.is_empty() {
                continue; // heartbeat echo
            }
            let v: Value = serde_json::from_slice(&l).unwrap_or_else(|e| {
                panic!(
                    "agent wrote a non-JSON line for {what} ({e}): {}",
                    String::from_utf8_lossy(&l)
                )
            });
            if v.get("id").is_some() {
                return v;
            }
            self.notes.push(v);
        }
    }

    /// The first notification of subscription `sub`.
    fn notification(&mut self, sub: &Value, what: &str) -> Value {
        loop {
            if let Some(i) = self
                .notes
                .iter()
                .position(|n| n["params"]["subscription"] == *sub)
            {
                return self.notes.remove(i)["params"]["result"].clone();
            }
            let l = self
                .line()
                .unwrap_or_else(|| panic!("no notification for {what}"));
            if l.is_empty() {
                continue;
            }
            let v: Value = serde_json::from_slice(&l).unwrap();
            assert!(v.get("id").is_none(), "unexpected reply for {what}: {v}");
            self.notes.push(v);
        }
    }

    fn call(&mut self, id: u64, method: &str, params: Value) -> Value {
        let f = json!({"jsonrpc":"2.0","id":id,"method":method,"params":params});
        self.send_raw(format!("{f}\n").as_bytes());
        let r = self.reply(method);
        assert_eq!(r["id"], json!(id), "{r}");
        r
    }

    fn end(&mut self) {
        let r = self.call(u64::MAX, "session.end", json!(null));
        assert!(r.get("result").is_some(), "session.end: {r}");
    }

    fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// A clean end: `session.end` (so the agent does not keep the session for a reconnect
    /// grace period), then EOF; waits for the exit.
    fn finish(mut self) -> (std::process::ExitStatus, Vec<Vec<u8>>) {
        if self.stdin.is_some() {
            self.end();
        }
        drop(self.stdin.take());
        while let Some(l) = self.line() {
            let _ = l;
        }
        let st = self.child.wait().unwrap();
        (st, std::mem::take(&mut self.seen))
    }
}

fn hello(a: &mut Agent, root: &Path) {
    let r = a.call(
        0,
        "hello",
        json!({"protocol":1,"clientVersion":"0.1.0","root":root}),
    );
    assert_eq!(r["result"]["facts"]["sandboxRoot"], json!(root), "{r}");
}

// ---------------------------------------------------------------------------------------------
// Cases.
// ---------------------------------------------------------------------------------------------

#[derive(Clone, Copy, Debug, PartialEq)]
enum Expect {
    /// A JSON-RPC error reply with this id (`null` for frames that cannot be parsed).
    Error,
    /// Refused for the sandbox: an error reply; for subscriptions a result then an `error`
    /// event; for `proc.run` a result carrying `error`; for fs.batch every item an error.
    Refused,
    /// A normal result (legit in-sandbox call); `check` validates it.
    Ok,
    /// No reply at all (a notification).
    Nothing,
    /// Random input: any reply, as long as it is a well-formed reply to this frame.
    Any,
}

struct Case {
    category: &'static str,
    frame: Vec<u8>,
    /// The id the reply must carry (`null` when the frame cannot be parsed).
    id: Value,
    expect: Expect,
    check: Option<fn(&Value) -> bool>,
}

fn req(id: u64, method: &str, params: Value) -> Vec<u8> {
    let mut v =
        serde_json::to_vec(&json!({"jsonrpc":"2.0","id":id,"method":method,"params":params}))
            .unwrap();
    v.push(b'\n');
    v
}

struct Gen {
    next_id: u64,
    cases: Vec<Case>,
}

impl Gen {
    fn id(&mut self) -> u64 {
        self.next_id += 1;
        self.next_id
    }
    fn push(&mut self, category: &'static str, method: &str, params: Value, expect: Expect) {
        let id = self.id();
        self.cases.push(Case {
            category,
            frame: req(id, method, params),
            id: json!(id),
            expect,
            check: None,
        });
    }
    fn raw(&mut self, category: &'static str, frame: Vec<u8>, id: Value, expect: Expect) {
        let mut frame = frame;
        frame.push(b'\n');
        self.cases.push(Case {
            category,
            frame,
            id,
            expect,
            check: None,
        });
    }
}

/// Params templates for every method of the agent, with `P` standing for a path.
fn templates(p: &str, inside: &str) -> Vec<(&'static str, Value)> {
    vec![
        ("fs.stat", json!({"path": p})),
        ("fs.stat", json!({"path": p, "lstat": true})),
        ("fs.access", json!({"path": p, "mode": 4})),
        ("fs.readdir", json!({"path": p})),
        ("fs.readdir", json!({"path": p, "recursive": true})),
        ("fs.read", json!({"path": p})),
        ("fs.write", json!({"path": p, "data": "cHduZWQ="})),
        (
            "fs.write",
            json!({"path": p, "data": "cHduZWQ=", "flag": "a"}),
        ),
        (
            "fs.write",
            json!({"path": p, "data": "cHduZWQ=", "flag": "wx"}),
        ),
        ("fs.upload.begin", json!({"path": p})),
        ("fs.mkdir", json!({"path": p})),
        (
            "fs.mkdir",
            json!({"path": format!("{p}/x/y"), "recursive": true}),
        ),
        ("fs.rmdir", json!({"path": p})),
        ("fs.unlink", json!({"path": p})),
        (
            "fs.rm",
            json!({"path": p, "recursive": true, "force": true}),
        ),
        (
            "fs.rename",
            json!({"from": p, "to": format!("{inside}/renamed")}),
        ),
        (
            "fs.rename",
            json!({"from": format!("{inside}/sub/file"), "to": p}),
        ),
        (
            "fs.copyFile",
            json!({"from": p, "to": format!("{inside}/copied")}),
        ),
        (
            "fs.copyFile",
            json!({"from": format!("{inside}/sub/file"), "to": p}),
        ),
        ("fs.realpath", json!({"path": p})),
        ("fs.readlink", json!({"path": p})),
        ("fs.symlink", json!({"target": "/etc", "path": p})),
        (
            "fs.link",
            json!({"from": p, "to": format!("{inside}/hardlinked")}),
        ),
        (
            "fs.link",
            json!({"from": format!("{inside}/sub/file"), "to": p}),
        ),
        ("fs.chmod", json!({"path": p, "mode": 0o777})),
        (
            "fs.utimes",
            json!({"path": p, "atime": [1, 0], "mtime": [1, 0]}),
        ),
        ("fs.truncate", json!({"path": p, "length": 0})),
        ("fs.mkdtemp", json!({"prefix": format!("{p}/t-")})),
        (
            "fs.readdir",
            json!({"path": p, "recursive": true, "follow": true}),
        ),
        (
            "fs.open",
            json!({"fd": "corpus", "path": p, "flags": {"read": true}}),
        ),
        (
            "fs.open",
            json!({"fd": "corpus-w", "path": p, "flags": {"write": true, "create": true, "truncate": true}}),
        ),
        (
            "fs.open",
            json!({"fd": "corpus-a", "path": p, "flags": {"write": true, "create": true, "append": true}}),
        ),
        ("fs.chown", json!({"path": p})),
        ("fs.statfs", json!({"path": p})),
        ("watch.start", json!({"path": p})),
        (
            "proc.spawn",
            json!({"file": "/bin/cat", "args": ["canary"], "cwd": p}),
        ),
        (
            "proc.run",
            json!({"spawn": {"file": "/bin/cat", "args": ["canary"], "cwd": p}}),
        ),
        (
            "fs.batch",
            json!({"calls": [{"method": "fs.read", "params": {"path": p}},
                             {"method": "fs.write", "params": {"path": p, "data": "eA=="}}]}),
        ),
    ]
}

/// Calls that act on a final symlink itself (legit when the link lives inside).
fn acts_on_link(method: &str, params: &Value) -> bool {
    match method {
        "fs.rmdir" | "fs.unlink" | "fs.rm" | "fs.readlink" | "fs.symlink" | "fs.rename"
        | "fs.link" => true,
        "fs.mkdir" => params.get("recursive") != Some(&json!(true)),
        "fs.stat" => params["lstat"] == json!(true),
        _ => false,
    }
}

fn systematic(t: &Tree) -> Gen {
    let mut g = Gen {
        next_id: 100,
        cases: vec![],
    };
    let root = t.root.to_str().unwrap().to_string();
    let outer = t.outer.to_str().unwrap().to_string();
    let outside = t.outside.to_str().unwrap().to_string();

    // 1. Malformed JSON.
    let malformed: Vec<&[u8]> = vec![
        b"{",
        b"}",
        b"[",
        b"]",
        b"nul",
        b"tru",
        b"{\"jsonrpc\":",
        b"{\"jsonrpc\":\"2.0\",}",
        b"{'id':1}",
        b"{\"id\":1,\"method\":\"fs.stat\",\"params\":{\"path\":\"/x\"}",
        b"{\"id\":1 \"method\":\"fs.stat\"}",
        b"{\"id\":01,\"method\":\"fs.stat\"}",
        b"{\"id\":1,\"method\":\"fs.stat\",\"params\":{\"path\":\"/x\"}}}",
        b"{\"id\":1,\"method\":\"fs.st\\at\"}",
        b"{\"id\":1,\"method\":\"\\ud800\"}",
        b"{\"id\":1,\"method\":\"fs.stat\",\"params\":{\"path\":\"\\udfff\"}}",
        b"{\"id\":NaN}",
        b"{\"id\":Infinity}",
        b"{\"id\":-}",
        b"{\"id\":1e}",
        b"\"just a string",
        b"\x00\x00\x00",
        b"\xef\xbb\xbf{\"id\":1,\"method\":\"fs.stat\"}",
        b"\xff\xfe{}",
        b"\xc3\x28",
        b"{\"id\":1,\"method\":\"fs.stat\",\"params\":{\"path\":\"\xff\"}}",
        b"{\"a\":\"\x01\"}",
        b"{\"id\":1,\"method\":\"fs.stat\",\"params\":{\"path\":\"a\tb\"}}",
        b"[{\"id\":1,\"method\":\"fs.stat\"},",
        b"[[[[[[[[[[[[[[[[[[[[",
        b"{\"id\":[1,2}",
        b"// comment",
        b"/* */ {}",
        b"{\"id\":1}garbage",
        b"{} {}",
        b"{\"id\":1,\"method\":\"fs.stat\"} {\"id\":2}",
    ];
    for m in malformed {
        g.raw("malformed JSON", m.to_vec(), Value::Null, Expect::Error);
    }
    // Deep nesting beyond serde_json's recursion limit, as params and as the whole frame.
    let deep = "[".repeat(100_000);
    g.raw(
        "malformed JSON",
        deep.into_bytes(),
        Value::Null,
        Expect::Error,
    );
    let deep = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"fs.stat\",\"params\":{}{}}}",
        "[".repeat(5000),
        "]".repeat(5000)
    );
    g.raw(
        "malformed JSON",
        deep.into_bytes(),
        Value::Null,
        Expect::Error,
    );
    // Valid JSON that is not a request object.
    for v in ["1", "\"s\"", "null", "true", "[]", "[1,2]", "-0", "1e400"] {
        let expect = Expect::Error;
        g.raw("not a request", v.as_bytes().to_vec(), Value::Null, expect);
    }
    for v in [
        json!({"jsonrpc":"2.0","id":1,"method":5}),
        json!({"jsonrpc":"2.0","id":1,"method":null}),
        json!({"jsonrpc":"2.0","id":1,"method":["fs.stat"]}),
        json!({"jsonrpc":"2.0","method":{"a":1}}),
    ] {
        g.raw(
            "not a request",
            serde_json::to_vec(&v).unwrap(),
            Value::Null,
            Expect::Error,
        );
    }
    // Notifications (no id): no reply, nothing executed.
    for p in ["notified-1", "notified-2"] {
        let f = json!({"jsonrpc":"2.0","method":"fs.write","params":{"path":format!("{root}/{p}"),"data":"eA=="}});
        g.raw(
            "notification",
            serde_json::to_vec(&f).unwrap(),
            Value::Null,
            Expect::Nothing,
        );
    }

    // 2. Truncated frames: every valid request cut at many points.
    let whole: Vec<Vec<u8>> = vec![
        req(1, "fs.stat", json!({"path": format!("{root}/sub/file")})),
        req(
            2,
            "fs.write",
            json!({"path": format!("{root}/trunc"), "data": "aGVsbG8gd29ybGQ="}),
        ),
        req(3, "fs.read", json!({"path": format!("{outside}/canary")})),
        req(
            4,
            "proc.run",
            json!({"spawn": {"file": "cat", "args": [format!("{outside}/canary")], "cwd": root}}),
        ),
        req(
            5,
            "fs.batch",
            json!({"calls": [{"method":"fs.stat","params":{"path":root}}]}),
        ),
        req(
            6,
            "hello",
            json!({"protocol":1,"clientVersion":"0.1.0","root":"/"}),
        ),
    ];
    for w in &whole {
        let w = &w[..w.len() - 1];
        let n = w.len();
        let mut cuts: Vec<usize> = (1..n).step_by(3).collect();
        cuts.push(n - 1);
        for cut in cuts {
            if w[..cut].iter().all(|b| b.is_ascii_whitespace()) {
                continue;
            }
            g.raw(
                "truncated frame",
                w[..cut].to_vec(),
                Value::Null,
                Expect::Error,
            );
        }
    }

    // 3. Frames over the maximum size (each answered with FrameTooLarge; reading goes on).
    let max = pi_bridge_protocol::MAX_FRAME;
    g.raw(
        "oversize frame",
        vec![b'x'; max + 1],
        Value::Null,
        Expect::Error,
    );
    let big_data = "A".repeat(max + 16);
    let f = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"fs.write\",\"params\":{{\"path\":\"{root}/big\",\"data\":\"{big_data}\"}}}}"
    );
    g.raw("oversize frame", f.into_bytes(), Value::Null, Expect::Error);
    let mut lots = vec![b' '; max + 10];
    lots.extend_from_slice(b"{\"id\":1}");
    g.raw("oversize frame", lots, Value::Null, Expect::Error);

    // 4. Unknown methods (hello first on purpose? no: the session is up).
    let long = "m".repeat(70_000);
    let unknown: Vec<String> = vec![
        "".into(),
        "fs".into(),
        "fs.".into(),
        "FS.STAT".into(),
        "fs.stat ".into(),
        " fs.stat".into(),
        "fs.stat\u{0}".into(),
        "fs.stat\n".into(),
        "fs/stat".into(),
        "rpc.discover".into(),
        "proc.event".into(),
        "watch.event".into(),
        "session.info".into(),
        "fs.upload".into(),
        "__proto__".into(),
        "constructor".into(),
        "fs.stät".into(),
        "🙂".into(),
        long,
    ];
    for m in &unknown {
        g.push("unknown method", m, json!({"path": root}), Expect::Error);
    }
    for i in 0..30 {
        g.push(
            "unknown method",
            &format!("no.such.method.{i}"),
            json!([]),
            Expect::Error,
        );
    }

    // 5. Wrong parameter types, for every method.
    let mutations: Vec<Value> = vec![
        json!(5),
        json!("str"),
        json!(true),
        json!(null),
        json!([]),
        json!([1, 2]),
        json!({}),
        json!({"path": 5}),
        json!({"path": null}),
        json!({"path": ["/a"]}),
        json!({"path": {"a": 1}}),
        json!({"path": true}),
        json!({"unknownField": 1}),
        json!({"path": root, "extra": 1}),
    ];
    let mut methods: Vec<&str> = pi_bridge_protocol::METHODS
        .iter()
        .map(|(m, _)| *m)
        // Methods without params (they take any params, as `null`/`{}`/`[]`) are not "wrong".
        .filter(|m| !matches!(*m, "session.info" | "session.end"))
        .collect();
    methods.push("proc.spawn");
    methods.push("watch.start");
    for m in &methods {
        for p in &mutations {
            // `fs.upload.abort`/`proc.*` with `null`… still errors: every params type has a
            // required field.
            g.push("wrong param types", m, p.clone(), Expect::Error);
        }
    }
    // Field-specific type errors.
    for (m, p) in [
        ("fs.stat", json!({"path": root, "lstat": "yes"})),
        ("fs.access", json!({"path": root, "mode": "r"})),
        ("fs.read", json!({"path": root, "offset": "0"})),
        ("fs.read", json!({"path": root, "length": -1})),
        ("fs.write", json!({"path": root, "data": 5})),
        (
            "fs.write",
            json!({"path": root, "data": "eA==", "flag": "rw"}),
        ),
        (
            "fs.write",
            json!({"path": root, "data": "eA==", "mode": "644"}),
        ),
        ("fs.mkdir", json!({"path": root, "recursive": 1})),
        ("fs.chmod", json!({"path": root})),
        ("fs.utimes", json!({"path": root, "atime": 1, "mtime": 1})),
        (
            "fs.utimes",
            json!({"path": root, "atime": [1], "mtime": [1, 2, 3]}),
        ),
        (
            "fs.utimes",
            json!({"path": root, "atime": [1, -1], "mtime": [1, 0]}),
        ),
        ("fs.rename", json!({"from": root})),
        ("fs.symlink", json!({"target": 1, "path": root})),
        ("fs.batch", json!({"calls": {"method": "fs.stat"}})),
        ("fs.batch", json!({"calls": [{"method": 1, "params": {}}]})),
        ("proc.spawn", json!({"file": 1, "cwd": root})),
        (
            "proc.spawn",
            json!({"file": "ls", "cwd": root, "env": {"A": 1}}),
        ),
        (
            "proc.spawn",
            json!({"file": "ls", "cwd": root, "args": "-l"}),
        ),
        ("proc.kill", json!({"pid": "1", "signal": "SIGKILL"})),
        ("proc.stdin", json!({"pid": 1, "data": [1, 2]})),
        (
            "hello",
            json!({"protocol": "1", "clientVersion": "x", "root": "/"}),
        ),
        ("hello", json!({"protocol": 1, "clientVersion": "x"})),
        (
            "hello",
            json!({"protocol": 2, "clientVersion": "x", "root": root}),
        ),
        (
            "hello",
            json!({"protocol": 1, "clientVersion": "x", "root": root, "sandboxRoot": root, "x": 1}),
        ),
    ] {
        g.push("wrong param types", m, p, Expect::Error);
    }

    // 6. Huge numbers.
    for (m, p) in [
        (
            "fs.read",
            json!({"path": format!("{root}/sub/file"), "offset": u64::MAX}),
        ),
        (
            "fs.truncate",
            json!({"path": format!("{root}/sub/file"), "length": u64::MAX}),
        ),
        (
            "fs.utimes",
            json!({"path": format!("{root}/sub/file"), "atime": [1, 4_000_000_000u64], "mtime": [1, 0]}),
        ),
        (
            "fs.utimes",
            json!({"path": format!("{root}/sub/file"), "atime": [1, 999_999_999], "mtime": [1, 1_000_000_000]}),
        ),
        ("proc.kill", json!({"pid": i32::MAX, "signal": "SIGKILL"})),
        (
            "proc.kill",
            json!({"pid": -1, "signal": "SIGKILL", "group": true}),
        ),
        (
            "proc.kill",
            json!({"pid": 0, "signal": "SIGKILL", "group": true}),
        ),
        ("proc.kill", json!({"pid": 1, "signal": "99999"})),
        ("proc.stdin", json!({"pid": 1, "data": "eA=="})),
    ] {
        g.push("huge numbers", m, p, Expect::Error);
    }
    let huge_raw: Vec<String> = vec![
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.read\",\"params\":{{\"path\":\"{root}/sub/file\",\"offset\":18446744073709551616}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.read\",\"params\":{{\"path\":\"{root}/sub/file\",\"offset\":1e400}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.read\",\"params\":{{\"path\":\"{root}/sub/file\",\"length\":-1e30}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.chmod\",\"params\":{{\"path\":\"{root}/sub/file\",\"mode\":4294967296}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.chmod\",\"params\":{{\"path\":\"{root}/sub/file\",\"mode\":1.5}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.access\",\"params\":{{\"path\":\"{root}\",\"mode\":-1}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.utimes\",\"params\":{{\"path\":\"{root}\",\"atime\":[9223372036854775808,0],\"mtime\":[0,0]}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.truncate\",\"params\":{{\"path\":\"{root}/sub/file\",\"length\":{}}}}}", "9".repeat(400)),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"proc.kill\",\"params\":{{\"pid\":2147483648,\"signal\":\"SIGKILL\"}}}}"),
        format!("{{\"jsonrpc\":\"2.0\",\"id\":%ID%,\"method\":\"fs.write\",\"params\":{{\"path\":\"{root}/h\",\"data\":\"eA==\",\"mode\":99999999999}}}}"),
    ];
    for f in huge_raw {
        let id = g.id();
        g.raw(
            "huge numbers",
            f.replace("%ID%", &id.to_string()).into_bytes(),
            json!(id),
            Expect::Error,
        );
    }
    // Huge ids are echoed back verbatim with the error.
    for raw_id in [
        "123456789012345678901234567890",
        "1.5e300",
        "-9223372036854775809",
    ] {
        let f = format!("{{\"jsonrpc\":\"2.0\",\"id\":{raw_id},\"method\":\"no.such\"}}");
        let id: Value = serde_json::from_str(raw_id).unwrap_or(Value::Null);
        g.raw("huge numbers", f.into_bytes(), id, Expect::Error);
    }

    // 7. Invalid base64.
    let bad_b64: Vec<String> = vec![
        "@@@".into(),
        "YQ".into(),
        "YQ=".into(),
        "YQ===".into(),
        "Y Q==".into(),
        "YQ==\n".into(),
        "é".into(),
        "\u{0}".into(),
        "-_-_".into(),
        "====".into(),
        "A".into(),
        "!".repeat(1 << 20),
        format!("{}*", "QUFB".repeat(10_000)),
    ];
    for b in &bad_b64 {
        g.push(
            "invalid base64",
            "fs.write",
            json!({"path": format!("{root}/b64"), "data": b}),
            Expect::Error,
        );
        g.push(
            "invalid base64",
            "fs.upload.chunk",
            json!({"id": "u-none", "data": b}),
            Expect::Error,
        );
        g.push(
            "invalid base64",
            "proc.stdin",
            json!({"pid": 1, "data": b}),
            Expect::Error,
        );
        g.push(
            "invalid base64",
            "proc.run",
            json!({"spawn": {"file": "cat", "cwd": root}, "input": b}),
            Expect::Error,
        );
    }

    // Legit: in-sandbox calls with correct results (the harness can see successes).
    let legit = |g: &mut Gen, m: &str, params: Value, check: fn(&Value) -> bool| {
        let id = g.id();
        g.cases.push(Case {
            category: "legit in-sandbox",
            frame: req(id, m, params),
            id: json!(id),
            expect: Expect::Ok,
            check: Some(check),
        });
    };
    legit(
        &mut g,
        "fs.read",
        json!({"path": format!("{root}/sub/file")}),
        |r| r["data"] == json!("aW5zaWRlIGZpbGUK"),
    );
    legit(
        &mut g,
        "fs.read",
        json!({"path": format!("{root}/in/file")}),
        |r| r["data"] == json!("aW5zaWRlIGZpbGUK"),
    );
    legit(
        &mut g,
        "fs.stat",
        json!({"path": format!("{root}/sub/file")}),
        |r| r["size"] == json!(12),
    );
    legit(
        &mut g,
        "fs.stat",
        json!({"path": format!("{root}/out-abs"), "lstat": true}),
        |r| r["mode"].as_u64().unwrap() & 0o170000 == 0o120000,
    );
    legit(
        &mut g,
        "fs.readlink",
        json!({"path": format!("{root}/out-file")}),
        |r| r.as_str().unwrap().ends_with("/outside/canary"),
    );
    legit(
        &mut g,
        "fs.realpath",
        json!({"path": format!("{root}/in/../sub/./file")}),
        |r| r.as_str().unwrap().ends_with("/sandbox/sub/file"),
    );
    legit(&mut g, "fs.readdir", json!({"path": root}), |r| {
        r["entries"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["name"] == "non-utf8-\u{fffd}\u{fffd}")
    });
    legit(
        &mut g,
        "fs.write",
        json!({"path": format!("{root}/written"), "data": "b2s="}),
        |r| r.is_null(),
    );
    legit(
        &mut g,
        "fs.read",
        json!({"path": format!("{root}/written")}),
        |r| r["data"] == json!("b2s="),
    );
    legit(
        &mut g,
        "fs.mkdir",
        json!({"path": format!("{root}/made/a/b"), "recursive": true}),
        |r| r["first"].as_str().unwrap().ends_with("/made"),
    );
    legit(
        &mut g,
        "fs.symlink",
        json!({"target": "/etc", "path": format!("{root}/new-link-out")}),
        |r| r.is_null(),
    );
    legit(
        &mut g,
        "fs.unlink",
        json!({"path": format!("{root}/new-link-out")}),
        |r| r.is_null(),
    );
    // 8. Paths that try to leave the sandbox, through every method.
    let mut escapes: Vec<String> = vec![];
    for k in 1..=6 {
        escapes.push(format!("{root}{}/outside/canary", "/..".repeat(k)));
        escapes.push(format!("{root}/sub{}/outside/canary", "/..".repeat(k + 1)));
    }
    escapes.extend([
        format!("{root}/.."),
        format!("{root}/../outside"),
        format!("{root}/./../sandbox-sibling/canary"),
        format!("{root}/sub/deep/../../../canary-top"),
        format!("{root}-sibling/canary"),
        format!("{outer}/sandbox-sibling"),
        format!("{outer}/canary-top"),
        format!("{outer}/home/.secret"),
        outside.clone(),
        format!("{outside}/canary"),
        format!("{outside}/new-file"),
        "/".into(),
        "/etc/passwd".into(),
        "/etc".into(),
        "/proc/self/environ".into(),
        "/proc/self/root".into(),
        "/proc/self/cwd".into(),
        "/dev/null".into(),
        // Symlinks as the first component under the root, in the middle, and chained.
        format!("{root}/out-abs/canary"),
        format!("{root}/out-abs/dir/canary"),
        format!("{root}/out-rel/canary"),
        format!("{root}/out-rel/new-file"),
        format!("{root}/sub/out-deep/canary"),
        format!("{root}/sub/out-deep/dir"),
        format!("{root}/in/out-deep/canary"),
        format!("{root}/up/outside/canary"),
        format!("{root}/up/sandbox/sub/file/../../../outside/canary"),
        format!("{root}/slash/etc/passwd"),
        format!("{root}/chain1/canary"),
        format!("{root}/out-abs/../outside/canary"),
        format!("{root}/out-abs/"),
        format!("{root}/out-abs/."),
    ]);
    // Final-component links leading outside: refused for calls that follow them.
    let final_links: Vec<String> = [
        "out-abs",
        "out-rel",
        "out-file",
        "out-dangling",
        "up",
        "slash",
        "passwd",
        "chain1",
        "sub/out-deep",
    ]
    .iter()
    .map(|l| format!("{root}/{l}"))
    .collect();
    let nul_paths: Vec<String> = vec![
        format!("{root}/a\u{0}b"),
        format!("{root}\u{0}/../outside/canary"),
        "\u{0}".into(),
        format!("{root}/sub/file\u{0}"),
    ];
    let invalid_paths: Vec<String> = vec![
        "".into(),
        "sub/file".into(),
        "./sub".into(),
        "../outside/canary".into(),
        "~/x".into(),
        format!("{root}/non-utf8-\u{fffd}\u{fffd}"),
    ];
    for p in escapes.iter().chain(nul_paths.iter()) {
        for (m, params) in templates(p, &root) {
            g.push("path escape", m, params, Expect::Refused);
        }
    }
    for p in &final_links {
        for (m, params) in templates(p, &root) {
            if acts_on_link(m, &params) {
                continue; // acting on an in-sandbox link itself is legit; covered below
            }
            g.push("final symlink", m, params, Expect::Refused);
        }
    }
    for p in &invalid_paths {
        for (m, params) in templates(p, &root) {
            // Relative paths are EINVAL. The lossy twin of a non-UTF-8 name is a different,
            // legit in-sandbox name (a creating call makes it, later ones act on it).
            let expect = if p.starts_with('/') {
                Expect::Any
            } else {
                Expect::Refused
            };
            g.push("invalid path", m, params, expect);
        }
    }
    g
}

/// Seeded random cases: structure-aware (random values in random fields, random paths) and
/// byte-level mutations of valid frames that leave them unparseable.
fn random_cases(g: &mut Gen, t: &Tree, seed: u64, n: usize) {
    let mut rng = XorShift(seed | 1);
    let root = t.root.to_str().unwrap().to_string();
    let comps = [
        "..",
        ".",
        "",
        "sub",
        "deep",
        "out-abs",
        "out-rel",
        "out-file",
        "out-dangling",
        "up",
        "slash",
        "chain1",
        "in",
        "canary",
        "outside",
        "sandbox",
        "etc",
        "passwd",
        "loop-a",
        "\u{0}",
        "é",
        "\u{fffd}",
        "file",
        "new",
    ];
    let methods: Vec<&str> = pi_bridge_protocol::METHODS
        .iter()
        .map(|(m, _)| *m)
        .filter(|m| !matches!(*m, "session.info" | "hello"))
        .collect();
    for i in 0..n {
        // A random path: absolute from the root or from `/`, random components.
        let mut p = if rng.below(4) == 0 {
            String::new()
        } else {
            root.clone()
        };
        for _ in 0..rng.below(6) {
            p.push('/');
            p.push_str(comps[rng.below(comps.len())]);
        }
        if p.is_empty() {
            p.push('/');
        }
        if p.trim_end_matches('/') == root || p.contains("keep") {
            p.push_str("/rnd"); // never act on the root itself
        }
        let m = methods[rng.below(methods.len())];
        let params = random_params(&mut rng, m, &p, &root);
        let id = g.id();
        let mut frame = req(id, m, params);
        if i % 3 == 2 {
            // Byte-level mutation; keep only ones that make the frame unparseable.
            frame.pop();
            let mut tries = 0;
            loop {
                let mut f = frame.clone();
                for _ in 0..1 + rng.below(4) {
                    let at = rng.below(f.len());
                    match rng.below(4) {
                        0 => f.truncate(at.max(1)),
                        1 => f[at] = rng.below(256) as u8,
                        2 => {
                            f.remove(at);
                        }
                        _ => f.insert(at, b"{}[]\",:\\\x00\xff"[rng.below(10)]),
                    }
                }
                f.retain(|&b| b != b'\n');
                let blank = f.iter().all(|b| b.is_ascii_whitespace());
                if !blank && serde_json::from_slice::<Value>(&f).is_err() {
                    g.raw("random bytes", f, Value::Null, Expect::Error);
                    break;
                }
                tries += 1;
                if tries > 50 {
                    break;
                }
            }
        } else {
            g.cases.push(Case {
                category: "random params",
                frame,
                id: json!(id),
                expect: Expect::Any,
                check: None,
            });
        }
    }
}

fn random_params(rng: &mut XorShift, m: &str, p: &str, root: &str) -> Value {
    let inside = format!("{root}/rnd-{}", rng.below(20));
    let mut v = match m {
        "fs.rename" | "fs.link" | "fs.copyFile" => {
            if rng.below(2) == 0 {
                json!({"from": p, "to": inside})
            } else {
                json!({"from": inside, "to": p})
            }
        }
        "fs.symlink" => json!({"target": p, "path": inside}),
        "fs.mkdtemp" => json!({"prefix": p}),
        "fs.write" | "fs.upload.chunk" => json!({"path": p, "data": "eA=="}),
        "proc.run" => json!({"spawn": {"file": "true", "cwd": p}}),
        "proc.kill" | "proc.stdin" => json!({"pid": rng.below(100000), "signal": "SIGCONT"}),
        "fs.utimes" => json!({"path": p, "atime": [0, 0], "mtime": [0, 0]}),
        "fs.chmod" => json!({"path": p, "mode": 0o644}),
        "fs.open" => {
            json!({"fd": format!("r{}", rng.below(8)), "path": p, "flags": {"read": true, "write": rng.below(2) == 0, "create": rng.below(2) == 0}})
        }
        "fs.pread" => json!({"fd": format!("r{}", rng.below(8)), "offset": rng.below(10)}),
        "fs.fstat" | "fs.close" | "fs.fsync" => json!({"fd": format!("r{}", rng.below(8))}),
        "fs.pwrite" => {
            json!({"fd": format!("r{}", rng.below(8)), "offset": rng.below(10), "data": "eA=="})
        }
        "fs.batch" => json!({"calls": [{"method": "fs.stat", "params": {"path": p}}]}),
        _ => json!({"path": p}),
    };
    // Sometimes a random value in a random field.
    if rng.below(3) == 0 {
        let keys = [
            "path",
            "from",
            "to",
            "data",
            "mode",
            "flag",
            "recursive",
            "offset",
            "length",
            "id",
            "pid",
        ];
        let vals = [
            json!(null),
            json!(-1),
            json!(u64::MAX),
            json!(1.5),
            json!("x"),
            json!([]),
            json!({}),
            json!(true),
            json!("////"),
            json!("/.."),
        ];
        v[keys[rng.below(keys.len())]] = vals[rng.below(vals.len())].clone();
    }
    v
}

struct XorShift(u64);
impl XorShift {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

fn is_error(r: &Value) -> bool {
    r.get("error")
        .is_some_and(|e| e["code"].is_i64() && e["message"].is_string())
}

fn refused(a: &mut Agent, method: &str, r: &Value) -> Result<(), String> {
    if is_error(r) {
        return Ok(());
    }
    let res = &r["result"];
    match method {
        "proc.spawn" | "watch.start" => {
            let ev = a.notification(res, method);
            if ev["type"] == "error" {
                Ok(())
            } else {
                Err(format!("subscription was not refused: first event {ev}"))
            }
        }
        "proc.run" if res["error"].is_object() => Ok(()),
        "fs.batch"
            if res
                .as_array()
                .is_some_and(|v| v.iter().all(|x| x.get("err").is_some())) =>
        {
            Ok(())
        }
        _ => Err(format!("expected an error, got {r}")),
    }
}

fn run_cases(a: &mut Agent, cases: &[Case]) -> BTreeMap<&'static str, usize> {
    let mut per_cat: BTreeMap<&'static str, usize> = BTreeMap::new();
    let mut failures = vec![];
    for (i, c) in cases.iter().enumerate() {
        *per_cat.entry(c.category).or_default() += 1;
        let t0 = std::time::Instant::now();
        a.send_raw(&c.frame);
        let shown = String::from_utf8_lossy(&c.frame[..c.frame.len().min(300)]).into_owned();
        if c.expect == Expect::Nothing {
            // A sentinel proves the notification got no reply.
            let r = a.call(1, "fs.stat", json!({"path": "/nonexistent-sentinel"}));
            assert!(is_error(&r), "{r}");
            continue;
        }
        let r = a.reply(&shown);
        // Unparseable frames are answered with `id: null`, or with their id when the agent could
        // still read it (e.g. a lone surrogate in params): either is a correct error reply.
        if r["id"] != c.id && !c.id.is_null() {
            failures.push(format!(
                "#{i} [{}] {shown}: reply has id {} (want {}): {r}",
                c.category, r["id"], c.id
            ));
            continue;
        }
        let method = serde_json::from_slice::<Value>(&c.frame)
            .ok()
            .and_then(|v| v["method"].as_str().map(str::to_string))
            .unwrap_or_default();
        let verdict = match c.expect {
            Expect::Error => {
                if is_error(&r) {
                    Ok(())
                } else {
                    Err(format!("expected an error, got {r}"))
                }
            }
            Expect::Refused => refused(a, &method, &r),
            Expect::Ok => match (&r.get("result"), c.check) {
                (Some(res), Some(check)) if check(res) => Ok(()),
                _ => Err(format!("expected a correct result, got {r}")),
            },
            Expect::Any => {
                if is_error(&r) || r.get("result").is_some() {
                    // (A subscription's events, if any, are kept aside with the others.)
                    Ok(())
                } else {
                    Err(format!("malformed reply {r}"))
                }
            }
            Expect::Nothing => unreachable!(),
        };
        if std::env::var_os("CORPUS_SLOW").is_some() && t0.elapsed() > Duration::from_millis(50) {
            eprintln!(
                "slow {:?}: {}",
                t0.elapsed(),
                &shown[..shown.len().min(200)]
            );
        }
        if let Err(e) = verdict {
            failures.push(format!("#{i} [{}] {shown}: {e}", c.category));
        }
        if i % 200 == 0 {
            assert!(a.alive(), "the agent died at case #{i}: {shown}");
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures[..failures.len().min(40)].join("\n")
    );
    per_cat
}

fn assert_no_canary(seen: &[Vec<u8>], canaries: &[String]) -> usize {
    let mut bytes = 0;
    for l in seen {
        bytes += l.len();
        let text = String::from_utf8_lossy(l);
        for c in canaries {
            // Plain, and base64 of the canary at each of the three alignments.
            let mut needles = vec![c.clone()];
            for skip in 0..3 {
                let b = base64_encode(&c.as_bytes()[skip..]);
                needles.push(b[4..b.len() - 8].to_string());
            }
            for n in needles {
                assert!(
                    !text.contains(&n),
                    "a reply leaked canary {c}: {}",
                    &text[..text.len().min(500)]
                );
            }
        }
    }
    bytes
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for ch in b.chunks(3) {
        let n = (ch[0] as u32) << 16
            | (*ch.get(1).unwrap_or(&0) as u32) << 8
            | *ch.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= ch.len() {
                s.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                s.push('=');
            }
        }
    }
    s
}

#[test]
fn bad_input_corpus_gets_errors_and_never_leaves_the_sandbox() {
    let t = build_tree();
    let seed = std::env::var("PI_BRIDGE_CORPUS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed_2026_u64);
    let mut g = systematic(&t);
    let systematic_n = g.cases.len();
    random_cases(&mut g, &t, seed, 400);
    let before = snapshot(&t.outer, &t.root);

    let mut a = Agent::start(t.home.path());
    // Before hello: every call is NotReady.
    let r = a.call(
        1,
        "fs.read",
        json!({"path": format!("{}/canary", t.outside.display())}),
    );
    assert_eq!(r["error"]["code"], -32002, "{r}");
    hello(&mut a, &t.root);
    let per_cat = run_cases(&mut a, &g.cases);

    // Still up: a final fs.stat works and the process is alive.
    let r = a.call(2, "fs.stat", json!({"path": t.root.join("keep/kept")}));
    assert_eq!(r["result"]["size"], 19, "{r}");
    assert!(a.alive());
    assert!(
        !t.root.join("notified-1").exists(),
        "a notification was executed"
    );
    let (status, seen) = a.finish();
    assert!(status.success(), "agent exit: {status}");
    let reply_bytes = assert_no_canary(&seen, &t.canaries);
    assert_same_tree(&before, &snapshot(&t.outer, &t.root));

    // A truncated frame at end of input: answered, then a clean exit.
    let mut a = Agent::start(t.home.path());
    hello(&mut a, &t.root);
    a.end();
    a.send_raw(b"{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"fs.st");
    drop(a.stdin.take());
    let r = a.reply("truncated at EOF");
    assert!(is_error(&r), "{r}");
    let (status, _) = a.finish();
    assert!(
        status.success(),
        "agent exit after truncated input: {status}"
    );

    println!(
        "agent corpus: {} cases ({} systematic, {} random with seed {seed:#x}); by category: {:?}; \
         {} reply bytes scanned for {} canaries: 0 leaks; outside tree: {} entries, 0 changes",
        g.cases.len() + 1,
        systematic_n,
        g.cases.len() - systematic_n,
        per_cat,
        reply_bytes,
        t.canaries.len(),
        before.len()
    );
    assert!(g.cases.len() >= 1000, "only {} cases", g.cases.len());
}

// ---------------------------------------------------------------------------------------------
// The check-then-use race.
// ---------------------------------------------------------------------------------------------

fn exchange(a: &Path, b: &Path) -> bool {
    let ca = std::ffi::CString::new(a.as_os_str().as_bytes()).unwrap();
    let cb = std::ffi::CString::new(b.as_os_str().as_bytes()).unwrap();
    // SAFETY: valid C strings; renameat2 through syscall (glibc wrappers vary).
    unsafe {
        libc::syscall(
            libc::SYS_renameat2,
            libc::AT_FDCWD,
            ca.as_ptr(),
            libc::AT_FDCWD,
            cb.as_ptr(),
            libc::RENAME_EXCHANGE,
        ) == 0
    }
}

#[test]
fn symlink_swapped_between_check_and_use_never_escapes() {
    let t = build_tree();
    let before = snapshot(&t.outer, &t.root);
    let mut a = Agent::start(t.home.path());
    hello(&mut a, &t.root);

    // The swapper: `swapdir` (a real dir) <-> a symlink to outside/swapdir, and `swapfile` (a
    // real file) <-> a symlink to outside/swapfile, as fast as it can.
    let stop = Arc::new(AtomicBool::new(false));
    let swaps = {
        let stop = stop.clone();
        let root = t.root.clone();
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                exchange(&root.join("swapdir"), &root.join("swapdir-alt"));
                exchange(&root.join("swapfile"), &root.join("swapfile-alt"));
                n += 1;
            }
            n
        })
    };
    // The hammer: pipelined reads, writes, stats, listings through the swapped names.
    let root = t.root.to_str().unwrap().to_string();
    let ops: Vec<(&str, Value)> = vec![
        ("fs.read", json!({"path": format!("{root}/swapdir/f")})),
        ("fs.read", json!({"path": format!("{root}/swapfile")})),
        (
            "fs.write",
            json!({"path": format!("{root}/swapdir/w"), "data": "cmFjZQ=="}),
        ),
        (
            "fs.write",
            json!({"path": format!("{root}/swapfile"), "data": "cmFjZQ=="}),
        ),
        (
            "fs.write",
            json!({"path": format!("{root}/swapdir/f"), "data": "cmFjZQ==", "flag": "a"}),
        ),
        ("fs.readdir", json!({"path": format!("{root}/swapdir")})),
        ("fs.stat", json!({"path": format!("{root}/swapdir/f")})),
        (
            "fs.truncate",
            json!({"path": format!("{root}/swapfile"), "length": 0}),
        ),
        (
            "fs.chmod",
            json!({"path": format!("{root}/swapdir/f"), "mode": 0o600}),
        ),
        (
            "fs.mkdir",
            json!({"path": format!("{root}/swapdir/m/n"), "recursive": true}),
        ),
        (
            "fs.copyFile",
            json!({"from": format!("{root}/swapfile"), "to": format!("{root}/copy-of-swap")}),
        ),
        (
            "fs.copyFile",
            json!({"from": format!("{root}/sub/file"), "to": format!("{root}/swapdir/copied")}),
        ),
        (
            "fs.utimes",
            json!({"path": format!("{root}/swapfile"), "atime": [5, 0], "mtime": [5, 0]}),
        ),
        ("fs.unlink", json!({"path": format!("{root}/swapdir/w")})),
        (
            "fs.rm",
            json!({"path": format!("{root}/swapdir/m"), "recursive": true, "force": true}),
        ),
    ];
    let rounds = 400;
    let window = 32;
    let mut sent = 0usize;
    let mut got = 0usize;
    let total = rounds * ops.len();
    let mut outcomes: HashMap<&str, (usize, usize)> = HashMap::new();
    let mut pending: HashMap<u64, &str> = HashMap::new();
    while got < total {
        while sent < total && sent - got < window {
            let (m, p) = &ops[sent % ops.len()];
            let id = 1000 + sent as u64;
            a.send_raw(&req(id, m, p.clone()));
            pending.insert(id, m);
            sent += 1;
        }
        let r = a.reply("race");
        let id = r["id"].as_u64().unwrap();
        let m = pending.remove(&id).expect("reply to a request in flight");
        let e = outcomes.entry(m).or_default();
        if is_error(&r) {
            e.1 += 1;
        } else {
            e.0 += 1;
        }
        got += 1;
    }
    stop.store(true, Ordering::Relaxed);
    let swaps = swaps.join().unwrap();
    // Put the tree back the way it started (the outside snapshot compares the outside only).
    if std::fs::symlink_metadata(t.root.join("swapdir"))
        .unwrap()
        .file_type()
        .is_symlink()
    {
        exchange(&t.root.join("swapdir"), &t.root.join("swapdir-alt"));
    }
    if std::fs::symlink_metadata(t.root.join("swapfile"))
        .unwrap()
        .file_type()
        .is_symlink()
    {
        exchange(&t.root.join("swapfile"), &t.root.join("swapfile-alt"));
    }
    let r = a.call(3, "fs.stat", json!({"path": t.root.join("sub/file")}));
    assert_eq!(r["result"]["size"], 12, "{r}");
    let (status, seen) = a.finish();
    assert!(status.success());
    let bytes = assert_no_canary(&seen, &t.canaries);
    assert_same_tree(&before, &snapshot(&t.outer, &t.root));
    let ok: usize = outcomes.values().map(|v| v.0).sum();
    println!(
        "symlink swap race: {total} ops ({ok} succeeded inside, {} refused/failed) against {swaps} swaps; \
         {bytes} reply bytes: 0 canary leaks; outside tree unchanged ({} entries); per op (ok, err): {outcomes:?}",
        total - ok,
        before.len()
    );
    // The race really ran both ways: some calls succeeded (inside) and some were refused.
    assert!(ok > 0 && ok < total, "{outcomes:?}");
}
