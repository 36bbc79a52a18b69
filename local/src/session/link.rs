//! One link to an agent: the byte streams, the writer task (frames, heartbeats and their acks)
//! and the reader task (frames to whoever owns the link). The link knows nothing of calls or
//! subscriptions: it reports to its owner through [`LinkEvents`] (the multiplexer, `mux`).

use protocol::frame::Frame;
use protocol::hops::STAMPS;
use protocol::FrameReader;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};
use tokio::io::{AsyncBufRead, AsyncRead, AsyncWriteExt, ReadBuf};
use tokio::sync::mpsc;

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

/// A new link to a (new) agent, positioned just after its magic line.
pub struct Link {
    pub reader: Box<dyn AsyncBufRead + Unpin + Send>,
    pub writer: protocol::frame::BoxWrite,
    /// Counts bytes as they arrive (see [`Activity`]).
    pub activity: Option<Arc<AtomicU64>>,
    /// The process carrying the link (ssh), killed when the link is replaced or closed.
    pub child: Option<tokio::process::Child>,
}

/// Opens new links (ssh mode): must never prompt on the terminal (pi's TUI owns it).
pub trait Reconnect: Send + Sync + 'static {
    fn connect(&self) -> Pin<Box<dyn Future<Output = Result<Link, String>> + Send + '_>>;
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

    /// A counter that changes whenever bytes arrive (for `Session::start`).
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

/// What the writer task is given.
pub enum WriterMsg {
    Frame(Vec<u8>),
    Close,
}

/// What a link reports to its owner, and asks of it.
pub trait LinkEvents: Send + Sync + 'static {
    /// The generation of the current link (a replaced link's tasks stop).
    fn current(&self) -> u64;
    /// Whether link `gen` is current, alive and not being replaced (the watchdog's question).
    fn watched(&self, gen: u64) -> bool;
    fn timing(&self) -> Timing;
    /// One frame from the agent (not a heartbeat echo).
    fn frame(&self, frame: Frame);
    /// What goes with a heartbeat (a due acknowledgement), before its blank line.
    fn heartbeat(&self) -> Vec<u8>;
    /// Link `gen` died.
    fn lost(self: Arc<Self>, gen: u64, why: String);
}

/// Start the reader and writer tasks of link `gen`. Returns what its watchdog watches: the
/// frames read (`seen`) and the bytes that arrived (`bytes`); the owner starts the watchdog.
pub fn spawn<E: LinkEvents>(
    events: &Arc<E>,
    link: Link,
    rx: mpsc::UnboundedReceiver<WriterMsg>,
    gen: u64,
) -> (Arc<AtomicU64>, Arc<AtomicU64>) {
    let bytes = link.activity.unwrap_or_else(|| Arc::new(AtomicU64::new(0)));
    let seen = Arc::new(AtomicU64::new(0));
    tokio::spawn(writer_task(link.writer, rx, Arc::downgrade(events), gen));
    tokio::spawn(reader_task(link.reader, events.clone(), seen.clone(), gen));
    (seen, bytes)
}

async fn writer_task<E: LinkEvents>(
    mut writer: protocol::frame::BoxWrite,
    mut rx: mpsc::UnboundedReceiver<WriterMsg>,
    events: Weak<E>,
    gen: u64,
) {
    let heartbeat = match events.upgrade() {
        Some(e) => e.timing().heartbeat,
        None => return,
    };
    let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + heartbeat, heartbeat);
    let mut buf = Vec::new();
    loop {
        let msg = tokio::select! {
            m = rx.recv() => m,
            _ = tick.tick() => {
                let mut f = events.upgrade().map(|e| e.heartbeat()).unwrap_or_default();
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
            STAMPS.stamp_frames(&buf, "link_write");
            let r = async {
                writer.write_all(&buf).await?;
                writer.flush().await
            }
            .await;
            buf.clear();
            if let Err(e) = r {
                if let Some(ev) = events.upgrade() {
                    ev.lost(gen, format!("writing to the agent failed: {e}"));
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

async fn reader_task<E: LinkEvents>(
    reader: Box<dyn AsyncBufRead + Unpin + Send>,
    events: Arc<E>,
    seen: Arc<AtomicU64>,
    gen: u64,
) {
    let epoch = Instant::now();
    let mut frames = FrameReader::new(reader);
    loop {
        let f = frames.next_item().await;
        seen.store(epoch.elapsed().as_millis() as u64 + 1, Ordering::Relaxed);
        if events.current() != gen {
            return; // replaced by a newer link
        }
        match f {
            Ok(Some(Frame::Text(text))) if text.trim().is_empty() => {} // heartbeat echo
            Ok(Some(frame)) => events.frame(frame),
            Ok(None) => {
                events.lost(
                    gen,
                    "the agent closed its output (it exited or the ssh connection ended)".into(),
                );
                return;
            }
            Err(e) if e.is_recoverable() => tracing::warn!("bad frame from the agent: {e}"),
            Err(e) => {
                events.lost(gen, format!("reading from the agent failed: {e}"));
                return;
            }
        }
    }
}
