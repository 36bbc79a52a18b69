//! The sandbox path checker against a tree with symlinks (body: remote/src/fuzzing.rs).
#![no_main]
use libfuzzer_sys::fuzz_target;
use pi_bridge_agent::fuzzing::SandboxFixture;
use std::sync::OnceLock;

static FIXTURE: OnceLock<SandboxFixture> = OnceLock::new();

fuzz_target!(|data: &[u8]| FIXTURE.get_or_init(SandboxFixture::new).run(data));
