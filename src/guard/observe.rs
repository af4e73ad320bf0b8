//! Turning what the caches hold into the views decisions take. Pure; the views never carry
//! Secret data, only whether a token is present and a hash of the content.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;

use super::decide::{Policy, Refusal, RestorePointView, SecretView, ServiceAccountView, Tombstone};
use super::spec::{TargetKind, TargetSpec};
use crate::api::v1alpha1::SecretGuardSpec;
use crate::cache::{CachedRestorePoint, CachedSecret};
use crate::labels;
use crate::object_key::ObjectKey;
use crate::restore_point::{self, NamespaceIdentity};

/// The view of a cached Secret. One cached without detail (no guard targeted it then) is
/// never passed here: the reconcile reads such a Secret from the apiserver first.
pub fn secret_view(secret: &CachedSecret) -> SecretView {
    let d = secret.detail.as_ref();
    let label = |key: &str| d.and_then(|d| d.label(key));
    let annotation = |key: &str| d.and_then(|d| d.annotation(key));
    SecretView {
        uid: secret.uid.clone(),
        created: d.and_then(|d| d.created).unwrap_or(Timestamp::UNIX_EPOCH),
        terminating: d.is_some_and(|d| d.terminating),
        labelled: label(labels::GUARDED) == Some("true"),
        type_: d.map_or_else(|| "Opaque".to_owned(), |d| d.type_.clone()),
        sa_name: annotation(labels::SA_NAME_ANNOTATION).map(str::to_owned),
        sa_uid: annotation(labels::SA_UID_ANNOTATION).map(str::to_owned),
        token_populated: d.is_some_and(|d| d.token_populated),
        content_hash: d.map(|d| d.content_hash.to_string()).unwrap_or_default(),
        unsaveable: d.and_then(|d| d.unsaveable),
        invalidated: label(labels::LEGACY_TOKEN_INVALID_SINCE).is_some(),
        invalidated_by_cleaner: d.is_some_and(|d| d.invalidated_by_cleaner),
        rotate_requested: annotation(labels::ROTATE) == Some("true"),
        retire_requested: annotation(labels::RETIRE) == Some("true"),
    }
}

/// The view of a readable restore point (None: unreadable).
pub fn restore_point_view(
    point: &CachedRestorePoint,
    refused: Option<Refusal>,
) -> Option<RestorePointView> {
    let rp = point.saved.as_ref().ok()?;
    Some(RestorePointView {
        origin_uid: point.origin_uid().to_owned(),
        content_hash: rp.content_hash.to_string(),
        sa_uid: rp.service_account_uid.clone(),
        refused,
        tombstone: rp.tombstone.as_deref().and_then(Tombstone::parse),
        retired: rp.retired,
    })
}

/// Why the restore point found for `key` must not be restored into it, if it must not:
/// it records another origin or kind, or it was saved in an earlier namespace of the same
/// name than the live `namespace`. `live_uid`: the UID of the Secret at `key` now, if it
/// exists.
pub fn restore_point_refusal(
    point: &CachedRestorePoint,
    key: &ObjectKey,
    kind: TargetKind,
    namespace: &NamespaceIdentity,
    live_uid: Option<&str>,
) -> Option<Refusal> {
    let w = &point.written;
    if w.origin.as_ref() != Some(key) || w.origin_kind.as_deref() != Some(kind.as_str()) {
        return Some(Refusal::Mismatch);
    }
    (!restore_point::provenance(w, namespace, live_uid).restorable())
        .then_some(Refusal::ForeignNamespace)
}

/// Whether the snapshot found for token Secret `key` may be used to re-create its
/// ServiceAccount: it is of `service_account` for that Secret, and was taken in the live
/// `namespace` (`live_sa_uid`: the ServiceAccount's UID now, if it exists).
pub fn snapshot_usable(
    snapshot: &CachedRestorePoint,
    key: &ObjectKey,
    service_account: &str,
    namespace: &NamespaceIdentity,
    live_sa_uid: Option<&str>,
) -> bool {
    restore_point::snapshot_belongs_to(&snapshot.written, key, service_account)
        && restore_point::provenance(&snapshot.written, namespace, live_sa_uid).restorable()
}

pub fn service_account_view(sa: &PartialObjectMeta<ServiceAccount>) -> ServiceAccountView {
    ServiceAccountView {
        uid: sa.metadata.uid.clone().unwrap_or_default(),
        terminating: sa.metadata.deletion_timestamp.is_some(),
    }
}

/// The policy in force for `target`, from the settings in force (`index::Resolved`).
pub fn policy(spec: &SecretGuardSpec, target: &TargetSpec, populate_deadline: Duration) -> Policy {
    let token = matches!(target, TargetSpec::Token { .. });
    Policy {
        restore: spec.restore,
        revalidate: spec.revalidate,
        paused: spec.paused,
        recreate_service_account: matches!(
            target,
            TargetSpec::Token {
                recreate_service_account: true,
                ..
            }
        ),
        populate_deadline,
        restore_delay: Duration::from_secs(spec.restore_delay_seconds_for(token) as u64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cache::invalidated_by_cleaner;
    use k8s_openapi::ByteString;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
    use kube::api::ObjectMeta;
    use std::collections::BTreeMap;

    #[test]
    fn a_secret_view_reads_labels_annotations_and_token_presence_but_no_data() {
        let secret = Secret {
            metadata: ObjectMeta {
                uid: Some("u".into()),
                labels: Some(BTreeMap::from([
                    (labels::GUARDED.to_owned(), "true".to_owned()),
                    (
                        labels::LEGACY_TOKEN_INVALID_SINCE.to_owned(),
                        "2026-01-01".to_owned(),
                    ),
                ])),
                annotations: Some(BTreeMap::from([
                    (labels::SA_UID_ANNOTATION.to_owned(), "sa".to_owned()),
                    (labels::ROTATE.to_owned(), "true".to_owned()),
                ])),
                ..Default::default()
            },
            type_: Some(labels::TOKEN_TYPE.into()),
            data: Some(BTreeMap::from([(
                "token".to_owned(),
                ByteString(b"x".to_vec()),
            )])),
            ..Default::default()
        };
        let v = secret_view(&CachedSecret::detailed(&secret));
        assert!(v.labelled && v.invalidated && v.rotate_requested && v.token_populated);
        assert!(!v.retire_requested);
        assert!(
            !v.invalidated_by_cleaner,
            "unknown managedFields: not known to be the cleaner's"
        );
        assert_eq!(v.sa_uid.as_deref(), Some("sa"));
        assert_eq!(v.type_, labels::TOKEN_TYPE);
        assert!(!format!("{v:?}").contains("\"x\""), "no data in the view");

        let empty = Secret {
            data: Some(BTreeMap::from([("token".to_owned(), ByteString(vec![]))])),
            ..Default::default()
        };
        let v = secret_view(&CachedSecret::detailed(&empty));
        assert!(!v.token_populated && !v.labelled && !v.invalidated && !v.rotate_requested);
    }

    fn owning_label(manager: &str) -> ManagedFieldsEntry {
        ManagedFieldsEntry {
            manager: Some(manager.into()),
            operation: Some("Update".into()),
            fields_v1: Some(FieldsV1(serde_json::json!({
                "f:metadata": {"f:labels": {
                    format!("f:{}", labels::LEGACY_TOKEN_INVALID_SINCE): {}
                }}
            }))),
            ..Default::default()
        }
    }

    #[test]
    fn only_an_invalidation_the_legacy_token_cleaner_alone_owns_is_the_cleaners() {
        let other_fields = ManagedFieldsEntry {
            manager: Some("kubectl-annotate".into()),
            fields_v1: Some(FieldsV1(
                serde_json::json!({"f:metadata": {"f:annotations": {}}}),
            )),
            ..Default::default()
        };
        let meta = |owners: Vec<ManagedFieldsEntry>| ObjectMeta {
            labels: Some(BTreeMap::from([(
                labels::LEGACY_TOKEN_INVALID_SINCE.to_owned(),
                "2026-01-01".to_owned(),
            )])),
            managed_fields: Some(owners),
            ..Default::default()
        };
        let cases = [
            (
                vec![
                    owning_label("kube-controller-manager"),
                    other_fields.clone(),
                ],
                true,
            ),
            (vec![owning_label("kubectl-label")], false),
            (
                vec![
                    owning_label("kube-controller-manager"),
                    owning_label("admin-tool"),
                ],
                false,
            ),
            (vec![other_fields], false),
            (vec![], false),
        ];
        for (owners, want) in cases {
            let names: Vec<_> = owners.iter().map(|o| o.manager.clone()).collect();
            assert_eq!(invalidated_by_cleaner(&meta(owners)), want, "{names:?}");
        }
    }
}
