//! Decisions for a guarded generic Secret (docs/architecture.md, Behaviour: generic row).

use super::{
    Action, Decision, MISSING_RECHECK, Owners, Policy, Reason, RestorePointView, SecretView,
    TargetState, retired, shown,
};

/// Everything observed about one guarded generic Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretObservation {
    pub namespace_terminating: bool,
    pub secret: Option<SecretView>,
    pub restore_point: Option<RestorePointView>,
    /// The watch saw the Secret deleted while it carried secretguard.dev/retire=true.
    pub deleted_retired: bool,
    /// For a missing Secret saved with owners, once checked (see `owned_restore`).
    pub owners: Option<Owners>,
}

/// Whether a decision restores a Secret that was saved with owners: then its owners are
/// checked first and the decision made again with what was found (`owners`).
pub fn owned_restore(decision: &Decision, saved_with_owners: bool) -> bool {
    saved_with_owners && decision.actions.contains(&Action::RestoreIdentical)
}

/// Decide what to do about a guarded generic Secret (docs/architecture.md, Behaviour: generic row). `Fresh`
/// means nothing for a Secret that no controller would refill: it restores like `Identical`.
pub fn decide_secret(policy: &Policy, obs: &SecretObservation) -> Decision {
    if obs.namespace_terminating {
        return Decision::new(TargetState::Terminating);
    }
    // Refused restore points (another namespace's, another origin's) count for nothing here.
    let rp = obs.restore_point.as_ref().filter(|rp| rp.usable());
    let Some(secret) = &obs.secret else {
        if let Some(refused) = obs.restore_point.as_ref().and_then(|rp| rp.refused) {
            // Never restored from; looked at again like any missing object that is not
            // restored (a cluster admin may adopt the point meanwhile).
            let (state, reason) = refused.state_and_reason();
            let mut d = Decision::new(state).incident(reason);
            d.requeue_after = Some(MISSING_RECHECK);
            return d;
        }
        if obs.deleted_retired || rp.is_some_and(RestorePointView::says_retired) {
            return retired(policy, None, rp);
        }
        match &obs.owners {
            Some(Owners::Gone(owner)) => {
                let mut d = Decision::new(TargetState::OwnerGone)
                    .incident(Reason::OwnerGone)
                    .detail(format!(
                        "deleted with its owners ({} and any others are gone or being deleted): not restored, the garbage collector deleted it with them",
                        shown(owner)
                    ));
                // A hand-made re-creation is noticed.
                d.requeue_after = Some(MISSING_RECHECK);
                return d;
            }
            Some(Owners::Unverified(what)) => {
                let mut d = Decision::new(TargetState::OwnerUnverified)
                    .incident(Reason::SecretDeleted)
                    .detail(format!(
                        "not restored: no owner of it is known to exist, and the operator may not read {} to tell whether it went with them (allow it in the chart's ownerResources)",
                        shown(what)
                    ));
                d.requeue_after = Some(MISSING_RECHECK);
                return d;
            }
            Some(Owners::Live) | None => {}
        }
        let mut d = Decision::new(TargetState::Missing).incident(Reason::SecretDeleted);
        if rp.is_some_and(RestorePointView::holds_copy) && policy.restores() {
            d = d.act(Action::RestoreIdentical);
        } else {
            d.requeue_after = Some(MISSING_RECHECK);
        }
        return d;
    };
    if secret.retire_requested {
        return retired(policy, Some(secret), rp);
    }
    if secret.terminating {
        return Decision::new(TargetState::Missing).incident(Reason::SecretDeleted);
    }
    let mut d = Decision::new(TargetState::Healthy);
    if !secret.labelled && policy.writes() {
        d = d.act(Action::Label);
    }
    let saved = obs.restore_point.as_ref().is_some_and(|rp| {
        rp.usable() && rp.content_hash == secret.content_hash && rp.origin_uid == secret.uid
    });
    if !saved && policy.writes() {
        d = d.act(Action::SaveRestorePoint);
    }
    d
}
