//! The method table: every method and subscription of the protocol and the handler that serves
//! it. A new method is declared in `protocol` and registered here (or in the `register_all` of
//! the handler module it belongs to); `tests::every_protocol_method_is_served` checks that
//! nothing is missing. The session's own methods (`hello`, `session.*`, `fs.batch`) are here.

use crate::agent::{Agent, Table};
use crate::rpc::{Answer, Caller, Failure, Host};
use crate::{changes, facts, fs, proc, watch};
use protocol::methods::*;
use protocol::rpc::ErrorObject;
use protocol::{ErrorCode, Method};
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
    let mut r = facts::hello(agent.clone(), p).await?;
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
