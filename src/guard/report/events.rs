//! Kubernetes Events about a reconcile, on the guard and on the affected Secret, and the
//! log line of each incident. Names, UIDs and outcomes only: no Secret data or token
//! bytes ever reach an Event or a log line.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;

use crate::api::v1alpha1::SecretGuard;
use crate::cache::CachedSecret;
use crate::event_recorder::{EventType, Note};
use crate::guard::context::Context;
use crate::guard::decide::{Action, Decision, Reason, Tombstone};
use crate::guard::load::ObservedTarget;
use crate::guard::outcome::{Executed, TokenCheck};
use crate::guard::record::Recorded;
use crate::guard::spec::TargetSpec;
use crate::guard::status::build::{NAMED_GUARDS, names_capped};
use crate::object_key::ObjectKey;
use crate::{labels, restore_point};

/// What an incident means, in words (Event notes and alert descriptions).
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
        Reason::ServiceAccountNotFound => format!(
            "the ServiceAccount of token Secret {key} does not exist and was never seen: nothing is guarded until it is created"
        ),
        Reason::ServiceAccountRecreated => format!(
            "the ServiceAccount of token Secret {key} was re-created with a new UID: old tokens can never work again; a fresh token is issued and consumers must update"
        ),
        Reason::TokenInvalidated => format!(
            "token in {key} is marked {} and is rejected",
            labels::LEGACY_TOKEN_INVALID_SINCE
        ),
        Reason::TargetConflict => format!(
            "{key} is not a token Secret of the guarded ServiceAccount: it is left alone (not labelled, saved, rotated or replaced)"
        ),
        Reason::TokenNotPopulated => {
            format!("token Secret {key} is still empty: is the tokens controller running?")
        }
        Reason::ForeignRestorePoint => format!(
            "{kind} {key} does not exist, and its restore point {point} was saved in an earlier namespace named {ns}, deleted since (possibly another tenant's): it is not restored into this one. If this namespace is the same tenant's (restored from a backup), a cluster admin can allow it: kubectl -n <operator namespace> annotate secret {point} {}=<UID of namespace {ns}>",
            restore_point::annotation::ADOPT_NAMESPACE_UID,
            point = restore_point::name_for(&key.namespace, &key.name),
            ns = key.namespace,
        ),
        Reason::RestoreLoop => format!(
            "{kind} {key} was restored too often lately and is deleted again each time (a controller or a deploy keeps deleting it): restoring it stopped. Find what deletes it (the apiserver's audit log, the Events of the namespace); then resume with: kubectl -n {} annotate secretguard <guard> {}=$(date +%s) --overwrite",
            key.namespace,
            labels::RESUME_RESTORES,
        ),
        Reason::OwnerGone => format!(
            "{kind} {key} was deleted with its owners (the garbage collector's cascade): it is not restored"
        ),
        Reason::Unprotected => format!(
            "{kind} {key} exists, but its restore point cannot be kept current: were it deleted now, it would come back as it was saved last, or not at all"
        ),
        Reason::RestorePointMismatch => format!(
            "{kind} {key} does not exist, and its restore point {} records another origin or kind (altered in the operator namespace, or saved when the guard listed it as another kind): it is not restored",
            restore_point::name_for(&key.namespace, &key.name),
        ),
    }
}

fn guard_ref(target: &ObservedTarget) -> ObjectReference {
    ObjectReference {
        api_version: Some(SecretGuard::api_version(&()).into_owned()),
        kind: Some(SecretGuard::kind(&()).into_owned()),
        namespace: Some(target.guard.namespace.clone()),
        name: Some(target.guard.name.clone()),
        uid: Some(target.guard_uid.clone()),
        ..Default::default()
    }
}

fn secret_ref(key: &ObjectKey, live: Option<&CachedSecret>) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Secret".into()),
        namespace: Some(key.namespace.clone()),
        name: Some(key.name.clone()),
        uid: live.map(|s| s.uid.clone()),
        ..Default::default()
    }
}

/// Publish an Event on each of `regarding`.
async fn publish(
    ctx: &Context,
    regarding: &[ObjectReference],
    type_: EventType,
    reason: &str,
    note: String,
) {
    let event = Note {
        type_,
        reason,
        action: "Guard",
        note: &note,
    };
    for r in regarding {
        if let Err(e) = ctx.recorder.publish(&event, r).await {
            tracing::warn!(reason, error = %e, "could not publish Event");
        }
    }
}

/// Report each new incident: a Warning Event on the guard and, when it exists, on the
/// Secret; one log line.
pub async fn incidents(ctx: &Context, target: &ObservedTarget, recorded: &Recorded) {
    let kind = target.spec.kind().as_str();
    let severity = target.severity.as_str();
    let detail = recorded
        .detail
        .as_ref()
        .map(|d| format!(" ({d})"))
        .unwrap_or_default();
    for (reason, outcome) in &recorded.new {
        let note = format!(
            "{}{detail} (severity {severity}); outcome: {}",
            explain(*reason, kind, &target.key),
            outcome.as_str()
        );
        tracing::warn!(
            guard = %target.guard, kind, target = %target.key, reason = reason.as_str(),
            outcome = outcome.as_str(), severity,
            restore_ms = recorded.restore_seconds.map(|s| (s * 1000.0) as u64),
            "incident"
        );
        let mut regarding = vec![guard_ref(target)];
        let live = target.live.as_deref();
        if live.is_some_and(|s| !s.detail.as_ref().is_some_and(|d| d.terminating)) {
            regarding.push(secret_ref(&target.key, live));
        }
        publish(ctx, &regarding, EventType::Warning, reason.as_str(), note).await;
    }
}

/// One `Overlap` Warning Event on each guard that now shares this target with guards it
/// shared nothing with before: which guards, which one reports it, and what is in force.
/// Once per pair of guards while they overlap, not per shared object or reconcile.
pub async fn overlaps(ctx: &Context, target: &ObservedTarget, recorded: &Recorded) {
    let Some(sharing) = &target.sharing else {
        return;
    };
    for (guard, others) in &recorded.overlaps_started {
        let Some(uid) = ctx.index().guard(guard).map(|g| g.uid.clone()) else {
            continue;
        };
        let names = names_capped(others.iter().map(|g| g.name.as_str()), NAMED_GUARDS);
        let reporter = if *guard == target.guard {
            "this guard reports it".to_owned()
        } else {
            format!("guard {} reports it", target.guard.name)
        };
        let note = format!(
            "Secret {} is also covered by guard{} {names}: {reporter}, with the most protective value of each setting among them ({})",
            target.key,
            if others.len() == 1 { "" } else { "s" },
            sharing.settings
        );
        tracing::warn!(guard = %guard, target = %target.key, with = names, "guards overlap");
        let regarding = ObjectReference {
            uid: Some(uid),
            namespace: Some(guard.namespace.clone()),
            name: Some(guard.name.clone()),
            ..guard_ref(target)
        };
        publish(ctx, &[regarding], EventType::Warning, "Overlap", note).await;
    }
}

/// Events for what went well (or failed) after the incident itself.
pub async fn follow_ups(
    ctx: &Context,
    target: &ObservedTarget,
    decision: &Decision,
    executed: &Executed,
    recorded: &Recorded,
) {
    let key = &target.key;
    let both = || vec![guard_ref(target), secret_ref(key, None)];
    let took = recorded
        .restore_seconds
        .map(|s| format!(" in {:.0} ms", s * 1000.0))
        .unwrap_or_default();
    if executed.did(&Action::RestoreIdentical) {
        let (reason, type_, note) = match (&target.spec, executed.verified) {
            (
                TargetSpec::Token {
                    service_account, ..
                },
                Some(TokenCheck::Accepted),
            ) => (
                "TokenRestored",
                EventType::Normal,
                format!(
                    "restored {key} with identical bytes{took}; TokenReview: authenticates as system:serviceaccount:{}:{service_account}",
                    key.namespace
                ),
            ),
            (TargetSpec::Token { .. }, Some(TokenCheck::ReviewFailed)) => (
                "RestoreUnverified",
                EventType::Warning,
                format!(
                    "restored {key} with identical bytes{took}; unverified: the TokenReview request failed, so whether the token authenticates is not known (the operator log has why)"
                ),
            ),
            (TargetSpec::Token { .. }, _) => (
                "RestoreUnverified",
                EventType::Warning,
                format!(
                    "restored {key} with identical bytes{took}, but the apiserver rejected the token (TokenReview: not authenticated as its ServiceAccount)"
                ),
            ),
            (TargetSpec::Secret, _) => (
                "SecretRestored",
                EventType::Normal,
                format!("restored {key} from its restore point{took}"),
            ),
        };
        tracing::info!(guard = %target.guard, target = %key, reason, token_check = executed.verified.map(TokenCheck::as_str), restore_ms = recorded.restore_seconds.map(|s| (s * 1000.0) as u64), "restored");
        publish(ctx, &both(), type_, reason, note).await;
    }
    if recorded.kept_recreated {
        tracing::info!(guard = %target.guard, target = %key, "created again during its restore delay: kept, not restored");
        publish(
            ctx,
            &both(),
            EventType::Normal,
            "KeptRecreated",
            format!(
                "{key} was created again during its restore delay ({} s): it is kept as it is, not restored, and its content becomes the restore point",
                target.policy.restore_delay.as_secs()
            ),
        )
        .await;
    }
    if executed.created_token() && decision.incidents.is_empty() {
        publish(
            ctx,
            &both(),
            EventType::Normal,
            "TokenCreated",
            format!("created token Secret {key} for the tokens controller to populate"),
        )
        .await;
    }
    if executed.did(&Action::SaveRestorePoint) && target.content_changed() {
        publish(
            ctx,
            &both(),
            EventType::Normal,
            "SecretChanged",
            format!(
                "the content of {key} changed (data, type, or metadata a restore writes back); its restore point now holds the new content"
            ),
        )
        .await;
    }
    if executed.did(&Action::RemoveInvalidLabel) {
        publish(
            ctx,
            &both(),
            EventType::Normal,
            "TokenRevalidated",
            format!(
                "removed {} from {key}: the token authenticates again",
                labels::LEGACY_TOKEN_INVALID_SINCE
            ),
        )
        .await;
    }
    if executed.did(&Action::ForgetRestorePoint(Tombstone::Retired)) {
        publish(
            ctx,
            &both(),
            EventType::Normal,
            "Retired",
            format!(
                "{key} is retired on purpose ({}): it is not restored or revalidated any more, and its restore point is forgotten",
                labels::RETIRE
            ),
        )
        .await;
    }
    if executed.did(&Action::RecreateServiceAccount) {
        publish(
            ctx,
            &[guard_ref(target)],
            EventType::Normal,
            "ServiceAccountRestored",
            format!("re-created the ServiceAccount of {key} from its snapshot"),
        )
        .await;
    }
    if let Some(failure) = executed.failure() {
        // A failed restore is an incident of its own; any other failed write is retried
        // with backoff and said once per attempt.
        let reason = if failure.is_restore_failure() {
            "RestoreFailed"
        } else {
            "ActionFailed"
        };
        publish(
            ctx,
            &[guard_ref(target)],
            EventType::Warning,
            reason,
            format!(
                "{key}: {} failed (severity {}): {}; the operator log has the apiserver's message",
                failure.action.in_words(),
                target.severity.as_str(),
                failure.why()
            ),
        )
        .await;
    }
}
