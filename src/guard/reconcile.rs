//! One guarded Secret: observe it (stores first, one GET only when the label-filtered store
//! cannot know), decide (pure), carry out the actions, and report incidents. The cost is
//! proportional to this one object, never to the size of its guard.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::ObjectRef;
use kube::api::{
    Api, DeleteParams, DynamicObject, GroupVersionKind, ObjectMeta, Patch, PatchParams, PostParams,
    Preconditions,
};
use serde_json::json;

use super::decide::{
    self, Action, Decision, Reason, SecretObservation, TargetState, TokenObservation,
};
use super::incident::{self, Outcome};
use super::index::{ObjectKey, TargetSpec};
use super::observe;
use crate::api::v1alpha1::SecretGuardSpec;
use crate::controller::{Context, TargetRecord};
use crate::labels;
use crate::restore_point::{self, RestorePoint};
use crate::{Error, Result, fault};

/// Everything a reconcile of one target needs, gathered once.
struct Target {
    key: ObjectKey,
    guard: ObjectKey,
    guard_uid: String,
    guard_spec: SecretGuardSpec,
    spec: TargetSpec,
    policy: decide::Policy,
    live: Option<Secret>,
    restore_point: Option<RestorePoint>,
    sa_snapshot: Option<Secret>,
    namespace: NamespaceState,
    /// For a token: its ServiceAccount (metadata), looked up once.
    service_account: Option<PartialObjectMeta<ServiceAccount>>,
}

/// The target's namespace, as one reconcile sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum NamespaceState {
    Active,
    Terminating,
    Gone,
}

/// The namespace from the cache; one GET when the cache does not have it, because that
/// means either gone or so new that its watch event has not arrived (a Namespace, a
/// ServiceAccount and a guard applied in one request). Taking the second for the first
/// left such a guard inert until the next audit.
async fn namespace_state(ctx: &Context, namespace: &str) -> Result<NamespaceState> {
    let meta = match ctx.stores.namespaces.get(&ObjectRef::new(namespace)) {
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
    Ok(Api::<ServiceAccount>::namespaced(ctx.client.clone(), &key.namespace)
        .get_metadata_opt(&key.name)
        .await?)
}

/// What carrying out the actions achieved.
#[derive(Debug, Default)]
pub struct Results {
    pub done: Vec<Action>,
    pub failed: Option<(Action, String)>,
    /// For an identical token restore: did a TokenReview accept the restored token?
    pub verified: Option<bool>,
    /// The same Secret's content changed (a legitimate update the restore point follows).
    pub content_changed: bool,
}

impl Results {
    pub fn did(&self, action: &Action) -> bool {
        self.done.contains(action)
    }

    /// A token Secret was created (for the tokens controller to fill).
    pub fn created_token(&self) -> bool {
        self.done
            .iter()
            .any(|a| matches!(a, Action::CreateTokenSecret { .. }))
    }

    fn wrote(&self) -> bool {
        !self.done.is_empty()
    }
}

pub async fn reconcile_target(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let from_audit = ctx.memory().audit_pending.remove(key);
    let opns = &ctx.config.operator_namespace;
    let restore_point = ctx
        .stores
        .restore_point(opns, &restore_point::name_for(&key.namespace, &key.name))
        .and_then(|s| match restore_point::parse(&s) {
            Ok(rp) => Some(rp),
            Err(e) => {
                tracing::warn!(target = %key, error = %e, "ignoring unreadable restore point; it will be rewritten");
                None
            }
        });
    let mut live = ctx.stores.secret(key).map(|s| (*s).clone());
    let mut looked = false;
    let mut resolved = resolve(ctx, key, live.as_ref(), restore_point.as_ref());
    if resolved.is_none() && live.is_none() && ctx.index().has_selectors(&key.namespace) {
        // Not labelled by us (yet): a selector may match it. Look at it once.
        live = get_secret(ctx, key).await?;
        looked = true;
        resolved = resolve(ctx, key, live.as_ref(), restore_point.as_ref());
    }
    let Some((guard, guard_uid, guard_spec, spec)) = resolved else {
        return unguard(ctx, key).await;
    };
    keep_restore_points(ctx, key).await?;
    let namespace = namespace_state(ctx, &key.namespace).await?;
    let service_account = match &spec {
        TargetSpec::Token {
            service_account, ..
        } if namespace == NamespaceState::Active => {
            service_account_meta(ctx, &ObjectKey::new(&key.namespace, service_account)).await?
        }
        _ => None,
    };
    let policy = observe::policy(&guard_spec, &spec, ctx.config.populate_deadline);
    let sa_snapshot = ctx
        .stores
        .restore_point(
            opns,
            &restore_point::snapshot_name_for(&key.namespace, &key.name),
        )
        .map(|s| (*s).clone());
    let mut t = Target {
        key: key.clone(),
        guard,
        guard_uid,
        guard_spec,
        spec,
        policy,
        live,
        restore_point,
        sa_snapshot,
        namespace,
        service_account,
    };

    let mut decision = decide_now(ctx, &t);
    if t.live.is_none() && !looked && !decision.actions.contains(&Action::RestoreIdentical) {
        // Not in the label-filtered store: it may exist without our label. Look once.
        t.live = get_secret(ctx, key).await?;
        looked = true;
        if t.live.is_some() {
            decision = decide_now(ctx, &t);
        }
    }
    tracing::debug!(target = %key, guard = %t.guard, state = ?decision.state, actions = ?decision.actions, incidents = ?decision.incidents, requeue = ?decision.requeue_after, "decided");
    let started = Instant::now();
    if decision.actions.contains(&Action::RestoreIdentical) {
        fault::point(fault::points::DELETION_SEEN);
    }
    let mut results = execute(ctx, &t, &decision).await;
    results.content_changed = content_changed(&t);
    if matches!(&results.failed, Some((_, why)) if why == ALREADY_EXISTS) && !looked {
        // Someone (or our own earlier attempt) re-created it meanwhile: look and decide again.
        t.live = get_secret(ctx, key).await?;
        decision = decide_now(ctx, &t);
        results = execute(ctx, &t, &decision).await;
        results.content_changed = content_changed(&t);
    }
    record(ctx, &t, &decision, &results, started).await;
    if from_audit && results.wrote() {
        ctx.memory()
            .guards
            .entry(t.guard.clone())
            .or_default()
            .audit_drift += 1;
        ctx.metrics
            .audit_drift
            .get_or_create(&crate::metrics::Guard {
                namespace: t.guard.namespace.clone(),
                guard: t.guard.name.clone(),
            })
            .inc();
        tracing::warn!(target = %key, guard = %t.guard, actions = ?results.done, "audit found drift the watches missed");
    }
    match results.failed {
        Some((action, why)) if why != ALREADY_EXISTS => {
            Err(Error::Action(format!("{action:?}: {why}")))
        }
        _ => Ok(decision.requeue_after),
    }
}

fn content_changed(t: &Target) -> bool {
    match (&t.live, &t.restore_point) {
        (Some(live), Some(rp)) => {
            live.metadata.uid.as_deref() == Some(rp.origin_uid.as_str())
                && restore_point::secret_hash(live) != rp.content_hash
        }
        _ => false,
    }
}

/// The guard of a Secret: by name, or by selector on the live labels (the restore point's
/// when the Secret is gone, so a deleted selected Secret is still known as guarded).
fn resolve(
    ctx: &Context,
    key: &ObjectKey,
    live: Option<&Secret>,
    rp: Option<&RestorePoint>,
) -> Option<(ObjectKey, String, SecretGuardSpec, TargetSpec)> {
    let labels = match live {
        Some(s) => s.metadata.labels.as_ref(),
        None => rp.map(|rp| &rp.labels),
    };
    ctx.index().resolve(key, labels).map(|r| {
        (
            r.guard.key.clone(),
            r.guard.uid.clone(),
            r.guard.spec.clone(),
            r.spec,
        )
    })
}

fn decide_now(ctx: &Context, t: &Target) -> Decision {
    let namespace_terminating = t.namespace != NamespaceState::Active;
    let secret = t.live.as_ref().map(observe::secret_view);
    let restore_point = t.restore_point.as_ref().map(observe::restore_point_view);
    match &t.spec {
        TargetSpec::Token { .. } => {
            let sa = t.service_account.as_ref();
            let snapshot_rv = t
                .sa_snapshot
                .as_ref()
                .and_then(|s| restore_point::snapshot_resource_version(s).map(str::to_owned));
            decide::decide_token(
                &t.policy,
                &TokenObservation {
                    namespace_terminating,
                    sa_snapshot_current: snapshot_rv.is_some()
                        && snapshot_rv
                            == sa
                                .as_ref()
                                .and_then(|s| s.metadata.resource_version.clone()),
                    service_account: sa.map(observe::service_account_view),
                    secret,
                    restore_point,
                    has_sa_snapshot: t.sa_snapshot.is_some(),
                    now: k8s_openapi::jiff::Timestamp::now(),
                },
            )
        }
        TargetSpec::Secret => decide::decide_secret(
            &t.policy,
            &SecretObservation {
                namespace_terminating,
                secret,
                restore_point,
            },
        ),
    }
}

const ALREADY_EXISTS: &str = "AlreadyExists";

/// Carry out the actions in order; stop at the first failure.
async fn execute(ctx: &Context, t: &Target, decision: &Decision) -> Results {
    let mut results = Results::default();
    for action in &decision.actions {
        match execute_one(ctx, t, action).await {
            Ok(verified) => {
                if verified.is_some() {
                    results.verified = verified;
                }
                results.done.push(action.clone());
            }
            Err(Error::Kube(kube::Error::Api(s)))
                if s.code == 409 && s.reason == ALREADY_EXISTS =>
            {
                results.failed = Some((action.clone(), ALREADY_EXISTS.into()));
                break;
            }
            Err(e) => {
                results.failed = Some((action.clone(), e.to_string()));
                break;
            }
        }
    }
    results
}

fn manager() -> PostParams {
    PostParams {
        field_manager: Some(labels::MANAGER.into()),
        ..Default::default()
    }
}

fn apply() -> PatchParams {
    PatchParams::apply(labels::MANAGER).force()
}

/// Carry out one action. Returns Some(verified) for an identical token restore.
async fn execute_one(ctx: &Context, t: &Target, action: &Action) -> Result<Option<bool>> {
    let client = &ctx.client;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &t.key.namespace);
    let rps: Api<Secret> = Api::namespaced(client.clone(), &ctx.config.operator_namespace);
    let name = &t.key.name;
    match action {
        Action::CreateTokenSecret { restore_of } => {
            let TargetSpec::Token {
                service_account, ..
            } = &t.spec
            else {
                return Ok(None);
            };
            let secret = Secret {
                metadata: ObjectMeta {
                    name: Some(name.clone()),
                    namespace: Some(t.key.namespace.clone()),
                    labels: Some(BTreeMap::from([(
                        labels::GUARDED.to_owned(),
                        "true".to_owned(),
                    )])),
                    annotations: Some(
                        [
                            (labels::SA_NAME_ANNOTATION, Some(service_account)),
                            (labels::RESTORED_FROM, restore_of.as_ref()),
                        ]
                        .into_iter()
                        .filter_map(|(k, v)| Some((k.to_owned(), v?.clone())))
                        .collect(),
                    ),
                    ..Default::default()
                },
                type_: Some(labels::TOKEN_TYPE.into()),
                ..Default::default()
            };
            secrets.create(&manager(), &secret).await?;
        }
        Action::RestoreIdentical => {
            let Some(rp) = &t.restore_point else {
                return Err(Error::Action("no restore point to restore from".into()));
            };
            let drop: &[&str] = if t.guard_spec.revalidate {
                &[labels::LEGACY_TOKEN_INVALID_SINCE]
            } else {
                &[]
            };
            let mut secret = restore_point::restored_secret(rp, drop);
            let owners = live_owners(ctx, &t.key.namespace, &rp.owner_references).await;
            secret.metadata.owner_references = (!owners.is_empty()).then_some(owners);
            fault::point(fault::points::RESTORE_POINT_READ);
            secrets.create(&manager(), &secret).await?;
            fault::point(fault::points::CREATE_SENT);
            if let TargetSpec::Token {
                service_account, ..
            } = &t.spec
            {
                let token = rp
                    .data
                    .get("token")
                    .map(|b| b.0.as_slice())
                    .unwrap_or_default();
                return Ok(Some(
                    verify_token(ctx, &t.key.namespace, service_account, token).await,
                ));
            }
        }
        Action::Label => {
            let patch = json!({
                "apiVersion": "v1", "kind": "Secret",
                "metadata": {"name": name, "namespace": t.key.namespace,
                             "labels": {labels::GUARDED: "true"}},
            });
            secrets.patch(name, &apply(), &Patch::Apply(&patch)).await?;
        }
        Action::SaveRestorePoint => {
            let Some(live) = &t.live else {
                return Ok(None);
            };
            let restores = restore_point::next_restores(t.restore_point.as_ref(), live);
            if t.restore_point
                .as_ref()
                .is_some_and(|rp| restores > rp.restores)
            {
                fault::point(fault::points::COUNT_NOT_SAVED);
            }
            let rp = restore_point::build(
                live,
                t.spec.kind(),
                &ctx.config.operator_namespace,
                restores,
            );
            let rp_name = rp.metadata.name.clone().unwrap_or_default();
            rps.patch(&rp_name, &apply(), &Patch::Apply(&rp)).await?;
        }
        Action::RemoveInvalidLabel => {
            let patch = json!({"metadata": {"labels": {labels::LEGACY_TOKEN_INVALID_SINCE: null}}});
            secrets
                .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
                .await?;
        }
        Action::RotateServiceAccount { uid } => {
            let Some((sa, snapshot)) = snapshot_service_account(ctx, t).await? else {
                return Ok(None);
            };
            if sa.metadata.uid.as_deref() != Some(uid.as_str()) {
                return Ok(None); // already re-created
            }
            let fresh = restore_point::parse_sa_snapshot(&snapshot)
                .ok_or_else(|| Error::Action("unreadable ServiceAccount snapshot".into()))?;
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &t.key.namespace);
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: Some(uid.clone()),
                    resource_version: None,
                }),
                ..Default::default()
            };
            sas.delete(&sa.metadata.name.clone().unwrap_or_default(), &dp)
                .await?;
            sas.create(&manager(), &fresh).await?;
        }
        Action::RecreateServiceAccount => {
            let Some(sa) = t
                .sa_snapshot
                .as_ref()
                .and_then(restore_point::parse_sa_snapshot)
            else {
                return Err(Error::Action("no ServiceAccount snapshot".into()));
            };
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &t.key.namespace);
            tolerate(sas.create(&manager(), &sa).await, &[409])?;
        }
        Action::SaveServiceAccountSnapshot => {
            snapshot_service_account(ctx, t).await?;
        }
    }
    Ok(None)
}

/// The owner references whose owner still exists (same UID). A restored Secret pointing at
/// a deleted owner would be deleted again by the garbage collector. An owner that cannot be
/// checked (unknown kind, no permission to read it) is dropped too, and said so in the log.
async fn live_owners(
    ctx: &Context,
    namespace: &str,
    owners: &[OwnerReference],
) -> Vec<OwnerReference> {
    let mut kept = Vec::new();
    for owner in owners {
        let gvk = GroupVersionKind::from(owner.clone());
        let exists = match kube::discovery::pinned_kind(&ctx.client, &gvk).await {
            Ok((resource, caps)) => {
                let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
                    Api::namespaced_with(ctx.client.clone(), namespace, &resource)
                } else {
                    Api::all_with(ctx.client.clone(), &resource)
                };
                match api.get_metadata_opt(&owner.name).await {
                    Ok(found) => {
                        found.is_some_and(|o| o.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                    }
                    Err(e) => {
                        tracing::warn!(namespace, owner = %owner.name, kind = %owner.kind, error = %e, "cannot check owner; restoring without this ownerReference");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(namespace, owner = %owner.name, kind = %owner.kind, error = %e, "unknown owner kind; restoring without this ownerReference");
                false
            }
        };
        if exists {
            kept.push(owner.clone());
        }
    }
    kept
}

/// Read the target's ServiceAccount and save its snapshot; returns both.
async fn snapshot_service_account(
    ctx: &Context,
    t: &Target,
) -> Result<Option<(ServiceAccount, Secret)>> {
    let TargetSpec::Token {
        service_account, ..
    } = &t.spec
    else {
        return Ok(None);
    };
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &t.key.namespace);
    let Some(sa) = sas.get_opt(service_account).await? else {
        return Ok(None);
    };
    let opns = &ctx.config.operator_namespace;
    let snapshot = restore_point::build_sa_snapshot(&sa, &t.key.name, opns);
    let name = snapshot.metadata.name.clone().unwrap_or_default();
    Api::<Secret>::namespaced(ctx.client.clone(), opns)
        .patch(&name, &apply(), &Patch::Apply(&snapshot))
        .await?;
    Ok(Some((sa, snapshot)))
}

/// Treat these API error codes as success (404 on a delete: already gone; 409 on a create
/// or a precondition: someone else got there first).
fn tolerate<T>(result: kube::Result<T>, codes: &[u16]) -> Result<()> {
    match result {
        Err(kube::Error::Api(s)) if codes.contains(&s.code) => Ok(()),
        r => r.map(|_| ()).map_err(Error::from),
    }
}

async fn get_secret(ctx: &Context, key: &ObjectKey) -> Result<Option<Secret>> {
    let api: Api<Secret> = Api::namespaced(ctx.client.clone(), &key.namespace);
    Ok(api.get_opt(&key.name).await?)
}

/// Ask the apiserver whether a restored token authenticates as its ServiceAccount.
async fn verify_token(ctx: &Context, namespace: &str, service_account: &str, token: &[u8]) -> bool {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(String::from_utf8_lossy(token).into_owned()),
            audiences: None,
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(ctx.client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => r.status.is_some_and(|s| {
            s.authenticated == Some(true)
                && s.user.and_then(|u| u.username)
                    == Some(format!(
                        "system:serviceaccount:{namespace}:{service_account}"
                    ))
        }),
        Err(e) => {
            tracing::warn!(namespace, service_account, error = %e, "TokenReview failed");
            false
        }
    }
}

/// Update what is remembered about the target, and report what is new.
async fn record(
    ctx: &Context,
    t: &Target,
    decision: &Decision,
    results: &Results,
    started: Instant,
) {
    let Some(mut state) = decision.state else {
        return;
    };
    let restored = results.did(&Action::RestoreIdentical)
        || (results.created_token() && decision.incidents.contains(&Reason::TokenDeleted));
    if restored {
        state = TargetState::Pending;
    }
    let (new, restore_seconds, changed) = {
        let mut m = ctx.memory();
        let rec = m
            .targets
            .entry(t.key.clone())
            .or_insert_with(|| TargetRecord {
                guard: t.guard.clone(),
                kind: t.spec.kind(),
                state,
                reported: Default::default(),
                missing_since: None,
            });
        rec.guard = t.guard.clone();
        rec.kind = t.spec.kind();
        if decision.state.is_some_and(TargetState::is_missing) {
            rec.missing_since.get_or_insert(started);
        }
        let new: Vec<Reason> = decision
            .incidents
            .iter()
            .copied()
            .filter(|r| !rec.reported.contains(r))
            .collect();
        rec.reported.extend(new.iter().copied());
        let restore_seconds = restored
            .then(|| rec.missing_since.take().map(|s| s.elapsed().as_secs_f64()))
            .flatten();
        if state == TargetState::Healthy {
            rec.reported.clear();
            rec.missing_since = None;
        }
        let changed = rec.state != state;
        rec.state = state;
        (new, restore_seconds, changed)
    };
    export(ctx, t, state, &new, results, restored, restore_seconds);
    push_alerts(ctx, t, state, changed, &new, results);
    for reason in &new {
        let outcome = Outcome::of(*reason, results, t.policy.paused);
        incident::report(
            ctx,
            &t.guard,
            &t.guard_uid,
            &t.guard_spec,
            &t.key,
            t.spec.kind(),
            t.live.as_ref(),
            *reason,
            outcome,
            restore_seconds,
        )
        .await;
    }
    incident::report_follow_ups(
        ctx,
        &t.guard,
        &t.guard_uid,
        &t.guard_spec,
        &t.key,
        &t.spec,
        decision,
        results,
        restore_seconds,
    )
    .await;
    if changed || !new.is_empty() || results.wrote() {
        ctx.request_status(t.guard.clone());
    }
}

/// Metrics for one reconcile: counters for what happened, per-object gauges for what is
/// wrong now (removed once it is not).
fn export(
    ctx: &Context,
    t: &Target,
    state: TargetState,
    new: &[Reason],
    results: &Results,
    restored: bool,
    restore_seconds: Option<f64>,
) {
    use crate::metrics as m;
    let (ns, guard, kind) = (&t.guard.namespace, &t.guard.name, t.spec.kind());
    let metrics = &ctx.metrics;
    for reason in new {
        metrics
            .incidents
            .get_or_create(&m::Incident {
                namespace: ns.clone(),
                guard: guard.clone(),
                kind: kind.into(),
                reason: reason.as_str().into(),
            })
            .inc();
    }
    let restore_failed = results.failed.as_ref().is_some_and(|(a, why)| {
        why != ALREADY_EXISTS
            && matches!(
                a,
                Action::RestoreIdentical
                    | Action::CreateTokenSecret {
                        restore_of: Some(_)
                    }
            )
    });
    let outcome = if restore_failed {
        Some("failed")
    } else if results.did(&Action::RestoreIdentical) {
        Some("identical")
    } else if restored {
        Some("fresh")
    } else {
        None
    };
    if let Some(outcome) = outcome {
        metrics
            .restores
            .get_or_create(&m::Restore {
                namespace: ns.clone(),
                guard: guard.clone(),
                kind: kind.into(),
                outcome: outcome.into(),
            })
            .inc();
    }
    if let Some(secs) = restore_seconds {
        metrics
            .restore_duration
            .get_or_create(&m::Kind { kind: kind.into() })
            .observe(secs);
    }
    let object = m::Object {
        namespace: ns.clone(),
        guard: guard.clone(),
        kind: kind.into(),
        name: t.key.name.clone(),
    };
    let flag = |family: &prometheus_client::metrics::family::Family<
        m::Object,
        prometheus_client::metrics::gauge::Gauge,
    >,
                on: bool| {
        if on {
            family.get_or_create(&object).set(1);
        } else {
            family.remove(&object);
        }
    };
    flag(&metrics.object_missing, state.is_missing() && !restored);
    flag(&metrics.restore_failing, restore_failed);
    flag(&metrics.token_invalid, state == TargetState::Invalidated);
    flag(
        &metrics.token_not_populated,
        state == TargetState::NotPopulated,
    );
    match t.live.as_ref().and_then(last_used_if_unused_for_30_days) {
        Some(ts) => {
            metrics.token_last_used.get_or_create(&object).set(ts);
        }
        None => {
            metrics.token_last_used.remove(&object);
        }
    }
}

/// Alerts straight to Alertmanager (when configured): new incidents fire, a failing restore
/// fires, and an object that is healthy again resolves its state alerts.
fn push_alerts(
    ctx: &Context,
    t: &Target,
    state: TargetState,
    changed: bool,
    new: &[Reason],
    results: &Results,
) {
    let Some(alerter) = &ctx.alerter else {
        return;
    };
    let kind = t.spec.kind();
    let alert = |alertname: &'static str, reason: &str, description: String| crate::alerts::Alert {
        alertname,
        object: t.key.clone(),
        guard: t.guard.name.clone(),
        kind: kind.into(),
        reason: reason.into(),
        severity: incident::severity(&t.guard_spec).into(),
        summary: format!("{reason}: {kind} {}", t.key),
        description,
    };
    for reason in new {
        if let Some(alertname) = crate::alerts::alert_name(*reason) {
            alerter.fire(alert(
                alertname,
                reason.as_str(),
                incident::explain(*reason, kind, &t.key),
            ));
        }
    }
    if let Some((action, why)) = &results.failed
        && why != ALREADY_EXISTS
    {
        let mut why = why.clone();
        why.truncate(300);
        alerter.fire(alert(
            crate::alerts::RESTORE_FAILING,
            "RestoreFailed",
            format!("{action:?} for {kind} {} keeps failing: {why}", t.key),
        ));
    }
    if state == TargetState::Healthy && changed {
        alerter.resolve(t.key.clone());
    }
}

/// Seconds since the epoch of a token's last use (the apiserver's
/// kubernetes.io/legacy-token-last-used date, else its creation), when that is 30 days
/// ago or more: only then is it exported, as a token at risk of the legacy token cleaner.
fn last_used_if_unused_for_30_days(secret: &Secret) -> Option<f64> {
    if secret.type_.as_deref() != Some(labels::TOKEN_TYPE) {
        return None;
    }
    let meta = &secret.metadata;
    let last = match meta
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::LEGACY_TOKEN_LAST_USED))
    {
        Some(date) => date
            .parse::<k8s_openapi::jiff::civil::Date>()
            .ok()?
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp(),
        None => meta.creation_timestamp.as_ref()?.0,
    };
    let age = k8s_openapi::jiff::Timestamp::now().duration_since(last);
    (age.as_secs() >= 30 * 24 * 3600).then(|| last.as_second() as f64)
}

/// A Secret no guard names any more: take our label off and forget its restore point.
/// Restore points of a deleted namespace are kept for `restore_point_retention` (it may be
/// re-created from a backup, guards included), then dropped.
async fn unguard(ctx: &Context, key: &ObjectKey) -> Result<Option<Duration>> {
    let removed = ctx.memory().targets.remove(key);
    if let Some(rec) = &removed {
        ctx.request_status(rec.guard.clone());
        ctx.metrics
            .forget_object(&rec.guard.namespace, &rec.guard.name, rec.kind, &key.name);
        if let Some(alerter) = &ctx.alerter {
            alerter.resolve(key.clone());
        }
    }
    match namespace_state(ctx, &key.namespace).await? {
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
        let left = match restore_point::orphaned_since(&rp) {
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
async fn keep_restore_points(ctx: &Context, key: &ObjectKey) -> Result<()> {
    let opns = &ctx.config.operator_namespace;
    for name in restore_point_names(key) {
        if ctx
            .stores
            .restore_point(opns, &name)
            .is_some_and(|rp| restore_point::orphaned_since(&rp).is_some())
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
