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
use super::status;
use crate::object_key::ObjectKey;
use crate::{Result, labels, restore_point};

/// A Secret no guard names any more: take our label off and forget its restore point.
/// Restore points of a deleted namespace are kept for `restore_point_retention` (it may be
/// re-created from a backup, guards included), then dropped.
pub async fn unguard(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let removed = ctx.records().targets.remove(key);
    if let Some(rec) = &removed {
        status::request(ctx, rec.guard.clone());
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
        // Answered with the metadata only: the Secret may be anyone's, of any size.
        tolerate(
            secrets
                .patch_metadata(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
                .await,
            &[404],
        )?;
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

fn restore_point_names(key: &ObjectKey) -> [String; 2] {
    [
        restore_point::name_for(&key.namespace, &key.name),
        restore_point::snapshot_name_for(&key.namespace, &key.name),
    ]
}

/// Field manager of the orphaned-since stamp: separate from `secretguard`, whose
/// server-side applies of the restore point must neither keep nor drop it.
const RETENTION_MANAGER: &str = "secretguard-retention";

/// Stamp restore points of a gone namespace, and drop them once the retention has passed.
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
        let left = match rp.orphaned_since {
            None => {
                let stamp = json!({
                    "apiVersion": "v1", "kind": "Secret",
                    "metadata": {"name": name, "namespace": opns,
                                 "annotations": {restore_point::annotation::ORPHANED_SINCE: now.to_string()}},
                });
                rps.patch(
                    &name,
                    &PatchParams::apply(RETENTION_MANAGER).force(),
                    &Patch::Apply(&stamp),
                )
                .await?;
                tracing::info!(target = %key, retention = ?retention, "namespace gone: restore point kept for the retention");
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
            .is_some_and(|rp| rp.orphaned_since.is_some())
        {
            let unstamp = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": name, "namespace": opns}});
            Api::<Secret>::namespaced(ctx.client.clone(), opns)
                .patch(
                    &name,
                    &PatchParams::apply(RETENTION_MANAGER).force(),
                    &Patch::Apply(&unstamp),
                )
                .await?;
        }
    }
    Ok(())
}
