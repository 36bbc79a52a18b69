//! What `hello` established: the sandbox, the login environment and the project's change
//! tracker. Every handler that touches the file system or starts a process works in it.

use crate::changes::tracker::Tracker;
use crate::facts::LoginEnv;
use crate::sandbox::Sandbox;
use std::sync::Arc;

/// What `hello` established: the sandbox and the facts.
pub struct Session {
    pub sandbox: Sandbox,
    pub login: Arc<LoginEnv>,
    /// The `fs.changes` watcher of the project (idle until the first subscription).
    pub changes: Arc<Tracker>,
}

impl Session {
    pub fn new(sandbox: Sandbox, login: Arc<LoginEnv>) -> Self {
        let changes = Arc::new(Tracker::new(sandbox.root().to_path_buf()));
        Session {
            sandbox,
            login,
            changes,
        }
    }
}
