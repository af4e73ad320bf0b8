//! Restore points of an earlier format (written before an upgrade) rewritten in the
//! current one: read with `restore_point::parse`, written with `restore_point::build`, so
//! whatever format this version writes is the one they get, the namespace UID included.
//! Nothing depends on it (an older point is read as before), so it is never urgent: at
//! most `--migration-rate` points a second, each given a time of its own (`Pace`) and
//! looked at again then, through the background lane, and only when the reconcile had
//! nothing else to write. An upgrade never rewrites every point at once.

use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, Patch};

use super::act::apply_params;
use super::context::Context;
use super::load::ObservedTarget;
use super::retention::{live_uids, sooner, stored_points};
use crate::{Result, restore_point};

/// Rewrite the target's restore points of an earlier format whose time has come. Returns
/// when to look again for the others.
pub async fn restore_points(ctx: &Context, target: &ObservedTarget) -> Result<Option<Duration>> {
    let Some(ns) = target.namespace.active() else {
        return Ok(None);
    };
    let mut next = None;
    for (name, point, live_uid) in stored_points(ctx, &target.key, live_uids(target)) {
        // Only this namespace's points: an earlier namespace's are expiring.
        if !point.written.older_format
            || !restore_point::provenance(&point.written, ns, live_uid).restorable()
        {
            continue;
        }
        let wait = ctx
            .migrations
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .slot(&name, tokio::time::Instant::now());
        match wait {
            Some(wait) => next = sooner(next, Some(wait)),
            None => rewrite(ctx, &target.key, &name, &ns.uid).await?,
        }
    }
    Ok(next)
}

/// Read one point whole and write it back in the current format, over the version read
/// (changed since: its watch event brings the target back, and it is given a new time).
async fn rewrite(
    ctx: &Context,
    target: &crate::object_key::ObjectKey,
    name: &str,
    namespace_uid: &str,
) -> Result<()> {
    let points: Api<Secret> = Api::namespaced(ctx.client.clone(), &ctx.config.operator_namespace);
    let Some(stored) = points.get_opt(name).await? else {
        return Ok(());
    };
    let Some(mut point) = restore_point::rewritten(&stored, namespace_uid) else {
        tracing::debug!(target = %target, point = %name, "restore point not rewritten: not of an earlier format, or unreadable");
        return Ok(());
    };
    point.metadata.resource_version = stored.metadata.resource_version;
    match points
        .patch(name, &apply_params(), &Patch::Apply(&point))
        .await
    {
        Err(kube::Error::Api(s)) if s.code == 409 => return Ok(()),
        r => r.map(|_| ())?,
    }
    ctx.metrics.restore_points_migrated.inc();
    tracing::info!(target = %target, point = %name, format = ?restore_point::Format::of(&point).ok(), "restore point of an earlier format rewritten in the current one");
    Ok(())
}
