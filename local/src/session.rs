//! The link to the agent: one multiplexed JSON-RPC connection over any byte stream pair (ssh's
//! pipes, a local agent child's pipes, or an in-memory duplex in tests).
//!
//! - A writer task owns the agent's stdin: frames come through a channel; a blank line is sent
//!   every `heartbeat` as a keep-alive (the agent echoes it).
//! - A reader task owns the agent's stdout: responses go to the caller waiting on their id;
//!   notifications (`params.subscription`) go to the client connection whose request created the
//!   subscription. Any byte from the agent counts as life; `dead_after` without one kills the
//!   link.
//! - When the link dies every pending call fails with [`ErrorCode::ConnectionLost`], every open
//!   subscription gets a final `error` item, and later calls fail at once. (Reconnecting is a
//!   later step: everything a caller holds is a [`Session`] handle, so a new link can be swapped
//!   in behind it.)

use protocol::{ErrorCode, FrameReader, Hello, HelloResult};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::sync::{mpsc, oneshot};

/// Frames (already `\n`-terminated) for one client connection.
pub type ClientSink = mpsc::UnboundedSender<String>;

/// The outcome of a call: the agent's raw `result`, or a raw JSON-RPC error object.
#[derive(Debug)]
pub enum Reply {
    Result(Box<RawValue>),
    Error(Box<RawValue>),
    /// A subscription's response, already written to the client's sink (so that it precedes
    /// the subscription's first notification).
    Delivered,
}

impl Reply {
    /// A locally made error object.
    pub fn error(code: ErrorCode, message: &str) -> Reply {
        Reply::Error(error_object(code.code(), message))
    }

    /// The frame to send a client, with its own id (raw JSON).
    pub fn to_frame(&self, id: &RawValue) -> String {
        match self {
            Reply::Result(r) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"result\":{}}}\n",
                id.get(),
                r.get()
            ),
            Reply::Error(e) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{},\"error\":{}}}\n",
                id.get(),
                e.get()
            ),
            Reply::Delivered => String::new(),
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
}

/// Timings of the link (tests shorten them).
#[derive(Debug, Clone, Copy)]
pub struct Timing {
    pub heartbeat: Duration,
    pub dead_after: Duration,
    pub rpc_timeout: Duration,
}

impl Timing {
    pub fn new(rpc_timeout: Duration) -> Self {
        Timing {
            heartbeat: Duration::from_secs(5),
            dead_after: Duration::from_secs(15),
            rpc_timeout,
        }
    }
}

enum WriterMsg {
    Frame(Vec<u8>),
    Close,
}

struct Pending {
    tx: oneshot::Sender<Reply>,
    /// Set when the method is a subscription: where its response and notifications go.
    sub: Option<SubRequest>,
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

#[derive(Default)]
struct State {
    pending: HashMap<u64, Pending>,
    subs: HashMap<String, Sub>,
    /// Notifications that arrived before their subscription's response (bounded).
    orphans: HashMap<String, Vec<String>>,
    orphan_count: usize,
    dead: Option<String>,
    /// pii closed the link on purpose (its end is not a warning).
    closing: bool,
}

const MAX_ORPHANS: usize = 4096;

struct Inner {
    out: mpsc::UnboundedSender<WriterMsg>,
    state: Mutex<State>,
    next_id: AtomicU64,
    timing: Timing,
    dead_tx: tokio::sync::watch::Sender<bool>,
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
}

#[derive(Deserialize)]
struct ItemType {
    #[serde(rename = "type", default)]
    ty: Option<String>,
}

/// Canonical key of a subscription id (numbers and strings both allowed).
fn sub_key(raw: &RawValue) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(raw.get()).ok()?;
    match v {
        serde_json::Value::String(_) | serde_json::Value::Number(_) => Some(v.to_string()),
        _ => None,
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
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let (dead_tx, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            out: out_tx,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            timing,
            dead_tx,
        });
        let epoch = Instant::now();
        let last = last_activity.unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
        let seen = Arc::new(AtomicU64::new(0));
        tokio::spawn(writer_task(writer, out_rx, Arc::downgrade(&inner)));
        tokio::spawn(reader_task(reader, inner.clone(), seen.clone(), epoch));
        tokio::spawn(watchdog_task(Arc::downgrade(&inner), seen, last, epoch));
        Session { inner }
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
            grace_ms: None,
        };
        let raw = serde_json::value::to_raw_value(&params).expect("Hello serializes");
        match self.call("hello", Some(&raw), None).await {
            Reply::Result(r) => {
                serde_json::from_str(r.get()).map_err(|e| SessionError::BadResult {
                    method: "hello".into(),
                    msg: e.to_string(),
                })
            }
            Reply::Error(e) => {
                #[derive(Deserialize)]
                struct E {
                    code: i64,
                    message: String,
                }
                let e: E = serde_json::from_str(e.get()).unwrap_or(E {
                    code: 0,
                    message: format!("malformed error {}", e.get()),
                });
                Err(SessionError::Rpc {
                    method: "hello".into(),
                    code: e.code,
                    message: e.message,
                })
            }
            Reply::Delivered => Err(SessionError::BadResult {
                method: "hello".into(),
                msg: "not a subscription".into(),
            }),
        }
    }

    /// Whether the link is dead, and why.
    pub fn dead_reason(&self) -> Option<String> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .dead
            .clone()
    }

    /// Resolves when the link dies (for the coming reconnect logic).
    #[allow(dead_code)]
    pub async fn closed(&self) {
        let mut rx = self.inner.dead_tx.subscribe();
        while !*rx.borrow_and_update() {
            if rx.changed().await.is_err() {
                return;
            }
        }
    }

    /// Close the agent's stdin (the agent then kills its processes and exits).
    pub fn close(&self) {
        self.inner
            .state
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .closing = true;
        let _ = self.inner.out.send(WriterMsg::Close);
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
        let frame = match params {
            Some(p) => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{},\"params\":{}}}",
                serde_json::to_string(method).unwrap_or_default(),
                p.get()
            ),
            None => format!(
                "{{\"jsonrpc\":\"2.0\",\"id\":{id},\"method\":{}}}",
                serde_json::to_string(method).unwrap_or_default()
            ),
        };
        let bytes = match protocol::frame::encode(&frame) {
            Ok(b) => b,
            Err(e) => return Reply::error(ErrorCode::FrameTooLarge, &e.to_string()),
        };
        let (tx, rx) = oneshot::channel();
        let sub = protocol::subscription(method).and_then(|(_, notification, _)| {
            sink.map(|(sink, client_id)| SubRequest {
                sink,
                client_id,
                notification,
            })
        });
        {
            let mut st = self.inner.state.lock().unwrap_or_else(|p| p.into_inner());
            if let Some(why) = &st.dead {
                return Reply::error(
                    ErrorCode::ConnectionLost,
                    &format!("connection to the agent lost: {why}"),
                );
            }
            st.pending.insert(id, Pending { tx, sub });
        }
        if self.inner.out.send(WriterMsg::Frame(bytes)).is_err() {
            self.inner
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pending
                .remove(&id);
            return Reply::error(
                ErrorCode::ConnectionLost,
                "connection to the agent lost: writer gone",
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
                self.inner
                    .state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .pending
                    .remove(&id);
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
            self.inner
                .state
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .subs
                .remove(&k);
        }
    }
}

impl Inner {
    fn die(&self, why: String) {
        let (pending, subs) = {
            let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
            if st.dead.is_some() {
                return;
            }
            if st.closing {
                tracing::info!("agent link closed: {why}");
            } else {
                tracing::warn!("agent link dead: {why}");
            }
            st.dead = Some(why.clone());
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
            // Both ProcEvent and WatchEvent end with an `error` item carrying an Errno.
            let frame = serde_json::json!({
                "jsonrpc": "2.0",
                "method": sub.notification,
                "params": {
                    "subscription": serde_json::from_str::<serde_json::Value>(&key).unwrap_or_default(),
                    "result": {"type": "error", "error": {"code": "EIO", "syscall": "read", "detail": msg}},
                }
            });
            let _ = sub.sink.send(format!("{frame}\n"));
        }
        self.dead_tx.send_replace(true);
    }

    fn handle_frame(&self, text: &str) {
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
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let Some(p) = st.pending.remove(&id) else {
            tracing::debug!("response for id {id} nobody waits for (timed out?)");
            return;
        };
        let reply = match (msg.result, msg.error) {
            (_, Some(e)) => Reply::Error(e),
            (Some(r), None) => Reply::Result(r),
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
        let frame = format!("{text}\n");
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
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

async fn writer_task<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    inner: std::sync::Weak<Inner>,
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
            _ = tick.tick() => Some(WriterMsg::Frame(b"\n".to_vec())),
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
                    i.die(format!("writing to the agent failed: {e}"));
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

async fn reader_task<R: AsyncBufRead + Unpin>(
    reader: R,
    inner: Arc<Inner>,
    seen: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut frames = FrameReader::new(reader);
    loop {
        let f = frames.next_frame().await;
        seen.store(epoch.elapsed().as_millis() as u64, Ordering::Relaxed);
        match f {
            Ok(Some(text)) => {
                if text.trim().is_empty() {
                    continue; // heartbeat echo
                }
                inner.handle_frame(&text);
            }
            Ok(None) => {
                inner.die(
                    "the agent closed its output (it exited or the ssh connection ended)".into(),
                );
                return;
            }
            Err(e) if e.is_recoverable() => tracing::warn!("bad frame from the agent: {e}"),
            Err(e) => {
                inner.die(format!("reading from the agent failed: {e}"));
                return;
            }
        }
    }
}

async fn watchdog_task(
    inner: std::sync::Weak<Inner>,
    seen: Arc<AtomicU64>,
    bytes: Arc<AtomicU64>,
    epoch: Instant,
) {
    let mut last_bytes = bytes.load(Ordering::Relaxed);
    let mut last_life = Instant::now();
    let mut last_seen = seen.load(Ordering::Relaxed);
    loop {
        let (dead_after, period) = match inner.upgrade() {
            Some(i) => {
                if i.state
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .dead
                    .is_some()
                {
                    return;
                }
                (
                    i.timing.dead_after,
                    i.timing.heartbeat.min(i.timing.dead_after) / 4,
                )
            }
            None => return,
        };
        tokio::time::sleep(period.max(Duration::from_millis(10))).await;
        let b = bytes.load(Ordering::Relaxed);
        let s = seen.load(Ordering::Relaxed);
        if b != last_bytes || s != last_seen {
            last_bytes = b;
            last_seen = s;
            last_life = Instant::now();
        }
        let _ = epoch;
        if last_life.elapsed() > dead_after {
            if let Some(i) = inner.upgrade() {
                i.die(format!(
                    "no data from the agent for {} s (heartbeat lost)",
                    dead_after.as_secs_f32()
                ));
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
        protocol::Facts {
            os: "linux".into(),
            arch: "x86_64".into(),
            user: "dev".into(),
            uid: 1000,
            gid: 1000,
            home: "/home/dev".into(),
            hostname: "box".into(),
            shell: "/bin/bash".into(),
            login_path: "/usr/bin:/bin".into(),
            project_root: "/home/dev/app".into(),
            sandbox_root: "/home/dev/app".into(),
            agent_pid: 42,
            git_version: None,
            bash_version: None,
            has_rg: true,
            has_fd: false,
        }
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
        let resp = rx.recv().await.unwrap();
        assert_eq!(
            resp,
            "{\"jsonrpc\":\"2.0\",\"id\":\"c1\",\"result\":\"s1\"}\n"
        );
        let first = rx.recv().await.unwrap();
        assert!(first.contains("\"spawned\""), "{first}");
        let second = tokio::time::timeout(Duration::from_secs(2), rx.recv())
            .await
            .unwrap()
            .unwrap();
        assert!(
            second.contains("\"exit\"") && second.ends_with('\n'),
            "{second}"
        );
        // After exit the subscription is forgotten.
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert!(s.inner.state.lock().unwrap().subs.is_empty());
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

    #[tokio::test]
    async fn silent_agent_is_declared_dead_and_pending_calls_fail() {
        // An agent that reads but never writes.
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
        let timing = Timing {
            rpc_timeout: Duration::from_secs(10),
            ..fast()
        };
        let s = Session::start(BufReader::new(r), w, None, timing);
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
            notes.recv().await.unwrap(),
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
        let end = notes.recv().await.unwrap();
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
