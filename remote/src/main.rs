//! `pi-bridge-agent --stdio`: the remote half of pi-bridge.
//!
//! It speaks JSON-RPC 2.0 (newline-delimited frames, see `pi_bridge_protocol`) on stdin/stdout,
//! after announcing itself with the magic line. Nothing else is ever written to stdout: logs go to
//! stderr, and only when `PI_BRIDGE_AGENT_LOG` is set (to a `tracing` filter such as `debug`).

use pi_bridge_agent::resume::{BoxRead, BoxWrite};
use pi_bridge_agent::server;
use pi_bridge_protocol as protocol;

use anyhow::Context as _;
use clap::Parser;
use std::os::fd::{AsFd, OwnedFd};

#[derive(Parser, Debug)]
#[command(
    name = "pi-bridge-agent",
    version,
    about = "The remote half of pi-bridge (speaks JSON-RPC on stdin/stdout)."
)]
struct Cli {
    /// Serve one session on stdin/stdout (the only mode).
    #[arg(long)]
    stdio: bool,
}

fn main() {
    let cli = Cli::parse();
    if !cli.stdio {
        eprintln!(
            "pi-bridge-agent: nothing to do; it is started by pii as `pi-bridge-agent --stdio`"
        );
        std::process::exit(2);
    }
    if let Ok(filter) = std::env::var("PI_BRIDGE_AGENT_LOG") {
        let filter = tracing_subscriber::EnvFilter::try_new(&filter)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("debug"));
        tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_writer(std::io::stderr)
            .init();
    }
    let code = match run() {
        Ok(()) => 0,
        Err(e) => {
            eprintln!("pi-bridge-agent: {e:#}");
            1
        }
    };
    std::process::exit(code);
}

fn run() -> anyhow::Result<()> {
    // The client's nonce for this connection, echoed in the magic line; the processes the
    // agent starts never see it.
    let nonce = std::env::var(protocol::hello::NONCE_ENV).ok();
    std::env::remove_var(protocol::hello::NONCE_ENV);
    // Take private close-on-exec copies of stdin/stdout, then point fds 0 and 1 at /dev/null: a
    // child can never inherit the session pipes (the client would miss EOF), and a stray print
    // can never corrupt the frame stream.
    let input = std::io::stdin()
        .as_fd()
        .try_clone_to_owned()
        .context("dup stdin")?;
    let output = std::io::stdout()
        .as_fd()
        .try_clone_to_owned()
        .context("dup stdout")?;
    let devnull = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/null")?;
    // Nothing else holds raw copies of the standard fds.
    let _ = rustix::stdio::dup2_stdin(&devnull);
    let _ = rustix::stdio::dup2_stdout(&devnull);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let reader = async_reader(input)?;
        let writer = async_writer(output)?;
        server::serve_with_nonce(reader, writer, nonce).await
    })
}

/// What an inherited stdio fd is: pipes and sockets get tokio's non-blocking wrappers,
/// anything else (a file, /dev/null) goes through the blocking pool.
enum Stdio {
    Pipe(std::fs::File),
    Socket(tokio::net::UnixStream),
    File(std::fs::File),
}

fn classify(fd: OwnedFd) -> anyhow::Result<Stdio> {
    use std::os::unix::fs::FileTypeExt;
    let file = std::fs::File::from(fd);
    let ft = file.metadata()?.file_type();
    Ok(if ft.is_fifo() {
        Stdio::Pipe(file)
    } else if ft.is_socket() {
        let s = std::os::unix::net::UnixStream::from(OwnedFd::from(file));
        s.set_nonblocking(true)?;
        Stdio::Socket(tokio::net::UnixStream::from_std(s)?)
    } else {
        Stdio::File(file)
    })
}

fn async_reader(fd: OwnedFd) -> anyhow::Result<BoxRead> {
    Ok(match classify(fd)? {
        Stdio::Pipe(f) => Box::new(tokio::net::unix::pipe::Receiver::from_file(f)?),
        Stdio::Socket(s) => Box::new(s),
        Stdio::File(f) => Box::new(tokio::fs::File::from_std(f)),
    })
}

fn async_writer(fd: OwnedFd) -> anyhow::Result<BoxWrite> {
    Ok(match classify(fd)? {
        Stdio::Pipe(f) => Box::new(tokio::net::unix::pipe::Sender::from_file(f)?),
        Stdio::Socket(s) => Box::new(s),
        Stdio::File(f) => Box::new(tokio::fs::File::from_std(f)),
    })
}
