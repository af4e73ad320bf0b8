//! Restore points: the last known good copy of each guarded Secret, kept as an `Opaque`
//! Secret in the operator's namespace, so a deletion is undone even when it happened while
//! the operator was down. Written before it is needed, whenever the content changes.
//!
//! Everything here is pure: building a restore point from a live Secret, reading one back,
//! telling whether it was written in the namespace that now has its origin's name, and
//! building the Secret that a restore creates.
//!
//! Formats (`secretguard.dev/format`), all read by `parse`:
//! - 0 (no format annotation): written before namespace UIDs were recorded; `provenance`
//!   decides whether such a point belongs to the live namespace.
//! - 1: the origin's metadata (labels, annotations, ownerReferences) JSON-encoded in
//!   annotations of the point, and the origin namespace's UID (`origin-namespace-uid`).
//! - 2: the same, but the origin's labels, annotations and ownerReferences are one JSON
//!   document in the point's data (`ORIGIN_METADATA_KEY`), beside the origin's data: for an
//!   origin whose metadata does not fit in a point's annotations (256 KiB in all).
//!
//! `build` writes the oldest format that holds the origin: format 1 whenever it fits, so
//! that a binary of the previous release (which reads formats 0 and 1) still restores
//! from it after a rollback; format 2 only for what format 1 cannot hold (which that
//! release could never save at all). A point of a format newer than `NEWEST_FORMAT` is
//! neither read nor overwritten (`RestorePointError::is_newer_format`).
//!
//! A point of an earlier format is rewritten in the format `build` writes by `rewritten`
//! (read with `parse`, written with `build`), at a bounded pace (src/guard/migrate.rs).

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
    /// The restore point format (`Format`); absent on points of format 0.
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

/// The newest restore point format this version reads (and writes, when format 1 cannot
/// hold the origin; see the module's documentation). Not the format every point is
/// written in: `build` writes the oldest that holds the origin (`format_for`).
pub const NEWEST_FORMAT: Format = Format::V2;

/// The restore point formats this version reads.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Format {
    /// No format annotation: no origin namespace UID.
    V0,
    /// Origin metadata in annotations, origin namespace UID recorded.
    V1,
    /// Origin metadata in the data (`ORIGIN_METADATA_KEY`), origin namespace UID recorded.
    V2,
}

impl Format {
    pub fn as_str(self) -> &'static str {
        match self {
            Format::V0 => "0",
            Format::V1 => "1",
            Format::V2 => "2",
        }
    }

    /// The format of a restore point (or snapshot), from its annotation.
    pub fn of(point: &Secret) -> Result<Format, RestorePointError> {
        let name = || point.metadata.name.clone().unwrap_or_default();
        let annotations = point.metadata.annotations.as_ref();
        match annotations
            .and_then(|a| a.get(annotation::FORMAT))
            .map(String::as_str)
        {
            None => Ok(Format::V0),
            Some("1") => Ok(Format::V1),
            Some("2") => Ok(Format::V2),
            Some(other) => Err(RestorePointError::UnknownFormat(name(), other.to_owned())),
        }
    }
}

/// The data key of a format-2 restore point that holds the origin's labels, annotations
/// and ownerReferences (one JSON document). A Secret whose own data has this key cannot be
/// saved in format 2.
pub const ORIGIN_METADATA_KEY: &str = "secretguard.dev-origin-metadata.json";

/// The apiserver's limit on all annotations of an object together (keys and values).
pub const ANNOTATIONS_LIMIT: usize = 256 * 1024;
/// The apiserver's limit on a Secret's data (values).
pub const DATA_LIMIT: usize = 1024 * 1024;
/// Room kept free in a format-1 point's annotations for what is added to it later
/// (`orphaned-since`, `adopt-namespace-uid`, a growing restore count, a note of an admin).
const ANNOTATIONS_HEADROOM: usize = 4 * 1024;

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
    #[error("restore point {0} has no readable origin metadata in its data")]
    BadMetadata(String),
}

impl RestorePointError {
    /// Written by a newer version (a format this one does not know): never overwritten
    /// nor restored from by this version.
    pub fn is_newer_format(&self) -> bool {
        self.newer_format().is_some()
    }

    /// The format of a point a newer version wrote.
    pub fn newer_format(&self) -> Option<&str> {
        match self {
            RestorePointError::UnknownFormat(_, format) => Some(format),
            _ => None,
        }
    }

    /// How the `secretguard_restore_points_unreadable` gauge counts it.
    pub fn kind(&self) -> &'static str {
        if self.is_newer_format() {
            "NewerFormat"
        } else {
            "Unreadable"
        }
    }
}

/// Why a Secret cannot be saved as a restore point (it stays unprotected).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unsaveable {
    /// Its data and metadata together exceed what one Secret may hold (256 KiB of
    /// annotations, 1 MiB of data).
    TooLarge,
    /// Its metadata only fits in format 2, and its own data has the key that format
    /// keeps the metadata under (`ORIGIN_METADATA_KEY`).
    ReservedKey,
}

impl Unsaveable {
    /// Why, in words for status and Events (no content, only sizes and names we chose).
    pub fn describe(self) -> String {
        match self {
            Unsaveable::TooLarge => format!(
                "its restore point cannot be saved: its data and metadata do not fit in one Secret ({} KiB of annotations, {} KiB of data)",
                ANNOTATIONS_LIMIT / 1024,
                DATA_LIMIT / 1024
            ),
            Unsaveable::ReservedKey => format!(
                "its restore point cannot be saved: its metadata is too large for annotations, and its data has the key {ORIGIN_METADATA_KEY} that a restore point would keep the metadata under"
            ),
        }
    }
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
    /// Written in format 0 (before namespace UIDs were recorded): to be rewritten in a
    /// format this version writes. Formats 1 and 2 are both written (`build` picks the
    /// oldest that holds the origin), and a newer format is never rewritten.
    pub older_format: bool,
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
            older_format: matches!(Format::of(point), Ok(Format::V0)),
        }
    }
}

/// A restore point or ServiceAccount snapshot of an earlier format, rewritten in the
/// format this version writes, for the namespace with UID `namespace_uid` (where it was
/// found to belong): the same origin, content, restore count and tombstone, read with
/// `parse` and written with `build`. None when it is not of an earlier format, or cannot
/// be read: it is then left as it is.
pub fn rewritten(point: &Secret, namespace_uid: &str) -> Option<Secret> {
    let written = Written::of(point);
    if !written.older_format {
        return None;
    }
    let operator_namespace = point.metadata.namespace.as_deref().unwrap_or_default();
    let rewritten = if written.origin_kind.as_deref() == Some(SERVICE_ACCOUNT_KIND) {
        let origin = written.origin?;
        let mut sa = parse_sa_snapshot(point)?;
        sa.metadata.uid = written.origin_uid;
        sa.metadata.resource_version = snapshot_resource_version(point).map(str::to_owned);
        build_sa_snapshot(&sa, &origin.name, namespace_uid, operator_namespace)
    } else {
        rewritten_restore_point(point, namespace_uid, operator_namespace)?
    };
    // Its name is derived from the origin it records: one that says otherwise was
    // altered, and rewriting it would write another point.
    (rewritten.metadata.name == point.metadata.name).then_some(rewritten)
}

fn rewritten_restore_point(
    point: &Secret,
    namespace_uid: &str,
    operator_namespace: &str,
) -> Option<Secret> {
    let rp = parse(point).ok()?;
    let origin = Secret {
        metadata: ObjectMeta {
            name: Some(rp.origin_name),
            namespace: Some(rp.origin_namespace),
            uid: Some(rp.origin_uid),
            labels: Some(rp.labels),
            annotations: Some(rp.annotations),
            owner_references: Some(rp.owner_references).filter(|o| !o.is_empty()),
            ..Default::default()
        },
        type_: Some(rp.type_),
        data: Some(rp.data),
        immutable: rp.immutable.then_some(true),
        ..Default::default()
    };
    build(
        &origin,
        &rp.origin_kind,
        namespace_uid,
        operator_namespace,
        rp.restores,
    )
    .ok()
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
    /// The layout it was read from.
    pub format: Format,
    pub origin_namespace: String,
    pub origin_name: String,
    pub origin_uid: String,
    pub origin_kind: String,
    pub type_: String,
    /// The hash of what it really holds (`Restorable::digest`), not its annotation.
    pub content_hash: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    pub immutable: bool,
    /// The origin's data (in format 2, without `ORIGIN_METADATA_KEY`).
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

    /// What a restore from it writes back.
    pub fn restorable(&self) -> Restorable<'_> {
        Restorable {
            type_: &self.type_,
            data: &self.data,
            labels: Some(&self.labels),
            annotations: Some(&self.annotations),
            immutable: self.immutable,
            owners: &self.owner_references,
        }
    }
}

/// Deterministic name of the restore point for a Secret: short, DNS-safe, collision-free in
/// practice, and computable without listing.
pub fn name_for(namespace: &str, name: &str) -> String {
    let digest = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("sgrp-{}", &hex(&digest)[..40])
}

/// What a restore writes back, of a live Secret or of a restore point: what the point must
/// hold the latest of. Its hash (`digest`) is what "saved" means: the live Secret's equals
/// its point's, or the point is written again.
#[derive(Clone, Copy, Debug)]
pub struct Restorable<'a> {
    pub type_: &'a str,
    pub data: &'a BTreeMap<String, ByteString>,
    pub labels: Option<&'a BTreeMap<String, String>>,
    pub annotations: Option<&'a BTreeMap<String, String>>,
    pub immutable: bool,
    pub owners: &'a [OwnerReference],
}

/// A label or annotation a restore writes back as saved, so a change of it alone is
/// saved. Not: ours (`secretguard.dev/...`: set, stripped or answered by the operator
/// itself), `kubectl.kubernetes.io/last-applied-configuration` (never saved), and
/// `kubernetes.io/legacy-token-last-used` (the apiserver's, moved on each day of use).
fn restorable_key(key: &str) -> bool {
    !key.starts_with("secretguard.dev/")
        && key != labels::LEGACY_TOKEN_LAST_USED
        && !NOT_RESTORED_ANNOTATIONS.contains(&key)
}

impl<'a> Restorable<'a> {
    /// A live Secret's (an empty map for absent data).
    pub fn of(secret: &'a Secret, empty: &'a BTreeMap<String, ByteString>) -> Restorable<'a> {
        let meta = &secret.metadata;
        Restorable {
            type_: secret.type_.as_deref().unwrap_or("Opaque"),
            data: secret.data.as_ref().unwrap_or(empty),
            labels: meta.labels.as_ref(),
            annotations: meta.annotations.as_ref(),
            immutable: secret.immutable.unwrap_or(false),
            owners: meta.owner_references.as_deref().unwrap_or_default(),
        }
    }

    /// The hash: type, data, the restorable labels and annotations, immutable and the
    /// ownerReferences, each length-prefixed so no two contents share one.
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Sha256::new();
        let mut field = |bytes: &[u8]| {
            h.update((bytes.len() as u64).to_be_bytes());
            h.update(bytes);
        };
        field(self.type_.as_bytes());
        for (k, v) in self.data {
            field(k.as_bytes());
            field(&v.0);
        }
        for (section, map) in [("labels", self.labels), ("annotations", self.annotations)] {
            field(section.as_bytes());
            for (k, v) in map.into_iter().flatten().filter(|(k, _)| restorable_key(k)) {
                field(k.as_bytes());
                field(v.as_bytes());
            }
        }
        field(if self.immutable {
            b"immutable"
        } else {
            b"mutable"
        });
        for owner in self.owners {
            field(&serde_json::to_vec(owner).unwrap_or_default());
        }
        h.finalize().into()
    }
}

/// Content hash of a live Secret (`Restorable::digest`), as hex.
pub fn secret_hash(secret: &Secret) -> String {
    hex(&secret_digest(secret))
}

/// `secret_hash` as its 32 bytes.
pub fn secret_digest(secret: &Secret) -> [u8; 32] {
    let empty = BTreeMap::new();
    Restorable::of(secret, &empty).digest()
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
/// that point's restore count and origin UID. A restore says so in an annotation, or in a
/// label where its annotations had no room left (`restored_secret`).
pub fn next_restores(previous: Option<(u64, &str)>, live: &Secret) -> u64 {
    let Some((restores, origin_uid)) = previous else {
        return 0;
    };
    let meta = &live.metadata;
    let marked = |m: Option<&BTreeMap<String, String>>| {
        m.and_then(|m| m.get(labels::RESTORED_FROM))
            .is_some_and(|v| v == origin_uid)
    };
    restores + u64::from(marked(meta.annotations.as_ref()) || marked(meta.labels.as_ref()))
}

/// Total size of annotations as the apiserver counts it against `ANNOTATIONS_LIMIT`.
pub fn annotations_size(annotations: &BTreeMap<String, String>) -> usize {
    annotations.iter().map(|(k, v)| k.len() + v.len()).sum()
}

/// The origin's metadata a restore point keeps: every label, the annotations but
/// `NOT_RESTORED_ANNOTATIONS`, the ownerReferences.
#[derive(Clone, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct OriginMetadata {
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    owner_references: Vec<OwnerReference>,
}

impl OriginMetadata {
    fn of(meta: &ObjectMeta) -> OriginMetadata {
        let mut annotations = meta.annotations.clone().unwrap_or_default();
        annotations.retain(|k, _| !NOT_RESTORED_ANNOTATIONS.contains(&k.as_str()));
        OriginMetadata {
            labels: meta.labels.clone().unwrap_or_default(),
            annotations,
            owner_references: meta.owner_references.clone().unwrap_or_default(),
        }
    }

    /// As format 1 keeps it: annotations of the point, each JSON.
    fn as_annotations(&self) -> Vec<(&'static str, String)> {
        let mut out = vec![
            (annotation::ORIGIN_LABELS, json(&self.labels)),
            (annotation::ORIGIN_ANNOTATIONS, json(&self.annotations)),
        ];
        if !self.owner_references.is_empty() {
            out.push((annotation::ORIGIN_OWNERS, json(&self.owner_references)));
        }
        out
    }
}

/// JSON of what a restore point encodes (maps of strings, ownerReferences: serializing
/// them cannot fail).
fn json(value: &impl serde::Serialize) -> String {
    serde_json::to_string(value).unwrap_or_default()
}

/// Whether a live Secret can be saved as a restore point, and in which format (the
/// oldest that holds it: see the module's documentation).
pub fn format_for(origin: &Secret) -> Result<Format, Unsaveable> {
    let metadata = OriginMetadata::of(&origin.metadata);
    layout(origin, &metadata).map(|(format, _)| format)
}

/// The format for `origin`, and in format 2 the metadata document to keep in its data.
fn layout(
    origin: &Secret,
    metadata: &OriginMetadata,
) -> Result<(Format, Option<Vec<u8>>), Unsaveable> {
    // Ours besides the metadata: a few names, UIDs and numbers, well under the headroom.
    let in_annotations: usize = metadata
        .as_annotations()
        .iter()
        .map(|(k, v)| k.len() + v.len())
        .sum();
    if in_annotations + ANNOTATIONS_HEADROOM <= ANNOTATIONS_LIMIT {
        return Ok((Format::V1, None));
    }
    let data = origin.data.as_ref();
    if data.is_some_and(|d| d.contains_key(ORIGIN_METADATA_KEY)) {
        return Err(Unsaveable::ReservedKey);
    }
    let document = serde_json::to_vec(metadata).unwrap_or_default();
    let data_size: usize = data.into_iter().flatten().map(|(_, v)| v.0.len()).sum();
    if data_size + document.len() > DATA_LIMIT {
        return Err(Unsaveable::TooLarge);
    }
    Ok((Format::V2, Some(document)))
}

/// Build the restore point Secret for a live guarded Secret in the namespace with UID
/// `namespace_uid`, in the oldest format that holds it (`format_for`).
pub fn build(
    origin: &Secret,
    origin_kind: &str,
    namespace_uid: &str,
    operator_namespace: &str,
    restores: u64,
) -> Result<Secret, Unsaveable> {
    let meta = &origin.metadata;
    let namespace = meta.namespace.clone().unwrap_or_default();
    let name = meta.name.clone().unwrap_or_default();
    let type_ = origin.type_.clone().unwrap_or_else(|| "Opaque".into());
    let metadata = OriginMetadata::of(meta);
    let (format, document) = layout(origin, &metadata)?;
    let mut data = origin.data.clone().unwrap_or_default();

    let mut annotations = BTreeMap::from([
        (annotation::FORMAT.to_owned(), format.as_str().to_owned()),
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
        (annotation::ORIGIN_TYPE.to_owned(), type_),
        (annotation::ORIGIN_KIND.to_owned(), origin_kind.to_owned()),
        (
            annotation::ORIGIN_IMMUTABLE.to_owned(),
            origin.immutable.unwrap_or(false).to_string(),
        ),
        (annotation::CONTENT_HASH.to_owned(), secret_hash(origin)),
        (annotation::RESTORES.to_owned(), restores.to_string()),
    ]);
    match document {
        None => annotations.extend(
            metadata
                .as_annotations()
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v)),
        ),
        Some(document) => {
            data.insert(ORIGIN_METADATA_KEY.to_owned(), ByteString(document));
        }
    }
    Ok(Secret {
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
    })
}

/// Read a restore point Secret back, whatever format this version knows it is in (0, 1
/// or 2); a newer one is `RestorePointError::UnknownFormat`. The one place that knows
/// the layouts: whatever reads or migrates old points starts here.
pub fn parse(secret: &Secret) -> Result<RestorePoint, RestorePointError> {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let empty = BTreeMap::new();
    let ann = secret.metadata.annotations.as_ref().unwrap_or(&empty);
    let get = |key: &'static str| {
        ann.get(key)
            .cloned()
            .ok_or_else(|| RestorePointError::MissingAnnotation(name.clone(), key))
    };
    fn decode<T: serde::de::DeserializeOwned>(
        name: &str,
        key: &'static str,
        value: &str,
    ) -> Result<T, RestorePointError> {
        serde_json::from_str(value).map_err(|_| RestorePointError::BadAnnotation(name.into(), key))
    }
    let format = Format::of(secret)?;
    if format >= Format::V1 {
        // Formats 1 and 2 always record the namespace UID: a point without it was altered.
        get(annotation::ORIGIN_NAMESPACE_UID)?;
    }
    let mut data = secret.data.clone().unwrap_or_default();
    let metadata = match format {
        Format::V0 | Format::V1 => OriginMetadata {
            labels: decode(
                &name,
                annotation::ORIGIN_LABELS,
                &get(annotation::ORIGIN_LABELS)?,
            )?,
            annotations: decode(
                &name,
                annotation::ORIGIN_ANNOTATIONS,
                &get(annotation::ORIGIN_ANNOTATIONS)?,
            )?,
            owner_references: ann
                .get(annotation::ORIGIN_OWNERS)
                .map(|j| decode(&name, annotation::ORIGIN_OWNERS, j))
                .transpose()?
                .unwrap_or_default(),
        },
        Format::V2 => data
            .remove(ORIGIN_METADATA_KEY)
            .and_then(|d| serde_json::from_slice(&d.0).ok())
            .ok_or_else(|| RestorePointError::BadMetadata(name.clone()))?,
    };
    let mut rp = RestorePoint {
        format,
        origin_namespace: get(annotation::ORIGIN_NAMESPACE)?,
        origin_name: get(annotation::ORIGIN_NAME)?,
        origin_uid: get(annotation::ORIGIN_UID)?,
        origin_kind: get(annotation::ORIGIN_KIND)?,
        content_hash: String::new(),
        type_: get(annotation::ORIGIN_TYPE)?,
        labels: metadata.labels,
        annotations: metadata.annotations,
        immutable: get(annotation::ORIGIN_IMMUTABLE)? == "true",
        data,
        restores: restores(secret),
        owner_references: metadata.owner_references,
        name,
    };
    // The hash of what is really stored, not the annotation: a restore point whose data
    // was changed behind the operator's back no longer matches and is rewritten.
    rp.content_hash = hex(&rp.restorable().digest());
    Ok(rp)
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
/// guard revalidates). It says which Secret it replaces (`secretguard.dev/restored-from`)
/// in an annotation, or, when the saved annotations leave no room for one more (a Secret
/// at the apiserver's limit), in a label: a restore never fails for its own marker.
pub fn restored_secret(rp: &RestorePoint, key: &ObjectKey, drop_labels: &[&str]) -> Secret {
    let mut labels = rp.labels.clone();
    labels.retain(|k, _| !drop_labels.contains(&k.as_str()) && k != labels::RESTORED_FROM);
    labels.insert(labels::GUARDED.to_owned(), "true".to_owned());
    let mut annotations = rp.annotations.clone();
    annotations.remove(labels::RESTORED_FROM);
    let marker = labels::RESTORED_FROM.len() + rp.origin_uid.len();
    if annotations_size(&annotations) + marker <= ANNOTATIONS_LIMIT {
        annotations.insert(labels::RESTORED_FROM.to_owned(), rp.origin_uid.clone());
    } else if is_label_value(&rp.origin_uid) {
        labels.insert(labels::RESTORED_FROM.to_owned(), rp.origin_uid.clone());
    }
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

/// A valid label value (a UID is one): at most 63 characters, alphanumerics with `-`,
/// `_` or `.` inside.
fn is_label_value(v: &str) -> bool {
    let inner = |c: char| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.');
    v.len() <= 63
        && v.chars().all(inner)
        && v.chars().next().is_none_or(|c| c.is_ascii_alphanumeric())
        && v.chars().last().is_none_or(|c| c.is_ascii_alphanumeric())
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
                // Its layout never changed: any version that reads snapshots reads it.
                (
                    annotation::FORMAT.to_owned(),
                    Format::V1.as_str().to_owned(),
                ),
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

    /// `super::build` of what fits (every fixture here but the large ones).
    fn build(origin: &Secret, kind: &str, ns_uid: &str, opns: &str, restores: u64) -> Secret {
        super::build(origin, kind, ns_uid, opns, restores).expect("fits")
    }

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

    /// A named edit of a Secret.
    type Edit = (&'static str, Box<dyn FnOnce(&mut Secret)>);

    fn hash_of(edit: impl FnOnce(&mut Secret)) -> String {
        let mut s = token_secret();
        edit(&mut s);
        secret_hash(&s)
    }

    #[test]
    fn the_content_hash_covers_what_a_restore_writes_back_and_nothing_else() {
        let base = hash_of(|_| {});
        fn data(s: &mut Secret) -> &mut BTreeMap<String, ByteString> {
            s.data.get_or_insert_default()
        }
        fn labels(s: &mut Secret) -> &mut BTreeMap<String, String> {
            s.metadata.labels.get_or_insert_default()
        }
        fn annotations(s: &mut Secret) -> &mut BTreeMap<String, String> {
            s.metadata.annotations.get_or_insert_default()
        }
        let changes: Vec<Edit> = vec![
            (
                "data",
                Box::new(|s| {
                    data(s).insert("token".into(), ByteString(b"other".to_vec()));
                }),
            ),
            ("type", Box::new(|s| s.type_ = Some("Opaque".into()))),
            (
                "a label",
                Box::new(|s| {
                    labels(s).insert("team".into(), "b".into());
                }),
            ),
            (
                "an annotation",
                Box::new(|s| {
                    annotations(s).insert("reflector/allowed".into(), "ns-a".into());
                }),
            ),
            (
                "an invalidation",
                Box::new(|s| {
                    labels(s).insert(
                        labels::LEGACY_TOKEN_INVALID_SINCE.into(),
                        "2026-01-01".into(),
                    );
                }),
            ),
            ("immutable", Box::new(|s| s.immutable = Some(true))),
            (
                "an owner",
                Box::new(|s| {
                    s.metadata.owner_references = Some(vec![OwnerReference {
                        name: "app".into(),
                        ..Default::default()
                    }]);
                }),
            ),
            // Length prefixes: moving a byte between key and value changes the hash.
            (
                "a byte moved",
                Box::new(|s| {
                    s.data = Some(BTreeMap::from([(
                        "tokent".into(),
                        ByteString(b"ok".to_vec()),
                    )]));
                }),
            ),
        ];
        for (what, change) in changes {
            assert_ne!(hash_of(change), base, "{what} changes the hash");
        }
        let same: Vec<Edit> = vec![
            (
                "our label",
                Box::new(|s| {
                    labels(s).remove(labels::GUARDED);
                }),
            ),
            (
                "restored-from",
                Box::new(|s| {
                    annotations(s).insert(labels::RESTORED_FROM.into(), "uid-0".into());
                }),
            ),
            (
                "the rotate annotation",
                Box::new(|s| {
                    annotations(s).insert(labels::ROTATE.into(), "true".into());
                }),
            ),
            (
                "the apiserver's last use",
                Box::new(|s| {
                    labels(s).insert(labels::LEGACY_TOKEN_LAST_USED.into(), "2026-01-01".into());
                }),
            ),
            (
                "last-applied-configuration",
                Box::new(|s| {
                    annotations(s).remove("kubectl.kubernetes.io/last-applied-configuration");
                }),
            ),
            ("immutable: false", Box::new(|s| s.immutable = Some(false))),
            (
                "empty owners",
                Box::new(|s| s.metadata.owner_references = Some(vec![])),
            ),
            (
                "the resourceVersion",
                Box::new(|s| s.metadata.resource_version = Some("43".into())),
            ),
        ];
        for (what, change) in same {
            assert_eq!(hash_of(change), base, "{what} does not change the hash");
        }
    }

    #[test]
    fn a_point_hashes_as_the_secret_it_saved_in_every_format() {
        let mut live = token_secret();
        live.immutable = Some(true);
        live.metadata.owner_references = Some(vec![OwnerReference {
            api_version: "apps/v1".into(),
            kind: "Deployment".into(),
            name: "app".into(),
            uid: "owner-uid".into(),
            ..Default::default()
        }]);
        let small = build(&live, "Secret", "ns-uid", "op", 0);
        assert_eq!(parse(&small).expect("parse").format, Format::V1);
        assert_eq!(
            parse(&small).expect("parse").content_hash,
            secret_hash(&live)
        );

        live.metadata
            .annotations
            .get_or_insert_default()
            .insert("big".into(), "\"".repeat(200 * 1024));
        let large = build(&live, "Secret", "ns-uid", "op", 0);
        let rp = parse(&large).expect("parse");
        assert_eq!(rp.format, Format::V2);
        assert_eq!(rp.content_hash, secret_hash(&live));
        assert_eq!(
            rp.data,
            live.data.clone().expect("data"),
            "the metadata is not data"
        );
        assert_eq!(
            rp.owner_references,
            live.metadata.owner_references.clone().expect("owners")
        );
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
    fn a_secret_at_the_annotation_limit_is_restored_with_its_marker_as_a_label() {
        let mut live = token_secret();
        let annotations = live.metadata.annotations.as_mut().expect("annotations");
        annotations.remove("kubectl.kubernetes.io/last-applied-configuration");
        let used = annotations_size(annotations);
        annotations.insert("fill".into(), "x".repeat(ANNOTATIONS_LIMIT - used - 4));
        assert_eq!(annotations_size(annotations), ANNOTATIONS_LIMIT);
        let rp = parse(&build(&live, "Secret", "ns-uid", "op", 1)).expect("parse");
        assert_eq!(rp.format, Format::V2, "too large for a point's annotations");
        let mut restored = restored_secret(&rp, &ObjectKey::of(&live), &[]);
        let annotations = restored.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            annotations_size(annotations),
            ANNOTATIONS_LIMIT,
            "not one byte more"
        );
        assert_eq!(
            restored
                .metadata
                .labels
                .as_ref()
                .expect("labels")
                .get(labels::RESTORED_FROM),
            Some(&"uid-1".to_owned())
        );
        restored.metadata.uid = Some("uid-2".into());
        assert_eq!(next_restores(Some((1, "uid-1")), &restored), 2, "counted");
        // Restored again from the point saved of it: the stale label does not come back.
        let again = parse(&build(&restored, "Secret", "ns-uid", "op", 2)).expect("parse");
        let restored = restored_secret(&again, &ObjectKey::of(&live), &[]);
        assert_eq!(
            restored
                .metadata
                .labels
                .as_ref()
                .expect("labels")
                .get(labels::RESTORED_FROM),
            Some(&"uid-2".to_owned())
        );
    }

    #[test]
    fn what_no_secret_can_hold_is_not_saved_and_says_why() {
        let mut live = token_secret();
        live.metadata
            .annotations
            .get_or_insert_default()
            .insert("big".into(), "\u{1}".repeat(200 * 1024));
        // Six bytes of JSON per control character: over a Secret's 1 MiB of data.
        assert_eq!(format_for(&live), Err(Unsaveable::TooLarge));
        assert_eq!(
            super::build(&live, "Secret", "ns-uid", "op", 0),
            Err(Unsaveable::TooLarge)
        );
        let mut quotes = token_secret();
        quotes
            .metadata
            .annotations
            .get_or_insert_default()
            .insert("big".into(), "\"".repeat(200 * 1024));
        assert_eq!(format_for(&quotes), Ok(Format::V2));
        quotes
            .data
            .get_or_insert_default()
            .insert(ORIGIN_METADATA_KEY.into(), ByteString(b"mine".to_vec()));
        assert_eq!(format_for(&quotes), Err(Unsaveable::ReservedKey));
        assert!(!Unsaveable::TooLarge.describe().contains('\u{1}'));
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

    /// ServiceAccount `writer` of `ingest`, listing a token Secret in `.secrets`.
    fn writer_sa() -> ServiceAccount {
        use k8s_openapi::api::core::v1::{LocalObjectReference, ObjectReference};
        ServiceAccount {
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
        }
    }

    #[test]
    fn a_service_account_snapshot_keeps_what_recreation_needs_and_never_its_secrets_list() {
        let sa = writer_sa();
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

    /// The point is of the format this version writes, and records this namespace UID.
    fn assert_current_format(point: &Secret, namespace_uid: &str) {
        let ann = point.metadata.annotations.as_ref().expect("annotations");
        assert_eq!(
            ann.get(annotation::FORMAT).map(String::as_str),
            Some(Format::V1.as_str())
        );
        assert_eq!(
            ann.get(annotation::ORIGIN_NAMESPACE_UID)
                .map(String::as_str),
            Some(namespace_uid)
        );
    }

    #[test]
    fn format_1_records_the_namespace_uid_and_format_0_is_still_read() {
        let point = point_written(Some("ns-1"), "2026-03-01T00:00:00Z");
        assert_current_format(&point, "ns-1");
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
            .insert(annotation::FORMAT.into(), "3".into());
        let newer = parse(&future).expect_err("a newer format");
        assert_eq!(newer.newer_format(), Some("3"));
        assert_eq!(newer.kind(), "NewerFormat");
    }

    #[test]
    fn a_point_of_an_earlier_format_is_rewritten_in_this_one_with_the_same_content() {
        let mut old = point_written(None, "2026-03-01T00:00:00Z");
        old.metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(annotation::RESTORES.into(), "3".into());
        assert!(Written::of(&old).older_format);
        let new = rewritten(&old, "ns-1").expect("format 0 is rewritten");
        assert_current_format(&new, "ns-1");
        assert_eq!(new.metadata.name, old.metadata.name);
        assert_eq!(new.metadata.namespace, old.metadata.namespace);
        let read = |p: &Secret| RestorePoint {
            format: Format::V1,
            ..parse(p).expect("readable")
        };
        assert_eq!(read(&new), read(&old), "what a restore reads is the same");
        assert_eq!(restores(&new), 3, "the restore count is kept");
        assert!(!Written::of(&new).older_format);
        assert_eq!(rewritten(&new, "ns-1"), None, "written once");

        let mut newer = new.clone();
        newer
            .metadata
            .annotations
            .as_mut()
            .expect("annotations")
            .insert(annotation::FORMAT.into(), "99".into());
        assert_eq!(
            rewritten(&newer, "ns-1"),
            None,
            "a newer format is left alone"
        );

        let mut moved = old.clone();
        moved.metadata.name = Some(name_for("ingest", "other"));
        assert_eq!(
            rewritten(&moved, "ns-1"),
            None,
            "a point not named after its origin is left alone"
        );
    }

    #[test]
    fn a_snapshot_of_an_earlier_format_is_rewritten_in_this_one() {
        let current = build_sa_snapshot(&writer_sa(), "writer-token", "ns-1", "op");
        let mut old = current.clone();
        let ann = old.metadata.annotations.as_mut().expect("annotations");
        ann.remove(annotation::FORMAT);
        ann.remove(annotation::ORIGIN_NAMESPACE_UID);
        assert_eq!(rewritten(&old, "ns-1"), Some(current));
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
