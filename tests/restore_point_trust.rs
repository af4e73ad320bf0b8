//! Restore points are trusted only for the target and the namespace they were written
//! for, on the real control plane: a namespace deleted and created again under the same
//! name, by another tenant, gets nothing of the first one's (unless a cluster admin adopts
//! the points); points written before namespace UIDs were recorded are migrated; a point
//! recording another origin is never restored; and restore points are never guarded
//! themselves. Tenants are `kubectl --as` users with Roles of their namespace only.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use secretguard::api::v1alpha1::{SecretGuard, SecretGuardStatus};
use secretguard::controller::Context;
use secretguard::guard::index::ObjectKey;
use secretguard::labels;
use secretguard::restore_point::{self, annotation};
use serde_json::json;
use support::*;

/// Let `user` create and read SecretGuards and Secrets in `ns`, and nothing else.
fn tenant_role(ns: &str, user: &str) {
    for args in [
        vec![
            "-n",
            ns,
            "create",
            "role",
            user,
            "--verb=create,get,list,watch",
            "--resource=secretguards.secretguard.dev,secrets",
        ],
        vec![
            "-n",
            ns,
            "create",
            "rolebinding",
            user,
            &format!("--role={user}"),
            &format!("--user={user}"),
        ],
    ] {
        let out = kubectl(&args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        // The operator namespace outlives test runs, and its Role with it.
        assert!(
            out.status.success() || stderr.contains("already exists"),
            "kubectl {args:?}: {stderr}"
        );
    }
}

/// `kubectl --as user -n ns create -f -` of a SecretGuard `name` with this spec.
fn create_guard_as(user: &str, ns: &str, name: &str, spec: serde_json::Value) {
    let guard = json!({
        "apiVersion": "secretguard.dev/v1alpha1", "kind": "SecretGuard",
        "metadata": {"name": name}, "spec": spec,
    });
    let out = kubectl_with_input(
        &["--as", user, "-n", ns, "create", "-f", "-"],
        &guard.to_string(),
    );
    assert!(
        out.status.success(),
        "{user} creates guard {ns}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl --as user -n ns create secret generic name --from-literal=...`.
fn create_secret_as(user: &str, ns: &str, name: &str, labels: &[&str], literal: &str) {
    let from = format!("--from-literal={literal}");
    let out = kubectl(&[
        "--as", user, "-n", ns, "create", "secret", "generic", name, &from,
    ]);
    assert!(
        out.status.success(),
        "{user} creates Secret {ns}/{name}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for label in labels {
        let out = kubectl(&["-n", ns, "label", "secret", name, label]);
        assert!(out.status.success(), "label {ns}/{name} {label}");
    }
}

fn data(s: &Secret) -> BTreeMap<String, ByteString> {
    s.data.clone().unwrap_or_default()
}

fn annotation_of<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(key))
        .map(String::as_str)
}

/// Change a restore point behind the operator's back (merge patch), and wait until the
/// operator's cache has seen the change (what it holds may be newer still: an audit of
/// another test may have acted on it since), so what follows is decided on it.
async fn alter_restore_point(
    client: &Client,
    ctx: &Context,
    ns: &str,
    name: &str,
    patch: serde_json::Value,
) {
    let rp_name = restore_point::name_for(ns, name);
    let altered = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .patch(&rp_name, &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("alter the restore point");
    // resourceVersions are etcd revisions here: numbers that only grow.
    let version =
        |s: &Secret| -> Option<u64> { s.metadata.resource_version.as_ref()?.parse().ok() };
    let altered = version(&altered).expect("a numeric resourceVersion");
    wait_for(
        "the operator's cache to see the altered restore point",
        || async {
            let cached = ctx.stores.restore_point(OPERATOR_NAMESPACE, &rp_name)?;
            (cached.resource_version.parse::<u64>().ok()? >= altered).then_some(())
        },
    )
    .await;
}

/// Make a restore point look as the operator wrote it before namespace UIDs: format 0.
fn as_format_0() -> serde_json::Value {
    json!({"metadata": {"annotations": {
        annotation::FORMAT: null, annotation::ORIGIN_NAMESPACE_UID: null}}})
}

/// Create the namespace `name` (again); returns its UID.
async fn create_namespace_named(client: &Client, name: &str) -> String {
    let ns = Namespace {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("secretguard.dev/test".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await
        .expect("create the namespace again")
        .metadata
        .uid
        .expect("uid")
}

async fn audit_and_wait(ctx: &Context) {
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(ctx);
    wait_operator_idle(ctx, processed).await;
}

fn target_state<'a>(s: &'a SecretGuardStatus, name: &str) -> Option<&'a str> {
    s.targets
        .iter()
        .find(|t| t.name == name)
        .map(|t| t.state.as_str())
}

/// Tenant A guards Secrets (by name, by selector, one saved in the format before
/// namespace UIDs) and a token; the namespace is deleted and tenant B claims its name.
/// Nothing of A's comes back into B's namespace, whatever B's guard names or selects, not
/// even a ServiceAccount from A's snapshot; until a cluster admin adopts A's points into
/// the new namespace, annotating them in the operator namespace.
#[tokio::test]
async fn a_namespace_created_again_under_the_same_name_gets_nothing_of_the_previous_one_unless_an_admin_adopts_it()
 {
    let client = admin_client().await;
    let ctx = operator();
    let first = TestNamespace::new(&client, "reuse").await;
    let ns = first.name.clone();
    tenant_role(&ns, "tenant-a");
    create_secret_as("tenant-a", &ns, "db", &[], "password=A-SECRET");
    create_secret_as("tenant-a", &ns, "api-key", &["tier=critical"], "key=A-KEY");
    create_service_account(&client, &ns, "writer").await;
    create_guard_as(
        "tenant-a",
        &ns,
        "g",
        json!({"secrets": [{"name": "db"}], "secretSelector": {"matchLabels": {"tier": "critical"}},
               "serviceAccounts": [{"name": "writer", "recreateServiceAccount": true}]}),
    );
    let saved_db = wait_saved(&client, &ns, "db").await;
    wait_saved(&client, &ns, "api-key").await;
    let old_token = wait_for_token(&client, &ns, "writer-token").await;
    wait_restore_point(&client, &ns, "writer-token", "the token saved", |rp| {
        holds_token(rp, &old_token)
    })
    .await;
    let first_uid = annotation_of(&saved_db, annotation::ORIGIN_NAMESPACE_UID)
        .expect("a restore point records its namespace's UID")
        .to_owned();
    first.delete_and_wait(&client).await;
    wait_for(
        "the restore points to be kept, stamped orphaned",
        || async { restore_point::orphaned_since(&get_restore_point(&client, &ns, "db").await?) },
    )
    .await;
    // api-key's point as an operator before this change wrote it (now that nothing rewrites
    // it any more: its namespace is gone).
    alter_restore_point(&client, &ctx, &ns, "api-key", as_format_0()).await;

    // Tenant B claims the name.
    let second_uid = create_namespace_named(&client, &ns).await;
    assert_ne!(second_uid, first_uid);
    tenant_role(&ns, "tenant-b");
    create_guard_as(
        "tenant-b",
        &ns,
        "mine",
        json!({"secrets": [{"name": "db"}], "secretSelector": {},
               "serviceAccounts": [{"name": "writer", "recreateServiceAccount": true}]}),
    );
    let st = wait_guard_status(
        &client,
        &ns,
        "mine",
        "db refused as ForeignRestorePoint",
        |s| target_state(s, "db") == Some("ForeignRestorePoint"),
    )
    .await;
    assert_eq!(st.restores, 0, "tenant A's restore counts are not B's");
    let note = wait_event(&client, &ns, "ForeignRestorePoint", "SecretGuard").await;
    assert!(
        note.contains(annotation::ADOPT_NAMESPACE_UID),
        "the Event says how an admin allows it: {note}"
    );
    // The selector: every restore point's origin is looked at by the audit.
    audit_and_wait(&ctx).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
    for name in ["db", "api-key"] {
        assert!(
            secrets.get_opt(name).await.expect("get").is_none(),
            "tenant A's {name} must not come back into tenant B's namespace"
        );
        let rp = get_restore_point(&client, &ns, name)
            .await
            .expect("A's point is kept for the retention, for an admin to decide");
        assert!(
            restore_point::orphaned_since(&rp).is_some(),
            "{name}: stamped"
        );
    }
    // The token: B's own ServiceAccount does not exist; A's snapshot does not create it.
    wait_guard_status(
        &client,
        &ns,
        "mine",
        "writer's ServiceAccount not found",
        |s| target_state(s, "writer-token") == Some("ServiceAccountNotFound"),
    )
    .await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns);
    assert!(
        sas.get_opt("writer").await.expect("get").is_none(),
        "tenant A's ServiceAccount is not re-created from its snapshot"
    );
    // Once B creates it, a fresh token: never A's, with nothing reported as rotated.
    create_service_account(&client, &ns, "writer").await;
    let new_token = wait_for_token(&client, &ns, "writer-token").await;
    assert!(new_token != old_token, "a token of B's own ServiceAccount");
    wait_restore_point(&client, &ns, "writer-token", "B's token saved", |rp| {
        holds_token(rp, &new_token)
            && annotation_of(rp, annotation::ORIGIN_NAMESPACE_UID) == Some(second_uid.as_str())
    })
    .await;
    assert!(
        events(&client, &ns, "TokenRotated").await.is_empty(),
        "no rotation reported: nothing of B's was replaced"
    );

    // A cluster admin knows this is tenant A's namespace back, and adopts its points.
    let adopt = format!("{}={second_uid}", annotation::ADOPT_NAMESPACE_UID);
    let selector = format!("{}={ns}", labels::ORIGIN_NAMESPACE);
    let out = kubectl(&[
        "-n",
        OPERATOR_NAMESPACE,
        "annotate",
        "secret",
        "-l",
        &selector,
        &adopt,
    ]);
    assert!(
        out.status.success(),
        "adopt: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let db = wait_for("db adopted and restored", || async {
        secrets.get_opt("db").await.ok()?
    })
    .await;
    assert!(data(&db) == data(&saved_db), "db comes back as A saved it");
    wait_for(
        "api-key (a format 0 point) adopted and restored",
        || async { secrets.get_opt("api-key").await.ok()? },
    )
    .await;
    wait_restore_point(
        &client,
        &ns,
        "db",
        "db's point now of this namespace",
        |rp| {
            annotation_of(rp, annotation::ORIGIN_NAMESPACE_UID) == Some(second_uid.as_str())
                && restore_point::orphaned_since(rp).is_none()
        },
    )
    .await;
}

/// A restore point written before namespace UIDs were recorded (format 0), in a namespace
/// older than the point, belongs to it: the operator records the namespace's UID on it
/// (without rewriting it), and restores from it when the Secret is deleted.
#[tokio::test]
async fn a_restore_point_from_before_namespace_uids_is_migrated_and_still_restores() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "backfill").await;
    // Timestamps count whole seconds: the point is to be written in a later one.
    ns.wait_past_its_creation_second(&client).await;
    create_secret(&client, &ns.name, "db").await;
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    let saved = wait_saved(&client, &ns.name, "db").await;
    let uid = Api::<Namespace>::all(client.clone())
        .get(&ns.name)
        .await
        .expect("namespace")
        .metadata
        .uid
        .expect("uid");

    alter_restore_point(&client, &ctx, &ns.name, "db", as_format_0()).await;
    audit_and_wait(&ctx).await;
    // Migrated at a bounded pace (its turn may come after other tests' points).
    let rp = wait_restore_point(
        &client,
        &ns.name,
        "db",
        "the point rewritten in the current format, with the namespace's UID",
        |rp| {
            annotation_of(rp, annotation::FORMAT) == Some(restore_point::Format::V1.as_str())
                && annotation_of(rp, annotation::ORIGIN_NAMESPACE_UID) == Some(uid.as_str())
        },
    )
    .await;
    assert!(data(&rp) == data(&saved), "the same content");

    // Format 0 again, and the Secret deleted: the point is still this namespace's.
    alter_restore_point(&client, &ctx, &ns.name, "db", as_format_0()).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let before = secrets.get("db").await.expect("db");
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_for("db restored", || async {
        secrets
            .get_opt("db")
            .await
            .ok()?
            .filter(|s| s.metadata.uid != before.metadata.uid)
    })
    .await;
    assert!(data(&back) == data(&saved), "the saved content comes back");
    wait_restore_point(
        &client,
        &ns.name,
        "db",
        "the point rewritten in format 1",
        |rp| {
            annotation_of(rp, annotation::FORMAT) == Some(restore_point::Format::V1.as_str())
                && annotation_of(rp, annotation::ORIGIN_NAMESPACE_UID) == Some(uid.as_str())
        },
    )
    .await;
}

/// Someone who can write in the operator namespace forges a guarded Secret's restore
/// point to restore it under another name, into another namespace, or as another kind:
/// the operator restores nothing from it, and says so.
#[tokio::test]
async fn a_restore_point_recording_another_origin_or_kind_is_never_restored() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "forged").await;
    let elsewhere = TestNamespace::new(&client, "forged-elsewhere").await;
    let names = ["by-name", "by-namespace", "by-kind"];
    for name in names {
        create_secret(&client, &ns.name, name).await;
    }
    // Alert only at first: the Secrets are deleted before their points are forged, or any
    // reconcile of a live Secret (an audit of another test) rewrites a forged point.
    let listed: Vec<_> = names.iter().map(|n| json!({"name": n})).collect();
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"secrets": listed, "restore": "Never"}),
    )
    .await;
    for name in names {
        wait_saved(&client, &ns.name, name).await;
    }
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for name in names {
        secrets
            .delete(name, &DeleteParams::default())
            .await
            .expect("delete");
    }
    wait_guard_status(&client, &ns.name, "g", "every Secret missing", |s| {
        names.iter().all(|n| target_state(s, n) == Some("Missing"))
    })
    .await;
    let forgeries = [
        ("by-name", annotation::ORIGIN_NAME, "planted"),
        (
            "by-namespace",
            annotation::ORIGIN_NAMESPACE,
            elsewhere.name.as_str(),
        ),
        ("by-kind", annotation::ORIGIN_KIND, "ServiceAccountToken"),
    ];
    for (name, key, value) in forgeries {
        alter_restore_point(
            &client,
            &ctx,
            &ns.name,
            name,
            json!({"metadata": {"annotations": {key: value}}}),
        )
        .await;
    }
    // Restores on. Once the operator holds the new spec, an audit reconciles every target
    // under it, and waiting for the operator to be idle waits for those reconciles.
    let generation = Api::<SecretGuard>::namespaced(client.clone(), &ns.name)
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"restore": "Identical"}})),
        )
        .await
        .expect("restores on")
        .metadata
        .generation;
    let guard = ObjectKey::new(&ns.name, "g");
    wait_for("the operator to hold the new spec", || async {
        (ctx.index().guard(&guard)?.generation == generation?).then_some(())
    })
    .await;
    audit_and_wait(&ctx).await;
    let st = wait_guard_status(&client, &ns.name, "g", "every forged point refused", |s| {
        names
            .iter()
            .all(|n| target_state(s, n) == Some("RestorePointMismatch"))
    })
    .await;
    assert_eq!(st.restores, 0);
    wait_event(&client, &ns.name, "RestorePointMismatch", "SecretGuard").await;
    for name in names.into_iter().chain(["planted"]) {
        assert!(
            secrets.get_opt(name).await.expect("get").is_none(),
            "{name} is not created from a forged point"
        );
    }
    let other: Api<Secret> = Api::namespaced(client.clone(), &elsewhere.name);
    assert!(
        other.get_opt("by-namespace").await.expect("get").is_none(),
        "nothing restored into the namespace the point names"
    );
}

/// Deletes a guard in the operator namespace when dropped: that namespace outlives tests.
struct GuardCleanup(&'static str);

impl Drop for GuardCleanup {
    fn drop(&mut self) {
        let _ = kubectl(&[
            "-n",
            OPERATOR_NAMESPACE,
            "delete",
            "secretguard",
            self.0,
            "--ignore-not-found",
        ]);
    }
}

/// A guard in the operator namespace, made by someone with `edit` there, would guard the
/// restore points and chain copies of copies: it is refused (InvalidSpec). And a Secret
/// labelled as a restore point is never guarded, by name or by selector.
#[tokio::test]
async fn guards_in_the_operator_namespace_are_refused_and_restore_points_are_never_guarded() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "points").await;
    create_secret(&client, &ns.name, "plain").await;
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"secrets": [{"name": "plain"}]}),
    )
    .await;
    let point = wait_saved(&client, &ns.name, "plain").await;
    let point_name = point.metadata.name.clone().expect("name");

    tenant_role(OPERATOR_NAMESPACE, "opns-editor");
    let _cleanup = GuardCleanup("chain");
    create_guard_as(
        "opns-editor",
        OPERATOR_NAMESPACE,
        "chain",
        json!({"secrets": [{"name": point_name}], "secretSelector": {}}),
    );
    let message = wait_invalid_spec(&client, OPERATOR_NAMESPACE, "chain").await;
    assert!(
        message.contains("not allowed in") && message.contains(OPERATOR_NAMESPACE),
        "{message}"
    );

    // A tenant's own Secrets labelled as restore points: one named by a guard (found by
    // a GET, as it has no guarded label), one matched by a selector in another namespace.
    let decoy = |name: &str| Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([
                (labels::RESTORE_POINT.to_owned(), "true".to_owned()),
                ("decoy".to_owned(), "yes".to_owned()),
            ])),
            ..Default::default()
        },
        string_data: Some(BTreeMap::from([("k".to_owned(), "v".to_owned())])),
        ..Default::default()
    };
    let selecting = TestNamespace::new(&client, "points-sel").await;
    for (namespace, name) in [
        (&ns.name, "named-point"),
        (&selecting.name, "selected-point"),
    ] {
        Api::<Secret>::namespaced(client.clone(), namespace)
            .create(&PostParams::default(), &decoy(name))
            .await
            .expect("decoy");
        create_secret(&client, namespace, "plain2").await;
    }
    create_guard(
        &client,
        &ns.name,
        "named",
        json!({"secrets": [{"name": "named-point"}, {"name": "plain2"}]}),
    )
    .await;
    create_guard(
        &client,
        &selecting.name,
        "selected",
        json!({"secrets": [{"name": "plain2"}], "secretSelector": {"matchLabels": {"decoy": "yes"}}}),
    )
    .await;
    // The guards are acted on: their ordinary Secrets are saved.
    wait_saved(&client, &ns.name, "plain2").await;
    wait_saved(&client, &selecting.name, "plain2").await;
    audit_and_wait(&ctx).await;

    for (namespace, name) in [
        (&ns.name, "named-point"),
        (&selecting.name, "selected-point"),
    ] {
        let s = Api::<Secret>::namespaced(client.clone(), namespace)
            .get(name)
            .await
            .expect("decoy");
        assert!(
            s.metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(labels::GUARDED)),
            "{name} is not labelled guarded"
        );
        assert!(
            get_restore_point(&client, namespace, name).await.is_none(),
            "{name} gets no restore point"
        );
    }
    let in_opns = Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .list(&ListParams::default().labels(&format!("{}=true", labels::RESTORE_POINT)))
        .await
        .expect("list restore points");
    for rp in &in_opns.items {
        assert_ne!(
            annotation_of(rp, annotation::ORIGIN_NAMESPACE),
            Some(OPERATOR_NAMESPACE),
            "no restore point of a restore point ({:?})",
            rp.metadata.name
        );
        assert!(
            rp.metadata
                .labels
                .as_ref()
                .is_none_or(|l| !l.contains_key(labels::GUARDED)),
            "restore point {:?} is not guarded",
            rp.metadata.name
        );
    }
}
