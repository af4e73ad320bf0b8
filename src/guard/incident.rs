//! Reporting what happened: an Event on the guard and on the affected object, one
//! structured log line, and the guard's lastIncident. Names, UIDs and outcomes only: no
//! Secret data or token bytes ever reach an Event, a log line or status.

use k8s_openapi::api::core::v1::{ObjectReference, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::runtime::events::{Event, EventType};

use super::decide::{Action, Decision, Reason};
use super::index::{ObjectKey, TargetSpec};
use super::reconcile::Results;
use crate::api::v1alpha1::{Incident, SecretGuardSpec, Severity};
use crate::controller::Context;

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
        }
    }

    pub fn of(reason: Reason, results: &Results, paused: bool) -> Outcome {
        let fixed = match reason {
            Reason::TokenDeleted | Reason::SecretDeleted => {
                if results.did(&Action::RestoreIdentical) {
                    Some(if results.verified == Some(false) {
                        Outcome::RestoredUnverified
                    } else {
                        Outcome::Restored
                    })
                } else if results.created_token() {
                    Some(Outcome::RestoredFresh)
                } else {
                    None
                }
            }
            Reason::TokenInvalidated => results
                .did(&Action::RemoveInvalidLabel)
                .then_some(Outcome::Revalidated),
            Reason::ServiceAccountDeleted => results
                .did(&Action::RecreateServiceAccount)
                .then_some(Outcome::Recreated),
            Reason::ServiceAccountRecreated | Reason::TokenRotated => (results.created_token()
                || results
                    .done
                    .iter()
                    .any(|a| matches!(a, Action::RotateServiceAccount { .. })))
            .then_some(Outcome::FreshTokenRequested),
            Reason::TokenNotPopulated | Reason::ServiceAccountNotFound => None,
        };
        match fixed {
            Some(o) => o,
            None if results.failed.is_some() => Outcome::Failed,
            None if paused => Outcome::Paused,
            None => Outcome::AlertOnly,
        }
    }
}

pub fn explain(reason: Reason, kind: &str, key: &ObjectKey) -> String {
    match reason {
        Reason::TokenDeleted => format!(
            "token Secret {key} was deleted; every holder of the token is locked out until it is back"
        ),
        Reason::SecretDeleted => format!("{kind} {key} was deleted"),
        Reason::TokenRotated => format!(
            "token in {key} is being replaced by a new one (its ServiceAccount is re-created, which revokes every token of it): consumers must update to the new token"
        ),
        Reason::ServiceAccountDeleted => format!(
            "the ServiceAccount of token Secret {key} was deleted: the token no longer authenticates"
        ),
        Reason::ServiceAccountRecreated => format!(
            "the ServiceAccount of token Secret {key} was re-created with a new UID: old tokens can never work again; a fresh token is issued and consumers must update"
        ),
        Reason::TokenInvalidated => format!(
            "token in {key} was marked {} by the legacy token cleaner and is rejected",
            crate::labels::LEGACY_TOKEN_INVALID_SINCE
        ),
        Reason::ServiceAccountNotFound => format!(
            "the ServiceAccount of token Secret {key} does not exist and was never seen: nothing is guarded until it is created"
        ),
        Reason::TokenNotPopulated => {
            format!("token Secret {key} is still empty: is the tokens controller running?")
        }
    }
}

fn guard_ref(guard: &ObjectKey, uid: &str) -> ObjectReference {
    ObjectReference {
        api_version: Some("secretguard.dev/v1alpha1".into()),
        kind: Some("SecretGuard".into()),
        namespace: Some(guard.namespace.clone()),
        name: Some(guard.name.clone()),
        uid: Some(uid.to_owned()),
        ..Default::default()
    }
}

fn secret_ref(key: &ObjectKey, live: Option<&Secret>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: live.and_then(|s| s.metadata.uid.clone()),
        ..Default::default()
    }
}

pub fn severity(spec: &SecretGuardSpec) -> &'static str {
    match spec.severity {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
    }
}

/// Publish an Event on the guard and, when it exists, on the affected Secret.
async fn publish(
    ctx: &Context,
    regarding: &[ObjectReference],
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: "Guard".into(),
        secondary: None,
    };
    for r in regarding {
        if let Err(e) = ctx.recorder.publish(&event, r).await {
            tracing::warn!(reason, error = %e, "could not publish Event");
        }
    }
}

/// Report a new incident.
#[allow(clippy::too_many_arguments)]
pub async fn report(
    ctx: &Context,
    guard: &ObjectKey,
    guard_uid: &str,
    spec: &SecretGuardSpec,
    key: &ObjectKey,
    kind: &'static str,
    live: Option<&Secret>,
    reason: Reason,
    outcome: Outcome,
    restore_seconds: Option<f64>,
) {
    let note = format!(
        "{} (severity {}); outcome: {}",
        explain(reason, kind, key),
        severity(spec),
        outcome.as_str()
    );
    tracing::warn!(
        guard = %guard, kind, target = %key, reason = reason.as_str(), outcome = outcome.as_str(),
        severity = severity(spec), restore_ms = restore_seconds.map(|s| (s * 1000.0) as u64),
        "incident"
    );
    {
        let mut m = ctx.memory();
        m.guards.entry(guard.clone()).or_default().last_incident = Some(Incident {
            time: Time(k8s_openapi::jiff::Timestamp::now()),
            kind: kind.into(),
            name: key.name.clone(),
            reason: reason.as_str().into(),
            outcome: outcome.as_str().into(),
            restore_seconds,
        });
    }
    let mut regarding = vec![guard_ref(guard, guard_uid)];
    if live.is_some_and(|s| s.metadata.deletion_timestamp.is_none()) {
        regarding.push(secret_ref(key, live));
    }
    publish(ctx, &regarding, EventType::Warning, reason.as_str(), note).await;
}

/// Events for what went well (or failed) after the incident itself.
#[allow(clippy::too_many_arguments)]
pub async fn report_follow_ups(
    ctx: &Context,
    guard: &ObjectKey,
    guard_uid: &str,
    spec: &SecretGuardSpec,
    key: &ObjectKey,
    target: &TargetSpec,
    decision: &Decision,
    results: &Results,
    restore_seconds: Option<f64>,
) {
    let both = |live: Option<&Secret>| vec![guard_ref(guard, guard_uid), secret_ref(key, live)];
    let took = restore_seconds
        .map(|s| format!(" in {:.0} ms", s * 1000.0))
        .unwrap_or_default();
    if results.did(&Action::RestoreIdentical) {
        let (reason, type_, note) = match (target, results.verified) {
            (
                TargetSpec::Token {
                    service_account, ..
                },
                Some(true),
            ) => (
                "TokenRestored",
                EventType::Normal,
                format!(
                    "restored {key} with identical bytes{took}; TokenReview: authenticates as system:serviceaccount:{}:{service_account}",
                    key.namespace
                ),
            ),
            (TargetSpec::Token { .. }, _) => (
                "RestoreUnverified",
                EventType::Warning,
                format!(
                    "restored {key} with identical bytes{took}, but TokenReview did not accept the token"
                ),
            ),
            (TargetSpec::Secret, _) => (
                "SecretRestored",
                EventType::Normal,
                format!("restored {key} from its restore point{took}"),
            ),
        };
        tracing::info!(guard = %guard, target = %key, reason, verified = ?results.verified, restore_ms = restore_seconds.map(|s| (s * 1000.0) as u64), "restored");
        publish(ctx, &both(None), type_, reason, note).await;
    }
    if results.created_token() && decision.incidents.is_empty() {
        publish(
            ctx,
            &both(None),
            EventType::Normal,
            "TokenCreated",
            format!("created token Secret {key} for the tokens controller to populate"),
        )
        .await;
    }
    if results.did(&Action::SaveRestorePoint) && results.content_changed {
        publish(
            ctx,
            &both(None),
            EventType::Normal,
            "SecretChanged",
            format!("the content of {key} changed; its restore point now holds the new content"),
        )
        .await;
    }
    if results.did(&Action::RemoveInvalidLabel) {
        publish(
            ctx,
            &both(None),
            EventType::Normal,
            "TokenRevalidated",
            format!(
                "removed {} from {key}: the token authenticates again",
                crate::labels::LEGACY_TOKEN_INVALID_SINCE
            ),
        )
        .await;
    }
    if results.did(&Action::RecreateServiceAccount) {
        publish(
            ctx,
            &[guard_ref(guard, guard_uid)],
            EventType::Normal,
            "ServiceAccountRestored",
            format!("re-created the ServiceAccount of {key} from its snapshot"),
        )
        .await;
    }
    if let Some((action, why)) = &results.failed
        && why != "AlreadyExists"
    {
        let mut why = why.clone();
        why.truncate(300);
        publish(
            ctx,
            &[guard_ref(guard, guard_uid)],
            EventType::Warning,
            "RestoreFailed",
            format!(
                "{action:?} for {key} failed (severity {}): {why}",
                severity(spec)
            ),
        )
        .await;
    }
}
