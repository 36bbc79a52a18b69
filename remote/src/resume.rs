//! Surviving a dropped link (the contract is `protocol::session`).
//!
//! - [`Out`]: every frame the agent sends goes through one router task. Notifications get the
//!   session-wide `seq` and stay in a replay buffer until the client acknowledges them; at most
//!   [`REPLAY_BOUND`] bytes wait unacknowledged, after which producers wait for credit (a
//!   process then blocks on its pipe: output is paused, never dropped). The router writes to the
//!   CURRENT connection, which a resume swaps; on a swap it first writes the resume's `hello`
//!   answer, then replays every kept notification after the client's `lastSeq`.
//! - [`Life`]: after `hello`, the agent holding a session listens on a Unix socket
//!   `<home>/.cache/pi-bridge/run/<id>.sock` (dir 0700, socket 0600, peer uid checked, no TCP).
//!   A connection there must open with `hello` carrying the session's [`Resume`] secret; it then
//!   becomes the session's connection ([`Incoming`], attached by `server::serve`).
//! - [`relay`]: a NEW agent (started by pii's new ssh) whose first call is a resuming `hello`
//!   connects to that socket and relays frames both ways; if the session is gone it answers
//!   [`ErrorCode::SessionGone`] and serves as a fresh agent instead.

use protocol::session::{Resume, SessionTicket, REPLAY_BOUND};
use protocol::{ErrorCode, Hello, HelloResult};
use rand::RngCore;
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::VecDeque;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufReader};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

pub type BoxRead = Box<dyn AsyncRead + Unpin + Send>;
pub type BoxWrite = Box<dyn AsyncWrite + Unpin + Send>;
pub type Frames = protocol::FrameReader<BufReader<BoxRead>>;

/// How long a socket connection may take to present its resuming `hello`.
const AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// One frame for a connection's writer: a JSON line (written with its `\n`) or an encoded
/// binary frame (`protocol::frame::encode_binary`, written as is).
pub enum Wire {
    Text(Box<str>),
    Binary(Vec<u8>),
}

pub type ConnTx = mpsc::UnboundedSender<Wire>;

enum HubMsg {
    Frame(Wire),
    Note(Box<str>, OwnedSemaphorePermit),
    Ack(u64),
    Attach {
        conn: ConnTx,
        first: Option<Box<str>>,
        replay_after: Option<u64>,
    },
    Detach,
}

/// The agent's output: responses and notifications, routed to the current connection.
#[derive(Clone)]
pub struct Out {
    tx: mpsc::Sender<HubMsg>,
    credit: Arc<Semaphore>,
    unacked: Arc<AtomicU64>,
}

impl Out {
    pub fn start() -> Out {
        let (tx, rx) = mpsc::channel(256);
        let unacked = Arc::new(AtomicU64::new(0));
        tokio::spawn(router(rx, unacked.clone()));
        Out {
            tx,
            credit: Arc::new(Semaphore::new(REPLAY_BOUND)),
            unacked,
        }
    }

    /// A response (or heartbeat echo): to the current connection, not kept.
    pub async fn frame(&self, f: Box<str>) -> bool {
        self.tx.send(HubMsg::Frame(Wire::Text(f))).await.is_ok()
    }

    /// A response as an encoded binary frame: like [`Out::frame`] (a response is never
    /// replayed, so notifications' seq and replay are not involved).
    pub async fn binary(&self, f: Vec<u8>) -> bool {
        self.tx.send(HubMsg::Frame(Wire::Binary(f))).await.is_ok()
    }

    /// A notification: numbered, kept until acknowledged; waits while the bound is reached.
    pub async fn note(&self, f: Box<str>) -> bool {
        let n = f.len().clamp(1, REPLAY_BOUND) as u32;
        let Ok(permit) = self.credit.clone().acquire_many_owned(n).await else {
            return false;
        };
        self.tx.send(HubMsg::Note(f, permit)).await.is_ok()
    }

    /// The client has everything up to `seq`.
    pub async fn ack(&self, seq: u64) {
        let _ = self.tx.send(HubMsg::Ack(seq)).await;
    }

    /// Make `conn` the current connection: `first` goes out first, then (with `replay_after`)
    /// every kept notification after that seq.
    pub async fn attach(&self, conn: ConnTx, first: Option<Box<str>>, replay_after: Option<u64>) {
        let _ = self
            .tx
            .send(HubMsg::Attach {
                conn,
                first,
                replay_after,
            })
            .await;
    }

    /// Forget the current connection (its writer then finishes).
    pub async fn detach(&self) {
        let _ = self.tx.send(HubMsg::Detach).await;
    }

    /// Notifications kept, waiting for an ack.
    pub fn unacked(&self) -> u64 {
        self.unacked.load(Ordering::Relaxed)
    }
}

async fn router(mut rx: mpsc::Receiver<HubMsg>, unacked: Arc<AtomicU64>) {
    let mut conn: Option<ConnTx> = None;
    let mut next = 1u64;
    let mut kept: VecDeque<(u64, Box<str>, OwnedSemaphorePermit)> = VecDeque::new();
    let send = |conn: &mut Option<ConnTx>, f: Wire| {
        if let Some(c) = conn {
            if c.send(f).is_err() {
                *conn = None;
            }
        }
    };
    while let Some(m) = rx.recv().await {
        match m {
            HubMsg::Frame(f) => send(&mut conn, f),
            HubMsg::Note(f, permit) => {
                let seq = next;
                next += 1;
                let f: Box<str> = match protocol::session::with_seq(&f, seq) {
                    Some(s) => s.into(),
                    None => {
                        tracing::error!("notification without params object: {f:.200}");
                        f
                    }
                };
                send(&mut conn, Wire::Text(f.clone()));
                kept.push_back((seq, f, permit));
            }
            HubMsg::Ack(n) => {
                while kept.front().is_some_and(|(s, _, _)| *s <= n) {
                    kept.pop_front();
                }
            }
            HubMsg::Attach {
                conn: c,
                first,
                replay_after,
            } => {
                let mut c = Some(c);
                if let Some(f) = first {
                    send(&mut c, Wire::Text(f));
                }
                if let Some(after) = replay_after {
                    while kept.front().is_some_and(|(s, _, _)| *s <= after) {
                        kept.pop_front();
                    }
                    tracing::info!(
                        "resumed: replaying {} notifications after seq {after}",
                        kept.len()
                    );
                    for (_, f, _) in &kept {
                        send(&mut c, Wire::Text(f.clone()));
                    }
                }
                conn = c;
            }
            HubMsg::Detach => conn = None,
        }
        unacked.store(kept.len() as u64, Ordering::Relaxed);
    }
}

/// A socket connection that presented the right secret: the session's next connection.
pub struct Incoming {
    pub frames: Frames,
    pub writer: BoxWrite,
    /// The id of the resuming `hello` (answered first, with `resumed: true`).
    pub hello_id: Box<RawValue>,
    pub last_seq: u64,
}

/// Whether the session may wait for a resume, and what one needs.
#[derive(Default)]
pub struct Life {
    ended: AtomicBool,
    grace_ms: AtomicU64,
    state: Mutex<LifeState>,
}

#[derive(Default)]
struct LifeState {
    ticket: Option<SessionTicket>,
    hello: Option<HelloResult>,
    socket: Option<PathBuf>,
    listener: Option<tokio::task::JoinHandle<()>>,
    incoming: Option<mpsc::Sender<Incoming>>,
}

impl Life {
    fn lock(&self) -> std::sync::MutexGuard<'_, LifeState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Where accepted resumes go (set once by `serve`).
    pub fn set_incoming(&self, tx: mpsc::Sender<Incoming>) {
        self.lock().incoming = Some(tx);
    }

    /// `session.end` was received: the next end of input is a clean close.
    pub fn end(&self) {
        self.ended.store(true, Ordering::SeqCst);
    }

    pub fn ended(&self) -> bool {
        self.ended.load(Ordering::SeqCst)
    }

    /// Whether a dropped link should wait for a resume.
    pub fn resumable(&self) -> bool {
        self.lock().ticket.is_some()
    }

    pub fn grace(&self) -> Duration {
        Duration::from_millis(self.grace_ms.load(Ordering::Relaxed))
    }

    /// After a successful `hello`: listen for resumes (once) and return the ticket. `None`
    /// (logged) when no socket can be made; the session then ends with its link.
    pub fn make_resumable(
        &self,
        home: &str,
        grace_ms: Option<u64>,
        hello: &HelloResult,
    ) -> Option<SessionTicket> {
        let grace = grace_ms
            .unwrap_or(protocol::session::DEFAULT_GRACE_MS)
            .min(protocol::session::MAX_GRACE_MS);
        self.grace_ms.store(grace, Ordering::Relaxed);
        let mut st = self.lock();
        st.hello = Some(hello.clone());
        if let Some(t) = &mut st.ticket {
            t.grace_ms = grace;
            return Some(t.clone());
        }
        let incoming = st.incoming.clone()?;
        let ticket = SessionTicket {
            id: hex(16),
            secret: hex(32),
            grace_ms: grace,
        };
        let dir = run_dir(home);
        let path = dir.join(format!("{}.sock", ticket.id));
        let listener = match make_run_dir(&dir).and_then(|()| bind(&path)) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(
                    "cannot listen on {}: {e}; this session cannot be resumed",
                    path.display()
                );
                return None;
            }
        };
        let task = tokio::spawn(accept_loop(listener, ticket.clone(), incoming));
        st.ticket = Some(ticket.clone());
        st.socket = Some(path);
        st.listener = Some(task);
        Some(ticket)
    }

    /// The `hello` answer for a resume.
    fn resumed_hello(&self) -> Option<HelloResult> {
        let st = self.lock();
        let mut h = st.hello.clone()?;
        h.session = st.ticket.clone();
        h.resumed = true;
        Some(h)
    }

    /// Stop listening and remove the socket (the session is over).
    pub fn close(&self) {
        let mut st = self.lock();
        if let Some(l) = st.listener.take() {
            l.abort();
        }
        if let Some(p) = st.socket.take() {
            let _ = std::fs::remove_file(p);
        }
        st.ticket = None;
    }
}

fn hex(n: usize) -> String {
    let mut b = vec![0u8; n];
    rand::rngs::OsRng.fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// `<home>/.cache/pi-bridge/run`.
pub fn run_dir(home: &str) -> PathBuf {
    Path::new(home).join(".cache/pi-bridge/run")
}

/// Create the run dir 0700 (parents too), refuse one that is a symlink, not ours, or open to
/// others; prune sockets nobody listens on any more (left by killed agents).
fn make_run_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    let md = std::fs::symlink_metadata(dir)?;
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    if !md.is_dir() || md.uid() != me {
        return Err(std::io::Error::other(format!(
            "{} is not a directory owned by uid {me}",
            dir.display()
        )));
    }
    if md.mode() & 0o077 != 0 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            if p.extension().is_some_and(|x| x == "sock")
                && matches!(
                    std::os::unix::net::UnixStream::connect(&p),
                    Err(err) if err.kind() == std::io::ErrorKind::ConnectionRefused
                )
            {
                let _ = std::fs::remove_file(&p);
            }
        }
    }
    Ok(())
}

fn bind(path: &Path) -> std::io::Result<tokio::net::UnixListener> {
    use std::os::unix::fs::PermissionsExt;
    let l = tokio::net::UnixListener::bind(path)?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    Ok(l)
}

async fn accept_loop(
    listener: tokio::net::UnixListener,
    ticket: SessionTicket,
    incoming: mpsc::Sender<Incoming>,
) {
    let life_ticket = Arc::new(ticket);
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let t = life_ticket.clone();
                let incoming = incoming.clone();
                tokio::spawn(async move {
                    if let Err(why) = authenticate(stream, &t, &incoming).await {
                        tracing::warn!("resume connection refused: {why}");
                    }
                });
            }
            Err(e) => {
                tracing::warn!("accept on the resume socket: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

/// A `hello` request, as far as resuming needs it.
#[derive(Deserialize)]
struct HelloRequest {
    id: Box<RawValue>,
    method: String,
    params: Hello,
}

fn equal_secret(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

/// Check the peer's uid and the session's secret, then hand the connection to `serve`.
async fn authenticate(
    stream: tokio::net::UnixStream,
    ticket: &SessionTicket,
    incoming: &mpsc::Sender<Incoming>,
) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let me = unsafe { libc::geteuid() };
    match stream.peer_cred() {
        Ok(c) if c.uid() == me => {}
        Ok(c) => return Err(format!("peer uid {} is not {me}", c.uid())),
        Err(e) => return Err(format!("peer credentials: {e}")),
    }
    let (r, mut w) = stream.into_split();
    let mut frames: Frames = protocol::FrameReader::new(BufReader::new(Box::new(r) as BoxRead));
    let line = match tokio::time::timeout(AUTH_DEADLINE, frames.next_frame()).await {
        Ok(Ok(Some(l))) => l,
        _ => return Err("no hello within 5 s".into()),
    };
    let req: HelloRequest =
        serde_json::from_str(&line).map_err(|e| format!("not a hello request: {e}"))?;
    let ok = req.method == "hello"
        && req.params.protocol == protocol::PROTOCOL_VERSION
        && req.params.resume.as_ref().is_some_and(|r: &Resume| {
            equal_secret(&r.session, &ticket.id) & equal_secret(&r.secret, &ticket.secret)
        });
    if !ok {
        let f = crate::server::error_reply(
            Some(&req.id),
            ErrorCode::SessionGone,
            "no such session".to_string(),
        );
        let _ = w.write_all(format!("{f}\n").as_bytes()).await;
        return Err("wrong session id or secret".into());
    }
    let last_seq = req.params.resume.map(|r| r.last_seq).unwrap_or(0);
    incoming
        .send(Incoming {
            frames,
            writer: Box::new(w),
            hello_id: req.id,
            last_seq,
        })
        .await
        .map_err(|_| "the session is closing".to_string())
}

/// The `hello` answer frame for a resume (`id` is the raw request id), or `None` if this agent
/// holds no session.
pub fn resumed_hello_frame(life: &Life, id: &RawValue) -> Option<Box<str>> {
    let h = life.resumed_hello()?;
    let result = serde_json::to_string(&h).ok()?;
    Some(
        format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{result}}}",
            id.get()
        )
        .into(),
    )
}

/// If `line` is a `hello` with `resume`: its id and resume.
pub fn resume_request(line: &str) -> Option<(Box<RawValue>, Resume)> {
    if !line.contains("\"resume\"") {
        return None;
    }
    let req: HelloRequest = serde_json::from_str(line).ok()?;
    if req.method != "hello" {
        return None;
    }
    Some((req.id, req.params.resume?))
}

/// How a relay attempt ended.
pub enum Relay {
    /// The session was reached and the relay ran until one side closed.
    Done,
    /// No such session: the caller answers `SessionGone` and serves as a fresh agent.
    Gone(String),
}

/// Relay this connection (`frames` from the client, `out` to it) to the agent holding the
/// session, starting with the resuming `hello` in `line`.
pub async fn relay(
    line: &str,
    resume: &Resume,
    home: &str,
    frames: &mut Frames,
    out: &Out,
) -> Relay {
    if resume.session.is_empty()
        || resume.session.len() > 64
        || !resume
            .session
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    {
        return Relay::Gone("the session id is not lowercase hex".into());
    }
    let path = run_dir(home).join(format!("{}.sock", resume.session));
    let stream = match tokio::net::UnixStream::connect(&path).await {
        Ok(s) => s,
        Err(e) => return Relay::Gone(format!("session {} not found ({e})", resume.session)),
    };
    let (r, mut w) = stream.into_split();
    if w.write_all(format!("{line}\n").as_bytes()).await.is_err() {
        return Relay::Gone("the session's agent closed the connection".into());
    }
    let mut down: Frames = protocol::FrameReader::new(BufReader::new(Box::new(r) as BoxRead));
    // The owner's answer to the hello decides: a result → relay; an error → fresh agent.
    match tokio::time::timeout(AUTH_DEADLINE * 2, down.next_frame()).await {
        Ok(Ok(Some(first))) => {
            if first.contains("\"error\"") && !first.contains("\"result\"") {
                return Relay::Gone("the session's agent refused the resume".into());
            }
            if !out.frame(first.into()).await {
                return Relay::Done;
            }
        }
        _ => return Relay::Gone("the session's agent did not answer".into()),
    }
    tracing::info!("relaying to session {}", resume.session);
    let downstream = async {
        loop {
            let sent = match down.next_item().await {
                Ok(Some(protocol::frame::Frame::Text(f))) => out.frame(f.into()).await,
                Ok(Some(protocol::frame::Frame::Binary { header, payload })) => {
                    match protocol::frame::encode_binary(&header, &payload) {
                        Ok(b) => out.binary(b).await,
                        Err(_) => false,
                    }
                }
                Ok(None) => false,
                Err(e) if e.is_recoverable() => true,
                Err(e) => {
                    tracing::warn!("relay: the session's agent sent a bad frame: {e}");
                    false
                }
            };
            if !sent {
                break;
            }
        }
    };
    let upstream = async {
        while let Ok(Some(f)) = frames.next_frame().await {
            let mut b = f.into_bytes();
            b.push(b'\n');
            if w.write_all(&b).await.is_err() {
                break;
            }
        }
        let _ = w.shutdown().await;
    };
    tokio::select! {
        _ = downstream => {},
        _ = upstream => {},
    }
    Relay::Done
}

/// A frame reader on a boxed reader.
pub fn frames_of(r: BoxRead) -> Frames {
    protocol::FrameReader::new(BufReader::with_capacity(256 * 1024, r))
}
