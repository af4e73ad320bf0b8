//! Which guard guards which object. Updated from the guard watch; no I/O. Lookups by
//! Secret or ServiceAccount are O(1), so an event about one object costs work proportional
//! to that object, never to the size of its guard.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::spec::{TargetSpec, targets_of};
use crate::api::v1alpha1::{SecretGuard, SecretGuardSpec};
pub use crate::object_key::ObjectKey;

/// A guard as the index holds it.
#[derive(Clone, Debug)]
pub struct GuardEntry {
    pub key: ObjectKey,
    pub uid: String,
    pub generation: i64,
    pub spec: SecretGuardSpec,
    /// The Secrets it guards, in spec order.
    pub targets: Vec<(ObjectKey, TargetSpec)>,
}

/// The guard that owns a target, and what it asks.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    pub guard: &'a GuardEntry,
    pub spec: TargetSpec,
}

/// The guards that name one Secret, ordered by key. Nearly always one: a B-tree map here
/// cost a node of ~0.9 KiB per guarded Secret, a third of the index at 10,000.
#[derive(Debug, Default)]
struct Owners(Vec<(ObjectKey, TargetSpec)>);

impl Owners {
    fn insert(&mut self, guard: ObjectKey, spec: TargetSpec) {
        match self.0.binary_search_by(|(k, _)| k.cmp(&guard)) {
            Ok(i) => self.0[i].1 = spec,
            Err(i) => {
                self.0.reserve_exact(1);
                self.0.insert(i, (guard, spec));
            }
        }
    }

    fn remove(&mut self, guard: &ObjectKey) {
        self.0.retain(|(k, _)| k != guard);
    }

    fn first(&self) -> Option<&(ObjectKey, TargetSpec)> {
        self.0.first()
    }

    fn specs(&self) -> impl Iterator<Item = &TargetSpec> {
        self.0.iter().map(|(_, s)| s)
    }

    fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

#[derive(Debug, Default)]
pub struct Index {
    guards: HashMap<ObjectKey, GuardEntry>,
    /// Secret → the guards that name it. The first (ordered by key) owns it.
    secrets: HashMap<ObjectKey, Owners>,
    /// ServiceAccount → token Secrets guarded for it.
    service_accounts: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Namespace → guards with a secretSelector there.
    selectors: HashMap<String, BTreeMap<ObjectKey, Selector>>,
}

impl Index {
    /// Add or update a guard. Returns every Secret whose guarding may have changed: the
    /// guard's old targets and its new ones.
    pub fn upsert(&mut self, guard: &SecretGuard) -> Vec<ObjectKey> {
        let key = ObjectKey::new(guard.namespace().unwrap_or_default(), guard.name_any());
        let mut touched = self.remove(&key);
        let entry = GuardEntry {
            key: key.clone(),
            uid: guard.uid().unwrap_or_default(),
            generation: guard.metadata.generation.unwrap_or_default(),
            spec: guard.spec.clone(),
            targets: targets_of(&key.namespace, &guard.spec),
        };
        for (secret, spec) in &entry.targets {
            self.secrets
                .entry(secret.clone())
                .or_default()
                .insert(key.clone(), spec.clone());
            if let TargetSpec::Token {
                service_account, ..
            } = spec
            {
                self.service_accounts
                    .entry(ObjectKey::new(&key.namespace, service_account))
                    .or_default()
                    .insert(secret.clone());
            }
            touched.push(secret.clone());
        }
        if let Some(sel) = guard
            .spec
            .secret_selector
            .clone()
            .and_then(|s| Selector::try_from(s).ok())
        {
            self.selectors
                .entry(key.namespace.clone())
                .or_default()
                .insert(key.clone(), sel);
        }
        self.guards.insert(key, entry);
        touched.sort();
        touched.dedup();
        touched
    }

    /// Forget a guard. Returns the Secrets it guarded.
    pub fn remove(&mut self, key: &ObjectKey) -> Vec<ObjectKey> {
        let Some(old) = self.guards.remove(key) else {
            return Vec::new();
        };
        if let Some(sels) = self.selectors.get_mut(&key.namespace) {
            sels.remove(key);
            if sels.is_empty() {
                self.selectors.remove(&key.namespace);
            }
        }
        let mut touched = Vec::with_capacity(old.targets.len());
        for (secret, spec) in old.targets {
            if let Some(owners) = self.secrets.get_mut(&secret) {
                owners.remove(key);
                if owners.is_empty() {
                    self.secrets.remove(&secret);
                }
            }
            if let TargetSpec::Token {
                service_account, ..
            } = spec
            {
                let sa = ObjectKey::new(&key.namespace, service_account);
                let still_guarded = self.secrets.get(&secret).is_some_and(|owners| {
                    owners.specs().any(|s| matches!(s, TargetSpec::Token { service_account: n, .. } if *n == sa.name))
                });
                if !still_guarded && let Some(set) = self.service_accounts.get_mut(&sa) {
                    set.remove(&secret);
                    if set.is_empty() {
                        self.service_accounts.remove(&sa);
                    }
                }
            }
            touched.push(secret);
        }
        touched
    }

    /// The guard that owns a Secret: one naming it (the first by key when several do), else
    /// one whose secretSelector matches `labels` (the live Secret's, or its restore point's
    /// when it was deleted).
    pub fn resolve(
        &self,
        secret: &ObjectKey,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<Resolved<'_>> {
        if let Some((guard, spec)) = self.secrets.get(secret).and_then(Owners::first) {
            return Some(Resolved {
                guard: self.guards.get(guard)?,
                spec: spec.clone(),
            });
        }
        let labels = labels?;
        let (guard, _) = self
            .selectors
            .get(&secret.namespace)?
            .iter()
            .find(|(_, sel)| sel.matches(labels))?;
        Some(Resolved {
            guard: self.guards.get(guard)?,
            spec: TargetSpec::Secret,
        })
    }

    /// Whether some guard in the namespace selects Secrets by label.
    pub fn has_selectors(&self, namespace: &str) -> bool {
        self.selectors.contains_key(namespace)
    }

    /// The label selector (query string) of a guard, if it has one.
    pub fn selector_of(&self, guard: &ObjectKey) -> Option<String> {
        self.selectors
            .get(&guard.namespace)?
            .get(guard)
            .map(|s| s.to_string())
    }

    /// Token Secrets guarded for a ServiceAccount.
    pub fn tokens_of(&self, service_account: &ObjectKey) -> Vec<ObjectKey> {
        self.service_accounts
            .get(service_account)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default()
    }

    pub fn guard(&self, key: &ObjectKey) -> Option<&GuardEntry> {
        self.guards.get(key)
    }

    pub fn guards(&self) -> impl Iterator<Item = &GuardEntry> {
        self.guards.values()
    }

    /// Every guarded Secret, for the audit.
    pub fn all_targets(&self) -> Vec<ObjectKey> {
        self.secrets.keys().cloned().collect()
    }

    /// Guarded Secrets in one namespace (namespace events are rare; this scans).
    pub fn targets_in(&self, namespace: &str) -> Vec<ObjectKey> {
        self.secrets
            .keys()
            .filter(|k| k.namespace == namespace)
            .cloned()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::fixtures::{self, spec};

    fn guard(ns: &str, name: &str, sas: &[&str], secrets: &[&str]) -> SecretGuard {
        fixtures::guard(ns, name, spec(sas, secrets))
    }

    #[test]
    fn a_guard_resolves_its_tokens_and_secrets() {
        let mut idx = Index::default();
        let touched = idx.upsert(&guard("ns", "g", &["writer"], &["db"]));
        assert_eq!(
            touched,
            vec![
                ObjectKey::new("ns", "db"),
                ObjectKey::new("ns", "writer-token")
            ]
        );
        let r = idx
            .resolve(&ObjectKey::new("ns", "writer-token"), None)
            .expect("token");
        assert_eq!(r.guard.key, ObjectKey::new("ns", "g"));
        assert!(
            matches!(r.spec, TargetSpec::Token { ref service_account, .. } if service_account == "writer")
        );
        assert_eq!(
            idx.tokens_of(&ObjectKey::new("ns", "writer")),
            vec![ObjectKey::new("ns", "writer-token")]
        );
        assert!(
            idx.resolve(&ObjectKey::new("other", "db"), None).is_none(),
            "namespaced"
        );
    }

    #[test]
    fn updating_a_guard_touches_old_and_new_targets_and_forgets_dropped_ones() {
        let mut idx = Index::default();
        idx.upsert(&guard("ns", "g", &["a"], &[]));
        let touched = idx.upsert(&guard("ns", "g", &["b"], &[]));
        assert_eq!(
            touched,
            vec![
                ObjectKey::new("ns", "a-token"),
                ObjectKey::new("ns", "b-token")
            ]
        );
        assert!(
            idx.resolve(&ObjectKey::new("ns", "a-token"), None)
                .is_none()
        );
        assert!(idx.tokens_of(&ObjectKey::new("ns", "a")).is_empty());
        assert!(
            idx.resolve(&ObjectKey::new("ns", "b-token"), None)
                .is_some()
        );
    }

    #[test]
    fn a_selector_guard_resolves_secrets_by_their_labels() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let mut g = guard("ns", "sel", &[], &[]);
        g.spec.secret_selector = Some(LabelSelector {
            match_labels: Some([("tier".to_owned(), "critical".to_owned())].into()),
            match_expressions: None,
        });
        let mut idx = Index::default();
        idx.upsert(&g);
        let critical = BTreeMap::from([("tier".to_owned(), "critical".to_owned())]);
        let other = BTreeMap::from([("tier".to_owned(), "low".to_owned())]);
        let key = ObjectKey::new("ns", "db");
        assert_eq!(
            idx.resolve(&key, Some(&critical))
                .expect("selected")
                .guard
                .key
                .name,
            "sel"
        );
        assert!(idx.resolve(&key, Some(&other)).is_none());
        assert!(idx.resolve(&key, None).is_none());
        assert!(
            idx.resolve(&ObjectKey::new("other", "db"), Some(&critical))
                .is_none()
        );
        assert_eq!(
            idx.selector_of(&ObjectKey::new("ns", "sel")).as_deref(),
            Some("tier=critical")
        );
        idx.remove(&ObjectKey::new("ns", "sel"));
        assert!(!idx.has_selectors("ns"));
        assert!(idx.resolve(&key, Some(&critical)).is_none());
    }

    #[test]
    fn removing_one_of_two_guards_keeps_the_shared_target_guarded() {
        let mut idx = Index::default();
        idx.upsert(&guard("ns", "a", &["sa"], &[]));
        idx.upsert(&guard("ns", "b", &["sa"], &[]));
        let key = ObjectKey::new("ns", "sa-token");
        assert_eq!(idx.resolve(&key, None).expect("owned").guard.key.name, "a");
        assert_eq!(idx.remove(&ObjectKey::new("ns", "a")), vec![key.clone()]);
        assert_eq!(
            idx.resolve(&key, None).expect("still owned").guard.key.name,
            "b"
        );
        assert_eq!(
            idx.tokens_of(&ObjectKey::new("ns", "sa")),
            vec![key.clone()]
        );
        idx.remove(&ObjectKey::new("ns", "b"));
        assert!(idx.resolve(&key, None).is_none());
        assert!(idx.all_targets().is_empty());
    }
}
