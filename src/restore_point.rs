//! Restore points: the last known good copy of each guarded Secret, kept as an `Opaque`
//! Secret in the operator's namespace, so a deletion is undone even when it happened while
//! the operator was down. Written before it is needed, whenever the content changes.
//!
//! Everything here is pure: building a restore point from a live Secret, reading one back,
//! and building the Secret that a restore creates.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::api::ObjectMeta;
use sha2::{Digest, Sha256};

use crate::labels;
use crate::object_key::ObjectKey;

/// Annotations on a restore point describing its origin.
pub mod annotation {
    pub const ORIGIN_NAMESPACE: &str = "secretguard.dev/origin-namespace";
    pub const ORIGIN_NAME: &str = "secretguard.dev/origin-name";
    pub const ORIGIN_UID: &str = "secretguard.dev/origin-uid";
    pub const ORIGIN_TYPE: &str = "secretguard.dev/origin-type";
    pub const ORIGIN_KIND: &str = "secretguard.dev/origin-kind";
    pub const ORIGIN_LABELS: &str = "secretguard.dev/origin-labels";
    pub const ORIGIN_ANNOTATIONS: &str = "secretguard.dev/origin-annotations";
    pub const ORIGIN_IMMUTABLE: &str = "secretguard.dev/origin-immutable";
    pub const CONTENT_HASH: &str = "secretguard.dev/content-hash";
    /// ownerReferences of the origin, as JSON (restored only while the owner exists).
    pub const ORIGIN_OWNERS: &str = "secretguard.dev/origin-owner-references";
    /// Set when the origin's namespace is gone: the restore point is dropped once the
    /// retention has passed since (RFC 3339).
    pub const ORPHANED_SINCE: &str = "secretguard.dev/orphaned-since";
    /// How many times the Secret was restored (persisted here so it is counted once).
    pub const RESTORES: &str = "secretguard.dev/restores";
}

/// Labels and annotations never copied into a restore point nor back: they describe the
/// live object's history, not its content.
const NOT_RESTORED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestorePointError {
    #[error("restore point {0} lacks annotation {1}")]
    MissingAnnotation(String, &'static str),
    #[error("restore point {0} has an unreadable annotation {1}")]
    BadAnnotation(String, &'static str),
}

/// A parsed restore point.
#[derive(Clone, Debug, PartialEq)]
pub struct RestorePoint {
    /// Name of the restore point Secret itself.
    pub name: String,
    pub origin_namespace: String,
    pub origin_name: String,
    pub origin_uid: String,
    pub origin_kind: String,
    pub type_: String,
    pub content_hash: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub immutable: bool,
    pub data: BTreeMap<String, ByteString>,
    /// Restores of this Secret so far.
    pub restores: u64,
    pub owner_references: Vec<OwnerReference>,
}

impl RestorePoint {
    /// The ServiceAccount UID the saved token was issued for, if it is a token.
    pub fn service_account_uid(&self) -> Option<&str> {
        self.annotations
            .get(labels::SA_UID_ANNOTATION)
            .map(String::as_str)
    }
}

/// Deterministic name of the restore point for a Secret: short, DNS-safe, collision-free in
/// practice, and computable without listing.
pub fn name_for(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("sgrp-{}", &hex(&digest)[..40])
}

/// Hash of what a restore must bring back: type and data. Labels and annotations are
/// saved too but do not make a new restore point on their own.
pub fn content_hash(type_: &str, data: &BTreeMap<String, ByteString>) -> String {
    hex(&content_digest(type_, data))
}

/// `content_hash` as its 32 bytes (what the caches keep).
pub fn content_digest(type_: &str, data: &BTreeMap<String, ByteString>) -> [u8; 32] {
    let mut h = Sha256::new();
    h.update((type_.len() as u64).to_be_bytes());
    h.update(type_.as_bytes());
    for (k, v) in data {
        h.update((k.len() as u64).to_be_bytes());
        h.update(k.as_bytes());
        h.update((v.0.len() as u64).to_be_bytes());
        h.update(&v.0);
    }
    h.finalize().into()
}

/// Content hash of a live Secret.
pub fn secret_hash(secret: &Secret) -> String {
    hex(&secret_digest(secret))
}

/// `secret_hash` as its 32 bytes.
pub fn secret_digest(secret: &Secret) -> [u8; 32] {
    let empty = BTreeMap::new();
    content_digest(
        secret.type_.as_deref().unwrap_or("Opaque"),
        secret.data.as_ref().unwrap_or(&empty),
    )
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// When the restore point's namespace was found gone, if it was.
pub fn orphaned_since(rp: &Secret) -> Option<k8s_openapi::jiff::Timestamp> {
    rp.metadata
        .annotations
        .as_ref()?
        .get(annotation::ORPHANED_SINCE)?
        .parse()
        .ok()
}

/// Restores recorded on a restore point Secret (0 when absent or unreadable).
pub fn restores(rp: &Secret) -> u64 {
    rp.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(annotation::RESTORES))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// The restore count to write with a new restore point for `live`: the previous count,
/// plus one if `live` is the restore of the Secret the previous point saved. `previous`:
/// that point's restore count and origin UID.
pub fn next_restores(previous: Option<(u64, &str)>, live: &Secret) -> u64 {
    let Some((restores, origin_uid)) = previous else {
        return 0;
    };
    let restored_from = live
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(labels::RESTORED_FROM));
    restores + u64::from(restored_from.map(String::as_str) == Some(origin_uid))
}

/// Build the restore point Secret for a live guarded Secret.
pub fn build(
    origin: &Secret,
    origin_kind: &str,
    operator_namespace: &str,
    restores: u64,
) -> Secret {
    let meta = &origin.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let type_ = origin.type_.clone().unwrap_or_else(|| "Opaque".into());
    let data = origin.data.clone().unwrap_or_default();
    let mut origin_annotations = meta.annotations.clone().unwrap_or_default();
    origin_annotations.retain(|k, _| !NOT_RESTORED_ANNOTATIONS.contains(&k.as_str()));
    let origin_labels = meta.labels.clone().unwrap_or_default();

    let mut annotations = BTreeMap::from([
        (annotation::ORIGIN_NAMESPACE.to_owned(), namespace.clone()),
        (annotation::ORIGIN_NAME.to_owned(), name.clone()),
        (
            annotation::ORIGIN_UID.to_owned(),
            meta.uid.clone().unwrap_or_default(),
        ),
        (annotation::ORIGIN_TYPE.to_owned(), type_.clone()),
        (annotation::ORIGIN_KIND.to_owned(), origin_kind.to_owned()),
        (
            annotation::ORIGIN_LABELS.to_owned(),
            serde_json::to_string(&origin_labels).unwrap_or_default(),
        ),
        (
            annotation::ORIGIN_ANNOTATIONS.to_owned(),
            serde_json::to_string(&origin_annotations).unwrap_or_default(),
        ),
        (
            annotation::ORIGIN_IMMUTABLE.to_owned(),
            origin.immutable.unwrap_or(false).to_string(),
        ),
        (
            annotation::CONTENT_HASH.to_owned(),
            content_hash(&type_, &data),
        ),
        (annotation::RESTORES.to_owned(), restores.to_string()),
    ]);
    if let Some(owners) = meta.owner_references.as_ref().filter(|o| !o.is_empty()) {
        annotations.insert(
            annotation::ORIGIN_OWNERS.to_owned(),
            serde_json::to_string(owners).unwrap_or_default(),
        );
    }
    Secret {
        metadata: ObjectMeta {
            name: Some(name_for(&namespace, &name)),
            namespace: Some(operator_namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (labels::RESTORE_POINT.to_owned(), "true".to_owned()),
                (labels::ORIGIN_NAMESPACE.to_owned(), namespace),
            ])),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// Read a restore point Secret back.
pub fn parse(secret: &Secret) -> Result<RestorePoint, RestorePointError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let ann = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |key: &'static str| {
        ann.get(key)
            .cloned()
            .ok_or_else(|| RestorePointError::MissingAnnotation(name.clone(), key))
    };
    let json_map = |key: &'static str| -> Result<BTreeMap<String, String>, RestorePointError> {
        serde_json::from_str(&get(key)?)
            .map_err(|_| RestorePointError::BadAnnotation(name.clone(), key))
    };
    let type_ = get(annotation::ORIGIN_TYPE)?;
    let data = secret.data.clone().unwrap_or_default();
    Ok(RestorePoint {
        origin_namespace: get(annotation::ORIGIN_NAMESPACE)?,
        origin_name: get(annotation::ORIGIN_NAME)?,
        origin_uid: get(annotation::ORIGIN_UID)?,
        origin_kind: get(annotation::ORIGIN_KIND)?,
        // The hash of what is really stored, not the annotation: a restore point whose data
        // was changed behind the operator's back no longer matches and is rewritten.
        content_hash: content_hash(&type_, &data),
        type_,
        labels: json_map(annotation::ORIGIN_LABELS)?,
        annotations: json_map(annotation::ORIGIN_ANNOTATIONS)?,
        immutable: get(annotation::ORIGIN_IMMUTABLE)? == "true",
        data,
        restores: restores(secret),
        owner_references: ann
            .get(annotation::ORIGIN_OWNERS)
            .map(|j| serde_json::from_str(j))
            .transpose()
            .map_err(|_| RestorePointError::BadAnnotation(name.clone(), annotation::ORIGIN_OWNERS))?
            .unwrap_or_default(),
        name,
    })
}

/// The Secret a restore creates: same name, type, data, labels, annotations and immutable
/// flag as the saved one. Labels in `drop_labels` are left out (e.g. the invalidation label
/// when the guard revalidates).
pub fn restored_secret(rp: &RestorePoint, drop_labels: &[&str]) -> Secret {
    let mut labels = rp.labels.clone();
    labels.retain(|k, _| !drop_labels.contains(&k.as_str()));
    labels.insert(labels::GUARDED.to_owned(), "true".to_owned());
    let mut annotations = rp.annotations.clone();
    annotations.insert(labels::RESTORED_FROM.to_owned(), rp.origin_uid.clone());
    Secret {
        metadata: ObjectMeta {
            name: Some(rp.origin_name.clone()),
            namespace: Some(rp.origin_namespace.clone()),
            labels: Some(labels),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_: Some(rp.type_.clone()),
        data: Some(rp.data.clone()),
        immutable: rp.immutable.then_some(true),
        ..Default::default()
    }
}

/// Kind recorded on a ServiceAccount snapshot.
pub const SERVICE_ACCOUNT_KIND: &str = "ServiceAccount";
const SNAPSHOT_KEY: &str = "serviceaccount.json";
/// resourceVersion of the ServiceAccount a snapshot was taken from.
pub const SNAPSHOT_RESOURCE_VERSION: &str = "secretguard.dev/origin-resource-version";

/// Name of the snapshot of the ServiceAccount behind a guarded token Secret.
pub fn snapshot_name_for(namespace: &str, token_secret: &str) -> String {
    name_for(namespace, &format!("{token_secret}#serviceaccount"))
}

/// Snapshot of a ServiceAccount, kept to re-create it: labels, annotations,
/// imagePullSecrets and automountServiceAccountToken. Never its `secrets` list (a token
/// listed there becomes a target of the legacy token cleaner).
pub fn build_sa_snapshot(
    sa: &ServiceAccount,
    token_secret: &str,
    operator_namespace: &str,
) -> Secret {
    let meta = &sa.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let snapshot = ServiceAccount {
        metadata: ObjectMeta {
            name: meta.name.clone(),
            namespace: meta.namespace.clone(),
            labels: meta.labels.clone(),
            annotations: meta.annotations.clone().map(|mut a| {
                a.retain(|k, _| !NOT_RESTORED_ANNOTATIONS.contains(&k.as_str()));
                a
            }),
            ..Default::default()
        },
        image_pull_secrets: sa.image_pull_secrets.clone(),
        automount_service_account_token: sa.automount_service_account_token,
        secrets: None,
    };
    let json = serde_json::to_vec(&snapshot).unwrap_or_default();
    let data = BTreeMap::from([(SNAPSHOT_KEY.to_owned(), ByteString(json))]);
    Secret {
        metadata: ObjectMeta {
            name: Some(snapshot_name_for(&namespace, token_secret)),
            namespace: Some(operator_namespace.to_owned()),
            labels: Some(BTreeMap::from([
                (labels::RESTORE_POINT.to_owned(), "true".to_owned()),
                (labels::ORIGIN_NAMESPACE.to_owned(), namespace.clone()),
            ])),
            annotations: Some(BTreeMap::from([
                (annotation::ORIGIN_NAMESPACE.to_owned(), namespace),
                (annotation::ORIGIN_NAME.to_owned(), token_secret.to_owned()),
                (
                    annotation::ORIGIN_UID.to_owned(),
                    meta.uid.clone().unwrap_or_default(),
                ),
                (
                    annotation::ORIGIN_KIND.to_owned(),
                    SERVICE_ACCOUNT_KIND.to_owned(),
                ),
                (
                    SNAPSHOT_RESOURCE_VERSION.to_owned(),
                    meta.resource_version.clone().unwrap_or_default(),
                ),
            ])),
            ..Default::default()
        },
        type_: Some("Opaque".into()),
        data: Some(data),
        ..Default::default()
    }
}

/// The ServiceAccount to create from a snapshot.
pub fn parse_sa_snapshot(secret: &Secret) -> Option<ServiceAccount> {
    let bytes = secret.data.as_ref()?.get(SNAPSHOT_KEY)?;
    serde_json::from_slice(&bytes.0).ok()
}

/// resourceVersion of the ServiceAccount the snapshot was taken from.
pub fn snapshot_resource_version(secret: &Secret) -> Option<&str> {
    secret
        .metadata
        .annotations
        .as_ref()?
        .get(SNAPSHOT_RESOURCE_VERSION)
        .map(String::as_str)
}

/// The Secret any restore point (or ServiceAccount snapshot) belongs to, without parsing
/// the rest.
pub fn origin_key(secret: &Secret) -> Option<ObjectKey> {
    let a = secret.metadata.annotations.as_ref()?;
    Some(ObjectKey::new(
        a.get(annotation::ORIGIN_NAMESPACE)?,
        a.get(annotation::ORIGIN_NAME)?,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token_secret() -> Secret {
        Secret {
            metadata: ObjectMeta {
                name: Some("writer-token".into()),
                namespace: Some("ingest".into()),
                uid: Some("uid-1".into()),
                resource_version: Some("42".into()),
                labels: Some(BTreeMap::from([
                    ("app".to_owned(), "writer".to_owned()),
                    (labels::GUARDED.to_owned(), "true".to_owned()),
                ])),
                annotations: Some(BTreeMap::from([
                    (labels::SA_NAME_ANNOTATION.to_owned(), "writer".to_owned()),
                    (labels::SA_UID_ANNOTATION.to_owned(), "sa-uid".to_owned()),
                    (
                        "kubectl.kubernetes.io/last-applied-configuration".to_owned(),
                        "{}".to_owned(),
                    ),
                ])),
                ..Default::default()
            },
            type_: Some(labels::TOKEN_TYPE.into()),
            data: Some(BTreeMap::from([
                ("token".to_owned(), ByteString(b"tok".to_vec())),
                ("ca.crt".to_owned(), ByteString(b"ca".to_vec())),
            ])),
            ..Default::default()
        }
    }

    #[test]
    fn a_restore_point_round_trips_what_a_restore_needs() {
        let live = token_secret();
        let saved = build(&live, "ServiceAccountToken", "secretguard-system", 0);
        assert_eq!(
            saved.metadata.namespace.as_deref(),
            Some("secretguard-system")
        );
        assert_eq!(saved.type_.as_deref(), Some("Opaque"));
        let rp = parse(&saved).expect("parse");
        assert_eq!(rp.origin_uid, "uid-1");
        assert_eq!(rp.service_account_uid(), Some("sa-uid"));
        assert_eq!(rp.content_hash, secret_hash(&live));

        let restored = restored_secret(&rp, &[]);
        assert_eq!(restored.metadata.name.as_deref(), Some("writer-token"));
        assert_eq!(restored.metadata.namespace.as_deref(), Some("ingest"));
        assert_eq!(restored.type_, live.type_);
        assert_eq!(restored.data, live.data);
        assert_eq!(restored.metadata.labels, live.metadata.labels);
        let ann = restored.metadata.annotations.expect("annotations");
        assert_eq!(
            ann.get(labels::SA_UID_ANNOTATION).map(String::as_str),
            Some("sa-uid")
        );
        assert!(!ann.contains_key("kubectl.kubernetes.io/last-applied-configuration"));
        assert_eq!(restored.metadata.uid, None, "a create carries no uid");
        assert_eq!(restored.metadata.resource_version, None);
    }

    #[test]
    fn content_hash_changes_with_data_and_type_but_not_with_order() {
        let a = BTreeMap::from([
            ("a".to_owned(), ByteString(b"1".to_vec())),
            ("b".to_owned(), ByteString(b"2".to_vec())),
        ]);
        let mut b = a.clone();
        b.insert("b".into(), ByteString(b"3".to_vec()));
        assert_ne!(content_hash("Opaque", &a), content_hash("Opaque", &b));
        assert_ne!(
            content_hash("Opaque", &a),
            content_hash("kubernetes.io/tls", &a)
        );
        // Length prefixes: moving a byte between key and value changes the hash.
        let c = BTreeMap::from([("ab".to_owned(), ByteString(b"".to_vec()))]);
        let d = BTreeMap::from([("a".to_owned(), ByteString(b"b".to_vec()))]);
        assert_ne!(content_hash("Opaque", &c), content_hash("Opaque", &d));
    }

    #[test]
    fn restore_point_names_are_stable_dns_names() {
        let n = name_for("ingest", "writer-token");
        assert_eq!(n, name_for("ingest", "writer-token"));
        assert_ne!(n, name_for("ingest2", "writer-token"));
        assert_eq!(n.len(), 45);
        assert!(
            n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
        );
    }

    #[test]
    fn restore_drops_the_labels_it_is_told_to() {
        let mut live = token_secret();
        live.metadata.labels.as_mut().expect("labels").insert(
            labels::LEGACY_TOKEN_INVALID_SINCE.to_owned(),
            "2026-01-01".to_owned(),
        );
        let rp = parse(&build(&live, "ServiceAccountToken", "op", 0)).expect("parse");
        let restored = restored_secret(&rp, &[labels::LEGACY_TOKEN_INVALID_SINCE]);
        let l = restored.metadata.labels.expect("labels");
        assert!(!l.contains_key(labels::LEGACY_TOKEN_INVALID_SINCE));
        assert_eq!(l.get(labels::GUARDED).map(String::as_str), Some("true"));
    }

    #[test]
    fn a_restore_is_counted_once_when_the_restored_secret_is_saved() {
        let live = token_secret();
        let rp = parse(&build(&live, "ServiceAccountToken", "op", 2)).expect("parse");
        assert_eq!(rp.restores, 2);
        let mut restored = restored_secret(&rp, &[]);
        restored.metadata.uid = Some("uid-2".into());
        assert_eq!(
            next_restores(Some((rp.restores, &rp.origin_uid)), &restored),
            3,
            "the restore counts"
        );
        let after = parse(&build(&restored, "ServiceAccountToken", "op", 3)).expect("parse");
        assert_eq!(
            next_restores(Some((after.restores, &after.origin_uid)), &restored),
            3,
            "and only once"
        );
        assert_eq!(
            next_restores(Some((rp.restores, &rp.origin_uid)), &live),
            2,
            "a content change is no restore"
        );
        assert_eq!(next_restores(None, &restored), 0);
    }

    #[test]
    fn a_restore_point_whose_data_was_changed_no_longer_matches_its_origin() {
        let live = token_secret();
        let mut saved = build(&live, "ServiceAccountToken", "op", 0);
        saved
            .data
            .as_mut()
            .expect("data")
            .insert("token".into(), ByteString(b"tampered".to_vec()));
        assert_ne!(
            parse(&saved).expect("parse").content_hash,
            secret_hash(&live)
        );
    }

    #[test]
    fn a_restore_point_missing_its_origin_is_rejected() {
        let mut saved = build(&token_secret(), "Secret", "op", 0);
        saved
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(annotation::ORIGIN_NAME);
        assert!(matches!(
            parse(&saved),
            Err(RestorePointError::MissingAnnotation(
                _,
                annotation::ORIGIN_NAME
            ))
        ));
    }

    #[test]
    fn a_service_account_snapshot_keeps_what_recreation_needs_and_never_its_secrets_list() {
        use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference};
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("writer".into()),
                namespace: Some("ingest".into()),
                uid: Some("sa-uid".into()),
                resource_version: Some("7".into()),
                labels: Some(BTreeMap::from([("team".to_owned(), "a".to_owned())])),
                ..Default::default()
            },
            image_pull_secrets: Some(vec![LocalObjectReference { name: "reg".into() }]),
            automount_service_account_token: Some(false),
            secrets: Some(vec![ObjectReference {
                name: Some("old-token".into()),
                ..Default::default()
            }]),
        };
        let snap = build_sa_snapshot(&sa, "writer-token", "op");
        assert_eq!(snapshot_resource_version(&snap), Some("7"));
        assert_eq!(
            origin_key(&snap),
            Some(ObjectKey::new("ingest", "writer-token"))
        );
        let back = parse_sa_snapshot(&snap).expect("parse");
        assert_eq!(back.metadata.name.as_deref(), Some("writer"));
        assert_eq!(back.metadata.uid, None);
        assert_eq!(back.metadata.labels, sa.metadata.labels);
        assert_eq!(back.image_pull_secrets, sa.image_pull_secrets);
        assert_eq!(back.automount_service_account_token, Some(false));
        assert_eq!(back.secrets, None);
    }
}
