//! Step 1 of a reconcile: gather what one guarded Secret's decision needs, from the caches
//! first. The apiserver is asked only where a cache cannot know: a Secret without our
//! label (the cache holds labelled ones only), a namespace or ServiceAccount so new that
//! its watch event has not arrived (or gone). The cost is proportional to this one
//! object, never to the size of its guard.

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::PartialObjectMeta;

use super::context::Context;
use super::decide::{self, Action, Decision, Policy, SecretObservation, TokenObservation};
use super::observe;
use super::spec::TargetSpec;
use crate::Result;
use crate::api::v1alpha1::Severity;
use crate::object_key::ObjectKey;
use crate::restore_point::{self, RestorePoint};

/// The target's namespace, as one reconcile sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NamespaceState {
    Active,
    Terminating,
    Gone,
}

/// Everything a reconcile of one guarded Secret needs, gathered once.
#[derive(Clone, Debug)]
pub struct ObservedTarget {
    pub key: ObjectKey,
    pub guard: ObjectKey,
    pub guard_uid: String,
    pub severity: Severity,
    pub spec: TargetSpec,
    pub policy: Policy,
    pub live: Option<Secret>,
    /// The live Secret was read from the apiserver in this reconcile (not only the cache).
    pub looked: bool,
    pub restore_point: Option<RestorePoint>,
    /// The resourceVersion of the restore point as read (readable or not): a save is made
    /// over this version only, so content older than the point's is never written over it.
    pub restore_point_version: Option<String>,
    pub sa_snapshot: Option<Secret>,
    pub namespace: NamespaceState,
    /// For a token: its ServiceAccount (metadata).
    pub service_account: Option<PartialObjectMeta<ServiceAccount>>,
}

/// Gather what a reconcile of `key` needs. None: no guard names or selects it (any more).
pub async fn load(ctx: &Context, key: &ObjectKey) -> Result<Option<ObservedTarget>> {
    let opns = &ctx.config.operator_namespace;
    let cached_point = ctx
        .stores
        .restore_point(opns, &restore_point::name_for(&key.namespace, &key.name));
    let restore_point_version = cached_point
        .as_ref()
        .and_then(|s| s.metadata.resource_version.clone());
    let restore_point = cached_point.and_then(|s| match restore_point::parse(&s) {
            Ok(rp) => Some(rp),
            Err(e) => {
                tracing::warn!(target = %key, error = %e, "ignoring unreadable restore point; it will be rewritten");
                None
            }
        });
    let mut live = ctx.stores.secret(key).map(|s| (*s).clone());
    let mut looked = false;
    let mut guarding = Guarding::resolve(ctx, key, live.as_ref(), restore_point.as_ref());
    if guarding.is_none() && live.is_none() && ctx.index().has_selectors(&key.namespace) {
        // Not labelled by us (yet): a selector may match it. Look at it once.
        live = get_secret(ctx, key).await?;
        looked = true;
        guarding = Guarding::resolve(ctx, key, live.as_ref(), restore_point.as_ref());
    }
    let Some(guarding) = guarding else {
        return Ok(None);
    };
    let namespace = namespace_state(ctx, &key.namespace).await?;
    let service_account = match &guarding.spec {
        TargetSpec::Token {
            service_account, ..
        } if namespace == NamespaceState::Active => {
            service_account_meta(ctx, &ObjectKey::new(&key.namespace, service_account)).await?
        }
        _ => None,
    };
    let sa_snapshot = ctx
        .stores
        .restore_point(
            opns,
            &restore_point::snapshot_name_for(&key.namespace, &key.name),
        )
        .map(|s| (*s).clone());
    Ok(Some(ObservedTarget {
        key: key.clone(),
        guard: guarding.guard,
        guard_uid: guarding.guard_uid,
        severity: guarding.severity,
        spec: guarding.spec,
        policy: guarding.policy,
        live,
        looked,
        restore_point,
        restore_point_version,
        sa_snapshot,
        namespace,
        service_account,
    }))
}

/// The guard of a Secret and what it asks, copied out of the index (never its whole spec).
struct Guarding {
    guard: ObjectKey,
    guard_uid: String,
    severity: Severity,
    spec: TargetSpec,
    policy: Policy,
}

impl Guarding {
    /// By name, or by selector on the live labels (the restore point's when the Secret is
    /// gone, so a deleted selected Secret is still known as guarded).
    fn resolve(
        ctx: &Context,
        key: &ObjectKey,
        live: Option<&Secret>,
        rp: Option<&RestorePoint>,
    ) -> Option<Guarding> {
        let labels = match live {
            Some(s) => s.metadata.labels.as_ref(),
            None => rp.map(|rp| &rp.labels),
        };
        ctx.index().resolve(key, labels).map(|r| Guarding {
            guard: r.guard.key.clone(),
            guard_uid: r.guard.uid.clone(),
            severity: r.guard.spec.severity,
            policy: observe::policy(&r.guard.spec, &r.spec, ctx.config.populate_deadline),
            spec: r.spec,
        })
    }
}

impl ObservedTarget {
    /// Step 2, pure: what to do about what was observed.
    pub fn decide(&self) -> Decision {
        let namespace_terminating = self.namespace != NamespaceState::Active;
        let secret = self.live.as_ref().map(observe::secret_view);
        let restore_point = self.restore_point.as_ref().map(observe::restore_point_view);
        match &self.spec {
            TargetSpec::Token { .. } => {
                let sa = self.service_account.as_ref();
                let snapshot_rv = self
                    .sa_snapshot
                    .as_ref()
                    .and_then(restore_point::snapshot_resource_version);
                decide::decide_token(
                    &self.policy,
                    &TokenObservation {
                        namespace_terminating,
                        sa_snapshot_current: snapshot_rv.is_some()
                            && snapshot_rv
                                == sa.and_then(|s| s.metadata.resource_version.as_deref()),
                        service_account: sa.map(observe::service_account_view),
                        secret,
                        restore_point,
                        has_sa_snapshot: self.sa_snapshot.is_some(),
                        now: k8s_openapi::jiff::Timestamp::now(),
                    },
                )
            }
            TargetSpec::Secret => decide::decide_secret(
                &self.policy,
                &SecretObservation {
                    namespace_terminating,
                    secret,
                    restore_point,
                },
            ),
        }
    }

    /// Not in the label-filtered cache and not to be restored: it may exist without our
    /// label, and only the apiserver can tell.
    pub fn should_look(&self, decision: &Decision) -> bool {
        self.live.is_none() && !self.looked && !decision.actions.contains(&Action::RestoreIdentical)
    }

    /// Read the live Secret from the apiserver.
    pub async fn look(&mut self, ctx: &Context) -> Result<()> {
        self.live = get_secret(ctx, &self.key).await?;
        self.looked = true;
        Ok(())
    }

    /// The same Secret's content changed (a legitimate update the restore point follows).
    pub fn content_changed(&self) -> bool {
        match (&self.live, &self.restore_point) {
            (Some(live), Some(rp)) => {
                live.metadata.uid.as_deref() == Some(rp.origin_uid.as_str())
                    && restore_point::secret_hash(live) != rp.content_hash
            }
            _ => false,
        }
    }
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
        Some(_) => NamespaceState::Active,
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
