//! What to do about one guarded object, given what is observed. Pure: no I/O, no clock
//! (the caller passes `now`), so every row of the behaviour table (docs/architecture.md,
//! Behaviour) is a table test (tests.rs). The types here; the decisions for tokens in
//! token.rs, for generic Secrets in secret.rs.

use std::time::Duration;

use k8s_openapi::jiff::Timestamp;

use crate::api::v1alpha1::RestoreMode;
use crate::restore_point::Unsaveable;

/// How often a missing object that is not being restored (Never, paused, nothing saved) is
/// looked at again: re-created by someone else without our label, no watch event tells us.
pub const MISSING_RECHECK: Duration = Duration::from_secs(10);

/// The longest wait between two re-checks of a missing object with nothing to restore it
/// from (a name a guard lists that does not exist): re-checks back off from
/// MISSING_RECHECK to this, so a guard of many missing names costs a bounded trickle of
/// GETs (security review A5). The audit looks at it too.
pub const MISSING_RECHECK_MAX: Duration = Duration::from_secs(160);

/// The wait before the `n`th re-check in a row (n from 1): 10 s doubling to 160 s.
pub fn missing_recheck(n: u32) -> Duration {
    MISSING_RECHECK
        .saturating_mul(1 << n.saturating_sub(1).min(4))
        .min(MISSING_RECHECK_MAX)
}

/// The guard's settings that decisions depend on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Policy {
    pub restore: RestoreMode,
    pub revalidate: bool,
    pub paused: bool,
    pub recreate_service_account: bool,
    /// A token Secret still empty this long after creation is reported TokenNotPopulated.
    pub populate_deadline: Duration,
    /// How long a deleted Secret stays missing before it is restored: a Secret created
    /// under its name meanwhile is kept (see `delay_restore`).
    pub restore_delay: Duration,
}

impl Policy {
    /// May the operator change the guarded namespace for this guard? Restore points (and
    /// ServiceAccount snapshots) are kept current whatever this says, paused included:
    /// those writes go only to the operator's namespace, and a restore after the guard is
    /// unpaused must bring back what was there last, not what was there before the pause.
    fn writes(&self) -> bool {
        !self.paused
    }

    /// May it bring back what went missing?
    fn restores(&self) -> bool {
        self.writes() && self.restore != RestoreMode::Never
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
    /// Its type ("Opaque" when unset).
    pub type_: String,
    /// kubernetes.io/service-account.name: the ServiceAccount a token Secret is for.
    pub sa_name: Option<String>,
    /// kubernetes.io/service-account.uid, for token Secrets.
    pub sa_uid: Option<String>,
    /// `data.token` present and non-empty.
    pub token_populated: bool,
    pub content_hash: String,
    /// Why it cannot be saved as a restore point, if it cannot (too large).
    pub unsaveable: Option<Unsaveable>,
    /// kubernetes.io/legacy-token-invalid-since is present.
    pub invalidated: bool,
    /// That label was set by the legacy token cleaner and nobody else (its managedFields
    /// owner is kube-controller-manager). An invalidation by anyone else is deliberate.
    pub invalidated_by_cleaner: bool,
    /// secretguard.dev/rotate=true.
    pub rotate_requested: bool,
    /// secretguard.dev/retire=true: retired on purpose.
    pub retire_requested: bool,
}

/// Why a restore point holds no data, only a name not to re-create.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Tombstone {
    /// The Secret was retired on purpose (secretguard.dev/retire).
    Retired,
    /// The name held a Secret that is not the guarded ServiceAccount's token.
    TargetConflict,
}

impl Tombstone {
    pub fn as_str(self) -> &'static str {
        match self {
            Tombstone::Retired => "Retired",
            Tombstone::TargetConflict => "TargetConflict",
        }
    }

    pub fn parse(s: &str) -> Option<Tombstone> {
        match s {
            "Retired" => Some(Tombstone::Retired),
            "TargetConflict" => Some(Tombstone::TargetConflict),
            _ => None,
        }
    }
}

/// The saved copy, as far as decisions care.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RestorePointView {
    pub origin_uid: String,
    pub content_hash: String,
    /// The ServiceAccount UID a saved token was issued for.
    pub sa_uid: Option<String>,
    /// Why it must not be restored into this target, if it must not.
    pub refused: Option<Refusal>,
    /// A marker holding no data (see `Tombstone`).
    pub tombstone: Option<Tombstone>,
    /// The saved Secret carried secretguard.dev/retire=true.
    pub retired: bool,
}

impl RestorePointView {
    /// May be restored into this target, and counts as its saved copy.
    pub fn usable(&self) -> bool {
        self.refused.is_none()
    }

    /// A copy that can be restored (not a tombstone).
    pub fn holds_copy(&self) -> bool {
        self.tombstone.is_none()
    }

    /// Says the Secret was retired on purpose.
    pub fn says_retired(&self) -> bool {
        self.retired || self.tombstone == Some(Tombstone::Retired)
    }
}

/// Why a restore point is never restored into the target it was found for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Refusal {
    /// Saved in an earlier namespace of the same name, deleted since: the namespace that
    /// holds the name now may be another tenant's. Only a cluster admin can allow it.
    ForeignNamespace,
    /// Its recorded origin (namespace, name, kind) is not this target: written by someone
    /// else in the operator namespace, or for another kind of target.
    Mismatch,
}

impl Refusal {
    /// The state and incident of a missing Secret whose restore point is refused.
    fn state_and_reason(self) -> (TargetState, Reason) {
        match self {
            Refusal::ForeignNamespace => (
                TargetState::ForeignRestorePoint,
                Reason::ForeignRestorePoint,
            ),
            Refusal::Mismatch => (
                TargetState::RestorePointMismatch,
                Reason::RestorePointMismatch,
            ),
        }
    }
}

/// What a check of a deleted Secret's owners found (only for a Secret saved with
/// ownerReferences). The garbage collector deletes a dependent once every owner is gone;
/// restoring it then would undo that cascade, and restoring it without its references
/// would make it an orphan nobody deletes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Owners {
    /// One owner at least exists and is not being deleted: restore, references and all.
    Live,
    /// Every owner is gone or being deleted (this one, for instance: `Kind/name`).
    Gone(String),
    /// None is known to exist, and these cannot be read (`resource.group`, or the kind when
    /// the apiserver does not serve it): the owner may be gone.
    Unverified(String),
}

/// Everything observed about one guarded token.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TokenObservation {
    pub namespace_terminating: bool,
    /// The ServiceAccount the guard names for this token.
    pub service_account_name: String,
    pub service_account: Option<ServiceAccountView>,
    pub secret: Option<SecretView>,
    pub restore_point: Option<RestorePointView>,
    /// A snapshot to re-create the ServiceAccount from exists.
    pub has_sa_snapshot: bool,
    /// That snapshot is of the ServiceAccount as it is now.
    pub sa_snapshot_current: bool,
    /// That snapshot says a rotation is under way: the UID of the ServiceAccount the
    /// rotation deletes (and then re-creates).
    pub rotating: Option<String>,
    /// The watch saw the Secret deleted while it carried secretguard.dev/retire=true.
    pub deleted_retired: bool,
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
    /// Missing, and its restore point was saved in an earlier namespace of the same name:
    /// not restored unless a cluster admin adopts the point into this namespace.
    ForeignRestorePoint,
    /// Missing, and its restore point records another origin: not restored.
    RestorePointMismatch,
    /// Missing, and restored too often lately: restores stopped until a guard resumes
    /// them (the restore-loop breaker).
    RestoreLoop,
    /// Missing, and restored once its restore delay has passed, unless a Secret is
    /// created under its name before.
    RestorePending,
    /// Retired on purpose (secretguard.dev/retire): not restored, not revalidated.
    Retired,
    /// Deleted with its owners (all gone or being deleted): not restored.
    OwnerGone,
    /// Missing, and none of its owners can be read to tell whether it went with them: not
    /// restored (the chart's `ownerResources` lets the operator read them).
    OwnerUnverified,
    /// The token Secret's name holds a Secret that is not this ServiceAccount's token:
    /// nothing is written to it, and nothing is created under that name.
    TargetConflict,
    /// It exists, but its restore point cannot be kept current (too large to save, a
    /// save that fails, a point of a newer format): a deletion now would bring back
    /// older content, or nothing.
    Unprotected,
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
            TargetState::ForeignRestorePoint => "ForeignRestorePoint",
            TargetState::RestorePointMismatch => "RestorePointMismatch",
            TargetState::RestoreLoop => "RestoreLoop",
            TargetState::RestorePending => "RestorePending",
            TargetState::Retired => "Retired",
            TargetState::OwnerGone => "OwnerGone",
            TargetState::OwnerUnverified => "OwnerUnverified",
            TargetState::TargetConflict => "TargetConflict",
            TargetState::Unprotected => "Unprotected",
        }
    }

    /// Counts as missing in status and metrics.
    pub fn is_missing(self) -> bool {
        matches!(
            self,
            TargetState::Missing
                | TargetState::ServiceAccountMissing
                | TargetState::ForeignRestorePoint
                | TargetState::RestorePointMismatch
                | TargetState::RestoreLoop
                | TargetState::RestorePending
                | TargetState::OwnerUnverified
        )
    }

    pub fn is_healthy(self) -> bool {
        matches!(
            self,
            TargetState::Healthy
                | TargetState::Pending
                | TargetState::Terminating
                | TargetState::Retired
                | TargetState::OwnerGone
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
    /// Revoke the token: snapshot the ServiceAccount marked as rotating, delete it (UID and
    /// resourceVersion preconditions, orphaning its dependents) and create it again from
    /// the snapshot. Legacy tokens are deterministic (emptying
    /// data.token gets the same bytes back), so a new ServiceAccount UID is the only way a
    /// new token comes about. Revokes every token of that ServiceAccount.
    RotateServiceAccount { uid: String },
    /// Re-create the ServiceAccount from its snapshot (and, once it exists, clear the
    /// snapshot's rotation marker).
    RecreateServiceAccount,
    /// Save the ServiceAccount (labels, annotations, imagePullSecrets, automount) to re-create it from.
    SaveServiceAccountSnapshot,
    /// Replace the restore point (if any) by a tombstone: no data, only why the name must
    /// not be re-created.
    ForgetRestorePoint(Tombstone),
}

impl Action {
    /// What it does, in words (Event notes and alerts).
    pub fn in_words(&self) -> &'static str {
        match self {
            Action::CreateTokenSecret {
                restore_of: Some(_),
            } => "re-creating the token Secret",
            Action::CreateTokenSecret { restore_of: None } => "creating the token Secret",
            Action::RestoreIdentical => "restoring the Secret from its restore point",
            Action::Label => "labelling it secretguard.dev/guarded",
            Action::SaveRestorePoint => "saving its restore point",
            Action::RemoveInvalidLabel => "removing kubernetes.io/legacy-token-invalid-since",
            Action::RotateServiceAccount { .. } => "rotating its ServiceAccount",
            Action::RecreateServiceAccount => "re-creating its ServiceAccount",
            Action::SaveServiceAccountSnapshot => "saving its ServiceAccount's snapshot",
            Action::ForgetRestorePoint(_) => "replacing its restore point by a tombstone",
        }
    }

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

    /// Re-creates a deleted Secret (identical, or empty for the tokens controller): what
    /// the restore delay holds back.
    pub fn restores_secret(&self) -> bool {
        matches!(
            self,
            Action::RestoreIdentical
                | Action::CreateTokenSecret {
                    restore_of: Some(_)
                }
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
            Action::ForgetRestorePoint(_) => "ForgetRestorePoint",
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
    /// A guarded Secret is missing and its restore point is from an earlier namespace of
    /// the same name.
    ForeignRestorePoint,
    /// A guarded Secret is missing and its restore point records another origin.
    RestorePointMismatch,
    /// Restored too often lately: restores stop (the restore-loop breaker).
    RestoreLoop,
    /// The token Secret's name holds a Secret that is not this ServiceAccount's token.
    TargetConflict,
    /// A guarded Secret was deleted with its owners (the garbage collector's cascade).
    OwnerGone,
    /// Its restore point cannot be kept current.
    Unprotected,
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
            Reason::ForeignRestorePoint => "ForeignRestorePoint",
            Reason::RestorePointMismatch => "RestorePointMismatch",
            Reason::RestoreLoop => "RestoreLoop",
            Reason::TargetConflict => "TargetConflict",
            Reason::OwnerGone => "OwnerGone",
            Reason::Unprotected => "Unprotected",
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
    /// A restore waits for the restore delay: look again after this long, as urgently as
    /// a deletion (see `delay_restore`).
    pub restore_after: Option<Duration>,
    /// Why the object is in its state, when the state alone does not say (a conflict, an
    /// invalidation left in place); shown in status and Events.
    pub detail: Option<String>,
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

    fn detail(mut self, detail: String) -> Self {
        self.detail = Some(detail);
        self
    }
}

/// A name from an object (a type, an annotation value) as it may appear in status and
/// Events: only if it looks like a Kubernetes name, so no arbitrary text is echoed.
fn shown(s: &str) -> &str {
    let plain = !s.is_empty()
        && s.len() <= 253
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_' | '/'));
    if plain { s } else { "(not shown)" }
}

/// What to do about a guarded Secret (token or not) that is retired on purpose
/// (secretguard.dev/retire): nothing but forget its restore point, keeping only a
/// tombstone so the name is never re-created. `present`: the Secret still exists.
fn retired(
    policy: &Policy,
    present: Option<&SecretView>,
    rp: Option<&RestorePointView>,
) -> Decision {
    let mut d = Decision::new(TargetState::Retired).detail(format!(
        "retired on purpose ({}): not restored or revalidated; its restore point is forgotten",
        crate::labels::RETIRE
    ));
    if !policy.writes() {
        return d;
    }
    if present.is_some_and(|s| !s.labelled && !s.terminating) {
        // So that its deletion is seen at once.
        d = d.act(Action::Label);
    }
    if rp.is_none_or(|rp| rp.tombstone != Some(Tombstone::Retired)) {
        d = d.act(Action::ForgetRestorePoint(Tombstone::Retired));
    }
    d
}

/// The restore point to decide with for a Secret that is gone, given the final state its
/// deletion's watch event showed: that state, when the restore point does not hold it yet
/// (the Secret was updated just before it was deleted, or deleted before it was first
/// saved). A token's final state counts only once it holds a token of a ServiceAccount.
/// Never for a Secret retired on purpose, nor over a tombstone: what is not to be brought
/// back stays so. Returns the view, and whether it still has to be saved.
pub fn latest_saved(
    saved: Option<RestorePointView>,
    final_state: Option<&SecretView>,
    token: bool,
) -> (Option<RestorePointView>, bool) {
    if saved
        .as_ref()
        .is_some_and(|rp| rp.tombstone.is_some() || rp.retired)
    {
        return (saved, false);
    }
    let newer = final_state.filter(|f| {
        !f.retire_requested
            && f.unsaveable.is_none()
            && (!token || (f.token_populated && f.sa_uid.is_some()))
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
                refused: None,
                tombstone: None,
                retired: false,
            }),
            true,
        ),
        None => (saved, false),
    }
}

/// Save a deleted Secret's final state before anything else (see `latest_saved`): the
/// restore then brings back the latest content, and a restore that fails does not lose
/// it. This writes only in the operator's namespace, so `Never` and `paused` do it too.
pub fn save_first(mut d: Decision) -> Decision {
    if !d.actions.contains(&Action::SaveRestorePoint) {
        d.actions.insert(0, Action::SaveRestorePoint);
    }
    d
}

/// Keep the restore point of a live Secret current (it is not saved as it is now):
/// save it, or, when it cannot be saved, say so (`Unprotected`). Whatever the guard's
/// settings (see `Policy::writes`).
fn keep_saved(d: Decision, secret: &SecretView) -> Decision {
    match secret.unsaveable {
        None => d.act(Action::SaveRestorePoint),
        Some(why) => {
            let mut d = d.incident(Reason::Unprotected).detail(why.describe());
            d.state = Some(TargetState::Unprotected);
            d
        }
    }
}

/// What to do about a target whose restore point a newer version wrote, in a format this
/// one does not read (a rollback): nothing to the point, which is never overwritten nor
/// restored from. A live Secret is `Unprotected`, a missing one stays missing (looked at
/// again), until the newer version runs again or a cluster admin deletes the point.
pub fn held_by_newer_point(
    policy: &Policy,
    secret: Option<&SecretView>,
    token: bool,
    format: &str,
) -> Decision {
    let format = shown(format);
    match secret.filter(|s| !s.terminating) {
        Some(s) => {
            let mut d = Decision::new(TargetState::Unprotected)
                .incident(Reason::Unprotected)
                .detail(format!(
                    "its restore point has format {format}, written by a newer version of the operator: this one neither reads nor overwrites it"
                ));
            if !s.labelled && policy.writes() {
                d = d.act(Action::Label);
            }
            d
        }
        None => {
            let reason = if token {
                Reason::TokenDeleted
            } else {
                Reason::SecretDeleted
            };
            let mut d = Decision::new(TargetState::Missing)
                .incident(reason)
                .detail(format!(
                    "not restored: its restore point has format {format}, written by a newer version of the operator, which this one does not read"
                ));
            d.requeue_after = Some(MISSING_RECHECK);
            d
        }
    }
}

/// Hold back the re-creation of a deleted Secret until `policy.restore_delay` has passed
/// since it was first seen missing (`missing_for` ago), so that whoever deletes and at once
/// re-creates it (a CD tool replacing it) gets their create in first: their Secret is then
/// kept and saved, as any new Secret is. Meanwhile the state is RestorePending, and the
/// deletion is reported as usual. A restore due now is left as it is; the reconcile reads
/// the Secret from the apiserver once more before making it (its cache holds only
/// labelled Secrets, and a re-created one may not be). `now`: the time, to say when the
/// restore is due.
pub fn delay_restore(
    mut d: Decision,
    policy: &Policy,
    missing_for: Duration,
    now: Timestamp,
) -> Decision {
    let Some(wait) = policy
        .restore_delay
        .checked_sub(missing_for)
        .filter(|w| !w.is_zero())
    else {
        return d;
    };
    if !d.actions.iter().any(Action::restores_secret) {
        return d;
    }
    d.actions.retain(|a| !a.restores_secret());
    d.state = Some(TargetState::RestorePending);
    d.restore_after = Some(wait);
    let due = k8s_openapi::jiff::SignedDuration::try_from(wait)
        .ok()
        .and_then(|w| now.checked_add(w).ok())
        .unwrap_or(now);
    d.detail(format!(
        "restore due at {}, after the restore delay of {} s; a Secret created under this name before then is kept instead",
        due.round(k8s_openapi::jiff::Unit::Second).unwrap_or(due),
        policy.restore_delay.as_secs()
    ))
}

mod secret;
mod token;

pub use secret::{SecretObservation, decide_secret, owned_restore};
pub use token::decide_token;

#[cfg(test)]
mod tests;
