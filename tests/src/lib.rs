//! Test fixtures for pi-bridge's integration and end-to-end tests.
//!
//! - [`paths`]: the workspace, built binaries ([`paths::bin`]), the pinned pi ([`paths::pi_cli`]).
//! - [`Sshd`]: a throwaway sshd whose remote home is a private tmpfs the test cannot see.
//! - [`DelayProxy`]: a TCP proxy adding latency, cutting or killing links (in front of an [`Sshd`]).
//! - [`FakeLlm`]: the scripted OpenAI-compatible server; [`pi_env`] points pi at it.
//!
//! Prerequisites (scripts/test.sh does all of them): root, openssh-server, util-linux, git, node,
//! `cargo build --workspace`, `npm ci --prefix fixtures/pi`.

pub mod hops;
pub mod llm;
pub mod paths;
pub mod pi;
pub mod pii;
pub mod proxy;
pub mod sshd;
pub mod trace;

pub use llm::FakeLlm;
pub use pi::{local_pi, models_json, pi_env, prompt_cwd, PI_ARGS};
pub use proxy::DelayProxy;
pub use sshd::{Sshd, SshdBuilder, REMOTE_USER};

/// A sentence that appears only in `fixtures/project/AGENTS.md`: finding it in a system prompt
/// proves that file reached the model.
pub const PROJECT_AGENTS_SENTENCE: &str =
    "The quartz heron guards the remote fixture project; this sentence proves AGENTS.md reached the prompt.";

/// `fixtures/project/src/hello.txt`'s content.
pub const PROJECT_HELLO: &str = "hello from the remote project\n";

/// Copies a directory tree (files, dirs, symlinks) to `dst`, which must not exist.
pub fn copy_dir(src: &std::path::Path, dst: &std::path::Path) {
    std::fs::create_dir(dst).unwrap_or_else(|e| panic!("mkdir {}: {e}", dst.display()));
    for entry in std::fs::read_dir(src).unwrap_or_else(|e| panic!("{}: {e}", src.display())) {
        let entry = entry.unwrap();
        let (from, to) = (entry.path(), dst.join(entry.file_name()));
        let kind = entry.file_type().unwrap();
        if kind.is_dir() {
            copy_dir(&from, &to);
        } else if kind.is_symlink() {
            std::os::unix::fs::symlink(std::fs::read_link(&from).unwrap(), &to).unwrap();
        } else {
            std::fs::copy(&from, &to)
                .unwrap_or_else(|e| panic!("copy {} → {}: {e}", from.display(), to.display()));
        }
    }
}
