//! The bodies of the fuzz targets (`fuzz/fuzz_targets/*.rs`, run by `bash scripts/fuzz.sh`),
//! kept here so the stable seed test (`remote/tests/fuzz_seeds.rs`) runs exactly the same code
//! over the checked-in corpus (`fuzz/corpus/<target>/`) without nightly.
//!
//! Each body panics when an invariant breaks; any other outcome (an error for bad input) is fine.

use crate::sandbox::{Follow, Sandbox};
use protocol::methods::*;
use protocol::{FrameError, FrameReader, Method, Subscription};
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};

/// `frame`: bytes → [`FrameReader`] (buffer size and frame limit taken from the first two bytes)
/// → each frame parsed as a JSON-RPC request whose params are parsed as that method's protocol
/// type. Invariants: the reader never returns a frame over its limit or containing `\n`, it ends
/// (every call consumes input), it stays usable after a recoverable error; params that parse
/// re-serialise and parse again to the same JSON.
pub fn frame(data: &[u8]) {
    let (cap, max, input) = match data {
        [a, b, rest @ ..] => (1 + *a as usize % 64, 1 + (*b as usize) * 16, rest),
        _ => (8, 64, data),
    };
    let reader = tokio::io::BufReader::with_capacity(cap, input);
    let mut frames = FrameReader::with_limit(reader, max);
    let mut calls = 0usize;
    futures::executor::block_on(async {
        loop {
            calls += 1;
            assert!(calls <= input.len() + 2, "the reader does not advance");
            match frames.next_frame().await {
                Ok(None) => break,
                Ok(Some(f)) => {
                    assert!(
                        f.len() <= max,
                        "frame of {} bytes over the {max} limit",
                        f.len()
                    );
                    assert!(!f.contains('\n'), "a frame holds a newline");
                    request(&f);
                }
                Err(e @ (FrameError::TooLarge { .. } | FrameError::NotUtf8)) => {
                    assert!(e.is_recoverable());
                }
                Err(FrameError::Io(e)) => panic!("an in-memory reader failed: {e}"),
                Err(FrameError::BadBinary(e)) => {
                    panic!("next_frame interpreted a binary header: {e}")
                }
            }
        }
    });
    // The whole input, as one frame, through the request parser too.
    if let Ok(s) = std::str::from_utf8(input) {
        request(s);
    }
}

/// A frame as the agent reads it ([`protocol::rpc::Message`]); a request's params as its
/// method's type.
fn request(line: &str) {
    let Ok(protocol::rpc::Message::Request(r)) = protocol::rpc::Message::parse(line) else {
        return;
    };
    let params = r.params.as_deref().map(RawValue::get).unwrap_or("null");
    match r.method.as_str() {
        HelloCall::NAME => params_of::<HelloCall>(params),
        SessionInfo::NAME => params_of::<SessionInfo>(params),
        Stat::NAME => params_of::<Stat>(params),
        Access::NAME => params_of::<Access>(params),
        ReadDir::NAME => params_of::<ReadDir>(params),
        Read::NAME => params_of::<Read>(params),
        Write::NAME => params_of::<Write>(params),
        UploadBegin::NAME => params_of::<UploadBegin>(params),
        UploadChunk::NAME => params_of::<UploadChunk>(params),
        UploadCommit::NAME => params_of::<UploadCommit>(params),
        UploadAbort::NAME => params_of::<UploadAbort>(params),
        Mkdir::NAME => params_of::<Mkdir>(params),
        Rmdir::NAME => params_of::<Rmdir>(params),
        Unlink::NAME => params_of::<Unlink>(params),
        Rm::NAME => params_of::<Rm>(params),
        Rename::NAME => params_of::<Rename>(params),
        CopyFile::NAME => params_of::<CopyFile>(params),
        Realpath::NAME => params_of::<Realpath>(params),
        Readlink::NAME => params_of::<Readlink>(params),
        Symlink::NAME => params_of::<Symlink>(params),
        Link::NAME => params_of::<Link>(params),
        Chmod::NAME => params_of::<Chmod>(params),
        Utimes::NAME => params_of::<Utimes>(params),
        Truncate::NAME => params_of::<Truncate>(params),
        Mkdtemp::NAME => params_of::<Mkdtemp>(params),
        Batch::NAME => params_of::<Batch>(params),
        Run::NAME => params_of::<Run>(params),
        Stdin::NAME => params_of::<Stdin>(params),
        Kill::NAME => params_of::<Kill>(params),
        SessionAck::NAME => params_of::<SessionAck>(params),
        SessionEnd::NAME => params_of::<SessionEnd>(params),
        SessionHops::NAME => params_of::<SessionHops>(params),
        Spawn::NAME => roundtrip::<<Spawn as Subscription>::Params>(params),
        Watch::NAME => roundtrip::<<Watch as Subscription>::Params>(params),
        _ => {}
    }
}

fn params_of<M: Method>(params: &str) {
    roundtrip::<M::Params>(params);
}

/// Params that parse must serialise and parse back to the same JSON.
fn roundtrip<T: Serialize + DeserializeOwned>(json: &str) {
    let Ok(v) = serde_json::from_str::<T>(json) else {
        return;
    };
    let once = serde_json::to_string(&v).expect("parsed params serialise");
    let again: T = serde_json::from_str(&once)
        .unwrap_or_else(|e| panic!("{once} (from {json}) does not parse back: {e}"));
    let twice = serde_json::to_string(&again).expect("serialise again");
    assert_eq!(once, twice, "params change on a round trip (from {json})");
}

/// `sandbox`: a fixed tree (dirs, files, symlinks inside, outside, dangling, looping, relative)
/// and arbitrary path bytes. Whatever [`Sandbox::resolve`] accepts must be under the root and its
/// deepest existing part must canonicalise (by the kernel) inside the root; whatever
/// [`Sandbox::pin`] accepts must be, as the kernel sees the pinned descriptor, inside the root.
pub struct SandboxFixture {
    base: PathBuf,
    root: PathBuf,
    sandbox: Sandbox,
}

/// Path pieces the token mode builds paths from (the fixture's names, `..`, slashes).
const TOKENS: &[&str] = &[
    "/",
    "..",
    ".",
    "sub",
    "deep",
    "file",
    "out",
    "in",
    "secret-link",
    "dangling-out",
    "loop1",
    "up",
    "abs-root",
    "missing",
    "outside",
    "root",
    "//",
    "/..",
    "rel-out",
    "a\u{0}b",
    "é",
];

impl SandboxFixture {
    /// Creates the tree under a fresh directory in the temp dir (removed on drop).
    pub fn new() -> SandboxFixture {
        use std::os::unix::fs::symlink;
        let base = std::env::temp_dir().join(format!(
            "pi-bridge-fuzz-{}-{:x}",
            std::process::id(),
            rand::random::<u64>()
        ));
        std::fs::create_dir(&base).expect("create the fuzz fixture");
        let base = base.canonicalize().expect("canonical fixture dir");
        let root = base.join("root");
        let outside = base.join("outside");
        let mk = |p: &Path| std::fs::create_dir_all(p).expect("mkdir");
        mk(&root.join("sub/deep"));
        mk(&outside.join("sub"));
        std::fs::write(root.join("sub/file"), "in").expect("write");
        std::fs::write(outside.join("secret"), "out").expect("write");
        let ln = |t: &Path, l: PathBuf| symlink(t, l).expect("symlink");
        ln(&outside, root.join("out"));
        ln(&outside.join("secret"), root.join("secret-link"));
        ln(Path::new("sub"), root.join("in"));
        ln(&outside.join("nothing-yet"), root.join("dangling-out"));
        ln(Path::new("loop2"), root.join("loop1"));
        ln(Path::new("loop1"), root.join("loop2"));
        ln(Path::new(".."), root.join("sub/up"));
        ln(Path::new("../../outside"), root.join("sub/rel-out"));
        ln(&root, root.join("sub/deep/abs-root"));
        ln(Path::new("../in/deep"), root.join("sub/deep/in"));
        let sandbox = Sandbox::new(root.clone());
        SandboxFixture {
            base,
            root,
            sandbox,
        }
    }

    /// One case. Byte 0: bit 0 Follow::NotLast, bit 1 token mode (each later byte picks a
    /// token), bit 2 prefix the root. Otherwise the bytes are the path (lossy UTF-8).
    pub fn run(&self, data: &[u8]) {
        let Some((&mode, rest)) = data.split_first() else {
            return;
        };
        let follow = if mode & 1 == 1 {
            Follow::NotLast
        } else {
            Follow::All
        };
        let mut path = String::new();
        if mode & 4 == 4 {
            path.push_str(&self.root.to_string_lossy());
        }
        if mode & 2 == 2 {
            for b in rest.iter().take(64) {
                if !path.ends_with('/') {
                    path.push('/');
                }
                path.push_str(TOKENS[*b as usize % TOKENS.len()]);
            }
        } else {
            path.push_str(&String::from_utf8_lossy(rest));
        }
        self.check(&path, follow);
    }

    fn check(&self, path: &str, follow: Follow) {
        if let Ok(p) = self.sandbox.resolve(path, follow, "fuzz") {
            assert!(p.starts_with(&self.root), "{path:?} resolved to {p:?}");
            // With NotLast the final name may be a link leading anywhere: that is the point.
            let probe = match follow {
                Follow::NotLast if !p.as_os_str().is_empty() && p != self.root => {
                    p.parent().map(Path::to_path_buf).unwrap_or(p.clone())
                }
                _ => p.clone(),
            };
            let real = kernel_canonical(&probe);
            assert!(
                real.starts_with(&self.root),
                "{path:?} ({follow:?}) accepted as {p:?}, which the kernel resolves to {real:?}"
            );
        }
        if let Ok(pinned) = self.sandbox.pin(path, follow, "fuzz") {
            assert!(pinned.canonical().starts_with(&self.root));
            let probe: PathBuf = if follow == Follow::NotLast && pinned.canonical() != self.root {
                pinned
                    .entry()
                    .parent()
                    .map(Path::to_path_buf)
                    .unwrap_or_default()
            } else {
                pinned.to_path_buf()
            };
            let real = kernel_canonical(&probe);
            assert!(
                real.starts_with(&self.root),
                "{path:?} ({follow:?}) pinned as {:?}, which the kernel resolves to {real:?}",
                &*pinned
            );
        }
    }
}

impl Default for SandboxFixture {
    fn default() -> Self {
        SandboxFixture::new()
    }
}

impl Drop for SandboxFixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.base);
    }
}

/// The kernel's canonical form of the deepest existing ancestor of `p` (realpath(3) via
/// `std::fs::canonicalize`), with the missing tail dropped.
fn kernel_canonical(p: &Path) -> PathBuf {
    let mut cur = p.to_path_buf();
    loop {
        match std::fs::canonicalize(&cur) {
            Ok(real) => return real,
            Err(_) => {
                if !cur.pop() {
                    return PathBuf::from("/");
                }
            }
        }
    }
}
