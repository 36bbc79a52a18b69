//! Embeds every `../preload/*.cjs` (not `preload/test/`) into pii as `PRELOAD_FILES`.

use std::path::PathBuf;

fn main() {
    let dir = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").unwrap()).join("../preload");
    println!("cargo:rerun-if-changed={}", dir.display());
    let mut files = vec![];
    if let Ok(entries) = std::fs::read_dir(&dir) {
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
    let dest = PathBuf::from(std::env::var("OUT_DIR").unwrap()).join("preload_files.rs");
    std::fs::write(dest, out).unwrap();
}
