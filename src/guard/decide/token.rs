//! Decisions for a guarded ServiceAccount token (docs/architecture.md, Behaviour: token rows).

use std::time::Duration;

use super::{
    Action, Decision, MISSING_RECHECK, Policy, Reason, RestorePointView, SecretView,
    ServiceAccountView, TargetState, TokenObservation, Tombstone, keep_saved, retired, shown,
};
use crate::api::v1alpha1::RestoreMode;
use crate::labels;

/// Decide what to do about a guarded ServiceAccount token (docs/architecture.md, Behaviour: token rows).
pub fn decide_token(policy: &Policy, obs: &TokenObservation) -> Decision {
    if obs.namespace_terminating {
        return Decision::new(TargetState::Terminating);
    }
    if obs.restore_point.as_ref().is_some_and(|rp| !rp.usable()) {
        // A refused restore point is as good as none: its token is never restored, and a
        // fresh one is provisioned. Nothing is lost: a token saved in an earlier namespace
        // names a ServiceAccount UID that is gone with it, and for an unchanged
        // ServiceAccount the tokens controller issues the very same bytes.
        let without = TokenObservation {
            restore_point: None,
            ..obs.clone()
        };
        return decide_token(policy, &without);
    }
    if let Some(conflict) = decide_conflict(policy, obs) {
        return conflict;
    }
    let sa = match &obs.service_account {
        Some(sa) if !sa.terminating => sa,
        // The operator's own rotation deleted it: it puts it back, whatever the guard's
        // settings, until the create succeeds (also after a crash or a refused create).
        _ if obs.rotating.is_some() => return finish_rotation(),
        None if !service_account_seen_before(obs) => {
            return Decision::new(TargetState::ServiceAccountNotFound)
                .incident(Reason::ServiceAccountNotFound);
        }
        _ => {
            let mut d = Decision::new(TargetState::ServiceAccountMissing)
                .incident(Reason::ServiceAccountDeleted);
            if policy.recreate_service_account && policy.restores() && obs.has_sa_snapshot {
                d = d.act(Action::RecreateServiceAccount);
            }
            return d;
        }
    };
    // A restore point for another ServiceAccount UID holds a token that can never work again.
    let rp_for_this_sa = obs
        .restore_point
        .as_ref()
        .filter(|rp| rp.sa_uid.as_deref() == Some(sa.uid.as_str()));

    // A rotation marker outlives its rotation only by a crash or a refused delete: the
    // snapshot is saved again from the ServiceAccount as it is, which clears it (unless
    // the rotation is still asked for and starts over, saving the snapshot itself).
    let rotation_over = obs.rotating.as_ref().is_some_and(|uid| {
        *uid != sa.uid
            || !(policy.writes() && obs.secret.as_ref().is_some_and(|s| s.rotate_requested))
    });
    // Kept current while paused too, like restore points (see `Policy::writes`).
    let snapshot = if rotation_over || (policy.recreate_service_account && !obs.sa_snapshot_current)
    {
        vec![Action::SaveServiceAccountSnapshot]
    } else {
        vec![]
    };
    let Some(secret) = &obs.secret else {
        let rp = obs.restore_point.as_ref();
        // A retirement holds while the ServiceAccount keeps the UID the retired token was
        // issued for: a token re-created under the same name would have the same bytes.
        // Once the UID is new, no token of that name can revive the retired one.
        let retirement_holds = |rp: &RestorePointView| {
            rp.says_retired() && rp.sa_uid.as_deref().is_none_or(|uid| uid == sa.uid)
        };
        if obs.deleted_retired || rp.is_some_and(retirement_holds) {
            return retired(policy, None, rp);
        }
        let copy = rp.filter(|rp| rp.holds_copy() && !rp.says_retired());
        let mut d = decide_missing_token(policy, copy, rp_for_this_sa.is_some());
        d.actions.splice(0..0, snapshot);
        return d;
    };
    let mut d = decide_present_token(policy, obs, sa, secret);
    d.actions.splice(0..0, snapshot);
    d
}

/// The name holds (or held, as its tombstone says) a Secret that is not this
/// ServiceAccount's token: not ours to label, save, rotate or replace. A tombstone is
/// written once, so that the name stays left alone after that Secret is deleted.
fn decide_conflict(policy: &Policy, obs: &TokenObservation) -> Option<Decision> {
    let why = match &obs.secret {
        Some(secret) => not_this_token(secret, &obs.service_account_name)?,
        None => {
            let rp = obs.restore_point.as_ref()?;
            (rp.tombstone == Some(Tombstone::TargetConflict)).then(|| {
                "held a Secret that is not a token of this ServiceAccount; nothing is created under that name while the guard names it".to_owned()
            })?
        }
    };
    let mut d = Decision::new(TargetState::TargetConflict)
        .incident(Reason::TargetConflict)
        .detail(format!(
            "tokenSecretName of serviceAccount {:?} {why}: choose another tokenSecretName",
            obs.service_account_name
        ));
    if policy.writes() && obs.restore_point.is_none() {
        d = d.act(Action::ForgetRestorePoint(Tombstone::TargetConflict));
    }
    Some(d)
}

/// Why a Secret is not the token of ServiceAccount `sa`, if it is not.
fn not_this_token(secret: &SecretView, sa: &str) -> Option<String> {
    let rotate = if secret.rotate_requested {
        format!("; its {} annotation is ignored", labels::ROTATE)
    } else {
        String::new()
    };
    if secret.type_ != labels::TOKEN_TYPE {
        return Some(format!(
            "names a Secret of type {}, not a ServiceAccount token{rotate}",
            shown(&secret.type_)
        ));
    }
    match secret.sa_name.as_deref() {
        Some(name) if name == sa => None,
        Some(other) => Some(format!(
            "names the token of ServiceAccount {}, not of {sa}{rotate}",
            shown(other)
        )),
        None => Some(format!(
            "names a token Secret without {}{rotate}",
            labels::SA_NAME_ANNOTATION
        )),
    }
}

/// A rotation deleted the ServiceAccount (or is deleting it: orphaning its dependents
/// keeps it terminating for a moment) and has not re-created it yet: re-create it from the
/// snapshot. Whatever the guard says (paused, `Never`, `recreateServiceAccount: false`):
/// the operator took it away and must put it back; retried with backoff until the create
/// succeeds.
fn finish_rotation() -> Decision {
    Decision::new(TargetState::ServiceAccountMissing)
        .incident(Reason::TokenRotated)
        .act(Action::RecreateServiceAccount)
        .detail(
            "a rotation deleted the ServiceAccount: it is re-created from its snapshot".to_owned(),
        )
}

/// Whether anything shows the ServiceAccount existed: a token issued for it, a restore
/// point of such a token, or a snapshot of it. Without any, a missing ServiceAccount was
/// never there to be deleted (a guard written before its ServiceAccount, or a typo).
fn service_account_seen_before(obs: &TokenObservation) -> bool {
    obs.has_sa_snapshot
        || obs
            .restore_point
            .as_ref()
            .is_some_and(|rp| rp.sa_uid.is_some())
        || obs.secret.as_ref().is_some_and(|s| s.sa_uid.is_some())
}

fn decide_present_token(
    policy: &Policy,
    obs: &TokenObservation,
    sa: &ServiceAccountView,
    secret: &SecretView,
) -> Decision {
    if secret.retire_requested {
        return retired(policy, Some(secret), obs.restore_point.as_ref());
    }
    if secret.terminating {
        // Already rejected by the apiserver; it can be re-created once it is gone.
        return Decision::new(TargetState::Missing).incident(Reason::TokenDeleted);
    }
    if secret.sa_uid.as_deref().is_some_and(|uid| uid != sa.uid) {
        // The ServiceAccount was re-created: this token can never work again. The tokens
        // controller deletes it (UID mismatch); that deletion brings a fresh token at once.
        // (The operator never deletes Secrets outside its own namespace.)
        return Decision::new(TargetState::Pending).incident(Reason::ServiceAccountRecreated);
    }

    let mut d = Decision::new(TargetState::Healthy);
    if !secret.labelled && policy.writes() {
        d = d.act(Action::Label);
    }
    // Only a token the tokens controller issued for this ServiceAccount as it is now: the
    // rotation gives the ServiceAccount a new UID, after which this Secret no longer
    // carries it, so one request rotates once, even across restarts and failovers (the
    // delete has a UID precondition too). An empty token waits until it is filled.
    if secret.rotate_requested && secret.sa_uid.is_some() && policy.writes() {
        // The stale token Secret (annotation included) is replaced once the new
        // ServiceAccount is seen, like after any ServiceAccount re-creation.
        d.state = Some(TargetState::Pending);
        return d
            .act(Action::RotateServiceAccount {
                uid: sa.uid.clone(),
            })
            .incident(Reason::TokenRotated);
    }
    if !secret.token_populated {
        let age = obs.now.duration_since(secret.created);
        let deadline = k8s_openapi::jiff::SignedDuration::try_from(policy.populate_deadline)
            .unwrap_or(k8s_openapi::jiff::SignedDuration::MAX);
        if age >= deadline {
            d.state = Some(TargetState::NotPopulated);
            return d.incident(Reason::TokenNotPopulated);
        }
        d.state = Some(TargetState::Pending);
        d.requeue_after = Some(
            Duration::try_from(deadline - age).unwrap_or(Duration::ZERO)
                + Duration::from_millis(100),
        );
        return d;
    }
    let saved = obs.restore_point.as_ref().is_some_and(|rp| {
        rp.content_hash == secret.content_hash
            && rp.origin_uid == secret.uid
            && rp.sa_uid.as_deref() == Some(sa.uid.as_str())
    });
    if !saved && secret.sa_uid.is_some() {
        d = keep_saved(d, secret);
    }
    if secret.invalidated {
        d.state = Some(TargetState::Invalidated);
        d = d.incident(Reason::TokenInvalidated);
        if !secret.invalidated_by_cleaner {
            // An admin's (or anyone else's) invalidation is deliberate: never undone.
            return d.detail(format!(
                "{} was set by someone other than the legacy token cleaner: left in place",
                labels::LEGACY_TOKEN_INVALID_SINCE
            ));
        }
        d = d.detail(format!(
            "{} was set by the legacy token cleaner",
            labels::LEGACY_TOKEN_INVALID_SINCE
        ));
        if policy.revalidate && policy.restores() {
            d = d.act(Action::RemoveInvalidLabel);
        }
    }
    d
}

/// `rp`: a restorable copy, if there is one.
fn decide_missing_token(
    policy: &Policy,
    rp: Option<&RestorePointView>,
    can_revive: bool,
) -> Decision {
    match rp {
        // Never existed as far as we know: provision it for the tokens controller.
        None => {
            let mut d = Decision::new(TargetState::Pending);
            if policy.writes() {
                d = d.act(Action::CreateTokenSecret { restore_of: None });
            }
            d
        }
        Some(rp) => {
            let restore_of = Some(rp.origin_uid.clone());
            let mut d = Decision::new(TargetState::Missing).incident(Reason::TokenDeleted);
            if !policy.restores() {
                d.requeue_after = Some(MISSING_RECHECK);
                return d;
            }
            if can_revive && policy.restore == RestoreMode::Identical {
                d = d.act(Action::RestoreIdentical);
            } else if can_revive {
                // Fresh: let the tokens controller fill it. Legacy tokens are a pure function
                // of namespace, Secret name, ServiceAccount name and UID and the signing key,
                // so for an unchanged ServiceAccount it mints the same bytes: nobody has to
                // update. The restore point stays valid.
                d = d.act(Action::CreateTokenSecret { restore_of });
            } else {
                d = d
                    .incident(Reason::ServiceAccountRecreated)
                    .incident(Reason::TokenRotated)
                    .act(Action::CreateTokenSecret { restore_of });
            }
            d
        }
    }
}
