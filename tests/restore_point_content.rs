//! What a restore point holds, on the real control plane: the latest content and metadata
//! of its Secret (a metadata-only edit, an edit while the guard is paused), Secrets whose
//! metadata is too large for a point's annotations (saved in format 2, or reported
//! `Unprotected`), a Secret at the apiserver's annotation limit restored, and a point of a
//! newer format left alone and reported.

mod support;

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use secretguard::api::v1alpha1::{SecretGuard, TargetStatus};
use secretguard::controller::Context;
use secretguard::guard::index::ObjectKey;
use secretguard::labels;
use secretguard::restore_point::{self, Format, annotation};
use serde_json::json;
use support::*;

/// A Secret `name` with one data key, and these labels and annotations.
fn secret(name: &str, labels: &[(&str, &str)], annotations: &[(&str, String)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                    .collect(),
            ),
            annotations: Some(
                annotations
                    .iter()
                    .map(|(k, v)| ((*k).to_owned(), v.clone()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            "password".to_owned(),
            ByteString(b"one".to_vec()),
        )])),
        ..Default::default()
    }
}

/// Create `secret` in `ns` and a guard `g` naming it; returns the created Secret once its
/// restore point holds it.
async fn guarded(client: &Client, ns: &str, secret: &Secret) -> Secret {
    let name = secret.metadata.name.clone().unwrap_or_default();
    let created = Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), secret)
        .await
        .expect("create Secret");
    create_guard(client, ns, "g", json!({"secrets": [{"name": name}]})).await;
    wait_saved(client, ns, &name).await;
    created
}

/// Delete the Secret and wait until it is back as a new object; returns it.
async fn delete_and_wait_restored(client: &Client, ns: &str, before: &Secret) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let name = before.metadata.name.as_deref().unwrap_or_default();
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(&format!("{ns}/{name} to be restored"), || async {
        api.get_opt(name)
            .await
            .ok()?
            .filter(|s| s.metadata.uid != before.metadata.uid)
    })
    .await
}

/// The target `name` of guard `g` once its state is `state`.
async fn wait_target(client: &Client, ns: &str, name: &str, state: &str) -> TargetStatus {
    let st = wait_guard_status(client, ns, "g", &format!("{name} {state}"), |s| {
        s.targets.iter().any(|t| t.name == name && t.state == state)
    })
    .await;
    st.targets
        .into_iter()
        .find(|t| t.name == name)
        .expect("target")
}

/// The value of one series of the operator's metrics, if exposed.
fn metric(ctx: &Context, series: &str) -> Option<f64> {
    ctx.metrics.encode().lines().find_map(|l| {
        let (name, value) = l.rsplit_once(' ')?;
        (name == series).then(|| value.parse().ok())?
    })
}

fn annotations(s: &Secret) -> BTreeMap<String, String> {
    let mut a = s.metadata.annotations.clone().unwrap_or_default();
    a.retain(|k, _| !k.starts_with("secretguard.dev/"));
    a
}

fn label<'a>(s: &'a Secret, key: &str) -> Option<&'a str> {
    s.metadata.labels.as_ref()?.get(key).map(String::as_str)
}

#[tokio::test]
async fn a_metadata_only_edit_is_saved_and_a_deletion_restores_it() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "meta-edit").await;
    let original = secret(
        "db",
        &[("app", "ingest")],
        &[("reflector/allowed-namespaces", "ns-a,ns-b".into())],
    );
    guarded(&client, &ns.name, &original).await;
    // A replicator told to share it with fewer namespaces; data untouched.
    let patch = json!({"metadata": {
        "labels": {"app": "ingest-v2"},
        "annotations": {"reflector/allowed-namespaces": "ns-a"},
    }});
    let edited = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    // What a restore reads after a restart or a failover (the running operator may also
    // restore from the deletion's event, which shows the edit anyway).
    let point = wait_restore_point(&client, &ns.name, "db", "the edit saved", |rp| {
        restore_point::parse(rp).is_ok_and(|rp| {
            rp.annotations.get("reflector/allowed-namespaces") == Some(&"ns-a".to_owned())
        })
    })
    .await;
    let saved = restore_point::parse(&point).expect("readable");
    assert_eq!(saved.labels.get("app"), Some(&"ingest-v2".to_owned()));
    let back = delete_and_wait_restored(&client, &ns.name, &edited).await;
    assert_eq!(label(&back, "app"), Some("ingest-v2"));
    assert_eq!(
        annotations(&back).get("reflector/allowed-namespaces"),
        Some(&"ns-a".to_owned()),
        "the narrowed annotation comes back, not the wider one"
    );
    assert_eq!(back.data, edited.data);
    ns.delete(&client).await;
}

#[tokio::test]
async fn a_secret_changed_while_its_guard_is_paused_comes_back_changed_after_unpausing() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "paused-edit").await;
    guarded(&client, &ns.name, &secret("db", &[], &[])).await;
    let guards: Api<SecretGuard> = Api::namespaced(client.clone(), &ns.name);
    let pause = |paused: bool| json!({"spec": {"paused": paused}});
    guards
        .patch("g", &PatchParams::default(), &Patch::Merge(&pause(true)))
        .await
        .expect("pause");
    let key = ObjectKey::new(&ns.name, "g");
    wait_for("the pause to be in force", || async {
        ctx.index()
            .guard(&key)
            .is_some_and(|g| g.spec.paused)
            .then_some(())
    })
    .await;
    // The review's repro: during maintenance the password changes, then the Secret goes.
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"data": {"password": ByteString(b"two".to_vec())}});
    let changed = api
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("change the password");
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_target(&client, &ns.name, "db", "Missing").await;
    assert!(
        api.get_opt("db").await.expect("get").is_none(),
        "paused: not restored"
    );
    guards
        .patch("g", &PatchParams::default(), &Patch::Merge(&pause(false)))
        .await
        .expect("unpause");
    let back = wait_for("db to be restored after unpausing", || async {
        api.get_opt("db").await.ok()?
    })
    .await;
    assert_eq!(
        back.data, changed.data,
        "the password set during the pause comes back, not the one before"
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn a_secret_with_200_kib_of_quoted_annotations_is_saved_in_format_2_and_restored() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "quotes").await;
    // Twice its size once JSON-encoded: more than a restore point's annotations can hold.
    let quotes = "\"".repeat(200 * 1024);
    let created = guarded(
        &client,
        &ns.name,
        &secret("db", &[("app", "ingest")], &[("state", quotes.clone())]),
    )
    .await;
    let point = get_restore_point(&client, &ns.name, "db")
        .await
        .expect("restore point");
    let parsed = restore_point::parse(&point).expect("readable");
    assert_eq!(parsed.format, Format::V2);
    assert!(
        point
            .data
            .as_ref()
            .expect("data")
            .contains_key(restore_point::ORIGIN_METADATA_KEY),
        "the metadata is in the data"
    );
    let back = delete_and_wait_restored(&client, &ns.name, &created).await;
    assert!(
        annotations(&back).get("state") == Some(&quotes),
        "annotation restored"
    );
    assert_eq!(label(&back, "app"), Some("ingest"));
    assert_eq!(back.data, created.data);
    assert!(
        !back
            .data
            .as_ref()
            .expect("data")
            .contains_key(restore_point::ORIGIN_METADATA_KEY),
        "the point's own key is not restored"
    );
    ns.delete(&client).await;
}

#[tokio::test]
async fn a_secret_no_restore_point_can_hold_is_reported_unprotected() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "too-large").await;
    // Control characters: six bytes each once JSON-encoded, over a Secret's 1 MiB of data.
    let big = secret("db", &[], &[("state", "\u{1}".repeat(200 * 1024))]);
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &big)
        .await
        .expect("create Secret");
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    let target = wait_target(&client, &ns.name, "db", "Unprotected").await;
    assert!(
        target
            .message
            .as_deref()
            .is_some_and(|m| m.contains("cannot be saved")),
        "{target:?}"
    );
    let st = wait_guard_status(&client, &ns.name, "g", "Degraded", |s| {
        condition(s, "Degraded") == Some(("True", "Unprotected"))
    })
    .await;
    assert_eq!(st.missing, 0);
    wait_event(&client, &ns.name, "Unprotected", "SecretGuard").await;
    let series = format!(
        "secretguard_unprotected{{namespace=\"{}\",guard=\"g\",kind=\"Secret\",name=\"db\"}}",
        ns.name
    );
    assert_eq!(metric(&ctx, &series), Some(1.0));
    assert!(get_restore_point(&client, &ns.name, "db").await.is_none());
    // Made small again: saved, protected, and the series goes.
    let patch = json!({"metadata": {"annotations": {"state": "small"}}});
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("patch");
    wait_saved(&client, &ns.name, "db").await;
    wait_target_healthy(&client, &ns.name).await;
    wait_for("the unprotected series to go", || async {
        metric(&ctx, &series).is_none().then_some(())
    })
    .await;
    ns.delete(&client).await;
}

/// Wait until guard `g` reports no unhealthy object.
async fn wait_target_healthy(client: &Client, ns: &str) {
    wait_guard_status(client, ns, "g", "every object healthy", |s| {
        condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
}

#[tokio::test]
async fn a_secret_at_the_annotation_limit_is_restored_and_its_restore_counted() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "at-limit").await;
    // 256 KiB of annotations exactly: the apiserver's limit, keys and values counted.
    let fill = restore_point::ANNOTATIONS_LIMIT - "fill".len();
    let full = secret("db", &[], &[("fill", "x".repeat(fill))]);
    let created = guarded(&client, &ns.name, &full).await;
    let back = delete_and_wait_restored(&client, &ns.name, &created).await;
    let restored_annotations = back.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        restore_point::annotations_size(&restored_annotations),
        restore_point::ANNOTATIONS_LIMIT,
        "not a byte more than the original"
    );
    assert_eq!(
        label(&back, labels::RESTORED_FROM),
        created.metadata.uid.as_deref(),
        "which Secret it replaces, as a label"
    );
    assert_eq!(back.data, created.data);
    let st = wait_guard_status(&client, &ns.name, "g", "the restore counted", |s| {
        s.restores == 1
    })
    .await;
    assert_eq!(st.missing, 0);
    ns.delete(&client).await;
}

#[tokio::test]
async fn a_restore_point_of_a_newer_format_is_neither_overwritten_nor_restored_from() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "newer").await;
    let created = guarded(&client, &ns.name, &secret("db", &[], &[])).await;
    // As a newer version (format 3) would have written it.
    let points: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let point_name = restore_point::name_for(&ns.name, "db");
    let newer = json!({"metadata": {"annotations": {annotation::FORMAT: "3"}}});
    let written = points
        .patch(&point_name, &PatchParams::default(), &Patch::Merge(&newer))
        .await
        .expect("mark the point format 3");
    let newer_points = "secretguard_restore_points_unreadable{reason=\"NewerFormat\"}";
    wait_for("the newer point to be counted", || async {
        metric(&ctx, newer_points)
            .is_some_and(|n| n >= 1.0)
            .then_some(())
    })
    .await;
    // A change this version would save: it must not write over the newer point.
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let patch = json!({"data": {"password": ByteString(b"two".to_vec())}});
    api.patch("db", &PatchParams::default(), &Patch::Merge(&patch))
        .await
        .expect("change");
    let target = wait_target(&client, &ns.name, "db", "Unprotected").await;
    assert!(
        target
            .message
            .as_deref()
            .is_some_and(|m| m.contains("format 3")),
        "{target:?}"
    );
    let after = points.get(&point_name).await.expect("the point");
    assert_eq!(
        after.metadata.resource_version, written.metadata.resource_version,
        "not written over"
    );
    // Deleted: not restored from a point this version cannot read.
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let target = wait_target(&client, &ns.name, "db", "Missing").await;
    assert!(
        target
            .message
            .as_deref()
            .is_some_and(|m| m.contains("format 3"))
    );
    assert!(api.get_opt("db").await.expect("get").is_none());
    let still = points.get(&point_name).await.expect("the point");
    assert_eq!(
        still.metadata.resource_version, written.metadata.resource_version,
        "still not written over"
    );
    // An admin puts a readable point back (here: the format this version wrote): restored.
    let readable = json!({"metadata": {"annotations": {annotation::FORMAT: "1"}}});
    points
        .patch(
            &point_name,
            &PatchParams::default(),
            &Patch::Merge(&readable),
        )
        .await
        .expect("readable again");
    let back = wait_for("db to be restored", || async {
        api.get_opt("db").await.ok()?
    })
    .await;
    assert_eq!(back.data, created.data, "what the point held");
    ns.delete(&client).await;
}
