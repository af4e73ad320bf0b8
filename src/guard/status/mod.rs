//! A guard's status: what `kubectl get sguard` and `kubectl describe` show. Requested by
//! the reconciles, written as a unit of work of its own, debounced: a status write costs
//! the apiserver CPU in proportion to the whole guard, and that CPU is taken from restores.
//! Written with server-side apply only when it differs from what is stored.

pub mod build;

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::Resource;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;

use self::build::build;
use super::context::{Context, Work};
use super::spec::{TargetKind, TargetSpec, targets_of};
use super::state::{Records, TargetRecord};
use crate::api::v1alpha1::SecretGuard;
use crate::metrics::{Guard, GuardKind};
use crate::object_key::ObjectKey;
use crate::{labels, restore_point};

/// At most one status write per guard in this interval. Status is for people reading
/// `kubectl get`; Events, metrics and alerts carry the real-time signal. A status write
/// costs the apiserver CPU in proportion to the whole guard (~35 ms for 200 entries,
/// measured; see BENCHMARKS.md), and that CPU is taken from restores.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// A status request waits this long before it is written, so that what follows an
/// incident within the same second (the restore, the restore point refresh) lands in the
/// same write: one write per incident, not one for "missing" and one for "restored".
pub const STATUS_SETTLE: Duration = Duration::from_secs(1);

/// Ask for a guard's status to be written after STATUS_SETTLE, and no sooner than
/// STATUS_MIN_INTERVAL after its last write; requests in between are folded into one.
pub fn request(ctx: &Context, guard: ObjectKey) {
    let wait = {
        let mut records = ctx.records();
        let rec = records.guards.entry(guard.clone()).or_default();
        if rec.status_pending {
            return;
        }
        rec.status_pending = true;
        rec.last_status
            .map(|t| STATUS_MIN_INTERVAL.saturating_sub(t.elapsed()))
            .unwrap_or(Duration::ZERO)
            .max(STATUS_SETTLE)
    };
    ctx.queue.add_after(Work::Status(guard), wait);
}

/// Set the guarded and missing gauges of a guard, per kind, from the targets its status
/// counts.
fn export_counts(
    ctx: &Context,
    guard: &ObjectKey,
    targets: &[(ObjectKey, TargetSpec)],
    records: &HashMap<ObjectKey, TargetRecord>,
) {
    for kind in TargetKind::ALL {
        let (mut guarded, mut missing) = (0, 0);
        for (k, _) in targets.iter().filter(|(_, s)| s.kind() == kind) {
            guarded += 1;
            missing += i64::from(records.get(k).is_some_and(|r| r.state.is_missing()));
        }
        let labels = GuardKind {
            namespace: guard.namespace.clone(),
            guard: guard.name.clone(),
            kind: kind.as_str().into(),
        };
        ctx.metrics
            .guarded_objects
            .get_or_create(&labels)
            .set(guarded);
        ctx.metrics
            .missing_objects
            .get_or_create(&labels)
            .set(missing);
    }
}

/// Forget the guards a guard no longer shares any object with, so that a new overlap
/// with one of them is told again (an `Overlap` Event).
fn forget_ended_overlaps(
    records: &mut Records,
    guard: &ObjectKey,
    targets: &[(ObjectKey, TargetSpec)],
) {
    let now: BTreeSet<ObjectKey> = targets
        .iter()
        .filter_map(|(k, _)| records.targets.get(k))
        .filter(|r| r.covered_by(guard))
        .flat_map(|r| r.guards())
        .filter(|g| *g != guard)
        .cloned()
        .collect();
    if let Some(rec) = records.guards.get_mut(guard) {
        rec.overlaps_with.retain(|g| now.contains(g));
    }
}

/// Write a guard's status if it changed.
pub async fn write(ctx: &Context, key: &ObjectKey) -> crate::Result<()> {
    {
        let mut records = ctx.records();
        let rec = records.guards.entry(key.clone()).or_default();
        rec.status_pending = false;
        rec.last_status = Some(std::time::Instant::now());
    }
    let Some(guard) = ctx.stores.guard(key) else {
        return Ok(());
    };
    let status = {
        let index = ctx.index();
        let mut targets = match index.guard(key) {
            Some(entry) => entry.targets.clone(),
            // Never valid: nothing is guarded yet.
            None if ctx
                .records()
                .guards
                .get(key)
                .is_some_and(|r| r.invalid.is_some()) =>
            {
                Vec::new()
            }
            None => targets_of(&key.namespace, &guard.spec),
        };
        drop(index);
        // Secrets guarded through the selector: those reconciled with this guard covering them.
        {
            let named: std::collections::HashSet<ObjectKey> =
                targets.iter().map(|(k, _)| k.clone()).collect();
            let mut selected: Vec<ObjectKey> = ctx
                .records()
                .covered_by(key)
                .into_iter()
                .filter(|k| !named.contains(k))
                .collect();
            selected.sort();
            targets.extend(selected.into_iter().map(|k| (k, TargetSpec::Secret)));
        }
        // Restores are counted on the restore points, where each is recorded exactly once;
        // never those of a point saved in an earlier namespace of the same name.
        let opns = &ctx.config.operator_namespace;
        let namespace = ctx
            .stores
            .namespace(&key.namespace)
            .map(|ns| restore_point::NamespaceIdentity::of(&ns.metadata));
        let restores: u64 = targets
            .iter()
            .filter_map(|(k, _)| {
                ctx.stores
                    .restore_point(opns, &restore_point::name_for(&k.namespace, &k.name))
            })
            .filter(|rp| {
                namespace
                    .as_ref()
                    .is_some_and(|ns| restore_point::provenance(&rp.written, ns, None).restorable())
            })
            .map(|rp| rp.restores)
            .sum();
        let mut records = ctx.records();
        export_counts(ctx, key, &targets, &records.targets);
        forget_ended_overlaps(&mut records, key, &targets);
        let record = records.guards.get(key).cloned().unwrap_or_default();
        build(
            &guard,
            &targets,
            &records.targets,
            &record,
            restores as i64,
            &Time(k8s_openapi::jiff::Timestamp::now()),
        )
    };
    let ready = status
        .conditions
        .iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ctx.metrics
        .guard_ready
        .get_or_create(&Guard {
            namespace: key.namespace.clone(),
            guard: key.name.clone(),
        })
        .set(i64::from(ready));
    if guard.status.as_ref() == Some(&status) {
        return Ok(());
    }
    if status.restores != guard.status.as_ref().map(|s| s.restores).unwrap_or(0) {
        crate::fault::point(crate::fault::points::STATUS_NOT_WRITTEN);
    }
    let api: Api<SecretGuard> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = json!({
        "apiVersion": SecretGuard::api_version(&()),
        "kind": SecretGuard::kind(&()),
        "status": status,
    });
    api.patch_status(
        &key.name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}
