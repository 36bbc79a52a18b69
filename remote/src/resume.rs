//! Surviving a dropped link (the contract is `protocol::session`; the output that keeps and
//! replays notifications is `out`).
//!
//! - [`Life`]: after `hello`, the agent holding a session listens on a Unix socket
//!   `<home>/.cache/pi-bridge/run/<id>.sock` (dir 0700, socket 0600, peer uid checked, no TCP).
//!   A connection there must open with `hello` carrying the session's [`Resume`] secret; it then
//!   becomes the session's connection ([`Incoming`], attached by `server::serve`).
//! - [`relay`]: a NEW agent (started by pii's new ssh) whose first call is a resuming `hello`
//!   connects to that socket and relays frames both ways; if the session is gone it answers
//!   [`ErrorCode::SessionGone`] and serves as a fresh agent instead.

use crate::out::Out;
use protocol::methods::HelloCall;
use protocol::rpc::{ErrorObject, Id, Message, Request, Response};
use protocol::session::{Resume, SessionTicket};
use protocol::{ErrorCode, Hello, HelloResult, Method};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncWriteExt, BufReader};
use tokio::sync::mpsc;

pub use protocol::frame::{BoxRead, BoxWrite};
pub type Frames = protocol::FrameReader<BufReader<BoxRead>>;

/// How long a socket connection may take to present its resuming `hello`.
const AUTH_DEADLINE: Duration = Duration::from_secs(5);

/// A socket connection that presented the right secret: the session's next connection.
pub struct Incoming {
    pub frames: Frames,
    pub writer: BoxWrite,
    /// The id of the resuming `hello` (answered first, with `resumed: true`).
    pub hello_id: Id,
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
            id: protocol::secret::random_hex(16),
            secret: protocol::secret::random_hex(32),
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
    let me = rustix::process::geteuid().as_raw();
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

/// Check the peer's uid and the session's secret, then hand the connection to `serve`.
async fn authenticate(
    stream: tokio::net::UnixStream,
    ticket: &SessionTicket,
    incoming: &mpsc::Sender<Incoming>,
) -> Result<(), String> {
    // SAFETY: geteuid has no preconditions.
    let me = rustix::process::geteuid().as_raw();
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
    let (id, hello) = match Message::parse(&line) {
        Ok(Message::Request(r)) if r.method == HelloCall::NAME => {
            let h = r
                .params::<Hello>()
                .map_err(|e| format!("not a hello request: {e}"))?;
            (r.id, h)
        }
        _ => return Err("not a hello request".into()),
    };
    let ok = hello.protocol == protocol::PROTOCOL_VERSION
        && hello.resume.as_ref().is_some_and(|r: &Resume| {
            protocol::secret::matches(&ticket.id, r.session.as_bytes())
                & protocol::secret::matches(&ticket.secret, r.secret.as_bytes())
        });
    if !ok {
        let refusal = Response::err(
            id,
            ErrorObject::new(ErrorCode::SessionGone, "no such session"),
        );
        if let Ok(f) = Message::Response(refusal).to_frame() {
            let _ = w.write_all(&f).await;
        }
        return Err("wrong session id or secret".into());
    }
    let last_seq = hello.resume.map(|r| r.last_seq).unwrap_or(0);
    incoming
        .send(Incoming {
            frames,
            writer: Box::new(w),
            hello_id: id,
            last_seq,
        })
        .await
        .map_err(|_| "the session is closing".to_string())
}

/// The `hello` answer for a resume, or `SessionGone` if this agent holds no session any more.
pub fn resumed_hello(life: &Life, id: Id) -> Response {
    match life.resumed_hello() {
        Some(h) => Response::ok(id, &h),
        None => Response::err(
            id,
            ErrorObject::new(ErrorCode::SessionGone, "the session is closing"),
        ),
    }
}

/// If `req` is a `hello` with `resume`: the resume.
pub fn resume_request(req: &Request) -> Option<Resume> {
    if req.method != HelloCall::NAME {
        return None;
    }
    req.params::<Hello>().ok()?.resume
}

/// How a relay attempt ended.
pub enum Relay {
    /// The session was reached and the relay ran until one side closed.
    Done,
    /// No such session: the caller answers `SessionGone` and serves as a fresh agent.
    Gone(String),
}

/// Relay this connection (`frames` from the client, `out` to it) to the agent holding the
/// session, starting with the resuming `hello` (`req`).
pub async fn relay(
    req: &Request,
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
    let Ok(hello) = Message::Request(req.clone()).to_frame() else {
        return Relay::Gone("the resuming hello is too large".into());
    };
    if w.write_all(&hello).await.is_err() {
        return Relay::Gone("the session's agent closed the connection".into());
    }
    let mut down: Frames = protocol::FrameReader::new(BufReader::new(Box::new(r) as BoxRead));
    // The owner's answer to the hello decides: a result → relay; an error → fresh agent.
    match tokio::time::timeout(AUTH_DEADLINE * 2, down.next_frame()).await {
        Ok(Ok(Some(first))) => {
            if !matches!(
                Message::parse(&first),
                Ok(Message::Response(Response { result: Ok(_), .. }))
            ) {
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
                        Ok(b) => out.encoded(b).await,
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
