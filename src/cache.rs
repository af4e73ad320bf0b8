//! What the caches keep of Secrets and restore points: what a decision needs, never their
//! data. The watches reduce every object before it reaches a cache
//! (src/controller/watches.rs), so whoever can label a Secret decides nothing about the
//! operator's memory:
//! - a labelled Secret no guard targets is kept as its name and UID only;
//! - a guarded one as the metadata decisions read (its labels, a few annotations, type,
//!   times) and a hash of its content;
//! - a restore point as its origin, restore count and a hash of the data it really holds.
//!
//! The data itself is read only where it is written or restored: from the watch event that
//! carried it (held until the reconcile of its key takes it, `Context::keep_content`), or
//! with one GET. Pure.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::mem::size_of;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::ObjectMeta;
use kube::runtime::reflector::Lookup;

use crate::labels;
use crate::object_key::ObjectKey;
use crate::restore_point::{self, RestorePointError, Written};

/// The annotations of a guarded Secret that decisions read; all others are left out of the
/// cache (the restore point is written from the whole object, not from the cache).
pub const DECISION_ANNOTATIONS: &[&str] = &[
    labels::SA_NAME_ANNOTATION,
    labels::SA_UID_ANNOTATION,
    labels::ROTATE,
    labels::RETIRE,
    labels::RESTORED_FROM,
];

/// A content hash as its 32 bytes; shown (and compared with the views') as hex.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Digest(pub [u8; 32]);

impl std::fmt::Display for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&restore_point::hex(&self.0))
    }
}

impl std::fmt::Debug for Digest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

/// Approximate heap bytes a cache entry holds (the `secretguard_cached_bytes` gauge).
pub trait Retained {
    fn retained_bytes(&self) -> usize;
}

/// A Secret labelled secretguard.dev/guarded, as the Secret cache keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedSecret {
    pub key: ObjectKey,
    pub uid: String,
    pub resource_version: String,
    /// What decisions read; None when no guard targeted it as it was cached (someone
    /// labelled a Secret nobody guards): then nothing more is kept, and a reconcile that
    /// finds it guarded after all reads it from the apiserver.
    pub detail: Option<SecretDetail>,
}

/// What decisions read of a guarded Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SecretDetail {
    pub created: Option<Timestamp>,
    pub terminating: bool,
    pub type_: String,
    /// Every label (selectors match on them).
    pub labels: Labels,
    /// Only the `DECISION_ANNOTATIONS`, sorted by key.
    pub annotations: Vec<(String, String)>,
    /// `restore_point::secret_hash`: type and data.
    pub content_hash: Digest,
    /// `data.token` is present and not empty.
    pub token_populated: bool,
    /// kubernetes.io/legacy-token-invalid-since was set by the legacy token cleaner, and
    /// only by it (its managedFields say so; the cache keeps no managedFields).
    pub invalidated_by_cleaner: bool,
}

impl CachedSecret {
    /// Name and UID only: a labelled Secret no guard targets.
    pub fn minimal(secret: &Secret) -> CachedSecret {
        let meta = &secret.metadata;
        CachedSecret {
            key: ObjectKey::of(secret),
            uid: meta.uid.clone().unwrap_or_default(),
            resource_version: meta.resource_version.clone().unwrap_or_default(),
            detail: None,
        }
    }

    /// What decisions read of a guarded Secret.
    pub fn detailed(secret: &Secret) -> CachedSecret {
        let meta = &secret.metadata;
        CachedSecret {
            detail: Some(SecretDetail {
                created: meta.creation_timestamp.as_ref().map(|t| t.0),
                terminating: meta.deletion_timestamp.is_some(),
                type_: secret.type_.clone().unwrap_or_else(|| "Opaque".into()),
                labels: Labels::of(meta.labels.as_ref()),
                annotations: sorted(meta.annotations.as_ref(), |k| {
                    DECISION_ANNOTATIONS.contains(&k)
                }),
                content_hash: Digest(restore_point::secret_digest(secret)),
                token_populated: secret
                    .data
                    .as_ref()
                    .and_then(|d| d.get("token"))
                    .is_some_and(|t| !t.0.is_empty()),
                invalidated_by_cleaner: invalidated_by_cleaner(meta),
            }),
            ..CachedSecret::minimal(secret)
        }
    }
}

impl Retained for CachedSecret {
    fn retained_bytes(&self) -> usize {
        size_of::<Self>()
            + key_bytes(&self.key)
            + self.uid.capacity()
            + self.resource_version.capacity()
            + self.detail.as_ref().map_or(0, |d| {
                d.type_.capacity() + d.labels.bytes() + pairs_bytes(&d.annotations)
            })
    }
}

impl SecretDetail {
    pub fn label(&self, key: &str) -> Option<&str> {
        self.labels.get(key)
    }

    pub fn annotation(&self, key: &str) -> Option<&str> {
        find(&self.annotations, key)
    }

    /// The labels as selectors take them.
    pub fn labels_map(&self) -> BTreeMap<String, String> {
        self.labels.to_map()
    }
}

/// A restore point or ServiceAccount snapshot, as the restore-point cache keeps it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CachedRestorePoint {
    /// The restore point's own namespace and name.
    pub key: ObjectKey,
    /// Its resourceVersion: a save is made over this version only.
    pub resource_version: String,
    /// Where it was written and of what (its origin: None when it is not one of ours to
    /// act on).
    pub written: Written,
    /// Restores recorded on it.
    pub restores: u64,
    /// Stamped when its namespace was found gone.
    pub orphaned_since: Option<Timestamp>,
    /// For a ServiceAccount snapshot: the resourceVersion of the ServiceAccount it was taken of.
    pub snapshot_resource_version: Option<String>,
    /// For a ServiceAccount snapshot: the UID of the ServiceAccount a rotation is deleting
    /// and re-creating, while it is under way (`restore_point::rotating`).
    pub rotating: Option<String>,
    /// For a restore point of a Secret: what decisions read. Err when it cannot be read (it
    /// is then rewritten from the live Secret).
    pub saved: Result<Saved, RestorePointError>,
}

/// What decisions read of a restore point of a Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Saved {
    /// The hash of the data the restore point really holds, not its annotation: one whose
    /// data was edited behind the operator's back no longer matches and is rewritten.
    pub content_hash: Digest,
    /// The ServiceAccount UID a saved token was issued for.
    pub service_account_uid: Option<String>,
    /// The origin's labels: a deleted Secret is matched to a selector by them.
    pub labels: Labels,
    /// A tombstone: why the name must not be re-created (`secretguard.dev/tombstone`).
    pub tombstone: Option<String>,
    /// The origin was retired on purpose (`secretguard.dev/retire`).
    pub retired: bool,
    /// The origin had ownerReferences: before it is restored, its owners are checked.
    pub owned: bool,
}

impl CachedRestorePoint {
    /// The Secret it belongs to (None: not one of ours to act on).
    pub fn origin(&self) -> Option<&ObjectKey> {
        self.written.origin.as_ref()
    }

    /// The UID of the Secret (or, for a snapshot, the ServiceAccount) it saved.
    pub fn origin_uid(&self) -> &str {
        self.written.origin_uid.as_deref().unwrap_or_default()
    }

    pub fn of(secret: &Secret) -> CachedRestorePoint {
        // A snapshot has no origin type: it reads as no restore point of a Secret.
        let saved = restore_point::parse(secret).map(|rp| Saved {
            service_account_uid: rp.service_account_uid().map(str::to_owned),
            content_hash: Digest(restore_point::content_digest(&rp.type_, &rp.data)),
            labels: Labels::of(Some(&rp.labels)),
            tombstone: rp.annotations.get(labels::TOMBSTONE).cloned(),
            retired: rp
                .annotations
                .get(labels::RETIRE)
                .is_some_and(|v| v == "true"),
            owned: !rp.owner_references.is_empty(),
        });
        CachedRestorePoint {
            key: ObjectKey::of(secret),
            resource_version: secret.metadata.resource_version.clone().unwrap_or_default(),
            written: Written::of(secret),
            restores: restore_point::restores(secret),
            orphaned_since: restore_point::orphaned_since(secret),
            snapshot_resource_version: restore_point::snapshot_resource_version(secret)
                .map(str::to_owned),
            rotating: restore_point::rotating(secret).map(str::to_owned),
            saved,
        }
    }
}

impl Retained for CachedRestorePoint {
    fn retained_bytes(&self) -> usize {
        let w = &self.written;
        let opt = |s: &Option<String>| s.as_ref().map_or(0, String::capacity);
        size_of::<Self>()
            + key_bytes(&self.key)
            + self.resource_version.capacity()
            + w.origin.as_ref().map_or(0, key_bytes)
            + w.service_account.as_ref().map_or(0, key_bytes)
            + opt(&w.origin_kind)
            + opt(&w.origin_uid)
            + opt(&w.namespace_uid)
            + opt(&w.adopt_namespace_uid)
            + opt(&self.snapshot_resource_version)
            + opt(&self.rotating)
            + self.saved.as_ref().map_or(0, |s| {
                opt(&s.service_account_uid) + opt(&s.tombstone) + s.labels.bytes()
            })
    }
}

impl Saved {
    pub fn labels_map(&self) -> BTreeMap<String, String> {
        self.labels.to_map()
    }
}

/// Labels, compactly: sorted pairs, and secretguard.dev/guarded=true as a flag (every
/// guarded Secret, and nearly every restore point's origin, carries it).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Labels {
    guarded: bool,
    others: Vec<(String, String)>,
}

impl Labels {
    pub fn of(labels: Option<&BTreeMap<String, String>>) -> Labels {
        let guarded = labels
            .and_then(|l| l.get(labels::GUARDED))
            .is_some_and(|v| v == "true");
        Labels {
            guarded,
            others: sorted(labels, |k| !(guarded && k == labels::GUARDED)),
        }
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        if self.guarded && key == labels::GUARDED {
            return Some("true");
        }
        find(&self.others, key)
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        let ours = self
            .guarded
            .then(|| (labels::GUARDED.to_owned(), "true".to_owned()));
        self.others.iter().cloned().chain(ours).collect()
    }

    fn bytes(&self) -> usize {
        pairs_bytes(&self.others)
    }
}

/// The pairs of `m` whose key `keep` accepts, sorted by key.
fn sorted(
    m: Option<&BTreeMap<String, String>>,
    keep: impl Fn(&str) -> bool,
) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = m
        .into_iter()
        .flatten()
        .filter(|(k, _)| keep(k))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    v.shrink_to_fit();
    v
}

/// The field managers that own a label of an object, from its managedFields (empty when
/// they are unknown).
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
pub fn invalidated_by_cleaner(meta: &ObjectMeta) -> bool {
    let owners = label_owners(meta, labels::LEGACY_TOKEN_INVALID_SINCE);
    !owners.is_empty() && owners.iter().all(|m| *m == labels::CONTROLLER_MANAGER)
}

fn find<'a>(pairs: &'a [(String, String)], key: &str) -> Option<&'a str> {
    pairs
        .binary_search_by(|(k, _)| k.as_str().cmp(key))
        .ok()
        .map(|i| pairs[i].1.as_str())
}

fn key_bytes(key: &ObjectKey) -> usize {
    key.namespace.capacity() + key.name.capacity()
}

fn pairs_bytes(pairs: &[(String, String)]) -> usize {
    pairs
        .iter()
        .map(|(k, v)| size_of::<(String, String)>() + k.capacity() + v.capacity())
        .sum()
}

/// Approximate bytes of a whole Secret: its data, labels and annotations (the bound on the
/// contents kept from watch events).
pub fn secret_bytes(secret: &Secret) -> usize {
    let map = |m: Option<&BTreeMap<String, String>>| {
        m.into_iter()
            .flatten()
            .map(|(k, v)| k.len() + v.len())
            .sum::<usize>()
    };
    size_of::<Secret>()
        + secret
            .data
            .iter()
            .flatten()
            .map(|(k, v)| k.len() + v.0.len())
            .sum::<usize>()
        + map(secret.metadata.labels.as_ref())
        + map(secret.metadata.annotations.as_ref())
}

/// The caches are keyed by namespace and name only: the store's key then holds no copy of
/// the UID or resourceVersion.
macro_rules! lookup_as_secret {
    ($t:ty) => {
        impl Lookup for $t {
            type DynamicType = ();

            fn kind(_: &()) -> Cow<'_, str> {
                "Secret".into()
            }

            fn group(_: &()) -> Cow<'_, str> {
                "".into()
            }

            fn version(_: &()) -> Cow<'_, str> {
                "v1".into()
            }

            fn plural(_: &()) -> Cow<'_, str> {
                "secrets".into()
            }

            fn name(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.key.name))
            }

            fn namespace(&self) -> Option<Cow<'_, str>> {
                Some(Cow::Borrowed(&self.key.namespace))
            }

            fn resource_version(&self) -> Option<Cow<'_, str>> {
                None
            }

            fn uid(&self) -> Option<Cow<'_, str>> {
                None
            }
        }
    };
}

lookup_as_secret!(CachedSecret);
lookup_as_secret!(CachedRestorePoint);

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::ByteString;
    use serde_json::json;

    const DATA: &[u8] = b"the-secret-value";

    fn secret(annotations: serde_json::Value) -> Secret {
        serde_json::from_value(json!({
            "metadata": {
                "name": "db", "namespace": "ns", "uid": "db-uid", "resourceVersion": "7",
                "creationTimestamp": "2026-01-01T00:00:00Z",
                "labels": {labels::GUARDED: "true", "tier": "critical"},
                "annotations": annotations,
                "managedFields": [{"manager": "kubectl", "operation": "Update"}],
                "ownerReferences": [{"apiVersion": "v1", "kind": "ConfigMap", "name": "o", "uid": "o-uid"}],
            },
            "type": "Opaque",
            "data": {"password": ByteString(DATA.to_vec()), "token": ByteString(b"t".to_vec())},
        }))
        .expect("a Secret")
    }

    /// Every byte of `needle` that shows up in the debug text of `cached`.
    fn holds(cached: &impl std::fmt::Debug, needle: &str) -> bool {
        format!("{cached:?}").contains(needle)
    }

    #[test]
    fn a_guarded_secret_is_cached_as_what_decisions_read_and_a_content_hash() {
        let s = secret(json!({
            labels::SA_UID_ANNOTATION: "sa-uid",
            labels::ROTATE: "true",
            "kubectl.kubernetes.io/last-applied-configuration": "{\"data\":{\"password\":\"the-secret-value\"}}",
            "team.example/notes": "x".repeat(1000),
        }));
        let cached = CachedSecret::detailed(&s);
        assert_eq!(cached.key, ObjectKey::new("ns", "db"));
        assert_eq!(
            (cached.uid.as_str(), cached.resource_version.as_str()),
            ("db-uid", "7")
        );
        let d = cached.detail.as_ref().expect("detail");
        assert_eq!(d.label("tier"), Some("critical"));
        assert_eq!(d.label(labels::GUARDED), Some("true"));
        assert_eq!(
            d.labels_map().get(labels::GUARDED).map(String::as_str),
            Some("true")
        );
        assert_eq!(d.annotation(labels::SA_UID_ANNOTATION), Some("sa-uid"));
        assert_eq!(d.annotation(labels::ROTATE), Some("true"));
        assert_eq!(
            d.annotations.len(),
            2,
            "only the annotations decisions read: {:?}",
            d.annotations
        );
        assert_eq!(d.content_hash.to_string(), restore_point::secret_hash(&s));
        assert!(d.token_populated);
        assert_eq!(d.created.map(|t| t.as_second()), Some(1767225600));
        assert!(!d.terminating);
        // No data, no last-applied copy of it, no managedFields or owners.
        for gone in [
            "the-secret-value",
            "last-applied",
            "team.example",
            "kubectl",
            "o-uid",
        ] {
            assert!(!holds(&cached, gone), "{gone} is not cached: {cached:?}");
        }
        assert!(
            cached.retained_bytes() < 1024,
            "{}",
            cached.retained_bytes()
        );
    }

    #[test]
    fn a_labelled_secret_no_guard_targets_is_cached_as_its_name_and_uid_only() {
        let mut s = secret(json!({"big": "a".repeat(200 * 1024)}));
        s.data
            .as_mut()
            .expect("data")
            .insert("blob".into(), ByteString(vec![7; 900 * 1024]));
        let cached = CachedSecret::minimal(&s);
        assert_eq!(cached.detail, None);
        assert_eq!(cached.uid, "db-uid");
        assert!(!holds(&cached, "critical") && !holds(&cached, "aaaa"));
        assert!(cached.retained_bytes() < 512, "{}", cached.retained_bytes());
        assert!(
            secret_bytes(&s) > 1024 * 1024,
            "the whole Secret is counted"
        );
    }

    #[test]
    fn a_restore_point_is_cached_without_its_data_with_the_hash_of_the_data_it_holds() {
        let live = secret(json!({labels::SA_UID_ANNOTATION: "sa-uid"}));
        let mut rp = restore_point::build(&live, "Secret", "ns-uid", "op", 3);
        let cached = CachedRestorePoint::of(&rp);
        assert_eq!(cached.origin(), Some(&ObjectKey::new("ns", "db")));
        assert_eq!(cached.restores, 3);
        assert_eq!(cached.orphaned_since, None);
        let saved = cached.saved.as_ref().expect("readable");
        assert_eq!(cached.origin_uid(), "db-uid");
        assert_eq!(
            saved.content_hash.to_string(),
            restore_point::secret_hash(&live)
        );
        assert_eq!(saved.service_account_uid.as_deref(), Some("sa-uid"));
        assert_eq!(
            saved.labels_map().get("tier").map(String::as_str),
            Some("critical")
        );
        assert!(!holds(&cached, "the-secret-value"), "no data: {cached:?}");
        assert!(
            cached.retained_bytes() < 1024,
            "{}",
            cached.retained_bytes()
        );

        // Data edited behind the operator's back: the cached hash is of what it holds.
        rp.data
            .as_mut()
            .expect("data")
            .insert("password".into(), ByteString(b"edited".to_vec()));
        let edited = CachedRestorePoint::of(&rp);
        assert_ne!(
            edited.saved.expect("readable").content_hash.to_string(),
            restore_point::secret_hash(&live)
        );
    }

    #[test]
    fn a_service_account_snapshot_is_cached_as_its_origin_and_version() {
        let sa = k8s_openapi::api::core::v1::ServiceAccount {
            metadata: kube::api::ObjectMeta {
                name: Some("writer".into()),
                namespace: Some("ns".into()),
                uid: Some("sa-uid".into()),
                resource_version: Some("9".into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let snap = restore_point::build_sa_snapshot(&sa, "writer-token", "ns-uid", "op");
        let cached = CachedRestorePoint::of(&snap);
        assert_eq!(cached.origin(), Some(&ObjectKey::new("ns", "writer-token")));
        assert_eq!(
            cached.written.service_account,
            Some(ObjectKey::new("ns", "writer"))
        );
        assert_eq!(cached.snapshot_resource_version.as_deref(), Some("9"));
        assert!(
            cached.saved.is_err(),
            "a snapshot is no restore point of a Secret"
        );
        assert!(!holds(&cached, "serviceaccount.json"));
    }

    #[test]
    fn the_cache_key_holds_no_copy_of_uid_or_version() {
        let cached = CachedSecret::detailed(&secret(json!({})));
        let r = cached.to_object_ref(());
        assert_eq!(
            (r.name.as_str(), r.namespace.as_deref()),
            ("db", Some("ns"))
        );
        assert_eq!(r.extra.uid, None);
        assert_eq!(r.extra.resource_version, None);
    }
}
