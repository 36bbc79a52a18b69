//! The state one agent holds for its session: what `hello` established ([`Session`]) and the
//! session's tables (uploads, descriptors, processes, subscriptions, the resume ticket, the
//! output). Handlers reach it through the [`crate::rpc`] framework ([`Host`]).

use crate::fds::table::Fds;
use crate::fs::upload::Uploads;
use crate::out::Out;
use crate::proc::table::Procs;
use crate::rpc::{Failure, Host, Subs};
pub use crate::session::Session;
use crate::{facts, resume};
use protocol::methods::HelloCall;
use protocol::Method;
use std::sync::{Arc, RwLock};
use tokio::sync::OnceCell;

/// The agent's method table.
pub type Table = crate::rpc::Table<Agent>;

/// The state of one session's agent.
pub struct Agent {
    session: RwLock<Option<Arc<Session>>>,
    probe: OnceCell<Arc<facts::Probe>>,
    pub uploads: Uploads,
    /// The session's open descriptors (`fs.open` …), closed when it ends.
    pub fds: Fds,
    pub procs: Procs,
    /// Resumption: ticket, socket, grace period, clean end (see `resume`).
    pub life: resume::Life,
    /// Where responses and notifications go.
    pub out: Out,
    pub subs: Subs,
    /// The method table (`fs.batch` runs calls through it).
    pub table: std::sync::OnceLock<Arc<Table>>,
}

impl Agent {
    pub fn new(out: Out) -> Arc<Self> {
        Arc::new(Agent {
            session: RwLock::new(None),
            probe: OnceCell::new(),
            uploads: Uploads::default(),
            fds: Fds::default(),
            procs: Procs::default(),
            life: resume::Life::default(),
            out,
            subs: Subs::default(),
            table: std::sync::OnceLock::new(),
        })
    }

    /// Install the session `hello` established (a second `hello` replaces it).
    pub fn set_session(&self, session: Session) {
        if let Ok(mut s) = self.session.write() {
            *s = Some(Arc::new(session));
        }
    }

    pub fn is_ready(&self) -> bool {
        self.session.read().map(|s| s.is_some()).unwrap_or(false)
    }

    /// The host facts, probed once (started when the session starts, awaited by `hello`).
    pub async fn probe(&self) -> Arc<facts::Probe> {
        self.probe
            .get_or_init(|| async { Arc::new(facts::probe().await) })
            .await
            .clone()
    }

    /// Kill every process group this agent started, drop unfinished uploads, close its
    /// descriptors, end its subscriptions, stop listening for resumes.
    pub async fn shutdown(&self) {
        self.life.close();
        if let Ok(s) = self.session() {
            s.changes.shutdown().await;
        }
        self.subs.end_all();
        self.uploads.abort_all();
        self.fds.close_all();
        self.procs.kill_all().await;
    }
}

impl Host for Agent {
    type Session = Session;

    fn session(&self) -> Result<Arc<Session>, Failure> {
        match self.session.read() {
            Ok(s) => s.clone().ok_or_else(Failure::not_ready),
            Err(_) => Err(Failure::not_ready()),
        }
    }

    fn admits(&self, method: &str) -> Result<(), Failure> {
        if method == HelloCall::NAME || self.is_ready() {
            Ok(())
        } else {
            Err(Failure::not_ready())
        }
    }

    fn out(&self) -> &Out {
        &self.out
    }

    fn subs(&self) -> &Subs {
        &self.subs
    }
}
