//! pii: run the pi coding agent locally on a remote project, over ssh.

extern crate pi_bridge_protocol as protocol;

mod boundary;
mod config;
mod doctor;
mod endpoint;
mod install;
mod launch;
mod master;
mod pi;
mod prefetch;
mod session;
mod ssh;

use anyhow::{bail, Context, Result};
use clap::Parser;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Mutex;
use std::time::Duration;
use tokio::io::BufReader;

/// Run pi (the coding agent) on your machine against a project on a remote host over ssh.
///
/// Files are read and written on the remote and every command pi runs runs there; API keys,
/// pi's settings and sessions stay local. The remote needs nothing but sshd: pii uploads its
/// small agent (into ~/.cache/pi-bridge/agent/) on first use.
#[derive(Parser, Debug)]
#[command(
    name = "pii",
    disable_version_flag = true,
    after_help = "\
Examples:
  pii --ssh user@host:/srv/app
  pii --ssh bastion-alias:~/app -- -p \"fix the failing test\"
  pii --local ./some/dir --pi ./node_modules/@earendil-works/pi-coding-agent/dist/bundle/cli.js
  pii --ssh host:~/app --pi ./tool.js -- --flag     (any Node CLI, not only pi)
  pii doctor --ssh user@host:/srv/app               (pre-flight checklist)
  pii completions bash > ~/.local/share/bash-completion/completions/pii

Environment:
  PII_PI     pi's cli.js (default: `pi` on PATH, symlinks followed, installed from
             @earendil-works/pi-coding-agent or the older @mariozechner/pi-coding-agent)
  PII_NODE   node binary (default: `node` on PATH; at least what pi's engines.node asks)
  PII_LOG    log level/filter for the log file (default: info), e.g. debug, pii=trace
  PII_RESUME_GRACE_MS  how long the remote keeps pi's processes after the ssh link drops,
             waiting for pii to reconnect (default: 60000)

Config: ./pi-bridge.config.json, else ~/.config/pi-bridge/config.json (yours, writable by no one
else), keys sandboxRoot, authTokenLength, rpcTimeout (ms),
sshOptions (array of -o values; in ./pi-bridge.config.json connection tuning only), localPaths
(~/.config only), controlPersist (how long pii keeps its ssh connection for the next pii to the
same host: \"5m\" by default, false = off; never when your ssh config has a ControlMaster).
Flags win over the file.

Boundary: every path pi names is the remote's except pi's own (its agent dir, its installation,
pii's private scratch and temp dirs, the terminal, and localPaths of ~/.config/pi-bridge/config.json);
no process starts on this machine. Trust: the remote project's .pi/extensions, .pi/mcp.json and
settings such as packages, npmCommand or sessionDir (in any subdirectory) would run code or write
files on THIS machine; pii hides them unless --trust-project is given."
)]
#[command(group(clap::ArgGroup::new("target").required(true).args(["ssh", "local", "version"])))]
#[command(subcommand_negates_reqs = true, args_conflicts_with_subcommands = true)]
struct Cli {
    #[command(subcommand)]
    command: Option<Sub>,

    /// Print pii's version and protocol, and for each remote architecture the agent pii would
    /// upload and the version it announces.
    #[arg(short = 'V', long, exclusive = true)]
    version: bool,

    /// Remote project: DEST:PATH. DEST is anything ssh accepts (host, user@host, a Host alias,
    /// [v6addr]); PATH may be absolute, ~, ~/dir, relative to the remote home, or empty (home).
    #[arg(long, value_name = "DEST:PATH")]
    ssh: Option<String>,

    /// Run the agent as a local child process on DIR (no ssh; for development and tests).
    #[arg(long, value_name = "DIR", conflicts_with = "SshFlags")]
    local: Option<PathBuf>,

    #[command(flatten)]
    ssh_flags: ssh::SshFlags,

    #[command(flatten)]
    tools: launch::ToolFlags,

    /// Log file [default: ~/.cache/pi-bridge/pii.log]. Level from $PII_LOG.
    #[arg(long, value_name = "FILE")]
    log_file: Option<PathBuf>,

    /// Print the ssh command line, upload progress and the remote's facts before pi starts.
    #[arg(long)]
    verbose: bool,

    /// Let pi see the remote project's .pi/extensions, .pi/mcp.json and all of its
    /// .pi/settings.json. Extensions and packages run on THIS machine with your keys: only for
    /// projects whose every committer you trust.
    #[arg(long)]
    trust_project: bool,

    /// Arguments for pi.
    #[arg(last = true, value_name = "PI_ARGS")]
    pi_args: Vec<OsString>,
}

#[derive(clap::Subcommand, Debug)]
enum Sub {
    /// Pre-flight checklist: ssh, agent, remote tools, project, node, pi. Each line is ✓ or ✗
    /// with the fix; the exit code is 1 when a check fails.
    Doctor(doctor::DoctorArgs),
    /// Print a shell completion script: `pii completions bash > /etc/bash_completion.d/pii`,
    /// `pii completions zsh > ~/.zfunc/_pii`, `pii completions fish > ~/.config/fish/completions/pii.fish`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// The first line of `pii --version`. A constant behind `black_box`, so a built pii holds it
/// verbatim: `scripts/dist.sh --check` reads a pii's release from a binary it cannot run (macOS).
const VERSION_LINE: &str = concat!(
    "pii ",
    env!("CARGO_PKG_VERSION"),
    " (protocol ",
    protocol::protocol_version_literal!(),
    ")"
);

fn main() -> std::process::ExitCode {
    let mut cli = Cli::parse();
    if cli.version {
        let mut text = format!("{}\n", std::hint::black_box(VERSION_LINE));
        for line in install::version_report() {
            text.push_str(&line);
            text.push('\n');
        }
        let _ = std::io::Write::write_all(&mut std::io::stdout(), text.as_bytes());
        return std::process::ExitCode::SUCCESS;
    }
    let doctor_args = match cli.command.take() {
        Some(Sub::Completions { shell }) => {
            use clap::CommandFactory;
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "pii", &mut script);
            // A closed pipe (`| head`) is not an error worth a panic.
            let _ = std::io::Write::write_all(&mut std::io::stdout(), &script);
            return std::process::ExitCode::SUCCESS;
        }
        Some(Sub::Doctor(args)) => Some(args),
        None => None,
    };
    // The one runtime of pii (current thread: pii's work is I/O, and node runs beside it).
    let rt = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("pii: cannot start the runtime: {e}");
            return std::process::ExitCode::from(1);
        }
    };
    if let Some(args) = doctor_args {
        return doctor::main(args, &rt);
    }
    match rt.block_on(run(cli)) {
        Ok(code) => std::process::ExitCode::from(code.clamp(0, 255) as u8),
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("pii: {e:#}");
            std::process::ExitCode::from(1)
        }
    }
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// `$XDG_CACHE_HOME/pi-bridge`, else `~/.cache/pi-bridge`: the log and the learned prefetch.
fn cache_dir() -> Option<PathBuf> {
    let cache = std::env::var_os("XDG_CACHE_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| home().map(|h| h.join(".cache")))?;
    Some(cache.join("pi-bridge"))
}

/// Where pii's ssh master sockets live (`crate::master::socket_dir`).
fn master_dir() -> Option<PathBuf> {
    let runtime = std::env::var_os("XDG_RUNTIME_DIR").map(PathBuf::from);
    master::socket_dir(runtime.as_deref(), cache_dir().as_deref())
}

fn default_log_file() -> Option<PathBuf> {
    Some(cache_dir()?.join("pii.log"))
}

/// Who learns what this pi looks up at start (keyed by its package and version; a script
/// without a package.json learns nothing). A store that cannot be used is logged and skipped.
fn learner(package: Option<&pi::Package>) -> Option<std::sync::Arc<prefetch::Learner>> {
    let p = package?;
    match prefetch::Store::open(&cache_dir()?) {
        Ok(store) => Some(prefetch::Learner::new(store, p.key())),
        Err(e) => {
            tracing::warn!("prefetch: {e}");
            None
        }
    }
}

fn init_logging(file: Option<&Path>) -> Result<Option<PathBuf>> {
    let Some(path) = file.map(Path::to_path_buf).or_else(default_log_file) else {
        return Ok(None);
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .with_context(|| format!("creating the log directory {}", dir.display()))?;
    }
    let f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&path)
        .with_context(|| format!("opening the log file {}", path.display()))?;
    let filter = tracing_subscriber::EnvFilter::try_from_env("PII_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_writer(Mutex::new(f))
        .with_ansi(false)
        .with_env_filter(filter)
        .init();
    Ok(Some(path))
}

/// `PII_RESUME_GRACE_MS`: how long the agent keeps the session after a dropped link.
fn resume_grace_ms() -> Result<Option<u64>> {
    match std::env::var("PII_RESUME_GRACE_MS") {
        Ok(v) => Ok(Some(v.trim().parse().with_context(|| {
            format!("PII_RESUME_GRACE_MS={v:?} is not a number of milliseconds")
        })?)),
        Err(_) => Ok(None),
    }
}

/// Wait for a child to exit, killing it after `grace`.
async fn reap(
    child: &mut tokio::process::Child,
    grace: Duration,
) -> Option<std::process::ExitStatus> {
    match tokio::time::timeout(grace, child.wait()).await {
        Ok(st) => st.ok(),
        Err(_) => {
            tracing::warn!("the agent link did not exit within {grace:?}; killing it");
            let _ = child.kill().await;
            child.wait().await.ok()
        }
    }
}

/// The ssh master pii keeps for the next `pii` (`crate::master`), with the keys of
/// `ssh::DEFAULTS` the user's config sets (both from one `ssh -G`).
async fn keep_connection(
    opts: ssh::SshOptions,
    dest: String,
    persist: Option<String>,
    verbose: bool,
) -> Result<(Vec<String>, master::Master)> {
    let (preset, m) =
        master::prepare(&opts, &dest, persist.as_deref(), master_dir().as_deref()).await?;
    tracing::info!("{}", m.describe());
    if verbose {
        eprintln!("pii: {}", m.describe());
    } else if let master::Master::Cannot(why) = &m {
        eprintln!("pii: not keeping the ssh connection for the next pii: {why}");
    }
    Ok((preset, m))
}

/// How pii reaches the agent.
enum Route {
    Local {
        agent: PathBuf,
        root: PathBuf,
    },
    Ssh {
        dest: String,
        path: String,
        opts: ssh::SshOptions,
        /// [`keep_connection`], started before the local checks (its `ssh -G` is local work
        /// that would otherwise sit on the way to the connection).
        master: tokio::task::JoinHandle<Result<(Vec<String>, master::Master)>>,
    },
}

/// Start the agent (ssh or local), `hello`, and get everything node's session needs: the
/// session (with reconnect set up for ssh) and what `session.info` answers. The trust notice is
/// printed here, before the preload gets its answer.
async fn connect(
    route: Route,
    cli: &Cli,
    cfg: &config::Config,
    timing: session::Timing,
    grace_ms: Option<u64>,
    (node, node_version, pi, log): (&Path, &str, &Path, Option<&Path>),
    (gate, local): (&protocol::trust::Gate, &[protocol::endpoint::LocalPath]),
) -> Result<(session::Session, protocol::endpoint::SessionInfo)> {
    let (mut child, reader, root, stderr_tail, dest) = match route {
        Route::Local { agent, root } => {
            if cli.verbose {
                eprintln!(
                    "pii: agent {} --stdio (local, in {})",
                    agent.display(),
                    root.display()
                );
            }
            let nonce = endpoint::new_token(16);
            let mut child = tokio::process::Command::new(&agent)
                .arg("--stdio")
                .env(protocol::hello::NONCE_ENV, &nonce)
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .kill_on_drop(true)
                .spawn()
                .with_context(|| format!("starting the agent {}", agent.display()))?;
            let tail = install::capture_stderr(child.stderr.take().expect("piped"), "agent");
            let stdout = child.stdout.take().expect("piped");
            let mut reader = BufReader::new(session::Activity::new(stdout));
            match install::read_announce(&mut reader, &nonce).await? {
                Some(install::Announce::Agent(_)) => {}
                Some(install::Announce::Install(u)) => {
                    bail!(install::InstallError::UnexpectedInstall(u))
                }
                None => {
                    let st = reap(&mut child, Duration::from_secs(3)).await;
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    bail!(
                        "the agent {} exited ({st:?}) before announcing itself:\n{}",
                        agent.display(),
                        install::tail_text(&tail)
                    );
                }
            }
            (
                child,
                reader,
                root.to_string_lossy().into_owned(),
                tail,
                None,
            )
        }
        Route::Ssh {
            dest,
            path,
            opts,
            master,
        } => {
            let (preset, master) = master.await.context("the ssh -G task")??;
            let mut with = opts.clone();
            with.options.splice(0..0, master.options());
            let (child, reader, tail) = install::connect_ssh(
                &with,
                &dest,
                cli.tools.agent.as_deref(),
                cli.verbose,
                Some(&preset),
            )
            .await?;
            (child, reader, path, tail, Some((dest, opts, master)))
        }
    };

    let mut stdin = child.stdin.take().expect("piped");
    let _ = &mut stdin;
    let counter = reader.get_ref().counter();
    let session = session::Session::start(reader, stdin, Some(counter), timing);
    session.set_child(child);
    session.set_grace_ms(grace_ms);
    let hello = match tokio::time::timeout(
        timing.rpc_timeout,
        session.hello(
            &root,
            cfg.sandbox_root.as_deref(),
            (!cli.trust_project).then_some(gate),
        ),
    )
    .await
    {
        Ok(Ok(h)) => h,
        Ok(Err(e)) => bail!("handshake with the agent failed: {e}"),
        Err(_) => bail!(
            "the agent did not answer `hello` within {} ms:\n{}",
            timing.rpc_timeout.as_millis(),
            install::tail_text(&stderr_tail)
        ),
    };
    let facts = hello.facts.clone();
    tracing::info!("connected: {facts:?}");
    // The roots are the agent's word: checked before anything of the session is used.
    boundary::check_roots(&facts, cfg.sandbox_root.is_some(), local)?;
    if cli.verbose {
        eprintln!(
            "pii: agent {} on {} ({} {}), user {} (home {}), project {} (sandbox {}), login PATH {}, git {}, rg {}, fd {}; node {} ({}), pi {}",
            hello.agent_version,
            facts.hostname,
            facts.os,
            facts.arch,
            facts.user,
            facts.home,
            facts.project_root,
            facts.sandbox_root,
            facts.login_path,
            facts.git_version.as_deref().unwrap_or("none"),
            facts.has_rg,
            facts.has_fd,
            node.display(),
            node_version,
            pi.display()
        );
        if let Some(l) = log {
            eprintln!("pii: logging to {}", l.display());
        }
    }
    if let Some((dest, opts, master)) = dest {
        // From now on a dropped ssh is replaced and the agent's session resumed.
        let socket = match master {
            master::Master::Ours { socket, .. } => Some(socket),
            _ => None,
        };
        let r = install::SshReconnect::new(&opts, &dest, cli.tools.agent.clone(), socket);
        session.set_reconnect(std::sync::Arc::new(r));
    }
    // The agent checked the gate in `hello` (`Session::hello` refused an answer without it).
    if let Some(notice) = hello.trust.as_deref().and_then(launch::trust_notice) {
        tracing::info!("{notice}");
        eprintln!("{notice}");
    }
    let info = protocol::endpoint::SessionInfo {
        agent_version: hello.agent_version.clone(),
        facts,
    };
    Ok((session, info))
}

async fn run(cli: Cli) -> Result<i32> {
    let cwd = std::env::current_dir().context("reading the current directory")?;
    let cfg = config::load(&cwd, home().as_deref())?;
    let log = init_logging(cli.log_file.as_deref())?;
    tracing::info!(
        "pii {} starting (config: {:?})",
        protocol::VERSION,
        cfg.source
    );

    // ssh's reading of its config (`ssh -G`: no connection) runs while the local checks do.
    let mut early_probe = cli
        .ssh
        .as_deref()
        .and_then(|t| ssh::parse_target(t).ok())
        .map(|(dest, _)| {
            tokio::spawn(keep_connection(
                cli.ssh_flags.options(&cfg.ssh_options),
                dest,
                cfg.control_persist.clone(),
                cli.verbose,
            ))
        });
    // Everything local first, so a bad setup fails before any connection.
    let pi = launch::find_pi(cli.tools.pi.as_deref())?;
    let package = pi::Package::of(&pi);
    let node = launch::node_version_cached(
        &launch::find_node(cli.tools.node.as_deref())?,
        cache_dir().map(|c| c.join("node-versions")).as_deref(),
    )?;
    launch::check_node(&node, package.as_ref())?;
    tracing::info!(
        "pi {} ({:?}), node {} {}",
        pi.display(),
        package.as_ref().map(pi::Package::label),
        node.path.display(),
        node.text
    );
    if let Some(notice) = pi::notice(package.as_ref(), &node.text, node.version) {
        tracing::info!("{notice}");
        eprintln!("{notice}");
    }
    if !launch::PRELOAD_FILES
        .iter()
        .any(|(n, _)| *n == launch::PRELOAD_ENTRY)
    {
        bail!(launch::LaunchError::NoPreload);
    }

    let timing = session::Timing::new(Duration::from_millis(cfg.rpc_timeout_ms));
    let grace_ms = resume_grace_ms()?;
    // What can be checked without the remote fails before anything starts.
    let route = match &cli.local {
        Some(dir) => {
            let agent = install::find_local_agent(cli.tools.agent.as_deref())?;
            let root =
                std::fs::canonicalize(dir).with_context(|| format!("--local {}", dir.display()))?;
            Route::Local { agent, root }
        }
        None => {
            let target = cli.ssh.as_deref().expect("clap requires --ssh or --local");
            let (dest, path) = ssh::parse_target(target)?;
            let opts = cli.ssh_flags.options(&cfg.ssh_options);
            let master = early_probe
                .take()
                .expect("started for --ssh with a valid target");
            Route::Ssh {
                dest,
                path,
                opts,
                master,
            }
        }
    };

    // node starts right away, with the endpoint listening: it boots and loads its modules while
    // ssh connects; the preload's first `session.info` waits for the handshake (issue 4).
    let scratch = launch::Scratch::create(&std::env::temp_dir())?;
    let preload = scratch.preload(cache_dir().map(|c| c.join("preload")).as_deref())?;
    let preload_dir = preload.parent().unwrap_or(&scratch.root).to_path_buf();
    // What stays on this machine; everything else pi names is the remote's.
    let getenv = |k: &str| std::env::var_os(k);
    let temp = scratch.temp();
    let bound = boundary::local_paths(&boundary::Inputs {
        home: home().as_deref(),
        cwd: &cwd,
        env: &getenv,
        script: &pi,
        package: package.as_ref(),
        node: &node.path,
        scratch: &scratch.root,
        preload: &preload_dir,
        temp: &temp,
        user_paths: &cfg.local_paths,
        pi_args: &cli.pi_args,
    })?;
    for l in &bound.local {
        tracing::debug!("local: {} ({:?}, {})", l.path, l.kind, l.why);
    }
    let gate = protocol::trust::Gate::new(package.as_ref().map(pi::Package::config_dir_name));
    let mut node_env: Vec<(String, OsString)> = bound
        .env
        .iter()
        .map(|(k, v)| (k.clone(), v.as_os_str().to_os_string()))
        .collect();
    // pi's temp files (bash output, images) in its private dir; no jiti cache on disk (a cache
    // file anybody could write would be code); node's compile cache outside the allowlist
    // (node reads and writes it natively, pi's tools never see it).
    node_env.push(("TMPDIR".into(), temp.clone().into_os_string()));
    node_env.push(("JITI_FS_CACHE".into(), "false".into()));
    if std::env::var_os("NODE_COMPILE_CACHE").is_none() {
        // Kept across sessions (pi starts ~0.17 s faster with it warm), private to the user.
        if let Some(dir) = cache_dir().map(|c| c.join("node-compile-cache")) {
            match prefetch::private_dir(&dir) {
                Ok(()) => node_env.push(("NODE_COMPILE_CACHE".into(), dir.into_os_string())),
                Err(e) => tracing::warn!("node's compile cache: {e}"),
            }
        }
    }
    let pi_args = match &package {
        Some(p) if p.is_pi() => {
            launch::with_guard(&cli.pi_args, &preload.with_file_name(launch::GUARD_FILE))
        }
        _ => cli.pi_args.clone(),
    };

    let token = endpoint::new_token(cfg.auth_token_length);
    let (ep, slot) = endpoint::Endpoint::bind_pending(token.clone(), &scratch.endpoint())
        .context("opening the endpoint (a Unix socket in the scratch dir)")?;
    let learner = learner(package.as_ref());
    let env = launch::session_env(
        &ep.path,
        None,
        cfg.rpc_timeout_ms,
        launch::Boundary {
            trust_project: cli.trust_project,
            gate: gate.clone(),
            local: bound.local.clone(),
        },
        learner.as_ref().map_or(&[][..], |l| l.known()),
    );
    let server = tokio::spawn(ep.serve());
    tracing::info!(
        "starting {} --require {} {} {:?}",
        node.path.display(),
        preload.display(),
        pi.display(),
        pi_args
    );
    let node_cwd = scratch.cwd();
    let node_run = launch::run_node(
        &node.path,
        &preload,
        &pi,
        &pi_args,
        &node_cwd,
        launch::NodeEnv {
            token: &token,
            session: &env,
            extra: &node_env,
        },
    );
    let up = connect(
        route,
        &cli,
        &cfg,
        timing,
        grace_ms,
        (&node.path, &node.text, &pi, log.as_deref()),
        (&gate, &bound.local),
    );
    tokio::pin!(node_run, up);
    enum First {
        Up(Box<Result<(session::Session, protocol::endpoint::SessionInfo)>>),
        NodeDone(Result<std::process::ExitStatus, launch::LaunchError>),
    }
    let first = tokio::select! {
        r = &mut up => First::Up(Box::new(r)),
        st = &mut node_run => First::NodeDone(st),
    };
    let (session, status) = match first {
        First::Up(up) => match *up {
            Ok((session, info)) => {
                tracing::info!("session up; answering session.info");
                slot.up(session.clone(), info, learner.clone());
                if let Some(l) = &learner {
                    l.open_window();
                    let l = l.clone();
                    tokio::spawn(async move {
                        tokio::time::sleep(prefetch::LEARN_WINDOW).await;
                        l.finish().await;
                    });
                }
                (session, node_run.await)
            }
            Err(e) => {
                // The preload's pending `session.info` fails with this reason and node exits on
                // its own; one that is not waiting on the session is killed (kill_on_drop).
                slot.fail(&format!("{e:#}"));
                match tokio::time::timeout(Duration::from_secs(2), &mut node_run).await {
                    Ok(st) => tracing::info!("node exited after the failed connect: {st:?}"),
                    Err(_) => {
                        tracing::warn!("node did not exit after the failed connect; killing it")
                    }
                }
                server.abort();
                return Err(e);
            }
        },
        First::NodeDone(st) => {
            // A program that never asked the remote anything can end before the connection is
            // up (paths on the allowlist need no session). The connection's outcome is still
            // pii's to report: a remote that cannot be reached, or an agent that lies, fails.
            tracing::info!("node exited before the session was up: {st:?}; finishing the connect");
            slot.fail("node exited");
            match (&mut up).await {
                Ok((session, _)) => (session, st),
                Err(e) => {
                    server.abort();
                    return Err(e);
                }
            }
        }
    };
    if let Some(l) = &learner {
        l.finish().await; // a start shorter than the learning window
    }
    let link_lost_early = session.dead_reason().is_some();
    // Teardown: session.end and close the agent's stdin (it kills its processes and exits).
    server.abort();
    let link_status = session.shutdown(Duration::from_secs(3)).await;
    tracing::info!("agent link ended: {link_status:?}; {:?}", session.stats());
    drop(scratch);
    let status = status?;
    if let Some(why) = session.dead_reason().filter(|_| link_lost_early) {
        eprintln!("pii: the connection to the agent was lost while pi ran: {why}");
    }
    let code = launch::exit_code(status);
    tracing::info!("node exited: {status:?} → {code}");
    Ok(code)
}
