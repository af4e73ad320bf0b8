//! Step 3 of a reconcile: carry out the decided actions against the cluster, in order,
//! stopping at the first failure. One function per action; each failure keeps its action
//! and its source error (`outcome::Failure`).

use std::collections::BTreeMap;
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use serde_json::json;

use super::context::Context;
use super::decide::{Action, Decision};
use super::load::ObservedTarget;
use super::outcome::{Executed, Failure};
use super::spec::TargetSpec;
use super::verify;
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
            Action::RemoveInvalidLabel => remove_invalid_label(ctx, &target.key).await,
            Action::RotateServiceAccount { uid } => rotate_service_account(ctx, target, uid).await,
            Action::RecreateServiceAccount => recreate_service_account(ctx, target).await,
            Action::SaveServiceAccountSnapshot => {
                snapshot_service_account(ctx, target).await.map(|_| ())
            }
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

/// Re-create the Secret from its restore point, same bytes. For a token, returns whether
/// a TokenReview accepted the restored token.
async fn restore_identical(ctx: &Context, target: &ObservedTarget) -> ActionResult<Option<bool>> {
    let rp = restore_source(ctx, target).await?;
    let drop: &[&str] = if target.policy.revalidate {
        &[labels::LEGACY_TOKEN_INVALID_SINCE]
    } else {
        &[]
    };
    let mut secret = restore_point::restored_secret(&rp, drop);
    let owners =
        verify::live_owners(&ctx.client, &target.key.namespace, &rp.owner_references).await;
    secret.metadata.owner_references = (!owners.is_empty()).then_some(owners);
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
/// point, read with one GET (the cache keeps no data).
async fn restore_source(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<restore_point::RestorePoint> {
    let opns = &ctx.config.operator_namespace;
    if let Some(rp) = target.restore_from_final_state(opns) {
        return Ok(rp);
    }
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    let saved = restore_points(ctx)
        .get_opt(&name)
        .await?
        .ok_or(ActionError::MissingRestorePoint)?;
    restore_point::parse(&saved).map_err(|_| ActionError::MissingRestorePoint)
}

/// Add secretguard.dev/guarded=true, so the label-filtered watch sees the Secret.
async fn label(ctx: &Context, key: &ObjectKey) -> ActionResult {
    let patch = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {"name": key.name, "namespace": key.namespace,
                     "labels": {labels::GUARDED: "true"}},
    });
    secrets(ctx, &key.namespace)
        .patch(&key.name, &apply_params(), &Patch::Apply(&patch))
        .await?;
    Ok(())
}

/// Save the live content as the restore point (a deleted Secret's final state, when the
/// restore point lacks it), counting a restore when the Secret is one the operator
/// re-created. Written from the watch event that showed the content; with one GET when
/// this reconcile does not hold it.
async fn save_restore_point(ctx: &Context, target: &ObservedTarget) -> ActionResult {
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
    let previous = target
        .restore_point
        .as_ref()
        .and_then(|rp| Some((rp.restores, rp.saved.as_ref().ok()?.origin_uid.as_str())));
    let restores = restore_point::next_restores(previous, &source);
    if previous.is_some_and(|(before, _)| restores > before) {
        fault::point(fault::points::COUNT_NOT_SAVED);
    }
    let rp = restore_point::build(
        &source,
        target.spec.kind().as_str(),
        &ctx.config.operator_namespace,
        restores,
    );
    let name = restore_point::name_for(&target.key.namespace, &target.key.name);
    restore_points(ctx)
        .patch(&name, &apply_params(), &Patch::Apply(&rp))
        .await?;
    Ok(())
}

/// Remove kubernetes.io/legacy-token-invalid-since: the token authenticates again.
async fn remove_invalid_label(ctx: &Context, key: &ObjectKey) -> ActionResult {
    let patch = json!({"metadata": {"labels": {labels::LEGACY_TOKEN_INVALID_SINCE: null}}});
    secrets(ctx, &key.namespace)
        .patch(&key.name, &PatchParams::default(), &Patch::Merge(&patch))
        .await?;
    Ok(())
}

/// Revoke every token of the ServiceAccount: snapshot it, delete it (UID precondition) and
/// create it again from the snapshot.
async fn rotate_service_account(ctx: &Context, target: &ObservedTarget, uid: &str) -> ActionResult {
    let Some((sa, snapshot)) = snapshot_service_account(ctx, target).await? else {
        return Ok(());
    };
    if sa.metadata.uid.as_deref() != Some(uid) {
        return Ok(()); // already re-created
    }
    let fresh = restore_point::parse_sa_snapshot(&snapshot).ok_or(ActionError::BadSnapshot)?;
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &target.key.namespace);
    let dp = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    sas.delete(&ObjectKey::of(&sa).name, &dp).await?;
    sas.create(&create_params(), &fresh).await?;
    Ok(())
}

/// Re-create the ServiceAccount from its snapshot (read with one GET: the cache keeps no
/// data).
async fn recreate_service_account(ctx: &Context, target: &ObservedTarget) -> ActionResult {
    if target.sa_snapshot.is_none() {
        return Err(ActionError::MissingSnapshot);
    }
    let name = restore_point::snapshot_name_for(&target.key.namespace, &target.key.name);
    let snapshot = restore_points(ctx)
        .get_opt(&name)
        .await?
        .ok_or(ActionError::MissingSnapshot)?;
    let sa = restore_point::parse_sa_snapshot(&snapshot).ok_or(ActionError::BadSnapshot)?;
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &target.key.namespace);
    tolerate(sas.create(&create_params(), &sa).await, &[409])?;
    Ok(())
}

/// Read the target's ServiceAccount and save its snapshot; returns both.
async fn snapshot_service_account(
    ctx: &Context,
    target: &ObservedTarget,
) -> ActionResult<Option<(ServiceAccount, Secret)>> {
    let TargetSpec::Token {
        service_account, ..
    } = &target.spec
    else {
        return Ok(None);
    };
    let sas: Api<ServiceAccount> = Api::namespaced(ctx.client.clone(), &target.key.namespace);
    let Some(sa) = sas.get_opt(service_account).await? else {
        return Ok(None);
    };
    let opns = &ctx.config.operator_namespace;
    let snapshot = restore_point::build_sa_snapshot(&sa, &target.key.name, opns);
    let name = restore_point::snapshot_name_for(&target.key.namespace, &target.key.name);
    restore_points(ctx)
        .patch(&name, &apply_params(), &Patch::Apply(&snapshot))
        .await?;
    Ok(Some((sa, snapshot)))
}

/// Treat these API error codes as success (404 on a delete: already gone; 409 on a create
/// or a precondition: someone else got there first).
pub fn tolerate<T>(result: kube::Result<T>, codes: &[u16]) -> kube::Result<()> {
    match result {
        Err(kube::Error::Api(s)) if codes.contains(&s.code) => Ok(()),
        r => r.map(|_| ()),
    }
}
