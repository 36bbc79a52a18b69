//! The fuzz targets' bodies (remote/src/fuzzing.rs) over the checked-in seed corpus
//! (fuzz/corpus/<target>/), on stable: CI runs the same invariants as `bash scripts/fuzz.sh`
//! without nightly. Any crash input found by fuzzing belongs in the corpus afterwards.

use pi_bridge_agent::fuzzing::{frame, SandboxFixture};
use std::path::PathBuf;

fn corpus(target: &str) -> Vec<(PathBuf, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target);
    let mut v: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .map(|p| {
            let b = std::fs::read(&p).unwrap();
            (p, b)
        })
        .collect();
    v.sort();
    assert!(v.len() >= 20, "{}: only {} seeds", dir.display(), v.len());
    v
}

#[test]
fn frame_target_over_its_seeds() {
    let seeds = corpus("frame");
    for (p, b) in &seeds {
        eprintln!("{}", p.display());
        frame(b);
        // Every prefix too: truncated frames are the decoder's daily bread.
        for cut in [1, 2, 3, b.len() / 2, b.len().saturating_sub(1)] {
            frame(&b[..cut.min(b.len())]);
        }
    }
    println!(
        "fuzz seeds: frame: {} inputs (and 5 prefixes each), no invariant broken",
        seeds.len()
    );
}

#[test]
fn sandbox_target_over_its_seeds() {
    let seeds = corpus("sandbox");
    let fixture = SandboxFixture::new();
    for (p, b) in &seeds {
        eprintln!("{}", p.display());
        fixture.run(b);
        // The other follow mode for each seed.
        let mut flipped = b.clone();
        if let Some(m) = flipped.first_mut() {
            *m ^= 1;
        }
        fixture.run(&flipped);
    }
    println!(
        "fuzz seeds: sandbox: {} inputs × 2 follow modes, nothing accepted outside the root",
        seeds.len()
    );
}
