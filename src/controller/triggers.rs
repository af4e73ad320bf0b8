//! What each watch event queues: the guarded Secrets it may concern, and guard statuses;
//! and what the Secret and restore-point caches keep of the objects events show. Also the
//! audit, which queues everything to find what the watches missed.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use super::selectors;
use crate::api::v1alpha1::SecretGuard;
use crate::cache::{CachedRestorePoint, CachedSecret};
use crate::guard::context::{Context, Work};
use crate::guard::spec::{self, TargetKind};
use crate::guard::status;
use crate::metrics::GuardKind;
use crate::object_key::ObjectKey;
use crate::restore_point;

pub fn on_guard(ctx: &Arc<Context>, guard: &SecretGuard, deleted: bool) {
    let key = ObjectKey::of(guard);
    // Our own status writes come back as events. Only a new spec (generation) or a new
    // guard changes what is guarded; anything else must cost nothing, or every status
    // update would re-reconcile every target of the guard.
    let unchanged = !deleted
        && ctx.index().guard(&key).is_some_and(|e| {
            e.generation == guard.metadata.generation.unwrap_or_default()
                && Some(&e.uid) == guard.metadata.uid.as_ref()
        });
    if unchanged {
        return;
    }
    let touched = if deleted {
        ctx.records().guards.remove(&key);
        for kind in TargetKind::ALL {
            let labels = GuardKind {
                namespace: key.namespace.clone(),
                guard: key.name.clone(),
                kind: kind.as_str().into(),
            };
            ctx.metrics.guarded_objects.remove(&labels);
            ctx.metrics.missing_objects.remove(&labels);
        }
        ctx.index_mut().remove(&key)
    } else {
        match spec::validate(&guard.spec) {
            Ok(()) => {
                ctx.records().guards.entry(key.clone()).or_default().invalid = None;
                ctx.index_mut().upsert(guard)
            }
            Err(why) => {
                // Keep guarding with the last usable spec: a bad edit must not drop protection.
                ctx.records().guards.entry(key.clone()).or_default().invalid = Some(why);
                Vec::new()
            }
        }
    };
    for t in touched {
        ctx.touch(t);
    }
    selectors::update(ctx, &key);
    if !deleted {
        ctx.queue.add(Work::Status(key));
    }
}

/// How a watch event showed an object.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Seen {
    /// In a (re-)list.
    Listed,
    /// Created or changed.
    Changed,
    /// Deleted, or no longer labelled: its final state.
    Deleted,
}

/// What the Secret cache keeps of a Secret a watch event showed, and, when a reconcile will
/// need its data, the whole Secret kept for it (`Context::keep_content`). Nothing but its
/// name and UID is kept of a Secret no guard targets: whoever can label a Secret decides
/// nothing about the operator's memory. Runs before the cache is updated.
pub fn admit_secret(ctx: &Context, secret: Secret, seen: Seen) -> CachedSecret {
    let key = ObjectKey::of(&secret);
    let guarded = ctx
        .index()
        .resolve(&key, secret.metadata.labels.as_ref())
        .is_some();
    if !guarded {
        return CachedSecret::minimal(&secret);
    }
    let cached = CachedSecret::detailed(&secret);
    // Only for the leader's workers; never for a (re-)list: what changed while no watch
    // ran is read with a GET, rather than holding every guarded Secret at once.
    let needed = *ctx.leading.borrow()
        && match seen {
            Seen::Listed => false,
            // Its final state. (A Secret that only lost our label comes as a deletion too,
            // with its previous content: its restore then finds it there and looks again.)
            Seen::Deleted => true,
            // A change its restore point does not hold yet.
            Seen::Changed => !restore_point_holds(ctx, &cached),
        };
    if needed && !ctx.keep_content(key.clone(), Arc::new(secret)) {
        tracing::warn!(target = %key, "too much Secret content waiting for reconciles: this one will be read again");
    }
    cached
}

/// The restore point in the cache holds this Secret's content already.
fn restore_point_holds(ctx: &Context, secret: &CachedSecret) -> bool {
    let name = restore_point::name_for(&secret.key.namespace, &secret.key.name);
    ctx.stores
        .restore_point(&ctx.config.operator_namespace, &name)
        .is_some_and(|rp| {
            rp.saved.as_ref().is_ok_and(|s| {
                s.origin_uid == secret.uid
                    && secret
                        .detail
                        .as_ref()
                        .is_some_and(|d| d.content_hash == s.content_hash)
            })
        })
}

/// What the restore-point cache keeps of a restore point or snapshot: never its data.
pub fn admit_restore_point(_ctx: &Context, rp: Secret, _seen: Seen) -> CachedRestorePoint {
    CachedRestorePoint::of(&rp)
}

pub fn on_secret(ctx: &Arc<Context>, secret: &CachedSecret, deleted: bool) {
    if deleted && let Some(r) = ctx.records().targets.get_mut(&secret.key) {
        r.missing_since.get_or_insert_with(Instant::now);
    }
    ctx.touch(secret.key.clone());
}

pub fn on_restore_point(ctx: &Arc<Context>, rp: &CachedRestorePoint, deleted: bool) {
    let Some(key) = rp.origin.clone() else {
        return;
    };
    if deleted {
        // A deleted restore point is rewritten from the live object.
        ctx.touch(key);
    } else {
        // A refreshed one may carry a new restore count: the guard's status sums them.
        let guard = ctx.records().targets.get(&key).map(|r| r.guard.clone());
        if let Some(guard) = guard {
            status::request(ctx, guard);
        }
    }
}

pub fn on_service_account(
    ctx: &Arc<Context>,
    sa: &PartialObjectMeta<ServiceAccount>,
    _deleted: bool,
) {
    let tokens = ctx.index().tokens_of(&ObjectKey::of(sa));
    for t in tokens {
        ctx.touch(t);
    }
}

pub fn on_namespace(ctx: &Arc<Context>, ns: &PartialObjectMeta<Namespace>, deleted: bool) {
    if deleted || ns.metadata.deletion_timestamp.is_some() {
        let name = ns.name_any();
        let targets = ctx.index().targets_in(&name);
        for t in targets {
            ctx.touch(t);
        }
        if deleted {
            // Its guards are gone too: start the retention of its restore points.
            for rp in ctx.stores.restore_points.state() {
                if let Some(origin) = &rp.origin
                    && origin.namespace == name
                {
                    ctx.touch(origin.clone());
                }
            }
        }
    }
}

/// Queue every guarded Secret, every restore point's origin and every labelled Secret, so
/// whatever the watches missed (or happened while the operator was down) is found.
pub fn audit(ctx: &Context) {
    queue_all(ctx, true);
}

/// The first pass after start: the same work, but nothing it finds is drift (there were
/// no watches yet to miss anything).
pub fn startup_pass(ctx: &Context) {
    queue_all(ctx, false);
}

fn queue_all(ctx: &Context, count_drift: bool) {
    let mut keys: BTreeSet<ObjectKey> = ctx.index().all_targets().into_iter().collect();
    for rp in ctx.stores.restore_points.state() {
        if let Some(origin) = &rp.origin {
            keys.insert(origin.clone());
        }
    }
    for s in ctx.stores.secrets.state() {
        keys.insert(s.key.clone());
    }
    let guards: Vec<ObjectKey> = ctx.index().guards().map(|g| g.key.clone()).collect();
    if count_drift {
        ctx.records().audit_pending.extend(keys.iter().cloned());
    }
    tracing::debug!(targets = keys.len(), "audit");
    ctx.queue.add_all(keys.into_iter().map(Work::Target));
    ctx.queue.add_all(guards.into_iter().map(Work::Status));
}
