//! A TCP proxy on 127.0.0.1 that adds latency to, cuts, or kills the connections it forwards.
//!
//! netem is not available in this kernel, so latency and link failures are simulated in user
//! space: point a client at [`DelayProxy::port`] instead of the server's port (for ssh:
//! [`crate::Sshd::ssh_config_via`]).
//!
//! Each accepted connection gets its own upstream connection to `target`, and each direction is a
//! reader thread and a writer thread joined by a queue. The reader stamps every chunk it reads with
//! "read time + one-way delay"; the writer sends chunks in order, each no earlier than its stamp.
//! So the added delay is per chunk, not per byte, bandwidth is not limited, and byte order is
//! preserved even when [`DelayProxy::set_delay`] lowers the delay mid-stream.
//!
//! Link states:
//! - [`DelayProxy::cut`]: a dead link. TCP connections stay open (both ends see nothing), every
//!   byte either side sends meanwhile is read and discarded, and chunks still queued are discarded
//!   when their turn comes. New connections are accepted but black-holed too. Because bytes are
//!   lost, a protocol with integrity checks (ssh) fails on the first bytes after [`restore`]; that
//!   is what a reconnect has to cope with.
//! - [`DelayProxy::pause`]: a stalled link that loses nothing (like TCP retransmitting through a
//!   short outage): bytes are held and delivered, in order, after [`DelayProxy::restore`].
//! - [`DelayProxy::restore`]: forwarding resumes.
//! - [`DelayProxy::kill_connections`]: closes every current connection (both sides see EOF/RST).
//!
//! Dropping the proxy stops the listener and closes every connection.
//!
//! [`restore`]: DelayProxy::restore

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

const FORWARD: u8 = 0;
const CUT: u8 = 1;
const PAUSE: u8 = 2;

struct Shared {
    target: SocketAddr,
    delay_micros: AtomicU64,
    state: AtomicU8,
    stopping: AtomicBool,
    discarded: AtomicU64,
    forwarded: AtomicU64,
    accepted: AtomicU64,
    next_id: AtomicU64,
    /// Both sockets of every live connection, to close them from outside.
    conns: Mutex<HashMap<u64, [TcpStream; 2]>>,
}

impl Shared {
    fn delay(&self) -> Duration {
        Duration::from_micros(self.delay_micros.load(Ordering::Relaxed))
    }

    fn state(&self) -> u8 {
        self.state.load(Ordering::SeqCst)
    }
}

/// A running delay/cut proxy in front of one TCP target; see the module docs.
pub struct DelayProxy {
    shared: Arc<Shared>,
    port: u16,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl std::fmt::Debug for DelayProxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DelayProxy")
            .field("port", &self.port)
            .field("target", &self.shared.target)
            .field("one_way_delay", &self.shared.delay())
            .finish()
    }
}

impl DelayProxy {
    /// Listens on 127.0.0.1:0 and forwards every connection to `target`, adding `one_way_delay`
    /// in each direction (so a round trip gains twice that).
    pub fn start(target: SocketAddr, one_way_delay: Duration) -> DelayProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("DelayProxy: bind 127.0.0.1:0");
        let port = listener.local_addr().unwrap().port();
        let shared = Arc::new(Shared {
            target,
            delay_micros: AtomicU64::new(one_way_delay.as_micros() as u64),
            state: AtomicU8::new(FORWARD),
            stopping: AtomicBool::new(false),
            discarded: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            next_id: AtomicU64::new(0),
            conns: Mutex::new(HashMap::new()),
        });
        let acceptor = {
            let shared = shared.clone();
            thread::Builder::new()
                .name(format!("delay-proxy-{port}"))
                .spawn(move || accept_loop(listener, shared))
                .expect("spawn proxy acceptor")
        };
        DelayProxy {
            shared,
            port,
            acceptor: Some(acceptor),
        }
    }

    /// The proxy's port on 127.0.0.1.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// `127.0.0.1:<port>`.
    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// The one-way delay for chunks read from now on (chunks already queued keep theirs).
    pub fn set_delay(&self, one_way_delay: Duration) {
        self.shared
            .delay_micros
            .store(one_way_delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// The current one-way delay.
    pub fn delay(&self) -> Duration {
        self.shared.delay()
    }

    /// Dead link: forward nothing, discard everything sent meanwhile; connections stay open.
    pub fn cut(&self) {
        self.shared.state.store(CUT, Ordering::SeqCst);
    }

    /// Stalled link: forward nothing but keep every byte, delivered after [`DelayProxy::restore`].
    pub fn pause(&self) {
        self.shared.state.store(PAUSE, Ordering::SeqCst);
    }

    /// Forward again after [`DelayProxy::cut`] or [`DelayProxy::pause`].
    pub fn restore(&self) {
        self.shared.state.store(FORWARD, Ordering::SeqCst);
    }

    /// Closes every current connection, both towards the client and towards the target.
    /// The proxy keeps accepting new ones.
    pub fn kill_connections(&self) {
        let conns: Vec<[TcpStream; 2]> = self
            .shared
            .conns
            .lock()
            .unwrap()
            .drain()
            .map(|(_, s)| s)
            .collect();
        for [a, b] in conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
    }

    /// Bytes discarded because the link was cut (both directions).
    pub fn discarded_bytes(&self) -> u64 {
        self.shared.discarded.load(Ordering::SeqCst)
    }

    /// Bytes handed to the receiving socket (both directions).
    pub fn forwarded_bytes(&self) -> u64 {
        self.shared.forwarded.load(Ordering::SeqCst)
    }

    /// Connections accepted so far.
    pub fn accepted_connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Connections currently open.
    pub fn open_connections(&self) -> usize {
        self.shared.conns.lock().unwrap().len()
    }
}

impl Drop for DelayProxy {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        // Wake the blocking accept.
        let _ = TcpStream::connect_timeout(&self.addr(), Duration::from_secs(1));
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
        self.kill_connections();
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    for incoming in listener.incoming() {
        if shared.stopping.load(Ordering::SeqCst) {
            return;
        }
        let Ok(client) = incoming else { continue };
        let upstream = match TcpStream::connect(shared.target) {
            Ok(s) => s,
            Err(_) => continue, // dropping `client` closes it: the target refused
        };
        shared.accepted.fetch_add(1, Ordering::SeqCst);
        let _ = client.set_nodelay(true);
        let _ = upstream.set_nodelay(true);
        let id = shared.next_id.fetch_add(1, Ordering::SeqCst);
        let (Ok(c2), Ok(u2)) = (client.try_clone(), upstream.try_clone()) else {
            continue;
        };
        shared.conns.lock().unwrap().insert(id, [c2, u2]);
        let done = Arc::new(AtomicU8::new(0));
        for (from, to) in [
            (client.try_clone(), upstream.try_clone()),
            (Ok(upstream), Ok(client)),
        ] {
            let (Ok(from), Ok(to)) = (from, to) else {
                continue;
            };
            let shared = shared.clone();
            let done = done.clone();
            let _ = thread::Builder::new()
                .name("delay-proxy-pipe".into())
                .spawn(move || pipe(from, to, shared, id, done));
        }
    }
}

/// One direction of a connection: a reader (this thread) stamping chunks and a writer thread
/// delivering them in order once due.
fn pipe(mut from: TcpStream, to: TcpStream, shared: Arc<Shared>, id: u64, done: Arc<AtomicU8>) {
    let (tx, rx) = mpsc::channel::<(Instant, Vec<u8>)>();
    let writer = {
        let shared = shared.clone();
        let to = to.try_clone();
        thread::Builder::new()
            .name("delay-proxy-writer".into())
            .spawn(move || {
                if let Ok(to) = to {
                    deliver(rx, to, &shared)
                }
            })
    };
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if shared.state() == CUT {
                    shared.discarded.fetch_add(n as u64, Ordering::SeqCst);
                    continue;
                }
                let due = Instant::now() + shared.delay();
                if tx.send((due, buf[..n].to_vec())).is_err() {
                    break;
                }
            }
        }
    }
    drop(tx);
    if let Ok(w) = writer {
        let _ = w.join();
    }
    // Half-close towards the peer (EOF follows the data); the second direction to finish closes
    // everything and forgets the connection.
    let _ = to.shutdown(Shutdown::Write);
    if done.fetch_add(1, Ordering::SeqCst) == 1 {
        let _ = from.shutdown(Shutdown::Both);
        let _ = to.shutdown(Shutdown::Both);
        shared.conns.lock().unwrap().remove(&id);
    }
}

fn deliver(rx: mpsc::Receiver<(Instant, Vec<u8>)>, mut to: TcpStream, shared: &Shared) {
    while let Ok((due, chunk)) = rx.recv() {
        let now = Instant::now();
        if due > now {
            thread::sleep(due - now);
        }
        while shared.state() == PAUSE && !shared.stopping.load(Ordering::SeqCst) {
            thread::sleep(Duration::from_millis(1));
        }
        if shared.state() == CUT {
            shared
                .discarded
                .fetch_add(chunk.len() as u64, Ordering::SeqCst);
            continue;
        }
        // Counted before the write, so a peer that has read the bytes sees them counted.
        shared
            .forwarded
            .fetch_add(chunk.len() as u64, Ordering::SeqCst);
        // On error the receiver is gone: keep draining so the reader is not blocked on us.
        let _ = to.write_all(&chunk);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::BufRead;

    /// An echo server on 127.0.0.1 (one thread per connection), for the proxy's own tests.
    fn echo_server() -> SocketAddr {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                thread::spawn(move || {
                    let mut r = s.try_clone().unwrap();
                    let _ = std::io::copy(&mut r, &mut s);
                });
            }
        });
        addr
    }

    fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !cond() {
            assert!(Instant::now() < deadline, "timed out waiting for {what}");
            thread::sleep(Duration::from_millis(2));
        }
    }

    fn read_line(r: &mut std::io::BufReader<TcpStream>) -> String {
        let mut line = String::new();
        r.read_line(&mut line).unwrap();
        line
    }

    #[test]
    fn round_trip_is_delayed_at_least_twice_the_one_way_delay() {
        let proxy = DelayProxy::start(echo_server(), Duration::from_millis(40));
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        let t = Instant::now();
        c.write_all(b"ping\n").unwrap();
        assert_eq!(read_line(&mut r), "ping\n");
        let rtt = t.elapsed();
        assert!(
            rtt >= Duration::from_millis(80),
            "round trip {rtt:?} < 2 × 40 ms"
        );
    }

    #[test]
    fn order_and_content_survive_delay_changes() {
        let proxy = DelayProxy::start(echo_server(), Duration::from_millis(30));
        let c = TcpStream::connect(proxy.addr()).unwrap();
        let mut w = c.try_clone().unwrap();
        let reader = thread::spawn(move || {
            let mut got = Vec::new();
            let mut c = c;
            c.read_to_end(&mut got).unwrap();
            got
        });
        let mut sent = Vec::new();
        for i in 0..200u32 {
            if i == 100 {
                // Later chunks are due earlier than queued ones: they must still come after.
                proxy.set_delay(Duration::ZERO);
            }
            let msg = format!("message {i} {}\n", "x".repeat((i * 37 % 500) as usize));
            w.write_all(msg.as_bytes()).unwrap();
            sent.extend_from_slice(msg.as_bytes());
        }
        // Big writes too: more than one read buffer at a time.
        let big: Vec<u8> = (0..300_000u32).map(|i| (i % 251) as u8).collect();
        w.write_all(&big).unwrap();
        sent.extend_from_slice(&big);
        w.shutdown(Shutdown::Write).unwrap();
        let got = reader.join().unwrap();
        assert_eq!(got.len(), sent.len());
        assert!(got == sent, "bytes reordered or changed");
    }

    #[test]
    fn cut_discards_and_restore_resumes_on_the_same_connection() {
        let proxy = DelayProxy::start(echo_server(), Duration::from_millis(5));
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        c.write_all(b"before\n").unwrap();
        assert_eq!(read_line(&mut r), "before\n");

        proxy.cut();
        c.write_all(b"lost\n").unwrap();
        wait_for("the cut link to swallow 5 bytes", || {
            proxy.discarded_bytes() >= 5
        });
        assert_eq!(proxy.open_connections(), 1, "a cut keeps connections open");
        proxy.restore();
        c.write_all(b"after\n").unwrap();
        assert_eq!(read_line(&mut r), "after\n", "cut data must be gone");
    }

    #[test]
    fn pause_holds_data_until_restore() {
        let proxy = DelayProxy::start(echo_server(), Duration::ZERO);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        c.write_all(b"one\n").unwrap();
        assert_eq!(read_line(&mut r), "one\n");
        let forwarded = proxy.forwarded_bytes();
        proxy.pause();
        c.write_all(b"two\n").unwrap();
        c.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut line = String::new();
        assert!(
            r.read_line(&mut line).is_err(),
            "paused link delivered {line:?}"
        );
        assert_eq!(proxy.forwarded_bytes(), forwarded);
        proxy.restore();
        c.set_read_timeout(None).unwrap();
        assert_eq!(read_line(&mut r), "two\n");
    }

    #[test]
    fn kill_connections_closes_both_sides_and_new_ones_work() {
        let proxy = DelayProxy::start(echo_server(), Duration::ZERO);
        let mut c = TcpStream::connect(proxy.addr()).unwrap();
        let mut r = std::io::BufReader::new(c.try_clone().unwrap());
        c.write_all(b"hi\n").unwrap();
        assert_eq!(read_line(&mut r), "hi\n");
        proxy.kill_connections();
        let mut rest = Vec::new();
        // EOF or reset: either way the connection is over.
        let _ = r.read_to_end(&mut rest);
        assert!(rest.is_empty());
        wait_for("the killed connection to be forgotten", || {
            proxy.open_connections() == 0
        });

        let mut c2 = TcpStream::connect(proxy.addr()).unwrap();
        let mut r2 = std::io::BufReader::new(c2.try_clone().unwrap());
        c2.write_all(b"again\n").unwrap();
        assert_eq!(read_line(&mut r2), "again\n");
        assert_eq!(proxy.accepted_connections(), 2);
    }

    #[test]
    fn drop_closes_connections_and_the_listener() {
        let proxy = DelayProxy::start(echo_server(), Duration::ZERO);
        let addr = proxy.addr();
        let c = TcpStream::connect(addr).unwrap();
        drop(proxy);
        let mut rest = Vec::new();
        let _ = (&c).read_to_end(&mut rest);
        assert!(rest.is_empty());
        assert!(
            TcpStream::connect(addr).is_err(),
            "the listener must be closed"
        );
    }

    #[test]
    fn ssh_through_the_proxy_reaches_the_fixture() {
        let sshd = crate::Sshd::start();
        let proxy = DelayProxy::start(sshd.addr(), Duration::from_millis(2));
        let config = sshd.ssh_config_via(proxy.port());
        let out = std::process::Command::new("ssh")
            .arg("-F")
            .arg(&config)
            .arg(sshd.alias())
            .arg("cat project/src/hello.txt")
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ssh via proxy: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(String::from_utf8_lossy(&out.stdout), crate::PROJECT_HELLO);
        assert_eq!(proxy.accepted_connections(), 1, "ssh bypassed the proxy");
        assert!(proxy.forwarded_bytes() > 0);
    }
}
