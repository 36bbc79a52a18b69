//! The agent as a library: `main.rs` (the `pi-bridge-agent` binary) is a thin wrapper over
//! [`server::serve`], and the fuzz targets (`fuzz/`) and their stable seed test reach the frame
//! decoder, request parsing and the sandbox through [`fuzzing`]. Nothing else is public API.

// `protocol::Errno` grew past clippy's 128-byte threshold with its `cache` flag; `Failure` (and
// so every handler's `Result`) carries it by value on error paths only, where a move of a few
// more bytes does not matter, so it is not boxed.
#![allow(clippy::result_large_err)]

extern crate pi_bridge_protocol as protocol;

mod agent;
mod changes;
mod facts;
mod fds;
mod fs;
mod inotify;
mod methods;
mod out;
mod proc;
pub mod resume;
mod rpc;
pub mod sandbox;
pub mod server;
mod session;
mod trust;
mod watch;

#[doc(hidden)]
pub mod fuzzing;
