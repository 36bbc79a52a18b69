//! `--only scale` (issue 15 item 5): how the bridge's cost grows with the project. For each size
//! a fresh remote project of D directories (5 empty files each: the fixture home is a 1 GB tmpfs; 40 % under `src/`, 60 % under a
//! `node_modules` tree) is generated on the remote side of the fixture, then:
//!
//! - `runs` scripted pi sessions through pii at +0 ms (pi's fake LLM asks for one `read`): ms from
//!   pii's start to the LLM's second request, which carries the tool's result, and to pii's exit;
//!   the agent's peak RSS (VmHWM) and the inotify watches it holds (its `fdinfo`), sampled every
//!   20 ms, and when the watches reached their peak (ms from pii's start: the agent arms a big
//!   project in the background, so this may come after the first tool result);
//! - one run of `bench/js/scale-check.cjs` with `fs.inotify.max_user_watches` set below the
//!   directory count (restored right after, also on failure): the agent cannot watch the whole
//!   project, and listings and stats of directories on both ends of the tree, changed by a child
//!   process between lookups, must still be right (the cache degrades to round trips).
//!
//! Results go to stdout and, one tab-separated row per size, to `--scale-out` (default
//! `bench/scale.tsv`), which `scripts/plot-scale.py` turns into `docs/scale.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::json;

use crate::stats::median;
use crate::{bench_js, first_line, ms, output_ok, vm_hwm_kb, Env};

const LIMIT_FILE: &str = "/proc/sys/fs/inotify/max_user_watches";

/// The generator: `D` directories, 5 files in each, under `src/` and `node_modules/` in groups of
/// 100 (the group directories count towards D), plus README.md for pi's read.
fn gen_script(dirs: usize) -> String {
    format!(
        r#"set -e
printf '# scale\n' > README.md
awk -v n={dirs} 'BEGIN {{
  leaves = int(n * 100 / 101)
  for (i = 0; i < leaves; i++) {{
    top = (i < leaves * 0.4) ? "src" : "node_modules/pkg"
    printf "%s/g%04d/d%06d\n", top, int(i / 100), i
  }}
}}' > .dirs
xargs mkdir -p < .dirs
awk '{{ for (j = 0; j < 5; j++) {{ f = $0 "/f" j ".js"; printf "" > f; close(f) }} }}' .dirs
rm .dirs
echo "$(find . -type d | wc -l) $(find . -type f | wc -l)"
"#
    )
}

/// One size's figures.
struct Row {
    dirs: usize,
    files: usize,
    gen_s: f64,
    first_result: Vec<f64>,
    exit: Vec<f64>,
    armed: Vec<f64>,
    rss_mb: Vec<f64>,
    watches: Vec<f64>,
    limited: String,
}

/// Restores `max_user_watches` when dropped.
struct WatchLimit(String);

impl WatchLimit {
    fn set(n: usize) -> Result<WatchLimit> {
        let old = std::fs::read_to_string(LIMIT_FILE)?.trim().to_string();
        std::fs::write(LIMIT_FILE, n.to_string()).context("set max_user_watches")?;
        Ok(WatchLimit(old))
    }
}

impl Drop for WatchLimit {
    fn drop(&mut self) {
        if let Err(e) = std::fs::write(LIMIT_FILE, &self.0) {
            eprintln!("could not restore {LIMIT_FILE} to {}: {e}", self.0);
        }
    }
}

/// (agent VmHWM kB, inotify watches) of the agents in the fixture's pid namespace, summed.
fn agent_sample(ns: &Option<PathBuf>) -> (u64, u64) {
    let (mut rss, mut wds) = (0, 0);
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "pi-bridge-agent"
            || std::fs::read_link(e.path().join("ns/pid")).ok() != *ns
        {
            continue;
        }
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        rss += vm_hwm_kb(pid).unwrap_or(0);
        for fd in std::fs::read_dir(e.path().join("fdinfo"))
            .into_iter()
            .flatten()
            .flatten()
        {
            let info = std::fs::read_to_string(fd.path()).unwrap_or_default();
            wds += info
                .lines()
                .filter(|l| l.starts_with("inotify wd:"))
                .count() as u64;
        }
    }
    (rss, wds)
}

/// One scripted pi session's figures.
struct Session {
    first_result: f64,
    exit: f64,
    rss_kb: u64,
    watches: u64,
    /// ms from pii's start to the first sample with the peak watch count.
    armed: f64,
}

/// One scripted pi session.
fn session(env: &Env, cfg: &Path) -> Result<Session> {
    let llm = FakeLlm::start(json!([
        llm::tool("read", json!({"path": "README.md"})),
        llm::text("SCALE-DONE"),
    ]));
    let (_dir, vars) = pi_env(&llm);
    let mut args = vec!["-p", "read the readme"];
    args.extend(PI_ARGS);
    let mut cmd = env.pii(cfg, &paths::pi_cli(), &args);
    cmd.envs(vars);
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new((0u64, 0u64, 0f64)));
    let t = Instant::now();
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", env.sshd.sshd_pid())).ok();
    let sampler = {
        let (stop, peaks) = (stop.clone(), peaks.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let (r, w) = agent_sample(&ns);
                let mut p = peaks.lock().unwrap();
                p.0 = p.0.max(r);
                if w > p.1 {
                    p.1 = w;
                    p.2 = ms(t.elapsed());
                }
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child = cmd.spawn()?;
    let mut first_result = None;
    let waiter = std::thread::spawn(move || child.wait_with_output());
    while !waiter.is_finished() {
        if first_result.is_none() && llm.requests().len() >= 2 {
            first_result = Some(ms(t.elapsed()));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let exit = ms(t.elapsed());
    let out = waiter.join().expect("waiter")?;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() || !stdout.contains("SCALE-DONE") {
        bail!(
            "scale pi session: {} {stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let reqs = llm.requests();
    let result = reqs.get(1).map(llm::tool_results).unwrap_or_default();
    if !result.iter().any(|r| r.contains("# scale")) {
        bail!("pi's read did not return README.md: {result:?}");
    }
    let p = *peaks.lock().unwrap();
    Ok(Session {
        first_result: first_result.unwrap_or(exit),
        exit,
        rss_kb: p.0,
        watches: p.1,
        armed: p.2,
    })
}

/// `bench/js/scale-check.cjs` with the watch limit at `limit`: its verdict line.
fn limited_check(env: &Env, cfg: &Path, limit: usize, dirs: &[String]) -> Result<String> {
    let _limit = WatchLimit::set(limit)?;
    let root = env.sshd.project().to_string();
    let mut args = vec![root.as_str()];
    args.extend(dirs.iter().map(String::as_str));
    let out = output_ok(
        env.pii(cfg, &bench_js("scale-check.cjs"), &args),
        "scale-check",
    )?;
    out.lines()
        .find(|l| l.starts_with("SCALE-CHECK "))
        .map(|l| l.trim_start_matches("SCALE-CHECK ").to_string())
        .with_context(|| format!("scale-check printed no verdict: {out}"))
}

fn fmt_col(xs: &[f64], unit: &str) -> String {
    median(xs).map_or("–".into(), |m| format!("{m:.0}{unit}"))
}

/// `--only scale`.
pub fn scale_only(pii: PathBuf, sizes: &[usize], runs: usize, out: &Path) -> Result<()> {
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!(
        "scale: sizes {sizes:?} directories, {runs} runs each; load average at start: {}",
        load.trim()
    );
    let mut rows = vec![];
    for &size in sizes {
        let env = Env {
            pii: pii.clone(),
            sshd: Sshd::builder().empty_project().no_git().start(),
            local_project: tempfile::tempdir()?,
            logdir: tempfile::tempdir()?,
            iters: 0,
        };
        let t = Instant::now();
        let counts = env.sshd.run_remote_ok(&gen_script(size));
        let gen_s = t.elapsed().as_secs_f64();
        let mut it = counts
            .split_whitespace()
            .map(|n| n.parse::<usize>().unwrap_or(0));
        let (dirs, files) = (it.next().unwrap_or(0), it.next().unwrap_or(0));
        eprintln!("== {dirs} directories, {files} files generated in {gen_s:.1} s");
        let cfg = env.sshd.ssh_config().to_path_buf();
        first_line(&env, &cfg)?; // installs the agent
        let mut row = Row {
            dirs,
            files,
            gen_s,
            first_result: vec![],
            exit: vec![],
            armed: vec![],
            rss_mb: vec![],
            watches: vec![],
            limited: String::new(),
        };
        for _ in 0..runs {
            let s = session(&env, &cfg)?;
            row.first_result.push(s.first_result);
            row.exit.push(s.exit);
            row.armed.push(s.armed);
            row.rss_mb.push(s.rss_kb as f64 / 1024.0);
            row.watches.push(s.watches as f64);
        }
        // Below the directory count (and above what the user's other sessions hold now).
        let limit = (dirs / 2).max(64);
        let last_leaf = format!(
            "node_modules/pkg/g{:04}",
            (size * 100 / 101).saturating_sub(1) / 100
        );
        row.limited = limited_check(&env, &cfg, limit, &["src/g0000".into(), last_leaf])
            .map(|v| format!("limit {limit}: {v}"))
            .unwrap_or_else(|e| format!("limit {limit}: FAILED: {e:#}"));
        println!(
            "{dirs} dirs / {files} files (generated in {gen_s:.1} s): first tool result {} (median of {runs}), exit {}, all watched at {}, agent VmHWM {}, watches {}; {}",
            fmt_col(&row.first_result, " ms"),
            fmt_col(&row.exit, " ms"),
            fmt_col(&row.armed, " ms"),
            median(&row.rss_mb).map_or("–".into(), |m| format!("{m:.1} MB")),
            fmt_col(&row.watches, ""),
            row.limited
        );
        rows.push(row);
    }
    let mut tsv = String::from(
        "dirs\tfiles\tgen_s\tfirst_result_ms\texit_ms\tarmed_ms\tagent_rss_mb\twatches\tlimited\n",
    );
    for r in &rows {
        let m = |xs: &[f64]| median(xs).unwrap_or(f64::NAN);
        tsv += &format!(
            "{}\t{}\t{:.1}\t{:.0}\t{:.0}\t{:.0}\t{:.1}\t{:.0}\t{}\n",
            r.dirs,
            r.files,
            r.gen_s,
            m(&r.first_result),
            m(&r.exit),
            m(&r.armed),
            m(&r.rss_mb),
            m(&r.watches),
            r.limited
        );
    }
    std::fs::write(out, tsv).with_context(|| format!("write {}", out.display()))?;
    println!("wrote {}", out.display());
    if rows
        .iter()
        .any(|r| r.limited.contains("WRONG") || r.limited.contains("FAILED"))
    {
        bail!("a run under the watch limit answered wrongly (see above)");
    }
    Ok(())
}
