//! Alerts about one reconcile, pushed straight to Alertmanager (when configured): new
//! incidents fire, a failing restore fires, and what is fixed is resolved. The names are
//! those of the Prometheus rules (deploy/prometheus/secretguard-rules.yaml).

use crate::alerts::Alert;
use crate::guard::context::Context;
use crate::guard::decide::{Reason, TargetState};
use crate::guard::load::ObservedTarget;
use crate::guard::outcome::Executed;
use crate::guard::record::Recorded;
use crate::guard::report::events::explain;

pub const RESTORE_FAILING: &str = "SecretGuardRestoreFailing";
const TOKEN_DELETED: &str = "SecretGuardTokenDeleted";
const SECRET_DELETED: &str = "SecretGuardSecretDeleted";
const TOKEN_ROTATED: &str = "SecretGuardTokenRotated";
const OBJECT_MISSING: &str = "SecretGuardObjectMissing";

/// The alerts for an incident reason; none for a reason that is no emergency (a
/// ServiceAccount that never existed, a token name held by another Secret: the guard's
/// status and a Warning Event say so). A
/// deleted Secret raises both an event alert (heard of even when restored at once) and
/// the state alert (firing while it stays missing).
pub fn alert_names(reason: Reason) -> &'static [&'static str] {
    match reason {
        Reason::TokenDeleted => &[TOKEN_DELETED],
        Reason::SecretDeleted => &[SECRET_DELETED, OBJECT_MISSING],
        Reason::ServiceAccountDeleted
        | Reason::ForeignRestorePoint
        | Reason::RestorePointMismatch => &[OBJECT_MISSING],
        Reason::TokenRotated | Reason::ServiceAccountRecreated => &[TOKEN_ROTATED],
        Reason::TokenInvalidated => &["SecretGuardTokenInvalidated"],
        Reason::TokenNotPopulated => &["SecretGuardTokenNotPopulated"],
        Reason::RestoreLoop => &["SecretGuardRestoreLoop"],
        Reason::Unprotected => &["SecretGuardUnprotected"],
        // The garbage collector deleted it with its owners, as whoever deleted them meant.
        Reason::ServiceAccountNotFound | Reason::TargetConflict | Reason::OwnerGone => &[],
    }
}

/// Event alerts fire for a fixed window even when the restore took milliseconds: resolved
/// at once, Alertmanager could drop them before its group_wait, and nobody would hear of
/// the deletion (security review B9). The others are state alerts, firing until the
/// object is fixed.
fn is_event(alertname: &str) -> bool {
    [TOKEN_DELETED, SECRET_DELETED, TOKEN_ROTATED].contains(&alertname)
}

pub fn push(
    ctx: &Context,
    target: &ObservedTarget,
    state: TargetState,
    executed: &Executed,
    recorded: &Recorded,
) {
    let Some(alerter) = &ctx.alerter else {
        return;
    };
    let kind = target.spec.kind().as_str();
    let alert = |alertname: &'static str, reason: &str, description: String| Alert {
        alertname,
        event: is_event(alertname),
        object: target.key.clone(),
        guard: target.guard.name.clone(),
        kind: kind.into(),
        reason: reason.into(),
        severity: target.severity.as_str().into(),
        summary: format!("{reason}: {kind} {}", target.key),
        description,
    };
    for (reason, _) in &recorded.new {
        for &alertname in alert_names(*reason) {
            alerter.fire(alert(
                alertname,
                reason.as_str(),
                explain(*reason, kind, &target.key),
            ));
        }
    }
    if let Some(failure) = executed.failed.as_ref().filter(|f| f.is_restore_failure()) {
        alerter.fire(alert(
            RESTORE_FAILING,
            "RestoreFailed",
            format!(
                "{kind} {}: {} keeps failing: {}",
                target.key,
                failure.action.in_words(),
                failure.why()
            ),
        ));
    } else if recorded.restore_failing_cleared {
        alerter.resolve_one(target.key.clone(), RESTORE_FAILING);
    }
    if matches!(
        state,
        TargetState::Healthy | TargetState::Retired | TargetState::OwnerGone
    ) && recorded.changed
    {
        alerter.resolve(target.key.clone());
    }
}
