//! One guarded Secret, end to end. Only the pipeline: each step lives in the file named
//! after it, and says whether it touches the cluster.
//!
//! load (caches, at most a few GETs) -> decide (pure) -> act (writes) -> record (memory)
//! -> report (metrics, alerts, Events, status request)

use std::time::{Duration, Instant};

use super::context::{Context, Work};
use super::decide::{Action, Decision};
use super::{act, breaker, load, migrate, record, report, retention, verify};
use crate::object_key::ObjectKey;
use crate::queue::Lane;
use crate::{Error, Result, fault};

pub async fn reconcile_target(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let from_audit = ctx.records().audit_pending.remove(key);
    // Load (client: reads).
    let Some(mut target) = load::load(ctx, key).await? else {
        {
            let mut records = ctx.records();
            records.retired_deletions.remove(key);
            records.deleted_here.remove(key);
        }
        return retention::unguard(ctx, key).await;
    };
    let retention_ends = retention::keep_restore_points(ctx, &target).await?;
    // Decide (pure).
    let mut decision = target.decide();
    if target.should_look(&decision) {
        target.look(ctx).await?;
        if target.is_restore_point() {
            return retention::unguard(ctx, key).await;
        }
        if target.live.is_some() {
            decision = target.decide();
        }
    }
    if target.owners_to_check(&decision) {
        // Saved with owners: restored only while one of them exists (the garbage collector
        // deletes a dependent whose owners are all gone; undoing that is not ours to do).
        let saved = act::restore_source(ctx, &target)
            .await
            .map_err(|source| Error::Action {
                action: "CheckOwners",
                source,
            })?;
        let owners = verify::owners(&ctx.client, &key.namespace, &saved.owner_references).await?;
        tracing::debug!(target = %key, owners = ?owners, "owners checked before a restore");
        target.owners = Some(owners);
        decision = target.decide();
    }
    decision = loop_breaker(ctx, key, decision);
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
        .is_some_and(|f| f.changed_meanwhile())
    {
        // Someone (or our own earlier attempt) re-created it meanwhile, or deleted what was
        // to be labelled, even since this reconcile looked: look and decide again, once.
        target.look(ctx).await?;
        if target.is_restore_point() {
            return retention::unguard(ctx, key).await;
        }
        decision = loop_breaker(ctx, key, target.decide());
        executed = act::execute(ctx, &target, &decision).await;
    }
    if let Some(f) = executed.failed.take_if(|f| f.is_not_leading()) {
        // Kept in by the fence: another process may lead now. Nothing was done, so nothing
        // is recorded or reported (no alert for a restore that was never tried).
        keep_for_retry(ctx, key, &mut target);
        return Err(Error::Action {
            action: f.action.name(),
            source: f.error,
        });
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
    if let Some(wait) = decision.restore_after {
        // The restore delay: looked at again once it has passed, as urgently as the
        // deletion was. A crash meanwhile loses nothing: the first pass after a restart
        // finds the Secret missing and waits the delay again.
        ctx.queue
            .add_after_in(Work::Target(key.clone()), wait, Lane::Urgent);
        fault::point(fault::points::RESTORE_PENDING);
    }
    match executed.failed {
        // AlreadyExists again: its watch event brings the target back. Anything else,
        // a deletion again included (an unlabelled Secret's is not watched), is retried.
        Some(failure) if !failure.error.is_already_exists() => {
            keep_for_retry(ctx, key, &mut target);
            Err(Error::Action {
                action: failure.action.name(),
                source: failure.error,
            })
        }
        _ => {
            // Housekeeping last, and only when there was nothing else to write.
            let migration = if decision.actions.is_empty() {
                migrate::restore_points(ctx, &target).await?
            } else {
                None
            };
            Ok([recorded.requeue_after, retention_ends, migration]
                .into_iter()
                .flatten()
                .min())
        }
    }
}

/// The retry still needs what the watch event showed (a deleted Secret's final state is
/// nowhere else).
fn keep_for_retry(ctx: &Context, key: &ObjectKey, target: &mut load::ObservedTarget) {
    if let Some(content) = target.content.take() {
        ctx.return_content(key, content);
    }
}

/// The decision, with its restores held back when the object was restored too often
/// lately (`breaker`).
fn loop_breaker(ctx: &Context, key: &ObjectKey, decision: Decision) -> Decision {
    if !breaker::restores(&decision) {
        return decision;
    }
    let tripped = ctx.records().targets.get(key).is_some_and(|r| {
        breaker::tripped(
            &r.restored_at,
            Instant::now(),
            ctx.config.restore_loop_limit,
            ctx.config.restore_loop_window,
        )
    });
    if tripped {
        tracing::warn!(target = %key, limit = ctx.config.restore_loop_limit, window = ?ctx.config.restore_loop_window, "restored too often: restores stopped (RestoreLoop)");
        breaker::hold(decision)
    } else {
        decision
    }
}

#[cfg(test)]
#[path = "reconcile_tests.rs"]
mod tests;
