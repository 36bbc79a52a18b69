//! Trust: code in the remote project that pi would run on THIS machine — `.pi/extensions/*.ts`,
//! `.pi/settings.json` `extensions` paths and `packages` — is hidden unless `--trust-project`.
//! Proven with the real pi over the ssh fixture: each piece of remote code writes a local marker
//! file when loaded; without the flag no marker appears and pii says so exactly once.

use std::path::Path;

use pi_bridge_tests::pii::{assert_success, pii_ssh};
use pi_bridge_tests::{llm, paths, pi_env, FakeLlm, Sshd, PI_ARGS};
use serde_json::json;

const NOTICE: &str = "pii: hiding the remote project's";

/// TypeScript for pi's extension loader that writes `marker` locally when it is loaded.
fn extension(marker: &Path) -> String {
    format!(
        "import {{ writeFileSync }} from \"node:fs\";\n\
         writeFileSync({:?}, \"loaded\");\n\
         export default function () {{}}\n",
        marker.display().to_string()
    )
}

fn setup_remote(sshd: &Sshd, markers: &Path) -> Vec<u8> {
    sshd.run_remote_ok("mkdir -p .pi/extensions tools vendor/evilpkg");
    sshd.write_remote(
        ".pi/extensions/evil.ts",
        extension(&markers.join("dir-extension")).as_bytes(),
    );
    sshd.write_remote(
        "tools/evil2.ts",
        extension(&markers.join("settings-extension")).as_bytes(),
    );
    sshd.write_remote(
        "vendor/evilpkg/package.json",
        br#"{"name":"evilpkg","version":"1.0.0","pi":{"extensions":["./index.ts"]}}"#,
    );
    sshd.write_remote(
        "vendor/evilpkg/index.ts",
        extension(&markers.join("package")).as_bytes(),
    );
    let settings = serde_json::to_vec_pretty(&json!({
        "packages": ["../vendor/evilpkg"],
        "extensions": ["../tools/evil2.ts"],
        "quietStartup": true
    }))
    .unwrap();
    sshd.write_remote(".pi/settings.json", &settings);
    settings
}

fn run_pi(sshd: &Sshd, flags: &[&str]) -> (String, String) {
    let llm = FakeLlm::start(json!([llm::text("TRUST-ANSWER")]));
    let (_agent_dir, env) = pi_env(&llm);
    let logdir = tempfile::tempdir().unwrap();
    let log = logdir.path().join("pii.log");
    let mut args = vec!["-p", "hello"];
    if paths::pi().major() >= 1 {
        // pi 1.x has its own project trust and, in -p mode, silently skips an untrusted
        // project's extensions: `--approve` is "pi trusts it", so only pii's hiding is tested.
        args.push("--approve");
    }
    args.extend(PI_ARGS);
    let mut cmd = pii_ssh(sshd, &log, &paths::pi_cli(), flags, &args);
    cmd.envs(env);
    let out = cmd.output().expect("run pii");
    assert_success("pii running pi", &out, &log);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(stdout.contains("TRUST-ANSWER"), "{stdout}");
    (stdout, String::from_utf8_lossy(&out.stderr).into_owned())
}

fn markers_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

#[test]
fn remote_extensions_and_packages_run_only_with_trust_project() {
    let sshd = Sshd::start();
    let markers = tempfile::tempdir().unwrap();
    let settings = setup_remote(&sshd, markers.path());

    // Default: nothing from the remote runs here, and pii says so once.
    let (_, stderr) = run_pi(&sshd, &[]);
    assert_eq!(
        markers_in(markers.path()),
        Vec::<String>::new(),
        "remote code ran locally without --trust-project; stderr: {stderr}"
    );
    assert_eq!(stderr.matches(NOTICE).count(), 1, "{stderr}");
    let notice = stderr.lines().find(|l| l.contains(NOTICE)).unwrap();
    for part in [
        ".pi/extensions",
        "packages/extensions of .pi/settings.json",
        "--trust-project",
    ] {
        assert!(notice.contains(part), "{notice}");
    }
    // Hiding is a view: the remote files are untouched.
    assert_eq!(sshd.read_remote(".pi/settings.json"), settings);
    assert!(sshd.remote_exists(".pi/extensions/evil.ts"));

    // --trust-project: all three load (so the test above could have failed), and no notice.
    let (_, stderr) = run_pi(&sshd, &["--trust-project"]);
    assert_eq!(
        markers_in(markers.path()),
        vec!["dir-extension", "package", "settings-extension"],
        "stderr: {stderr}"
    );
    assert!(!stderr.contains(NOTICE), "{stderr}");
}

#[test]
fn no_notice_when_there_is_nothing_to_hide() {
    let sshd = Sshd::start();
    let (_, stderr) = run_pi(&sshd, &[]);
    assert!(!stderr.contains(NOTICE), "{stderr}");
}

/// The view the preload gives node of an untrusted project, in detail (through `pii --local`,
/// which runs the same preload): `.pi` lists without `extensions`, every path under it is
/// ENOENT, settings.json reads without the hidden keys, and pi's write-back keeps them.
#[test]
fn untrusted_view_of_the_project_in_detail() {
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(project.join(".pi/extensions/sub")).unwrap();
    std::fs::write(project.join(".pi/extensions/sub/x.ts"), "x").unwrap();
    std::fs::write(project.join(".pi/prompts.md"), "p").unwrap();
    std::fs::write(
        project.join(".pi/settings.json"),
        r#"{"packages":["npm:evil"],"extensions":["a.ts"],"npmCommand":["evil"],"theme":"dark"}"#,
    )
    .unwrap();
    let script = dir.path().join("probe.js");
    std::fs::write(
        &script,
        r#"const fs = require('fs');
const code = (f) => { try { f(); return 'ok'; } catch (e) { return e.code; } };
const out = {
  pi: fs.readdirSync('.pi').sort(),
  recursive: fs.readdirSync('.', { recursive: true }).filter((n) => n.includes('extensions')),
  dirents: fs.readdirSync('.pi', { withFileTypes: true }).map((d) => d.name).sort(),
  exists: fs.existsSync('.pi/extensions'),
  statDir: code(() => fs.statSync('.pi/extensions')),
  readFile: code(() => fs.readFileSync('.pi/extensions/sub/x.ts')),
  mkdir: code(() => fs.mkdirSync('.pi/extensions/new', { recursive: true })),
  settings: JSON.parse(fs.readFileSync('.pi/settings.json', 'utf-8')),
};
fs.writeFileSync('.pi/settings.json', JSON.stringify({ ...out.settings, theme: 'light' }), 'utf-8');
fs.promises.stat('.pi/extensions').then(() => 'ok', (e) => e.code).then((p) => {
  out.promiseStat = p;
  process.stdout.write(JSON.stringify(out));
});
"#,
    )
    .unwrap();
    let log = dir.path().join("pii.log");
    let out = pi_bridge_tests::pii::pii_local(&project, &log, &script, &[])
        .output()
        .unwrap();
    assert_success("pii --local probe", &out, &log);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["pi"], json!(["prompts.md", "settings.json"]), "{v}");
    assert_eq!(v["dirents"], json!(["prompts.md", "settings.json"]), "{v}");
    assert_eq!(v["recursive"], json!([]), "{v}");
    assert_eq!(v["exists"], false, "{v}");
    for k in ["statDir", "readFile", "mkdir", "promiseStat"] {
        assert_eq!(v[k], "ENOENT", "{k}: {v}");
    }
    assert_eq!(v["settings"], json!({"theme": "dark"}), "{v}");
    // The write went through with the hidden keys put back.
    let on_disk: serde_json::Value =
        serde_json::from_slice(&std::fs::read(project.join(".pi/settings.json")).unwrap()).unwrap();
    assert_eq!(
        on_disk,
        json!({"packages":["npm:evil"],"extensions":["a.ts"],"npmCommand":["evil"],"theme":"light"})
    );
    assert!(!project.join(".pi/extensions/new").exists());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.matches(NOTICE).count(), 1, "{stderr}");
}
