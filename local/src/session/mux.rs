//! The multiplexer: the calls in flight (by pii's own ids), the subscriptions (by the agent's
//! subscription ids, each to the client connection that created it), the notification sequence
//! and its acknowledgements, and what happens to all of them when a link dies.
//!
//! It owns the current link's writer and implements [`LinkEvents`] for the link's tasks. It
//! does not reconnect itself: a dead link goes to the `recover` function it was given (the
//! reconnect loop), or, without one, ends everything.

use super::link::{self, Link, LinkEvents, Reconnect, Timing, WriterMsg};
use super::watchdog;
use protocol::frame::Frame;
use protocol::hops::STAMPS;
use protocol::methods::SessionAck;
use protocol::rpc::{ErrorObject, Id, Message, Notification, Request, Response, SubscriptionId};
use protocol::session::{AckParams, SessionTicket, ACK_EVERY};
use protocol::{ErrorCode, Hello};
use serde::Deserialize;
use serde_json::value::RawValue;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc, oneshot};

/// Frames (already `\n`-terminated, or whole binary frames) for one client connection.
pub type ClientSink = mpsc::UnboundedSender<Vec<u8>>;

/// The outcome of a call: the agent's raw `result`, or its error.
#[derive(Debug)]
pub enum Reply {
    Result(Box<RawValue>),
    Error(ErrorObject),
    /// The agent's answer, already written to the client's sink with the client's id: a
    /// subscription's response (so that it precedes the subscription's first notification), a
    /// binary answer (a raw `fs.read`, see `protocol::frame`), or any other answer to a call
    /// made with a sink (but an unsubscribe).
    Delivered,
}

impl Reply {
    /// A locally made error.
    pub fn error(code: ErrorCode, message: &str) -> Reply {
        Reply::Error(ErrorObject::new(code, message))
    }

    /// The frame to send a client, with its own id.
    pub fn to_frame(&self, id: &Id) -> Vec<u8> {
        let result = match self {
            Reply::Result(r) => Ok(r.clone()),
            Reply::Error(e) => Err(e.clone()),
            Reply::Delivered => return Vec::new(),
        };
        let m = Message::Response(Response {
            id: id.clone(),
            result,
        });
        // An answer that came in a frame fits in one (the ids differ by a few bytes at most).
        m.to_frame().unwrap_or_else(|e| {
            let e = Response::err(
                id.clone(),
                ErrorObject::new(ErrorCode::FrameTooLarge, e.to_string()),
            );
            Message::Response(e).to_frame().unwrap_or_default()
        })
    }
}

struct Pending {
    tx: oneshot::Sender<Reply>,
    /// Set when the method is a subscription: where its response and notifications go.
    sub: Option<SubRequest>,
    /// For other calls made with a sink: where the agent's answer goes (with the client's id),
    /// written there by the link's reader as it arrives (no hop through the waiting call); the
    /// call then gets [`Reply::Delivered`]. Unsubscribe calls keep their answer for the caller
    /// (it forgets the subscription first).
    direct: Option<(ClientSink, Id)>,
    method: String,
    /// The request, to send again on a new link (idempotent calls only).
    frame: Vec<u8>,
    idempotent: bool,
    /// The link generation it was handed to; `None` while it waits for a link.
    sent: Option<u64>,
}

/// A client's subscribe call in flight.
struct SubRequest {
    sink: ClientSink,
    /// The client's own request id (the response goes to the sink with it).
    client_id: Id,
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
pub struct State {
    pending: HashMap<u64, Pending>,
    subs: HashMap<SubscriptionId, Sub>,
    /// Notifications that arrived before their subscription's response (bounded).
    orphans: HashMap<SubscriptionId, Vec<Vec<u8>>>,
    orphan_count: usize,
    pub dead: Option<String>,
    /// pii closed the link on purpose (its end is not a warning).
    pub closing: bool,
    /// The current link's generation and writer (`None` while reconnecting).
    gen: u64,
    pub out: Option<mpsc::UnboundedSender<WriterMsg>>,
    reconnecting: bool,
    pub child: Option<tokio::process::Child>,
    /// What `hello` sent, to say it again on a new link.
    pub hello: Option<Hello>,
    /// The roots the first `hello` answered (project, sandbox): a new agent must say the same.
    pub roots: Option<(String, String)>,
    pub grace_ms: Option<u64>,
    pub ticket: Option<SessionTicket>,
    /// The highest notification seq received, the one acknowledged, bytes since.
    pub last_seq: u64,
    acked: u64,
    unacked_bytes: usize,
    pub stats: LinkStats,
}

impl State {
    /// A `session.ack` frame if one is due.
    fn ack_frame(&mut self, force: bool) -> Option<Vec<u8>> {
        if self.last_seq > self.acked && (force || self.unacked_bytes >= ACK_EVERY) {
            self.acked = self.last_seq;
            self.unacked_bytes = 0;
            let ack = Notification::new::<SessionAck>(&AckParams { seq: self.acked });
            Message::from(ack).to_frame().ok()
        } else {
            None
        }
    }

    #[cfg(test)]
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
    }

    #[cfg(test)]
    pub fn has_subscriptions(&self) -> bool {
        !self.subs.is_empty()
    }
}

const MAX_ORPHANS: usize = 4096;

/// What the reconnect loop is: called with the multiplexer, how to open links, and when the
/// outage began.
pub type Recover = fn(Arc<Inner>, Arc<dyn Reconnect>, Instant);

pub struct Inner {
    state: Mutex<State>,
    next_id: AtomicU64,
    pub timing: Timing,
    pub dead_tx: tokio::sync::watch::Sender<bool>,
    pub reconnect: Mutex<Option<Arc<dyn Reconnect>>>,
    recover: Recover,
}

impl Inner {
    /// A multiplexer on its first link.
    pub fn start(link: Link, timing: Timing, recover: Recover) -> Arc<Inner> {
        let (dead_tx, _) = tokio::sync::watch::channel(false);
        let inner = Arc::new(Inner {
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
            timing,
            dead_tx,
            reconnect: Mutex::new(None),
            recover,
        });
        let (gen, rx) = {
            let mut st = inner.lock();
            let (tx, rx) = mpsc::unbounded_channel();
            st.out = Some(tx);
            (st.gen, rx)
        };
        start_link(&inner, link, rx, gen);
        inner
    }

    pub fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A fresh request id.
    pub fn next_id(&self) -> u64 {
        self.next_id.fetch_add(1, Ordering::Relaxed)
    }

    /// `Session::call` (its contract is documented there).
    pub async fn call(
        &self,
        method: &str,
        params: Option<&RawValue>,
        sink: Option<(ClientSink, Id)>,
    ) -> Reply {
        let id = self.next_id();
        let req = Request::raw(Id::num(id), method, params.map(RawValue::to_owned));
        let bytes = match Message::Request(req).to_frame() {
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
            // An unsubscribe's caller forgets the subscription before it answers the client.
            None if protocol::SUBSCRIPTIONS.iter().any(|s| s.2 == method) => (None, None),
            None => (None, sink),
        };
        if STAMPS.on() {
            let client = direct
                .as_ref()
                .map(|(_, c)| c)
                .or(sub.as_ref().map(|s| &s.client_id));
            if let Some(c) = client.and_then(Id::as_u64) {
                STAMPS.stamp_at(id, "client", c);
            }
        }
        {
            let mut st = self.lock();
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
                        Ok(()) => {
                            STAMPS.stamp(id, "mux_send");
                            (keep, Some(st.gen))
                        }
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
                self.lock().pending.remove(&id);
                Reply::error(
                    ErrorCode::Timeout,
                    &format!(
                        "`{method}` got no answer from the agent within {} ms (rpcTimeout)",
                        self.timing.rpc_timeout.as_millis()
                    ),
                )
            }
        }
    }

    fn timeout_for(&self, method: &str, params: Option<&RawValue>) -> Option<Duration> {
        let base = self.timing.rpc_timeout;
        if method == <protocol::methods::Run as protocol::Method>::NAME {
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
        (self.recover)(self.clone(), reconnect, Instant::now());
    }

    /// The link is gone for good.
    pub fn die(&self, why: String) {
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

    /// Put a handshaken link in place: resend what waits, restart the tasks. `fresh`: the
    /// agent's session is a new one (the old one's subscriptions ended).
    pub fn install(
        self: &Arc<Self>,
        mut link: Link,
        fresh: Option<SessionTicket>,
        new: bool,
        started: Instant,
    ) {
        let (tx, rx) = mpsc::unbounded_channel();
        let mut ended = vec![];
        let gen = {
            let mut st = self.lock();
            st.gen += 1;
            let gen = st.gen;
            if new {
                // A new agent session: the old one's processes and watches are gone.
                st.ticket = fresh;
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
            st.child = link.child.take();
            st.stats.reconnects += 1;
            st.stats.last_outage = Some(started.elapsed());
            gen
        };
        let msg = "the agent's session ended while the link was down (its grace period passed \
                   or the remote restarted); a new session started";
        for (key, sub) in ended {
            let _ = sub.sink.send(end_frame(&key, sub.notification, msg));
        }
        start_link(self, link, rx, gen);
    }

    /// Forget a subscription (after a successful unsubscribe).
    pub fn forget_subscription(&self, id: &SubscriptionId) {
        self.lock().subs.remove(id);
    }

    /// An answer from the agent; `payload` is a binary frame's.
    fn handle_response(&self, r: Response, payload: Option<Vec<u8>>) {
        let Some(id) = r.id.as_u64() else {
            tracing::warn!("agent sent a response with an unknown id: {}", r.id.get());
            return;
        };
        STAMPS.stamp(id, "link_read");
        let mut st = self.lock();
        let Some(p) = st.pending.remove(&id) else {
            tracing::debug!("response for id {id} nobody waits for (timed out?)");
            return;
        };
        let reply = match (r.result, payload) {
            (result, None) if p.direct.is_some() => {
                drop(st);
                let (sink, client_id) = p.direct.expect("checked");
                let reply = match result {
                    Ok(r) => Reply::Result(r),
                    Err(e) => Reply::Error(e),
                };
                let _ = sink.send(reply.to_frame(&client_id));
                let _ = p.tx.send(Reply::Delivered);
                return;
            }
            (Err(e), _) => Reply::Error(e),
            (Ok(header), Some(payload)) => {
                drop(st);
                let reply = match p.direct {
                    Some((sink, client_id)) => {
                        let m = Message::Binary {
                            response: Response {
                                id: client_id,
                                result: Ok(header),
                            },
                            payload,
                        };
                        // The payload came in a binary frame: it is within the cap.
                        match m.to_frame() {
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
            (Ok(r), None) => Reply::Result(r),
        };
        if let (Reply::Result(r), Some(sub)) = (&reply, p.sub) {
            if let Some(key) = SubscriptionId::from_raw(r) {
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

    fn handle_notification(&self, m: Message) {
        let Message::Notification(n) = &m else {
            return;
        };
        let frame = match m.to_frame() {
            Ok(f) => f,
            Err(e) => return tracing::warn!("agent notification `{}`: {e}", n.method),
        };
        let Some(item) = n.subscription() else {
            tracing::warn!("agent notification `{}` without a subscription", n.method);
            return;
        };
        let Some(key) = SubscriptionId::from_raw(item.subscription) else {
            return;
        };
        let last = item
            .item_type()
            .is_some_and(|t| t == "error" || (t == "exit" && n.method == "proc.event"));
        let mut st = self.lock();
        if let Some(seq) = item.seq {
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
            st.unacked_bytes += frame.len() - 1;
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
                    tracing::warn!(
                        "dropping notification for unknown subscription {}",
                        key.key()
                    );
                }
            }
        }
    }
}

impl LinkEvents for Inner {
    fn current(&self) -> u64 {
        self.lock().gen
    }

    fn watched(&self, gen: u64) -> bool {
        let st = self.lock();
        st.dead.is_none() && st.gen == gen && !st.reconnecting
    }

    fn timing(&self) -> Timing {
        self.timing
    }

    fn frame(&self, frame: Frame) {
        match Message::from_frame(frame) {
            Ok(Some(Message::Response(r))) => self.handle_response(r, None),
            Ok(Some(Message::Binary { response, payload })) => {
                self.handle_response(response, Some(payload))
            }
            Ok(Some(m @ Message::Notification(_))) => self.handle_notification(m),
            Ok(Some(Message::Request(r))) => {
                tracing::warn!("agent sent a request `{}`; pii serves none", r.method)
            }
            Ok(None) => {}
            // A binary frame that is not a result is a bug: dropped (a waiting call then times
            // out, as for any lost answer).
            Err(e) => tracing::warn!("agent sent a frame that is not JSON-RPC: {e}"),
        }
    }

    fn heartbeat(&self) -> Vec<u8> {
        self.lock().ack_frame(true).unwrap_or_default()
    }

    fn lost(self: Arc<Self>, gen: u64, why: String) {
        self.link_lost(gen, why)
    }
}

/// The final `error` item of a subscription whose link is gone.
fn end_frame(key: &SubscriptionId, notification: &str, msg: &str) -> Vec<u8> {
    // Both ProcEvent and WatchEvent end with an `error` item carrying an Errno.
    let item = serde_json::json!({
        "type": "error",
        "error": {"code": "EIO", "syscall": "read", "detail": msg},
    });
    let item = serde_json::value::to_raw_value(&item).expect("a json! value serializes");
    Message::from(Notification::item_raw(notification, key, &item))
        .to_frame()
        .unwrap_or_default()
}

/// Start link `gen`: its reader and writer tasks, and its watchdog.
fn start_link(inner: &Arc<Inner>, link: Link, rx: mpsc::UnboundedReceiver<WriterMsg>, gen: u64) {
    let (seen, bytes) = link::spawn(inner, link, rx, gen);
    tokio::spawn(watchdog::run(Arc::downgrade(inner), seen, bytes, gen));
}
