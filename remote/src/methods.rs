//! The method table: every method and subscription of the protocol and the handler that serves
//! it. A new method is declared in `protocol` and registered here (or in the `register_all` of
//! the handler module it belongs to); `tests::every_protocol_method_is_served` checks that
//! nothing is missing. The session's own methods (`hello`, `session.*`, `fs.batch`) are here.

use crate::agent::{Agent, Session, Table};
use crate::facts::{canonical_dir, expand_root};
use crate::rpc::{Answer, Caller, Failure, Host};
use crate::sandbox::Sandbox;
use crate::{changes, fs, proc, watch};
use protocol::methods::*;
use protocol::rpc::ErrorObject;
use protocol::{Errno, Facts, Hello, HelloResult};
use protocol::{ErrorCode, Method};
use std::path::Path;
use std::sync::Arc;

/// Every method and subscription of the agent.
pub fn table() -> Table {
    let mut t = Table::default();
    t.method::<HelloCall, _, _>(hello);
    t.method::<SessionAck, _, _>(|agent: Arc<Agent>, p| async move {
        agent.out.ack(p.seq).await;
        Ok(protocol::Empty)
    });
    t.method::<SessionEnd, _, _>(|agent: Arc<Agent>, _| async move {
        agent.life.end();
        Ok(protocol::Empty)
    });
    t.method::<SessionHops, _, _>(|_: Arc<Agent>, p| async move {
        let stamps = &protocol::hops::STAMPS;
        let taken = stamps.take();
        stamps.set(p.on);
        Ok(taken)
    });
    fs::register_all(&mut t);
    t.method::<Batch, _, _>(batch);
    proc::register_all(&mut t);
    t.subscription::<Spawn, _, _>(|agent, session, p, pending| async move {
        if let Some(events) = pending.accept().await {
            proc::spawn_subscription(agent, session, p, events).await
        }
    });
    t.subscription::<Watch, _, _>(watch::run);
    t.subscription::<Changes, _, _>(changes::subscribe);
    t
}

/// `hello`: the facts, and a ticket to resume this session later. A `resume` is only served as
/// the first call of a connection (by `server`), never here.
async fn hello(agent: Arc<Agent>, p: protocol::Hello) -> Result<protocol::HelloResult, Failure> {
    if p.resume.is_some() {
        return Err(Failure::Code(
            ErrorCode::InvalidParams,
            "`resume` is only accepted as the first call of a new connection".into(),
        ));
    }
    let grace = p.grace_ms;
    let mut r = facts_hello(agent.clone(), p).await?;
    r.session = agent.life.make_resumable(&r.facts.home, grace, &r);
    Ok(r)
}

/// `fs.batch`: each call through the same table, in order, each with its own outcome.
async fn batch(
    agent: Arc<Agent>,
    p: protocol::fs::BatchParams,
) -> Result<Vec<protocol::fs::BatchResult>, Failure> {
    use protocol::fs::BatchResult;
    agent.session()?;
    let table = agent.table.get().cloned().ok_or_else(Failure::not_ready)?;
    let mut out = Vec::with_capacity(p.calls.len());
    for call in p.calls {
        let r = if !call.method.starts_with("fs.") || call.method == Batch::NAME {
            Err(ErrorObject::new(
                ErrorCode::InvalidParams,
                format!("`{}` cannot run inside fs.batch", call.method),
            ))
        } else {
            let params = serde_json::value::to_raw_value(&call.params).ok();
            table
                .call(
                    agent.clone(),
                    &call.method,
                    params.as_deref(),
                    Caller::Batch,
                )
                .await
        };
        out.push(match r {
            Ok(Answer::Json(raw)) | Ok(Answer::Binary(raw, _)) => {
                BatchResult::Ok(serde_json::from_str(raw.get()).unwrap_or(serde_json::Value::Null))
            }
            Err(e) => BatchResult::Err {
                data: e
                    .data
                    .as_ref()
                    .and_then(|d| serde_json::from_str(d.get()).ok()),
                code: e.code,
                message: e.message,
            },
        });
    }
    Ok(out)
}

/// `hello`: check the version, resolve the roots, answer the facts.
async fn facts_hello(agent: Arc<Agent>, p: Hello) -> Result<HelloResult, Failure> {
    if p.protocol != protocol::PROTOCOL_VERSION {
        return Err(Failure::Code(
            ErrorCode::VersionMismatch,
            format!(
                "pii {} speaks protocol {}, but pi-bridge-agent {} speaks protocol {}",
                p.client_version,
                p.protocol,
                protocol::VERSION,
                protocol::PROTOCOL_VERSION
            ),
        ));
    }
    let probe = agent.probe().await;
    let project = canonical_dir(&p.root, &expand_root(&p.root, &probe.home), "project root")?;
    let sandbox = match &p.sandbox_root {
        None => project.clone(),
        Some(s) => {
            let sb = canonical_dir(s, &expand_root(s, &probe.home), "sandbox root")?;
            if !project.starts_with(&sb) {
                return Err(Errno::new("EACCES", "realpath", Some(s))
                    .with_detail(format!(
                        "the sandbox root '{}' does not contain the project root '{}'",
                        sb.display(),
                        project.display()
                    ))
                    .into());
            }
            sb
        }
    };
    let s = |p: &Path| p.to_string_lossy().into_owned();
    let facts = Facts {
        os: probe.os.clone(),
        arch: probe.arch.clone(),
        user: probe.user.clone(),
        uid: probe.uid,
        gid: probe.gid,
        home: probe.home.clone(),
        hostname: probe.hostname.clone(),
        shell: probe.shell.clone(),
        login_path: probe.login.path.clone(),
        project_root: s(&project),
        sandbox_root: s(&sandbox),
        agent_pid: std::process::id(),
        git_version: probe.git_version.clone(),
        bash_version: probe.bash_version.clone(),
        has_rg: probe.has_rg,
        has_fd: probe.has_fd,
    };
    let session = Session::new(Sandbox::new(sandbox), probe.login.clone());
    session.changes.set_project(project.clone());
    // In `hello` itself: pii's trust notice then needs no round trip of its own.
    let trust = match &p.gate {
        Some(g) => Some(crate::trust::findings(&session, &facts.project_root, g)?),
        None => None,
    };
    agent.set_session(session);
    Ok(HelloResult {
        protocol: protocol::PROTOCOL_VERSION,
        agent_version: protocol::VERSION.into(),
        facts,
        // Filled in by the server, which owns resumption (remote/src/resume.rs).
        session: None,
        resumed: false,
        trust,
    })
}
