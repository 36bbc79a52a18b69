//! The serve loop: one session's connections, read and answered.
//!
//! [`serve`] writes the magic line, then reads newline-delimited JSON-RPC frames. Each request
//! runs in a task of its own (a slow call never blocks the others) through the method table
//! ([`crate::methods`], dispatched by [`crate::rpc`]), and every answer and notification goes
//! through the session's one output ([`Out`]), written by one writer task per connection. A
//! blank line is a heartbeat and is echoed at once. Every bad input gets a JSON-RPC error and the
//! loop goes on; only the end of the input ends the session (or, after a dropped link, its grace
//! period: [`crate::resume`]), after every process group the agent started was killed.

use crate::agent::{Agent, Table};
use crate::out::{Out, Wire};
use crate::resume;
use protocol::hops::{self, STAMPS};
use protocol::methods::SessionAck;
use protocol::rpc::{ErrorObject, Message, Response};
use protocol::{ErrorCode, Method};
use std::sync::Arc;
#[cfg(test)]
use tokio::io::BufReader;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, BufWriter};
use tokio::sync::mpsc;

/// Serve one session, first on `reader`/`writer`. The session ends when its input ends after
/// `session.end` (or before any `hello`); when it ends otherwise the link dropped, and the
/// session waits up to its grace period for a resume (a new connection via the socket, see
/// [`resume`]) before its processes are killed.
pub async fn serve<R, W>(reader: R, writer: W) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    serve_with_nonce(reader, writer, None).await
}

/// [`serve`], echoing the client's connection nonce in the magic line (`protocol::hello`).
pub async fn serve_with_nonce<R, W>(
    reader: R,
    writer: W,
    nonce: Option<String>,
) -> anyhow::Result<()>
where
    R: AsyncRead + Unpin + Send + 'static,
    W: AsyncWrite + Unpin + Send + 'static,
{
    let out = Out::start();
    let agent = Agent::new(out.clone());
    let module = Arc::new(crate::methods::table());
    let _ = agent.table.set(module.clone());
    let (incoming_tx, mut incoming_rx) = mpsc::channel::<resume::Incoming>(4);
    agent.life.set_incoming(incoming_tx);
    let (conn_tx, conn_rx) = mpsc::unbounded_channel::<Wire>();
    // The announcement is MAGIC_LINE itself behind `black_box` (the binary then holds the line
    // verbatim, which is how pii and `scripts/dist.sh --check` read its release without running
    // it), with this connection's nonce before the newline.
    let magic = protocol::hello::announcement(nonce.as_deref());
    let writer_task = tokio::spawn(write_loop(writer, Some(magic), conn_rx));
    out.attach(conn_tx, None, None).await;
    // Probe the host while the client is still getting ready: `hello` then finds it done.
    {
        let agent = agent.clone();
        tokio::spawn(async move {
            agent.probe().await;
        });
    }
    let frames = resume::frames_of(Box::new(reader));
    let mut current = tokio::spawn(read_conn(
        frames,
        module.clone(),
        agent.clone(),
        out.clone(),
        true,
    ));
    loop {
        tokio::select! {
            _ = &mut current => {
                if agent.life.ended() || !agent.life.resumable() {
                    tracing::debug!("input closed; shutting down");
                    break;
                }
                let grace = agent.life.grace();
                tracing::info!(
                    "link dropped; keeping the session for {grace:?} ({} notifications unacknowledged)",
                    out.unacked()
                );
                tokio::select! {
                    inc = incoming_rx.recv() => match inc {
                        Some(inc) => current = attach(inc, &module, &agent, &out).await,
                        None => break,
                    },
                    _ = tokio::time::sleep(grace) => {
                        tracing::info!("no resume within {grace:?}; ending the session");
                        break;
                    }
                }
            }
            inc = incoming_rx.recv() => {
                // A resume while the old link still looks open to us: it is dead to the client.
                if let Some(inc) = inc {
                    current.abort();
                    current = attach(inc, &module, &agent, &out).await;
                }
            }
        }
    }
    current.abort();
    agent.shutdown().await;
    out.detach().await;
    // Let queued replies out, but never wait on subscriptions that outlive the input.
    let _ = tokio::time::timeout(std::time::Duration::from_millis(200), writer_task).await;
    Ok(())
}

/// Make an accepted resume the session's connection: answer its `hello`, replay, read it.
async fn attach(
    inc: resume::Incoming,
    module: &Arc<Table>,
    agent: &Arc<Agent>,
    out: &Out,
) -> tokio::task::JoinHandle<()> {
    let (tx, rx) = mpsc::unbounded_channel::<Wire>();
    tokio::spawn(write_loop(inc.writer, None, rx));
    let first = Message::from(resume::resumed_hello(&agent.life, inc.hello_id)).to_json();
    tracing::info!("session resumed after seq {}", inc.last_seq);
    out.attach(tx, Some(first.into()), Some(inc.last_seq)).await;
    tokio::spawn(read_conn(
        inc.frames,
        module.clone(),
        agent.clone(),
        out.clone(),
        false,
    ))
}

/// Read one connection's frames until it ends. With `relay_ok` (a fresh agent's stdin), a
/// first `hello` that resumes a session turns this agent into a relay to that session.
async fn read_conn(
    mut frames: resume::Frames,
    module: Arc<Table>,
    agent: Arc<Agent>,
    out: Out,
    relay_ok: bool,
) {
    let error = |code: ErrorCode, msg: String| {
        Message::from(Response::err(
            protocol::rpc::Id::null(),
            ErrorObject::new(code, msg),
        ))
        .to_json()
        .into()
    };
    loop {
        let got = frames.next_frame().await;
        let read_at = if STAMPS.on() { hops::now_ns() } else { 0 };
        let line = match got {
            Ok(Some(line)) => line,
            Ok(None) => break,
            Err(e @ protocol::FrameError::TooLarge { .. }) => {
                out.frame(error(ErrorCode::FrameTooLarge, e.to_string()))
                    .await;
                continue;
            }
            Err(e @ protocol::FrameError::NotUtf8) => {
                out.frame(error(ErrorCode::ParseError, e.to_string())).await;
                continue;
            }
            Err(e @ (protocol::FrameError::Io(_) | protocol::FrameError::BadBinary(_))) => {
                tracing::debug!("reading input: {e}");
                break;
            }
        };
        if line.trim().is_empty() {
            if !out.frame("".into()).await {
                break;
            }
            continue;
        }
        let req = match Message::parse(&line) {
            Ok(Message::Request(req)) => req,
            Ok(Message::Notification(n)) => {
                // JSON-RPC forbids a reply. The only notification the agent takes is the ack.
                if n.method == SessionAck::NAME {
                    match protocol::rpc::parse_params::<protocol::session::AckParams>(
                        n.params.as_deref(),
                    ) {
                        Ok(a) => out.ack(a.seq).await,
                        Err(e) => tracing::debug!("bad session.ack: {e}"),
                    }
                } else {
                    tracing::debug!("ignoring notification {:?}", n.method);
                }
                continue;
            }
            Ok(Message::Response(r) | Message::Binary { response: r, .. }) => {
                let e = ErrorObject::new(ErrorCode::InvalidRequest, "the agent serves no answers");
                out.respond(Response::err(r.id, e)).await;
                continue;
            }
            Err(invalid) => {
                out.respond(invalid.response()).await;
                continue;
            }
        };
        if relay_ok && !agent.is_ready() {
            if let Some(r) = resume::resume_request(&req) {
                let home = agent.probe().await.home.clone();
                match resume::relay(&req, &r, &home, &mut frames, &out).await {
                    resume::Relay::Done => break,
                    resume::Relay::Gone(why) => {
                        tracing::info!("resume refused: {why}");
                        let msg = format!("cannot resume: {why}; start a new session");
                        let e = ErrorObject::new(ErrorCode::SessionGone, msg);
                        out.respond(Response::err(req.id, e)).await;
                        continue;
                    }
                }
            }
        }
        if let Some(id) = req.id.as_u64() {
            STAMPS.stamp_at(id, "ag_read", read_at);
        }
        tokio::spawn(crate::rpc::dispatch(module.clone(), agent.clone(), req));
    }
}

/// A connection's single writer: the magic line first (on stdout), then frames, flushed
/// whenever the queue runs dry.
async fn write_loop<W: AsyncWrite + Unpin>(
    writer: W,
    magic: Option<String>,
    mut rx: mpsc::UnboundedReceiver<Wire>,
) {
    async fn put<W: AsyncWrite + Unpin>(
        w: &mut BufWriter<W>,
        f: Wire,
        written: &mut Vec<u64>,
    ) -> std::io::Result<()> {
        match f {
            Wire::Text(t) => {
                if STAMPS.on() {
                    written.extend(hops::frame_id(t.as_bytes()));
                }
                w.write_all(t.as_bytes()).await?;
                w.write_all(b"\n").await
            }
            // Bigger than the buffer: BufWriter flushes what it holds and writes this directly.
            Wire::Binary(b) => w.write_all(&b).await,
        }
    }
    let mut w = BufWriter::with_capacity(256 * 1024, writer);
    let res: std::io::Result<()> = async {
        if let Some(magic) = magic {
            w.write_all(magic.as_bytes()).await?;
            w.flush().await?;
        }
        let mut written = Vec::new(); // ids of the answers about to be flushed (`PI_BRIDGE_HOPS`)
        while let Some(frame) = rx.recv().await {
            put(&mut w, frame, &mut written).await?;
            while let Ok(frame) = rx.try_recv() {
                put(&mut w, frame, &mut written).await?;
            }
            for id in written.drain(..) {
                STAMPS.stamp(id, "ag_write");
            }
            w.flush().await?;
        }
        w.shutdown().await
    }
    .await;
    if let Err(e) = res {
        tracing::debug!("writing stdout: {e}");
    }
}

#[cfg(test)]
pub(crate) mod tests;
