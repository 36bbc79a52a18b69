//! The trust gate's check at the project root, answered in `hello` when the client sends a gate
//! (`protocol::trust::Finding`): pii prints its notice from it without a round trip of its own.
//! Each path goes through the session's sandbox like any `fs.stat`/`fs.read` of pi's.

use crate::rpc::Failure;
use crate::session::Session;
use protocol::fs::{ReadParams, StatParams};
use protocol::trust::{Finding, Gate};
use protocol::ErrorCode;

/// What `gate` hides at `root` (the canonical project root). A gate whose names are not single
/// file names is refused.
pub fn findings(s: &Session, root: &str, gate: &Gate) -> Result<Vec<Finding>, Failure> {
    gate.check_names()
        .map_err(|e| Failure::Code(ErrorCode::InvalidParams, format!("hello: {e}")))?;
    let root = root.trim_end_matches('/');
    let mut found = vec![];
    for dir in &gate.config_dirs {
        for h in &gate.hidden {
            let path = format!("{dir}/{h}");
            let stat = StatParams {
                path: format!("{root}/{path}"),
                lstat: true,
            };
            match crate::fs::stat(s, stat) {
                Ok(_) => found.push(Finding::Present { path }),
                Err(f) => found.extend(unchecked(f, path)),
            }
        }
        let path = format!("{dir}/{}", gate.settings_file);
        let read = ReadParams {
            path: format!("{root}/{path}"),
            offset: 0,
            length: None,
            raw: false,
        };
        match crate::fs::read(s, read) {
            Ok(r) if r.data.0.len() as u64 != r.size => found.push(Finding::Unchecked {
                path,
                code: "EFBIG".into(),
            }),
            Ok(r) => match gate.hidden_keys(&r.data.0) {
                Some(keys) if keys.is_empty() => {}
                Some(keys) => found.push(Finding::HiddenKeys { path, keys }),
                None => found.push(Finding::NotAnObject { path }),
            },
            Err(f) => found.extend(unchecked(f, path)),
        }
    }
    Ok(found)
}

/// A failed look: nothing when it is simply not there, else what could not be told.
fn unchecked(f: Failure, path: String) -> Option<Finding> {
    let code = match f {
        Failure::Os(e) if e.code == "ENOENT" || e.code == "ENOTDIR" => return None,
        Failure::Os(e) => e.code,
        Failure::Code(c, _) => format!("{c:?}"),
    };
    Some(Finding::Unchecked { path, code })
}

#[cfg(test)]
mod tests {
    use crate::server::tests::Client;
    use serde_json::{json, Value};

    fn gate() -> Value {
        serde_json::to_value(protocol::trust::Gate::new(Some(".tau"))).unwrap()
    }

    async fn hello(c: &mut Client, gate: Option<Value>) -> Value {
        let mut p = json!({"protocol": 1, "clientVersion": "t", "root": c.root.clone()});
        if let Some(g) = gate {
            p["gate"] = g;
        }
        c.call("hello", p).await
    }

    #[tokio::test]
    async fn hello_reports_what_the_gate_hides_and_nothing_else() {
        // Nothing there: an empty list (the client can tell it from "not checked").
        let mut c = Client::start().await;
        let r = hello(&mut c, Some(gate())).await;
        assert_eq!(r["result"]["trust"], json!([]), "{r}");
        // No gate asked: no answer at all.
        let mut c = Client::start().await;
        let r = hello(&mut c, None).await;
        assert!(r["result"].get("trust").is_none(), "{r}");

        let mut c = Client::start().await;
        let d = c.dir.path();
        std::fs::create_dir_all(d.join(".pi/extensions")).unwrap();
        std::fs::create_dir_all(d.join(".tau")).unwrap();
        // A dangling symlink is there too (lstat).
        std::os::unix::fs::symlink("/nowhere", d.join(".tau/mcp.json")).unwrap();
        std::fs::write(
            d.join(".pi/settings.json"),
            r#"{"theme":"dark","packages":["x"],"npmCommand":["y"]}"#,
        )
        .unwrap();
        std::fs::write(d.join(".tau/settings.json"), "[1]").unwrap();
        let r = hello(&mut c, Some(gate())).await;
        assert_eq!(
            r["result"]["trust"],
            json!([
                {"kind": "present", "path": ".pi/extensions"},
                {"kind": "hiddenKeys", "path": ".pi/settings.json", "keys": ["npmCommand", "packages"]},
                {"kind": "present", "path": ".tau/mcp.json"},
                {"kind": "notAnObject", "path": ".tau/settings.json"},
            ]),
            "{r}"
        );
    }

    #[tokio::test]
    async fn clean_settings_are_not_reported_and_unreadable_ones_are() {
        let mut c = Client::start().await;
        let d = c.dir.path().to_path_buf();
        std::fs::create_dir_all(d.join(".pi")).unwrap();
        std::fs::write(d.join(".pi/settings.json"), r#"{"theme":"dark"}"#).unwrap();
        std::fs::create_dir(d.join(".tau")).unwrap();
        std::fs::write(d.join(".tau/settings.json"), "{}").unwrap();
        let r = hello(&mut c, Some(gate())).await;
        assert_eq!(r["result"]["trust"], json!([]), "{r}");

        let mut c = Client::start().await;
        let d = c.dir.path().to_path_buf();
        // A settings file that cannot be read (the tests run as root, so permissions would not
        // stop it): a directory in its place.
        std::fs::create_dir_all(d.join(".pi/settings.json")).unwrap();
        let r = hello(&mut c, Some(gate())).await;
        assert_eq!(
            r["result"]["trust"],
            json!([{"kind": "unchecked", "path": ".pi/settings.json", "code": "EISDIR"}]),
            "{r}"
        );
    }

    #[tokio::test]
    async fn a_gate_naming_paths_is_refused() {
        for bad in ["..", "a/b", ""] {
            let mut c = Client::start().await;
            let mut g = gate();
            g["hidden"] = json!([bad]);
            let r = hello(&mut c, Some(g)).await;
            assert_eq!(
                r["error"]["code"],
                json!(protocol::ErrorCode::InvalidParams.code()),
                "{r}"
            );
            let msg = r["error"]["message"].as_str().unwrap();
            assert!(msg.contains("not one file name"), "{msg}");
            // Malformed, not merely odd: refused by the parser.
            let mut c = Client::start().await;
            let r = hello(&mut c, Some(json!({"configDirs": [".pi"]}))).await;
            assert_eq!(
                r["error"]["code"],
                json!(protocol::ErrorCode::InvalidParams.code()),
                "{r}"
            );
        }
    }
}
