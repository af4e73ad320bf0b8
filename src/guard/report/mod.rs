//! Step 5 of a reconcile: tell the world what the record step found new. Metrics, then
//! alerts (they need no round trip), then Events, then a status write is requested.
//! Nothing here changes what is remembered.

pub mod alerts;
pub mod events;
pub mod metrics;

use super::context::Context;
use super::decide::Decision;
use super::load::ObservedTarget;
use super::outcome::Executed;
use super::record::Recorded;
use super::status;

pub async fn report(
    ctx: &Context,
    target: &ObservedTarget,
    decision: &Decision,
    executed: &Executed,
    recorded: &Recorded,
) {
    if recorded.drift {
        ctx.metrics
            .audit_drift
            .get_or_create(&crate::metrics::Guard {
                namespace: target.guard.namespace.clone(),
                guard: target.guard.name.clone(),
            })
            .inc();
        tracing::warn!(target = %target.key, guard = %target.guard, actions = ?executed.done, "audit found drift the watches missed");
    }
    let Some(state) = recorded.state else {
        return;
    };
    metrics::export(ctx, target, state, executed, recorded);
    alerts::push(ctx, target, state, executed, recorded);
    events::incidents(ctx, target, recorded).await;
    events::follow_ups(ctx, target, decision, executed, recorded).await;
    events::overlaps(ctx, target, recorded).await;
    if recorded.changed || !recorded.new.is_empty() || executed.wrote() {
        status::request(ctx, target.guard.clone());
    }
    for guard in &recorded.guards_changed {
        if ctx.stores.guard(guard).is_some() {
            status::request(ctx, guard.clone());
        }
    }
}
