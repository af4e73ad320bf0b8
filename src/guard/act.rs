//! Step 3 of a reconcile: carry out the decided actions against the cluster, in order,
//! stopping at the first failure. One function per action; each failure keeps its action
//! and its source error (`outcome::Failure`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{
    Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions, PropagationPolicy,
};
use serde_json::json;

use super::context::Context;
use super::decide::{Action, Decision, Tombstone};
use super::load::ObservedTarget;
use super::observe;
use super::outcome::{Executed, Failure, TokenCheck};
use super::spec::TargetSpec;
use super::verify;
use crate::cache::CachedRestorePoint;
use crate::error::ActionError;
use crate::object_key::ObjectKey;
use crate::{fault, labels, restore_point};

type ActionResult<T = ()> = std::result::Result<T, ActionError>;

/// Carry out the actions in order; stop at the first failure.
pub async fn execute(ctx: &Context, target: &ObservedTarget, decision: &Decision) -> Executed {
    let mut executed = Executed::default();
    for action in &decision.actions {
        let result = match action {
            Action::CreateTokenSecret { restore_of } => {
                create_token_secret(ctx, target, restore_of.as_ref()).await
            }
            Action::RestoreIdentical => match restore_identical(ctx, target).await {
                Ok(verified) => {
                    executed.verified = verified;
                    Ok(())
                }
                Err(e) => Err(e),
            },
            Action::Label => label(ctx, &target.key).await,
            Action::SaveRestorePoint => save_restore_point(ctx, target).await,
            Action::RemoveInvalidLabel => remove_invalid_label(ctx, target).await,
            Action::RotateServiceAccount { uid } => rotate_service_account(ctx, target, uid).await,
            Action::RecreateServiceAccount => recreate_service_account(ctx, target).await,
            Action::SaveServiceAccountSnapshot => snapshot_service_account(ctx, target).await,
            Action::ForgetRestorePoint(why) => forget_restore_point(ctx, target, *why).await,
        };
        match result {
            Ok(()) => executed.done.push(action.clone()),
            Err(error) => {
                executed.failed = Some(Failure {
                    action: action.clone(),
                    error,
                });
                break;
            }
        }
    }
    executed
}

/// Creates carry our field manager.
pub fn create_params() -> PostParams {
    PostParams {
        field_manager: Some(labels::MANAGER.into()),
        ..Default::default()
    }
}

/// Server-side apply as `secretguard`, taking over the fields it sets.
pub fn apply_params() -> PatchParams {
    PatchParams::apply(labels::MANAGER).force()
}

fn secrets(ctx: &Context, namespace: &str) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), namespace)
}

fn restore_points(ctx: &Context) -> Api<Secret> {
    Api::namespaced(ctx.client.clone(), &ctx.config.operator_namespace)
}

/// Create the token Secret empty, for the tokens controller to fill.
async fn create_token_secret(
    ctx: &Context,
    target: &ObservedTarget,
    restore_of: Option<&String>,
) -> ActionResult {
    let TargetSpec::Token {
        service_account, ..
    } = &target.spec
    else {
        return Ok(());
    };
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(target.key.name.clone()),
            namespace: Some(target.key.namespace.clone()),
            labels: Some(BTreeMap::from([(
                labels::GUARDED.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(
                [
                    (labels::SA_NAME_ANNOTATION, Some(service_account)),
                    (labels::RESTORED_FROM, restore_of),
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
    secrets(ctx, &target.key.namespace)
        .create(&create_params(), &secret)
        .await?;
    Ok(())
}

/// Re-create the Secret from its restore point, same bytes. For a token, returns what a
/// TokenReview of the restored token said.
async fn restore_identical(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<Option<TokenCheck>> {
    let rp = restore_source(ctx, target).await?;
    // Labels come back as saved, kubernetes.io/legacy-token-invalid-since included: a copy
    // does not say who set it, and an invalidation someone meant must stay.
    let mut secret = restore_point::restored_secret(&rp, &target.key, &[]);
    if let Some(annotations) = secret.metadata.annotations.as_mut() {
        // A rotation asked for before is never asked again by a restore.
        annotations.remove(labels::ROTATE);
    }
    // Its references as saved: the garbage collector judges them, as it did before. A
    // Secret whose owners are all gone never gets here (reconcile checks them first).
    secret.metadata.owner_references =
        (!rp.owner_references.is_empty()).then(|| rp.owner_references.clone());
    fault::point(fault::points::RESTORE_POINT_READ);
    secrets(ctx, &target.key.namespace)
        .create(&create_params(), &secret)
        .await?;
    fault::point(fault::points::CREATE_SENT);
    let TargetSpec::Token {
        service_account, ..
    } = &target.spec
    else {
        return Ok(None);
    };
    let token = rp
        .data
        .get("token")
        .map(|b| b.0.as_slice())
        .unwrap_or_default();
    Ok(Some(
        verify::verify_token(&ctx.client, &target.key.namespace, service_account, token).await,
    ))
}

/// What to restore, data included: the deleted Secret's final state when this reconcile
/// holds it and the restore point holds the same (no request at all), else the restore
/// point, read with one GET (the cache keeps no data). Decide never restores from a
/// refused point or a tombstone; this is the last line, before a write: the point read
/// is judged again.
pub async fn restore_source(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<restore_point::RestorePoint> {
    if let Some(rp) = target.restore_from_final_state() {
        return Ok(rp);
    }
    let (Some(_), Some(ns)) = (
        target.usable_saved().filter(|s| s.tombstone.is_none()),
        target.namespace.active(),
    ) else {
        return Err(ActionError::MissingRestorePoint);
    };
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    let point = restore_points(ctx)
        .get_opt(&name)
        .await?
        .ok_or(ActionError::MissingRestorePoint)?;
    let read = CachedRestorePoint::of(&point);
    let kind = target.spec.kind();
    let last_uid = target.last_uid.as_deref();
    if observe::restore_point_refusal(&read, &target.key, kind, ns, last_uid).is_some()
        || read.saved.as_ref().is_ok_and(|s| s.tombstone.is_some())
    {
        return Err(ActionError::MissingRestorePoint);
    }
    restore_point::parse(&point).map_err(|_| ActionError::MissingRestorePoint)
}

/// The usable restore point whole (one GET): what only the stored point says.
async fn read_restore_point(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<Option<restore_point::RestorePoint>> {
    if target.usable_restore_point().is_none() {
        return Ok(None);
    }
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    Ok(restore_points(ctx)
        .get_opt(&name)
        .await?
        .and_then(|p| restore_point::parse(&p).ok()))
}

/// Add secretguard.dev/guarded=true, so the label-filtered watch sees the Secret.
async fn label(ctx: &Context, key: &ObjectKey) -> ActionResult {
    fault::point(fault::points::LABEL_NOT_SENT);
    // A merge patch, never an apply: an apply creates what is missing, and the Secret may
    // have been deleted since it was read (a stub of our label alone would then stand in
    // for it, and be taken for its re-creation by someone).
    let patch = json!({"metadata": {"labels": {labels::GUARDED: "true"}}});
    let params = PatchParams {
        field_manager: Some(labels::MANAGER.into()),
        ..Default::default()
    };
    // Answered with the metadata only: the Secret may be of any size.
    match secrets(ctx, &key.namespace)
        .patch_metadata(&key.name, &params, &Patch::Merge(&patch))
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Err(ActionError::Gone),
        Err(e) => Err(e.into()),
    }
}

/// Save the live content as the restore point (a deleted Secret's final state, when the
/// restore point lacks it), counting a restore when the Secret is one the operator
/// re-created. Written from the watch event that showed the content; with one GET when
/// this reconcile does not hold it.
async fn save_restore_point(ctx: &Context, target: &ObservedTarget) -> ActionResult {
    // Decide writes nothing outside an active namespace.
    let Some(ns) = target.namespace.active() else {
        return Ok(());
    };
    let source = match (&target.content, &target.live) {
        (Some(content), _) => Arc::clone(content),
        (None, Some(_)) => match secrets(ctx, &target.key.namespace)
            .get_opt(&target.key.name)
            .await?
        {
            Some(s) => Arc::new(s),
            // Deleted meanwhile: its deletion event brings this key back.
            None => return Ok(()),
        },
        (None, None) => return Ok(()),
    };
    // A refused point's count is not this Secret's: it starts again.
    let previous = target
        .usable_restore_point()
        .filter(|rp| rp.saved.is_ok())
        .map(|rp| (rp.restores, rp.origin_uid()));
    let restores = restore_point::next_restores(previous, &source);
    if previous.is_some_and(|(before, _)| restores > before) {
        fault::point(fault::points::COUNT_NOT_SAVED);
    }
    // Decide knew it from the cache; this is what was read, and the last word.
    let rp = restore_point::build(
        &source,
        target.spec.kind().as_str(),
        &ns.uid,
        &ctx.config.operator_namespace,
        restores,
    )
    .map_err(|why| ActionError::Unsaveable(why.describe()))?;
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    // Over the version read only: a leader that lost the Lease unawares (paused, cut off)
    // never puts older content over a point its successor saved (409, read again).
    let mut rp = rp;
    rp.metadata.resource_version = target.restore_point_version.clone();
    write_restore_point(ctx, &name, &rp).await
}

/// Write a restore point over the version the decision read (`resourceVersion` set). Where
/// the decision knew of no point, one written meanwhile (by a successor, or by a newer
/// release) must not be written over: it is looked for first (a metadata GET), and found,
/// sends the reconcile back to read it. Either way a point that changed since answers 409,
/// and the next reconcile reads it again. (Not a create: a point created by POST would keep
/// fields no later apply of ours could remove, such as the data a tombstone drops.)
async fn write_restore_point(ctx: &Context, name: &str, rp: &Secret) -> ActionResult {
    let points = restore_points(ctx);
    if rp.metadata.resource_version.is_none()
        && let Some(found) = points.get_metadata_opt(name).await?
    {
        // This very point, written by an earlier reconcile the cache does not show yet:
        // nothing to write. Anything else is read again first.
        return if same_point(&found.metadata, &rp.metadata) {
            Ok(())
        } else {
            Err(ActionError::StaleRestorePoint)
        };
    }
    match points.patch(name, &apply_params(), &Patch::Apply(rp)).await {
        Err(kube::Error::Api(s)) if s.code == 409 => Err(ActionError::StaleRestorePoint),
        r => r.map(|_| ()).map_err(ActionError::from),
    }
}

/// Whether two restore points hold the same: format, content hash and restore count.
fn same_point(a: &ObjectMeta, b: &ObjectMeta) -> bool {
    use restore_point::annotation::{CONTENT_HASH, FORMAT, RESTORES};
    let of = |m: &ObjectMeta| {
        let annotations = m.annotations.as_ref();
        [FORMAT, CONTENT_HASH, RESTORES].map(|k| annotations.and_then(|a| a.get(k)).cloned())
    };
    of(a) == of(b)
}

/// Remove kubernetes.io/legacy-token-invalid-since: the token authenticates again. Only
/// from the version of the Secret the decision saw (who set the label was read from it):
/// if it changed since, the apiserver refuses (409) and the next reconcile decides again.
async fn remove_invalid_label(ctx: &Context, target: &ObservedTarget) -> ActionResult {
    let version = target.live.as_ref().map(|s| s.resource_version.clone());
    let patch = json!({"metadata": {
        "resourceVersion": version,
        "labels": {labels::LEGACY_TOKEN_INVALID_SINCE: null},
    }});
    let key = &target.key;
    secrets(ctx, &key.namespace)
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Replace the restore point by a tombstone: the same name and origin, no data, and why
/// the name must not be re-created. Only names are kept (type, ServiceAccount name and
/// UID), never another Secret's labels or annotations.
async fn forget_restore_point(
    ctx: &Context,
    target: &ObservedTarget,
    why: Tombstone,
) -> ActionResult {
    // Decide writes nothing outside an active namespace.
    let Some(ns) = target.namespace.active() else {
        return Ok(());
    };
    let live = target.live.as_ref().and_then(|s| s.detail.as_ref());
    let live_annotation = |key: &str| live.and_then(|d| d.annotation(key)).map(str::to_owned);
    let names = [labels::SA_NAME_ANNOTATION, labels::SA_UID_ANNOTATION];
    // What only the stored point says (its type, the names it saved), read when needed.
    let rp = match live {
        Some(_) if names.iter().all(|k| live_annotation(k).is_some()) => None,
        _ => read_restore_point(ctx, target).await?,
    };
    let saved_annotation = |key: &str| rp.as_ref().and_then(|rp| rp.annotations.get(key).cloned());
    let kept = |key: &str| live_annotation(key).or_else(|| saved_annotation(key));
    let type_ = match (live, &rp, &target.spec) {
        (Some(d), _, _) => Some(d.type_.clone()),
        (None, Some(rp), _) => Some(rp.type_.clone()),
        (None, None, TargetSpec::Token { .. }) => Some(labels::TOKEN_TYPE.to_owned()),
        (None, None, TargetSpec::Secret) => None,
    };
    let saved = target.usable_restore_point();
    let mut annotations = BTreeMap::from([(labels::TOMBSTONE.to_owned(), why.as_str().to_owned())]);
    if why == Tombstone::Retired {
        annotations.insert(labels::RETIRE.to_owned(), "true".to_owned());
    }
    for key in names {
        if let Some(v) = kept(key) {
            annotations.insert(key.to_owned(), v);
        }
    }
    let origin = Secret {
        metadata: ObjectMeta {
            name: Some(target.key.name.clone()),
            namespace: Some(target.key.namespace.clone()),
            uid: target
                .live
                .as_ref()
                .map(|s| s.uid.clone())
                .or_else(|| saved.map(|p| p.origin_uid().to_owned())),
            annotations: Some(annotations),
            ..Default::default()
        },
        type_,
        ..Default::default()
    };
    let mut tombstone = restore_point::build(
        &origin,
        target.spec.kind().as_str(),
        &ns.uid,
        &ctx.config.operator_namespace,
        saved.map(|rp| rp.restores).unwrap_or(0),
    )
    .map_err(|why| ActionError::Unsaveable(why.describe()))?;
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    // Over the version read only, as every restore point write (see save_restore_point).
    tombstone.metadata.resource_version = target.restore_point_version.clone();
    write_restore_point(ctx, &name, &tombstone).await
}

/// Revoke every token of the ServiceAccount: snapshot it, marked as rotating, then delete
/// it and create it again from the snapshot. The marker is saved before the delete, so
/// whatever stops the create (a crash, a lost Lease, a refusal) the next reconcile re-creates
/// the ServiceAccount from that snapshot (`decide`: finish_rotation). The delete orphans
/// what the ServiceAccount owns (the garbage collector would delete it) and carries the UID
/// and resourceVersion of the ServiceAccount as read for the snapshot: an edit made since
/// refuses it (409), and the next reconcile snapshots the edited one.
async fn rotate_service_account(ctx: &Context, target: &ObservedTarget, uid: &str) -> ActionResult {
    let Some(sa) = read_service_account(ctx, target).await? else {
        return Ok(());
    };
    if sa.metadata.uid.as_deref() != Some(uid) {
        return Ok(()); // already re-created
    }
    let Some(snapshot) = save_snapshot(ctx, target, &sa, Some(uid)).await? else {
        return Ok(());
    };
    let fresh = restore_point::parse_sa_snapshot(&snapshot).ok_or(ActionError::BadSnapshot)?;
    let dp = DeleteParams {
        propagation_policy: Some(PropagationPolicy::Orphan),
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: sa.metadata.resource_version.clone(),
        }),
        ..Default::default()
    };
    match service_accounts(ctx, target)
        .delete(&ObjectKey::of(&sa).name, &dp)
        .await
    {
        Ok(_) => {}
        // Gone already: the rotation re-creates it all the same.
        Err(kube::Error::Api(s)) if s.code == 404 => {}
        Err(kube::Error::Api(s)) if s.code == 409 => return Err(ActionError::StaleServiceAccount),
        Err(e) => return Err(e.into()),
    }
    fault::point(fault::points::SERVICE_ACCOUNT_DELETED);
    match create_from_snapshot(ctx, target, &fresh, true).await {
        // Its deletion's watch event brings this key back, and the marker re-creates it.
        Err(ActionError::ServiceAccountTerminating) => Ok(()),
        r => r,
    }
}

/// Re-create the ServiceAccount from its snapshot (read with one GET: the cache keeps no
/// data): after a deletion when the guard asks for it, or to finish a rotation.
async fn recreate_service_account(ctx: &Context, target: &ObservedTarget) -> ActionResult {
    if target.sa_snapshot.is_none() {
        return Err(ActionError::MissingSnapshot);
    }
    let name = restore_point::snapshot_name_for(&target.key.namespace, &target.key.name);
    let snapshot = restore_points(ctx)
        .get_opt(&name)
        .await?
        .ok_or(ActionError::MissingSnapshot)?;
    // Judged again as read, like a restore point (see restore_source).
    let usable = match (&target.spec, target.namespace.active()) {
        (
            TargetSpec::Token {
                service_account, ..
            },
            Some(ns),
        ) => observe::snapshot_usable(
            &CachedRestorePoint::of(&snapshot),
            &target.key,
            service_account,
            ns,
            None,
        ),
        _ => false,
    };
    if !usable {
        return Err(ActionError::MissingSnapshot);
    }
    let sa = restore_point::parse_sa_snapshot(&snapshot).ok_or(ActionError::BadSnapshot)?;
    let rotating = restore_point::rotating(&snapshot).is_some();
    create_from_snapshot(ctx, target, &sa, rotating).await
}

/// Create the ServiceAccount from its snapshot. Someone (or an earlier attempt) may have
/// created it first (409): that one stands, unless it is the deleted one still
/// terminating. When a rotation is finished (`rotating`), the snapshot is saved again from
/// the ServiceAccount that now exists, which clears its marker.
async fn create_from_snapshot(
    ctx: &Context,
    target: &ObservedTarget,
    sa: &ServiceAccount,
    rotating: bool,
) -> ActionResult {
    let sas = service_accounts(ctx, target);
    let created = match sas.create(&create_params(), sa).await {
        Ok(created) => created,
        Err(kube::Error::Api(s)) if s.code == 409 => match read_service_account(ctx, target).await?
        {
            Some(live) if live.metadata.deletion_timestamp.is_none() => live,
            _ => return Err(ActionError::ServiceAccountTerminating),
        },
        Err(e) => return Err(e.into()),
    };
    if rotating {
        save_snapshot(ctx, target, &created, None).await?;
    }
    Ok(())
}

fn service_accounts(ctx: &Context, target: &ObservedTarget) -> Api<ServiceAccount> {
    Api::namespaced(ctx.client.clone(), &target.key.namespace)
}

/// The target's ServiceAccount, read from the apiserver (data the cache does not keep).
async fn read_service_account(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<Option<ServiceAccount>> {
    let TargetSpec::Token {
        service_account, ..
    } = &target.spec
    else {
        return Ok(None);
    };
    Ok(service_accounts(ctx, target)
        .get_opt(service_account)
        .await?)
}

/// Read the target's ServiceAccount and save its snapshot (without a rotation marker).
async fn snapshot_service_account(ctx: &Context, target: &ObservedTarget) -> ActionResult {
    if let Some(sa) = read_service_account(ctx, target).await? {
        save_snapshot(ctx, target, &sa, None).await?;
    }
    Ok(())
}

/// Save the snapshot of `sa` (marked as rotating the ServiceAccount with UID `rotating`,
/// if given; without a marker otherwise, which clears one); returns it. None outside an
/// active namespace (decide writes nothing there).
async fn save_snapshot(
    ctx: &Context,
    target: &ObservedTarget,
    sa: &ServiceAccount,
    rotating: Option<&str>,
) -> ActionResult<Option<Secret>> {
    let Some(ns) = target.namespace.active() else {
        return Ok(None);
    };
    let opns = &ctx.config.operator_namespace;
    let mut snapshot = restore_point::build_sa_snapshot(sa, &target.key.name, &ns.uid, opns);
    if let Some(uid) = rotating {
        snapshot = restore_point::mark_rotating(snapshot, uid);
    }
    let name = restore_point::snapshot_name_for(&target.key.namespace, &target.key.name);
    restore_points(ctx)
        .patch(&name, &apply_params(), &Patch::Apply(&snapshot))
        .await?;
    Ok(Some(snapshot))
}

/// Treat these API error codes as success (404 on a delete: already gone; 409 on a create
/// or a precondition: someone else got there first).
pub fn tolerate<T>(result: kube::Result<T>, codes: &[u16]) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(s)) if codes.contains(&s.code) => Ok(()),
        r => r.map(|_| ()),
    }
}
