//! Embeds into pii, at build time:
//! - every `../preload/*.cjs` (not `preload/test/`) as `PRELOAD_FILES`;
//! - the tested matrix, `../fixtures/matrix.json` with each cell's pi package name (the one
//!   dependency of `../fixtures/pi/<version>/package.json`), as `TESTED`: pii ships without the
//!   repository, and the matrix file stays the one list of what is tested.

use std::path::{Path, PathBuf};

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap());
    let out = PathBuf::from(std::env::var("OUT_DIR").unwrap());
    preload(&manifest.join("../preload"), &out.join("preload_files.rs"));
    matrix(&manifest.join("../fixtures"), &out.join("matrix.rs"));
}

fn preload(dir: &Path, dest: &Path) {
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = vec![];
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let path = e.path();
            let is_cjs = path.extension().is_some_and(|x| x == "cjs");
            if is_cjs && path.is_file() {
                println!("cargo:rerun-if-changed={}", path.display());
                let name = path.file_name().unwrap().to_string_lossy().into_owned();
                let abs = path.canonicalize().unwrap_or(path);
                files.push((name, abs));
            }
        }
    }
    files.sort();
    let mut out = String::from("/// The preload's files (name, contents), embedded at build time.\npub static PRELOAD_FILES: &[(&str, &[u8])] = &[\n");
    for (name, path) in &files {
        out.push_str(&format!(
            "    ({name:?}, include_bytes!({:?})),\n",
            path.display().to_string()
        ));
    }
    out.push_str("];\n");
    std::fs::write(dest, out).unwrap();
}

/// `fixtures/matrix.json` → `pub static TESTED: &[TestedCell]` (the struct is `pi::TestedCell`).
/// A missing or malformed matrix stops the build: pii must not guess what was tested.
fn matrix(fixtures: &Path, dest: &Path) {
    let read_json = |path: &Path| -> serde_json::Value {
        println!("cargo:rerun-if-changed={}", path.display());
        let text = std::fs::read_to_string(path).unwrap_or_else(|e| {
            panic!(
                "{}: {e} (pii embeds the tested matrix from it)",
                path.display()
            )
        });
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: not JSON: {e}", path.display()))
    };
    let file = fixtures.join("matrix.json");
    let matrix = read_json(&file);
    let cells = matrix["cells"]
        .as_array()
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| panic!("{}: `cells` must be a non-empty array", file.display()));
    let mut out = String::from(
        "/// fixtures/matrix.json's cells, embedded at build time: what pi-bridge is tested on.\npub static TESTED: &[TestedCell] = &[\n",
    );
    for (i, cell) in cells.iter().enumerate() {
        let field = |k: &str| {
            cell[k]
                .as_str()
                .filter(|s| {
                    !s.is_empty()
                        && s.chars()
                            .all(|c| c.is_ascii_alphanumeric() || ".-+".contains(c))
                })
                .unwrap_or_else(|| panic!("{}: cells[{i}].{k} must be a version", file.display()))
        };
        let (version, node) = (field("pi"), field("node"));
        let node_major: u64 = node.parse().unwrap_or_else(|_| {
            panic!(
                "{}: cells[{i}].node must be a Node major version",
                file.display()
            )
        });
        let fixture = read_json(&fixtures.join("pi").join(version).join("package.json"));
        let deps = fixture["dependencies"].as_object();
        let package = match deps.map(|d| d.keys().collect::<Vec<_>>()).as_deref() {
            Some([one]) => one.to_string(),
            _ => panic!("fixtures/pi/{version}/package.json must have exactly one dependency (pi)"),
        };
        out.push_str(&format!(
            "    TestedCell {{ package: {package:?}, version: {version:?}, node_major: {node_major} }},\n"
        ));
    }
    out.push_str("];\n");
    std::fs::write(dest, out).unwrap();
}
