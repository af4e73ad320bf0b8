//! What the operator remembers between reconciles, in memory only: enough to report each
//! incident once, time restores and build status. Everything that must survive a restart
//! lives in the cluster (restore points carry the restore counts). Pure data; the
//! reconcile's record step (record.rs) is the one writer of the per-target part.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::time::Instant;

use super::decide::{Reason, TargetState};
use super::spec::TargetKind;
use crate::api::v1alpha1::Incident;
use crate::object_key::ObjectKey;

/// What is remembered about one guarded Secret.
#[derive(Clone, Debug)]
pub struct TargetRecord {
    pub guard: ObjectKey,
    pub kind: TargetKind,
    pub state: TargetState,
    /// Incidents reported in the current unhealthy spell (each is reported once).
    pub reported: BTreeSet<Reason>,
    pub missing_since: Option<Instant>,
    /// The last reconcile failed to restore it (SecretGuardRestoreFailing is firing).
    pub restore_failing: bool,
    /// Re-checks in a row that found it missing with nothing to restore from: each waits
    /// twice as long as the one before (`decide::missing_recheck`).
    pub rechecks: u32,
}

/// What is remembered about one guard.
#[derive(Clone, Debug, Default)]
pub struct GuardRecord {
    pub last_incident: Option<Incident>,
    /// Why the current spec cannot be used (Ready=False, InvalidSpec).
    pub invalid: Option<String>,
    /// Drift the audit found in this guard's objects since start.
    pub audit_drift: u64,
    /// A status write is queued or scheduled.
    pub status_pending: bool,
    /// When the last status write started.
    pub last_status: Option<Instant>,
}

/// Everything remembered, behind one lock (`Context::records`). Lock order: the index
/// first, then the records, never the other way.
#[derive(Debug, Default)]
pub struct Records {
    pub targets: HashMap<ObjectKey, TargetRecord>,
    pub guards: HashMap<ObjectKey, GuardRecord>,
    /// Targets queued by the audit and not by an event since: a write for one is drift.
    pub audit_pending: HashSet<ObjectKey>,
}
