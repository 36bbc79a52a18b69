//! The agent's output: every frame it sends goes through one router task ([`Out`]).
//! Notifications get the session-wide `seq` and stay in a replay buffer until the client
//! acknowledges them; at most [`REPLAY_BOUND`] bytes wait unacknowledged, after which producers
//! wait for credit (a process then blocks on its pipe: output is paused, never dropped). The
//! router writes to the CURRENT connection, which a resume swaps (`resume`); on a swap it first
//! writes the resume's `hello` answer, then replays every kept notification after the client's
//! `lastSeq`.

use protocol::rpc::{ErrorObject, Message, Response};
use protocol::session::REPLAY_BOUND;
use protocol::ErrorCode;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};

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

    /// A frame as it is (a heartbeat echo, a relayed frame): to the current connection, not
    /// kept.
    pub async fn frame(&self, f: Box<str>) -> bool {
        self.tx.send(HubMsg::Frame(Wire::Text(f))).await.is_ok()
    }

    /// An answer: to the current connection, not kept. One over the frame cap is replaced by a
    /// `FrameTooLarge` error for the same id.
    pub async fn respond(&self, r: Response) -> bool {
        let text = Message::Response(r).to_json();
        if text.len() <= protocol::MAX_FRAME {
            return self.frame(text.into()).await;
        }
        let Ok(Message::Response(r)) = Message::parse(&text) else {
            return false;
        };
        let msg = format!(
            "the response ({} bytes) exceeds the {}-byte frame limit",
            text.len(),
            protocol::MAX_FRAME
        );
        let err = Response::err(r.id, ErrorObject::new(ErrorCode::FrameTooLarge, msg));
        self.frame(Message::Response(err).to_json().into()).await
    }

    /// An answer with raw bytes after it (a binary frame, `protocol::frame`): like
    /// [`Out::respond`] (an answer is never replayed, so seq and replay are not involved).
    pub async fn binary(&self, r: Response, payload: Vec<u8>) -> bool {
        let id = r.id.clone();
        match (Message::Binary {
            response: r,
            payload,
        })
        .to_frame()
        {
            Ok(b) => self.encoded(b).await,
            Err(e) => {
                let e = ErrorObject {
                    code: -32603,
                    message: e.to_string(),
                    data: None,
                };
                self.respond(Response::err(id, e)).await
            }
        }
    }

    /// An encoded binary frame (relayed as it came).
    pub async fn encoded(&self, f: Vec<u8>) -> bool {
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
