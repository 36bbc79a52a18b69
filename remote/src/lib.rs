//! The agent as a library: `main.rs` (the `pi-bridge-agent` binary) is a thin wrapper over
//! [`server::serve`], and the fuzz targets (`fuzz/`) and their stable seed test reach the frame
//! decoder, request parsing and the sandbox through [`fuzzing`]. Nothing else is public API.

extern crate pi_bridge_protocol as protocol;

mod facts;
mod fs;
mod proc;
mod resume;
pub mod sandbox;
pub mod server;
mod watch;

#[doc(hidden)]
pub mod fuzzing;
