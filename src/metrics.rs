//! Prometheus metrics (OpenMetrics, prometheus-client). Label sets are small and bounded:
//! namespace, guard, kind, reason or outcome. Per-object series (with a `name` label) exist
//! only while that object is unhealthy, and are removed when it is fixed. Counters matter:
//! a restore can finish between two scrapes, and the alert must still fire. Every series
//! labelled with a guard goes when the guard goes (`forget_guard`), so guard churn does
//! not grow what is exported.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::process_metrics::ProcessCollector;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct GuardKind {
    pub namespace: String,
    pub guard: String,
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Incident {
    pub namespace: String,
    pub guard: String,
    pub kind: String,
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Restore {
    pub namespace: String,
    pub guard: String,
    pub kind: String,
    /// identical | fresh | failed
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Object {
    pub namespace: String,
    pub guard: String,
    pub kind: String,
    pub name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Kind {
    pub kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Guard {
    pub namespace: String,
    pub guard: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Work {
    /// target | status
    pub work: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorReason {
    pub reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Outcome {
    pub outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Cache {
    /// guards | secrets | restore_points | service_accounts | namespaces
    pub cache: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Unreadable {
    /// NewerFormat | Unreadable (`restore_point::RestorePointError::kind`)
    pub reason: String,
}

/// The reasons `restore_points_unreadable` counts by (always exposed, 0 when none).
pub const UNREADABLE_REASONS: [&str; 2] = ["NewerFormat", "Unreadable"];

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct Build {
    pub version: String,
    /// The git commit it was built from (build.rs), or "unknown".
    pub revision: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ApiVerb {
    /// get | list | watch | post | patch | put | delete
    pub verb: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct QueueLane {
    /// urgent | background
    pub lane: String,
}

/// What the client-side limit (`throttle`) counts; shared with the client's service stack,
/// which exists before the rest of the metrics' users.
#[derive(Clone, Debug, Default)]
pub struct ApiMetrics {
    pub requests: Family<ApiVerb, Counter>,
    pub throttled_seconds: Counter<f64, AtomicU64>,
}

fn duration_buckets() -> Histogram {
    // 1 ms .. ~33 s: restores are expected in milliseconds, a slow apiserver in seconds.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.001, 2.0, 16,
    ))
}

pub struct Metrics {
    registry: Registry,
    /// The process metrics, unprefixed (`crate::process_metrics`).
    process: Registry,
    pub guarded_objects: Family<GuardKind, Gauge>,
    pub missing_objects: Family<GuardKind, Gauge>,
    pub incidents: Family<Incident, Counter>,
    pub restores: Family<Restore, Counter>,
    pub restore_duration: Family<Kind, Histogram, fn() -> Histogram>,
    pub object_missing: Family<Object, Gauge>,
    pub restore_failing: Family<Object, Gauge>,
    pub token_invalid: Family<Object, Gauge>,
    pub token_not_populated: Family<Object, Gauge>,
    pub unprotected: Family<Object, Gauge>,
    pub token_last_used: Family<Object, Gauge<f64, AtomicU64>>,
    pub reconcile_duration: Family<Work, Histogram, fn() -> Histogram>,
    pub reconcile_errors: Family<ErrorReason, Counter>,
    pub audit_drift: Family<Guard, Counter>,
    /// 1 while the guard is Ready (guarding as written), 0 while it is not (InvalidSpec,
    /// TargetConflict): alert SecretGuardNotReady.
    pub guard_ready: Family<Guard, Gauge>,
    pub alerts_sent: Family<Outcome, Counter>,
    pub leader: Gauge,
    pub cached_objects: Family<Cache, Gauge>,
    pub cached_bytes: Family<Cache, Gauge>,
    pub restore_points_unreadable: Family<Unreadable, Gauge>,
    pub build_info: Family<Build, Gauge>,
    pub api: ApiMetrics,
    pub queue_depth: Family<QueueLane, Gauge>,
    pub restore_points_migrated: Counter,
    /// The counter series of each guard, to forget with it.
    counted: Mutex<HashMap<Guard, Counted>>,
    /// The restore points (by name) that cannot be read, and why: what
    /// `restore_points_unreadable` counts.
    unreadable: Mutex<HashMap<String, &'static str>>,
}

/// Counter series of one guard.
#[derive(Default)]
struct Counted {
    incidents: HashSet<Incident>,
    restores: HashSet<Restore>,
}

/// Every metric name as scraped (for tests of dashboards and rules).
pub const NAMES: &[&str] = &[
    "secretguard_guarded_objects",
    "secretguard_missing_objects",
    "secretguard_incidents_total",
    "secretguard_restores_total",
    "secretguard_restore_duration_seconds",
    "secretguard_object_missing",
    "secretguard_restore_failing",
    "secretguard_token_invalid",
    "secretguard_token_not_populated",
    "secretguard_unprotected",
    "secretguard_token_last_used_timestamp_seconds",
    "secretguard_reconcile_duration_seconds",
    "secretguard_reconcile_errors_total",
    "secretguard_audit_drift_total",
    "secretguard_guard_ready",
    "secretguard_alertmanager_notifications_total",
    "secretguard_leader",
    "secretguard_cached_objects",
    "secretguard_cached_bytes",
    "secretguard_restore_points_unreadable",
    "secretguard_build_info",
    "secretguard_api_requests_total",
    "secretguard_api_throttled_seconds_total",
    "secretguard_queue_depth",
    "secretguard_restore_points_migrated_total",
];

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("secretguard");
        let m = Metrics {
            guarded_objects: Family::default(),
            missing_objects: Family::default(),
            incidents: Family::default(),
            restores: Family::default(),
            restore_duration: Family::new_with_constructor(duration_buckets),
            object_missing: Family::default(),
            restore_failing: Family::default(),
            token_invalid: Family::default(),
            token_not_populated: Family::default(),
            unprotected: Family::default(),
            token_last_used: Family::default(),
            reconcile_duration: Family::new_with_constructor(duration_buckets),
            reconcile_errors: Family::default(),
            audit_drift: Family::default(),
            guard_ready: Family::default(),
            alerts_sent: Family::default(),
            leader: Gauge::default(),
            cached_objects: Family::default(),
            cached_bytes: Family::default(),
            restore_points_unreadable: Family::default(),
            build_info: Family::default(),
            api: ApiMetrics::default(),
            queue_depth: Family::default(),
            restore_points_migrated: Counter::default(),
            counted: Mutex::default(),
            unreadable: Mutex::default(),
            registry: Registry::default(),
            process: Registry::default(),
        };
        registry.register(
            "guarded_objects",
            "Objects guarded, by guard and kind",
            m.guarded_objects.clone(),
        );
        registry.register(
            "missing_objects",
            "Guarded objects missing now, by guard and kind",
            m.missing_objects.clone(),
        );
        registry.register("incidents", "Incidents by reason", m.incidents.clone());
        registry.register(
            "restores",
            "Restores by outcome: identical, fresh or failed",
            m.restores.clone(),
        );
        registry.register(
            "restore_duration_seconds",
            "From seeing a guarded object missing to it existing again",
            m.restore_duration.clone(),
        );
        registry.register(
            "object_missing",
            "1 while this guarded object is missing",
            m.object_missing.clone(),
        );
        registry.register(
            "restore_failing",
            "1 while restoring this object fails",
            m.restore_failing.clone(),
        );
        registry.register(
            "token_invalid",
            "1 while this guarded token carries kubernetes.io/legacy-token-invalid-since",
            m.token_invalid.clone(),
        );
        registry.register(
            "token_not_populated",
            "1 while this guarded token Secret stays empty past the deadline",
            m.token_not_populated.clone(),
        );
        registry.register(
            "unprotected",
            "1 while this guarded object exists but its restore point cannot be kept current (too large, a failing save, a newer format)",
            m.unprotected.clone(),
        );
        registry.register(
            "token_last_used_timestamp_seconds",
            "Last use of a guarded token (kubernetes.io/legacy-token-last-used, else creation), only for tokens unused for 30 days or more",
            m.token_last_used.clone(),
        );
        registry.register(
            "reconcile_duration_seconds",
            "Time to reconcile one unit of work",
            m.reconcile_duration.clone(),
        );
        registry.register(
            "reconcile_errors",
            "Failed reconciles by error reason",
            m.reconcile_errors.clone(),
        );
        registry.register(
            "audit_drift",
            "Drift the periodic audit found and repaired",
            m.audit_drift.clone(),
        );
        registry.register(
            "guard_ready",
            "1 while the guard is Ready (guarding as written), 0 while it is not",
            m.guard_ready.clone(),
        );
        registry.register(
            "alertmanager_notifications",
            "Alert notifications pushed to Alertmanager, by outcome",
            m.alerts_sent.clone(),
        );
        registry.register(
            "leader",
            "1 while this process is the leader",
            m.leader.clone(),
        );
        registry.register(
            "cached_objects",
            "Objects in each of the operator's caches",
            m.cached_objects.clone(),
        );
        registry.register(
            "cached_bytes",
            "Approximate bytes held by the Secret and restore-point caches (never Secret data)",
            m.cached_bytes.clone(),
        );
        registry.register(
            "restore_points_unreadable",
            "Restore points this version cannot read, by reason: NewerFormat (a newer version wrote it: left alone) or Unreadable (rewritten from the live Secret)",
            m.restore_points_unreadable.clone(),
        );
        for reason in UNREADABLE_REASONS {
            m.restore_points_unreadable
                .get_or_create(&Unreadable {
                    reason: reason.into(),
                })
                .set(0);
        }
        registry.register("build_info", "Build information", m.build_info.clone());
        registry.register(
            "api_requests",
            "Requests sent to the apiserver, by verb (watch: a watch started)",
            m.api.requests.clone(),
        );
        registry.register(
            "api_throttled_seconds",
            "Time requests waited for the client-side limit (--api-qps, --api-burst)",
            m.api.throttled_seconds.clone(),
        );
        registry.register(
            "queue_depth",
            "Work waiting, by lane: urgent (something happened to a guarded object) or background",
            m.queue_depth.clone(),
        );
        registry.register(
            "restore_points_migrated",
            "Restore points and ServiceAccount snapshots of an earlier format rewritten in the current one (--migration-rate)",
            m.restore_points_migrated.clone(),
        );
        m.build_info
            .get_or_create(&Build {
                version: env!("CARGO_PKG_VERSION").into(),
                revision: env!("SECRETGUARD_REVISION").into(),
            })
            .set(1);
        let mut process = Registry::default();
        process.register_collector(Box::new(ProcessCollector));
        Metrics {
            registry,
            process,
            ..m
        }
    }

    /// The OpenMetrics text exposition.
    pub fn encode(&self) -> String {
        use prometheus_client::encoding::text;
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = text::encode_registry(&mut out, &self.registry);
        let _ = text::encode_registry(&mut out, &self.process);
        let _ = text::encode_eof(&mut out);
        out
    }

    fn counted(&self, namespace: &str, guard: &str, note: impl FnOnce(&mut Counted)) {
        let mut counted = self.counted.lock().unwrap_or_else(|e| e.into_inner());
        note(
            counted
                .entry(Guard {
                    namespace: namespace.into(),
                    guard: guard.into(),
                })
                .or_default(),
        );
    }

    /// One more incident.
    pub fn count_incident(&self, labels: Incident) {
        self.incidents.get_or_create(&labels).inc();
        self.counted(&labels.namespace.clone(), &labels.guard.clone(), |c| {
            c.incidents.insert(labels);
        });
    }

    /// One more restore.
    pub fn count_restore(&self, labels: Restore) {
        self.restores.get_or_create(&labels).inc();
        self.counted(&labels.namespace.clone(), &labels.guard.clone(), |c| {
            c.restores.insert(labels);
        });
    }

    /// Forget every series labelled with this guard: it was deleted. `kinds`: the target
    /// kinds its gauges may be labelled with.
    pub fn forget_guard(&self, namespace: &str, guard: &str, kinds: &[&str]) {
        let key = Guard {
            namespace: namespace.into(),
            guard: guard.into(),
        };
        let counted = self
            .counted
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(&key)
            .unwrap_or_default();
        for labels in &counted.incidents {
            self.incidents.remove(labels);
        }
        for labels in &counted.restores {
            self.restores.remove(labels);
        }
        self.audit_drift.remove(&key);
        self.guard_ready.remove(&key);
        for kind in kinds {
            let labels = GuardKind {
                namespace: namespace.into(),
                guard: guard.into(),
                kind: (*kind).into(),
            };
            self.guarded_objects.remove(&labels);
            self.missing_objects.remove(&labels);
        }
    }

    /// Note whether the restore point `name` can be read (`None`), or why not; deleted
    /// points are noted as readable.
    pub fn note_restore_point(&self, name: &str, unreadable: Option<&'static str>) {
        let mut points = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        let changed = match unreadable {
            Some(reason) => points.insert(name.to_owned(), reason) != Some(reason),
            None => points.remove(name).is_some(),
        };
        if changed {
            self.export_unreadable(&points);
        }
    }

    /// Count the unreadable restore points afresh (after a re-list, where deletions come
    /// without events): `points`, every point's name and why it cannot be read.
    pub fn recount_restore_points(
        &self,
        points: impl IntoIterator<Item = (String, Option<&'static str>)>,
    ) {
        let mut held = self.unreadable.lock().unwrap_or_else(|e| e.into_inner());
        *held = points
            .into_iter()
            .filter_map(|(name, why)| Some((name, why?)))
            .collect();
        self.export_unreadable(&held);
    }

    fn export_unreadable(&self, points: &HashMap<String, &'static str>) {
        for reason in UNREADABLE_REASONS {
            let n = points.values().filter(|r| **r == reason).count();
            self.restore_points_unreadable
                .get_or_create(&Unreadable {
                    reason: reason.into(),
                })
                .set(i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    /// Forget every per-object series of one object (it is healthy, or no longer guarded).
    pub fn forget_object(&self, namespace: &str, guard: &str, kind: &str, name: &str) {
        let o = Object {
            namespace: namespace.into(),
            guard: guard.into(),
            kind: kind.into(),
            name: name.into(),
        };
        self.object_missing.remove(&o);
        self.restore_failing.remove(&o);
        self.token_invalid.remove(&o);
        self.token_not_populated.remove(&o);
        self.unprotected.remove(&o);
        self.token_last_used.remove(&o);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_registered_metric_is_listed_in_names_and_exposed() {
        let m = Metrics::new();
        let o = Object {
            namespace: "ns".into(),
            guard: "g".into(),
            kind: "Secret".into(),
            name: "db".into(),
        };
        // Touch every family so it is exposed.
        m.guarded_objects
            .get_or_create(&GuardKind {
                namespace: "ns".into(),
                guard: "g".into(),
                kind: "Secret".into(),
            })
            .set(1);
        m.missing_objects
            .get_or_create(&GuardKind {
                namespace: "ns".into(),
                guard: "g".into(),
                kind: "Secret".into(),
            })
            .set(0);
        m.count_incident(Incident {
            namespace: "ns".into(),
            guard: "g".into(),
            kind: "Secret".into(),
            reason: "SecretDeleted".into(),
        });
        m.count_restore(Restore {
            namespace: "ns".into(),
            guard: "g".into(),
            kind: "Secret".into(),
            outcome: "identical".into(),
        });
        m.restore_duration
            .get_or_create(&Kind {
                kind: "Secret".into(),
            })
            .observe(0.01);
        m.object_missing.get_or_create(&o).set(1);
        m.restore_failing.get_or_create(&o).set(1);
        m.token_invalid.get_or_create(&o).set(1);
        m.token_not_populated.get_or_create(&o).set(1);
        m.unprotected.get_or_create(&o).set(1);
        m.token_last_used.get_or_create(&o).set(1.0);
        m.reconcile_duration
            .get_or_create(&Work {
                work: "target".into(),
            })
            .observe(0.01);
        m.reconcile_errors
            .get_or_create(&ErrorReason {
                reason: "KubeAPIError".into(),
            })
            .inc();
        m.audit_drift
            .get_or_create(&Guard {
                namespace: "ns".into(),
                guard: "g".into(),
            })
            .inc();
        m.guard_ready
            .get_or_create(&Guard {
                namespace: "ns".into(),
                guard: "g".into(),
            })
            .set(0);
        m.alerts_sent
            .get_or_create(&Outcome {
                outcome: "sent".into(),
            })
            .inc();
        m.leader.set(1);
        let cache = Cache {
            cache: "secrets".into(),
        };
        m.cached_objects.get_or_create(&cache).set(1);
        m.cached_bytes.get_or_create(&cache).set(100);
        m.api
            .requests
            .get_or_create(&ApiVerb { verb: "get".into() })
            .inc();
        m.api.throttled_seconds.inc_by(0.5);
        m.queue_depth
            .get_or_create(&QueueLane {
                lane: "urgent".into(),
            })
            .set(0);
        let text = m.encode();
        for name in NAMES {
            assert!(
                text.contains(&format!("\n{name}")) || text.contains(&format!("{name}{{")),
                "{name} not exposed:\n{text}"
            );
        }
        for name in crate::process_metrics::NAMES {
            assert!(text.contains(&format!("\n{name} ")), "{name} not exposed");
        }
        assert_eq!(
            text.matches("# EOF").count(),
            1,
            "one end of the exposition"
        );
        let exposed: std::collections::BTreeSet<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# TYPE "))
            .filter_map(|l| l.split_whitespace().next())
            .filter(|name| !name.starts_with("process_"))
            .collect();
        assert_eq!(
            exposed.len(),
            NAMES.len(),
            "NAMES lists exactly the registered metrics: {exposed:?}"
        );
        m.forget_object("ns", "g", "Secret", "db");
        assert!(
            !m.encode().contains("name=\"db\""),
            "per-object series are removed"
        );
    }

    #[test]
    fn a_deleted_guard_takes_every_series_labelled_with_it() {
        let m = Metrics::new();
        for guard in ["gone", "kept"] {
            for kind in ["Secret", "ServiceAccountToken"] {
                m.count_incident(Incident {
                    namespace: "ns".into(),
                    guard: guard.into(),
                    kind: kind.into(),
                    reason: "SecretDeleted".into(),
                });
                m.count_restore(Restore {
                    namespace: "ns".into(),
                    guard: guard.into(),
                    kind: kind.into(),
                    outcome: "failed".into(),
                });
                m.guarded_objects
                    .get_or_create(&GuardKind {
                        namespace: "ns".into(),
                        guard: guard.into(),
                        kind: kind.into(),
                    })
                    .set(1);
            }
            m.audit_drift
                .get_or_create(&Guard {
                    namespace: "ns".into(),
                    guard: guard.into(),
                })
                .inc();
            m.guard_ready
                .get_or_create(&Guard {
                    namespace: "ns".into(),
                    guard: guard.into(),
                })
                .set(1);
        }
        m.forget_guard("ns", "gone", &["Secret", "ServiceAccountToken"]);
        let text = m.encode();
        assert!(!text.contains("guard=\"gone\""), "{text}");
        assert_eq!(text.matches("guard=\"kept\"").count(), 8, "{text}");
    }
}
