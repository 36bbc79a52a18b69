//! Server tests over tokio::io::duplex.
