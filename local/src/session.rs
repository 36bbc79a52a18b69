//! The link to the agent: one multiplexed JSON-RPC connection over any byte stream pair (ssh's
//! pipes, a local agent child's pipes, or an in-memory duplex in tests), and its reconnection.
//!
//! - A writer task owns the agent's stdin: frames come through a channel; a blank line is sent
//!   every `heartbeat` as a keep-alive (the agent echoes it), with a `session.ack` for the
//!   notifications received since the last one.
//! - A reader task owns the agent's stdout: responses go to the caller waiting on their id;
//!   notifications (`params.subscription`) go to the client connection whose request created the
//!   subscription, once each (by `params.seq`). Any byte from the agent counts as life;
//!   `dead_after` without one declares the link dead.
//! - When the link dies and a [`Reconnect`] is set (ssh mode), the session reconnects with
//!   backoff ([`backoff`]) and resumes the agent's session (`hello` with `resume`): its
//!   processes and subscriptions live on and the notifications produced meanwhile are replayed.
//!   Calls in flight: idempotent ones (`protocol::is_idempotent`) are sent again on the new
//!   link; the others fail with [`ErrorCode::ConnectionLost`] and are NEVER sent again (their
//!   outcome is unknown; a second send could apply them twice). Calls made while reconnecting
//!   wait (up to their timeout) and go out on the new link. If the agent's session is gone, a
//!   new one starts and open subscriptions end with an `error` item.
//! - Without a [`Reconnect`] (or after [`Session::close`]) a dead link is final: every pending
//!   call fails with [`ErrorCode::ConnectionLost`], every open subscription gets a final `error`
//!   item, and later calls fail at once.

use protocol::frame::Frame;
use protocol::session::{Resume, SessionTicket, ACK_EVERY};
use protocol::{ErrorCode, FrameReader, Hello, HelloResult};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};

/// Frames (already `\n`-terminated, or whole binary frames) for one client connection.
pub type ClientSink = mpsc::UnboundedSender<Vec<u8>>;

/// The outcome of a call: the agent's raw `result`, or a raw JSON-RPC error object.
#[derive(Debug)]
pub enum Reply {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
    /// A subscription's response, already written to the client's sink (so that it precedes
    /// the subscription's first notification), or a binary answer (a raw `fs.read`, see
    /// `protocol::frame`) written there with the client's id.
    Delivered,
}

impl Reply {
    /// A locally made error object.
    pub fn error(code: ErrorCode, message: &str) -> Reply {
        Reply::Error(error_object(code.code(), message))
    }

    /// The frame to send a client, with its own id (raw JSON).
    pub fn to_frame(&self, id: &RawValue) -> Vec<u8> {
        match self {
            Reply::Result(r) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{}}}\n",
                id.get(),
                r.get()
            )
            .into_bytes(),
            Reply::Error(e) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{}}}\n",
                id.get(),
                e.get()
            )
            .into_bytes(),
            Reply::Delivered => Vec::new(),
        }
    }
}

pub fn error_object(code: i32, message: &str) -> Box<RawValue> {
    let v = serde_json::json!({"code": code, "message": message});
    serde_json::value::to_raw_value(&v).expect("a json! value always serializes")
}

#[derive(Debug, thiserror::Error)]
pub enum SessionError {
    #[error("agent refused `{method}`: {message} (code {code})")]
    Rpc {
        method: String,
        code: i64,
        message: String,
    },
    #[error("unexpected answer to `{method}` from the agent: {msg}")]
    BadResult { method: String, msg: String },
    #[error("the agent link ended during the handshake: {0}")]
    Link(String),
}

/// Timings of the link (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub rpc_timeout: Duration,
}

impl Timing {
    /// A heartbeat every second; 8 s without a byte from the agent means the link is dead. Any
    /// byte counts (a busy link that delivers a large frame slowly stays alive), and the agent
    /// echoes each heartbeat at once, so an idle healthy link is never silent that long. 4 s
    /// proved too tight on a loaded 2-core machine (an agent starved of CPU looked dead).
    pub fn new(rpc_timeout: Duration) -> Self {
        Timing {
            heartbeat: Duration::from_secs(1),
            dead_after: Duration::from_secs(8),
            rpc_timeout,
        }
    }
}

/// The delay before reconnect attempt `n` (0-based): 0.2, 0.5, 1, 2, 4, 8, 8, … s, each
/// ±20 % at random so that many clients do not reconnect in lockstep.
pub fn backoff(n: u32) -> Duration {
    const STEPS: [u64; 6] = [200, 500, 1000, 2000, 4000, 8000];
    let base = STEPS[(n as usize).min(STEPS.len() - 1)];
    let jitter = rand::Rng::gen_range(&mut rand::thread_rng(), 0.8..1.2);
    Duration::from_millis((base as f64 * jitter) as u64)
}

/// How long reconnect attempt `n` may take to bring up a new agent before it is abandoned: short
/// at first (a connection opened while the link was cut may never complete), longer later (a
/// slow bastion chain).
pub fn attempt_deadline(n: u32) -> Duration {
    Duration::from_secs(match n {
        0..=3 => 5,
        4..=5 => 10,
        _ => 30,
    })
}

/// A new link to a (new) agent, positioned just after its magic line.
pub struct Link {
    pub reader: Box<dyn AsyncBufRead + Unpin + Send>,
    pub writer: Box<dyn AsyncWrite + Unpin + Send>,
    /// Counts bytes as they arrive (see [`Activity`]).
    pub activity: Option<Arc<AtomicU64>>,
    /// The process carrying the link (ssh), killed when the link is replaced or closed.
    pub child: Option<tokio::process::Child>,
}

/// Opens new links (ssh mode): must never prompt on the terminal (pi's TUI owns it).
pub trait Reconnect: Send + Sync + 'static {
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Link, String>> + Send + '_>>;
}

enum WriterMsg {
    Frame(Vec<u8>),
    Close,
}

struct Pending {
    tx: oneshot::Sender<Reply>,
    /// Set when the method is a subscription: where its response and notifications go.
    sub: Option<SubRequest>,
    /// For other calls made with a sink: where a binary answer goes (with the client's id).
    direct: Option<(ClientSink, Box<RawValue>)>,
    method: String,
    /// The request, to send again on a new link (idempotent calls only).
    frame: Vec<u8>,
    idempotent: bool,
    /// The link generation it was handed to; `None` while it waits for a link.
    sent: Option<u64>,
}

/// A client's subscribe call in flight.
pub struct SubRequest {
    pub sink: ClientSink,
    /// The client's own request id (the response goes to the sink with it).
    pub client_id: Box<RawValue>,
    notification: &'static str,
}

struct Sub {
    sink: ClientSink,
    notification: &'static str,
}

/// Figures about reconnections (for logs and tests).
#[derive(Debug, Clone, Default)]
pub struct LinkStats {
    pub reconnects: u64,
    pub resumed: u64,
    pub last_outage: Option<Duration>,
    pub failed_in_flight: u64,
    pub retried: u64,
    pub duplicates_dropped: u64,
}

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    subs: HashMap<String, Sub>,
    /// Notifications that arrived before their subscription's response (bounded).
    orphans: HashMap<String, Vec<Vec<u8>>>,
    orphan_count: usize,
    dead: Option<String>,
    /// pii closed the link on purpose (its end is not a warning).
    closing: bool,
    /// The current link's generation and writer (`None` while reconnecting).
    gen: u64,
    out: Option<mpsc::UnboundedSender<WriterMsg>>,
    reconnecting: bool,
    child: Option<tokio::process::Child>,
    /// What `hello` sent, to say it again on a new link.
    hello: Option<Hello>,
    /// The roots the first `hello` answered (project, sandbox): a new agent must say the same.
    roots: Option<(String, String)>,
    grace_ms: Option<u64>,
    ticket: Option<SessionTicket>,
    /// The highest notification seq received, the one acknowledged, bytes since.
    last_seq: u64,
    acked: u64,
    unacked_bytes: usize,
    stats: LinkStats,
}

impl State {
    /// A `session.ack` frame if one is due.
    fn ack_frame(&mut self, force: bool) -> Option<Vec<u8>> {
        if self.last_seq > self.acked && (force || self.unacked_bytes >= ACK_EVERY) {
            self.acked = self.last_seq;
            self.unacked_bytes = 0;
            Some(
                format!(
                    "{{\"jsonrpc\":\"2.0\",\"method\":\"session.ack\",\"params\":{{\"seq\":{}}}}}\n",
                    self.acked
                )
                .into_bytes(),
            )
        } else {
            None
        }
    }
}

const MAX_ORPHANS: usize = 4096;

struct Inner {
    state: Mutex<State>,
    next_id: AtomicU64,
    timing: Timing,
    dead_tx: tokio::sync::watch::Sender<bool>,
    reconnect: Mutex<Option<Arc<dyn Reconnect>>>,
}

/// A handle on the agent link; cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

/// Counts the bytes read through it (the watchdog sees life in any change).
pub struct Activity<R> {
    inner: R,
    last: Arc<AtomicU64>,
}

impl<R> Activity<R> {
    pub fn new(inner: R) -> Self {
        Activity {
            inner,
            last: Arc::new(AtomicU64::new(0)),
        }
    }

    /// A counter that changes whenever bytes arrive (for [`Session::start`]).
    pub fn counter(&self) -> Arc<AtomicU64> {
        self.last.clone()
    }
}

impl<R: AsyncRead + Unpin> AsyncRead for Activity<R> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = buf.filled().len() - before;
        if n > 0 {
            self.last.fetch_add(n as u64, Ordering::Relaxed);
        }
        r
    }
}

#[derive(Deserialize)]
struct Incoming<'a> {
    #[serde(default, borrow)]
    id: Option<&'a RawValue>,
    #[serde(default)]
    method: Option<String>,
    #[serde(default, borrow)]
    params: Option<&'a RawValue>,
    #[serde(default)]
    result: Option<Box<RawValue>>,
    #[serde(default)]
    error: Option<Box<RawValue>>,
}

#[derive(Deserialize)]
struct NotifParams<'a> {
    #[serde(borrow)]
    subscription: &'a RawValue,
    #[serde(default, borrow)]
    result: Option<&'a RawValue>,
    #[serde(default)]
    seq: Option<u64>,
}

#[derive(Deserialize)]
struct ItemType {
    #[serde(rename = "type", default)]
    ty: Option<String>,
}

#[derive(Deserialize)]
struct ErrorShape {
    code: i64,
    message: String,
}

/// Canonical key of a subscription id (numbers and strings both allowed).
fn sub_key(raw: &RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    match v {
        serde_json::Value::String(_) | serde_json::Value::Number(_) => Some(v.to_string()),
        _ => None,
    }
}

fn request_frame(id: u64, method: &str, params: Option<&RawValue>) -> String {
    match params {
        Some(p) => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{},\"params\":{}}}",
            serde_json::to_string(method).unwrap_or_default(),
            p.get()
        ),
        None => format!(
            "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{}}}",
            serde_json::to_string(method).unwrap_or_default()
        ),
    }
}

impl Session {
    /// Start the link on a reader positioned just after the magic line.
    pub fn start<R, W>(
        reader: R,
        writer: W,
        last_activity: Option<Arc<AtomicU64>>,
        timing: Timing,
    ) -> Session
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        let (dead_tx, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            timing,
            dead_tx,
            reconnect: Mutex::new(None),
        });
        let link = Link {
            reader: Box::new(reader),
            writer: Box::new(writer),
            activity: last_activity,
            child: None,
        };
        let (gen, rx) = {
            let mut st = inner.lock();
            let (tx, rx) = mpsc::unbounded_channel();
            st.out = Some(tx);
            (st.gen, rx)
        };
        inner.spawn_link(link.reader, link.writer, link.activity, rx, gen);
        Session { inner }
    }

    /// Reconnect through `r` when the link dies (ssh mode).
    pub fn set_reconnect(&self, r: Arc<dyn Reconnect>) {
        *self
            .inner
            .reconnect
            .lock()
            .unwrap_or_else(|p| p.into_inner()) = Some(r);
    }

    /// The process carrying the current link; killed when the link is replaced.
    pub fn set_child(&self, child: tokio::process::Child) {
        self.inner.lock().child = Some(child);
    }

    /// The grace period to ask the agent for (ms; its default otherwise).
    pub fn set_grace_ms(&self, ms: Option<u64>) {
        self.inner.lock().grace_ms = ms;
    }

    /// Figures about reconnections so far.
    pub fn stats(&self) -> LinkStats {
        self.inner.lock().stats.clone()
    }

    /// `hello`: the first call.
    pub async fn hello(
        &self,
        root: &str,
        sandbox_root: Option<&str>,
    ) -> Result<HelloResult, SessionError> {
        let params = Hello {
            protocol: protocol::PROTOCOL_VERSION,
            client_version: protocol::VERSION.to_string(),
            root: root.to_string(),
            sandbox_root: sandbox_root.map(str::to_string),
            resume: None,
            grace_ms: self.inner.lock().grace_ms,
        };
        let raw = serde_json::value::to_raw_value(&params).expect("Hello serializes");
        let h = match self.call("hello", Some(&raw), None).await {
            Reply::Result(r) => serde_json::from_str::<HelloResult>(r.get()).map_err(|e| {
                SessionError::BadResult {
                    method: "hello".into(),
                    msg: e.to_string(),
                }
            })?,
            Reply::Error(e) => {
                let e: ErrorShape = serde_json::from_str(e.get()).unwrap_or(ErrorShape {
                    code: 0,
                    message: format!("malformed error {}", e.get()),
                });
                return Err(SessionError::Rpc {
                    method: "hello".into(),
                    code: e.code,
                    message: e.message,
                });
            }
            Reply::Delivered => {
                return Err(SessionError::BadResult {
                    method: "hello".into(),
                    msg: "not a subscription".into(),
                })
            }
        };
        let mut st = self.inner.lock();
        st.hello = Some(params);
        st.ticket = h.session.clone();
        st.roots = Some((h.facts.project_root.clone(), h.facts.sandbox_root.clone()));
        Ok(h)
    }

    /// Whether the link is dead for good, and why.
    pub fn dead_reason(&self) -> Option<String> {
        self.inner.lock().dead.clone()
    }

    /// Resolves when the link is dead for good.
    #[allow(dead_code)]
    pub async fn closed(&self) {
        let mut rx = self.inner.dead_tx.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Close the agent's stdin (the agent then ends the session: at once after `session.end`,
    /// else after its grace period).
    pub fn close(&self) {
        let mut st = self.inner.lock();
        st.closing = true;
        if let Some(out) = &st.out {
            let _ = out.send(WriterMsg::Close);
        }
    }

    /// A clean end: `session.end` (so the agent kills the session's processes at once), close
    /// the link, and wait up to `wait` for the process carrying it (then kill it).
    pub async fn shutdown(&self, wait: Duration) -> Option<std::process::ExitStatus> {
        if self.inner.lock().out.is_some() {
            let end = self.call("session.end", None, None);
            if tokio::time::timeout(wait, end).await.is_err() {
                tracing::warn!("the agent did not confirm session.end");
            }
        }
        self.close();
        let child = self.inner.lock().child.take();
        let mut child = child?;
        match tokio::time::timeout(wait, child.wait()).await {
            Ok(st) => st.ok(),
            Err(_) => {
                tracing::warn!("the agent link did not exit within {wait:?}; killing it");
                let _ = child.kill().await;
                child.wait().await.ok()
            }
        }
    }

    /// Call `method` with raw params. If `sink` is given and `method` is a subscription, a
    /// successful response is written to `sink` (with `client_id`) followed by the
    /// notifications, and [`Reply::Delivered`] is returned. Never panics, never hangs past the
    /// rpc timeout (except `proc.run` without `timeoutMs`, which may run as long as it runs).
    pub async fn call(
        &self,
        method: &str,
        params: Option<&RawValue>,
        sink: Option<(ClientSink, Box<RawValue>)>,
    ) -> Reply {
        let id = self.inner.next_id.fetch_add(1, Ordering::Relaxed);
        let bytes = match protocol::frame::encode(&request_frame(id, method, params)) {
            Ok(b) => b,
            Err(e) => return Reply::error(ErrorCode::FrameTooLarge, &e.to_string()),
        };
        let (tx, rx) = oneshot::channel();
        let (sub, direct) = match protocol::subscription(method) {
            Some((_, notification, _)) => (
                sink.map(|(sink, client_id)| SubRequest {
                    sink,
                    client_id,
                    notification,
                }),
                None,
            ),
            None => (None, sink),
        };
        {
            let mut st = self.inner.lock();
            if let Some(why) = &st.dead {
                return Reply::error(
                    ErrorCode::ConnectionLost,
                    &format!("connection to the agent lost: {why}"),
                );
            }
            let idempotent = protocol::is_idempotent(method);
            // Idempotent calls keep their bytes (they may be sent again); a call that is not
            // handed to a writer now (reconnecting) keeps them to go out once, on the new link.
            let (frame, sent) = match &st.out {
                Some(out) => {
                    let keep = if idempotent { bytes.clone() } else { vec![] };
                    match out.send(WriterMsg::Frame(bytes)) {
                        Ok(()) => (keep, Some(st.gen)),
                        Err(mpsc::error::SendError(WriterMsg::Frame(b))) => (b, None),
                        Err(_) => (keep, None),
                    }
                }
                None => (bytes, None),
            };
            st.pending.insert(
                id,
                Pending {
                    tx,
                    sub,
                    direct,
                    method: method.to_string(),
                    frame,
                    idempotent,
                    sent,
                },
            );
        }
        let timeout = self.timeout_for(method, params);
        let result = match timeout {
            Some(t) => tokio::time::timeout(t, rx).await.ok(),
            None => Some(rx.await),
        };
        match result {
            Some(Ok(reply)) => reply,
            Some(Err(_)) => Reply::error(ErrorCode::ConnectionLost, "connection to the agent lost"),
            None => {
                self.inner.lock().pending.remove(&id);
                Reply::error(
                    ErrorCode::Timeout,
                    &format!(
                        "`{method}` got no answer from the agent within {} ms (rpcTimeout)",
                        self.inner.timing.rpc_timeout.as_millis()
                    ),
                )
            }
        }
    }

    fn timeout_for(&self, method: &str, params: Option<&RawValue>) -> Option<Duration> {
        let base = self.inner.timing.rpc_timeout;
        if method == "proc.run" {
            #[derive(Deserialize)]
            #[serde(rename_all = "camelCase")]
            struct T {
                #[serde(default)]
                timeout_ms: Option<u64>,
            }
            let t = params
                .and_then(|p| serde_json::from_str::<T>(p.get()).ok())
                .and_then(|t| t.timeout_ms);
            return t.map(|ms| base + Duration::from_millis(ms));
        }
        Some(base)
    }

    /// Forget a subscription (after a successful unsubscribe).
    pub fn forget_subscription(&self, raw_id: &RawValue) {
        if let Some(k) = sub_key(raw_id) {
            self.inner.lock().subs.remove(&k);
        }
    }
}

/// The final `error` item of a subscription whose link is gone.
fn end_frame(key: &str, notification: &str, msg: &str) -> Vec<u8> {
    // Both ProcEvent and WatchEvent end with an `error` item carrying an Errno.
    let frame = serde_json::json!({
        "jsonrpc": "2.0",
        "method": notification,
        "params": {
            "subscription": serde_json::from_str::<serde_json::Value>(key).unwrap_or_default(),
            "result": {"type": "error", "error": {"code": "EIO", "syscall": "read", "detail": msg}},
        }
    });
    format!("{frame}\n").into_bytes()
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn spawn_link(
        self: &Arc<Self>,
        reader: Box<dyn AsyncBufRead + Unpin + Send>,
        writer: Box<dyn AsyncWrite + Unpin + Send>,
        activity: Option<Arc<AtomicU64>>,
        rx: mpsc::UnboundedReceiver<WriterMsg>,
        gen: u64,
    ) {
        let bytes = activity.unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
        let seen = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer_task(writer, rx, Arc::downgrade(self), gen));
        tokio::spawn(reader_task(reader, self.clone(), seen.clone(), gen));
        tokio::spawn(watchdog_task(Arc::downgrade(self), seen, bytes, gen));
    }

    /// Link `gen` died: reconnect if possible, else fail everything for good.
    fn link_lost(self: &Arc<Self>, gen: u64, why: String) {
        let reconnect = self
            .reconnect
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone();
        let mut st = self.lock();
        if st.dead.is_some() || gen != st.gen || st.reconnecting {
            return;
        }
        let reconnect = match reconnect {
            Some(r) if !st.closing => r,
            _ => {
                drop(st);
                return self.die(why);
            }
        };
        tracing::warn!("agent link lost: {why}; reconnecting");
        st.out = None;
        st.reconnecting = true;
        let child = st.child.take();
        let msg = format!(
            "the connection to the agent dropped ({why}) while this call was in flight; it is \
             not idempotent, so it was not sent again: it may or may not have been applied"
        );
        let mut failed = vec![];
        let ids: Vec<u64> = st.pending.keys().copied().collect();
        for id in ids {
            let p = st.pending.get_mut(&id).expect("listed");
            if p.sent != Some(gen) {
                continue;
            }
            if p.idempotent {
                p.sent = None;
                st.stats.retried += 1;
            } else if let Some(p) = st.pending.remove(&id) {
                st.stats.failed_in_flight += 1;
                tracing::info!("`{}` (id {id}) failed: connection lost", p.method);
                failed.push(p);
            }
        }
        drop(st);
        drop(child); // kill_on_drop: the old ssh goes now, so nothing stale arrives later
        for p in failed {
            let _ = p.tx.send(Reply::error(
                ErrorCode::ConnectionLost,
                &msg.replace("this call", &format!("`{}`", p.method)),
            ));
        }
        tokio::spawn(reconnect_task(self.clone(), reconnect, Instant::now()));
    }

    /// The link is gone for good.
    fn die(&self, why: String) {
        let (pending, subs) = {
            let mut st = self.lock();
            if st.dead.is_some() {
                return;
            }
            if st.closing {
                tracing::info!("agent link closed: {why}");
            } else {
                tracing::warn!("agent link dead: {why}");
            }
            st.dead = Some(why.clone());
            st.out = None;
            st.orphans.clear();
            (
                std::mem::take(&mut st.pending),
                std::mem::take(&mut st.subs),
            )
        };
        let msg = format!("connection to the agent lost: {why}");
        for (_, p) in pending {
            let _ = p.tx.send(Reply::error(ErrorCode::ConnectionLost, &msg));
        }
        for (key, sub) in subs {
            let _ = sub.sink.send(end_frame(&key, sub.notification, &msg));
        }
        self.dead_tx.send_replace(true);
    }

    /// Put a handshaken link in place: resend what waits, restart the tasks.
    fn install(self: &Arc<Self>, link: Link, fresh: Option<HelloResult>, started: Instant) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut ended = vec![];
        let gen = {
            let mut st = self.lock();
            st.gen += 1;
            let gen = st.gen;
            if let Some(h) = fresh {
                // A new agent session: the old one's processes and watches are gone.
                st.ticket = h.session;
                st.last_seq = 0;
                st.acked = 0;
                st.unacked_bytes = 0;
                st.orphans.clear();
                st.orphan_count = 0;
                ended = std::mem::take(&mut st.subs).into_iter().collect();
            } else {
                st.stats.resumed += 1;
            }
            let mut waiting: Vec<u64> = st
                .pending
                .iter()
                .filter(|(_, p)| p.sent.is_none())
                .map(|(id, _)| *id)
                .collect();
            waiting.sort_unstable();
            for id in waiting {
                if let Some(p) = st.pending.get_mut(&id) {
                    let frame = if p.idempotent {
                        p.frame.clone()
                    } else {
                        std::mem::take(&mut p.frame)
                    };
                    if tx.send(WriterMsg::Frame(frame)).is_ok() {
                        p.sent = Some(gen);
                    }
                }
            }
            st.out = Some(tx);
            st.reconnecting = false;
            st.child = link.child;
            st.stats.reconnects += 1;
            st.stats.last_outage = Some(started.elapsed());
            gen
        };
        let msg = "the agent's session ended while the link was down (its grace period passed \
                   or the remote restarted); a new session started";
        for (key, sub) in ended {
            let _ = sub.sink.send(end_frame(&key, sub.notification, msg));
        }
        self.spawn_link(link.reader, link.writer, link.activity, rx, gen);
    }

    /// One frame from the agent; `payload` is a binary frame's (then `text` is its header).
    fn handle_frame(&self, text: &str, payload: Option<Vec<u8>>) {
        let msg: Incoming = match serde_json::from_str(text) {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(
                    "agent sent a frame that is not a JSON-RPC object ({e}): {:.200}",
                    text
                );
                return;
            }
        };
        if payload.is_some() && (msg.method.is_some() || msg.result.is_none()) {
            // Only answers carry payloads; anything else in a binary frame is a bug: drop it
            // (a waiting call then times out, as for any lost answer).
            tracing::warn!(
                "agent sent a binary frame that is not a result: {:.200}",
                text
            );
            return;
        }
        if let Some(method) = &msg.method {
            if msg.id.is_none() {
                self.handle_notification(method, msg.params, text);
            } else {
                tracing::warn!("agent sent a request `{method}`; pii serves none");
            }
            return;
        }
        let Some(id) = msg.id.and_then(|r| r.get().parse::<u64>().ok()) else {
            tracing::warn!("agent sent a response with an unknown id: {:.200}", text);
            return;
        };
        let mut st = self.lock();
        let Some(p) = st.pending.remove(&id) else {
            tracing::debug!("response for id {id} nobody waits for (timed out?)");
            return;
        };
        let reply = match (msg.result, msg.error) {
            (_, Some(e)) => Reply::Error(e),
            (Some(r), None) => match payload {
                Some(b) => {
                    drop(st);
                    let reply = match p.direct {
                        Some((sink, client_id)) => {
                            let header = format!(
                                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{}}}",
                                client_id.get(),
                                r.get()
                            );
                            // The payload came in a binary frame: it is within the cap.
                            match protocol::frame::encode_binary(&header, &b) {
                                Ok(f) => {
                                    let _ = sink.send(f);
                                    Reply::Delivered
                                }
                                Err(e) => Reply::error(ErrorCode::FrameTooLarge, &e.to_string()),
                            }
                        }
                        None => Reply::error(
                            ErrorCode::InvalidRequest,
                            "a binary answer for a call without a client connection",
                        ),
                    };
                    let _ = p.tx.send(reply);
                    return;
                }
                None => Reply::Result(r),
            },
            (None, None) => {
                Reply::Result(RawValue::from_string("null".into()).expect("null is JSON"))
            }
        };
        if let (Reply::Result(r), Some(sub)) = (&reply, p.sub) {
            if let Some(key) = sub_key(r) {
                // Response first, then any early notifications, all before the lock is let go.
                let _ = sub.sink.send(reply.to_frame(&sub.client_id));
                if let Some(early) = st.orphans.remove(&key) {
                    st.orphan_count -= early.len();
                    for f in early {
                        let _ = sub.sink.send(f);
                    }
                }
                st.subs.insert(
                    key,
                    Sub {
                        sink: sub.sink,
                        notification: sub.notification,
                    },
                );
                drop(st);
                let _ = p.tx.send(Reply::Delivered);
                return;
            }
        }
        drop(st);
        let _ = p.tx.send(reply);
    }

    fn handle_notification(&self, method: &str, params: Option<&RawValue>, text: &str) {
        let Some(params) = params.and_then(|p| serde_json::from_str::<NotifParams>(p.get()).ok())
        else {
            tracing::warn!(
                "agent notification `{method}` without a subscription: {:.200}",
                text
            );
            return;
        };
        let Some(key) = sub_key(params.subscription) else {
            return;
        };
        let last = params
            .result
            .and_then(|r| serde_json::from_str::<ItemType>(r.get()).ok())
            .and_then(|t| t.ty)
            .is_some_and(|t| t == "error" || (t == "exit" && method == "proc.event"));
        let frame = format!("{text}\n").into_bytes();
        let mut st = self.lock();
        if let Some(seq) = params.seq {
            if seq <= st.last_seq {
                // Replayed after a resume but already delivered: exactly once.
                st.stats.duplicates_dropped += 1;
                return;
            }
            if seq != st.last_seq + 1 {
                tracing::error!(
                    "notifications {}..{} from the agent are missing",
                    st.last_seq + 1,
                    seq - 1
                );
            }
            st.last_seq = seq;
            st.unacked_bytes += text.len();
            if let Some(ack) = st.ack_frame(false) {
                if let Some(out) = &st.out {
                    let _ = out.send(WriterMsg::Frame(ack));
                }
            }
        }
        match st.subs.get(&key) {
            Some(sub) => {
                if sub.sink.send(frame).is_err() || last {
                    st.subs.remove(&key);
                }
            }
            None => {
                if st.orphan_count < MAX_ORPHANS {
                    st.orphan_count += 1;
                    st.orphans.entry(key).or_default().push(frame);
                } else {
                    tracing::warn!("dropping notification for unknown subscription {key}");
                }
            }
        }
    }
}

/// Reconnect with backoff until a link is up (or the session is closed).
async fn reconnect_task(inner: Arc<Inner>, reconnect: Arc<dyn Reconnect>, started: Instant) {
    for attempt in 0u32.. {
        tokio::time::sleep(backoff(attempt)).await;
        if inner.lock().closing {
            inner.die("closed while reconnecting".into());
            return;
        }
        let link = match tokio::time::timeout(attempt_deadline(attempt), reconnect.connect()).await
        {
            Ok(Ok(link)) => link,
            Ok(Err(e)) => {
                tracing::warn!("reconnect attempt {} failed: {e}", attempt + 1);
                continue;
            }
            Err(_) => {
                tracing::warn!(
                    "reconnect attempt {} timed out after {:?}",
                    attempt + 1,
                    attempt_deadline(attempt)
                );
                continue;
            }
        };
        match handshake(&inner, link).await {
            Ok((link, fresh)) => {
                let new = fresh.is_some();
                inner.install(link, fresh, started);
                tracing::warn!(
                    "reconnected after {:.2} s (attempt {}; {})",
                    started.elapsed().as_secs_f64(),
                    attempt + 1,
                    if new {
                        "a NEW session: the old one was gone"
                    } else {
                        "session resumed"
                    }
                );
                return;
            }
            Err(e) => tracing::warn!("reconnect attempt {} failed: {e}", attempt + 1),
        }
    }
}

/// `hello` on a new link before it carries anything else: resume the session if there is a
/// ticket (`Ok((link, None))`), else — or if the agent no longer has it — start a new one
/// (`Ok((link, Some(result)))`).
async fn handshake(
    inner: &Arc<Inner>,
    mut link: Link,
) -> Result<(Link, Option<HelloResult>), SessionError> {
    let (hello, ticket, last_seq) = {
        let st = inner.lock();
        let hello = st
            .hello
            .clone()
            .ok_or_else(|| SessionError::Link("no hello to repeat".into()))?;
        (hello, st.ticket.clone(), st.last_seq)
    };
    let deadline = inner.timing.rpc_timeout.min(Duration::from_secs(30));
    if let Some(t) = ticket {
        let params = Hello {
            resume: Some(Resume {
                session: t.id,
                secret: t.secret,
                last_seq,
            }),
            ..hello.clone()
        };
        match hello_on(&mut link, inner, &params, deadline).await? {
            Ok(h) if h.resumed => return Ok((link, None)),
            Ok(h) => return Ok((link, Some(same_roots(inner, h)?))),
            Err(e) if e.code == ErrorCode::SessionGone.code() as i64 => {
                tracing::warn!("the agent's session is gone: {}", e.message);
            }
            Err(e) => {
                return Err(SessionError::Rpc {
                    method: "hello".into(),
                    code: e.code,
                    message: e.message,
                })
            }
        }
    }
    match hello_on(&mut link, inner, &hello, deadline).await? {
        Ok(h) => Ok((link, Some(same_roots(inner, h)?))),
        Err(e) => Err(SessionError::Rpc {
            method: "hello".into(),
            code: e.code,
            message: e.message,
        }),
    }
}

/// A new agent after a reconnect must report the roots the first one did (they were checked
/// then, and node goes on using them).
fn same_roots(inner: &Inner, h: HelloResult) -> Result<HelloResult, SessionError> {
    let first = inner.lock().roots.clone();
    match first {
        Some((p, s)) if p != h.facts.project_root || s != h.facts.sandbox_root => {
            Err(SessionError::BadResult {
                method: "hello".into(),
                msg: format!(
                    "the new agent reports project {:?} and sandbox {:?}, the first one {p:?} and {s:?}",
                    h.facts.project_root, h.facts.sandbox_root
                ),
            })
        }
        _ => Ok(h),
    }
}

/// Send one `hello` on a link nobody else uses yet and read its answer.
async fn hello_on(
    link: &mut Link,
    inner: &Inner,
    params: &Hello,
    deadline: Duration,
) -> Result<Result<HelloResult, ErrorShape>, SessionError> {
    let id = inner.next_id.fetch_add(1, Ordering::Relaxed);
    let raw = serde_json::value::to_raw_value(params).expect("Hello serializes");
    let mut frame = request_frame(id, "hello", Some(&raw)).into_bytes();
    frame.push(b'\n');
    let io = async {
        link.writer.write_all(&frame).await?;
        link.writer.flush().await?;
        let mut frames = FrameReader::new(&mut link.reader);
        loop {
            let Some(text) = frames.next_frame().await.map_err(std::io::Error::other)? else {
                return Err(std::io::Error::other("the agent closed the link"));
            };
            if text.trim().is_empty() {
                continue;
            }
            let msg: Incoming = match serde_json::from_str(&text) {
                Ok(m) => m,
                Err(_) => continue,
            };
            if msg.id.map(|r| r.get().to_string()) != Some(id.to_string()) {
                tracing::warn!("unexpected frame before the hello answer: {text:.200}");
                continue;
            }
            return Ok((msg.result, msg.error));
        }
    };
    let (result, error) = tokio::time::timeout(deadline, io)
        .await
        .map_err(|_| SessionError::Link(format!("no answer to hello within {deadline:?}")))?
        .map_err(|e| SessionError::Link(e.to_string()))?;
    if let Some(e) = error {
        let e: ErrorShape = serde_json::from_str(e.get()).unwrap_or(ErrorShape {
            code: 0,
            message: format!("malformed error {}", e.get()),
        });
        return Ok(Err(e));
    }
    let r = result.ok_or_else(|| SessionError::BadResult {
        method: "hello".into(),
        msg: "neither result nor error".into(),
    })?;
    serde_json::from_str(r.get())
        .map(Ok)
        .map_err(|e| SessionError::BadResult {
            method: "hello".into(),
            msg: e.to_string(),
        })
}

async fn writer_task(
    mut writer: Box<dyn AsyncWrite + Unpin + Send>,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    inner: std::sync::Weak<Inner>,
    gen: u64,
) {
    let heartbeat = match inner.upgrade() {
        Some(i) => i.timing.heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut buf = Vec::new();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => {
                let ack = inner.upgrade().and_then(|i| i.lock().ack_frame(true));
                let mut f = ack.unwrap_or_default();
                f.push(b'\n');
                Some(WriterMsg::Frame(f))
            }
        };
        let mut close = false;
        match msg {
            Some(WriterMsg::Frame(f)) => buf.extend_from_slice(&f),
            Some(WriterMsg::Close) | None => close = true,
        }
        // Batch whatever else is already queued.
        while !close && buf.len() < 1 << 20 {
            match rx.try_recv() {
                Ok(WriterMsg::Frame(f)) => buf.extend_from_slice(&f),
                Ok(WriterMsg::Close) => close = true,
                Err(_) => break,
            }
        }
        if !buf.is_empty() {
            let r = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            }
            .await;
            buf.clear();
            if let Err(e) = r {
                if let Some(i) = inner.upgrade() {
                    i.link_lost(gen, format!("writing to the agent failed: {e}"));
                }
                return;
            }
        }
        if close {
            let _ = writer.shutdown().await;
            drop(writer);
            return;
        }
    }
}

async fn reader_task(
    reader: Box<dyn AsyncBufRead + Unpin + Send>,
    inner: Arc<Inner>,
    seen: Arc<AtomicU64>,
    gen: u64,
) {
    let epoch = Instant::now();
    let mut frames = FrameReader::new(reader);
    loop {
        let f = frames.next_item().await;
        seen.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        if inner.lock().gen != gen {
            return; // replaced by a newer link
        }
        match f {
            Ok(Some(Frame::Text(text))) => {
                if text.trim().is_empty() {
                    continue; // heartbeat echo
                }
                inner.handle_frame(&text, None);
            }
            Ok(Some(Frame::Binary { header, payload })) => {
                inner.handle_frame(&header, Some(payload));
            }
            Ok(None) => {
                inner.link_lost(
                    gen,
                    "the agent closed its output (it exited or the ssh connection ended)".into(),
                );
                return;
            }
            Err(e) if e.is_recoverable() => tracing::warn!("bad frame from the agent: {e}"),
            Err(e) => {
                inner.link_lost(gen, format!("reading from the agent failed: {e}"));
                return;
            }
        }
    }
}

async fn watchdog_task(
    inner: std::sync::Weak<Inner>,
    seen: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    gen: u64,
) {
    let mut last_bytes = bytes.load(Ordering::Relaxed);
    let mut last_life = Instant::now();
    let mut last_seen = seen.load(Ordering::Relaxed);
    loop {
        let (dead_after, period) = match inner.upgrade() {
            Some(i) => {
                let st = i.lock();
                if st.dead.is_some() || st.gen != gen || st.reconnecting {
                    return;
                }
                (
                    i.timing.dead_after,
                    i.timing.heartbeat.min(i.timing.dead_after) / 4,
                )
            }
            None => return,
        };
        let period = period.max(Duration::from_millis(10));
        let before = Instant::now();
        tokio::time::sleep(period).await;
        // Time this task could not run (pii itself descheduled or its runtime blocked, e.g. on a
        // loaded machine) is time in which no byte could have been observed either: it is not
        // the agent's silence, so it does not count.
        let stalled = before.elapsed().saturating_sub(period);
        if stalled > period {
            last_life = (last_life + stalled).min(Instant::now());
        }
        let b = bytes.load(Ordering::Relaxed);
        let s = seen.load(Ordering::Relaxed);
        if b != last_bytes || s != last_seen {
            last_bytes = b;
            last_seen = s;
            last_life = Instant::now();
        }
        if last_life.elapsed() > dead_after {
            if let Some(i) = inner.upgrade() {
                i.link_lost(
                    gen,
                    format!(
                        "no data from the agent for {} s (heartbeat lost)",
                        dead_after.as_secs_f32()
                    ),
                );
            }
            return;
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader, DuplexStream};

    pub fn facts() -> protocol::Facts {
        protocol::Facts::example()
    }

    /// Everything the fake agent received (frames, blank lines included).
    pub type Received = Arc<Mutex<Vec<String>>>;

    /// An in-memory agent: echoes heartbeats, answers `hello`, `echo` (result = params),
    /// `slow` (never answers), `proc.spawn` (subscription "s1" then two events), `fail`
    /// (an OS error).
    pub fn fake_agent(stream: DuplexStream, received: Received) {
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(stream);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                received.lock().unwrap().push(line.clone());
                if line.is_empty() {
                    if w.write_all(b"\n").await.is_err() {
                        return;
                    }
                    continue;
                }
                let v: serde_json::Value = match serde_json::from_str(&line) {
                    Ok(v) => v,
                    Err(_) => continue,
                };
                let id = v["id"].clone();
                let out = match v["method"].as_str().unwrap_or("") {
                    "hello" => vec![
                        serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"protocol":1,"agentVersion":"0.1.0","facts":facts()}}),
                    ],
                    "echo" => {
                        vec![serde_json::json!({"jsonrpc":"2.0","id":id,"result":v["params"]})]
                    }
                    "slow" => vec![],
                    "bin" => {
                        // A binary answer: every byte value, the mark and newlines included.
                        let payload: Vec<u8> = (0..=255u8).chain([b'\n', 0x1e, 0]).collect();
                        let header =
                            serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"size":259}});
                        let f =
                            protocol::frame::encode_binary(&header.to_string(), &payload).unwrap();
                        if w.write_all(&f).await.is_err() {
                            return;
                        }
                        vec![]
                    }
                    "proc.spawn" => vec![
                        // An event before the response: must still reach the subscriber.
                        serde_json::json!({"jsonrpc":"2.0","method":"proc.event","params":{"subscription":"s1","result":{"type":"spawned","pid":7}}}),
                        serde_json::json!({"jsonrpc":"2.0","id":id,"result":"s1"}),
                        serde_json::json!({"jsonrpc":"2.0","method":"proc.event","params":{"subscription":"s1","result":{"type":"exit","code":0,"signal":null}}}),
                    ],
                    _ => vec![
                        serde_json::json!({"jsonrpc":"2.0","id":id,"error":{"code":-32000,"message":"ENOENT","data":{"code":"ENOENT","syscall":"open"}}}),
                    ],
                };
                for o in out {
                    if w.write_all(format!("{o}\n").as_bytes()).await.is_err() {
                        return;
                    }
                }
            }
        });
    }

    pub fn fast() -> Timing {
        Timing {
            heartbeat: Duration::from_millis(50),
            dead_after: Duration::from_millis(300),
            rpc_timeout: Duration::from_millis(500),
        }
    }

    pub fn connect(timing: Timing) -> (Session, Received) {
        let (a, b) = tokio::io::duplex(1 << 16);
        let received = Received::default();
        fake_agent(b, received.clone());
        let (r, w) = tokio::io::split(a);
        (Session::start(BufReader::new(r), w, None, timing), received)
    }

    fn text(b: Vec<u8>) -> String {
        String::from_utf8(b).expect("a text frame")
    }

    fn result(r: Reply) -> String {
        match r {
            Reply::Result(r) => r.get().to_string(),
            Reply::Error(e) => panic!("error {}", e.get()),
            Reply::Delivered => panic!("delivered"),
        }
    }

    fn error_code(r: Reply) -> i64 {
        match r {
            Reply::Error(e) => serde_json::from_str::<serde_json::Value>(e.get()).unwrap()["code"]
                .as_i64()
                .unwrap(),
            Reply::Result(r) => panic!("result {}", r.get()),
            Reply::Delivered => panic!("delivered"),
        }
    }

    #[tokio::test]
    async fn hello_and_concurrent_calls() {
        let (s, _) = connect(fast());
        let h = s.hello("~/app", None).await.unwrap();
        assert_eq!(h.facts.project_root, "/home/dev/app");
        let mut tasks = vec![];
        for i in 0..50 {
            let s = s.clone();
            tasks.push(tokio::spawn(async move {
                let p = RawValue::from_string(format!("{{\"n\":{i}}}")).unwrap();
                (i, result(s.call("echo", Some(&p), None).await))
            }));
        }
        for t in tasks {
            let (i, r) = t.await.unwrap();
            assert_eq!(r, format!("{{\"n\":{i}}}"));
        }
        assert_eq!(error_code(s.call("nope", None, None).await), -32000);
    }

    #[tokio::test]
    async fn subscription_notifications_reach_the_creator_in_order() {
        let (s, _) = connect(fast());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let p = RawValue::from_string("{}".into()).unwrap();
        let cid = RawValue::from_string("\"c1\"".into()).unwrap();
        assert!(matches!(
            s.call("proc.spawn", Some(&p), Some((tx, cid))).await,
            Reply::Delivered
        ));
        let resp = text(rx.recv().await.unwrap());
        assert_eq!(
            resp,
            "{\"jsonrpc\":\"2.0\",\"id\":\"c1\",\"result\":\"s1\"}\n"
        );
        let first = text(rx.recv().await.unwrap());
        assert!(first.contains("\"spawned\""), "{first}");
        let second = text(
            tokio::time::timeout(Duration::from_secs(2), rx.recv())
                .await
                .unwrap()
                .unwrap(),
        );
        assert!(
            second.contains("\"exit\"") && second.ends_with('\n'),
            "{second}"
        );
        // After exit the subscription is forgotten.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(s.inner.state.lock().unwrap().subs.is_empty());
    }

    #[tokio::test]
    async fn binary_answers_reach_the_client_with_its_id() {
        let (s, _) = connect(fast());
        let (tx, mut rx) = mpsc::unbounded_channel();
        let cid = RawValue::from_string("\"h7\"".into()).unwrap();
        // Two in flight, then a JSON call after them on the same link: nothing gets mixed up.
        let one = RawValue::from_string("[1]".into()).unwrap();
        let n12 = RawValue::from_string("12".into()).unwrap();
        let (a, b, c) = tokio::join!(
            s.call("bin", None, Some((tx.clone(), cid.clone()))),
            s.call("bin", None, Some((tx.clone(), n12))),
            s.call("echo", Some(&one), None),
        );
        assert!(matches!(a, Reply::Delivered), "{a:?}");
        assert!(matches!(b, Reply::Delivered), "{b:?}");
        assert_eq!(result(c), "[1]");
        drop(tx);
        let mut bytes = vec![];
        while let Some(f) = rx.recv().await {
            bytes.extend(f);
        }
        let mut rd = FrameReader::new(&bytes[..]);
        let mut ids = vec![];
        while let Some(f) = rd.next_item().await.unwrap() {
            let Frame::Binary { header, payload } = f else {
                panic!("expected a binary frame, got {f:?}");
            };
            let v: serde_json::Value = serde_json::from_str(&header).unwrap();
            assert_eq!(v["result"]["size"], 259);
            assert_eq!(
                payload,
                (0..=255u8).chain([b'\n', 0x1e, 0]).collect::<Vec<_>>()
            );
            ids.push(v["id"].to_string());
        }
        ids.sort();
        assert_eq!(ids, vec!["\"h7\"".to_string(), "12".to_string()]);
        // Without a client sink (pii's own calls) a binary answer is an error, not a hang.
        assert_eq!(
            error_code(s.call("bin", None, None).await),
            ErrorCode::InvalidRequest.code() as i64
        );
    }

    #[tokio::test]
    async fn rpc_timeout() {
        let (s, _) = connect(fast());
        let t = Instant::now();
        assert_eq!(
            error_code(s.call("slow", None, None).await),
            ErrorCode::Timeout.code() as i64
        );
        assert!(t.elapsed() >= Duration::from_millis(450));
        assert!(s.inner.state.lock().unwrap().pending.is_empty());
    }

    #[tokio::test]
    async fn heartbeats_are_sent_and_keep_the_link_alive() {
        let (s, received) = connect(fast());
        tokio::time::sleep(Duration::from_millis(700)).await;
        assert!(s.dead_reason().is_none(), "{:?}", s.dead_reason());
        assert!(
            received
                .lock()
                .unwrap()
                .iter()
                .filter(|l| l.is_empty())
                .count()
                >= 5
        );
    }

    /// A session whose agent reads but never writes: only the watchdog decides its fate.
    fn silent_session(timing: Timing) -> Session {
        let (a, mut b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut sink = vec![0u8; 1024];
            while tokio::io::AsyncReadExt::read(&mut b, &mut sink)
                .await
                .unwrap_or(0)
                > 0
            {}
        });
        let (r, w) = tokio::io::split(a);
        Session::start(BufReader::new(r), w, None, timing)
    }

    #[tokio::test]
    async fn a_stall_of_pii_itself_is_not_the_agent_going_silent() {
        let s = silent_session(fast());
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(s.dead_reason().is_none());
        // Block the whole runtime (pii descheduled under load) for 3× `dead_after`: that time
        // cannot be blamed on the agent, so right afterwards the link is not yet dead…
        std::thread::sleep(Duration::from_millis(900));
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert!(s.dead_reason().is_none(), "{:?}", s.dead_reason());
        // …but real silence after it still is detected.
        tokio::time::timeout(Duration::from_secs(5), s.closed())
            .await
            .expect("a silent agent is still declared dead after the stall");
        assert!(s.dead_reason().unwrap().contains("heartbeat lost"));
    }

    #[tokio::test]
    async fn silent_agent_is_declared_dead_and_pending_calls_fail() {
        let s = silent_session(Timing {
            rpc_timeout: Duration::from_secs(10),
            ..fast()
        });
        let (tx, mut notes) = mpsc::unbounded_channel();
        let s2 = s.clone();
        let cid = RawValue::from_string("1".into()).unwrap();
        let spawn = tokio::spawn(async move { s2.call("proc.spawn", None, Some((tx, cid))).await });
        let t = Instant::now();
        let code = error_code(s.call("slow", None, None).await);
        assert_eq!(code, ErrorCode::ConnectionLost.code() as i64);
        assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());
        assert_eq!(
            error_code(spawn.await.unwrap()),
            ErrorCode::ConnectionLost.code() as i64
        );
        assert!(notes.try_recv().is_err(), "no subscription was established");
        assert_eq!(
            error_code(s.call("echo", None, None).await),
            ErrorCode::ConnectionLost.code() as i64
        );
        tokio::time::timeout(Duration::from_secs(1), s.closed())
            .await
            .unwrap();
    }

    #[tokio::test]
    async fn agent_exit_fails_pending_and_ends_subscriptions() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(a);
        let s = Session::start(
            BufReader::new(r),
            w,
            None,
            Timing {
                rpc_timeout: Duration::from_secs(10),
                ..fast()
            },
        );
        // Hand-driven agent: answer the spawn, then die.
        let (br, mut bw) = tokio::io::split(b);
        let mut lines = BufReader::new(br).lines();
        let (tx, mut notes) = mpsc::unbounded_channel();
        let s2 = s.clone();
        let cid = RawValue::from_string("1".into()).unwrap();
        let spawn = tokio::spawn(async move { s2.call("proc.spawn", None, Some((tx, cid))).await });
        let line = loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if !l.is_empty() {
                break l;
            }
        };
        let id = serde_json::from_str::<serde_json::Value>(&line).unwrap()["id"].clone();
        bw.write_all(
            format!(
                "{}\n",
                serde_json::json!({"jsonrpc":"2.0","id":id,"result":5})
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        assert!(matches!(spawn.await.unwrap(), Reply::Delivered));
        assert_eq!(
            text(notes.recv().await.unwrap()),
            "{\"jsonrpc\":\"2.0\",\"id\":1,\"result\":5}\n"
        );
        let s3 = s.clone();
        let pending = tokio::spawn(async move { s3.call("slow", None, None).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        drop(bw);
        drop(lines);
        assert_eq!(
            error_code(pending.await.unwrap()),
            ErrorCode::ConnectionLost.code() as i64
        );
        let end = text(notes.recv().await.unwrap());
        let v: serde_json::Value = serde_json::from_str(&end).unwrap();
        assert_eq!(v["method"], "proc.event");
        assert_eq!(v["params"]["subscription"], 5);
        assert_eq!(v["params"]["result"]["type"], "error");
        assert_eq!(v["params"]["result"]["error"]["code"], "EIO");
    }

    #[tokio::test]
    async fn garbage_from_the_agent_is_skipped() {
        let (a, b) = tokio::io::duplex(1 << 16);
        let (r, w) = tokio::io::split(a);
        let s = Session::start(BufReader::new(r), w, None, fast());
        let (br, mut bw) = tokio::io::split(b);
        let mut lines = BufReader::new(br).lines();
        let s2 = s.clone();
        let call = tokio::spawn(async move { s2.call("echo", None, None).await });
        let line = loop {
            let l = lines.next_line().await.unwrap().unwrap();
            if !l.is_empty() {
                break l;
            }
        };
        let id = serde_json::from_str::<serde_json::Value>(&line).unwrap()["id"].clone();
        bw.write_all(b"not json\n{\"id\":999999,\"result\":1}\n[1,2]\n\xff\xfe\n")
            .await
            .unwrap();
        bw.write_all(
            format!(
                "{}\n",
                serde_json::json!({"jsonrpc":"2.0","id":id,"result":"ok"})
            )
            .as_bytes(),
        )
        .await
        .unwrap();
        assert_eq!(result(call.await.unwrap()), "\"ok\"");
        assert!(s.dead_reason().is_none());
    }
}

#[cfg(test)]
mod reconnect_tests {
    use super::tests::fast;
    use super::*;
    use tokio::io::{AsyncBufReadExt, BufReader};

    type Log = Arc<Mutex<Vec<String>>>;

    /// An agent that answers `hello` (a fresh session, as after a lost one) and, if `answer`,
    /// echoes heartbeats and every other call's params; else it falls silent (a dead link).
    fn agent(answer: bool, log: Log) -> Link {
        let (a, b) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let (r, mut w) = tokio::io::split(b);
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if line.is_empty() {
                    if answer {
                        let _ = w.write_all(b"\n").await;
                    }
                    continue;
                }
                let v: serde_json::Value = serde_json::from_str(&line).unwrap();
                log.lock()
                    .unwrap()
                    .push(v["method"].as_str().unwrap_or("").into());
                let reply = if v["method"] == "hello" {
                    serde_json::json!({"jsonrpc":"2.0","id":v["id"],"result":{"protocol":1,"agentVersion":"0.1.0","facts":super::tests::facts()}})
                } else if answer {
                    serde_json::json!({"jsonrpc":"2.0","id":v["id"],"result":v["params"]})
                } else {
                    continue;
                };
                let _ = w.write_all(format!("{reply}\n").as_bytes()).await;
            }
        });
        let (r, w) = tokio::io::split(a);
        Link {
            reader: Box::new(BufReader::new(r)),
            writer: Box::new(w),
            activity: None,
            child: None,
        }
    }

    struct Again(Log);
    impl Reconnect for Again {
        fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Link, String>> + Send + '_>> {
            let log = self.0.clone();
            Box::pin(async move { Ok(agent(true, log)) })
        }
    }

    #[tokio::test]
    async fn in_flight_idempotent_calls_are_retried_and_the_others_never_resent() {
        let first: Log = Log::default();
        let second: Log = Log::default();
        let link = agent(false, first.clone());
        let timing = Timing {
            rpc_timeout: Duration::from_secs(20),
            ..fast()
        };
        let s = Session::start(link.reader, link.writer, None, timing);
        s.hello("/p", None).await.unwrap();
        s.set_reconnect(Arc::new(Again(second.clone())));
        let p = RawValue::from_string("{\"path\":\"/p/x\"}".into()).unwrap();
        let (s1, s2, p1, p2) = (s.clone(), s.clone(), p.clone(), p.clone());
        let stat = tokio::spawn(async move { s1.call("fs.stat", Some(&p1), None).await });
        let write = tokio::spawn(async move { s2.call("fs.write", Some(&p2), None).await });
        // The first agent is silent: the watchdog declares the link dead with both calls in
        // flight, and the session reconnects to the second agent.
        match write.await.unwrap() {
            Reply::Error(e) => {
                let v: serde_json::Value = serde_json::from_str(e.get()).unwrap();
                assert_eq!(v["code"], ErrorCode::ConnectionLost.code(), "{v}");
                assert!(
                    v["message"].as_str().unwrap().contains("not sent again"),
                    "{v}"
                );
            }
            other => panic!("fs.write should fail, got {other:?}"),
        }
        match stat.await.unwrap() {
            Reply::Result(r) => assert_eq!(r.get(), "{\"path\":\"/p/x\"}"),
            other => panic!("fs.stat should be retried, got {other:?}"),
        }
        let second = second.lock().unwrap().clone();
        assert_eq!(
            second,
            ["hello", "fs.stat"],
            "fs.write must never be resent"
        );
        // Later calls, non-idempotent included, go out once on the new link.
        assert!(matches!(
            s.call("fs.write", Some(&p), None).await,
            Reply::Result(_)
        ));
        let st = s.stats();
        assert_eq!((st.reconnects, st.retried, st.failed_in_flight), (1, 1, 1));
    }
}
