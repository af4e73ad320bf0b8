//! What happens to what is no longer guarded: our label comes off the Secret and its
//! restore points go. Restore points of a deleted namespace are kept for a while (it may
//! be re-created from a backup, guards included), then dropped.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use serde_json::json;

use super::act::tolerate;
use super::context::Context;
use super::load::{self, NamespaceState};
use super::spec;
use super::status;
use crate::object_key::ObjectKey;
use crate::{Result, labels, restore_point};

/// A Secret no guard names any more: take our label off and forget its restore point.
/// Restore points of a deleted namespace are kept for `restore_point_retention` (it may be
/// re-created from a backup, guards included), then dropped.
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
    match load::namespace_state(ctx, &key.namespace).await? {
        NamespaceState::Gone => return expire_restore_points(ctx, key).await,
        // Once it is gone, its deletion event brings us back.
        NamespaceState::Terminating => return Ok(None),
        NamespaceState::Active => {}
    }
    if ctx.stores.secret(key).is_some() {
        let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
        let patch = json!({"metadata": {"labels": {labels::GUARDED: null}}});
        tolerate(
            secrets
                .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &[404],
        )?;
    }
    if guard_gone {
        return expire_restore_points(ctx, key).await;
    }
    let rps: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.operator_namespace);
    for name in restore_point_names(key) {
        if ctx
            .stores
            .restore_point(&ctx.config.operator_namespace, &name)
            .is_some()
        {
            tolerate(rps.delete(&name, &DeleteParams::default()).await, &[404])?;
        }
    }
    if removed.is_some() {
        tracing::info!(target = %key, "no longer guarded: label and restore point removed");
    }
    Ok(None)
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

/// Stamp restore points of a gone namespace or guard, and drop them once the retention has
/// passed.
async fn expire_restore_points(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let opns = &ctx.config.operator_namespace;
    let rps: Api<Secret> = Api::namespaced(ctx.client.clone(), opns);
    let retention = ctx.config.restore_point_retention;
    let now = k8s_openapi::jiff::Timestamp::now();
    let mut next: Option<Duration> = None;
    for name in restore_point_names(key) {
        let Some(rp) = ctx.stores.restore_point(opns, &name) else {
            continue;
        };
        let left = match restore_point::orphaned_since(&rp) {
            None => {
                // A merge patch, not an apply: an apply would create a stub if the point
                // was deleted since the cache saw it.
                let stamp = json!({"metadata": {"annotations": {restore_point::annotation::ORPHANED_SINCE: now.to_string()}}});
                match rps
                    .patch(&name, &retention_params(), &Patch::Merge(&stamp))
                    .await
                {
                    Err(kube::Error::Api(s)) if s.code == 404 => continue,
                    r => r.map(|_| ())?,
                }
                tracing::info!(target = %key, retention = ?retention, "no longer guarded (guard or namespace gone): restore point kept for the retention");
                retention
            }
            Some(since) => {
                let age = Duration::try_from(now.duration_since(since)).unwrap_or(Duration::ZERO);
                if age >= retention {
                    tolerate(rps.delete(&name, &DeleteParams::default()).await, &[404])?;
                    tracing::info!(target = %key, "retention over: restore point dropped");
                    continue;
                }
                retention - age
            }
        };
        next = Some(next.map_or(left, |n| n.min(left)));
    }
    Ok(next.map(|d| d + Duration::from_millis(100)))
}

/// A guarded Secret's restore points are not orphans: undo a stamp left from a time its
/// namespace was gone (it came back, with its guard).
pub async fn keep_restore_points(ctx: &Context, key: &ObjectKey) -> Result<()> {
    let opns = &ctx.config.operator_namespace;
    for name in restore_point_names(key) {
        if ctx
            .stores
            .restore_point(opns, &name)
            .is_some_and(|rp| restore_point::orphaned_since(&rp).is_some())
        {
            let unstamp = json!({"metadata": {"annotations": {restore_point::annotation::ORPHANED_SINCE: null}}});
            tolerate(
                Api::<Secret>::namespaced(ctx.client.clone(), opns)
                    .patch(&name, &retention_params(), &Patch::Merge(&unstamp))
                    .await,
                &[404],
            )?;
        }
    }
    Ok(())
}
