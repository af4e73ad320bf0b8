//! Step 4 of a reconcile: update what is remembered about the target and its guard, and
//! say what is new. No I/O: the report step tells the world what this returns.

use std::time::{Duration, Instant};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;

use super::breaker;
use super::decide::{Action, Decision, MISSING_RECHECK, Reason, TargetState, missing_recheck};
use super::load::ObservedTarget;
use super::outcome::{Executed, Outcome};
use super::spec::TargetKind;
use super::state::{Records, TargetRecord};
use crate::api::v1alpha1::Incident;
use crate::object_key::ObjectKey;

/// What changed in the records, for the report step.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Recorded {
    /// The state the target is now in (None: the decision had none; nothing recorded).
    pub state: Option<TargetState>,
    /// The state differs from the last one recorded.
    pub changed: bool,
    /// Incidents not reported before in this unhealthy spell, with what was done.
    pub new: Vec<(Reason, Outcome)>,
    /// The target was brought back in this reconcile.
    pub restored: bool,
    /// A Secret was created under its name while its restore waited for the restore
    /// delay: kept as it is, not restored.
    pub kept_recreated: bool,
    /// From the first sighting of it missing to its restore.
    pub restore_seconds: Option<f64>,
    /// A restore failed in this reconcile.
    pub restore_failing: bool,
    /// A restore had failed before and none failed now: resolve its alert.
    pub restore_failing_cleared: bool,
    /// The audit found something the watches had not acted on.
    pub drift: bool,
    /// Why it is in its state, when the state alone does not say (the decision's detail,
    /// or why saving its restore point failed).
    pub detail: Option<String>,
    /// When to look at it again: the decision's wait, with re-checks of a missing object
    /// backing off.
    pub requeue_after: Option<Duration>,
    /// Which guards cover it, or what is in force, changed: the statuses of the guards
    /// covering it before and now must be written again.
    pub guards_changed: Vec<ObjectKey>,
    /// Guards that now share it with guards they did not share anything with before, with
    /// those guards (one `Overlap` Event each).
    pub overlaps_started: Vec<(ObjectKey, Vec<ObjectKey>)>,
    /// The guard that reported it until now, when another one does from now on (its
    /// per-object metrics go).
    pub previous_reporter: Option<ObjectKey>,
}

/// Update the records for one reconcile of `target`. `started`: when the reconcile began
/// acting (a restore is timed from the first sighting of the object missing).
pub fn update(
    records: &mut Records,
    target: &ObservedTarget,
    decision: &Decision,
    executed: &Executed,
    started: Instant,
    from_audit: bool,
) -> Recorded {
    let drift = from_audit && executed.wrote();
    let forgotten = executed
        .done
        .iter()
        .any(|a| matches!(a, Action::ForgetRestorePoint(_)));
    let recreated = |deleted: &String| target.live.as_ref().is_some_and(|s| &s.uid != deleted);
    if forgotten
        || records
            .retired_deletions
            .get(&target.key)
            .is_some_and(recreated)
    {
        // Its retirement is written down in its tombstone, or it was created again.
        records.retired_deletions.remove(&target.key);
    }
    if drift {
        records
            .guards
            .entry(target.guard.clone())
            .or_default()
            .audit_drift += 1;
    }
    let Some(decided) = decision.state else {
        return Recorded {
            drift,
            requeue_after: decision.requeue_after,
            ..Default::default()
        };
    };
    let restored = executed.did(&Action::RestoreIdentical)
        || (executed.created_token() && decision.incidents.contains(&Reason::TokenDeleted));
    // A live Secret whose restore point could not be saved is unprotected, whatever else
    // is true of it (a missing one shows as missing already).
    let save_failed = executed
        .failed
        .as_ref()
        .filter(|f| f.is_save_failure() && target.live.is_some());
    let mut incidents = decision.incidents.clone();
    let mut detail = decision.detail.clone();
    if let Some(failure) = save_failed {
        incidents.push(Reason::Unprotected);
        detail = Some(format!(
            "saving its restore point failed: {}",
            failure.why()
        ));
    }
    // A restored object is on its way back: Pending until its watch event says it is here.
    let state = if restored {
        TargetState::Pending
    } else if save_failed.is_some() {
        TargetState::Unprotected
    } else {
        decided
    };
    let restore_failing = executed.restore_failed();
    let rec = records
        .targets
        .entry(target.key.clone())
        .or_insert_with(|| TargetRecord::new(target.guard.clone(), target.spec.kind(), state));
    if restored {
        rec.restored_at.push(started);
        let excess = rec.restored_at.len().saturating_sub(breaker::HISTORY);
        rec.restored_at.drain(..excess);
    }
    let requeue_after = if decision.requeue_after == Some(MISSING_RECHECK) {
        rec.rechecks = rec.rechecks.saturating_add(1);
        Some(missing_recheck(rec.rechecks))
    } else {
        rec.rechecks = 0;
        decision.requeue_after
    };
    let guards_changed = sharing_changed(rec, target);
    let previous_reporter = (rec.guard != target.guard).then(|| rec.guard.clone());
    rec.guard = target.guard.clone();
    rec.kind = target.spec.kind();
    rec.sharing = target.sharing.clone().map(Box::new);
    rec.message = detail.clone();
    if decided.is_missing() {
        rec.missing_since.get_or_insert(started);
    }
    let new: Vec<(Reason, Outcome)> = incidents
        .iter()
        .copied()
        .filter(|r| !rec.reported.contains(r))
        .map(|r| {
            let pending = decision.restore_after.is_some();
            (r, Outcome::of(r, executed, target.policy.paused, pending))
        })
        .collect();
    rec.reported.extend(new.iter().map(|(r, _)| *r));
    let restore_seconds = restored
        .then(|| rec.missing_since.take().map(|s| s.elapsed().as_secs_f64()))
        .flatten();
    if matches!(state, TargetState::Healthy | TargetState::Retired) {
        rec.reported.clear();
        rec.missing_since = None;
    }
    let kept_recreated =
        rec.state == TargetState::RestorePending && target.live.is_some() && !restored;
    let changed = rec.state != state;
    rec.state = state;
    let restore_failing_cleared = rec.restore_failing && !restore_failing;
    rec.restore_failing = restore_failing;
    let overlaps_started = overlaps_started(records, target);
    if restored || kept_recreated {
        let deletion = match target.spec.kind() {
            TargetKind::ServiceAccountToken => Reason::TokenDeleted,
            TargetKind::Secret => Reason::SecretDeleted,
        };
        let outcome = if restored {
            Outcome::of(deletion, executed, target.policy.paused, false)
        } else {
            Outcome::KeptRecreated
        };
        settle_pending(records, target, outcome, restore_seconds);
    }
    if let Some((reason, outcome)) = new.last() {
        records
            .guards
            .entry(target.guard.clone())
            .or_default()
            .last_incident = Some(Incident {
            time: Time(k8s_openapi::jiff::Timestamp::now()),
            kind: target.spec.kind().as_str().into(),
            name: target.key.name.clone(),
            reason: reason.as_str().into(),
            outcome: outcome.as_str().into(),
            restore_seconds,
        });
    }
    Recorded {
        state: Some(state),
        changed,
        new,
        restored,
        kept_recreated,
        restore_seconds,
        restore_failing,
        restore_failing_cleared,
        drift,
        detail,
        requeue_after,
        guards_changed,
        overlaps_started,
        previous_reporter,
    }
}

/// The guard's last incident, when it is this target's deletion reported while its restore
/// waited for the restore delay: now what came of it (restored, or the Secret created
/// meanwhile kept).
fn settle_pending(
    records: &mut Records,
    target: &ObservedTarget,
    outcome: Outcome,
    restore_seconds: Option<f64>,
) {
    let last = records
        .guards
        .get_mut(&target.guard)
        .and_then(|g| g.last_incident.as_mut())
        .filter(|i| {
            i.name == target.key.name
                && i.kind == target.spec.kind().as_str()
                && i.outcome == Outcome::RestorePending.as_str()
        });
    if let Some(incident) = last {
        incident.outcome = outcome.as_str().into();
        incident.restore_seconds = restore_seconds;
    }
}

/// The guards covering a target before and now, when who covers it or what is in force
/// changed; empty otherwise.
fn sharing_changed(rec: &TargetRecord, target: &ObservedTarget) -> Vec<ObjectKey> {
    if rec.guard == target.guard && rec.sharing.as_deref() == target.sharing.as_ref() {
        return Vec::new();
    }
    let mut guards: Vec<ObjectKey> = rec
        .guards()
        .chain(std::iter::once(&target.guard))
        .chain(target.sharing.iter().flat_map(|s| &s.with))
        .cloned()
        .collect();
    guards.sort();
    guards.dedup();
    guards
}

/// Remember, for each guard covering the target, the guards it now shares it with;
/// return those it had not shared anything with before.
fn overlaps_started(
    records: &mut Records,
    target: &ObservedTarget,
) -> Vec<(ObjectKey, Vec<ObjectKey>)> {
    let Some(sharing) = &target.sharing else {
        return Vec::new();
    };
    let all: Vec<&ObjectKey> = std::iter::once(&target.guard)
        .chain(&sharing.with)
        .collect();
    let mut started = Vec::new();
    for guard in &all {
        let told = &mut records
            .guards
            .entry((*guard).clone())
            .or_default()
            .overlaps_with;
        let new: Vec<ObjectKey> = all
            .iter()
            .filter(|other| **other != *guard && told.insert((**other).clone()))
            .map(|other| (*other).clone())
            .collect();
        if !new.is_empty() {
            started.push(((*guard).clone(), new));
        }
    }
    started
}
