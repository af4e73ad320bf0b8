//! Step 1 of a reconcile: gather what one guarded Secret's decision needs, from the caches
//! first. The apiserver is asked only where a cache cannot know: a Secret without our
//! label (the cache holds labelled ones only) or cached without detail (no guard targeted
//! it then), a namespace or ServiceAccount so new that its watch event has not arrived (or
//! gone). The cost is proportional to this one object, never to the size of its guard.
//! The caches hold no Secret data: the whole Secret comes with the watch event that
//! showed it (`Context::take_content`), or from the GET.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::PartialObjectMeta;

use super::context::Context;
use super::decide::{self, Action, Decision, Policy, Refusal, SecretObservation, TokenObservation};
use super::index::settings_in_words;
use super::observe;
use super::spec::TargetSpec;
use super::state::Sharing;
use crate::api::v1alpha1::Severity;
use crate::cache::{CachedRestorePoint, CachedSecret, Saved};
use crate::object_key::ObjectKey;
use crate::restore_point::{self, NamespaceIdentity, RestorePoint};
use crate::{Result, labels};

/// The target's namespace, as one reconcile sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    /// Which namespace: one deleted and created again under the same name is another.
    Active(NamespaceIdentity),
    Terminating,
    Gone,
}

impl NamespaceState {
    pub fn active(&self) -> Option<&NamespaceIdentity> {
        match self {
            NamespaceState::Active(ns) => Some(ns),
            _ => None,
        }
    }
}

/// Everything a reconcile of one guarded Secret needs, gathered once.
#[derive(Clone, Debug)]
pub struct ObservedTarget {
    pub key: ObjectKey,
    /// The guard that reports it (the most protective of those covering it).
    pub guard: ObjectKey,
    pub guard_uid: String,
    /// Severity and policy in force: the most protective value of each setting among the
    /// guards covering it.
    pub severity: Severity,
    pub spec: TargetSpec,
    pub policy: Policy,
    /// Other guards cover it too.
    pub sharing: Option<Sharing>,
    /// The live Secret, as the cache holds it (always with its detail).
    pub live: Option<Arc<CachedSecret>>,
    /// The UID of the Secret that lived here: the one seen deleted from this namespace
    /// (`Records::deleted_here`) when the restore point saves that one, else the live one.
    /// A format-0 restore point that saves it was written here.
    pub last_uid: Option<String>,
    /// The whole Secret, data included, as the latest watch event (or the GET) showed it:
    /// the same version as `live`, or, when the Secret is gone, its final state. Held only
    /// for this reconcile: what a restore point is written from.
    pub content: Option<Arc<Secret>>,
    /// The live Secret was read from the apiserver in this reconcile (not only the cache).
    pub looked: bool,
    /// A readable restore point (never its data).
    pub restore_point: Option<Arc<CachedRestorePoint>>,
    /// Why the restore point must not be restored into this target, if it must not
    /// (saved in an earlier namespace of the same name, or recording another origin).
    pub restore_point_refused: Option<Refusal>,
    /// The resourceVersion of the restore point as read (readable or not): a save is made
    /// over this version only, so content older than the point's is never written over it.
    pub restore_point_version: Option<String>,
    /// The format of the restore point, when a newer version wrote it (this one neither
    /// reads nor overwrites it).
    pub newer_point_format: Option<String>,
    /// The ServiceAccount snapshot, only if it may be used here (see
    /// `observe::snapshot_usable`).
    pub sa_snapshot: Option<Arc<CachedRestorePoint>>,
    pub namespace: NamespaceState,
    /// For a token: its ServiceAccount (metadata).
    pub service_account: Option<PartialObjectMeta<ServiceAccount>>,
    /// The watch saw it deleted while it carried secretguard.dev/retire=true.
    pub deleted_retired: bool,
    /// What a check of its owners found, once made (a Secret saved with owners, about to
    /// be restored: `verify::owners`).
    pub owners: Option<decide::Owners>,
    /// How long it has been seen missing (zero: not missing, or not before this
    /// reconcile); a restore waits until this reaches the policy's restore delay.
    pub missing_for: Duration,
}

/// Gather what a reconcile of `key` needs. None: no guard names or selects it (any more).
pub async fn load(ctx: &Context, key: &ObjectKey) -> Result<Option<ObservedTarget>> {
    let opns = &ctx.config.operator_namespace;
    let point = ctx
        .stores
        .restore_point(opns, &restore_point::name_for(&key.namespace, &key.name));
    let restore_point_version = point.as_ref().map(|p| p.resource_version.clone());
    // A point a newer version wrote is left as it is: neither read nor overwritten.
    let newer_point_format = point
        .as_ref()
        .and_then(|p| p.saved.as_ref().err()?.newer_format().map(str::to_owned));
    let restore_point = point.filter(|p| match &p.saved {
        Ok(_) => true,
        Err(e) if e.is_newer_format() => false,
        Err(e) => {
            tracing::warn!(target = %key, error = %e, "ignoring unreadable restore point; it will be rewritten");
            false
        }
    });
    let cached = ctx.stores.secret(key);
    // Cached without detail: labelled while no guard targeted it; only the apiserver knows
    // what it is now.
    let bare = cached.as_ref().is_some_and(|s| s.detail.is_none());
    let mut live = cached.clone().filter(|_| !bare);
    let mut content = ctx.take_content(key).filter(|c| match &live {
        // The same version as the cache, or nothing.
        Some(l) => c.metadata.resource_version.as_deref() == Some(l.resource_version.as_str()),
        // The final state of a deleted Secret.
        None => cached.is_none(),
    });
    let mut looked = false;
    let mut guarding = Guarding::resolve(
        ctx,
        key,
        live.as_deref(),
        content.as_deref(),
        restore_point.as_deref(),
    );
    let may_be_selected = || ctx.index().has_selectors(&key.namespace);
    if (bare && (guarding.is_some() || may_be_selected()))
        || (guarding.is_none() && live.is_none() && may_be_selected())
    {
        // Not labelled by us (yet), or cached bare: a guard may target it. Look at it once.
        content = get_secret(ctx, key).await?.map(Arc::new);
        live = content
            .as_deref()
            .map(|s| Arc::new(CachedSecret::detailed(s)));
        looked = true;
        guarding = Guarding::resolve(ctx, key, live.as_deref(), None, restore_point.as_deref());
    }
    let Some(guarding) = guarding else {
        return Ok(None);
    };
    let namespace = namespace_state(ctx, &key.namespace).await?;
    // The Secret deleted here, when the restore point saves that one (it was restored
    // since, or is to be); else the live one.
    let deleted_here = ctx.records().deleted_here.get(key).cloned();
    let last_uid = deleted_here
        .filter(|d| Some(&d.namespace_uid) == namespace.active().map(|ns| &ns.uid))
        .map(|d| d.uid)
        .filter(|uid| {
            restore_point
                .as_ref()
                .is_some_and(|p| p.origin_uid() == uid)
        })
        .or_else(|| live.as_ref().map(|s| s.uid.clone()));
    let restore_point_refused = match (namespace.active(), &restore_point) {
        (Some(ns), Some(point)) => observe::restore_point_refusal(
            point,
            key,
            guarding.spec.kind(),
            ns,
            last_uid.as_deref(),
        ),
        _ => None,
    };
    if let Some(refusal) = restore_point_refused {
        if live.is_none() && ctx.index().resolve(key, None).is_none() {
            // Only a selector matched, and only the labels saved on a point that is not
            // this Secret's: nothing of this namespace to guard.
            return Ok(None);
        }
        tracing::debug!(target = %key, refusal = ?refusal, "restore point not used for this target");
    }
    let service_account = match (&guarding.spec, namespace.active()) {
        (
            TargetSpec::Token {
                service_account, ..
            },
            Some(_),
        ) => service_account_meta(ctx, &ObjectKey::new(&key.namespace, service_account)).await?,
        _ => None,
    };
    let sa_snapshot = match (&guarding.spec, namespace.active()) {
        (
            TargetSpec::Token {
                service_account: name,
                ..
            },
            Some(ns),
        ) => ctx
            .stores
            .restore_point(
                opns,
                &restore_point::snapshot_name_for(&key.namespace, &key.name),
            )
            .filter(|snapshot| {
                let sa_uid = service_account
                    .as_ref()
                    .and_then(|sa| sa.metadata.uid.as_deref());
                observe::snapshot_usable(snapshot, key, name, ns, sa_uid)
            }),
        _ => None,
    };
    let (deleted_retired, missing_for) = {
        let records = ctx.records();
        let missing_since = records.targets.get(key).and_then(|r| r.missing_since);
        (
            records.retired_deletions.contains_key(key),
            missing_since.map_or(Duration::ZERO, |since| since.elapsed()),
        )
    };
    Ok(Some(ObservedTarget {
        key: key.clone(),
        guard: guarding.guard,
        guard_uid: guarding.guard_uid,
        severity: guarding.severity,
        spec: guarding.spec,
        policy: guarding.policy,
        sharing: guarding.sharing,
        live,
        last_uid,
        content,
        looked,
        restore_point,
        restore_point_refused,
        restore_point_version,
        newer_point_format,
        sa_snapshot,
        namespace,
        service_account,
        deleted_retired,
        owners: None,
        missing_for,
    }))
}

/// The guards of a Secret and what is in force, copied out of the index (never a whole spec).
struct Guarding {
    guard: ObjectKey,
    guard_uid: String,
    severity: Severity,
    spec: TargetSpec,
    policy: Policy,
    sharing: Option<Sharing>,
}

impl Guarding {
    /// By name, or by selector on the live labels (when the Secret is gone, those of its
    /// final state or of its restore point, so a deleted selected Secret is still known as
    /// guarded). A restore point is never guarded, whoever names or selects it: guarding
    /// one would copy it into a restore point of its own, and so on without end.
    fn resolve(
        ctx: &Context,
        key: &ObjectKey,
        live: Option<&CachedSecret>,
        final_state: Option<&Secret>,
        rp: Option<&CachedRestorePoint>,
    ) -> Option<Guarding> {
        let labels = match (live.and_then(|s| s.detail.as_ref()), final_state) {
            (Some(d), _) => Some(d.labels_map()),
            (None, Some(s)) => s.metadata.labels.clone(),
            (None, None) => rp
                .and_then(|rp| rp.saved.as_ref().ok())
                .map(Saved::labels_map),
        };
        if labels.as_ref().is_some_and(is_restore_point) {
            return None;
        }
        ctx.index().resolve(key, labels.as_ref()).map(|r| Guarding {
            guard: r.guard.key.clone(),
            guard_uid: r.guard.uid.clone(),
            severity: r.settings.severity,
            policy: observe::policy(&r.settings, &r.spec, ctx.config.populate_deadline),
            sharing: (!r.shared_with.is_empty()).then(|| Sharing {
                with: r.shared_with.iter().map(|g| g.key.clone()).collect(),
                settings: settings_in_words(&r.settings),
            }),
            spec: r.spec,
        })
    }
}

impl ObservedTarget {
    /// The final state of the Secret, when it is gone and its deletion's event showed it.
    pub fn final_state(&self) -> Option<&Secret> {
        self.content.as_deref().filter(|_| self.live.is_none())
    }

    /// The restore point to decide with, and whether it still has to be saved: the final
    /// state of a deleted Secret, when the restore point does not hold it yet.
    fn latest_saved(&self) -> (Option<decide::RestorePointView>, bool) {
        let final_view = self
            .final_state()
            .map(|s| observe::secret_view(&CachedSecret::detailed(s)));
        decide::latest_saved(
            self.restore_point
                .as_deref()
                .and_then(|rp| observe::restore_point_view(rp, self.restore_point_refused)),
            final_view.as_ref(),
            matches!(self.spec, TargetSpec::Token { .. }),
        )
    }

    /// Step 2, pure: what to do about what was observed.
    pub fn decide(&self) -> Decision {
        let now = k8s_openapi::jiff::Timestamp::now();
        let namespace_terminating = self.namespace.active().is_none();
        let secret = self.live.as_deref().map(observe::secret_view);
        let token = matches!(self.spec, TargetSpec::Token { .. });
        if let Some(format) = self
            .newer_point_format
            .as_deref()
            .filter(|_| !namespace_terminating)
        {
            return decide::held_by_newer_point(&self.policy, secret.as_ref(), token, format);
        }
        let (restore_point, unsaved) = self.latest_saved();
        let decision = match &self.spec {
            TargetSpec::Token {
                service_account, ..
            } => {
                let sa = self.service_account.as_ref();
                let snapshot_rv = self
                    .sa_snapshot
                    .as_ref()
                    .and_then(|s| s.snapshot_resource_version.as_deref());
                decide::decide_token(
                    &self.policy,
                    &TokenObservation {
                        namespace_terminating,
                        service_account_name: service_account.clone(),
                        deleted_retired: self.deleted_retired,
                        sa_snapshot_current: snapshot_rv.is_some()
                            && snapshot_rv
                                == sa.and_then(|s| s.metadata.resource_version.as_deref()),
                        service_account: sa.map(observe::service_account_view),
                        secret,
                        restore_point,
                        has_sa_snapshot: self.sa_snapshot.is_some(),
                        rotating: self.sa_snapshot.as_ref().and_then(|s| s.rotating.clone()),
                        now,
                    },
                )
            }
            TargetSpec::Secret => decide::decide_secret(
                &self.policy,
                &SecretObservation {
                    namespace_terminating,
                    secret,
                    restore_point,
                    deleted_retired: self.deleted_retired,
                    owners: self.owners.clone(),
                },
            ),
        };
        let decision = if unsaved {
            decide::save_first(decision)
        } else {
            decision
        };
        decide::delay_restore(decision, &self.policy, self.missing_for, now)
    }

    /// The decision restores a Secret saved with owners (by its final state or its restore
    /// point), not checked yet: check them and decide again.
    pub fn owners_to_check(&self, decision: &Decision) -> bool {
        let saved_with_owners = self.final_state().is_some_and(|s| {
            s.metadata
                .owner_references
                .as_ref()
                .is_some_and(|o| !o.is_empty())
        }) || self.usable_saved().is_some_and(|s| s.owned);
        self.owners.is_none() && decide::owned_restore(decision, saved_with_owners)
    }

    /// Not in the label-filtered cache and not to be restored at once: it may exist
    /// without our label, and only the apiserver can tell. A Secret re-created during its
    /// restore delay (a CD tool replacing it) usually carries no label of ours: it is
    /// looked for before the restore, and kept if it is there.
    pub fn should_look(&self, decision: &Decision) -> bool {
        let at_once = decision.actions.contains(&Action::RestoreIdentical)
            && self.policy.restore_delay.is_zero();
        self.live.is_none() && !self.looked && !at_once
    }

    /// Read the live Secret from the apiserver.
    pub async fn look(&mut self, ctx: &Context) -> Result<()> {
        let found = get_secret(ctx, &self.key).await?;
        self.live = found.as_ref().map(|s| Arc::new(CachedSecret::detailed(s)));
        if let (None, Some(live)) = (&self.last_uid, &self.live) {
            self.last_uid = Some(live.uid.clone());
        }
        // What was seen of a deleted Secret still matters if it is gone.
        if found.is_some() || self.final_state().is_none() {
            self.content = found.map(Arc::new);
        }
        self.looked = true;
        Ok(())
    }

    /// The restore point, if it may be restored into this target (and counts as its
    /// saved copy).
    pub fn usable_restore_point(&self) -> Option<&CachedRestorePoint> {
        self.restore_point
            .as_deref()
            .filter(|_| self.restore_point_refused.is_none())
    }

    /// `usable_restore_point`, as decisions read it.
    pub fn usable_saved(&self) -> Option<&Saved> {
        self.usable_restore_point()?.saved.as_ref().ok()
    }

    /// The live Secret (read in this reconcile) is a restore point: never a target.
    pub fn is_restore_point(&self) -> bool {
        self.live
            .as_ref()
            .and_then(|s| s.detail.as_ref())
            .is_some_and(|d| d.label(labels::RESTORE_POINT).is_some())
    }

    /// The same Secret's content changed (a legitimate update the restore point follows).
    pub fn content_changed(&self) -> bool {
        let live = self.live.as_deref();
        match (
            live.and_then(|l| l.detail.as_ref()),
            self.usable_restore_point(),
            self.usable_saved(),
        ) {
            (Some(d), Some(point), Some(rp)) => {
                live.is_some_and(|l| l.uid == point.origin_uid())
                    && d.content_hash != rp.content_hash
            }
            _ => false,
        }
    }

    /// What a restore brings back, when this reconcile holds it: the deleted Secret's
    /// final state, if that is what the restore point holds (or is about to, see
    /// `decide::save_first`). Otherwise the restore reads the restore point.
    pub fn restore_from_final_state(&self) -> Option<RestorePoint> {
        let state = self.final_state()?;
        let view = self.latest_saved().0?;
        let seen = CachedSecret::detailed(state);
        let holds = view.refused.is_none()
            && seen.uid == view.origin_uid
            && seen
                .detail
                .as_ref()
                .is_some_and(|d| d.content_hash.to_string() == view.content_hash);
        if !holds {
            return None;
        }
        let kind = self.spec.kind();
        let point = restore_point::build(state, kind.as_str(), "", "", 0).ok()?;
        restore_point::parse(&point).ok()
    }
}

fn is_restore_point(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.contains_key(labels::RESTORE_POINT)
}

async fn get_secret(ctx: &Context, key: &ObjectKey) -> Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
    Ok(api.get_opt(&key.name).await?)
}

/// The namespace from the cache; one GET when the cache does not have it, because that
/// means either gone or so new that its watch event has not arrived (a Namespace, a
/// ServiceAccount and a guard applied in one request). Taking the second for the first
/// left such a guard inert until the next audit.
pub async fn namespace_state(ctx: &Context, namespace: &str) -> Result<NamespaceState> {
    let meta = match ctx.stores.namespace(namespace) {
        Some(ns) => Some(ns.metadata.clone()),
        None => Api::<Namespace>::all(ctx.client.clone())
            .get_metadata_opt(namespace)
            .await?
            .map(|ns| ns.metadata),
    };
    Ok(match meta {
        None => NamespaceState::Gone,
        Some(m) if m.deletion_timestamp.is_some() => NamespaceState::Terminating,
        Some(m) => NamespaceState::Active(NamespaceIdentity::of(&m)),
    })
}

/// A ServiceAccount from the cache, or, when the cache does not have it (deleted, or
/// created an instant ago), from the apiserver.
async fn service_account_meta(
    ctx: &Context,
    key: &ObjectKey,
) -> Result<Option<PartialObjectMeta<ServiceAccount>>> {
    if let Some(sa) = ctx.stores.service_account(key) {
        return Ok(Some((*sa).clone()));
    }
    Ok(
        Api::<ServiceAccount>::namespaced(ctx.client.clone(), &key.namespace)
            .get_metadata_opt(&key.name)
            .await?,
    )
}
