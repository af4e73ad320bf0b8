//! Restore points: the last known good copy of each guarded Secret, kept as an `Opaque`
//! Secret in the operator's namespace, so a deletion is undone even when it happened while
//! the operator was down. Written before it is needed, whenever the content changes.
//!
//! Everything here is pure: building a restore point from a live Secret, reading one back,
//! telling whether it was written in the namespace that now has its origin's name, and
//! building the Secret that a restore creates.
//!
//! Format: `secretguard.dev/format: "1"` records the origin namespace's UID
//! (`origin-namespace-uid`). Points without the format annotation were written before
//! namespace UIDs were recorded (format 0) and are still read: `provenance` decides
//! whether they belong to the live namespace.

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
    /// The restore point format (`FORMAT_VERSION`); absent on points of format 0.
    pub const FORMAT: &str = "secretguard.dev/format";
    /// UID of the origin's namespace when the point was written. A namespace deleted and
    /// created again under the same name has another UID: it is another namespace,
    /// possibly another tenant's, and nothing saved in the first is restored into it.
    pub const ORIGIN_NAMESPACE_UID: &str = "secretguard.dev/origin-namespace-uid";
    /// Written by a cluster admin, never by the operator: restore this point into the
    /// namespace with this UID although it was saved in an earlier namespace of the same
    /// name. It lives on the restore point, in the operator namespace, where tenants
    /// cannot write (they can annotate their own Namespace).
    pub const ADOPT_NAMESPACE_UID: &str = "secretguard.dev/adopt-namespace-uid";
    /// On a ServiceAccount snapshot: a rotation of the ServiceAccount with this UID is under
    /// way. Written before the delete, removed once the ServiceAccount exists again; while
    /// it is there, the ServiceAccount is re-created from the snapshot whatever the guard
    /// says (the operator deleted it, the operator puts it back).
    pub const ROTATING: &str = "secretguard.dev/rotating";
}

/// The restore point format this version writes. Format 1 adds the origin namespace UID.
pub const FORMAT_VERSION: &str = "1";

/// Labels and annotations never copied into a restore point nor back: they describe the
/// live object's history, not its content.
const NOT_RESTORED_ANNOTATIONS: &[&str] = &["kubectl.kubernetes.io/last-applied-configuration"];

#[derive(Clone, Debug, thiserror::Error, PartialEq, Eq)]
pub enum RestorePointError {
    #[error("restore point {0} lacks annotation {1}")]
    MissingAnnotation(String, &'static str),
    #[error("restore point {0} has an unreadable annotation {1}")]
    BadAnnotation(String, &'static str),
    #[error("restore point {0} has format {1:?}, which this version does not read")]
    UnknownFormat(String, String),
}

/// The namespace a restore point is looked at from: its identity, from its metadata.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NamespaceIdentity {
    pub uid: String,
    pub created: Option<k8s_openapi::jiff::Timestamp>,
}

impl NamespaceIdentity {
    pub fn of(meta: &ObjectMeta) -> NamespaceIdentity {
        NamespaceIdentity {
            uid: meta.uid.clone().unwrap_or_default(),
            created: meta.creation_timestamp.as_ref().map(|t| t.0),
        }
    }
}

/// Where a restore point (or ServiceAccount snapshot) was written, seen from the live
/// namespace of its origin's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Provenance {
    /// In this namespace: its recorded namespace UID is this one's.
    Here,
    /// In this namespace, before namespace UIDs were recorded (format 0): the namespace
    /// is older than the point, or the point saves the very object that lives here now.
    /// Its namespace UID is to be recorded (backfilled).
    HereUnrecorded,
    /// In an earlier namespace of the same name, and a cluster admin allowed it here
    /// (`adopt-namespace-uid` names this namespace).
    Adopted,
    /// In an earlier namespace of the same name: never restored here.
    Earlier,
}

impl Provenance {
    /// May it be restored into the namespace it was looked at from?
    pub fn restorable(self) -> bool {
        self != Provenance::Earlier
    }
}

/// What a restore point (or ServiceAccount snapshot) records about where it was written
/// and of what, from its metadata (and, for a snapshot, the ServiceAccount it holds): what
/// its provenance and ownership are judged by. Small, and without data: the
/// restore-point cache keeps it (src/cache.rs).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Written {
    pub origin: Option<ObjectKey>,
    pub origin_kind: Option<String>,
    pub origin_uid: Option<String>,
    /// The namespace UID it records (format 1).
    pub namespace_uid: Option<String>,
    /// The namespace UID a cluster admin adopted it into.
    pub adopt_namespace_uid: Option<String>,
    pub created: Option<k8s_openapi::jiff::Timestamp>,
    /// For a snapshot: the ServiceAccount it holds.
    pub service_account: Option<ObjectKey>,
}

impl Written {
    pub fn of(point: &Secret) -> Written {
        let ann = |key: &str| point.metadata.annotations.as_ref()?.get(key).cloned();
        let origin_kind = ann(annotation::ORIGIN_KIND);
        let service_account = (origin_kind.as_deref() == Some(SERVICE_ACCOUNT_KIND))
            .then(|| parse_sa_snapshot(point))
            .flatten()
            .map(|sa| ObjectKey::of(&sa));
        Written {
            origin: origin_key(point),
            origin_kind,
            origin_uid: ann(annotation::ORIGIN_UID),
            namespace_uid: ann(annotation::ORIGIN_NAMESPACE_UID),
            adopt_namespace_uid: ann(annotation::ADOPT_NAMESPACE_UID),
            created: point.metadata.creation_timestamp.as_ref().map(|t| t.0),
            service_account,
        }
    }
}

/// Where `point` was written, seen from `namespace` (the live namespace of the origin's
/// name). `live_origin_uid`: the UID of the object the point saves as it lives now (the
/// Secret for a restore point, the ServiceAccount for a snapshot), if it exists.
pub fn provenance(
    point: &Written,
    namespace: &NamespaceIdentity,
    live_origin_uid: Option<&str>,
) -> Provenance {
    let recorded = point.namespace_uid.as_ref();
    if recorded == Some(&namespace.uid) {
        return Provenance::Here;
    }
    if point.adopt_namespace_uid.as_ref() == Some(&namespace.uid) {
        return Provenance::Adopted;
    }
    if recorded.is_some() {
        return Provenance::Earlier;
    }
    // Format 0. The namespace existed before the point was first written: the point was
    // written in it (a namespace name is held by one namespace at a time, and points are
    // only written from objects in it). Or the point saves the object that lives here now.
    let older = matches!((namespace.created, point.created), (Some(ns), Some(p)) if ns < p);
    let same_object = live_origin_uid
        .is_some_and(|uid| !uid.is_empty() && point.origin_uid.as_deref() == Some(uid));
    if older || same_object {
        Provenance::HereUnrecorded
    } else {
        Provenance::Earlier
    }
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

/// Build the restore point Secret for a live guarded Secret in the namespace with UID
/// `namespace_uid`.
pub fn build(
    origin: &Secret,
    origin_kind: &str,
    namespace_uid: &str,
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
        (annotation::FORMAT.to_owned(), FORMAT_VERSION.to_owned()),
        (annotation::ORIGIN_NAMESPACE.to_owned(), namespace.clone()),
        (
            annotation::ORIGIN_NAMESPACE_UID.to_owned(),
            namespace_uid.to_owned(),
        ),
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
    match ann.get(annotation::FORMAT).map(String::as_str) {
        // Format 0: no namespace UID; `provenance` tells where it was written.
        None => {}
        // Format 1 always records the namespace UID: a point without it was altered.
        Some(FORMAT_VERSION) => {
            get(annotation::ORIGIN_NAMESPACE_UID)?;
        }
        Some(other) => return Err(RestorePointError::UnknownFormat(name, other.to_owned())),
    }
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

/// Whether a restore point saves this target: its recorded origin namespace, name and
/// kind are the target's. The point is found by a name derived from the target, so a
/// point that says otherwise was written by someone else (or for another kind of target,
/// before the guard changed): it is never restored.
pub fn belongs_to(rp: &RestorePoint, key: &ObjectKey, kind: &str) -> bool {
    rp.origin_namespace == key.namespace && rp.origin_name == key.name && rp.origin_kind == kind
}

/// The Secret a restore of `key` creates: same type, data, labels, annotations and
/// immutable flag as the saved one, under the target's own name (never a name read from
/// the point). Labels in `drop_labels` are left out (e.g. the invalidation label when the
/// guard revalidates).
pub fn restored_secret(rp: &RestorePoint, key: &ObjectKey, drop_labels: &[&str]) -> Secret {
    let mut labels = rp.labels.clone();
    labels.retain(|k, _| !drop_labels.contains(&k.as_str()));
    labels.insert(labels::GUARDED.to_owned(), "true".to_owned());
    let mut annotations = rp.annotations.clone();
    annotations.insert(labels::RESTORED_FROM.to_owned(), rp.origin_uid.clone());
    Secret {
        metadata: ObjectMeta {
            name: Some(key.name.clone()),
            namespace: Some(key.namespace.clone()),
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
    namespace_uid: &str,
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
                (annotation::FORMAT.to_owned(), FORMAT_VERSION.to_owned()),
                (annotation::ORIGIN_NAMESPACE.to_owned(), namespace),
                (
                    annotation::ORIGIN_NAMESPACE_UID.to_owned(),
                    namespace_uid.to_owned(),
                ),
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

/// The same snapshot, marked: a rotation of the ServiceAccount with UID `uid` is under way.
pub fn mark_rotating(mut snapshot: Secret, uid: &str) -> Secret {
    snapshot
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(annotation::ROTATING.to_owned(), uid.to_owned());
    snapshot
}

/// The UID of the ServiceAccount whose rotation a snapshot says is under way, if any.
pub fn rotating(snapshot: &Secret) -> Option<&str> {
    snapshot
        .metadata
        .annotations
        .as_ref()?
        .get(annotation::ROTATING)
        .map(String::as_str)
}

/// The ServiceAccount to create from a snapshot.
pub fn parse_sa_snapshot(secret: &Secret) -> Option<ServiceAccount> {
    let bytes = secret.data.as_ref()?.get(SNAPSHOT_KEY)?;
    serde_json::from_slice(&bytes.0).ok()
}

/// Whether a snapshot is of this ServiceAccount, for the token Secret `key`: its recorded
/// origin is `key`, its kind a ServiceAccount, and the ServiceAccount it holds is
/// `service_account` of that namespace.
pub fn snapshot_belongs_to(snapshot: &Written, key: &ObjectKey, service_account: &str) -> bool {
    snapshot.origin.as_ref() == Some(key)
        && snapshot.origin_kind.as_deref() == Some(SERVICE_ACCOUNT_KIND)
        && snapshot.service_account == Some(ObjectKey::new(&key.namespace, service_account))
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
        let saved = build(
            &live,
            "ServiceAccountToken",
            "ns-uid",
            "secretguard-system",
            0,
        );
        assert_eq!(
            saved.metadata.namespace.as_deref(),
            Some("secretguard-system")
        );
        assert_eq!(saved.type_.as_deref(), Some("Opaque"));
        let rp = parse(&saved).expect("parse");
        assert_eq!(rp.origin_uid, "uid-1");
        assert_eq!(rp.service_account_uid(), Some("sa-uid"));
        assert_eq!(rp.content_hash, secret_hash(&live));

        let restored = restored_secret(&rp, &ObjectKey::of(&live), &[]);
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
        let rp = parse(&build(&live, "ServiceAccountToken", "ns-uid", "op", 0)).expect("parse");
        let restored = restored_secret(
            &rp,
            &ObjectKey::of(&live),
            &[labels::LEGACY_TOKEN_INVALID_SINCE],
        );
        let l = restored.metadata.labels.expect("labels");
        assert!(!l.contains_key(labels::LEGACY_TOKEN_INVALID_SINCE));
        assert_eq!(l.get(labels::GUARDED).map(String::as_str), Some("true"));
    }

    #[test]
    fn a_restore_is_counted_once_when_the_restored_secret_is_saved() {
        let live = token_secret();
        let rp = parse(&build(&live, "ServiceAccountToken", "ns-uid", "op", 2)).expect("parse");
        assert_eq!(rp.restores, 2);
        let mut restored = restored_secret(&rp, &ObjectKey::of(&live), &[]);
        restored.metadata.uid = Some("uid-2".into());
        assert_eq!(
            next_restores(Some((rp.restores, &rp.origin_uid)), &restored),
            3,
            "the restore counts"
        );
        let after =
            parse(&build(&restored, "ServiceAccountToken", "ns-uid", "op", 3)).expect("parse");
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
        let mut saved = build(&live, "ServiceAccountToken", "ns-uid", "op", 0);
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
        let mut saved = build(&token_secret(), "Secret", "ns-uid", "op", 0);
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
        let snap = build_sa_snapshot(&sa, "writer-token", "ns-uid", "op");
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

    fn at(rfc3339: &str) -> k8s_openapi::jiff::Timestamp {
        rfc3339.parse().expect("timestamp")
    }

    fn namespace(uid: &str, created: &str) -> NamespaceIdentity {
        NamespaceIdentity {
            uid: uid.into(),
            created: Some(at(created)),
        }
    }

    /// A point written at `created`, as format 0 (no namespace UID) when `ns_uid` is None.
    fn point_written(ns_uid: Option<&str>, created: &str) -> Secret {
        let mut point = build(
            &token_secret(),
            "Secret",
            ns_uid.unwrap_or_default(),
            "op",
            0,
        );
        let ann = point.metadata.annotations.as_mut().expect("annotations");
        if ns_uid.is_none() {
            ann.remove(annotation::FORMAT);
            ann.remove(annotation::ORIGIN_NAMESPACE_UID);
        }
        point.metadata.creation_timestamp = Some(
            k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(at(created)),
        );
        point
    }

    #[test]
    fn a_point_is_restorable_only_into_the_namespace_it_was_written_in() {
        let point = point_written(Some("ns-1"), "2026-03-01T00:00:00Z");
        let first = namespace("ns-1", "2026-01-01T00:00:00Z");
        let again = namespace("ns-2", "2026-05-01T00:00:00Z");
        assert_eq!(
            provenance(&Written::of(&point), &first, None),
            Provenance::Here
        );
        assert_eq!(
            provenance(&Written::of(&point), &again, None),
            Provenance::Earlier
        );
        // Not even when the live object has the UID the point saved: the namespace differs.
        assert_eq!(
            provenance(&Written::of(&point), &again, Some("uid-1")),
            Provenance::Earlier
        );
        assert!(!Provenance::Earlier.restorable());
    }

    #[test]
    fn a_cluster_admin_adopts_a_point_into_one_namespace_by_its_uid() {
        let mut point = point_written(Some("ns-1"), "2026-03-01T00:00:00Z");
        point
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(annotation::ADOPT_NAMESPACE_UID.into(), "ns-2".into());
        let again = namespace("ns-2", "2026-05-01T00:00:00Z");
        let third = namespace("ns-3", "2026-06-01T00:00:00Z");
        assert_eq!(
            provenance(&Written::of(&point), &again, None),
            Provenance::Adopted
        );
        assert!(Provenance::Adopted.restorable());
        assert_eq!(
            provenance(&Written::of(&point), &third, None),
            Provenance::Earlier,
            "that one namespace only"
        );
    }

    #[test]
    fn a_point_written_before_namespace_uids_belongs_to_a_namespace_older_than_it() {
        let point = point_written(None, "2026-03-01T00:00:00Z");
        let older = namespace("ns-1", "2026-01-01T00:00:00Z");
        let newer = namespace("ns-2", "2026-05-01T00:00:00Z");
        let same_second = namespace("ns-3", "2026-03-01T00:00:00Z");
        assert_eq!(
            provenance(&Written::of(&point), &older, None),
            Provenance::HereUnrecorded
        );
        assert_eq!(
            provenance(&Written::of(&point), &newer, None),
            Provenance::Earlier
        );
        assert_eq!(
            provenance(&Written::of(&point), &same_second, None),
            Provenance::Earlier,
            "older means older"
        );
        // It saves the very Secret that lives in the newer namespace: written here.
        assert_eq!(
            provenance(&Written::of(&point), &newer, Some("uid-1")),
            Provenance::HereUnrecorded
        );
        assert_eq!(
            provenance(&Written::of(&point), &newer, Some("")),
            Provenance::Earlier
        );
        let unknown = NamespaceIdentity {
            uid: "ns-4".into(),
            created: None,
        };
        assert_eq!(
            provenance(&Written::of(&point), &unknown, None),
            Provenance::Earlier
        );
    }

    #[test]
    fn format_1_records_the_namespace_uid_and_format_0_is_still_read() {
        let point = point_written(Some("ns-1"), "2026-03-01T00:00:00Z");
        let ann = point.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            ann.get(annotation::FORMAT).map(String::as_str),
            Some(FORMAT_VERSION)
        );
        assert_eq!(
            ann.get(annotation::ORIGIN_NAMESPACE_UID)
                .map(String::as_str),
            Some("ns-1")
        );
        assert!(parse(&point).is_ok());
        assert!(
            parse(&point_written(None, "2026-03-01T00:00:00Z")).is_ok(),
            "format 0"
        );

        let mut stripped = point.clone();
        stripped
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .remove(annotation::ORIGIN_NAMESPACE_UID);
        assert_eq!(
            parse(&stripped),
            Err(RestorePointError::MissingAnnotation(
                stripped.metadata.name.clone().unwrap_or_default(),
                annotation::ORIGIN_NAMESPACE_UID
            ))
        );
        let mut future = point;
        future
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(annotation::FORMAT.into(), "2".into());
        assert!(matches!(parse(&future), Err(RestorePointError::UnknownFormat(_, f)) if f == "2"));
    }

    #[test]
    fn a_point_belongs_only_to_the_target_it_records_and_restores_under_the_targets_name() {
        let live = token_secret();
        let key = ObjectKey::of(&live);
        let rp = parse(&build(&live, "ServiceAccountToken", "ns-uid", "op", 0)).expect("parse");
        assert!(belongs_to(&rp, &key, "ServiceAccountToken"));
        assert!(!belongs_to(&rp, &key, "Secret"), "another kind");
        assert!(!belongs_to(
            &rp,
            &ObjectKey::new("other", "writer-token"),
            "ServiceAccountToken"
        ));
        assert!(!belongs_to(
            &rp,
            &ObjectKey::new("ingest", "other"),
            "ServiceAccountToken"
        ));
        let mut forged = rp.clone();
        forged.origin_namespace = "kube-system".into();
        let restored = restored_secret(&forged, &key, &[]);
        assert_eq!(restored.metadata.namespace.as_deref(), Some("ingest"));
        assert_eq!(restored.metadata.name.as_deref(), Some("writer-token"));
    }

    #[test]
    fn a_snapshot_belongs_to_the_service_account_of_its_token_secret() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some("writer".into()),
                namespace: Some("ingest".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let snap = build_sa_snapshot(&sa, "writer-token", "ns-uid", "op");
        let key = ObjectKey::new("ingest", "writer-token");
        let snap = Written::of(&snap);
        assert!(snapshot_belongs_to(&snap, &key, "writer"));
        assert!(
            !snapshot_belongs_to(&snap, &key, "admin"),
            "another ServiceAccount"
        );
        assert!(!snapshot_belongs_to(
            &snap,
            &ObjectKey::new("ingest", "other-token"),
            "writer"
        ));
        let point = Written::of(&build(
            &token_secret(),
            "ServiceAccountToken",
            "ns-uid",
            "op",
            0,
        ));
        assert!(
            !snapshot_belongs_to(&point, &key, "writer"),
            "a restore point is no snapshot"
        );
    }
}
