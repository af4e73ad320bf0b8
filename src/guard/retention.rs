//! What happens to what is no longer guarded: our label comes off the Secret and its
//! restore points go. Restore points of a deleted namespace are kept for a while (a
//! cluster admin may give them to the namespace restored from a backup), then dropped; so
//! are those of an earlier namespace of the same name, found from a namespace with
//! another UID. And the restore points of what is guarded are kept in order: this
//! namespace's un-stamped (format-0 ones get its UID from src/guard/migrate.rs).

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::act::tolerate;
use super::context::Context;
use super::load::{self, NamespaceState, ObservedTarget};
use super::spec;
use super::status;
use crate::cache::CachedRestorePoint;
use crate::object_key::ObjectKey;
use crate::{Result, labels, restore_point};

/// A Secret no guard names any more: take our label off and forget its restore point.
/// Restore points of a deleted namespace, or of an earlier namespace of the same name,
/// are kept for `restore_point_retention`, then dropped.
pub async fn unguard(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    if named_by_a_guard(ctx, key) {
        // A guard names it but is not in the index: its spec is invalid and none was
        // in force since start. Never unguard what an existing guard names.
        return Ok(None);
    }
    let removed = ctx.records().targets.remove(key);
    // Deleting a guard (or every guard, with the CRD) must not wipe its restore points:
    // like a deleted namespace's, they are kept for the retention. Only a target removed
    // from a guard that still exists loses them at once.
    let guard_gone = removed
        .as_ref()
        .is_none_or(|r| ctx.stores.guard(&r.guard).is_none());
    if let Some(rec) = &removed {
        for guard in rec.guards() {
            status::request(ctx, guard.clone());
        }
        ctx.metrics.forget_object(
            &rec.guard.namespace,
            &rec.guard.name,
            rec.kind.as_str(),
            &key.name,
        );
        if let Some(alerter) = &ctx.alerter {
            alerter.resolve(key.clone());
        }
    }
    let ns = match load::namespace_state(ctx, &key.namespace).await? {
        NamespaceState::Gone => return expire_restore_points(ctx, key).await,
        // Once it is gone, its deletion event brings us back.
        NamespaceState::Terminating => return Ok(None),
        NamespaceState::Active(ns) => ns,
    };
    let live = ctx.stores.secret(key);
    if live.is_some() {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let patch = json!({"metadata": {"labels": {labels::GUARDED: null}}});
        // Answered with the metadata only: the Secret may be anyone's, of any size.
        tolerate(
            secrets
                .patch_metadata(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &[404],
        )?;
    }
    if guard_gone {
        return expire_restore_points(ctx, key).await;
    }
    let rps: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.operator_namespace);
    let live_uid = live.as_ref().map(|s| s.uid.as_str());
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut next = None;
    for (name, point, live_uid) in stored_points(ctx, key, [live_uid, None]) {
        if restore_point::provenance(&point.written, &ns, live_uid).restorable() {
            tolerate(rps.delete(&name, &DeleteParams::default()).await, &[404])?;
        } else {
            // Saved in an earlier namespace of this name, which is gone: its retention
            // applies, as to any deleted namespace's (a cluster admin may adopt it).
            next = sooner(next, expire(ctx, key, &name, &point, now).await?);
        }
    }
    if removed.is_some() {
        tracing::info!(target = %key, "no longer guarded: label and restore point removed");
    }
    Ok(pad(next))
}

/// Whether a guard that exists names this Secret in its spec, whether the index holds
/// that guard or not.
fn named_by_a_guard(ctx: &Context, key: &ObjectKey) -> bool {
    ctx.stores.guards.state().iter().any(|g| {
        g.metadata.namespace.as_deref() == Some(key.namespace.as_str())
            && spec::names(&g.spec, &key.name)
    })
}

fn restore_point_names(key: &ObjectKey) -> [String; 2] {
    [
        restore_point::name_for(&key.namespace, &key.name),
        restore_point::snapshot_name_for(&key.namespace, &key.name),
    ]
}

/// Field manager of the orphaned-since stamp: separate from `secretguard`, whose
/// server-side applies of the restore point must neither keep nor drop it.
const RETENTION_MANAGER: &str = "secretguard-retention";

fn retention_params() -> PatchParams {
    PatchParams {
        field_manager: Some(RETENTION_MANAGER.into()),
        ..Default::default()
    }
}

/// The restore point and the ServiceAccount snapshot of `key` that are stored, each with
/// the UID its origin has now (`live_uids`, in that order), if known.
pub fn stored_points<'a>(
    ctx: &Context,
    key: &ObjectKey,
    live_uids: [Option<&'a str>; 2],
) -> Vec<(String, Arc<CachedRestorePoint>, Option<&'a str>)> {
    let opns = &ctx.config.operator_namespace;
    restore_point_names(key)
        .into_iter()
        .zip(live_uids)
        .filter_map(|(name, uid)| {
            let point = ctx.stores.restore_point(opns, &name)?;
            Some((name, point, uid))
        })
        .collect()
}

/// Stamp restore points of a gone namespace or guard, and drop them once the retention has
/// passed.
async fn expire_restore_points(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut next = None;
    for (name, point, _) in stored_points(ctx, key, [None, None]) {
        next = sooner(next, expire(ctx, key, &name, &point, now).await?);
    }
    Ok(pad(next))
}

/// Stamp one restore point `orphaned-since` now, or drop it once the retention has passed
/// since its stamp. Returns how long it is kept still (None: dropped).
async fn expire(
    ctx: &Context,
    key: &ObjectKey,
    name: &str,
    point: &CachedRestorePoint,
    now: k8s_openapi::jiff::Timestamp,
) -> Result<Option<Duration>> {
    let opns = &ctx.config.operator_namespace;
    let rps: Api<Secret> = Api::namespaced(ctx.client.clone(), opns);
    let retention = ctx.config.restore_point_retention;
    let Some(since) = point.orphaned_since else {
        // A merge patch, not an apply: an apply would create a stub if the point was
        // deleted since the cache saw it.
        let stamp = json!({"metadata": {"annotations": {restore_point::annotation::ORPHANED_SINCE: now.to_string()}}});
        match rps
            .patch(name, &retention_params(), &Patch::Merge(&stamp))
            .await
        {
            Err(kube::Error::Api(s)) if s.code == 404 => return Ok(None),
            r => r.map(|_| ())?,
        }
        tracing::info!(target = %key, retention = ?retention, "no longer guarded (guard or namespace gone): restore point kept for the retention");
        return Ok(Some(retention));
    };
    let age = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
    if age >= retention {
        tolerate(rps.delete(name, &DeleteParams::default()).await, &[404])?;
        tracing::info!(target = %key, "retention over: restore point dropped");
        return Ok(None);
    }
    Ok(Some(retention - age))
}

pub fn sooner(a: Option<Duration>, b: Option<Duration>) -> Option<Duration> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}

/// Look again just after the retention ends.
fn pad(next: Option<Duration>) -> Option<Duration> {
    next.map(|d| d + Duration::from_millis(100))
}

/// The UIDs the target's restore point and snapshot save as they live now: the Secret's
/// (or the one just deleted here) and its ServiceAccount's (`stored_points` takes them in
/// that order).
pub fn live_uids(target: &ObservedTarget) -> [Option<&str>; 2] {
    [
        target.last_uid.as_deref(),
        target
            .service_account
            .as_ref()
            .and_then(|sa| sa.metadata.uid.as_deref()),
    ]
}

/// The restore points of a guarded Secret in its live namespace. Those written in it (or
/// adopted into it) are kept: a stamp left from a time the namespace was gone is undone
/// (it came back, with its guard); one written before namespace UIDs were recorded is
/// rewritten with this namespace's UID later, at a bounded pace (src/guard/migrate.rs).
/// Those saved in an earlier namespace of the same name are that gone namespace's:
/// stamped, and dropped after the retention. Returns when to look again for that.
pub async fn keep_restore_points(
    ctx: &Context,
    target: &ObservedTarget,
) -> Result<Option<Duration>> {
    let Some(ns) = target.namespace.active() else {
        return Ok(None);
    };
    let opns = &ctx.config.operator_namespace;
    let rps: Api<Secret> = Api::namespaced(ctx.client.clone(), opns);
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut next = None;
    for (name, point, live_uid) in stored_points(ctx, &target.key, live_uids(target)) {
        if !restore_point::provenance(&point.written, ns, live_uid).restorable() {
            next = sooner(next, expire(ctx, &target.key, &name, &point, now).await?);
            continue;
        }
        if point.orphaned_since.is_some() {
            let unstamp = json!({"metadata": {"annotations": {restore_point::annotation::ORPHANED_SINCE: null}}});
            tolerate(
                rps.patch(&name, &retention_params(), &Patch::Merge(&unstamp))
                    .await,
                &[404],
            )?;
        }
    }
    Ok(pad(next))
}
