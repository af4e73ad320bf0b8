//! One guarded Secret, end to end. Only the pipeline: each step lives in the file named
//! after it, and says whether it touches the cluster.
//!
//! load (caches, at most a few GETs) -> decide (pure) -> act (writes) -> record (memory)
//! -> report (metrics, alerts, Events, status request)

use std::time::{Duration, Instant};

use super::context::Context;
use super::decide::Action;
use super::{act, load, record, report, retention};
use crate::object_key::ObjectKey;
use crate::{Error, Result, fault};

pub async fn reconcile_target(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let from_audit = ctx.records().audit_pending.remove(key);
    // Load (client: reads).
    let Some(mut target) = load::load(ctx, key).await? else {
        return retention::unguard(ctx, key).await;
    };
    retention::keep_restore_points(ctx, key).await?;
    // Decide (pure).
    let mut decision = target.decide();
    if target.should_look(&decision) {
        target.look(ctx).await?;
        if target.live.is_some() {
            decision = target.decide();
        }
    }
    tracing::debug!(target = %key, guard = %target.guard, state = ?decision.state, actions = ?decision.actions, incidents = ?decision.incidents, requeue = ?decision.requeue_after, "decided");
    // Act (client: writes).
    let started = Instant::now();
    if decision.actions.contains(&Action::RestoreIdentical) {
        fault::point(fault::points::DELETION_SEEN);
    }
    let mut executed = act::execute(ctx, &target, &decision).await;
    if executed
        .failed
        .as_ref()
        .is_some_and(|f| f.is_already_exists())
        && !target.looked
    {
        // Someone (or our own earlier attempt) re-created it meanwhile: look and decide again.
        target.look(ctx).await?;
        decision = target.decide();
        executed = act::execute(ctx, &target, &decision).await;
    }
    // Record (memory only).
    let recorded = record::update(
        &mut ctx.records(),
        &target,
        &decision,
        &executed,
        started,
        from_audit,
    );
    // Report (metrics, alerts, Events; a status write is queued).
    report::report(ctx, &target, &decision, &executed, &recorded).await;
    match executed.failed {
        Some(failure) if !failure.is_already_exists() => {
            // The retry still needs what the watch event showed (a deleted Secret's final
            // state is nowhere else).
            if let Some(content) = target.content.take() {
                ctx.return_content(key, content);
            }
            Err(Error::Action {
                action: failure.action.name(),
                source: failure.error,
            })
        }
        _ => Ok(decision.requeue_after),
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
