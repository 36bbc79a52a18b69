//! The preload's metadata and small-file cache over a real sshd: it is used (hits), and it is
//! never stale where the contract says it cannot be.
//!
//! - After a command the script ran has finished (execSync, spawnSync, exec, spawn 'close'),
//!   every stat, exists and read sees what the command did: a model-based run of random remote
//!   changes, compared after each command with what the script expects.
//! - A change made by someone else (a separate ssh session) becomes visible without any call
//!   of the script's own, through the agent's inotify feed.
//! - What a program looked up when it started is prefetched in its next run (learned per
//!   package version).
//! - In a project big enough that the agent is still arming its watches (in the background,
//!   shallowest first) when the script starts, a directory at the bottom of the tree, changed by
//!   a command in every round, is never answered stale: before its watch exists by round trips,
//!   after from the cache.

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use pi_bridge_tests::pii::{assert_success, cache_home, pii_ssh};
use pi_bridge_tests::Sshd;
use serde_json::Value;

fn script_file(dir: &std::path::Path, body: &str) -> std::path::PathBuf {
    let p = dir.join("script.cjs");
    std::fs::write(&p, body).unwrap();
    p
}

/// Runs `body` through `pii --ssh` to the end; its stdout parsed as JSON.
fn run_json_script(sshd: &Sshd, what: &str, body: &str) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let script = script_file(dir.path(), body);
    let log = dir.path().join("pii.log");
    let out = pii_ssh(sshd, &log, &script, &[], &[])
        .output()
        .expect("run pii");
    assert_success(what, &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{what}: output is not JSON ({e}): {stdout}"))
}

/// Random remote changes (write, append, rm, mv, chmod, mkdir, rmdir) by every way of running a
/// command; after each command the whole view (existsSync, statSync size/mode, readFileSync,
/// lstat of missing paths) must match the model. Each view is read twice before the command so
/// the cache holds it.
const MODEL_SCRIPT: &str = r#"
const fs = require('fs');
const cp = require('child_process');
const N = 24, D = 4, ROUNDS = 120;
let seed = 0x2545f491;
const rnd = (n) => { seed ^= seed << 13; seed >>>= 0; seed ^= seed >>> 17; seed ^= seed << 5; seed >>>= 0; return seed % n; };
const stats = globalThis[Symbol.for('pi-bridge.cache')];
fs.mkdirSync('m', { recursive: true });
const files = []; // model: content or null, mode
for (let i = 0; i < N; i++) { fs.writeFileSync(`m/f${i}`, `v0-${i}`); files.push({ c: `v0-${i}`, mode: 0o644 }); fs.chmodSync(`m/f${i}`, 0o644); }
const dirs = new Array(D).fill(false);
function view() {
  const v = {};
  for (let i = 0; i < N; i++) {
    const p = `m/f${i}`;
    if (!fs.existsSync(p)) { v[p] = null; try { fs.lstatSync(p); v[p] = 'lstat found it'; } catch (e) { if (e.code !== 'ENOENT') v[p] = e.code; } continue; }
    const st = fs.statSync(p);
    v[p] = { c: fs.readFileSync(p, 'utf8'), size: st.size, mode: st.mode & 0o777 };
  }
  for (let k = 0; k < D; k++) v[`m/d${k}`] = fs.existsSync(`m/d${k}`) && fs.statSync(`m/d${k}`).isDirectory();
  return v;
}
function expected() {
  const v = {};
  files.forEach((f, i) => { v[`m/f${i}`] = f.c === null ? null : { c: f.c, size: Buffer.byteLength(f.c), mode: f.mode }; });
  dirs.forEach((d, k) => { v[`m/d${k}`] = d; });
  return v;
}
function plan(round) {
  const cmds = [];
  const n = 1 + rnd(4);
  for (let j = 0; j < n; j++) {
    const i = rnd(N), k = rnd(N), f = files[i];
    switch (rnd(7)) {
      case 0: { const c = `w${round}-${j}`; cmds.push(`printf %s ${c} > m/f${i}`); if (f.c === null) f.mode = 0o644; f.c = c; break; }
      case 1: if (f.c !== null) { cmds.push(`printf %s a >> m/f${i}`); f.c += 'a'; } break;
      case 2: if (f.c !== null) { cmds.push(`rm m/f${i}`); f.c = null; } break;
      case 3: if (f.c !== null && i !== k) { cmds.push(`mv m/f${i} m/f${k}`); files[k] = { c: f.c, mode: f.mode }; files[i] = { c: null, mode: 0o644 }; } break;
      case 4: if (f.c !== null) { const mode = [0o600, 0o644, 0o755][rnd(3)]; cmds.push(`chmod ${mode.toString(8)} m/f${i}`); f.mode = mode; } break;
      case 5: { const d = rnd(D); if (dirs[d]) { cmds.push(`rmdir m/d${d}`); dirs[d] = false; } else { cmds.push(`mkdir m/d${d}`); dirs[d] = true; } break; }
      default: if (f.c !== null) { cmds.push(`: > m/f${i}`); f.c = ''; } break;
    }
  }
  return cmds.length ? cmds.join(' && ') : 'true';
}
const mismatches = [];
function check(round, how) {
  const got = view(), want = expected();
  for (const key of Object.keys(want)) {
    if (JSON.stringify(got[key]) !== JSON.stringify(want[key])) mismatches.push({ round, how, key, got: got[key], want: want[key] });
  }
}
const ways = ['execSync', 'spawnSync', 'exec', 'spawn'];
(async () => {
  for (let round = 0; round < ROUNDS; round++) {
    view(); view(); // fill the cache
    const cmd = plan(round);
    const how = ways[round % ways.length];
    if (how === 'execSync') cp.execSync(cmd);
    else if (how === 'spawnSync') { const r = cp.spawnSync('sh', ['-c', cmd]); if (r.status !== 0) throw new Error(String(r.stderr)); }
    else if (how === 'exec') await new Promise((res, rej) => cp.exec(cmd, (e) => (e ? rej(e) : res())));
    else await new Promise((res, rej) => cp.spawn('sh', ['-c', cmd], { stdio: 'ignore' }).on('close', (code) => (code === 0 ? res() : rej(new Error('exit ' + code)))));
    check(round, how);
  }
  console.log(JSON.stringify({ mismatches: mismatches.slice(0, 20), count: mismatches.length, stats: stats ? { ...stats } : null }));
})().catch((e) => { console.log(JSON.stringify({ fatal: String(e.stack) })); process.exitCode = 1; });
"#;

#[test]
fn after_a_command_finishes_the_cache_shows_everything_it_did() {
    let sshd = Sshd::start();
    let v = run_json_script(&sshd, "the model script", MODEL_SCRIPT);
    assert_eq!(v["count"], 0, "stale or wrong answers after a command: {v}");
    let stats = &v["stats"];
    assert!(
        stats.is_object(),
        "the preload exposes no cache counters: {v}"
    );
    let hits = stats["hits"].as_u64().unwrap_or(0);
    let misses = stats["misses"].as_u64().unwrap_or(0);
    eprintln!("model run: 120 rounds, cache hits {hits}, misses {misses}, stats {stats}");
    // Each round reads the whole view three times and changes at most four files: most of the
    // second and third reads are hits. A cache that never hits proves nothing.
    assert!(
        hits > misses,
        "the cache is hardly used ({hits} hits, {misses} misses)"
    );
}

/// The script caches a negative lookup and a file's bytes, says "ready", then polls; the test
/// changes both through a separate ssh session; the script must see both changes.
const EXTERNAL_SCRIPT: &str = r#"
const fs = require('fs');
const stats = globalThis[Symbol.for('pi-bridge.cache')];
fs.writeFileSync('ext-old.txt', 'before');
for (let i = 0; i < 3; i++) { fs.existsSync('ext-new.txt'); fs.readFileSync('ext-old.txt', 'utf8'); }
const hitsBefore = stats ? stats.hits : 0;
console.log('ready');
const deadline = Date.now() + 30000;
let sawNew = false, sawOld = false, polls = 0;
while (Date.now() < deadline && !(sawNew && sawOld)) {
  polls++;
  sawNew = sawNew || fs.existsSync('ext-new.txt');
  sawOld = sawOld || fs.readFileSync('ext-old.txt', 'utf8') === 'after';
  if (!(sawNew && sawOld)) { const t = Date.now() + 2; while (Date.now() < t); }
}
console.log(JSON.stringify({ sawNew, sawOld, polls, hits: stats ? stats.hits - hitsBefore : null,
  newContent: sawNew ? fs.readFileSync('ext-new.txt', 'utf8') : null }));
"#;

#[test]
fn a_change_by_someone_else_reaches_the_cache() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let script = script_file(dir.path(), EXTERNAL_SCRIPT);
    let log = dir.path().join("pii.log");
    let mut child = pii_ssh(&sshd, &log, &script, &[], &[])
        .stdout(Stdio::piped())
        .spawn()
        .expect("run pii");
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first = lines.next().and_then(Result::ok).unwrap_or_default();
    assert_eq!(
        first,
        "ready",
        "pii log:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
    // Someone else, on the remote: a new file and a rewrite, not through this pii (the fixture
    // enters the remote's namespaces directly).
    sshd.run_remote_ok("printf %s hello > ext-new.txt && printf %s after > ext-old.txt");
    let result = lines.next().and_then(Result::ok).unwrap_or_default();
    let status = child.wait().unwrap();
    let v: Value = serde_json::from_str(&result).unwrap_or_else(|e| {
        panic!(
            "script output is not JSON ({e}): {result}\npii log:\n{}",
            std::fs::read_to_string(&log).unwrap_or_default()
        )
    });
    assert!(status.success(), "pii: {status}");
    eprintln!("external change: {v}");
    assert_eq!(v["sawNew"], true, "{v}");
    assert_eq!(v["sawOld"], true, "{v}");
    assert_eq!(v["newContent"], "hello", "{v}");
    // The polls before the change were answered from the cache.
    assert!(
        v["hits"].as_u64().unwrap_or(0) > 0,
        "no cache hits while polling: {v}"
    );
}

/// What a program looks up when it starts is learned by pii (per package and version, in its
/// cache dir) and comes with the feed's first item (the prefetch) in its next run: then those
/// lookups are answered without a round trip, and the bytes are right. Another version of the
/// package does not get the list.
const PREFETCH_SCRIPT: &str = r#"
const fs = require('fs');
const stats = globalThis[Symbol.for('pi-bridge.cache')];
const before = stats ? { ...stats } : null;
const r = {
  agents: fs.existsSync('AGENTS.md') && fs.readFileSync('AGENTS.md', 'utf8'),
  settings: fs.existsSync('.pi/settings.json'),
  skills: fs.existsSync('.pi/skills/x/SKILL.md'),
  claude: fs.existsSync('CLAUDE.md'),
  git: fs.statSync('.git').isDirectory(),
  root: fs.statSync(process.cwd()).isDirectory() && fs.existsSync('.'),
  head: fs.readFileSync('.git/HEAD', 'utf8'),
};
console.log(JSON.stringify({ r, hits: stats.hits - before.hits, misses: stats.misses - before.misses }));
"#;

#[test]
fn what_a_program_looked_up_at_startup_is_prefetched_next_time() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    // The script is a package's: pii keys what it learns by the package's name and version.
    let script = script_file(dir.path(), PREFETCH_SCRIPT);
    let version = |v: &str| {
        let json = format!(r#"{{"name":"startup-probe","version":"{v}"}}"#);
        std::fs::write(dir.path().join("package.json"), json).unwrap();
    };
    let log = dir.path().join("pii.log");
    let run = |what: &str| -> Value {
        let out = pii_ssh(&sshd, &log, &script, &[], &[])
            .output()
            .expect("run pii");
        assert_success(what, &out, &log);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let v: Value = serde_json::from_str(stdout.trim())
            .unwrap_or_else(|e| panic!("{what}: output is not JSON ({e}): {stdout}"));
        eprintln!("{what}: {v}");
        let agents = String::from_utf8(sshd.read_remote("AGENTS.md")).unwrap();
        assert_eq!(v["r"]["agents"], agents.as_str(), "{v}");
        for (k, want) in [("settings", false), ("skills", false), ("claude", false)] {
            assert_eq!(v["r"][k], want, "{k}: {v}");
        }
        assert_eq!(v["r"]["git"], true, "{v}");
        assert_eq!(v["r"]["root"], true, "{v}");
        assert_eq!(v["r"]["head"], "ref: refs/heads/main\n", "{v}");
        v
    };
    version("1.0.0");
    let first = run("first run (nothing learned yet)");
    assert!(first["misses"].as_u64().unwrap() >= 7, "{first}");
    let file = cache_home(&log).join("pi-bridge/prefetch/startup-probe@1.0.0.json");
    let saved: Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    let paths = saved["paths"].as_array().unwrap();
    for p in [".", "AGENTS.md", ".git", ".git/HEAD", ".pi", "CLAUDE.md"] {
        assert!(paths.iter().any(|x| x == p), "{p} not learned: {saved}");
    }
    let second = run("second run (learned)");
    assert_eq!(
        second["misses"], 0,
        "a startup lookup went to the remote: {second}"
    );
    assert!(second["hits"].as_u64().unwrap() >= 9, "{second}");
    version("1.0.1");
    let other = run("another version of the package");
    assert_eq!(other["misses"], first["misses"], "{other}");
}

/// Directories of the big project: the agent needs well over a second to watch them all.
const BIG_DIRS: usize = 60_000;

/// `deep` is the last directory the agent watches (the only one at depth 4). Each round reads
/// its stat, its listing, a file's stat and bytes twice (so the cache holds whatever may be
/// cached), has a command change all of them and print the truth, and compares. A round counts
/// as served from the cache when its second listing of `deep` was a hit.
const ARMING_SCRIPT: &str = r#"
const fs = require('fs');
const cp = require('child_process');
const stats = globalThis[Symbol.for('pi-bridge.cache')];
const D = 'big/g000/d00000/deep';
function view() {
  const st = fs.statSync(D), f = fs.statSync(D + '/f');
  return { size: st.size, nlink: st.nlink, mtimeMs: st.mtimeMs, list: fs.readdirSync(D).sort(), data: fs.readFileSync(D + '/f', 'utf8'), fsize: f.size };
}
const mismatches = [], cached = [];
const t0 = Date.now();
for (let i = 0; i < 400 && Date.now() - t0 < 60000; i++) {
  const hits = stats.listHits;
  view(); view();
  cached.push(stats.listHits > hits);
  const out = cp.execSync(`printf r${i} > ${D}/f && mkdir ${D}/s${i} && stat -c '%s %h %.9Y' ${D} && ls -A ${D}`, { encoding: 'utf8' }).trim().split('\n');
  const [size, nlink, mtime] = out[0].split(' ');
  const want = { size: +size, nlink: +nlink, mtimeMs: Math.round(parseFloat(mtime) * 1000), list: out.slice(1).sort(), data: `r${i}`, fsize: `r${i}`.length };
  const got = view();
  got.mtimeMs = Math.round(got.mtimeMs);
  if (JSON.stringify(got) !== JSON.stringify(want)) mismatches.push({ round: i, got, want });
  if (cached.length >= 20 && cached.slice(-10).every(Boolean)) break;
}
console.log(JSON.stringify({ mismatches: mismatches.slice(0, 5), count: mismatches.length, cached }));
"#;

#[test]
fn a_directory_not_watched_yet_is_never_answered_stale() {
    let sshd = Sshd::builder().empty_project().no_git().start();
    sshd.run_remote_ok(&format!(
        "seq 0 {} | awk '{{ printf \"big/g%03d/d%05d\\n\", $1 / 200, $1 }}' | xargs mkdir -p && \
         mkdir big/g000/d00000/deep && printf x > big/g000/d00000/deep/f",
        BIG_DIRS - 1
    ));
    let v = run_json_script(&sshd, "arming", ARMING_SCRIPT);
    let cached: Vec<bool> = v["cached"]
        .as_array()
        .unwrap_or_else(|| panic!("no rounds: {v}"))
        .iter()
        .map(|c| c.as_bool() == Some(true))
        .collect();
    let first_hit = cached.iter().position(|c| *c);
    eprintln!(
        "{} rounds, the first served from the cache: {first_hit:?}",
        cached.len()
    );
    assert_eq!(v["count"], 0, "stale answers: {v}");
    // The rounds ran while `deep` was not watched yet (round trips), and after (the cache).
    assert!(
        !cached[0],
        "deep was already watched when the script began: arming was not in progress, so this \
         proved nothing: {v}"
    );
    assert!(
        first_hit.is_some(),
        "deep was never served from the cache: {v}"
    );
}
