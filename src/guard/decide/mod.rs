//! What to do about one guarded object, given what is observed. Pure: no I/O, no clock
//! (the caller passes `now`), so every row of the behaviour table (docs/architecture.md,
//! Behaviour) is a table test (tests.rs). The types here; the decisions for tokens in
//! token.rs, for generic Secrets in secret.rs.

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

/// The restore point to decide with for a Secret that is gone, given the final state its
/// deletion's watch event showed: that state, when the restore point does not hold it yet
/// (the Secret was updated just before it was deleted, or deleted before it was first
/// saved). A token's final state counts only once it holds a token of a ServiceAccount.
/// Returns the view, and whether it still has to be saved.
pub fn latest_saved(
    saved: Option<RestorePointView>,
    final_state: Option<&SecretView>,
    token: bool,
) -> (Option<RestorePointView>, bool) {
    let newer = final_state.filter(|f| {
        (!token || (f.token_populated && f.sa_uid.is_some()))
            && saved
                .as_ref()
                .is_none_or(|rp| rp.origin_uid != f.uid || rp.content_hash != f.content_hash)
    });
    match newer {
        Some(f) => (
            Some(RestorePointView {
                origin_uid: f.uid.clone(),
                content_hash: f.content_hash.clone(),
                sa_uid: f.sa_uid.clone(),
            }),
            true,
        ),
        None => (saved, false),
    }
}

/// Save a deleted Secret's final state before anything else (see `latest_saved`): the
/// restore then brings back the latest content, and a restore that fails does not lose
/// it. This writes only in the operator's namespace, so `"Off"` does it too.
pub fn save_first(mut d: Decision, policy: &Policy) -> Decision {
    if policy.writes() && !d.actions.contains(&Action::SaveRestorePoint) {
        d.actions.insert(0, Action::SaveRestorePoint);
    }
    d
}

mod secret;
mod token;

pub use secret::{SecretObservation, decide_secret};
pub use token::decide_token;

#[cfg(test)]
mod tests;
