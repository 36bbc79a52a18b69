//! `pi-bridge-bench`: one run that measures, on the same generated project content, plain local
//! Node, Node under `pii` over a real loopback sshd, Node on an sshfs mount of the same remote
//! (cold and warm) and the floor (an echo round trip over one ssh channel), at each injected
//! round-trip latency (a [`DelayProxy`] in front of sshd). Prints tables and writes BENCHMARKS.md.
//!
//! Run it through `bash scripts/bench.sh` (release build, root, sshfs). Not a test: nothing here
//! asserts a time; the targets are reported as met or as a measured gap.

mod hops;
mod scale;
mod stats;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use pi_bridge_tests::pii::stop_masters;
use pi_bridge_tests::{copy_dir, llm, paths, pi_env, trace, DelayProxy, FakeLlm, Sshd, PI_ARGS};
use serde_json::json;
use stats::{fmt_med_p99, fmt_ms, fmt_ratio, median};

type Samples = BTreeMap<String, Vec<f64>>;

struct Opts {
    quick: bool,
    /// `--first-line N`: only the start → first line figure, N runs per round trip.
    first_line_only: Option<usize>,
    /// `--only big`: only the 100 MB read (bridge over ssh, `pii --local`, `ssh cat`) with
    /// each process's CPU time.
    only_big: bool,
    /// `--only pi`: only the scripted pi session, local and through pii at each round trip.
    only_pi: bool,
    /// `--only startup`: only pi's start through pii, first (nothing learned) and learned.
    only_startup: bool,
    /// `--only hops`: only the per-hop times of an uncached `statSync` (`hops.rs`).
    only_hops: bool,
    /// `--only scale`: only the project-size scan (`scale.rs`), these sizes in directories.
    only_scale: Option<Vec<usize>>,
    /// `--scale-out FILE`: where `--only scale` writes its rows (default bench/scale.tsv).
    scale_out: Option<PathBuf>,
    rtts: Vec<u64>,
    out: PathBuf,
}

fn parse_args() -> Result<Opts> {
    let mut opts = Opts {
        quick: false,
        first_line_only: None,
        only_big: false,
        only_pi: false,
        only_startup: false,
        only_hops: false,
        only_scale: None,
        scale_out: None,
        rtts: vec![0, 5, 20],
        out: paths::workspace_root().join("BENCHMARKS.md"),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--quick" => opts.quick = true,
            "--rtt" => {
                let v = args.next().context("--rtt needs a list, e.g. 0,5,20")?;
                opts.rtts = v
                    .split(',')
                    .map(|x| x.trim().parse::<u64>())
                    .collect::<Result<_, _>>()
                    .with_context(|| format!("--rtt {v}: not a comma list of milliseconds"))?;
            }
            "--first-line" => {
                let v = args.next().context("--first-line needs a run count")?;
                opts.first_line_only = Some(v.parse().context("--first-line N")?);
            }
            "--only" => match args.next().as_deref() {
                Some("big") => opts.only_big = true,
                Some("pi") => opts.only_pi = true,
                Some("startup") => opts.only_startup = true,
                Some("hops") => opts.only_hops = true,
                Some("scale") => {
                    opts.only_scale.get_or_insert_with(|| vec![1_000, 10_000, 100_000]);
                }
                other => bail!(
                    "--only {other:?}: the parts that run alone are `big`, `pi`, `startup`, `hops` and `scale`"
                ),
            },
            "--out" => opts.out = args.next().context("--out needs a file")?.into(),
            "--scale-dirs" => {
                let v = args.next().context("--scale-dirs needs a list, e.g. 1000,10000")?;
                opts.only_scale = Some(
                    v.split(',')
                        .map(|x| x.trim().parse())
                        .collect::<Result<_, _>>()
                        .with_context(|| format!("--scale-dirs {v}: not a comma list of counts"))?,
                );
            }
            "--scale-out" => {
                opts.scale_out = Some(args.next().context("--scale-out needs a file")?.into())
            }
            "-h" | "--help" => {
                println!(
                    "pi-bridge-bench [--quick] [--rtt 0,5,20] [--out BENCHMARKS.md] [--first-line N] [--only big|pi|startup|hops|scale [--scale-dirs 1000,10000,100000] [--scale-out FILE]]\n\
                     --only scale: projects of that many directories (5 files each, a node_modules tree): pii start →\n\
                     first tool result, agent RSS and inotify watches, and correctness under a lowered max_user_watches.\n\
                     --first-line N: only pii start → first line, N runs per round trip.\n\
                     --only big: only the 100 MB read (bridge, pii --local, ssh cat) with CPU time per process.\n\
                     --only pi: only the scripted pi session, plain local and through pii (5 runs each), its round\n\
                     trips by phase (start, each tool call, exit); BENCH_PII=<pii> measures another build.\n\
                     --only startup: only pi's start through pii: round trips (PI_BRIDGE_TRACE) and time, the\n\
                     first start (nothing learned) and 5 learned ones; BENCH_PII=<pii> measures another build.\n\
                     --only hops: only an uncached statSync's time per hop (preload, pii, ssh, agent;\n\
                     PI_BRIDGE_HOPS), medians next to the floor.\n\
                     Run via `bash scripts/bench.sh` (root, release build, sshfs)."
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    Ok(opts)
}

/// Where this binary's sibling release binaries are.
fn sibling(name: &str) -> Result<PathBuf> {
    let exe = std::env::current_exe()?;
    let p = exe.parent().unwrap().join(name);
    if !p.is_file() {
        bail!(
            "{} missing: run `cargo build --release -p pi-bridge -p pi-bridge-agent -p pi-bridge-bench` \
             (scripts/bench.sh does)",
            p.display()
        );
    }
    Ok(p)
}

fn bench_js(name: &str) -> PathBuf {
    paths::workspace_root().join("bench/js").join(name)
}

fn sh(cmd: &str) -> String {
    Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Parses the `BENCH-RESULT {…}` line of fsbench.cjs.
fn parse_result(stdout: &str, what: &str) -> Result<Samples> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("BENCH-RESULT "))
        .ok_or_else(|| anyhow!("{what}: no BENCH-RESULT line in output:\n{stdout}"))?;
    let v: BTreeMap<String, Vec<f64>> = serde_json::from_str(line)?;
    Ok(v)
}

fn output_ok(mut cmd: Command, what: &str) -> Result<String> {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .with_context(|| format!("run {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\nstdout: {}\nstderr: {}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

struct Env {
    pii: PathBuf,
    sshd: Sshd,
    local_project: tempfile::TempDir,
    logdir: tempfile::TempDir,
    iters: usize,
}

impl Env {
    /// The default fixture (no generated content), for the parts that run alone.
    fn plain(pii: PathBuf) -> Result<Env> {
        Ok(Env {
            pii,
            sshd: Sshd::builder().start(),
            local_project: tempfile::tempdir()?,
            logdir: tempfile::tempdir()?,
            iters: 0,
        })
    }

    fn remote_root(&self) -> String {
        format!("{}/benchdata", self.sshd.project())
    }
    fn local_root(&self) -> PathBuf {
        self.local_project.path().join("project/benchdata")
    }

    /// `pii --ssh … -F cfg --pi <script> -- args`.
    fn pii(&self, cfg: &Path, script: &Path, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.pii);
        // Profiling aids: BENCH_PII_LOG keeps the log elsewhere, BENCH_PII_ARGS adds flags.
        let log = std::env::var_os("BENCH_PII_LOG")
            .map(PathBuf::from)
            .unwrap_or_else(|| self.logdir.path().join("pii.log"));
        // pii's ssh master sockets (`controlPersist`) in the bench's own directory.
        cmd.env("XDG_RUNTIME_DIR", self.logdir.path())
            .arg("--ssh")
            .arg(self.sshd.dest())
            .arg("-F")
            .arg(cfg)
            .arg("--log-file")
            .arg(log)
            .args(
                std::env::var("BENCH_PII_ARGS")
                    .unwrap_or_default()
                    .split_whitespace(),
            )
            .arg("--pi")
            .arg(script)
            .arg("--")
            .args(args);
        cmd
    }

    fn fsbench_bridge(&self, cfg: &Path, parts: &str, iters: usize) -> Result<Samples> {
        let root = self.remote_root();
        let n = iters.to_string();
        let cmd = self.pii(cfg, &bench_js("fsbench.cjs"), &[&root, &n, parts]);
        parse_result(&output_ok(cmd, "pii fsbench")?, "bridge")
    }

    /// The same with the preload's cache switched off: every call is a round trip.
    fn fsbench_bridge_uncached(&self, cfg: &Path, parts: &str, iters: usize) -> Result<Samples> {
        let root = self.remote_root();
        let n = iters.to_string();
        let mut cmd = self.pii(cfg, &bench_js("fsbench.cjs"), &[&root, &n, parts]);
        cmd.env("PI_BRIDGE_CACHE", "0");
        parse_result(
            &output_ok(cmd, "pii fsbench (no cache)")?,
            "bridge, no cache",
        )
    }
}

fn fsbench_local(root: &Path, parts: &str, iters: usize) -> Result<Samples> {
    let mut cmd = Command::new("node");
    cmd.arg(bench_js("fsbench.cjs"))
        .arg(root)
        .arg(iters.to_string())
        .arg(parts)
        .current_dir(root);
    parse_result(&output_ok(cmd, "node fsbench")?, "local")
}

/// The floor: round trips of one small line through `ssh … cat` (one channel, already open).
fn floor(sshd: &Sshd, cfg: &Path, n: usize) -> Result<Vec<f64>> {
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(cfg)
        .arg(sshd.alias())
        .arg("exec cat")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?;
    let mut stdin = child.stdin.take().unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    let mut xs = vec![];
    // Warm-up: the first line also waits for the login.
    for i in 0..n + 3 {
        let t = Instant::now();
        stdin
            .write_all(b"{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"fs.stat\",\"params\":{}}\n")?;
        stdin.flush()?;
        line.clear();
        if stdout.read_line(&mut line)? == 0 {
            bail!("ssh cat ended early");
        }
        if i >= 3 {
            xs.push(ms(t.elapsed()));
        }
    }
    drop(stdin);
    let _ = child.wait();
    Ok(xs)
}

/// `ssh cat <100 MB file>`: ms from the first byte to EOF (connection setup excluded).
fn ssh_cat(sshd: &Sshd, cfg: &Path, path: &str) -> Result<(f64, usize)> {
    let mut child = Command::new("ssh")
        .arg("-F")
        .arg(cfg)
        .arg(sshd.alias())
        .arg(format!("cat {path}"))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()?;
    let mut out = child.stdout.take().unwrap();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0usize;
    let mut first: Option<Instant> = None;
    loop {
        let n = out.read(&mut buf)?;
        if n == 0 {
            break;
        }
        first.get_or_insert_with(Instant::now);
        total += n;
    }
    child.wait()?;
    Ok((first.map(|t| ms(t.elapsed())).unwrap_or(0.0), total))
}

/// `git status` run natively on the remote (inside the fixture, timed there).
/// `git status` run on the remote itself (no ssh in the timing): the median of 3, as the bridge's.
fn git_native(sshd: &Sshd, root: &str) -> Result<f64> {
    let mut xs = vec![];
    for _ in 0..3 {
        let out = sshd.run_remote_ok(&format!(
            "cd {root}/gitrepo && s=$(date +%s%N) && git status --porcelain >/dev/null && e=$(date +%s%N) && echo $((e - s))"
        ));
        let ns: f64 = out.trim().parse().context("git native timing")?;
        xs.push(ns / 1e6);
    }
    median(&xs).ok_or_else(|| anyhow!("no git timing"))
}

/// The longest a cold sshfs `git status` may run; beyond it the figure is a lower bound.
const SSHFS_GIT_CAP: Duration = Duration::from_secs(30);

/// `git status` in `dir` (a local process), killed at `cap`: ms, at most `cap`.
fn git_capped(dir: &Path, cap: Duration) -> Result<f64> {
    let t = Instant::now();
    let mut child = Command::new("git")
        .args(["-c", "safe.directory=*", "status", "--porcelain"])
        .current_dir(dir)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    loop {
        if let Some(status) = child.try_wait()? {
            if !status.success() {
                bail!("git status in {} failed: {status}", dir.display());
            }
            return Ok(ms(t.elapsed()));
        }
        if t.elapsed() >= cap {
            let _ = child.kill();
            let _ = child.wait();
            return Ok(ms(cap));
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

struct Sshfs {
    mnt: tempfile::TempDir,
}

impl Sshfs {
    fn mount(sshd: &Sshd, cfg: &Path, remote: &str) -> Result<Sshfs> {
        let mnt = tempfile::Builder::new().prefix("pib-sshfs-").tempdir()?;
        let mut cmd = Command::new("sshfs");
        cmd.arg("-F")
            .arg(cfg)
            .arg(format!("{}:{remote}", sshd.alias()))
            .arg(mnt.path());
        output_ok(cmd, "sshfs mount")?;
        Ok(Sshfs { mnt })
    }
    fn path(&self) -> &Path {
        self.mnt.path()
    }
}

impl Drop for Sshfs {
    fn drop(&mut self) {
        let _ = Command::new("fusermount")
            .arg("-u")
            .arg(self.mnt.path())
            .status();
        let _ = Command::new("umount")
            .arg("-l")
            .arg(self.mnt.path())
            .stderr(Stdio::null())
            .status();
    }
}

/// Wall time of one scripted pi session: plain local (`cwd = Some(dir)`) or through pii; with
/// `trace`, pii's `PI_BRIDGE_TRACE` goes there, marked by the fake LLM's requests.
fn pi_session(
    env: &Env,
    cfg: Option<&Path>,
    local_dir: &Path,
    trace: Option<&Path>,
) -> Result<f64> {
    let llm = match trace {
        Some(t) => {
            let _ = std::fs::remove_file(t);
            FakeLlm::start_marking(trace::session_script(), t)
        }
        None => FakeLlm::start(trace::session_script()),
    };
    let (_dir, vars) = pi_env(&llm);
    let mut args = vec!["-p", "do the scripted steps"];
    args.extend(PI_ARGS);
    let mut cmd = match cfg {
        Some(cfg) => env.pii(cfg, &paths::pi_cli(), &args),
        None => {
            let mut c = Command::new("node");
            c.arg(paths::pi_cli()).args(&args).current_dir(local_dir);
            c
        }
    };
    cmd.envs(vars);
    if let Some(t) = trace {
        cmd.env("PI_BRIDGE_TRACE", t);
    }
    let t = Instant::now();
    let out = output_ok(cmd, "pi session")?;
    let wall = ms(t.elapsed());
    if !out.contains("BENCH-DONE") {
        bail!("pi session did not finish its script: {out}");
    }
    Ok(wall)
}

/// A traced session's round trips by phase: `[(phase name, round trips)]`, start, each tool
/// of [`trace::session_script`], exit.
fn pi_phases(trace: &Path) -> Result<Vec<(String, Vec<trace::RoundTrip>)>> {
    let text = std::fs::read_to_string(trace).with_context(|| format!("{}", trace.display()))?;
    Ok(trace::phases(&text)
        .into_iter()
        .map(|(phase, rts)| (trace::session_phase_name(phase), rts))
        .collect())
}

/// `start 3, read 1, …, exit 1 = N`.
fn fmt_phases(phases: &[(String, Vec<trace::RoundTrip>)]) -> String {
    let total: usize = phases.iter().map(|(_, r)| r.len()).sum();
    let parts: Vec<String> = phases
        .iter()
        .map(|(n, r)| format!("{n} {}", r.len()))
        .collect();
    format!("{} = {total} round trips", parts.join(", "))
}

/// `--only pi`: the scripted pi session, plain local and through pii, 5 runs each; the round
/// trips of each bridged session by phase (PI_BRIDGE_TRACE), listed in full for the first at
/// each round trip (for all with `BENCH_LIST_ALL=1`).
fn pi_only(pii: PathBuf, rtts: &[u64]) -> Result<()> {
    let env = Env::plain(pii)?;
    let project = env.local_project.path().join("project");
    copy_dir(&paths::fixture("project"), &project);
    sh(&format!(
        "cd {} && git init -q -b main && git add -A && git -c user.name=b -c user.email=b@invalid commit -qm fixture",
        project.display()
    ));
    let mut local = vec![];
    for _ in 0..5 {
        local.push(pi_session(&env, None, &project, None)?);
        sh(&format!(
            "cd {} && rm -rf created && git checkout -q notes.md",
            project.display()
        ));
    }
    println!("local pi session: {}", fmt_med_p99(&local));
    first_line(&env, env.sshd.ssh_config())?;
    let trace = env.local_project.path().join("pi-trace.txt");
    for &rtt in rtts {
        let mut listed = false;
        let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
        let cfg = env.sshd.ssh_config_via(proxy.port());
        let mut xs = vec![];
        for _ in 0..5 {
            xs.push(pi_session(&env, Some(&cfg), Path::new("/"), Some(&trace))?);
            reset_pi_changes_remote(&env.sshd);
            let phases = pi_phases(&trace)?;
            println!("+{rtt} ms: {}", fmt_phases(&phases));
            if !listed || std::env::var_os("BENCH_LIST_ALL").is_some() {
                listed = true;
                for (name, rts) in &phases {
                    for rt in rts {
                        println!("  {name}: {rt}");
                    }
                }
            }
        }
        println!("+{rtt} ms: pi session through pii: {}", fmt_med_p99(&xs));
    }
    Ok(())
}

/// One `pi -p` start through pii with a one-answer script, pii's cache dir `cache`: (round trips
/// to the remote, of which lookups pii could have prefetched, wall ms), from PI_BRIDGE_TRACE.
fn startup_run(env: &Env, cfg: &Path, cache: &Path, extra: &[&str]) -> Result<(usize, usize, f64)> {
    let llm = FakeLlm::start(json!([llm::text("STARTUP-DONE")]));
    let (_dir, vars) = pi_env(&llm);
    let trace = cache.join("trace.txt");
    let _ = std::fs::remove_file(&trace);
    let mut args = vec!["-p", "hello"];
    args.extend(PI_ARGS);
    args.extend(extra);
    let mut cmd = env.pii(cfg, &paths::pi_cli(), &args);
    cmd.envs(vars)
        .env("XDG_CACHE_HOME", cache)
        .env("PI_BRIDGE_TRACE", &trace);
    let t = Instant::now();
    let out = output_ok(cmd, "pi start")?;
    let wall = ms(t.elapsed());
    if !out.contains("STARTUP-DONE") {
        bail!("pi did not answer: {out}");
    }
    let text = std::fs::read_to_string(&trace).unwrap_or_default();
    let lookups = text
        .lines()
        .filter(|l| {
            let m = l.split_whitespace().nth(2).unwrap_or("");
            ["fs.stat", "fs.access", "fs.read", "fs.realpath"].contains(&m)
        })
        .count();
    Ok((text.lines().count(), lookups, wall))
}

/// `--only startup`: pi's start through pii (`pi -p`, one answer, no tool): the round trips to
/// the remote and the time, the first start with nothing learned and five learned starts, at each
/// round trip; on the fixture project, then with a `.pi` (settings, a prompt, a skill) that pi
/// 1.x loads with `--approve`.
fn startup_only(pii: PathBuf, rtts: &[u64]) -> Result<()> {
    let env = Env::plain(pii)?;
    println!(
        "pii: {}, pi: {}",
        env.pii.display(),
        paths::pi_cli().display()
    );
    first_line(&env, env.sshd.ssh_config())?; // the agent is installed once, before timing
    let approve: &[&str] = if paths::pi().major() >= 1 {
        &["--approve"]
    } else {
        &[]
    };
    for (project, extra) in [("fixture project", &[][..]), (".pi project", approve)] {
        if project == ".pi project" {
            env.sshd.run_remote_ok(
                "mkdir -p .pi/prompts .agents/skills/demo && echo '{}' > .pi/settings.json && \
                 printf 'Review the diff.\n' > .pi/prompts/review.md && \
                 printf -- '---\nname: demo\ndescription: a demo skill\n---\nDo it.\n' > .agents/skills/demo/SKILL.md",
            );
        }
        for &rtt in rtts {
            let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
            let cfg = env.sshd.ssh_config_via(proxy.port());
            let cache = tempfile::tempdir()?;
            let (trips, lookups, wall) = startup_run(&env, &cfg, cache.path(), extra)?;
            let mut runs = vec![];
            for _ in 0..5 {
                runs.push(startup_run(&env, &cfg, cache.path(), extra)?);
            }
            let col =
                |f: fn(&(usize, usize, f64)) -> f64| -> Vec<f64> { runs.iter().map(f).collect() };
            println!(
                "{project}{}, +{rtt} ms: first start {trips} round trips ({lookups} lookups), {}; \
                 learned (5 starts) {} round trips ({} lookups), {}",
                if extra.is_empty() {
                    ""
                } else {
                    " with --approve"
                },
                fmt_ms(wall),
                median(&col(|r| r.0 as f64)).unwrap_or(f64::NAN),
                median(&col(|r| r.1 as f64)).unwrap_or(f64::NAN),
                fmt_med_p99(&col(|r| r.2))
            );
        }
    }
    Ok(())
}

fn reset_pi_changes_remote(sshd: &Sshd) {
    sshd.run_remote_ok("rm -rf created && git checkout -q notes.md");
}

/// `--first-line N`: a plain fixture, the agent installed once, then N timed runs per round trip.
fn first_line_only(pii: PathBuf, rtts: &[u64], n: usize) -> Result<()> {
    let env = Env::plain(pii)?;
    first_line(&env, env.sshd.ssh_config())?;
    for &rtt in rtts {
        let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
        let cfg = env.sshd.ssh_config_via(proxy.port());
        // pii's own master (`controlPersist`): off; set up by the timed run (a fresh socket
        // directory each time); kept by a first, untimed run (the second `pii` within minutes).
        let off = (0..n)
            .map(|_| first_line_in(&env, &cfg, &Master::Off))
            .collect::<Result<Vec<_>>>()?;
        let cold = (0..n)
            .map(|_| first_line_in(&env, &cfg, &Master::Fresh))
            .collect::<Result<Vec<_>>>()?;
        let kept = tempfile::tempdir()?;
        first_line_in(&env, &cfg, &Master::Kept(kept.path()))?;
        let warm = (0..n)
            .map(|_| first_line_in(&env, &cfg, &Master::Kept(kept.path())))
            .collect::<Result<Vec<_>>>()?;
        stop_masters(kept.path());
        let mux = first_line_mux(&env, &cfg, n)?;
        println!(
            "+{rtt} ms: pii start → first line ({n} runs): no master {}; starting pii's master {}; \
             second pii (pii's master kept) {}; the user's own ControlMaster {}",
            fmt_med_p99(&off),
            fmt_med_p99(&cold),
            fmt_med_p99(&warm),
            fmt_med_p99(&mux)
        );
        drop(proxy);
    }
    Ok(())
}

/// CPU time (utime + stime, in clock ticks) of every process whose name is in `names`,
/// sampled from /proc every 20 ms while it runs; what existed before `start` is subtracted.
struct CpuSampler {
    stop: Arc<AtomicBool>,
    thread: Option<std::thread::JoinHandle<BTreeMap<String, f64>>>,
}

/// (pid, comm, utime + stime) of the processes descended from this one (other work on the
/// machine is not counted).
fn proc_ticks() -> Vec<(u32, String, u64)> {
    let me = std::process::id();
    let mut all = vec![];
    let mut parent: BTreeMap<u32, u32> = BTreeMap::new();
    let mut v = vec![];
    let Ok(rd) = std::fs::read_dir("/proc") else {
        return v;
    };
    for e in rd.flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let (Some(a), Some(b)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[a + 1..b].to_string();
        let f: Vec<&str> = stat[b + 2..].split(' ').collect();
        // Fields after `(comm)`: state is [0], utime [11], stime [12].
        let t = f.get(11).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0)
            + f.get(12).and_then(|x| x.parse::<u64>().ok()).unwrap_or(0);
        if let Some(pp) = f.get(1).and_then(|x| x.parse::<u32>().ok()) {
            parent.insert(pid, pp);
        }
        all.push((pid, comm, t));
    }
    let mine = |mut p: u32| {
        for _ in 0..64 {
            if p == me {
                return true;
            }
            match parent.get(&p) {
                Some(&pp) if pp != 0 => p = pp,
                _ => return false,
            }
        }
        false
    };
    for x in all {
        if mine(x.0) {
            v.push(x);
        }
    }
    v
}

impl CpuSampler {
    fn start(names: &'static [&'static str]) -> CpuSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let s = stop.clone();
        let base: BTreeMap<u32, u64> = proc_ticks().into_iter().map(|(p, _, t)| (p, t)).collect();
        let thread = std::thread::spawn(move || {
            let mut last: BTreeMap<u32, (String, u64)> = BTreeMap::new();
            loop {
                let done = s.load(Ordering::Relaxed);
                for (pid, comm, t) in proc_ticks() {
                    let name = if comm.starts_with("pi-bridge-agen") {
                        "agent".to_string()
                    } else if comm == "node" || comm.starts_with("node") {
                        "node".to_string()
                    } else {
                        comm
                    };
                    if !names.contains(&name.as_str()) {
                        continue;
                    }
                    let t = t.saturating_sub(base.get(&pid).copied().unwrap_or(0));
                    last.insert(pid, (name, t));
                }
                if done {
                    break;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
            // SAFETY: sysconf has no preconditions.
            let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
            let mut by: BTreeMap<String, f64> = BTreeMap::new();
            for (name, t) in last.into_values() {
                *by.entry(name).or_default() += t as f64 / hz;
            }
            by
        });
        CpuSampler {
            stop,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> BTreeMap<String, f64> {
        self.stop.store(true, Ordering::Relaxed);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

fn fmt_cpu(cpu: &BTreeMap<String, f64>, mb: f64) -> String {
    let total: f64 = cpu.values().sum();
    let mut s = format!("total {:.2} s CPU/100 MB:", total * 100.0 / mb);
    for (k, v) in cpu {
        s.push_str(&format!(" {k} {:.2}", v * 100.0 / mb));
    }
    s
}

/// `--only big`: the 100 MB read through the bridge (ssh and `pii --local`) and `ssh cat`, with
/// the CPU seconds each process spent per 100 MB.
fn big_only(pii: PathBuf, rtts: &[u64]) -> Result<()> {
    const NAMES: &[&str] = &["ssh", "sshd", "agent", "pii", "node", "cat"];
    let gen = std::fs::read(paths::workspace_root().join("bench/gen.sh"))?;
    let sshd = Sshd::builder().start();
    let out = sshd.run_remote_in(
        "",
        "mkdir benchdata && cd benchdata && sh -s -- 10",
        Some(&gen),
    );
    if !out.status.success() {
        bail!("remote gen.sh: {}", String::from_utf8_lossy(&out.stderr));
    }
    let env = Env {
        pii,
        sshd,
        local_project: tempfile::tempdir()?,
        logdir: tempfile::tempdir()?,
        iters: 0,
    };
    first_line(&env, env.sshd.ssh_config())?;
    let reads = 3usize;
    let mb = 100.0 * reads as f64;
    let rate = |s: &Samples| {
        let xs = get(s, "readFile 100MB");
        let m = median(xs).unwrap_or(f64::NAN);
        100.0 / (m / 1000.0)
    };
    // pii --local on a local copy of the same kind of file.
    let ldir = tempfile::tempdir()?;
    sh(&format!(
        "cd {} && head -c 104857600 /dev/urandom > big100m",
        ldir.path().display()
    ));
    let cpu = CpuSampler::start(NAMES);
    let mut cmd = Command::new(&env.pii);
    cmd.arg("--local")
        .arg(ldir.path())
        .arg("--log-file")
        .arg(env.logdir.path().join("local.log"))
        .arg("--pi")
        .arg(bench_js("fsbench.cjs"))
        .arg("--")
        .arg(ldir.path())
        .arg("1")
        .arg("big");
    let s = parse_result(&output_ok(cmd, "pii --local fsbench")?, "pii --local")?;
    let c = cpu.finish();
    println!("pii --local: {:.0} MB/s; {}", rate(&s), fmt_cpu(&c, mb));
    for &rtt in rtts {
        let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
        let cfg = env.sshd.ssh_config_via(proxy.port());
        let cpu = CpuSampler::start(NAMES);
        let s = env.fsbench_bridge(&cfg, "big", 1)?;
        let c = cpu.finish();
        let bridge = rate(&s);
        println!(
            "+{rtt} ms bridge: {bridge:.0} MB/s (runs {:?} ms); {}",
            get(&s, "readFile 100MB")
                .iter()
                .map(|x| x.round())
                .collect::<Vec<_>>(),
            fmt_cpu(&c, mb)
        );
        let mut cats = vec![];
        let cpu = CpuSampler::start(NAMES);
        for _ in 0..reads {
            let (ms, n) = ssh_cat(&env.sshd, &cfg, &format!("{}/big100m", env.remote_root()))?;
            if n != 100 << 20 {
                bail!("ssh cat read {n} bytes");
            }
            cats.push(ms);
        }
        let c = cpu.finish();
        let cat = 100.0 / (median(&cats).unwrap_or(f64::NAN) / 1000.0);
        println!(
            "+{rtt} ms ssh cat: {cat:.0} MB/s; {} → bridge = {:.0}% of ssh cat",
            fmt_cpu(&c, mb),
            100.0 * bridge / cat
        );
        drop(proxy);
    }
    Ok(())
}

/// ms from spawning pii to the first line of a script.
fn first_line(env: &Env, cfg: &Path) -> Result<f64> {
    time_first_line(env.pii(cfg, &bench_js("first-line.cjs"), &[]))
}

fn time_first_line(mut cmd: Command) -> Result<f64> {
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let t = Instant::now();
    let mut child = cmd.spawn()?;
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap()).read_line(&mut line)?;
    let dt = ms(t.elapsed());
    let status = child.wait()?;
    if !line.starts_with("FIRST-LINE ") || !status.success() {
        let mut err = String::new();
        let _ = child.stderr.take().unwrap().read_to_string(&mut err);
        bail!("first-line script: {line:?} {status}: {err}");
    }
    Ok(dt)
}

/// Which ssh master of pii's own a timed start has (`controlPersist`, `XDG_RUNTIME_DIR`).
enum Master<'a> {
    /// `"controlPersist": false` (a config file in pii's current directory).
    Off,
    /// A new socket directory: the run starts a master (stopped after it).
    Fresh,
    /// This runtime directory, whose master a previous run started.
    Kept(&'a Path),
}

/// [`first_line`] with pii's master as `m` says.
fn first_line_in(env: &Env, cfg: &Path, m: &Master) -> Result<f64> {
    let dir = tempfile::tempdir()?;
    let mut cmd = env.pii(cfg, &bench_js("first-line.cjs"), &[]);
    match m {
        Master::Off => {
            std::fs::write(
                dir.path().join("pi-bridge.config.json"),
                r#"{"controlPersist": false}"#,
            )?;
            cmd.current_dir(dir.path());
        }
        Master::Fresh => {
            cmd.env("XDG_RUNTIME_DIR", dir.path());
        }
        Master::Kept(run) => {
            cmd.env("XDG_RUNTIME_DIR", run);
        }
    }
    let dt = time_first_line(cmd)?;
    if matches!(m, Master::Fresh) {
        stop_masters(dir.path());
    }
    Ok(dt)
}

/// [`first_line`] for a user whose ssh config shares connections (ControlMaster): a master is
/// connected first, so each pii start opens only a session on it. Shows what the bridge adds to
/// the connection set-up that ssh itself needs.
fn first_line_mux(env: &Env, cfg: &Path, n: usize) -> Result<Vec<f64>> {
    let dir = tempfile::tempdir()?;
    let sock = dir.path().join("mux");
    let mux_cfg = dir.path().join("ssh_config");
    std::fs::write(
        &mux_cfg,
        format!(
            "ControlPath {}\n\n{}",
            sock.display(),
            std::fs::read_to_string(cfg)?
        ),
    )?;
    let mut master = Command::new("ssh")
        .arg("-F")
        .arg(&mux_cfg)
        .args(["-M", "-N", "-o", "ControlPersist=no"])
        .arg(env.sshd.alias())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()?;
    let up = Instant::now();
    while !sock.exists() {
        if up.elapsed() > Duration::from_secs(20) {
            let _ = master.kill();
            bail!("the ssh ControlMaster did not come up");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let xs = (0..n).map(|_| first_line(env, &mux_cfg)).collect();
    let _ = master.kill();
    let _ = master.wait();
    xs
}

fn vm_hwm_kb(pid: u32) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    s.lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
}

/// Agents (host pids) living in the fixture's pid namespace.
fn agents_in(sshd: &Sshd) -> Vec<u32> {
    let ns = std::fs::read_link(format!("/proc/{}/ns/pid", sshd.sshd_pid())).ok();
    let mut found = vec![];
    for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
        if comm.trim() != "pi-bridge-agent" {
            continue;
        }
        if std::fs::read_link(e.path().join("ns/pid")).ok() == ns {
            found.push(pid);
        }
    }
    found
}

/// Peak RSS (MB) of pii and of the agent while pii runs `parts` of fsbench.
fn peak_rss(env: &Env, cfg: &Path, parts: &str) -> Result<(f64, f64)> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agents_in(&env.sshd).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    let root = env.remote_root();
    let mut cmd = env.pii(cfg, &bench_js("fsbench.cjs"), &[&root, "1", parts]);
    cmd.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let child: Child = cmd.spawn()?;
    let pii_pid = child.id();
    let stop = Arc::new(AtomicBool::new(false));
    let peaks = Arc::new(Mutex::new((0u64, 0u64)));
    let sampler = {
        let (stop, peaks) = (stop.clone(), peaks.clone());
        let sshd_pid = env.sshd.sshd_pid();
        let ns = std::fs::read_link(format!("/proc/{sshd_pid}/ns/pid")).ok();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let mut p = peaks.lock().unwrap();
                if let Some(k) = vm_hwm_kb(pii_pid) {
                    p.0 = p.0.max(k);
                }
                for e in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
                    let comm = std::fs::read_to_string(e.path().join("comm")).unwrap_or_default();
                    if comm.trim() == "pi-bridge-agent"
                        && std::fs::read_link(e.path().join("ns/pid")).ok() == ns
                    {
                        if let Ok(pid) = e.file_name().to_string_lossy().parse::<u32>() {
                            if let Some(k) = vm_hwm_kb(pid) {
                                p.1 = p.1.max(k);
                            }
                        }
                    }
                }
                drop(p);
                std::thread::sleep(Duration::from_millis(20));
            }
        })
    };
    let out = child.wait_with_output()?;
    stop.store(true, Ordering::SeqCst);
    let _ = sampler.join();
    if !out.status.success() {
        bail!(
            "pii {parts}: {}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    parse_result(&String::from_utf8_lossy(&out.stdout), parts)?;
    let p = *peaks.lock().unwrap();
    Ok((p.0 as f64 / 1024.0, p.1 as f64 / 1024.0))
}

/// Every figure of one latency.
#[derive(Default)]
struct Run {
    rtt: u64,
    floor: Vec<f64>,
    bridge: Samples,
    bridge_uncached: Samples,
    sshfs_cold: Samples,
    sshfs_warm: Samples,
    sshfs_git_cold: Option<f64>,
    git_native: f64,
    ssh_cat_ms: f64,
    pi_bridge: Vec<f64>,
    /// A new connection (`controlPersist` off).
    first_line: Vec<f64>,
    /// A second pii on the connection a first one kept (pii's default).
    first_line_kept: Vec<f64>,
    first_line_mux: Vec<f64>,
}

/// The rows of one latency's table where sshfs's median (cold or warm) is below the bridge's,
/// each as "row: bridge vs sshfs"; the 100 MB read and `git status` included. `statSync
/// distinct` (first touches) is held against sshfs cold only: its warm process has seen them.
fn sshfs_ahead(run: &Run) -> Vec<String> {
    let mut out = Vec::new();
    for row in META_ROWS.iter().chain(["readFile 100MB"].iter()) {
        let Some(b) = med(&run.bridge, row) else {
            continue;
        };
        let cold = med(&run.sshfs_cold, row);
        let warm = if *row == "statSync distinct" {
            None
        } else {
            med(&run.sshfs_warm, row)
        };
        let best = [cold, warm].into_iter().flatten().fold(f64::NAN, f64::min);
        if best < b {
            out.push(format!(
                "{row}: bridge {} vs sshfs {}",
                fmt_ms(b),
                fmt_ms(best)
            ));
        }
    }
    if let Some(g) = run.sshfs_git_cold {
        let b = med(&run.bridge, "git status").unwrap_or(f64::NAN);
        if g < b {
            out.push(format!(
                "git status: bridge {} vs sshfs cold {}",
                fmt_ms(b),
                fmt_ms(g)
            ));
        }
    }
    out
}

fn get<'a>(s: &'a Samples, k: &str) -> &'a [f64] {
    s.get(k).map(|v| v.as_slice()).unwrap_or(&[])
}

fn med(s: &Samples, k: &str) -> Option<f64> {
    median(get(s, k))
}

const META_ROWS: [&str; 10] = [
    "statSync distinct",
    "statSync",
    "existsSync",
    "existsSync missing",
    "readFileSync 1KB",
    "readdirSync 100",
    "stat async",
    "access async",
    "readFile 1KB async",
    "readdir 100 async",
];

fn main() -> Result<()> {
    let opts = parse_args()?;
    let t_all = Instant::now();
    let pii = sibling("pii")?;
    sibling("pi-bridge-agent")?;
    if let Some(n) = opts.first_line_only {
        return first_line_only(pii, &opts.rtts, n);
    }
    if opts.only_big {
        return big_only(pii, &opts.rtts);
    }
    if opts.only_pi {
        let pii = std::env::var_os("BENCH_PII").map_or(pii, PathBuf::from);
        return pi_only(pii, &opts.rtts);
    }
    if let Some(sizes) = &opts.only_scale {
        let out = opts
            .scale_out
            .clone()
            .unwrap_or_else(|| paths::workspace_root().join("bench/scale.tsv"));
        return scale::scale_only(pii, sizes, if opts.quick { 1 } else { 3 }, &out);
    }
    if opts.only_hops {
        return hops::hops_only(pii, &opts.rtts, if opts.quick { 200 } else { 1000 });
    }
    if opts.only_startup {
        let pii = std::env::var_os("BENCH_PII").map_or(pii, PathBuf::from);
        return startup_only(pii, &opts.rtts);
    }
    let iters = if opts.quick { 30 } else { 200 };
    let git_files: usize = if opts.quick { 2000 } else { 20000 };

    eprintln!("== generating content (locally and in the remote fixture)");
    let gen = std::fs::read(paths::workspace_root().join("bench/gen.sh"))?;
    let sshd = Sshd::builder()
        .extra_config("Subsystem sftp internal-sftp")
        .start();
    let out = sshd.run_remote_in(
        "",
        &format!("mkdir benchdata && cd benchdata && sh -s -- {git_files}"),
        Some(&gen),
    );
    if !out.status.success() {
        bail!("remote gen.sh: {}", String::from_utf8_lossy(&out.stderr));
    }
    let local_project = tempfile::Builder::new()
        .prefix("pib-bench-local-")
        .tempdir()?;
    copy_dir(
        &paths::fixture("project"),
        &local_project.path().join("project"),
    );
    let lroot = local_project.path().join("project/benchdata");
    std::fs::create_dir(&lroot)?;
    let mut g = Command::new("sh");
    g.arg(paths::workspace_root().join("bench/gen.sh"))
        .arg(git_files.to_string())
        .current_dir(&lroot);
    output_ok(g, "local gen.sh")?;
    sh(&format!(
        "cd {} && git init -q -b main && git add -A -- . ':!benchdata' && git -c user.name=b -c user.email=b@invalid commit -qm fixture",
        local_project.path().join("project").display()
    ));

    let env = Env {
        pii,
        sshd,
        local_project,
        logdir: tempfile::tempdir()?,
        iters,
    };

    eprintln!("== plain local node");
    let local = fsbench_local(&env.local_root(), "meta,async,big,spawn,git", env.iters)?;
    let mut local_pi = vec![];
    for _ in 0..3 {
        local_pi.push(pi_session(
            &env,
            None,
            &env.local_project.path().join("project"),
            None,
        )?);
        sh(&format!(
            "cd {} && rm -rf created && git checkout -q notes.md",
            env.local_project.path().join("project").display()
        ));
    }

    // The agent gets installed once; every measured run finds it cached.
    first_line(&env, env.sshd.ssh_config())?;

    let mut runs = vec![];
    for &rtt in &opts.rtts {
        eprintln!("== round trip +{rtt} ms");
        let proxy = DelayProxy::start(env.sshd.addr(), Duration::from_micros(rtt * 500));
        let cfg = env.sshd.ssh_config_via(proxy.port());
        let mut run = Run {
            rtt,
            ..Run::default()
        };
        let iters = if rtt >= 20 { env.iters / 2 } else { env.iters };
        run.floor = floor(&env.sshd, &cfg, iters)?;
        eprintln!(
            "   floor median {}",
            fmt_ms(median(&run.floor).unwrap_or(0.0))
        );
        run.bridge = env.fsbench_bridge(&cfg, "meta,async,big,spawn,git", iters)?;
        run.bridge_uncached = env.fsbench_bridge_uncached(&cfg, "meta,async", iters)?;
        eprintln!("   bridge done");
        let (cat_ms, n) = ssh_cat(&env.sshd, &cfg, &format!("{}/big100m", env.remote_root()))?;
        if n != 100 << 20 {
            bail!("ssh cat read {n} bytes");
        }
        run.ssh_cat_ms = cat_ms;
        run.git_native = git_native(&env.sshd, &env.remote_root())?;
        {
            let m = Sshfs::mount(&env.sshd, &cfg, &env.remote_root())?;
            run.sshfs_git_cold = Some(git_capped(&m.path().join("gitrepo"), SSHFS_GIT_CAP)?);
        }
        {
            let m = Sshfs::mount(&env.sshd, &cfg, &env.remote_root())?;
            let root = m.path().to_path_buf();
            run.sshfs_cold = fsbench_local(&root, "meta,async,big", iters)?;
            run.sshfs_warm = fsbench_local(&root, "meta,async", iters)?;
        }
        eprintln!("   sshfs done");
        for _ in 0..3 {
            run.pi_bridge
                .push(pi_session(&env, Some(&cfg), Path::new("/"), None)?);
            reset_pi_changes_remote(&env.sshd);
        }
        for _ in 0..5 {
            run.first_line
                .push(first_line_in(&env, &cfg, &Master::Off)?);
        }
        let kept = tempfile::tempdir()?;
        first_line_in(&env, &cfg, &Master::Kept(kept.path()))?;
        for _ in 0..5 {
            run.first_line_kept
                .push(first_line_in(&env, &cfg, &Master::Kept(kept.path()))?);
        }
        stop_masters(kept.path());
        run.first_line_mux = first_line_mux(&env, &cfg, 5)?;
        eprintln!("   pi and first line done");
        runs.push(run);
        drop(proxy);
    }

    eprintln!("== peak RSS (no added latency)");
    let rss_read = peak_rss(&env, env.sshd.ssh_config(), "stream1g")?;
    let rss_spawn = peak_rss(&env, env.sshd.ssh_config(), "spawn1g")?;

    let report = render(
        &opts,
        &local,
        &local_pi,
        &runs,
        rss_read,
        rss_spawn,
        t_all.elapsed(),
        git_files,
    );
    println!("{report}");
    std::fs::write(&opts.out, &report)?;
    eprintln!("wrote {}", opts.out.display());
    Ok(())
}

fn machine_facts() -> String {
    let cpu = sh("grep -m1 'model name' /proc/cpuinfo | cut -d: -f2");
    format!(
        "- {} × {}, {} MB RAM, kernel {}, {}\n- node {}, {}, {}\n",
        sh("nproc"),
        cpu.trim(),
        sh("awk '/MemTotal/ {print int($2/1024)}' /proc/meminfo"),
        sh("uname -r"),
        sh(". /etc/os-release && echo $PRETTY_NAME"),
        sh("node --version"),
        sh("ssh -V 2>&1"),
        sh("sshfs --version 2>&1 | head -1"),
    )
}

#[allow(clippy::too_many_arguments)]
fn render(
    opts: &Opts,
    local: &Samples,
    local_pi: &[f64],
    runs: &[Run],
    rss_read: (f64, f64),
    rss_spawn: (f64, f64),
    took: Duration,
    git_files: usize,
) -> String {
    let mut r = String::new();
    let cmd = if opts.quick {
        "bash scripts/bench.sh --quick"
    } else {
        "bash scripts/bench.sh"
    };
    r.push_str("# pi-bridge benchmarks\n\n");
    r.push_str(&format!(
        "Written by `{cmd}` (release builds; one run, {:.0} s). Times in ms, `median / p99`. \
         Latency is injected by a TCP delay proxy in front of a loopback sshd (netem is unavailable), \
         as added round-trip time. \"floor\" = one echo round trip over an open ssh channel; \
         \"bridge\" = node under pii (its metadata cache on, the default); \"no cache\" = the same \
         with `PI_BRIDGE_CACHE=0`, every call a round trip; \"sshfs cold\" = first process on a fresh mount (its \
         `statSync distinct` touches 100 never-seen paths), \"warm\" = a second process on the same \
         mount. The remote user is non-root.\n\n",
        took.as_secs_f64()
    ));
    r.push_str("## Machine\n\n");
    r.push_str(&machine_facts());
    r.push_str(&format!(
        "- load average at the end of the run: {} (other builds and tests may share these cores)\n",
        sh("cut -d' ' -f1-3 /proc/loadavg")
    ));
    r.push('\n');

    for run in runs {
        let fl = median(&run.floor);
        r.push_str(&format!("## +{} ms round trip\n\n", run.rtt));
        r.push_str(&format!(
            "floor (ssh echo round trip): {}\n\n",
            fmt_med_p99(&run.floor)
        ));
        r.push_str("| operation | local | bridge | no cache | sshfs cold | sshfs warm | bridge ÷ local | bridge − floor | no cache − floor |\n|---|---|---|---|---|---|---|---|---|\n");
        let minus_floor = |v: Option<f64>| match (v, fl) {
            (Some(b), Some(f)) => format!("{:+.3}", b - f),
            _ => "–".into(),
        };
        for row in META_ROWS.iter().chain(["spawn true"].iter()) {
            let b = med(&run.bridge, row);
            r.push_str(&format!(
                "| {row} | {} | {} | {} | {} | {} | {} | {} | {} |\n",
                fmt_med_p99(get(local, row)),
                fmt_med_p99(get(&run.bridge, row)),
                fmt_med_p99(get(&run.bridge_uncached, row)),
                fmt_med_p99(get(&run.sshfs_cold, row)),
                fmt_med_p99(get(&run.sshfs_warm, row)),
                fmt_ratio(b, med(local, row)),
                minus_floor(b),
                minus_floor(med(&run.bridge_uncached, row)),
            ));
        }
        let mbps = |ms: Option<f64>| ms.map(|m| 100.0 / (m / 1000.0));
        let fmt_mbps = |v: Option<f64>| v.map(|x| format!("{x:.0} MB/s")).unwrap_or("–".into());
        let b100 = mbps(med(&run.bridge, "readFile 100MB"));
        let cat = mbps(Some(run.ssh_cat_ms));
        r.push_str(&format!(
            "\n- 100 MB readFile: local {}, bridge {}, sshfs {}, `ssh cat` {} (first byte to EOF) → bridge = {:.0}% of ssh cat\n",
            fmt_mbps(mbps(med(local, "readFile 100MB"))),
            fmt_mbps(b100),
            fmt_mbps(mbps(med(&run.sshfs_cold, "readFile 100MB"))),
            fmt_mbps(cat),
            b100.zip(cat).map(|(b, c)| 100.0 * b / c).unwrap_or(0.0)
        ));
        r.push_str(&format!(
            "- `git status` of {git_files} files: local {}, remote-native {}, bridge {}, sshfs cold {} → sshfs cold ÷ bridge = {}\n",
            med(local, "git status").map(fmt_ms).unwrap_or("–".into()),
            fmt_ms(run.git_native),
            med(&run.bridge, "git status").map(fmt_ms).unwrap_or("–".into()),
            run.sshfs_git_cold
                .map(|v| if v >= ms(SSHFS_GIT_CAP) { format!("> {} (stopped)", fmt_ms(v)) } else { fmt_ms(v) })
                .unwrap_or("–".into()),
            fmt_ratio(run.sshfs_git_cold, med(&run.bridge, "git status")),
        ));
        r.push_str(&format!(
            "- scripted pi session (read, bash, edit, write; 3 runs): local {}, bridge {} → {}\n",
            fmt_med_p99(local_pi),
            fmt_med_p99(&run.pi_bridge),
            fmt_ratio(median(&run.pi_bridge), median(local_pi)),
        ));
        r.push_str(&format!(
            "- pii start → script's first line (agent installed; 5 runs): new connection {}; a second pii on the connection pii kept (`controlPersist`) {}; with the user's ssh ControlMaster already connected: {}\n\n",
            fmt_med_p99(&run.first_line),
            fmt_med_p99(&run.first_line_kept),
            fmt_med_p99(&run.first_line_mux)
        ));
    }
    r.push_str(&format!(
        "## Peak RSS (VmHWM, no added latency)\n\n| case | pii | agent | sum |\n|---|---|---|---|\n\
         | reading a 1 GB file (createReadStream) | {:.1} MB | {:.1} MB | {:.1} MB |\n\
         | remote process writes 1 GB to stdout | {:.1} MB | {:.1} MB | {:.1} MB |\n\n",
        rss_read.0,
        rss_read.1,
        rss_read.0 + rss_read.1,
        rss_spawn.0,
        rss_spawn.1,
        rss_spawn.0 + rss_spawn.1
    ));

    r.push_str("## Targets (issue 4)\n\n");
    let mark = |ok: bool| if ok { "**met**" } else { "**not met**" };
    for run in runs {
        let fl = median(&run.floor).unwrap_or(f64::NAN);
        let stat = med(&run.bridge_uncached, "statSync").unwrap_or(f64::NAN);
        let exists = med(&run.bridge_uncached, "existsSync").unwrap_or(f64::NAN);
        let hit = med(&run.bridge, "statSync").unwrap_or(f64::NAN);
        let hit_exists = med(&run.bridge, "existsSync").unwrap_or(f64::NAN);
        let hit_missing = med(&run.bridge, "existsSync missing").unwrap_or(f64::NAN);
        let spawn = med(&run.bridge, "spawn true").unwrap_or(f64::NAN);
        let first = median(&run.first_line).unwrap_or(f64::NAN);
        let pi_b = median(&run.pi_bridge).unwrap_or(f64::NAN);
        let pi_l = median(local_pi).unwrap_or(f64::NAN);
        let git_b = med(&run.bridge, "git status").unwrap_or(f64::NAN);
        let b100 = med(&run.bridge, "readFile 100MB").unwrap_or(f64::NAN);
        let warm = med(&run.sshfs_warm, "statSync").unwrap_or(f64::NAN);
        r.push_str(&format!("At +{} ms (floor {}):\n\n", run.rtt, fmt_ms(fl)));
        r.push_str(&format!(
            "- uncached sync metadata median ≤ floor + 0.15 ms (no cache): statSync {} (gap {:+.3}), existsSync {} → {}\n",
            fmt_ms(stat),
            stat - fl - 0.15,
            fmt_ms(exists),
            mark(stat <= fl + 0.15 && exists <= fl + 0.15)
        ));
        r.push_str(&format!(
            "- repeated metadata (cache hit) ≤ 0.02 ms and below sshfs warm ({}): statSync {}, existsSync {}, existsSync missing {} → {}\n",
            fmt_ms(warm),
            fmt_ms(hit),
            fmt_ms(hit_exists),
            fmt_ms(hit_missing),
            mark(hit.max(hit_exists).max(hit_missing) <= 0.02 && hit < warm)
        ));
        r.push_str(&format!(
            "- spawn of `true` to exit ≤ floor + 2 ms: {} (gap {:+.2}) → {}\n",
            fmt_ms(spawn),
            spawn - fl - 2.0,
            mark(spawn <= fl + 2.0)
        ));
        r.push_str(&format!(
            "- pii start → first line ≤ 300 ms: {} → {} (with a ControlMaster already connected: {})\n",
            fmt_ms(first),
            mark(first <= 300.0),
            fmt_ms(median(&run.first_line_mux).unwrap_or(f64::NAN))
        ));
        let kept = median(&run.first_line_kept).unwrap_or(f64::NAN);
        r.push_str(&format!(
            "- a second pii on pii's kept connection ≤ 200 ms: {} → {}\n",
            fmt_ms(kept),
            mark(kept <= 200.0)
        ));
        let ahead = sshfs_ahead(run);
        r.push_str(&format!(
            "- no row where sshfs (cold or warm) beats the bridge: {} → {}\n",
            if ahead.is_empty() {
                "none".to_string()
            } else {
                ahead.join("; ")
            },
            mark(ahead.is_empty())
        ));
        if run.rtt == 0 {
            r.push_str(&format!(
                "- pi session ≤ 1.2× local: {} vs {} = {:.2}× → {}\n",
                fmt_ms(pi_b),
                fmt_ms(pi_l),
                pi_b / pi_l,
                mark(pi_b <= 1.2 * pi_l)
            ));
        } else {
            r.push_str(&format!(
                "- pi session ≤ local + 10 round trips ({} ms): {} vs {} → {}\n",
                fmt_ms(pi_l + 10.0 * (fl.max(run.rtt as f64))),
                fmt_ms(pi_b),
                fmt_ms(pi_l),
                mark(pi_b <= pi_l + 10.0 * fl.max(run.rtt as f64))
            ));
        }
        let sshfs_git = run.sshfs_git_cold.unwrap_or(f64::NAN);
        r.push_str(&format!(
            "- git status ≤ remote-native + 1 round trip ({} + {}): {} → {}; ≥ 10× faster than sshfs cold ({}): {:.1}× → {}\n",
            fmt_ms(run.git_native),
            fmt_ms(fl),
            fmt_ms(git_b),
            mark(git_b <= run.git_native + fl),
            fmt_ms(sshfs_git),
            sshfs_git / git_b,
            mark(sshfs_git >= 10.0 * git_b)
        ));
        let cat_rate = 100.0 / (run.ssh_cat_ms / 1000.0);
        let b_rate = 100.0 / (b100 / 1000.0);
        r.push_str(&format!(
            "- 100 MB read ≥ 50% of ssh cat: {:.0} vs {:.0} MB/s = {:.0}% → {}\n\n",
            b_rate,
            cat_rate,
            100.0 * b_rate / cat_rate,
            mark(b_rate >= 0.5 * cat_rate)
        ));
    }
    r.push_str(&format!(
        "- peak RSS ≤ 64 MB for pii + agent: reading 1 GB {:.1} MB → {}; 1 GB stdout {:.1} MB → {}\n",
        rss_read.0 + rss_read.1,
        mark(rss_read.0 + rss_read.1 <= 64.0),
        rss_spawn.0 + rss_spawn.1,
        mark(rss_spawn.0 + rss_spawn.1 <= 64.0)
    ));
    r
}
