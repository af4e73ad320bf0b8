//! What to do about one guarded object, given what is observed. Pure: no I/O, no clock
//! (the caller passes `now`), so every row of the behaviour table (docs/architecture.md, Behaviour) is a table test here.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::v1alpha1::RestoreMode;

/// How often a missing object that is not being restored (Off, paused, nothing saved) is
/// looked at again: re-created by someone else without our label, no watch event tells us.
pub const MISSING_RECHECK: Duration = Duration::from_secs(10);

/// The guard's settings that decisions depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub restore: RestoreMode,
    pub revalidate: bool,
    pub paused: bool,
    pub recreate_service_account: bool,
    /// A token Secret still empty this long after creation is reported TokenNotPopulated.
    pub populate_deadline: Duration,
}

impl Policy {
    /// May the operator change the cluster for this guard at all?
    fn writes(&self) -> bool {
        !self.paused
    }

    /// May it bring back what went missing?
    fn restores(&self) -> bool {
        self.writes() && self.restore != RestoreMode::Off
    }
}

/// The ServiceAccount, as far as decisions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceAccountView {
    pub uid: String,
    pub terminating: bool,
}

/// A live Secret, as far as decisions care. Built from the object; never holds its data.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretView {
    pub uid: String,
    pub created: Timestamp,
    pub terminating: bool,
    /// Carries secretguard.dev/guarded=true.
    pub labelled: bool,
    /// kubernetes.io/service-account.uid, for token Secrets.
    pub sa_uid: Option<String>,
    /// `data.token` present and non-empty.
    pub token_populated: bool,
    pub content_hash: String,
    /// kubernetes.io/legacy-token-invalid-since is present.
    pub invalidated: bool,
    /// secretguard.dev/rotate=true.
    pub rotate_requested: bool,
}

/// The saved copy, as far as decisions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePointView {
    pub origin_uid: String,
    pub content_hash: String,
    /// The ServiceAccount UID a saved token was issued for.
    pub sa_uid: Option<String>,
}

/// Everything observed about one guarded token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenObservation {
    pub namespace_terminating: bool,
    pub service_account: Option<ServiceAccountView>,
    pub secret: Option<SecretView>,
    pub restore_point: Option<RestorePointView>,
    /// A snapshot to re-create the ServiceAccount from exists.
    pub has_sa_snapshot: bool,
    /// That snapshot is of the ServiceAccount as it is now.
    pub sa_snapshot_current: bool,
    pub now: Timestamp,
}

/// The state a guarded object is in; kept per object to report each incident once.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TargetState {
    Healthy,
    /// Being created or waiting for the tokens controller.
    Pending,
    Missing,
    ServiceAccountMissing,
    /// The guard names a ServiceAccount that was never seen: nothing was lost, and there
    /// is nothing to guard until it is created.
    ServiceAccountNotFound,
    Invalidated,
    NotPopulated,
    /// Its namespace is being deleted: the operator stands aside.
    Terminating,
}

impl TargetState {
    pub fn as_str(self) -> &'static str {
        match self {
            TargetState::Healthy => "Healthy",
            TargetState::Pending => "Pending",
            TargetState::Missing => "Missing",
            TargetState::ServiceAccountMissing => "ServiceAccountMissing",
            TargetState::ServiceAccountNotFound => "ServiceAccountNotFound",
            TargetState::Invalidated => "Invalidated",
            TargetState::NotPopulated => "NotPopulated",
            TargetState::Terminating => "Terminating",
        }
    }

    /// Counts as missing in status and metrics.
    pub fn is_missing(self) -> bool {
        matches!(
            self,
            TargetState::Missing | TargetState::ServiceAccountMissing
        )
    }

    pub fn is_healthy(self) -> bool {
        matches!(
            self,
            TargetState::Healthy | TargetState::Pending | TargetState::Terminating
        )
    }
}

/// A write to make. The reconciler carries them out in order and stops at the first failure.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Create the token Secret empty (type and SA annotation) for the tokens controller.
    /// `restore_of`: the UID of the deleted Secret this brings back, if it is a restore.
    CreateTokenSecret { restore_of: Option<String> },
    /// Re-create the Secret from its restore point, same bytes; verify the token after.
    RestoreIdentical,
    /// Add secretguard.dev/guarded=true (server-side apply).
    Label,
    /// Save the live content as the restore point.
    SaveRestorePoint,
    /// Remove kubernetes.io/legacy-token-invalid-since.
    RemoveInvalidLabel,
    /// Revoke the token: snapshot the ServiceAccount, delete it (UID precondition) and
    /// create it again from the snapshot. Legacy tokens are deterministic (emptying
    /// data.token gets the same bytes back), so a new ServiceAccount UID is the only way a
    /// new token comes about. Revokes every token of that ServiceAccount.
    RotateServiceAccount { uid: String },
    /// Re-create the ServiceAccount from its snapshot.
    RecreateServiceAccount,
    /// Save the ServiceAccount (labels, annotations, imagePullSecrets, automount) to re-create it from.
    SaveServiceAccountSnapshot,
}

impl Action {
    /// Brings back something that was deleted: the Secret (identical, or empty for the
    /// tokens controller to refill) or the ServiceAccount. Creating a token Secret that
    /// never existed restores nothing.
    pub fn is_restore(&self) -> bool {
        matches!(
            self,
            Action::RestoreIdentical
                | Action::CreateTokenSecret {
                    restore_of: Some(_)
                }
                | Action::RecreateServiceAccount
        )
    }

    /// The action's name, for logs and errors.
    pub fn name(&self) -> &'static str {
        match self {
            Action::CreateTokenSecret { .. } => "CreateTokenSecret",
            Action::RestoreIdentical => "RestoreIdentical",
            Action::Label => "Label",
            Action::SaveRestorePoint => "SaveRestorePoint",
            Action::RemoveInvalidLabel => "RemoveInvalidLabel",
            Action::RotateServiceAccount { .. } => "RotateServiceAccount",
            Action::RecreateServiceAccount => "RecreateServiceAccount",
            Action::SaveServiceAccountSnapshot => "SaveServiceAccountSnapshot",
        }
    }
}

/// Why an incident is reported; also the Event reason and the metric label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Reason {
    TokenDeleted,
    TokenRotated,
    ServiceAccountDeleted,
    /// Named by a guard, never seen (no token, restore point or snapshot of it either).
    ServiceAccountNotFound,
    ServiceAccountRecreated,
    TokenInvalidated,
    TokenNotPopulated,
    SecretDeleted,
}

impl Reason {
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::TokenDeleted => "TokenDeleted",
            Reason::TokenRotated => "TokenRotated",
            Reason::ServiceAccountDeleted => "ServiceAccountDeleted",
            Reason::ServiceAccountNotFound => "ServiceAccountNotFound",
            Reason::ServiceAccountRecreated => "ServiceAccountRecreated",
            Reason::TokenInvalidated => "TokenInvalidated",
            Reason::TokenNotPopulated => "TokenNotPopulated",
            Reason::SecretDeleted => "SecretDeleted",
        }
    }
}

/// The outcome of a decision.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    pub state: Option<TargetState>,
    pub actions: Vec<Action>,
    /// Incidents this observation starts (reported once per state change by the caller).
    pub incidents: Vec<Reason>,
    /// Look again after this long even if nothing changes (deadlines).
    pub requeue_after: Option<Duration>,
}

impl Decision {
    fn new(state: TargetState) -> Self {
        Decision {
            state: Some(state),
            ..Default::default()
        }
    }

    fn act(mut self, action: Action) -> Self {
        self.actions.push(action);
        self
    }

    fn incident(mut self, reason: Reason) -> Self {
        self.incidents.push(reason);
        self
    }
}

/// Decide what to do about a guarded ServiceAccount token (docs/architecture.md, Behaviour: token rows).
pub fn decide_token(policy: &Policy, obs: &TokenObservation) -> Decision {
    if obs.namespace_terminating {
        return Decision::new(TargetState::Terminating);
    }
    let sa = match &obs.service_account {
        Some(sa) if !sa.terminating => sa,
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

    let snapshot = if policy.recreate_service_account && policy.writes() && !obs.sa_snapshot_current
    {
        vec![Action::SaveServiceAccountSnapshot]
    } else {
        vec![]
    };
    let Some(secret) = &obs.secret else {
        let mut d = decide_missing_token(policy, obs, rp_for_this_sa.is_some());
        d.actions.splice(0..0, snapshot);
        return d;
    };
    let mut d = decide_present_token(policy, obs, sa, secret);
    d.actions.splice(0..0, snapshot);
    d
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
    if secret.rotate_requested && policy.writes() {
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
    if !saved && policy.writes() && secret.sa_uid.is_some() {
        d = d.act(Action::SaveRestorePoint);
    }
    if secret.invalidated {
        d.state = Some(TargetState::Invalidated);
        d = d.incident(Reason::TokenInvalidated);
        if policy.revalidate && policy.restores() {
            d = d.act(Action::RemoveInvalidLabel);
        }
    }
    d
}

fn decide_missing_token(policy: &Policy, obs: &TokenObservation, can_revive: bool) -> Decision {
    match &obs.restore_point {
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

/// Everything observed about one guarded generic Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretObservation {
    pub namespace_terminating: bool,
    pub secret: Option<SecretView>,
    pub restore_point: Option<RestorePointView>,
}

/// Decide what to do about a guarded generic Secret (docs/architecture.md, Behaviour: generic row). `Fresh`
/// means nothing for a Secret that no controller would refill: it restores like `Identical`.
pub fn decide_secret(policy: &Policy, obs: &SecretObservation) -> Decision {
    if obs.namespace_terminating {
        return Decision::new(TargetState::Terminating);
    }
    let Some(secret) = &obs.secret else {
        let mut d = Decision::new(TargetState::Missing).incident(Reason::SecretDeleted);
        if obs.restore_point.is_some() && policy.restores() {
            d = d.act(Action::RestoreIdentical);
        } else {
            d.requeue_after = Some(MISSING_RECHECK);
        }
        return d;
    };
    if secret.terminating {
        return Decision::new(TargetState::Missing).incident(Reason::SecretDeleted);
    }
    let mut d = Decision::new(TargetState::Healthy);
    if !secret.labelled && policy.writes() {
        d = d.act(Action::Label);
    }
    let saved = obs
        .restore_point
        .as_ref()
        .is_some_and(|rp| rp.content_hash == secret.content_hash && rp.origin_uid == secret.uid);
    if !saved && policy.writes() {
        d = d.act(Action::SaveRestorePoint);
    }
    d
}

#[cfg(test)]
#[path = "decide_tests.rs"]
mod tests;
