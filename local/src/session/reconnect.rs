//! Reconnecting after a dropped link: backoff, a new link from the [`Reconnect`], and the
//! resuming `hello` on it before it carries anything else (see `protocol::session`).

use super::link::{Link, Reconnect};
use super::mux::Inner;
use protocol::methods::HelloCall;
use protocol::rpc::{ErrorObject, Id, Message, Request};
use protocol::session::Resume;
use protocol::{ErrorCode, FrameReader, Hello, HelloResult, Method};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

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

impl SessionError {
    pub fn rpc(method: &str, e: ErrorObject) -> Self {
        SessionError::Rpc {
            method: method.into(),
            code: e.code.into(),
            message: e.message,
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

/// The multiplexer's [`super::mux::Recover`]: reconnect in a task of its own.
pub fn recover(inner: Arc<Inner>, reconnect: Arc<dyn Reconnect>, started: Instant) {
    tokio::spawn(run(inner, reconnect, started));
}

/// Reconnect with backoff until a link is up (or the session is closed).
async fn run(inner: Arc<Inner>, reconnect: Arc<dyn Reconnect>, started: Instant) {
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
                inner.install(link, fresh.and_then(|h| h.session), new, started);
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
            Err(e) if e.is(ErrorCode::SessionGone) => {
                tracing::warn!("the agent's session is gone: {}", e.message);
            }
            Err(e) => return Err(SessionError::rpc(HelloCall::NAME, e)),
        }
    }
    match hello_on(&mut link, inner, &hello, deadline).await? {
        Ok(h) => Ok((link, Some(same_roots(inner, h)?))),
        Err(e) => Err(SessionError::rpc(HelloCall::NAME, e)),
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
) -> Result<Result<HelloResult, ErrorObject>, SessionError> {
    let id = Id::num(inner.next_id());
    let frame = Message::from(Request::new::<HelloCall>(id.clone(), params))
        .to_frame()
        .map_err(|e| SessionError::Link(e.to_string()))?;
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
            match Message::parse(&text) {
                Ok(Message::Response(r)) if r.id == id => return Ok(r),
                _ => tracing::warn!("unexpected frame before the hello answer: {text:.200}"),
            }
        }
    };
    let r = tokio::time::timeout(deadline, io)
        .await
        .map_err(|_| SessionError::Link(format!("no answer to hello within {deadline:?}")))?
        .map_err(|e| SessionError::Link(e.to_string()))?;
    match r.result::<HelloCall>() {
        Ok(h) => Ok(Ok(h)),
        Err(e) if r.result.is_err() => Ok(Err(e)),
        Err(e) => Err(SessionError::BadResult {
            method: "hello".into(),
            msg: e.message,
        }),
    }
}
