//! What carrying out a decision achieved (`Executed`, with a typed `Failure`), and what
//! that means for each incident (`Outcome`). Pure.

use super::decide::{Action, Reason};
use crate::error::ActionError;

/// An action that failed, with why.
#[derive(Debug)]
pub struct Failure {
    pub action: Action,
    pub error: ActionError,
}

impl Failure {
    /// Someone (or an earlier attempt of ours) created the object first, or deleted the
    /// one to label: not a failure, a reason to look again.
    pub fn changed_meanwhile(&self) -> bool {
        self.error.changed_meanwhile()
    }

    /// The object changed since this reconcile read it: not a failure to report, a
    /// reason to read again (retried with backoff).
    pub fn is_stale(&self) -> bool {
        matches!(
            self.error,
            ActionError::StaleRestorePoint
                | ActionError::StaleServiceAccount
                | ActionError::ServiceAccountTerminating
        )
    }

    /// Not sent: this process may no longer hold the leader Lease (src/transport.rs).
    /// Nothing happened, so there is nothing to record or report.
    pub fn is_not_leading(&self) -> bool {
        matches!(&self.error, ActionError::Kube(e) if crate::transport::is_not_leading(e))
    }

    /// The one answer to "did a restore fail?": the metric secretguard_restore_failing,
    /// the RestoreFailed Event and the pushed SecretGuardRestoreFailing alert all use it.
    pub fn is_restore_failure(&self) -> bool {
        self.action.is_restore() && !self.changed_meanwhile() && !self.is_stale()
    }

    /// The one answer to "could the restore point not be kept current?": a save that
    /// failed (too large, refused, no answer), not one that only read stale (it is read
    /// again at once). The target is then `Unprotected`.
    pub fn is_save_failure(&self) -> bool {
        self.action == Action::SaveRestorePoint && !self.is_stale() && !self.is_not_leading()
    }

    /// Why, for Events, status and alerts: only what the operator can vouch for. Whoever
    /// reads the guard reads these, and the apiserver's message can carry words of
    /// admission webhooks and ValidatingAdmissionPolicy `messageExpression`s, which can
    /// echo the object, Secret data included. So: the HTTP status code, a Kubernetes
    /// reason the operator knows, and a fixed hint ("403 Forbidden (admission denied)").
    /// The full message is in the operator log ("reconcile failed", at warn).
    pub fn why(&self) -> String {
        match &self.error {
            ActionError::Kube(kube::Error::Api(status)) => {
                let code = http::StatusCode::from_u16(status.code).ok();
                let reason = KNOWN_REASONS
                    .iter()
                    .find(|r| **r == status.reason)
                    .copied()
                    .or_else(|| code.and_then(|c| c.canonical_reason()))
                    .unwrap_or("error");
                let hint = if ADMISSION_DENIALS.iter().any(|d| status.message.contains(d)) {
                    " (admission denied)"
                } else {
                    ""
                };
                format!("{} {reason}{hint}", status.code)
            }
            ActionError::Kube(kube::Error::SerdeError(_)) => {
                "unreadable answer from the apiserver".into()
            }
            ActionError::Kube(_) => "no answer from the apiserver".into(),
            // Our own words.
            other => other.to_string(),
        }
    }
}

/// Reasons the apiserver itself gives (metav1.StatusReason); anything else in that field
/// is someone else's text (an admission webhook chooses its own) and is not repeated.
const KNOWN_REASONS: &[&str] = &[
    "Unauthorized",
    "Forbidden",
    "NotFound",
    "AlreadyExists",
    "Conflict",
    "Gone",
    "Invalid",
    "ServerTimeout",
    "StoreReadError",
    "Timeout",
    "TooManyRequests",
    "BadRequest",
    "MethodNotAllowed",
    "NotAcceptable",
    "RequestEntityTooLarge",
    "UnsupportedMediaType",
    "InternalError",
    "Expired",
    "ServiceUnavailable",
];

/// How the apiserver words a refusal by admission: a ValidatingAdmissionPolicy ("... with
/// binding '...' denied request: ...") and a webhook ("admission webhook \"...\" denied the
/// request: ...").
const ADMISSION_DENIALS: &[&str] = &["denied request", "denied the request"];

/// What carrying out the actions achieved.
#[derive(Debug, Default)]
pub struct Executed {
    pub done: Vec<Action>,
    pub failed: Option<Failure>,
    /// For an identical token restore: what the TokenReview of the restored token said.
    pub verified: Option<TokenCheck>,
}

/// What the TokenReview of a restored token said.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenCheck {
    /// It authenticates as its ServiceAccount.
    Accepted,
    /// The apiserver answered: it does not (or not as that ServiceAccount).
    Rejected,
    /// The review could not be made (an error talking to the apiserver): not known.
    ReviewFailed,
}

impl TokenCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            TokenCheck::Accepted => "accepted",
            TokenCheck::Rejected => "rejected",
            TokenCheck::ReviewFailed => "review-failed",
        }
    }
}

impl Executed {
    pub fn did(&self, action: &Action) -> bool {
        self.done.contains(action)
    }

    /// A token Secret was created (for the tokens controller to fill).
    pub fn created_token(&self) -> bool {
        self.done
            .iter()
            .any(|a| matches!(a, Action::CreateTokenSecret { .. }))
    }

    /// Anything was written.
    pub fn wrote(&self) -> bool {
        !self.done.is_empty()
    }

    /// A restore was attempted and failed (see `Failure::is_restore_failure`).
    pub fn restore_failed(&self) -> bool {
        self.failed
            .as_ref()
            .is_some_and(Failure::is_restore_failure)
    }

    /// A failure worth reporting: anything but AlreadyExists and a stale read.
    pub fn failure(&self) -> Option<&Failure> {
        self.failed
            .as_ref()
            .filter(|f| !f.changed_meanwhile() && !f.is_stale())
    }
}

/// What the operator did about an incident; shown in status and Events.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Outcome {
    Restored,
    RestoredUnverified,
    RestoredFresh,
    FreshTokenRequested,
    Revalidated,
    Recreated,
    AlertOnly,
    Paused,
    Failed,
    /// A deleted Secret waits for its restore delay before it is restored.
    RestorePending,
    /// A Secret was created under the deleted one's name during its restore delay: kept,
    /// not restored.
    KeptRecreated,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Restored => "Restored",
            Outcome::RestoredUnverified => "RestoredUnverified",
            Outcome::RestoredFresh => "RestoredFresh",
            Outcome::FreshTokenRequested => "FreshTokenRequested",
            Outcome::Revalidated => "Revalidated",
            Outcome::Recreated => "Recreated",
            Outcome::AlertOnly => "AlertOnly",
            Outcome::Paused => "Paused",
            Outcome::Failed => "Failed",
            Outcome::RestorePending => "RestorePending",
            Outcome::KeptRecreated => "KeptRecreated",
        }
    }

    /// What was done about `reason`; `restore_pending`: the restore waits for the restore
    /// delay (decided, not done yet).
    pub fn of(reason: Reason, executed: &Executed, paused: bool, restore_pending: bool) -> Outcome {
        let fixed = match reason {
            Reason::TokenDeleted | Reason::SecretDeleted => {
                if executed.did(&Action::RestoreIdentical) {
                    Some(
                        if executed.verified.is_some_and(|c| c != TokenCheck::Accepted) {
                            Outcome::RestoredUnverified
                        } else {
                            Outcome::Restored
                        },
                    )
                } else if executed.created_token() {
                    Some(Outcome::RestoredFresh)
                } else {
                    None
                }
            }
            Reason::TokenInvalidated => executed
                .did(&Action::RemoveInvalidLabel)
                .then_some(Outcome::Revalidated),
            Reason::ServiceAccountDeleted => executed
                .did(&Action::RecreateServiceAccount)
                .then_some(Outcome::Recreated),
            Reason::ServiceAccountRecreated | Reason::TokenRotated => (executed.created_token()
                || executed.did(&Action::RecreateServiceAccount)
                || executed
                    .done
                    .iter()
                    .any(|a| matches!(a, Action::RotateServiceAccount { .. })))
            .then_some(Outcome::FreshTokenRequested),
            Reason::TokenNotPopulated
            | Reason::ServiceAccountNotFound
            | Reason::ForeignRestorePoint
            | Reason::RestorePointMismatch
            | Reason::RestoreLoop
            | Reason::TargetConflict
            | Reason::OwnerGone
            | Reason::Unprotected => None,
        };
        match fixed {
            Some(o) => o,
            None if executed.failed.is_some() => Outcome::Failed,
            None if restore_pending => Outcome::RestorePending,
            None if paused => Outcome::Paused,
            None => Outcome::AlertOnly,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn executed(done: &[Action], failed: Option<(Action, ActionError)>) -> Executed {
        Executed {
            done: done.to_vec(),
            failed: failed.map(|(action, error)| Failure { action, error }),
            verified: None,
        }
    }

    fn already_exists() -> ActionError {
        ActionError::Kube(kube::Error::Api(
            kube::core::Status::failure("secrets \"x\" already exists", "AlreadyExists")
                .with_code(409)
                .boxed(),
        ))
    }

    fn forbidden() -> ActionError {
        ActionError::Kube(kube::Error::Api(
            kube::core::Status::failure("forbidden", "Forbidden")
                .with_code(403)
                .boxed(),
        ))
    }

    #[test]
    fn outcomes_say_what_was_done_about_each_incident() {
        let restore_of = Some("uid".to_owned());
        let rows: Vec<(&str, Reason, Executed, bool, Outcome)> = vec![
            (
                "identical restore, token accepted",
                Reason::TokenDeleted,
                Executed {
                    verified: Some(TokenCheck::Accepted),
                    ..executed(&[Action::RestoreIdentical], None)
                },
                false,
                Outcome::Restored,
            ),
            (
                "identical restore, TokenReview refused it",
                Reason::TokenDeleted,
                Executed {
                    verified: Some(TokenCheck::Rejected),
                    ..executed(&[Action::RestoreIdentical], None)
                },
                false,
                Outcome::RestoredUnverified,
            ),
            (
                "identical restore, the TokenReview could not be made",
                Reason::TokenDeleted,
                Executed {
                    verified: Some(TokenCheck::ReviewFailed),
                    ..executed(&[Action::RestoreIdentical], None)
                },
                false,
                Outcome::RestoredUnverified,
            ),
            (
                "fresh restore",
                Reason::TokenDeleted,
                executed(
                    &[Action::CreateTokenSecret {
                        restore_of: restore_of.clone(),
                    }],
                    None,
                ),
                false,
                Outcome::RestoredFresh,
            ),
            (
                "Secret restored",
                Reason::SecretDeleted,
                executed(&[Action::RestoreIdentical], None),
                false,
                Outcome::Restored,
            ),
            (
                "restore refused",
                Reason::SecretDeleted,
                executed(&[], Some((Action::RestoreIdentical, forbidden()))),
                false,
                Outcome::Failed,
            ),
            (
                "paused: nothing done",
                Reason::SecretDeleted,
                executed(&[], None),
                true,
                Outcome::Paused,
            ),
            (
                "restore Never: alert only",
                Reason::TokenDeleted,
                executed(&[], None),
                false,
                Outcome::AlertOnly,
            ),
            (
                "revalidated",
                Reason::TokenInvalidated,
                executed(&[Action::RemoveInvalidLabel], None),
                false,
                Outcome::Revalidated,
            ),
            (
                "ServiceAccount re-created from its snapshot",
                Reason::ServiceAccountDeleted,
                executed(&[Action::RecreateServiceAccount], None),
                false,
                Outcome::Recreated,
            ),
            (
                "rotation requested a fresh token",
                Reason::TokenRotated,
                executed(&[Action::RotateServiceAccount { uid: "u".into() }], None),
                false,
                Outcome::FreshTokenRequested,
            ),
            (
                "a ServiceAccount never seen: nothing to do",
                Reason::ServiceAccountNotFound,
                executed(&[], None),
                false,
                Outcome::AlertOnly,
            ),
        ];
        for (name, reason, executed, paused, want) in rows {
            assert_eq!(
                Outcome::of(reason, &executed, paused, false),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn a_restore_waiting_for_its_delay_is_pending_unless_something_failed() {
        let pending =
            |executed: &Executed| Outcome::of(Reason::SecretDeleted, executed, false, true);
        assert_eq!(pending(&executed(&[], None)), Outcome::RestorePending);
        assert_eq!(
            pending(&executed(&[Action::SaveRestorePoint], None)),
            Outcome::RestorePending,
            "its final state saved first"
        );
        assert_eq!(
            pending(&executed(
                &[],
                Some((Action::SaveRestorePoint, forbidden()))
            )),
            Outcome::Failed
        );
    }

    #[test]
    fn only_a_failed_restore_is_a_restore_failure() {
        let label = executed(&[], Some((Action::Label, forbidden())));
        assert!(label.failure().is_some() && !label.restore_failed());
        let snapshot = executed(&[], Some((Action::SaveRestorePoint, forbidden())));
        assert!(!snapshot.restore_failed());
        let restore = executed(&[], Some((Action::RestoreIdentical, forbidden())));
        assert!(restore.restore_failed());
        let fresh = executed(
            &[],
            Some((
                Action::CreateTokenSecret {
                    restore_of: Some("uid".into()),
                },
                forbidden(),
            )),
        );
        assert!(fresh.restore_failed());
        let provision = executed(
            &[],
            Some((Action::CreateTokenSecret { restore_of: None }, forbidden())),
        );
        assert!(
            !provision.restore_failed(),
            "creating a token Secret that never existed restores nothing"
        );
        let raced = executed(&[], Some((Action::RestoreIdentical, already_exists())));
        assert!(raced.failure().is_none() && !raced.restore_failed());
    }

    fn api_error(code: u16, reason: &str, message: &str) -> Failure {
        Failure {
            action: Action::RestoreIdentical,
            error: ActionError::Kube(kube::Error::Api(
                kube::core::Status::failure(message, reason)
                    .with_code(code)
                    .boxed(),
            )),
        }
    }

    #[test]
    fn why_says_the_status_and_never_the_servers_words() {
        let vap = api_error(
            403,
            "Forbidden",
            "secrets \"db\" is forbidden: ValidatingAdmissionPolicy 'p' with binding 'b' denied request: password=hunter2",
        );
        assert_eq!(vap.why(), "403 Forbidden (admission denied)");
        let webhook = api_error(
            400,
            "password=hunter2",
            "admission webhook \"w.example.com\" denied the request: password=hunter2",
        );
        assert_eq!(
            webhook.why(),
            "400 Bad Request (admission denied)",
            "a reason the apiserver does not use is someone else's text"
        );
        let rbac = api_error(
            403,
            "Forbidden",
            "secrets is forbidden: User \"x\" cannot create resource",
        );
        assert_eq!(rbac.why(), "403 Forbidden");
        assert_eq!(
            api_error(422, "Invalid", &"é".repeat(400)).why(),
            "422 Invalid"
        );
        assert_eq!(api_error(599, "", "x").why(), "599 error");
        let ours = Failure {
            action: Action::RestoreIdentical,
            error: ActionError::MissingRestorePoint,
        };
        assert_eq!(ours.why(), "no restore point to restore from");
    }
}
