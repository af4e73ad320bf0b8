//! What the operator remembers between reconciles, in memory only: enough to report each
//! incident once, time restores and build status. Everything that must survive a restart
//! lives in the cluster (restore points carry the restore counts). Pure data; the
//! reconcile's record step (record.rs) is the one writer of the per-target part.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::hash::BuildHasher;
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
    /// When it was restored lately, oldest first (at most `breaker::HISTORY`).
    pub restored_at: Vec<Instant>,
    /// Why it is in its state, when the state alone does not say (status shows it).
    pub message: Option<String>,
    /// Other guards cover it too (`guard` is the one that reports it). Boxed: rare, and
    /// every target has a record.
    pub sharing: Option<Box<Sharing>>,
}

/// A Secret covered by more than one guard: the others, and what is in force for it (the
/// most protective value of each setting among them; docs/architecture.md, Behaviour).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sharing {
    /// The other guards covering it, most protective first.
    pub with: Vec<ObjectKey>,
    /// The settings in force, in words ("restore Identical, severity critical, not paused").
    pub settings: String,
}

impl TargetRecord {
    /// A first record of a target: nothing reported, nothing failing, no history.
    pub fn new(guard: ObjectKey, kind: TargetKind, state: TargetState) -> TargetRecord {
        TargetRecord {
            guard,
            kind,
            state,
            reported: Default::default(),
            missing_since: None,
            restore_failing: false,
            rechecks: 0,
            restored_at: Vec::new(),
            sharing: None,
            message: None,
        }
    }

    /// Every guard covering it: the one reporting it first, then the others.
    pub fn guards(&self) -> impl Iterator<Item = &ObjectKey> {
        std::iter::once(&self.guard).chain(self.sharing.iter().flat_map(|s| &s.with))
    }

    /// Whether `guard` covers it (reporting it or not).
    pub fn covered_by(&self, guard: &ObjectKey) -> bool {
        self.guards().any(|g| g == guard)
    }
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
    /// The last value of its resume-restores annotation seen.
    pub resume: Option<String>,
    /// The guards it shares objects with, as last told (an `Overlap` Event each).
    pub overlaps_with: BTreeSet<ObjectKey>,
}

/// Everything remembered, behind one lock (`Context::records`). Lock order: the index
/// first, then the records, never the other way.
#[derive(Debug, Default)]
pub struct Records {
    pub targets: HashMap<ObjectKey, TargetRecord>,
    pub guards: HashMap<ObjectKey, GuardRecord>,
    /// Targets queued by the audit and not by an event since: a write for one is drift.
    pub audit_pending: AuditMarks,
    /// Secrets the watch saw deleted while they carried secretguard.dev/retire=true, with
    /// the deleted Secret's UID, until their restore point is forgotten: an annotation
    /// followed at once by the deletion may reach the reconcile only as a deletion.
    pub retired_deletions: HashMap<ObjectKey, String>,
    /// Guarded Secrets the watch saw deleted (on every replica, leading or not) whose
    /// restore point does not record its namespace (format 0, written before an upgrade),
    /// until they are seen again: the UID each had and the namespace it lived in. That
    /// point saves the very Secret deleted here, so it is this namespace's, whoever leads
    /// when it is restored and however young the namespace.
    pub deleted_here: HashMap<ObjectKey, DeletedHere>,
}

/// The targets the audit queued and no event touched since (`Records::audit_pending`),
/// held as 64-bit hashes of their keys: the audit marks every target, and a copy of each
/// key was 2 MiB at 10,000. Two keys with the same hash could at worst count one write
/// as drift (a metric); what is done never depends on it.
#[derive(Debug, Default)]
pub struct AuditMarks {
    hashes: HashSet<u64>,
    hasher: std::hash::RandomState,
}

impl AuditMarks {
    pub fn insert(&mut self, key: &ObjectKey) {
        let hash = self.hasher.hash_one(key);
        self.hashes.insert(hash);
    }

    /// Whether it was marked; the mark is gone afterwards.
    pub fn remove(&mut self, key: &ObjectKey) -> bool {
        let hash = self.hasher.hash_one(key);
        self.hashes.remove(&hash)
    }
}

/// A guarded Secret seen deleted from a namespace (`Records::deleted_here`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeletedHere {
    pub uid: String,
    pub namespace_uid: String,
}

impl Records {
    /// The targets a guard was last seen covering (named or selected, reporting them or
    /// not): what a change of that guard may change.
    pub fn covered_by(&self, guard: &ObjectKey) -> Vec<ObjectKey> {
        self.targets
            .iter()
            .filter(|(_, r)| r.covered_by(guard))
            .map(|(k, _)| k.clone())
            .collect()
    }
}
