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

//!
//! The rooms: [`link`] (one link's byte streams and its reader and writer tasks), [`watchdog`]
//! (a link's liveness), [`mux`] (calls, subscriptions, acks: what survives a link), and
//! [`reconnect`] (backoff and the resuming handshake). This file is the handle pii uses.

mod link;
mod mux;
mod reconnect;
mod watchdog;

pub use link::{Activity, Link, Reconnect, Timing};
pub use mux::{ClientSink, LinkStats, Reply};
pub use reconnect::SessionError;

use mux::Inner;
use protocol::hops::STAMPS;
use protocol::methods::{HelloCall, SessionEnd, SessionHops};
use protocol::rpc::{parse_result, Id, SubscriptionId};
use protocol::{Hello, HelloResult, Method};
use serde_json::value::RawValue;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufRead, AsyncWrite};

/// A local file: when set, pii (and through `session.hops` the agent) records per-hop stamps
/// of every call and appends them there at the end (`protocol::hops`; the preload appends its own).
pub const HOPS_ENV: &str = "PI_BRIDGE_HOPS";

/// A handle on the agent link; cheap to clone.
#[derive(Clone)]
pub struct Session {
    inner: Arc<Inner>,
}

impl Session {
    /// Start the link on a reader positioned just after the magic line.
    pub fn start<R, W>(
        reader: R,
        writer: W,
        last_activity: Option<Arc<std::sync::atomic::AtomicU64>>,
        timing: Timing,
    ) -> Session
    where
        R: AsyncBufRead + Unpin + Send + 'static,
        W: AsyncWrite + Unpin + Send + 'static,
    {
        if std::env::var_os(HOPS_ENV).is_some_and(|f| !f.is_empty()) {
            STAMPS.set(true);
        }
        let link = Link {
            reader: Box::new(reader),
            writer: Box::new(writer),
            activity: last_activity,
            child: None,
        };
        Session {
            inner: Inner::start(link, timing, reconnect::recover),
        }
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

    /// `hello`: the first call. With a `gate`, the agent checks the project root against it
    /// and an answer without that check is refused (`HelloResult::trust`).
    pub async fn hello(
        &self,
        root: &str,
        sandbox_root: Option<&str>,
        gate: Option<&protocol::trust::Gate>,
    ) -> Result<HelloResult, SessionError> {
        let params = Hello {
            protocol: protocol::PROTOCOL_VERSION,
            client_version: protocol::VERSION.to_string(),
            root: root.to_string(),
            sandbox_root: sandbox_root.map(str::to_string),
            resume: None,
            grace_ms: self.inner.lock().grace_ms,
            gate: gate.cloned(),
        };
        let h = match self.call_typed::<HelloCall>(&params).await {
            Ok(h) => h,
            Err(Reply::Error(e)) => return Err(SessionError::rpc(HelloCall::NAME, e)),
            Err(_) => {
                return Err(SessionError::BadResult {
                    method: HelloCall::NAME.into(),
                    msg: "not a subscription".into(),
                })
            }
        };
        if params.gate.is_some() && h.trust.is_none() {
            return Err(SessionError::BadResult {
                method: HelloCall::NAME.into(),
                msg: "the agent did not answer the trust check pii asked for (`trust`), so pii \
                      cannot tell what the remote project would run here; refusing to start"
                    .into(),
            });
        }
        if STAMPS.on() {
            // The agent's stamps too (taken back at `shutdown`); no answer means none.
            let on = protocol::hops::HopsParams { on: true };
            if let Err(e) = self.request::<SessionHops>(&on).await {
                tracing::warn!("{HOPS_ENV}: the agent records no stamps: {}", e.message);
            }
        }
        let mut st = self.inner.lock();
        st.hello = Some(params);
        st.ticket = h.session.clone();
        st.roots = Some((h.facts.project_root.clone(), h.facts.sandbox_root.clone()));
        Ok(h)
    }

    /// A typed call of method `M` (pii's own calls): its result, or its error.
    pub async fn request<M: Method>(
        &self,
        params: &M::Params,
    ) -> Result<M::Result, protocol::rpc::ErrorObject> {
        match self.call_typed::<M>(params).await {
            Ok(r) => Ok(r),
            Err(Reply::Error(e)) => Err(e),
            Err(_) => Err(protocol::rpc::ErrorObject::new(
                protocol::ErrorCode::InvalidRequest,
                format!("`{}`: unexpected subscription", M::NAME),
            )),
        }
    }

    async fn call_typed<M: Method>(&self, params: &M::Params) -> Result<M::Result, Reply> {
        let raw = serde_json::value::to_raw_value(params).expect("protocol params serialize");
        match self.call(M::NAME, Some(&raw), None).await {
            Reply::Result(r) => parse_result::<M::Result>(M::NAME, &Ok(r)).map_err(Reply::Error),
            other => Err(other),
        }
    }

    /// Whether the link is dead for good, and why.
    pub fn dead_reason(&self) -> Option<String> {
        self.inner.lock().dead.clone()
    }

    /// Resolves when the link is dead for good.
    #[cfg(test)]
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
            let _ = out.send(link::WriterMsg::Close);
        }
    }

    /// A clean end: `session.end` (so the agent kills the session's processes at once), close
    /// the link, and wait up to `wait` for the process carrying it (then kill it).
    pub async fn shutdown(&self, wait: Duration) -> Option<std::process::ExitStatus> {
        if STAMPS.on() && self.inner.lock().out.is_some() {
            self.write_hops().await;
        }
        if self.inner.lock().out.is_some() {
            let end = self.request::<SessionEnd>(&protocol::Empty);
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

    /// `PI_BRIDGE_HOPS`: append pii's stamps and the agent's to the file, one `<id> <hop> <ns>`
    /// line each (see `protocol::hops`).
    async fn write_hops(&self) {
        let Some(file) = std::env::var_os(HOPS_ENV) else {
            return;
        };
        let off = protocol::hops::HopsParams { on: false };
        let agent = self.request::<SessionHops>(&off).await.unwrap_or_default();
        let mut text = String::new();
        for s in STAMPS.take().into_iter().chain(agent) {
            text.push_str(&format!("{} {} {}\n", s.id, s.hop, s.ns));
        }
        let written = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&file)
            .and_then(|mut f| std::io::Write::write_all(&mut f, text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!("{HOPS_ENV}: {}: {e}", std::path::Path::new(&file).display());
        }
    }

    /// Call `method` with raw params (a client's call, forwarded). If `sink` is given, the
    /// agent's answer is written to `sink` (with `client_id`) as it arrives, followed for a
    /// subscription by its notifications, and [`Reply::Delivered`] is returned; an unsubscribe
    /// call's answer, and errors pii makes itself (timeout, lost link), are returned. Never
    /// panics, never hangs past the rpc timeout (except `proc.run` without `timeoutMs`, which
    /// may run as long as it runs).
    pub async fn call(
        &self,
        method: &str,
        params: Option<&RawValue>,
        sink: Option<(ClientSink, Id)>,
    ) -> Reply {
        self.inner.call(method, params, sink).await
    }

    /// Forget a subscription (after a successful unsubscribe).
    pub fn forget_subscription(&self, id: &SubscriptionId) {
        self.inner.forget_subscription(id)
    }
}

#[cfg(test)]
pub(crate) mod tests;
