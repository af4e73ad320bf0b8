//! Which guard guards which object. Updated from the guard watch; no I/O. Lookups by
//! Secret or ServiceAccount are O(1), so an event about one object costs work proportional
//! to that object, never to the size of its guard.
//!
//! Several guards may cover one Secret (by name, tokenSecretName or selector). Then the
//! most protective value of each setting among them is in force, so no guard can weaken
//! another (a paused or alert-only guard cannot disarm a team's guard), and one of them,
//! the most protective, reports it (docs/architecture.md, Behaviour).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use kube::ResourceExt;
use kube::core::{Selector, SelectorExt};

use super::spec::{TargetSpec, targets_of};
use crate::api::v1alpha1::{RestoreMode, SecretGuard, SecretGuardSpec, Severity};
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

/// The guards that cover a Secret, and what is in force for it.
#[derive(Clone, Debug)]
pub struct Resolved<'a> {
    /// The guard that reports it (Events, metrics, alerts, lastIncident): the most
    /// protective of those covering it.
    pub guard: &'a GuardEntry,
    /// What is asked of it: the token of a ServiceAccount if any guard names it as one.
    pub spec: TargetSpec,
    /// The settings in force: the most protective value of each among the guards (see
    /// `Resolved::of`). Only the settings are filled in; the lists are empty.
    pub settings: SecretGuardSpec,
    /// The other guards covering it, most protective first.
    pub shared_with: Vec<&'a GuardEntry>,
}

/// Sort key of a guard covering a Secret, most protective first: not paused before
/// paused, then restore Identical, Fresh, Never, then severity critical before warning, then
/// a token target before a plain Secret one. Ties go to the first by namespace/name.
fn rank(spec: &SecretGuardSpec, target: &TargetSpec) -> (bool, u8, u8, bool) {
    (
        spec.paused,
        restore_rank(spec.restore),
        match spec.severity {
            Severity::Critical => 0,
            Severity::Warning => 1,
        },
        matches!(target, TargetSpec::Secret),
    )
}

fn restore_rank(restore: RestoreMode) -> u8 {
    match restore {
        RestoreMode::Identical => 0,
        RestoreMode::Fresh => 1,
        RestoreMode::Never => 2,
    }
}

impl<'a> Resolved<'a> {
    /// What is in force for a Secret these guards cover (None: no guard). Each setting
    /// takes its most protective value, so the result is never weaker than any one guard:
    /// - `paused` only if every guard is paused; a paused guard's other write settings
    ///   count only then (its team asked for nothing to be written);
    /// - of the guards not paused: the strongest `restore`, `revalidate` if any asks,
    ///   `recreateServiceAccount` if any asks for the ServiceAccount in force, the
    ///   shortest `restoreDelaySeconds` (each guard's default for the kind in force);
    /// - `severity` critical if any guard says critical (paused guards alert too);
    /// - a ServiceAccount's token if any guard names it as one (the first by rank).
    pub fn of(mut covering: Vec<(&'a GuardEntry, TargetSpec)>) -> Option<Self> {
        covering.sort_by(|(a, ta), (b, tb)| {
            rank(&a.spec, ta)
                .cmp(&rank(&b.spec, tb))
                .then_with(|| a.key.cmp(&b.key))
        });
        let (owner, _) = covering.first()?;
        let active: Vec<&(&GuardEntry, TargetSpec)> =
            covering.iter().filter(|(g, _)| !g.spec.paused).collect();
        let writers = if active.is_empty() {
            covering.iter().collect()
        } else {
            active
        };
        let token_of = covering.iter().find_map(|(_, t)| match t {
            TargetSpec::Token {
                service_account, ..
            } => Some(service_account.clone()),
            TargetSpec::Secret => None,
        });
        let spec = match token_of {
            Some(service_account) => TargetSpec::Token {
                recreate_service_account: writers.iter().any(|(_, t)| match t {
                    TargetSpec::Token {
                        service_account: sa,
                        recreate_service_account,
                    } => *recreate_service_account && *sa == service_account,
                    TargetSpec::Secret => false,
                }),
                service_account,
            },
            None => TargetSpec::Secret,
        };
        let token = matches!(spec, TargetSpec::Token { .. });
        let settings = SecretGuardSpec {
            service_accounts: Vec::new(),
            secrets: Vec::new(),
            secret_selector: None,
            restore: writers
                .iter()
                .map(|(g, _)| g.spec.restore)
                .min_by_key(|r| restore_rank(*r))
                .unwrap_or_default(),
            revalidate: writers.iter().any(|(g, _)| g.spec.revalidate),
            severity: if covering
                .iter()
                .any(|(g, _)| g.spec.severity == Severity::Critical)
            {
                Severity::Critical
            } else {
                Severity::Warning
            },
            paused: covering.iter().all(|(g, _)| g.spec.paused),
            restore_delay_seconds: writers
                .iter()
                .map(|(g, _)| g.spec.restore_delay_seconds_for(token))
                .min(),
        };
        Some(Resolved {
            guard: owner,
            spec,
            settings,
            shared_with: covering[1..].iter().map(|(g, _)| *g).collect(),
        })
    }
}

/// The settings in force, in words, for status and Events.
pub fn settings_in_words(settings: &SecretGuardSpec) -> String {
    let restore = match settings.restore {
        RestoreMode::Identical => "Identical",
        RestoreMode::Fresh => "Fresh",
        RestoreMode::Never => "Never",
    };
    let mut words = format!(
        "restore {restore}, severity {}, {}",
        settings.severity.as_str(),
        if settings.paused {
            "paused"
        } else {
            "not paused"
        }
    );
    if !settings.revalidate {
        words.push_str(", revalidate off");
    }
    if let Some(delay) = settings.restore_delay_seconds.filter(|d| *d > 0) {
        words.push_str(&format!(", restore delay {delay} s"));
    }
    words
}

/// The guards that name one Secret, ordered by key. Nearly always one: a B-tree map here
/// cost a node of ~0.9 KiB per guarded Secret, most of the index at 10,000.
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

    fn iter(&self) -> impl Iterator<Item = &(ObjectKey, TargetSpec)> {
        self.0.iter()
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
    /// Secret → the guards that name it.
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

    /// The guards that cover a Secret: those naming it, and those whose secretSelector
    /// matches `labels` (the live Secret's, or its restore point's when it was deleted),
    /// merged into what is in force (`Resolved::of`). None: no guard covers it.
    pub fn resolve(
        &self,
        secret: &ObjectKey,
        labels: Option<&BTreeMap<String, String>>,
    ) -> Option<Resolved<'_>> {
        let mut covering: Vec<(&GuardEntry, TargetSpec)> = self
            .secrets
            .get(secret)
            .into_iter()
            .flat_map(Owners::iter)
            .filter_map(|(g, spec)| Some((self.guards.get(g)?, spec.clone())))
            .collect();
        if let Some(labels) = labels
            && let Some(selectors) = self.selectors.get(&secret.namespace)
        {
            for (g, sel) in selectors {
                // A guard that names it as well asks what its name entry says.
                if sel.matches(labels)
                    && !covering.iter().any(|(e, _)| e.key == *g)
                    && let Some(entry) = self.guards.get(g)
                {
                    covering.push((entry, TargetSpec::Secret));
                }
            }
        }
        Resolved::of(covering)
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
    pub fn target_keys(&self) -> impl Iterator<Item = &ObjectKey> {
        self.secrets.keys()
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
        assert!(idx.target_keys().next().is_none());
    }

    /// Guards `name` in ns naming Secret `db`, with these settings.
    fn naming_db(
        name: &str,
        restore: RestoreMode,
        severity: Severity,
        paused: bool,
    ) -> SecretGuard {
        let mut g = guard("ns", name, &[], &["db"]);
        g.spec.restore = restore;
        g.spec.severity = severity;
        g.spec.paused = paused;
        g
    }

    fn resolved_db(guards: &[SecretGuard]) -> (String, SecretGuardSpec, Vec<String>) {
        let mut idx = Index::default();
        for g in guards {
            idx.upsert(g);
        }
        let r = idx
            .resolve(&ObjectKey::new("ns", "db"), None)
            .expect("covered");
        let others = r.shared_with.iter().map(|g| g.key.name.clone()).collect();
        (r.guard.key.name.clone(), r.settings, others)
    }

    #[test]
    fn the_most_protective_guard_reports_a_shared_secret_whatever_its_name() {
        use RestoreMode::{Fresh, Identical, Never};
        use Severity::{Critical, Warning};
        // Guards as (name, restore, severity, paused), and the one that reports it.
        type Case<'a> = (&'a [(&'a str, RestoreMode, Severity, bool)], &'a str);
        let cases: &[Case] = &[
            (
                &[
                    ("team", Identical, Critical, false),
                    ("aaa", Identical, Critical, true),
                ],
                "team",
            ),
            (
                &[
                    ("team", Identical, Critical, false),
                    ("aaa", Never, Critical, false),
                ],
                "team",
            ),
            (
                &[
                    ("team", Fresh, Critical, false),
                    ("aaa", Never, Critical, false),
                ],
                "team",
            ),
            (
                &[
                    ("team", Identical, Warning, false),
                    ("aaa", Fresh, Critical, false),
                ],
                "team",
            ),
            (
                &[
                    ("team", Identical, Critical, false),
                    ("aaa", Identical, Warning, false),
                ],
                "team",
            ),
            (
                &[
                    ("team", Never, Warning, false),
                    ("aaa", Identical, Critical, true),
                ],
                "team",
            ),
            (
                &[
                    ("b", Identical, Critical, false),
                    ("a", Identical, Critical, false),
                ],
                "a",
            ),
            (
                &[
                    ("b", Never, Critical, true),
                    ("a", Fresh, Critical, true),
                    ("c", Identical, Warning, true),
                ],
                "c",
            ),
        ];
        for (guards, owner) in cases {
            let guards: Vec<SecretGuard> = guards
                .iter()
                .map(|(n, r, s, p)| naming_db(n, *r, *s, *p))
                .collect();
            let (got, _, others) = resolved_db(&guards);
            assert_eq!(got, *owner, "{guards:?}");
            assert_eq!(others.len(), guards.len() - 1);
            assert!(!others.contains(&got));
        }
    }

    #[test]
    fn each_setting_in_force_is_the_most_protective_among_the_guards() {
        use RestoreMode::{Fresh, Identical, Never};
        use Severity::{Critical, Warning};
        // A paused guard cannot disarm an active one, and its restore setting does not
        // count while another guard is active (its team asked for nothing to be written).
        let (_, s, _) = resolved_db(&[
            naming_db("team", Never, Warning, false),
            naming_db("aaa", Identical, Critical, true),
        ]);
        assert_eq!((s.paused, s.restore, s.severity), (false, Never, Critical));
        let (_, s, _) = resolved_db(&[
            naming_db("team", Identical, Warning, false),
            naming_db("aaa", Never, Critical, false),
        ]);
        assert_eq!(
            (s.paused, s.restore, s.severity),
            (false, Identical, Critical)
        );
        // Paused only when all are; then the strongest restore among them.
        let (_, s, _) = resolved_db(&[
            naming_db("a", Never, Warning, true),
            naming_db("b", Fresh, Warning, true),
        ]);
        assert_eq!((s.paused, s.restore, s.severity), (true, Fresh, Warning));
        // revalidate if any active guard asks.
        let mut quiet = naming_db("a", Identical, Critical, false);
        quiet.spec.revalidate = false;
        let (_, s, _) = resolved_db(&[quiet.clone(), naming_db("b", Never, Warning, false)]);
        assert!(s.revalidate);
        let (_, s, _) = resolved_db(&[quiet]);
        assert!(!s.revalidate);
        assert_eq!(
            settings_in_words(&s),
            "restore Identical, severity critical, not paused, revalidate off, restore delay 2 s"
        );
    }

    #[test]
    fn the_shortest_restore_delay_is_in_force_each_guard_counting_its_default_for_the_kind() {
        let after = |name: &str, delay: Option<i32>, paused: bool| {
            let mut g = naming_db(name, RestoreMode::Identical, Severity::Critical, paused);
            g.spec.restore_delay_seconds = delay;
            g
        };
        let delay = |guards: &[SecretGuard]| resolved_db(guards).1.restore_delay_seconds;
        assert_eq!(
            delay(&[after("a", None, false)]),
            Some(2),
            "a Secret's default"
        );
        assert_eq!(delay(&[after("a", Some(30), false)]), Some(30));
        assert_eq!(
            delay(&[after("a", Some(30), false), after("b", None, false)]),
            Some(2),
            "no guard makes a restore wait longer than another asks"
        );
        assert_eq!(
            delay(&[after("a", Some(30), false), after("b", Some(0), true)]),
            Some(30),
            "a paused guard's setting counts only when all are paused"
        );
        // Named as a token by another guard: a token's default (at once) counts for it.
        let mut token = guard("ns", "token", &[], &[]);
        token.spec.service_accounts = vec![crate::api::v1alpha1::ServiceAccountTarget {
            name: "writer".into(),
            token_secret_name: Some("db".into()),
            recreate_service_account: false,
        }];
        assert_eq!(delay(&[after("a", Some(30), false), token]), Some(0));
    }

    #[test]
    fn a_token_guard_makes_a_shared_secret_a_token_and_a_selector_guard_shares_too() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
        let named = naming_db("named", RestoreMode::Identical, Severity::Critical, false);
        let mut token = guard("ns", "token", &[], &[]);
        token.spec.service_accounts = vec![crate::api::v1alpha1::ServiceAccountTarget {
            name: "writer".into(),
            token_secret_name: Some("db".into()),
            recreate_service_account: true,
        }];
        token.spec.paused = true;
        let mut selector = guard("ns", "sel", &[], &[]);
        selector.spec.secret_selector = Some(LabelSelector {
            match_labels: Some([("tier".to_owned(), "critical".to_owned())].into()),
            match_expressions: None,
        });
        let mut idx = Index::default();
        for g in [&named, &token, &selector] {
            idx.upsert(g);
        }
        let labels = BTreeMap::from([("tier".to_owned(), "critical".to_owned())]);
        let r = idx
            .resolve(&ObjectKey::new("ns", "db"), Some(&labels))
            .expect("covered");
        assert_eq!(r.guard.key.name, "named");
        assert_eq!(
            r.spec,
            TargetSpec::Token {
                service_account: "writer".into(),
                // Asked only by a paused guard: not in force while another is active.
                recreate_service_account: false,
            }
        );
        let others: Vec<&str> = r.shared_with.iter().map(|g| g.key.name.as_str()).collect();
        assert_eq!(others, ["sel", "token"]);
        let r = idx
            .resolve(&ObjectKey::new("ns", "db"), None)
            .expect("named");
        assert_eq!(r.shared_with.len(), 1, "the selector needs labels");
    }
}
