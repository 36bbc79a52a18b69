//! The session over in-memory agents: calls, subscriptions, binary answers, timeouts, the
//! watchdog, and reconnecting.

use super::*;
use protocol::frame::Frame;
use protocol::{ErrorCode, FrameReader};
use std::future::Future;
use std::pin::Pin;
use std::sync::Mutex;
use std::time::Instant;
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, DuplexStream};
use tokio::sync::mpsc;

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
                    let header = serde_json::json!({"jsonrpc":"2.0","id":id,"result":{"size":259}});
                    let f = protocol::frame::encode_binary(&header.to_string(), &payload).unwrap();
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
        Reply::Error(e) => panic!("error {e:?}"),
        Reply::Delivered => panic!("delivered"),
    }
}

fn error_code(r: Reply) -> i64 {
    match r {
        Reply::Error(e) => e.code as i64,
        Reply::Result(r) => panic!("result {}", r.get()),
        Reply::Delivered => panic!("delivered"),
    }
}

/// A `hello` that asked for the trust check and got an answer without it is refused: the notice
/// must never disappear because the agent did not say.
#[tokio::test]
async fn hello_without_the_asked_trust_check_is_refused() {
    let (s, _) = connect(fast());
    let gate = protocol::trust::Gate::new(None);
    let e = s.hello("~/app", None, Some(&gate)).await.unwrap_err();
    assert!(e.to_string().contains("trust check"), "{e}");
}

#[tokio::test]
async fn hello_and_concurrent_calls() {
    let (s, _) = connect(fast());
    let h = s.hello("~/app", None, None).await.unwrap();
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

/// A call made with a sink (the endpoint's) gets its answer written there by the link's reader,
/// with the client's own id, on that sink only; an unsubscribe's answer goes to its caller.
#[tokio::test]
async fn answers_go_to_the_callers_sink_with_its_own_id() {
    let (s, received) = connect(fast());
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let cid = |j: &str| Id::from_raw(RawValue::from_string(j.into()).unwrap()).unwrap();
    let pa = RawValue::from_string("[\"a\"]".into()).unwrap();
    let pb = RawValue::from_string("[\"b\"]".into()).unwrap();
    let (a, b) = tokio::join!(
        s.call("echo", Some(&pa), Some((tx_a.clone(), cid("7")))),
        s.call("echo", Some(&pb), Some((tx_b.clone(), cid("7")))),
    );
    assert!(matches!((a, b), (Reply::Delivered, Reply::Delivered)));
    assert_eq!(
        text(rx_a.recv().await.unwrap()),
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[\"a\"]}\n"
    );
    assert_eq!(
        text(rx_b.recv().await.unwrap()),
        "{\"jsonrpc\":\"2.0\",\"id\":7,\"result\":[\"b\"]}\n"
    );
    // The agent saw pii's ids, not the clients'.
    let seen = received.lock().unwrap().join("\n");
    assert!(!seen.contains("\"id\":7"), "{seen}");
    // An error answer too.
    assert!(matches!(
        s.call("fail", None, Some((tx_a.clone(), cid("\"x\""))))
            .await,
        Reply::Delivered
    ));
    let e = text(rx_a.recv().await.unwrap());
    assert!(
        e.starts_with("{\"jsonrpc\":\"2.0\",\"id\":\"x\",\"error\":"),
        "{e}"
    );
    // An unsubscribe's answer is its caller's (which forgets the subscription first).
    let p = RawValue::from_string("[\"s1\"]".into()).unwrap();
    assert!(matches!(
        s.call("proc.unsubscribe", Some(&p), Some((tx_a, cid("9"))))
            .await,
        Reply::Error(_)
    ));
    assert!(rx_a.try_recv().is_err() && rx_b.try_recv().is_err());
}

#[tokio::test]
async fn subscription_notifications_reach_the_creator_in_order() {
    let (s, _) = connect(fast());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let p = RawValue::from_string("{}".into()).unwrap();
    let cid = Id::from_raw(RawValue::from_string("\"c1\"".into()).unwrap()).unwrap();
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
    assert!(!s.inner.lock().has_subscriptions());
}

#[tokio::test]
async fn binary_answers_reach_the_client_with_its_id() {
    let (s, _) = connect(fast());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let cid = Id::from_raw(RawValue::from_string("\"h7\"".into()).unwrap()).unwrap();
    // Two in flight, then a JSON call after them on the same link: nothing gets mixed up.
    let one = RawValue::from_string("[1]".into()).unwrap();
    let n12 = Id::num(12);
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
    assert!(s.inner.lock().is_idle());
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
    let cid = Id::num(1);
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
    let cid = Id::num(1);
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

mod reconnect_tests {
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
                    serde_json::json!({"jsonrpc":"2.0","id":v["id"],"result":{"protocol":1,"agentVersion":"0.1.0","facts":super::facts()}})
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
        s.hello("/p", None, None).await.unwrap();
        s.set_reconnect(Arc::new(Again(second.clone())));
        let p = RawValue::from_string("{\"path\":\"/p/x\"}".into()).unwrap();
        let (s1, s2, p1, p2) = (s.clone(), s.clone(), p.clone(), p.clone());
        let stat = tokio::spawn(async move { s1.call("fs.stat", Some(&p1), None).await });
        let write = tokio::spawn(async move { s2.call("fs.write", Some(&p2), None).await });
        // The first agent is silent: the watchdog declares the link dead with both calls in
        // flight, and the session reconnects to the second agent.
        match write.await.unwrap() {
            Reply::Error(e) => {
                assert_eq!(e.code, ErrorCode::ConnectionLost.code(), "{e:?}");
                assert!(e.message.contains("not sent again"), "{e:?}");
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
