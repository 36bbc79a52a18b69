//! Frame decoder + JSON-RPC request and params parsing (body: remote/src/fuzzing.rs `frame`).
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| pi_bridge_agent::fuzzing::frame(data));
