//! Trust (protocol/src/trust.rs, preload/trust.cjs): without `--trust-project`, nothing of the
//! remote project makes pi run code, start a process or write a file on this machine, whatever
//! pi's own trust answer is (`--approve` throughout). Proven with the real pi over the ssh
//! fixture and the fake LLM. Code from the remote, when it runs, writes a marker into pi's agent
//! dir (local, root's 0700 temp dir: the remote user cannot write there even through the /tmp
//! the fixture shares), so a marker is proof of local execution.
//!
//! - `remote_code_runs_only_with_trust_project`: `.pi/extensions`, settings `extensions` and
//!   `packages` load only with the flag; one notice names what was hidden.
//! - `the_notice_names_exactly_what_the_root_holds_before_the_first_answer`: the notice from the
//!   agent's check in `hello`, for each kind of finding, before the first answer; none for a
//!   root with only allowed settings.
//! - `the_gate_holds_at_every_cwd_pi_adopts`: a session (in the local agent dir) whose header
//!   names `<project>/sub` as its cwd: pi adopts it, and `sub/.pi/extensions` stays hidden.
//! - `a_project_session_dir_is_never_used`: `sessionDir` in the project's settings would make
//!   pi create a local directory of the project's choosing and write there.
//! - `mcp_servers_of_a_project_never_start_a_process_here`: `.pi/mcp.json` servers (no cwd,
//!   `/tmp`, pi's agent dir, `~`) and `!command` env values start nothing on this machine, also
//!   with `--trust-project` (then they run on the remote); plain pi proves they would.
//! - `untrusted_view_of_the_project_in_detail`: the gate on every read path, at any depth.

use std::path::{Path, PathBuf};

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::{json, Value};

const NOTICE: &str = "pii: hiding the remote project's";

/// TypeScript for pi's extension loader that writes `markers/<name>` in pi's agent dir (local)
/// when it is loaded.
fn extension(name: &str) -> String {
    format!(
        "import {{ mkdirSync, writeFileSync }} from \"node:fs\";\n\
         const d = process.env.PI_CODING_AGENT_DIR + \"/markers\";\n\
         mkdirSync(d, {{ recursive: true }});\n\
         writeFileSync(d + \"/{name}\", \"loaded\");\n\
         export default function () {{}}\n"
    )
}

fn setup_remote(sshd: &Sshd) -> Vec<u8> {
    sshd.run_remote_ok("mkdir -p .pi/extensions tools vendor/evilpkg");
    sshd.write_remote(
        ".pi/extensions/evil.ts",
        extension("dir-extension").as_bytes(),
    );
    sshd.write_remote("tools/evil2.ts", extension("settings-extension").as_bytes());
    sshd.write_remote(
        "vendor/evilpkg/package.json",
        br#"{"name":"evilpkg","version":"1.0.0","pi":{"extensions":["./index.ts"]}}"#,
    );
    sshd.write_remote("vendor/evilpkg/index.ts", extension("package").as_bytes());
    let settings = serde_json::to_vec_pretty(&json!({
        "packages": ["../vendor/evilpkg"],
        "extensions": ["../tools/evil2.ts"],
        "quietStartup": true
    }))
    .unwrap();
    sshd.write_remote(".pi/settings.json", &settings);
    settings
}

/// What a pi run left and said.
struct Run {
    stdout: String,
    stderr: String,
    markers: Vec<String>,
    agent_dir: tempfile::TempDir,
}

/// `extra`, then `-p hello`, `--approve` (pi 1.x) and [`PI_ARGS`] (without `--no-session` when
/// `session`).
fn pi_args<'a>(extra: &[&'a str], session: bool) -> Vec<&'a str> {
    let mut args: Vec<&str> = extra.to_vec();
    args.extend(["-p", "hello"]);
    if paths::pi().major() >= 1 {
        args.push("--approve");
    }
    args.extend(PI_ARGS.iter().filter(|a| !session || **a != "--no-session"));
    args
}

/// `pi -p hello --approve` (1.x: pi's own trust says yes, so only pii's gate is tested) through
/// pii with `flags`, the fake LLM answering `script`; `session`: keep pi's sessions (no
/// `--no-session`); `extra`: more pi arguments; `prepare`: fills the agent dir first.
fn run_pi(
    sshd: &Sshd,
    flags: &[&str],
    script: Value,
    session: bool,
    extra: &[&str],
    prepare: &dyn Fn(&Path),
) -> Run {
    let llm = FakeLlm::start(script);
    let (agent_dir, env) = pi_env(&llm);
    prepare(agent_dir.path());
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let args = pi_args(extra, session);
    let mut cmd = pii_ssh(sshd, &log, &paths::pi_cli(), flags, &args);
    cmd.envs(env);
    let out = cmd.output().expect("run pii");
    assert_success("pii running pi", &out, &log);
    Run {
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
        markers: markers_in(&agent_dir.path().join("markers")),
        agent_dir,
    }
}

fn markers_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .map(|d| {
            d.map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

const NOTHING: &dyn Fn(&Path) = &|_| {};

#[test]
fn remote_code_runs_only_with_trust_project() {
    let sshd = Sshd::start();
    let settings = setup_remote(&sshd);

    // Default: nothing from the remote runs here, and pii says so once.
    let r = run_pi(
        &sshd,
        &[],
        json!([llm::text("TRUST-ANSWER")]),
        false,
        &[],
        NOTHING,
    );
    assert!(r.stdout.contains("TRUST-ANSWER"), "{}", r.stdout);
    assert_eq!(
        r.markers,
        Vec::<String>::new(),
        "remote code ran locally without --trust-project; stderr: {}",
        r.stderr
    );
    assert_eq!(r.stderr.matches(NOTICE).count(), 1, "{}", r.stderr);
    let notice = r.stderr.lines().find(|l| l.contains(NOTICE)).unwrap();
    for part in [
        ".pi/extensions",
        "extensions/packages of .pi/settings.json",
        "any subdirectory",
        "--trust-project",
    ] {
        assert!(notice.contains(part), "{notice}");
    }
    // Hiding is a view: the remote files are untouched.
    assert_eq!(sshd.read_remote(".pi/settings.json"), settings);
    assert!(sshd.remote_exists(".pi/extensions/evil.ts"));

    // --trust-project: all three load (so the test above could have failed), and no notice.
    let r = run_pi(
        &sshd,
        &["--trust-project"],
        json!([llm::text("TRUST-ANSWER")]),
        false,
        &[],
        NOTHING,
    );
    assert_eq!(
        r.markers,
        vec!["dir-extension", "package", "settings-extension"],
        "stderr: {}",
        r.stderr
    );
    assert!(!r.stderr.contains(NOTICE), "{}", r.stderr);
}

#[test]
fn no_notice_when_there_is_nothing_to_hide() {
    let sshd = Sshd::start();
    let r = run_pi(&sshd, &[], json!([llm::text("X")]), false, &[], NOTHING);
    assert!(!r.stderr.contains(NOTICE), "{}", r.stderr);
}

/// The notice comes from the agent's check in `hello` (no round trip of its own): for each kind
/// of thing the gate hides at the root it names exactly that, it is printed before the program's
/// first need of the remote is answered, and a root with only allowed settings gets none.
#[test]
fn the_notice_names_exactly_what_the_root_holds_before_the_first_answer() {
    let sshd = Sshd::start();
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("pii.log");
    let script = dir.path().join("cwd.cjs");
    // process.cwd() waits for `session.info`, which pii answers after printing the notice.
    std::fs::write(
        &script,
        "process.stderr.write('SCRIPT-CWD ' + process.cwd() + '\\n');\n",
    )
    .unwrap();
    let run = |what: &str| -> String {
        let out = pii_ssh(&sshd, &log, &script, &[], &[]).output().unwrap();
        assert_success(what, &out, &log);
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let ran = stderr
            .find("SCRIPT-CWD ")
            .unwrap_or_else(|| panic!("{what}: {stderr}"));
        if let Some(at) = stderr.find(NOTICE) {
            assert!(
                at < ran,
                "{what}: the notice came after the first answer: {stderr}"
            );
        }
        assert!(stderr.matches(NOTICE).count() <= 1, "{what}: {stderr}");
        stderr
            .lines()
            .find(|l| l.contains(NOTICE))
            .unwrap_or_default()
            .to_string()
    };
    let hiding = |list: &str| {
        format!("{NOTICE} {list} (and the same in any subdirectory: from the remote, they would run code or write files on this machine); --trust-project to allow")
    };

    assert_eq!(run("nothing there"), "");
    sshd.run_remote_ok(
        "mkdir -p .pi && echo '{\"theme\":\"dark\",\"defaultModel\":\"m\"}' > .pi/settings.json",
    );
    assert_eq!(run("only allowed settings"), "");
    sshd.run_remote_ok("echo '{\"mcpServers\":{}}' > .pi/mcp.json");
    assert_eq!(run("mcp.json"), hiding(".pi/mcp.json"));
    sshd.run_remote_ok(
        "rm .pi/mcp.json && echo '{\"theme\":\"dark\",\"npmCommand\":[\"x\"],\"shellPath\":\"/x\"}' > .pi/settings.json",
    );
    assert_eq!(
        run("hidden settings keys"),
        hiding("npmCommand/shellPath of .pi/settings.json")
    );
    // A dangling symlink is there all the same; a settings file that is no object is named too.
    sshd.run_remote_ok("ln -s /nowhere .pi/extensions && echo '[1]' > .pi/settings.json");
    assert_eq!(
        run("extensions link, settings no object"),
        hiding(".pi/extensions and .pi/settings.json (not a plain JSON object: pi sees it empty)")
    );
    // --trust-project: the agent is not asked, and nothing is said.
    let out = pii_ssh(&sshd, &log, &script, &["--trust-project"], &[])
        .output()
        .unwrap();
    assert_success("--trust-project", &out, &log);
    assert!(!String::from_utf8_lossy(&out.stderr).contains(NOTICE));
}

/// Hole 4 of issue 12: the gate covered `<root>/.pi` only. A session whose header cwd is a
/// subdirectory (planted in the local sessions dir here; pi 1.x's `/resume` lists such
/// sessions) made pi load `sub/.pi/extensions`.
#[test]
fn the_gate_holds_at_every_cwd_pi_adopts() {
    let sshd = Sshd::start();
    sshd.run_remote_ok("mkdir -p sub/.pi/extensions");
    sshd.write_remote(
        "sub/.pi/extensions/evil.ts",
        extension("sub-extension").as_bytes(),
    );
    let sub = format!("{}/sub", sshd.project());
    let llm = FakeLlm::start(json!([llm::text("SUB-ANSWER")]));
    let (agent_dir, env) = pi_env(&llm);
    // The session, planted where the user's own sessions are (pi's agent dir).
    let planted = agent_dir.path().join("sessions/planted/planted.jsonl");
    std::fs::create_dir_all(planted.parent().unwrap()).unwrap();
    std::fs::write(
        &planted,
        format!(
            "{}\n",
            json!({"type": "session", "version": 3, "id": "0193a7b4-0000-7000-8000-000000000012", "timestamp": "2026-12-01T00:00:00.000Z", "cwd": sub})
        ),
    )
    .unwrap();
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let f = planted.to_string_lossy().into_owned();
    let args = pi_args(&["--session", f.as_str()], true);
    let mut cmd = pii_ssh(&sshd, &log, &paths::pi_cli(), &[], &args);
    cmd.envs(env);
    let out = cmd.output().expect("run pii");
    assert_success("pii resuming a session in a subdirectory", &out, &log);
    // pi adopted the subdirectory (its system prompt names it) …
    let prompt = llm::system_prompt(&llm.requests()[0]);
    assert!(
        prompt.contains(&pi_bridge_tests::prompt_cwd(&sub)),
        "pi did not adopt {sub}: {prompt:.2000}"
    );
    // … and nothing of sub/.pi/extensions ran here.
    assert_eq!(
        markers_in(&agent_dir.path().join("markers")),
        Vec::<String>::new(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(sshd.remote_exists("sub/.pi/extensions/evil.ts"));
}

/// Hole 3 of issue 12: `sessionDir` in the project's settings made pi create a laptop directory
/// of the project's choosing (`~/.bashrc.d` sources it on Fedora) and write there.
#[test]
fn a_project_session_dir_is_never_used() {
    let sshd = Sshd::start();
    let target = tempfile::tempdir().unwrap();
    let chosen = target.path().join("bashrc.d");
    sshd.run_remote_ok("mkdir -p .pi");
    sshd.write_remote(
        ".pi/settings.json",
        serde_json::to_string(&json!({"sessionDir": chosen, "theme": "dark"}))
            .unwrap()
            .as_bytes(),
    );
    let r = run_pi(
        &sshd,
        &[],
        json!([llm::text("SESSION-ANSWER")]),
        true,
        &[],
        NOTHING,
    );
    assert!(r.stdout.contains("SESSION-ANSWER"), "{}", r.stdout);
    assert!(
        !chosen.exists(),
        "pi wrote into the project's sessionDir {chosen:?}"
    );
    // The session went where the user's config says: pi's agent dir.
    let sessions = walk(&r.agent_dir.path().join("sessions"));
    assert!(
        sessions
            .iter()
            .any(|p| p.extension().is_some_and(|e| e == "jsonl")),
        "no session in the agent dir: {sessions:?}"
    );
    assert!(
        r.stderr.contains("sessionDir of .pi/settings.json"),
        "{}",
        r.stderr
    );
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut out = vec![];
    if let Ok(d) = std::fs::read_dir(dir) {
        for e in d.flatten() {
            let p = e.path();
            if p.is_dir() {
                out.extend(walk(&p));
            } else {
                out.push(p);
            }
        }
    }
    out
}

/// `.pi/mcp.json` whose servers, wherever they would run, write a marker into pi's agent dir
/// (only a local process can); the server without a cwd also leaves `mcp-ran-remote` in its cwd.
fn mcp_json(agent: &Path) -> String {
    let marker = |n: &str| {
        format!(
            "mkdir -p {a}/markers; echo $$ > {a}/markers/{n}",
            a = agent.display()
        )
    };
    let server = |n: &str, cwd: Option<&str>| {
        let mut s = json!({
            "command": "sh",
            "args": ["-c", format!("{}; echo ran > mcp-ran-remote-{n}; sleep 2", marker(&format!("mcp-{n}")))],
            "exposure": "direct",
            "env": {"PIB": format!("!{}; echo v", marker(&format!("mcp-env-{n}")))}
        });
        if let Some(c) = cwd {
            s["cwd"] = json!(c);
        }
        s
    };
    let agent_s = agent.to_string_lossy().into_owned();
    json!({"mcpServers": {
        "nocwd": server("nocwd", None),
        "tmp": server("tmp", Some("/tmp")),
        "agentdir": server("agentdir", Some(&agent_s)),
        "home": server("home", Some("~")),
    }})
    .to_string()
}

/// Issue 10 item 5: `.pi/mcp.json` never makes pi start a process here, whatever pi's own trust
/// says (`--approve`). Plain pi on a local copy shows what the same file does (pi 1.x: every
/// server and `!command` starts locally; pi 0.73 has no MCP and starts none).
#[test]
fn mcp_servers_of_a_project_never_start_a_process_here() {
    let sshd = Sshd::start();
    sshd.run_remote_ok("mkdir -p .pi");
    let script = json!([llm::text("MCP-ANSWER")]);
    let write = |agent: &Path| {
        sshd.write_remote(".pi/mcp.json", mcp_json(agent).as_bytes());
    };

    // Untrusted (pii's default), pi trusting: no process anywhere, the file is hidden.
    let r = run_pi(&sshd, &[], script.clone(), false, &[], &write);
    assert!(r.stdout.contains("MCP-ANSWER"), "{}", r.stdout);
    assert_eq!(r.markers, Vec::<String>::new(), "{}", r.stderr);
    assert!(r.stderr.contains(".pi/mcp.json"), "{}", r.stderr);
    let ran = sshd.run_remote_ok("ls; true");
    assert!(!ran.contains("mcp-ran-remote"), "{ran}");

    // --trust-project: still no process here (servers run on the remote, or are refused when
    // their cwd is a local directory).
    let r = run_pi(
        &sshd,
        &["--trust-project"],
        script.clone(),
        false,
        &[],
        &write,
    );
    assert_eq!(r.markers, Vec::<String>::new(), "{}", r.stderr);
    if paths::pi().major() >= 1 {
        assert!(
            sshd.remote_exists("mcp-ran-remote-nocwd"),
            "the trusted server without a cwd should have run on the remote: {}",
            r.stderr
        );
    }

    // The control: plain pi on a local copy of the project, trusting it.
    let llm = FakeLlm::start(script);
    let (agent_dir, env) = pi_env(&llm);
    let local = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(local.path().join(".pi")).unwrap();
    std::fs::write(
        local.path().join(".pi/mcp.json"),
        mcp_json(agent_dir.path()),
    )
    .unwrap();
    let args = pi_args(&[], false);
    let out = std::process::Command::new(paths::node())
        .arg(paths::pi_cli())
        .args(&args)
        .current_dir(local.path())
        .envs(env)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::thread::sleep(std::time::Duration::from_millis(500));
    let control = markers_in(&agent_dir.path().join("markers"));
    if paths::pi().major() >= 1 {
        for m in [
            "mcp-env-nocwd",
            "mcp-nocwd",
            "mcp-tmp",
            "mcp-agentdir",
            "mcp-home",
        ] {
            assert!(
                control.contains(&m.to_string()),
                "plain pi did not start {m}: {control:?}"
            );
        }
    } else {
        assert_eq!(control, Vec::<String>::new(), "pi 0.73 has no MCP");
    }
}

/// The view the preload gives node of an untrusted project, in detail (through `pii --local`,
/// which runs the same preload): at any depth, `.pi/extensions` and `.pi/mcp.json` do not exist
/// for any call, and `.pi/settings.json` shows only the allowed keys through every read path;
/// pi's whole-file write-back keeps the hidden keys, other writes are refused.
#[test]
fn untrusted_view_of_the_project_in_detail() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    for d in [".pi/extensions/sub", "a/b/.pi/extensions", "c/.pi", "d/.pi"] {
        std::fs::create_dir_all(project.join(d)).unwrap();
    }
    std::fs::write(project.join(".pi/extensions/sub/x.ts"), "x").unwrap();
    std::fs::write(project.join("a/b/.pi/extensions/y.ts"), "y").unwrap();
    std::fs::write(project.join(".pi/mcp.json"), "{}").unwrap();
    std::fs::write(project.join("a/b/.pi/mcp.json"), "{}").unwrap();
    std::fs::write(project.join(".pi/prompts.md"), "p").unwrap();
    let settings = json!({"packages":["npm:evil"],"extensions":["a.ts"],"npmCommand":["evil"],"sessionDir":"/x","httpProxy":"http://evil","shellPath":"/bin/evil","someFutureKey":1,"theme":"dark","defaultModel":"m"});
    std::fs::write(project.join(".pi/settings.json"), settings.to_string()).unwrap();
    // A byte order mark (pi strips it), and a file that is no JSON object.
    std::fs::write(
        project.join("c/.pi/settings.json"),
        "\u{feff}{\"packages\":[\"npm:evil\"],\"theme\":\"x\"}",
    )
    .unwrap();
    std::fs::write(project.join("d/.pi/settings.json"), "[\"npm:evil\"]").unwrap();
    let bin = tempfile::tempdir().unwrap(); // the script's directory stays local: not the project's
    let script = bin.path().join("probe.js");
    std::fs::write(
        &script,
        r#"const fs = require('fs');
const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
const S = '.pi/settings.json';
const viaFd = (p) => { const fd = fs.openSync(p, 'r'); const b = Buffer.alloc(4096); const n = fs.readSync(fd, b, 0, 4096, null); const size = fs.fstatSync(fd).size; fs.closeSync(fd); return { text: b.subarray(0, n).toString(), size }; };
const out = {
  pi: fs.readdirSync('.pi').sort(),
  deep: fs.readdirSync('a/b/.pi').sort(),
  recursive: fs.readdirSync('.', { recursive: true }).filter((n) => n.includes('extensions') || n.includes('mcp')),
  exists: [fs.existsSync('.pi/extensions'), fs.existsSync('a/b/.pi/extensions/y.ts'), fs.existsSync('.pi/mcp.json'), fs.existsSync('a/b/.pi/mcp.json')],
  statDir: code(() => fs.statSync('.pi/extensions')),
  readFile: code(() => fs.readFileSync('a/b/.pi/extensions/y.ts')),
  readMcp: code(() => fs.readFileSync('a/b/.pi/mcp.json')),
  realpath: code(() => fs.realpathSync('a/b/.pi/extensions')),
  mkdir: code(() => fs.mkdirSync('.pi/extensions/new', { recursive: true })),
  watch: code(() => fs.watch('a/b/.pi/extensions').close()),
  sync: JSON.parse(fs.readFileSync(S, 'utf-8')),
  bom: JSON.parse(fs.readFileSync('c/.pi/settings.json', 'utf-8').replace(/^\uFEFF/, '')),
  notObject: fs.readFileSync('d/.pi/settings.json', 'utf-8'),
  fd: viaFd(S),
};
(async () => {
  out.cb = await new Promise((r) => fs.readFile(S, 'utf8', (e, t) => r(e ? e.code : JSON.parse(t))));
  out.promise = JSON.parse(await fs.promises.readFile(S, 'utf8'));
  const h = await fs.promises.open(S);
  out.handle = JSON.parse(await h.readFile('utf8'));
  out.handleSize = (await h.stat()).size;
  await h.close();
  const h2 = await fs.promises.open(S);
  const chunks = []; for await (const c of h2.createReadStream({ encoding: 'utf8' })) chunks.push(c);
  out.handleStream = JSON.parse(chunks.join(''));
  out.stream = JSON.parse(await new Promise((r) => { let t = ''; fs.createReadStream(S, 'utf8').on('data', (d) => (t += d)).on('end', () => r(t)); }));
  out.blob = fs.openAsBlob ? JSON.parse(await (await fs.openAsBlob(S)).text()) : out.sync;
  out.append = await fs.promises.appendFile(S, ' ').then(() => 'ok', (e) => e.code);
  out.openW = code(() => fs.openSync(S, 'r+'));
  out.truncate = code(() => fs.truncateSync(S, 0));
  fs.writeFileSync('elsewhere.json', '{}');
  out.renameOnto = code(() => fs.renameSync('elsewhere.json', 'a/b/.pi/settings.json'));
  fs.writeFileSync(S, JSON.stringify({ ...out.sync, theme: 'light' }), 'utf-8');
  fs.writeFileSync('a/b/.pi/settings.json', JSON.stringify({ theme: 'new' }));
  process.stdout.write(JSON.stringify(out));
})();
"#,
    )
    .unwrap();
    std::fs::write(
        project.join("a/b/.pi/settings.json"),
        r#"{"packages":["deep"],"theme":"t"}"#,
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let out = pi_bridge_tests::pii::pii_local(&project, &log, &script, &[])
        .output()
        .unwrap();
    assert_success("pii --local probe", &out, &log);
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pi"], json!(["prompts.md", "settings.json"]), "{v}");
    assert_eq!(v["deep"], json!(["settings.json"]), "{v}");
    assert_eq!(v["recursive"], json!([]), "{v}");
    assert_eq!(v["exists"], json!([false, false, false, false]), "{v}");
    for k in [
        "statDir", "readFile", "readMcp", "realpath", "mkdir", "watch",
    ] {
        assert_eq!(v[k], "ENOENT", "{k}: {v}");
    }
    let shown = json!({"theme": "dark", "defaultModel": "m"});
    for k in [
        "sync",
        "cb",
        "promise",
        "handle",
        "handleStream",
        "stream",
        "blob",
    ] {
        assert_eq!(v[k], shown, "{k}: {v}");
    }
    assert_eq!(
        serde_json::from_str::<Value>(v["fd"]["text"].as_str().unwrap()).unwrap(),
        shown,
        "{v}"
    );
    assert_eq!(
        v["fd"]["size"].as_u64().unwrap() as usize,
        v["fd"]["text"].as_str().unwrap().len(),
        "{v}"
    );
    assert_eq!(v["bom"], json!({"theme": "x"}), "{v}");
    assert_eq!(v["notObject"], "{}\n", "{v}");
    for k in ["append", "openW", "truncate", "renameOnto"] {
        assert_eq!(v[k], "EACCES", "{k}: {v}");
    }
    // The whole-file writes went through with the hidden keys put back, at both depths.
    let on_disk: Value =
        serde_json::from_slice(&std::fs::read(project.join(".pi/settings.json")).unwrap()).unwrap();
    let mut want = settings.clone();
    want["theme"] = json!("light");
    assert_eq!(on_disk, want);
    let deep: Value =
        serde_json::from_slice(&std::fs::read(project.join("a/b/.pi/settings.json")).unwrap())
            .unwrap();
    assert_eq!(deep, json!({"packages": ["deep"], "theme": "new"}));
    assert!(!project.join(".pi/extensions/new").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(NOTICE).count(), 1, "{stderr}");
    let notice = stderr.lines().find(|l| l.contains(NOTICE)).unwrap();
    for part in [
        ".pi/extensions",
        ".pi/mcp.json",
        "httpProxy",
        "npmCommand",
        "sessionDir",
        "someFutureKey",
    ] {
        assert!(notice.contains(part), "{part}: {notice}");
    }
}
