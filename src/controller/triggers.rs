//! What each watch event queues: the guarded Secrets it may concern, and guard statuses;
//! and what the Secret and restore-point caches keep of the objects events show. Also the
//! audit, which queues everything to find what the watches missed.

use std::sync::Arc;
use std::time::Instant;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::ResourceExt;
use kube::core::PartialObjectMeta;

use super::selectors;
use crate::api::v1alpha1::{SecretGuard, SecretGuardSpec};
use crate::cache::{CachedRestorePoint, CachedSecret};
use crate::guard::context::{Context, Work};
use crate::guard::spec::{self, TargetKind};
use crate::guard::state::DeletedHere;
use crate::guard::status;
use crate::object_key::ObjectKey;
use crate::queue::Lane;
use crate::{labels, restore_point};

pub fn on_guard(ctx: &Arc<Context>, guard: &SecretGuard, deleted: bool) {
    let key = ObjectKey::of(guard);
    if !deleted {
        resume_restores(ctx, &key, guard);
    }
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
        ctx.metrics.forget_guard(
            &key.namespace,
            &key.name,
            &TargetKind::ALL.map(TargetKind::as_str),
        );
        ctx.index_mut().remove(&key)
    } else {
        match spec::validate(&key.namespace, &guard.spec, &ctx.config.operator_namespace) {
            Ok(()) => {
                ctx.records().guards.entry(key.clone()).or_default().invalid = None;
                ctx.index_mut().upsert(guard)
            }
            Err(why) => {
                // Keep guarding with the last usable spec: a bad edit must not drop protection.
                ctx.records().guards.entry(key.clone()).or_default().invalid = Some(why);
                if ctx.index().guard(&key).is_some() {
                    Vec::new()
                } else {
                    // Not seen valid since start (a restart or failover): the spec in force
                    // is in its status.
                    match spec_in_force(guard, &ctx.config.operator_namespace) {
                        Some(last) => ctx.index_mut().upsert(&last),
                        None => Vec::new(),
                    }
                }
            }
        }
    };
    // What it covered by selector, and objects it shares with other guards: who covers
    // them, and so what is in force, may have changed. A guard edit is not an incident:
    // its targets wait behind restores.
    let covered = ctx.records().covered_by(&key);
    for t in touched.into_iter().chain(covered) {
        ctx.touch_in(t, Lane::Background);
    }
    selectors::update(ctx, &key);
    if !deleted {
        ctx.queue.add_background(Work::Status(key));
    }
}

/// After the guards watch re-listed (a broken watch, an apiserver restart): guards deleted
/// meanwhile vanished from the cache without a delete event. Forget them as if the event
/// had come, so they stop guarding (security review B5).
pub fn forget_vanished_guards(ctx: &Arc<Context>) {
    let vanished: Vec<SecretGuard> = ctx
        .index()
        .guards()
        .filter(|g| ctx.stores.guard(&g.key).is_none())
        .map(|g| {
            let mut guard = SecretGuard::new(&g.key.name, g.spec.clone());
            guard.metadata.namespace = Some(g.key.namespace.clone());
            guard.metadata.uid = Some(g.uid.clone());
            guard
        })
        .collect();
    for guard in vanished {
        tracing::info!(guard = %ObjectKey::of(&guard), "guard deleted while the watch was down: no longer guarding");
        on_guard(ctx, &guard, true);
    }
}

/// A new value of the guard's resume-restores annotation resumes the restores the
/// restore-loop breaker stopped for its objects (metadata only: no new generation).
fn resume_restores(ctx: &Arc<Context>, key: &ObjectKey, guard: &SecretGuard) {
    let asked = guard.annotations().get(labels::RESUME_RESTORES).cloned();
    let resumed: Vec<ObjectKey> = {
        let mut records = ctx.records();
        let record = records.guards.entry(key.clone()).or_default();
        if record.resume == asked || asked.is_none() {
            record.resume = asked;
            return;
        }
        record.resume = asked;
        records
            .targets
            .iter_mut()
            .filter(|(_, r)| r.covered_by(key) && !r.restored_at.is_empty())
            .map(|(k, r)| {
                r.restored_at.clear();
                k.clone()
            })
            .collect()
    };
    for t in resumed {
        tracing::info!(target = %t, guard = %key, "restores resumed");
        ctx.touch(t);
    }
}

/// The guard with the spec its status says is in force (the last valid one), if that
/// spec is readable and valid (in its namespace: never in the operator's).
fn spec_in_force(guard: &SecretGuard, operator_namespace: &str) -> Option<SecretGuard> {
    let json = guard.status.as_ref()?.spec_in_force.as_deref()?;
    let spec: SecretGuardSpec = match serde_json::from_str(json) {
        Ok(spec) => spec,
        Err(e) => {
            tracing::warn!(guard = %ObjectKey::of(guard), error = %e, "status.specInForce unreadable; not used");
            return None;
        }
    };
    let namespace = guard.metadata.namespace.as_deref().unwrap_or_default();
    spec::validate(namespace, &spec, operator_namespace).ok()?;
    Some(SecretGuard {
        spec,
        ..guard.clone()
    })
}

pub fn on_secret(ctx: &Arc<Context>, secret: &CachedSecret, deleted: bool) {
    let key = secret.key.clone();
    if deleted {
        let mut records = ctx.records();
        if let Some(r) = records.targets.get_mut(&key) {
            r.missing_since.get_or_insert_with(Instant::now);
        }
        if secret
            .detail
            .as_ref()
            .is_some_and(|d| d.annotation(labels::RETIRE) == Some("true"))
        {
            // Its last state said "retired": the reconcile may only ever see it gone.
            records
                .retired_deletions
                .insert(key.clone(), secret.uid.clone());
        }
    }
    ctx.touch(key);
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
    remember_deletion(ctx, &cached, seen);
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

/// A guarded Secret deleted from an active namespace while its restore point records no
/// namespace (format 0): remember which Secret it was and where (`Records::deleted_here`),
/// until it is seen again, other than as its own restore (whose restore point still
/// saves the deleted one until it is saved again).
fn remember_deletion(ctx: &Context, secret: &CachedSecret, seen: Seen) {
    let key = &secret.key;
    if seen != Seen::Deleted {
        let restored_from = secret
            .detail
            .as_ref()
            .and_then(|d| d.annotation(labels::RESTORED_FROM));
        let mut records = ctx.records();
        if records
            .deleted_here
            .get(key)
            .is_none_or(|d| restored_from != Some(d.uid.as_str()))
        {
            records.deleted_here.remove(key);
        }
        return;
    }
    let name = restore_point::name_for(&key.namespace, &key.name);
    let unrecorded = ctx
        .stores
        .restore_point(&ctx.config.operator_namespace, &name)
        .is_some_and(|rp| rp.written.namespace_uid.is_none());
    let namespace = ctx
        .stores
        .namespace(&key.namespace)
        .filter(|ns| ns.metadata.deletion_timestamp.is_none())
        .and_then(|ns| ns.metadata.uid.clone());
    if let (true, Some(namespace_uid)) = (unrecorded, namespace) {
        ctx.records().deleted_here.insert(
            key.clone(),
            DeletedHere {
                uid: secret.uid.clone(),
                namespace_uid,
            },
        );
    }
}

/// The restore point in the cache holds this Secret's content already.
fn restore_point_holds(ctx: &Context, secret: &CachedSecret) -> bool {
    let name = restore_point::name_for(&secret.key.namespace, &secret.key.name);
    ctx.stores
        .restore_point(&ctx.config.operator_namespace, &name)
        .is_some_and(|rp| {
            rp.saved.as_ref().is_ok_and(|s| {
                rp.origin_uid() == secret.uid
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

pub fn on_restore_point(ctx: &Arc<Context>, rp: &CachedRestorePoint, deleted: bool) {
    let unreadable = rp.unreadable().filter(|_| !deleted);
    ctx.metrics.note_restore_point(&rp.key.name, unreadable);
    if let Some(reason) = unreadable {
        tracing::warn!(point = %rp.key, reason, "restore point this version cannot read");
    }
    let Some(key) = rp.origin().cloned() else {
        return;
    };
    if deleted {
        // A deleted restore point is rewritten from the live object.
        ctx.touch(key);
    } else {
        if rp.written.adopt_namespace_uid.is_some() {
            // A cluster admin allows it into a re-created namespace: act on it now.
            ctx.touch(key.clone());
        }
        // A refreshed one may carry a new restore count: the statuses of the guards
        // covering it sum them.
        let guards: Vec<ObjectKey> = ctx
            .records()
            .targets
            .get(&key)
            .map(|r| r.guards().cloned().collect())
            .unwrap_or_default();
        for guard in guards {
            status::request(ctx, guard);
        }
    }
}

/// Count the unreadable restore points afresh, from the cache (after a list: points
/// deleted while no watch ran vanish without an event).
pub fn recount_unreadable(ctx: &Context) {
    ctx.metrics.recount_restore_points(
        ctx.stores
            .restore_points
            .state()
            .iter()
            .map(|rp| (rp.key.name.clone(), rp.unreadable())),
    );
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
            ctx.touch_in(t, Lane::Background);
        }
        if deleted {
            // Its guards are gone too: start the retention of its restore points.
            for rp in ctx.stores.restore_points.state() {
                if let Some(origin) = rp.origin()
                    && origin.namespace == name
                {
                    ctx.touch_in(origin.clone(), Lane::Background);
                }
            }
        }
    }
}

/// Queue every guarded Secret, every restore point's origin and every labelled Secret, so
/// whatever the watches missed (or happened while the operator was down) is found. Each
/// is marked as the audit's first: a write that follows for it, before any event, is drift.
pub fn audit(ctx: &Context) {
    queue_all(ctx, |work| {
        if let Work::Target(key) = work {
            ctx.records().audit_pending.insert(key);
        }
    });
}

/// The first pass after start (and after a watch re-listed): the same work, but nothing it
/// finds is drift (there were no watches yet to miss anything). `each` sees every unit of
/// work as it is queued, duplicates included.
pub fn startup_pass(ctx: &Context, each: impl FnMut(&Work)) {
    queue_all(ctx, each);
}

/// Queue, in the background lane, every guarded Secret, every restore point's origin,
/// every cached Secret (the queue keeps one of each) and then every guard's status,
/// calling `each` with every unit just before it is queued. Nothing is collected first:
/// at 10,000 guarded Secrets, a sorted set of copied keys, the list of work made from it
/// and the audit's marks were 5 MiB at once, every five minutes.
fn queue_all(ctx: &Context, mut each: impl FnMut(&Work)) {
    let points = ctx.stores.restore_points.state();
    let secrets = ctx.stores.secrets.state();
    // Lock order: the index, then the records (in `each`); the queue's lock is its own.
    let index = ctx.index();
    let keys = index
        .target_keys()
        .chain(points.iter().filter_map(|rp| rp.origin()))
        .chain(secrets.iter().map(|s| &s.key));
    let mut queued = 0usize;
    for key in keys {
        let work = Work::Target(key.clone());
        each(&work);
        ctx.queue.add_in(work, Lane::Background);
        queued += 1;
    }
    let guards: Vec<ObjectKey> = index.guards().map(|g| g.key.clone()).collect();
    drop(index);
    for guard in guards {
        let work = Work::Status(guard);
        each(&work);
        ctx.queue.add_in(work, Lane::Background);
    }
    tracing::debug!(queued, "every guarded object queued");
}
