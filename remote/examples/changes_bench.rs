//! Numbers for the `fs.changes` feed, through the agent's real JSON-RPC handling (`serve` over
//! an in-memory pipe; no ssh): stat latency with the feed off and on, the time to arm a
//! 20 000-file tree, and the notification volume of a 20 000-file burst.
//!
//! `cargo run --release -p pi-bridge-agent --example changes_bench`

use pi_bridge_protocol::FrameReader;
use serde_json::{json, Value};
use std::time::Instant;
use tokio::io::{AsyncWriteExt, BufReader, DuplexStream, ReadHalf, WriteHalf};

struct C {
    rd: FrameReader<BufReader<ReadHalf<DuplexStream>>>,
    wr: WriteHalf<DuplexStream>,
    id: u64,
    /// fs.changed frames and their bytes since the last reset.
    notes: usize,
    note_bytes: usize,
}

impl C {
    async fn call(&mut self, method: &str, params: Value) -> Value {
        self.id += 1;
        let req = json!({"jsonrpc":"2.0","id":self.id,"method":method,"params":params});
        self.wr
            .write_all(format!("{req}\n").as_bytes())
            .await
            .unwrap();
        loop {
            let f = self.rd.next_frame().await.unwrap().unwrap();
            if f.contains("\"method\":\"fs.changed\"") {
                self.notes += 1;
                self.note_bytes += f.len() + 1;
                continue;
            }
            let v: Value = serde_json::from_str(&f).unwrap();
            if v["id"] == json!(self.id) {
                return v;
            }
        }
    }
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p) as usize]
}

async fn stat_loop(c: &mut C, path: &str, n: usize) -> (f64, f64, bool) {
    let mut t = Vec::with_capacity(n);
    let mut cached = false;
    for _ in 0..n {
        let t0 = Instant::now();
        let r = c.call("fs.stat", json!({"path": path})).await;
        t.push(t0.elapsed().as_secs_f64() * 1e6);
        cached = r["result"]["cache"] == json!(true);
    }
    (pct(&mut t, 0.5), pct(&mut t, 0.99), cached)
}

/// `n` mutating calls, alternating fs.write of `path` and fs.mkdir + fs.rmdir of `dir`: µs per
/// call (p50, p99).
async fn mutation_loop(c: &mut C, path: &str, dir: &str, n: usize) -> (f64, f64) {
    let mut t = Vec::with_capacity(n);
    for i in 0..n {
        let (m, p) = match i % 3 {
            0 => ("fs.write", json!({"path": path, "data": "eA=="})),
            1 => ("fs.mkdir", json!({"path": dir})),
            _ => ("fs.rmdir", json!({"path": dir})),
        };
        let t0 = Instant::now();
        let r = c.call(m, p).await;
        t.push(t0.elapsed().as_secs_f64() * 1e6);
        assert!(r.get("error").is_none(), "{r}");
    }
    (pct(&mut t, 0.5), pct(&mut t, 0.99))
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let (ours, theirs) = tokio::io::duplex(1 << 20);
    let (sr, sw) = tokio::io::split(theirs);
    tokio::spawn(pi_bridge_agent::server::serve(sr, sw));
    let (cr, cw) = tokio::io::split(ours);
    let mut rd = FrameReader::new(BufReader::new(cr));
    rd.next_frame().await.unwrap();
    let mut c = C {
        rd,
        wr: cw,
        id: 0,
        notes: 0,
        note_bytes: 0,
    };
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().canonicalize().unwrap();
    let r = root.to_str().unwrap().to_string();
    // 200 directories x 100 files = 20 000 files.
    for d in 0..200 {
        let dd = root.join(format!("d{d}"));
        std::fs::create_dir(&dd).unwrap();
        for f in 0..100 {
            std::fs::write(dd.join(format!("f{f}")), b"x").unwrap();
        }
    }
    c.call(
        "hello",
        json!({"protocol":1,"clientVersion":"bench","root":r}),
    )
    .await;
    let file = format!("{r}/d7/f7");
    let n = 20_000;
    stat_loop(&mut c, &file, 2000).await; // warm up
    let (off50, off99, off_c) = stat_loop(&mut c, &file, n).await;
    let t0 = Instant::now();
    let sub = c.call("fs.changes", json!(null)).await;
    let arm = t0.elapsed();
    assert!(sub.get("result").is_some(), "{sub}");
    let (on50, on99, on_c) = stat_loop(&mut c, &file, n).await;
    let (off50b, off99b, _) = {
        // Off again, to see drift between runs.
        c.call("fs.changes.stop", json!([sub["result"].clone()]))
            .await;
        stat_loop(&mut c, &file, n).await
    };
    println!("fs.stat over serve (in-memory pipe), {n} sequential calls, µs:");
    println!("  feed off : p50 {off50:.1}  p99 {off99:.1}  (cache={off_c})");
    println!("  feed on  : p50 {on50:.1}  p99 {on99:.1}  (cache={on_c})");
    println!("  off again: p50 {off50b:.1}  p99 {off99b:.1}");
    println!("arming 20 000 files in 201 directories: {arm:?} (subscribe call to answer)");

    // The mutation barrier: every mutating call flushes the feed before its answer.
    let (wf, wd) = (format!("{r}/d3/w"), format!("{r}/d3/m"));
    let m = 6000;
    mutation_loop(&mut c, &wf, &wd, 600).await; // warm up
    let (moff50, moff99) = mutation_loop(&mut c, &wf, &wd, m).await;
    let sub = c.call("fs.changes", json!(null)).await;
    let (mon50, mon99) = mutation_loop(&mut c, &wf, &wd, m).await;
    c.call("fs.changes.stop", json!([sub["result"].clone()]))
        .await;
    let (moff50b, moff99b) = mutation_loop(&mut c, &wf, &wd, m).await;
    println!("fs.write / fs.mkdir / fs.rmdir over serve, {m} sequential calls, µs:");
    println!("  feed off : p50 {moff50:.1}  p99 {moff99:.1}");
    println!("  feed on  : p50 {mon50:.1}  p99 {mon99:.1}  (flush before each answer, notifications read)");
    println!("  off again: p50 {moff50b:.1}  p99 {moff99b:.1}");

    for (what, cmd) in [
        (
            "20 000 new files in one directory",
            "mkdir one$R && cd one$R && for i in $(seq 20000); do echo $i > w$i; done",
        ),
        (
            "20 000 rewrites of 200 files in 200 directories",
            "for i in $(seq 20000); do echo $i > d$((i % 200))/f$((i % 100)); done",
        ),
    ] {
        // Without a feed (the machine's own speed right now), then with one.
        for feed in [false, true] {
            let sub = if feed {
                let sub = c.call("fs.changes", json!(null)).await;
                assert!(sub.get("result").is_some(), "{sub}");
                Some(sub["result"].clone())
            } else {
                None
            };
            c.notes = 0;
            c.note_bytes = 0;
            let t0 = Instant::now();
            let res = c
                .call(
                    "proc.run",
                    json!({"spawn":{"file":"sh","args":["-c",cmd],"cwd":r,"env":{"R":feed.to_string()}}}),
                )
                .await;
            assert_eq!(res["result"]["code"], json!(0), "{res}");
            println!(
                "{what}, feed {}: {} fs.changed notifications, {} bytes, before the proc.run answer ({:?})",
                if feed { "on " } else { "off" },
                c.notes,
                c.note_bytes,
                t0.elapsed()
            );
            if let Some(sub) = sub {
                c.call("fs.changes.stop", json!([sub])).await;
            }
        }
    }
}
