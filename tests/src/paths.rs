//! Where things are: the workspace, the built binaries, the pinned pi.

use std::path::{Path, PathBuf};

/// The workspace root (the directory holding the top-level `Cargo.toml`).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent directory")
        .to_path_buf()
}

/// `fixtures/<name>` in the workspace.
pub fn fixture(name: &str) -> PathBuf {
    workspace_root().join("fixtures").join(name)
}

/// The cargo profile directory the tests were built into (`target/debug`, or
/// `$CARGO_TARGET_DIR/debug`): found from the running test binary, which lives in `<dir>/deps/`.
pub fn target_profile_dir() -> PathBuf {
    if let Ok(exe) = std::env::current_exe() {
        if let Some(deps) = exe.parent() {
            if deps.file_name().is_some_and(|n| n == "deps") {
                if let Some(profile) = deps.parent() {
                    return profile.to_path_buf();
                }
            }
        }
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .map(|p| {
            if p.is_absolute() {
                p
            } else {
                workspace_root().join(p)
            }
        })
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("debug")
}

/// A workspace binary (`pii`, `pi-bridge-agent`) in the profile directory. Panics with the command
/// that builds it when it is missing: `cargo test` does not build other packages' binaries.
pub fn bin(name: &str) -> PathBuf {
    let path = target_profile_dir().join(name);
    if !path.is_file() {
        panic!(
            "binary {name} not found at {}: run `cargo build --workspace` first \
             (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// The pinned pi's `cli.js`. Panics with the install command when it is missing.
pub fn pi_cli() -> PathBuf {
    let path = fixture("pi").join("node_modules/@mariozechner/pi-coding-agent/dist/cli.js");
    if !path.is_file() {
        panic!(
            "pi is not installed at {}: run `npm ci --prefix fixtures/pi` in {} \
             (scripts/test.sh does)",
            path.display(),
            workspace_root().display()
        );
    }
    path
}

/// The fake LLM server script.
pub fn fake_llm_server() -> PathBuf {
    fixture("fake-llm").join("server.mjs")
}
