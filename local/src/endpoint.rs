//! The endpoint the preload talks to (see `protocol::endpoint`).
//!
//! A Unix socket, `endpoint.sock` in pii's private scratch dir (0700, the socket 0600): other
//! local users cannot even connect (the kernel refuses them at the directory), on Linux and macOS
//! alike. A connection from a uid other than pii's (root's, which passes any directory) is closed
//! at accept, before anything is read. So only this user's own processes (which could read
//! node's memory anyway) can make pii hold a connection. A connection's first line must arrive
//! within [`TOKEN_DEADLINE`] and equal the token (compared in constant time, independent of
//! length); otherwise the connection is closed at once and nothing it sent is parsed or executed.
//! Refusals are logged as counts, at most one line per [`REFUSAL_LOG_EVERY`]. After the token:
//! JSON-RPC frames. `session.info` is answered here;
//! every other request goes to the agent (fresh id there, the client's own id on the answer), the
//! lookups among them seen by the [`Learner`] on the way. Subscription notifications reach the
//! connection that subscribed, verbatim.

use crate::prefetch::Learner;
use crate::session::{Reply, Session};
use protocol::endpoint::SessionInfo;
use protocol::hops::{self, STAMPS};
use protocol::rpc::{Id, Message, Response, SubscriptionId};
use protocol::ErrorCode;
use serde_json::value::RawValue;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::mpsc;

pub const TOKEN_DEADLINE: Duration = Duration::from_secs(5);

/// At most one log line about refused connections per this long.
pub const REFUSAL_LOG_EVERY: Duration = Duration::from_secs(10);

/// Why a connection was refused (for the counts in the log).
#[derive(Debug, Clone, Copy)]
enum Refusal {
    OtherUser,
    BadToken,
}

/// Refusal counts, logged in bulk.
#[derive(Default)]
struct Refusals {
    counts: [u64; 2],
    logged: Option<std::time::Instant>,
}

impl Refusals {
    fn note(m: &std::sync::Mutex<Refusals>, why: Refusal) {
        let mut r = m.lock().unwrap_or_else(|p| p.into_inner());
        r.counts[why as usize] += 1;
        if r.logged.is_none_or(|t| t.elapsed() >= REFUSAL_LOG_EVERY) {
            r.logged = Some(std::time::Instant::now());
            tracing::warn!(
                "endpoint: refused connections so far: {} from other users, {} without the token",
                r.counts[Refusal::OtherUser as usize],
                r.counts[Refusal::BadToken as usize]
            );
        }
    }
}

/// A fresh token: `len` random bytes (at least [`protocol::endpoint::TOKEN_BYTES`]), hex.
pub fn new_token(len: usize) -> String {
    protocol::secret::random_hex(len.max(protocol::endpoint::TOKEN_BYTES))
}

/// Where the endpoint stands with the agent session. The endpoint listens (and node starts)
/// before the ssh connection is up; calls that arrive meanwhile wait for [`Ready::Up`] and fail
/// with the connect error on [`Ready::Failed`].
#[derive(Clone)]
pub enum Ready {
    Pending,
    /// The session, what `session.info` answers, and who learns pi's startup lookups.
    Up(Session, Arc<SessionInfo>, Option<Arc<Learner>>),
    Failed(Arc<str>),
}

/// pii's side of [`Ready`]: set once, when the handshake is done or has failed.
pub struct Slot(tokio::sync::watch::Sender<Ready>);

impl Slot {
    pub fn up(&self, session: Session, info: SessionInfo, learner: Option<Arc<Learner>>) {
        self.0
            .send_replace(Ready::Up(session, Arc::new(info), learner));
    }

    pub fn fail(&self, why: &str) {
        self.0.send_replace(Ready::Failed(why.into()));
    }
}

pub struct Endpoint {
    /// The socket's path (what the preload is told in `SessionEnv.endpoint`).
    pub path: PathBuf,
    listener: UnixListener,
    token: Arc<String>,
    ready: tokio::sync::watch::Receiver<Ready>,
}

impl Endpoint {
    /// An endpoint whose session is already up.
    #[cfg(test)]
    pub async fn bind(
        session: Session,
        info: SessionInfo,
        token: String,
        path: &Path,
    ) -> std::io::Result<Endpoint> {
        let (ep, slot) = Endpoint::bind_pending(token, path)?;
        slot.up(session, info, None);
        Ok(ep)
    }

    /// An endpoint at `path` (in a private directory) that accepts connections at once; its
    /// calls wait until `Slot` is set.
    pub fn bind_pending(token: String, path: &Path) -> std::io::Result<(Endpoint, Slot)> {
        let listener = UnixListener::bind(path)?;
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let (tx, ready) = tokio::sync::watch::channel(Ready::Pending);
        Ok((
            Endpoint {
                path: path.to_path_buf(),
                listener,
                token: Arc::new(token),
                ready,
            },
            Slot(tx),
        ))
    }

    /// Serve connections until the task is dropped.
    pub async fn serve(self) {
        // SAFETY: geteuid has no preconditions.
        let me = rustix::process::geteuid().as_raw();
        let refusals = Arc::new(std::sync::Mutex::new(Refusals::default()));
        loop {
            match self.listener.accept().await {
                Ok((stream, _)) => {
                    if stream.peer_cred().map_or(true, |c| c.uid() != me) {
                        Refusals::note(&refusals, Refusal::OtherUser);
                        continue; // dropped: closed before anything is read
                    }
                    let token = self.token.clone();
                    let ready = self.ready.clone();
                    let refusals = refusals.clone();
                    tokio::spawn(async move {
                        serve_connection(stream, token, ready, &refusals).await;
                    });
                }
                Err(e) => {
                    tracing::warn!("accept on the endpoint failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
        }
    }
}

async fn serve_connection(
    stream: UnixStream,
    token: Arc<String>,
    ready: tokio::sync::watch::Receiver<Ready>,
    refusals: &std::sync::Mutex<Refusals>,
) {
    let (r, mut w) = stream.into_split();
    let mut reader = BufReader::new(r);
    // The token line: at most token+2 bytes are looked at; nothing after a bad one is parsed.
    let mut line = Vec::with_capacity(token.len() + 2);
    let limit = (token.len() + 2) as u64;
    let got = tokio::time::timeout(
        TOKEN_DEADLINE,
        (&mut reader).take(limit).read_until(b'\n', &mut line),
    )
    .await;
    let ok = match got {
        Ok(Ok(_)) if line.last() == Some(&b'\n') => {
            line.pop();
            if line.last() == Some(&b'\r') {
                line.pop();
            }
            protocol::secret::matches(&token, &line)
        }
        _ => false,
    };
    if !ok {
        Refusals::note(refusals, Refusal::BadToken);
        return; // dropping both halves closes the connection
    }
    tracing::debug!("endpoint connection authenticated");

    let (tx, mut rx) = mpsc::unbounded_channel::<Vec<u8>>();
    let writer = tokio::spawn(async move {
        while let Some(first) = rx.recv().await {
            let mut buf = first;
            while buf.len() < 1 << 20 {
                match rx.try_recv() {
                    Ok(more) => buf.extend_from_slice(&more),
                    Err(_) => break,
                }
            }
            STAMPS.stamp_frames(&buf, "ep_write");
            if w.write_all(&buf).await.is_err() || w.flush().await.is_err() {
                return;
            }
        }
    });

    let mut frames = protocol::FrameReader::new(reader);
    loop {
        match frames.next_frame().await {
            Ok(Some(text)) => {
                if text.trim().is_empty() {
                    continue;
                }
                handle_frame(&text, &tx, &ready);
            }
            Ok(None) => break,
            Err(e) if e.is_recoverable() => {
                let _ = tx.send(
                    Reply::error(ErrorCode::FrameTooLarge, &e.to_string()).to_frame(&Id::null()),
                );
            }
            Err(e) => {
                tracing::debug!("endpoint connection: {e}");
                break;
            }
        }
    }
    drop(tx);
    // Let in-flight answers drain; the writer ends when every sender is gone.
    let _ = writer.await;
}

fn handle_frame(
    text: &str,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
    ready: &tokio::sync::watch::Receiver<Ready>,
) {
    let read_at = if STAMPS.on() { hops::now_ns() } else { 0 };
    let req = match Message::parse(text) {
        Ok(Message::Request(r)) => r,
        Ok(Message::Notification(n)) => {
            tracing::debug!("client notification `{}` ignored", n.method);
            return;
        }
        Ok(Message::Response(r) | Message::Binary { response: r, .. }) => {
            let answer = Reply::error(ErrorCode::InvalidRequest, "not a JSON-RPC request");
            let _ = tx.send(answer.to_frame(&r.id));
            return;
        }
        Err(invalid) => {
            let _ = tx.send(
                Message::from(invalid.response())
                    .to_frame()
                    .unwrap_or_default(),
            );
            return;
        }
    };
    let id = req.id;
    if let Some(n) = id.as_u64() {
        STAMPS.stamp_at(n, "ep_read", read_at);
    }
    if req.method != "session.info" && reserved_for_pii(&req.method) {
        // `hello` would re-root the agent's sandbox (e.g. at `/`), `session.*` drive the link:
        // only pii itself makes these calls, never a client of the endpoint.
        let msg = format!(
            "`{}` is reserved for pii's own link to the agent",
            req.method
        );
        let _ = tx.send(Reply::error(ErrorCode::MethodNotFound, &msg).to_frame(&id));
        return;
    }
    let method = req.method;
    let params: Option<Box<RawValue>> = req.params;
    let state = ready.borrow().clone();
    match state {
        Ready::Pending => {
            // The session is still connecting: this call waits for it (in order of arrival
            // does not matter; calls to the agent run concurrently anyway).
            let mut ready = ready.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let state = match ready.wait_for(|r| !matches!(r, Ready::Pending)).await {
                    Ok(r) => r.clone(),
                    Err(_) => Ready::Failed("pii is shutting down".into()),
                };
                dispatch(state, id, method, params, &tx);
            });
        }
        state => dispatch(state, id, method, params, tx),
    }
}

/// Answer `session.info`, or forward the call to the agent, once the session is up or failed.
fn dispatch(
    state: Ready,
    id: Id,
    method: String,
    params: Option<Box<RawValue>>,
    tx: &mpsc::UnboundedSender<Vec<u8>>,
) {
    let (session, info, learner) = match state {
        Ready::Up(s, i, l) => (s, i, l),
        Ready::Failed(why) => {
            let msg = format!("pii could not start the remote session: {why}");
            let _ = tx.send(Reply::error(ErrorCode::ConnectionLost, &msg).to_frame(&id));
            return;
        }
        Ready::Pending => unreachable!("dispatched only once the session is settled"),
    };
    if method == "session.info" {
        let answer = Message::from(Response::ok(id, &*info));
        let _ = tx.send(answer.to_frame().unwrap_or_default());
        return;
    }
    if let Some(l) = learner {
        l.observe(&info.facts.project_root, &method, params.as_deref());
    }
    let tx = tx.clone();
    tokio::spawn(async move {
        // Subscriptions and binary answers (raw reads) are written to the client's sink.
        let sink = Some((tx.clone(), id.clone()));
        let reply = session.call(&method, params.as_deref(), sink).await;
        if let Reply::Delivered = reply {
            return;
        }
        if let Reply::Result(_) = &reply {
            if protocol::SUBSCRIPTIONS
                .iter()
                .any(|(_, _, unsub)| *unsub == method)
            {
                if let Some(sub) = SubscriptionId::of_unsubscribe(params.as_deref()) {
                    session.forget_subscription(&sub);
                }
            }
        }
        let _ = tx.send(reply.to_frame(&id));
    });
}

/// Methods an endpoint client may not call: the handshake and the link's own `session.*`
/// calls (`session.info` is answered by pii itself before this check).
fn reserved_for_pii(method: &str) -> bool {
    method == <protocol::methods::HelloCall as protocol::Method>::NAME
        || method.starts_with("session.")
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::session::tests::{connect, facts, fast};
    use tokio::io::AsyncBufReadExt;

    type Addr = PathBuf;

    /// An endpoint in a private temp dir (kept for the whole test process).
    async fn start() -> (Addr, String, crate::session::tests::Received) {
        let (session, received) = connect(fast());
        let info = SessionInfo {
            agent_version: "0.1.0".into(),
            facts: facts(),
        };
        let token = new_token(32);
        let dir = Box::leak(Box::new(tempfile::tempdir().unwrap()));
        let ep = Endpoint::bind(session, info, token.clone(), &dir.path().join("e.sock"))
            .await
            .unwrap();
        let addr = ep.path.clone();
        tokio::spawn(ep.serve());
        (addr, token, received)
    }

    async fn closed_without_reply(stream: &mut UnixStream) -> bool {
        let mut buf = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(7), stream.read(&mut buf)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    fn agent_frames(received: &crate::session::tests::Received) -> Vec<String> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|l| !l.is_empty())
            .cloned()
            .collect()
    }

    /// The token's shape and compare are `protocol::secret`'s (tested there); the endpoint's
    /// own rule is its length: what the config asks for, never under `TOKEN_BYTES`.
    #[test]
    fn token_length() {
        let min = protocol::endpoint::TOKEN_BYTES;
        assert_eq!(new_token(1).len(), 2 * min);
        assert_eq!(new_token(48).len(), 96);
    }

    #[tokio::test]
    async fn wrong_token_closes_and_nothing_reaches_the_agent() {
        let (addr, token, received) = start().await;
        let mut wrong = token.clone().into_bytes();
        wrong[10] = if wrong[10] == b'a' { b'b' } else { b'a' };
        let mut s = UnixStream::connect(&addr).await.unwrap();
        s.write_all(&wrong).await.unwrap();
        s.write_all(b"\n{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{}}\n")
            .await
            .unwrap();
        assert!(closed_without_reply(&mut s).await);
        // A token plus garbage, and a longer line, are refused too.
        for bad in [
            format!("{token}x\n"),
            format!("x{token}\n"),
            "\n".to_string(),
        ] {
            let mut s = UnixStream::connect(&addr).await.unwrap();
            s.write_all(bad.as_bytes()).await.unwrap();
            s.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"echo\",\"params\":{}}\n")
                .await
                .unwrap();
            assert!(closed_without_reply(&mut s).await, "{bad:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            agent_frames(&received).is_empty(),
            "{:?}",
            agent_frames(&received)
        );
    }

    #[tokio::test]
    async fn short_or_missing_token_closes() {
        let (addr, token, received) = start().await;
        // Short token, no newline: closed after the deadline.
        let mut s = UnixStream::connect(&addr).await.unwrap();
        s.write_all(&token.as_bytes()[..10]).await.unwrap();
        let t = std::time::Instant::now();
        assert!(closed_without_reply(&mut s).await);
        assert!(t.elapsed() >= Duration::from_secs(4), "{:?}", t.elapsed());
        // Nothing at all.
        let mut s = UnixStream::connect(&addr).await.unwrap();
        assert!(closed_without_reply(&mut s).await);
        // A correct token cut short by close.
        let mut s = UnixStream::connect(&addr).await.unwrap();
        s.write_all(token.as_bytes()).await.unwrap();
        s.shutdown().await.unwrap();
        assert!(closed_without_reply(&mut s).await);
        assert!(agent_frames(&received).is_empty());
    }

    async fn client(
        addr: &Path,
        token: &str,
    ) -> (
        tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
        tokio::net::unix::OwnedWriteHalf,
    ) {
        let s = UnixStream::connect(&addr).await.unwrap();
        let (r, mut w) = s.into_split();
        w.write_all(format!("{token}\n").as_bytes()).await.unwrap();
        (BufReader::new(r).lines(), w)
    }

    async fn next_json(
        lines: &mut tokio::io::Lines<BufReader<tokio::net::unix::OwnedReadHalf>>,
    ) -> serde_json::Value {
        let l = tokio::time::timeout(Duration::from_secs(5), lines.next_line())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        serde_json::from_str(&l).unwrap()
    }

    #[tokio::test]
    async fn right_token_calls_work_ids_preserved_errors_for_bad_frames() {
        let (addr, token, received) = start().await;
        let (mut lines, mut w) = client(&addr, &token).await;
        w.write_all(
            b"{\"jsonrpc\":\"2.0\",\"id\":\"abc\",\"method\":\"echo\",\"params\":{\"x\":[1,2]}}\n",
        )
        .await
        .unwrap();
        let v = next_json(&mut lines).await;
        assert_eq!(
            v,
            serde_json::json!({"jsonrpc":"2.0","id":"abc","result":{"x":[1,2]}})
        );
        // The agent saw a fresh numeric id, not the client's.
        let f = agent_frames(&received);
        assert!(
            f.iter()
                .any(|l| l.contains("\"echo\"") && !l.contains("abc")),
            "{f:?}"
        );

        w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":7,\"method\":\"session.info\"}\n")
            .await
            .unwrap();
        let v = next_json(&mut lines).await;
        assert_eq!(v["id"], 7);
        assert_eq!(v["result"]["facts"]["projectRoot"], "/home/dev/app");
        assert_eq!(v["result"]["agentVersion"], "0.1.0");

        w.write_all(b"this is not json\n").await.unwrap();
        let v = next_json(&mut lines).await;
        assert_eq!(v["error"]["code"], -32700);
        assert_eq!(v["id"], serde_json::Value::Null);
        w.write_all(b"{\"id\":1}\n").await.unwrap();
        assert_eq!(next_json(&mut lines).await["error"]["code"], -32600);
        w.write_all(b"{\"id\":{},\"method\":\"echo\"}\n")
            .await
            .unwrap();
        assert_eq!(next_json(&mut lines).await["error"]["code"], -32600);

        // The handshake and the link's own calls are pii's alone: refused, never forwarded.
        let before = agent_frames(&received).len();
        for m in ["hello", "session.end", "session.ack"] {
            w.write_all(
                format!("{{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":\"{m}\",\"params\":{{\"protocol\":1,\"clientVersion\":\"x\",\"root\":\"/\"}}}}\n")
                    .as_bytes(),
            )
            .await
            .unwrap();
            let v = next_json(&mut lines).await;
            assert_eq!(v["error"]["code"], -32601, "{m}: {v}");
        }
        assert_eq!(agent_frames(&received).len(), before);

        // Still alive, errors from the agent pass through.
        w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":8,\"method\":\"fs.nope\",\"params\":{}}\n")
            .await
            .unwrap();
        let v = next_json(&mut lines).await;
        assert_eq!(v["id"], 8);
        assert_eq!(v["error"]["data"]["code"], "ENOENT");

        // Subscriptions: the response, then the events, on this connection.
        w.write_all(b"{\"jsonrpc\":\"2.0\",\"id\":9,\"method\":\"proc.spawn\",\"params\":{}}\n")
            .await
            .unwrap();
        let mut got = vec![];
        for _ in 0..3 {
            got.push(next_json(&mut lines).await);
        }
        // The response first: no notification of a subscription overtakes its response.
        assert!(got[0]["id"] == 9 && got[0]["result"] == "s1", "{got:?}");
        assert!(
            got.iter()
                .any(|v| v["params"]["result"]["type"] == "spawned"),
            "{got:?}"
        );
        assert_eq!(got[2]["params"]["result"]["type"], "exit", "{got:?}");
    }

    /// The socket is the owner's alone (0600, in a directory of the caller's choosing), and
    /// another user's connection is closed before anything is read: `nobody` connecting through
    /// a world-readable directory (as root may) gets no answer.
    #[tokio::test]
    async fn another_users_connection_is_closed_at_accept() {
        use std::os::unix::fs::PermissionsExt;
        let (session, received) = connect(fast());
        let info = SessionInfo {
            agent_version: "0.1.0".into(),
            facts: facts(),
        };
        let token = new_token(32);
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = dir.path().join("e.sock");
        let ep = Endpoint::bind(session, info, token.clone(), &path)
            .await
            .unwrap();
        assert_eq!(
            std::fs::metadata(&path).unwrap().permissions().mode() & 0o777,
            0o600
        );
        tokio::spawn(ep.serve());
        // Tests run as root: open the socket to everyone so that nobody can connect at all.
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
        let probe = dir.path().join("probe.py");
        std::fs::write(
            &probe,
            r#"import socket, sys
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
try:
    s.sendall(sys.argv[2].encode() + b'\n{"jsonrpc":"2.0","id":1,"method":"echo","params":[1]}\n')
    s.settimeout(5)
    print(repr(s.recv(100)))
except (BrokenPipeError, ConnectionResetError):
    print(repr(b''))
"#,
        )
        .unwrap();
        std::fs::set_permissions(&probe, std::fs::Permissions::from_mode(0o644)).unwrap();
        let out = tokio::process::Command::new("runuser")
            .args(["-u", "nobody", "--", "python3"])
            .arg(&probe)
            .arg(&path)
            .arg(&token)
            .output()
            .await
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert_eq!(
            text.trim(),
            "b''",
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(agent_frames(&received).is_empty());
    }

    #[tokio::test]
    async fn many_concurrent_connections() {
        let (addr, token, _) = start().await;
        let mut tasks = vec![];
        for c in 0..20 {
            let token = token.clone();
            let addr = addr.clone();
            tasks.push(tokio::spawn(async move {
                let (mut lines, mut w) = client(&addr, &token).await;
                for i in 0..20 {
                    w.write_all(format!("{{\"jsonrpc\":\"2.0\",\"id\":{i},\"method\":\"echo\",\"params\":[{c},{i}]}}\n").as_bytes())
                        .await
                        .unwrap();
                }
                let mut seen = std::collections::BTreeSet::new();
                for _ in 0..20 {
                    let v = next_json(&mut lines).await;
                    let i = v["id"].as_u64().unwrap();
                    assert_eq!(v["result"], serde_json::json!([c, i]));
                    seen.insert(i);
                }
                assert_eq!(seen.len(), 20);
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    }
}
