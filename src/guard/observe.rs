//! Turning Kubernetes objects into the views decisions take. Pure; the views never carry
//! Secret data, only whether a token is present and a hash of the content.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;

use super::decide::{Policy, Refusal, RestorePointView, SecretView, ServiceAccountView};
use super::spec::{TargetKind, TargetSpec};
use crate::api::v1alpha1::SecretGuardSpec;
use crate::labels;
use crate::object_key::ObjectKey;
use crate::restore_point::{self, NamespaceIdentity, RestorePoint};

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
        rotate_requested: annotation(labels::ROTATE).is_some_and(|v| v == "true"),
    }
}

pub fn restore_point_view(rp: &RestorePoint, refused: Option<Refusal>) -> RestorePointView {
    RestorePointView {
        origin_uid: rp.origin_uid.clone(),
        content_hash: rp.content_hash.clone(),
        sa_uid: rp.service_account_uid().map(str::to_owned),
        refused,
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
        let v = secret_view(&secret);
        assert!(v.labelled && v.invalidated && v.rotate_requested && v.token_populated);
        assert_eq!(v.sa_uid.as_deref(), Some("sa"));
        assert!(!format!("{v:?}").contains("\"x\""), "no data in the view");

        let empty = Secret {
            data: Some(BTreeMap::from([("token".to_owned(), ByteString(vec![]))])),
            ..Default::default()
        };
        let v = secret_view(&empty);
        assert!(!v.token_populated && !v.labelled && !v.invalidated && !v.rotate_requested);
    }
}
