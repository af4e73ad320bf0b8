//! Settings of one operator run, from the command line (src/main.rs) or a test.

use std::time::Duration;

/// Settings of a controller run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Restore points live here.
    pub operator_namespace: String,
    pub audit_interval: Duration,
    /// A token Secret still empty this long after creation is reported TokenNotPopulated.
    pub populate_deadline: Duration,
    pub workers: usize,
    /// This process, as named in Events.
    pub instance: String,
    /// How long restore points of a deleted namespace are kept (it may come back).
    pub restore_point_retention: Duration,
    /// Alertmanagers to push alerts to (v2 API base URLs); none: no push.
    pub alertmanager_urls: Vec<String>,
    /// Prefix of runbook_url annotations: <base><AlertName>.md.
    pub runbook_base_url: String,
    /// Leader election; None: this process always leads (one replica, tests).
    pub leader: Option<LeaderConfig>,
    /// The restore-loop breaker: more restores of one object than this within
    /// `restore_loop_window` stop its restores (RestoreLoop).
    pub restore_loop_limit: usize,
    pub restore_loop_window: Duration,
    /// Restore points of an earlier format (after an upgrade) rewritten in the current
    /// one, at most this many a second.
    pub migration_rate: f64,
}

/// Leader election among replicas (src/leader.rs).
#[derive(Clone, Debug)]
pub struct LeaderConfig {
    /// Where the Lease lives.
    pub namespace: String,
    pub lease_name: String,
    /// This candidate, unique among replicas.
    pub identity: String,
    /// How long a Lease is valid after its last renewal.
    pub lease_duration: Duration,
    /// A leader that could not renew for this long steps down.
    pub renew_deadline: Duration,
    /// How often to try to acquire or renew.
    pub retry_period: Duration,
}
