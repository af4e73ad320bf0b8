//! Turning Kubernetes objects into the views decisions take. Pure; the views never carry
//! Secret data, only whether a token is present and a hash of the content.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::core::PartialObjectMeta;

use super::decide::{Policy, Refusal, RestorePointView, SecretView, ServiceAccountView, Tombstone};
use super::spec::{TargetKind, TargetSpec};
use crate::api::v1alpha1::SecretGuardSpec;
use crate::labels;
use crate::object_key::ObjectKey;
use crate::restore_point::{self, NamespaceIdentity, RestorePoint};

/// The field managers that own a label of an object, from its managedFields (empty when
/// they are unknown, e.g. dropped by a cache).
pub fn label_owners<'a>(meta: &'a ObjectMeta, label: &str) -> Vec<&'a str> {
    let field = format!("f:{label}");
    meta.managed_fields
        .iter()
        .flatten()
        .filter(|m| {
            m.fields_v1
                .as_ref()
                .and_then(|f| f.0.get("f:metadata")?.get("f:labels")?.get(&field))
                .is_some()
        })
        .map(|m| m.manager.as_deref().unwrap_or_default())
        .collect()
}

/// Whether the invalidation label was set by the legacy token cleaner, and only by it.
/// kube-controller-manager writes as `kube-controller-manager`; a person's kubectl writes
/// as `kubectl-label`, `kubectl-edit`, `kubectl-patch`, ... A field manager is chosen by
/// the client, so this tells apart who meant what, not who may do what: whoever names
/// itself kube-controller-manager could as well have removed the label.
fn invalidated_by_cleaner(meta: &ObjectMeta) -> bool {
    let owners = label_owners(meta, labels::LEGACY_TOKEN_INVALID_SINCE);
    !owners.is_empty() && owners.iter().all(|m| *m == labels::CONTROLLER_MANAGER)
}

pub fn secret_view(secret: &Secret) -> SecretView {
    let meta = &secret.metadata;
    let has = |key: &str, value: &str| {
        meta.labels
            .as_ref()
            .and_then(|l| l.get(key))
            .is_some_and(|v| v == value)
    };
    let annotation = |key: &str| meta.annotations.as_ref().and_then(|a| a.get(key));
    SecretView {
        uid: meta.uid.clone().unwrap_or_default(),
        created: meta
            .creation_timestamp
            .as_ref()
            .map(|t| t.0)
            .unwrap_or(Timestamp::UNIX_EPOCH),
        terminating: meta.deletion_timestamp.is_some(),
        labelled: has(labels::GUARDED, "true"),
        type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
        sa_name: annotation(labels::SA_NAME_ANNOTATION).cloned(),
        sa_uid: annotation(labels::SA_UID_ANNOTATION).cloned(),
        token_populated: secret
            .data
            .as_ref()
            .and_then(|d| d.get("token"))
            .is_some_and(|t| !t.0.is_empty()),
        content_hash: restore_point::secret_hash(secret),
        invalidated: meta
            .labels
            .as_ref()
            .is_some_and(|l| l.contains_key(labels::LEGACY_TOKEN_INVALID_SINCE)),
        invalidated_by_cleaner: invalidated_by_cleaner(meta),
        rotate_requested: annotation(labels::ROTATE).is_some_and(|v| v == "true"),
        retire_requested: annotation(labels::RETIRE).is_some_and(|v| v == "true"),
    }
}

pub fn restore_point_view(rp: &RestorePoint, refused: Option<Refusal>) -> RestorePointView {
    let annotation = |key: &str| rp.annotations.get(key).map(String::as_str);
    RestorePointView {
        origin_uid: rp.origin_uid.clone(),
        content_hash: rp.content_hash.clone(),
        sa_uid: rp.service_account_uid().map(str::to_owned),
        refused,
        tombstone: annotation(labels::TOMBSTONE).and_then(Tombstone::parse),
        retired: annotation(labels::RETIRE) == Some("true"),
    }
}

/// Why the restore point found for `key` (`point` as stored, `rp` as read) must not be
/// restored into it, if it must not: it records another origin or kind, or it was saved
/// in an earlier namespace of the same name than the live `namespace`. `live_uid`: the
/// UID of the Secret at `key` now, if it exists.
pub fn restore_point_refusal(
    point: &Secret,
    rp: &RestorePoint,
    key: &ObjectKey,
    kind: TargetKind,
    namespace: &NamespaceIdentity,
    live_uid: Option<&str>,
) -> Option<Refusal> {
    if !restore_point::belongs_to(rp, key, kind.as_str()) {
        return Some(Refusal::Mismatch);
    }
    (!restore_point::provenance(point, namespace, live_uid).restorable())
        .then_some(Refusal::ForeignNamespace)
}

/// Whether the snapshot found for token Secret `key` may be used to re-create its
/// ServiceAccount: it is of `service_account` for that Secret, and was taken in the live
/// `namespace` (`live_sa_uid`: the ServiceAccount's UID now, if it exists).
pub fn snapshot_usable(
    snapshot: &Secret,
    key: &ObjectKey,
    service_account: &str,
    namespace: &NamespaceIdentity,
    live_sa_uid: Option<&str>,
) -> bool {
    restore_point::snapshot_belongs_to(snapshot, key, service_account)
        && restore_point::provenance(snapshot, namespace, live_sa_uid).restorable()
}

pub fn service_account_view(sa: &PartialObjectMeta<ServiceAccount>) -> ServiceAccountView {
    ServiceAccountView {
        uid: sa.metadata.uid.clone().unwrap_or_default(),
        terminating: sa.metadata.deletion_timestamp.is_some(),
    }
}

pub fn policy(spec: &SecretGuardSpec, target: &TargetSpec, populate_deadline: Duration) -> Policy {
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
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{FieldsV1, ManagedFieldsEntry};
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
        let v = secret_view(&secret);
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
        let v = secret_view(&empty);
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
