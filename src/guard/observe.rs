//! Turning what the caches hold into the views decisions take. Pure; the views never carry
//! Secret data, only whether a token is present and a hash of the content.

use std::time::Duration;

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::jiff::Timestamp;
use kube::core::PartialObjectMeta;

use super::decide::{Policy, RestorePointView, SecretView, ServiceAccountView};
use super::spec::TargetSpec;
use crate::api::v1alpha1::SecretGuardSpec;
use crate::cache::{CachedSecret, Saved};
use crate::labels;

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
        sa_uid: annotation(labels::SA_UID_ANNOTATION).map(str::to_owned),
        token_populated: d.is_some_and(|d| d.token_populated),
        content_hash: d.map(|d| d.content_hash.to_string()).unwrap_or_default(),
        invalidated: label(labels::LEGACY_TOKEN_INVALID_SINCE).is_some(),
        rotate_requested: annotation(labels::ROTATE) == Some("true"),
    }
}

pub fn restore_point_view(rp: &Saved) -> RestorePointView {
    RestorePointView {
        origin_uid: rp.origin_uid.clone(),
        content_hash: rp.content_hash.to_string(),
        sa_uid: rp.service_account_uid.clone(),
    }
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
    use k8s_openapi::api::core::v1::Secret;
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
        assert_eq!(v.sa_uid.as_deref(), Some("sa"));
        assert!(!format!("{v:?}").contains("\"x\""), "no data in the view");

        let empty = Secret {
            data: Some(BTreeMap::from([("token".to_owned(), ByteString(vec![]))])),
            ..Default::default()
        };
        let v = secret_view(&CachedSecret::detailed(&empty));
        assert!(!v.token_populated && !v.labelled && !v.invalidated && !v.rotate_requested);
    }
}
