//! Guarding Secrets of any type on the real control plane: by name and by selector,
//! restored with type, data, labels, annotations, immutability and (live) owners;
//! legitimate changes followed; large Secrets and large guards.

mod support;

use std::collections::BTreeMap;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use secretguard::api::v1alpha1::SecretGuard;
use secretguard::labels;
use secretguard::restore_point;
use serde_json::json;
use support::*;

fn secret(name: &str, type_: &str, data: &[(&str, &[u8])]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(BTreeMap::from([("app".to_owned(), "ingest".to_owned())])),
            annotations: Some(BTreeMap::from([("team".to_owned(), "data".to_owned())])),
            ..Default::default()
        },
        type_: Some(type_.into()),
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).to_owned(), ByteString(v.to_vec())))
                .collect(),
        ),
        ..Default::default()
    }
}

/// Wait until the Secret exists as a new object (a UID other than `old`); returns it.
async fn wait_recreated(api: &Api<Secret>, name: &str, old: Option<String>) -> Secret {
    wait_for(&format!("{name} to be re-created"), || async {
        api.get_opt(name)
            .await
            .ok()?
            .filter(|s| s.metadata.uid != old)
    })
    .await
}

fn labelled(s: &Secret) -> bool {
    s.metadata
        .labels
        .as_ref()
        .and_then(|l| l.get(labels::GUARDED))
        .is_some_and(|v| v == "true")
}

#[tokio::test]
async fn restores_deleted_secrets_of_every_type_as_they_were() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "types").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let mut immutable = secret("frozen", "Opaque", &[("k", b"v")]);
    immutable.immutable = Some(true);
    let originals = vec![
        secret(
            "opaque",
            "Opaque",
            &[("password", b"s3cr3t"), ("user", b"ingest")],
        ),
        secret(
            "tls",
            "kubernetes.io/tls",
            &[("tls.crt", b"cert-bytes"), ("tls.key", b"key-bytes")],
        ),
        secret(
            "registry",
            "kubernetes.io/dockerconfigjson",
            &[(".dockerconfigjson", br#"{"auths":{}}"#)],
        ),
        secret(
            "basic",
            "kubernetes.io/basic-auth",
            &[("username", b"u"), ("password", b"p")],
        ),
        immutable,
    ];
    let mut created = Vec::new();
    for s in &originals {
        created.push(
            api.create(&PostParams::default(), s)
                .await
                .expect("create Secret"),
        );
    }
    let names: Vec<_> = originals
        .iter()
        .map(|s| json!({"name": s.metadata.name}))
        .collect();
    create_guard(&client, &ns.name, "g", json!({"secrets": names})).await;
    for s in &originals {
        wait_saved(
            &client,
            &ns.name,
            s.metadata.name.as_deref().unwrap_or_default(),
        )
        .await;
    }
    for s in &created {
        api.delete(
            s.metadata.name.as_deref().unwrap_or_default(),
            &DeleteParams::default(),
        )
        .await
        .expect("delete");
    }
    for (before, original) in created.iter().zip(&originals) {
        let name = original.metadata.name.as_deref().unwrap_or_default();
        let back = wait_recreated(&api, name, before.metadata.uid.clone()).await;
        assert_eq!(back.type_, original.type_, "{name}: type");
        assert!(
            back.data == original.data,
            "{name}: data differs after restore"
        );
        assert_eq!(back.immutable, original.immutable, "{name}: immutable");
        let l = back.metadata.labels.clone().unwrap_or_default();
        assert_eq!(
            l.get("app").map(String::as_str),
            Some("ingest"),
            "{name}: labels"
        );
        let a = back.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(
            a.get("team").map(String::as_str),
            Some("data"),
            "{name}: annotations"
        );
        assert_eq!(
            a.get(labels::RESTORED_FROM),
            before.metadata.uid.as_ref(),
            "{name}: restored-from"
        );
    }
    let st = wait_guard_status(&client, &ns.name, "g", "five restores counted", |s| {
        s.restores == 5
    })
    .await;
    assert_eq!((st.guarded, st.missing), (5, 0));
    wait_event(&client, &ns.name, "SecretRestored", "Secret").await;
}

#[tokio::test]
async fn a_secret_comes_back_with_its_live_owner_and_stays_gone_with_a_deleted_one() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "owners").await;
    let n = ns.name.as_str();
    let api: Api<Secret> = Api::namespaced(client.clone(), n);
    let (stays, stays_owner) = create_owned_secret(&client, n, "stays").await;
    create_owned_secret(&client, n, "goes").await;
    create_guard(
        &client,
        n,
        "g",
        json!({"secrets": [{"name": "stays"}, {"name": "goes"}]}),
    )
    .await;
    wait_saved(&client, n, "stays").await;
    wait_saved(&client, n, "goes").await;

    // Owner alive: a deleted Secret comes back owned by it.
    api.delete("stays", &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_recreated_in(&client, n, "stays", &stays).await;
    let refs = back.metadata.owner_references.unwrap_or_default();
    assert_eq!(refs.len(), 1);
    assert_eq!(refs[0].uid, stays_owner);

    // Owner deleted: the garbage collector deletes the Secret with it, and it stays
    // deleted (neither back as an orphan nor fought over with the collector).
    Api::<ConfigMap>::namespaced(client.clone(), n)
        .delete("owner-goes", &DeleteParams::default())
        .await
        .expect("delete owner");
    let why = wait_target_state(&client, n, "g", "goes", "OwnerGone").await;
    assert!(why.contains("ConfigMap/owner-goes"), "{why}");
    assert!(
        api.get_opt("goes").await.expect("get").is_none(),
        "not restored"
    );
    wait_event(&client, n, "OwnerGone", "SecretGuard").await;
    let st = wait_guard_status(&client, n, "g", "one restore, nothing missing", |s| {
        s.restores == 1
    })
    .await;
    assert_eq!(st.missing, 0, "gone with its owner is not missing");
}

#[tokio::test]
async fn a_selector_guards_matching_secrets_as_they_appear_and_lets_go_of_those_that_stop_matching()
{
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "selector").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let critical = |name: &str| {
        let mut s = secret(name, "Opaque", &[("k", b"v")]);
        s.metadata
            .labels
            .get_or_insert_with(Default::default)
            .insert("tier".into(), "critical".into());
        s
    };
    api.create(&PostParams::default(), &critical("before"))
        .await
        .expect("create");
    api.create(
        &PostParams::default(),
        &secret("plain", "Opaque", &[("k", b"v")]),
    )
    .await
    .expect("create");
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"secretSelector": {"matchLabels": {"tier": "critical"}}}),
    )
    .await;
    api.create(&PostParams::default(), &critical("after"))
        .await
        .expect("create");
    for name in ["before", "after"] {
        wait_saved(&client, &ns.name, name).await;
        assert!(
            labelled(&api.get(name).await.expect("get")),
            "{name} is labelled guarded"
        );
    }
    wait_guard_status(&client, &ns.name, "g", "two guarded", |s| s.guarded == 2).await;
    assert!(
        !labelled(&api.get("plain").await.expect("get")),
        "a non-matching Secret is left alone"
    );

    // Starts matching: guarded.
    api.patch(
        "plain",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": "critical"}}})),
    )
    .await
    .expect("label");
    wait_saved(&client, &ns.name, "plain").await;
    wait_guard_status(&client, &ns.name, "g", "three guarded", |s| s.guarded == 3).await;

    // A selected Secret that is deleted is restored (its labels still match).
    let before = api.get("before").await.expect("get");
    api.delete("before", &DeleteParams::default())
        .await
        .expect("delete");
    wait_recreated(&api, "before", before.metadata.uid).await;

    // Stops matching: let go (label removed, restore point deleted), and not restored.
    api.patch(
        "after",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {"tier": null}}})),
    )
    .await
    .expect("unlabel");
    wait_for(
        "the guarded label to be removed from a Secret that stopped matching",
        || async { (!labelled(&api.get("after").await.ok()?)).then_some(()) },
    )
    .await;
    wait_restore_point_gone(
        &client,
        &ns.name,
        "after",
        "its restore point to be deleted",
    )
    .await;
    wait_guard_status(&client, &ns.name, "g", "two guarded again", |s| {
        s.guarded == 2 && s.restores == 1
    })
    .await;
}

#[tokio::test]
async fn legitimate_changes_are_followed_and_a_removed_label_is_put_back() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "changes").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    api.create(
        &PostParams::default(),
        &secret("db", "Opaque", &[("password", b"old")]),
    )
    .await
    .expect("create");
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    wait_saved(&client, &ns.name, "db").await;

    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"password": "bmV3"}})),
    )
    .await
    .expect("change");
    wait_saved(&client, &ns.name, "db").await;
    let note = wait_event(&client, &ns.name, "SecretChanged", "SecretGuard").await;
    assert!(
        note.contains("restore point now holds the new content"),
        "{note}"
    );

    // Someone takes our label off: it is put back.
    api.patch(
        "db",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"labels": {labels::GUARDED: null}}})),
    )
    .await
    .expect("unlabel");
    wait_for("the guarded label to be put back", || async {
        labelled(&api.get("db").await.ok()?).then_some(())
    })
    .await;

    // Someone deletes the restore point: it is rewritten from the live Secret.
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    rps.delete(
        &restore_point::name_for(&ns.name, "db"),
        &DeleteParams::default(),
    )
    .await
    .expect("delete restore point");
    wait_saved(&client, &ns.name, "db").await;

    // And what comes back after a deletion is the latest content.
    let before = api.get("db").await.expect("get");
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_recreated(&api, "db", before.metadata.uid).await;
    let password = back
        .data
        .and_then(|d| d.get("password").map(|b| b.0.clone()));
    assert!(
        password.as_deref() == Some(b"new".as_slice()),
        "the latest content is restored"
    );
}

#[tokio::test]
async fn a_secret_of_the_maximum_size_round_trips() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "big").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    // The apiserver's limit is 1 MiB of data; leave room for the key.
    let blob: Vec<u8> = (0..(1024 * 1024 - 64))
        .map(|i: u32| (i.wrapping_mul(2_654_435_761) >> 24) as u8)
        .collect();
    let big = api
        .create(
            &PostParams::default(),
            &secret("big", "Opaque", &[("blob", &blob)]),
        )
        .await
        .expect("a Secret of the maximum size");
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"secrets": [{"name": "big"}]}),
    )
    .await;
    wait_saved(&client, &ns.name, "big").await;
    api.delete("big", &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_recreated(&api, "big", big.metadata.uid).await;
    let got = back.data.and_then(|d| d.get("blob").map(|b| b.0.clone()));
    assert!(
        got.as_deref() == Some(blob.as_slice()),
        "1 MiB of data survives the round trip"
    );
}

#[tokio::test]
async fn one_guard_selecting_a_thousand_secrets_works() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "thousand").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let creates = (0..1000).map(|i| {
        let api = api.clone();
        async move {
            let mut s = secret(
                &format!("s{i:04}"),
                "Opaque",
                &[("k", format!("value-{i}").as_bytes())],
            );
            s.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("bulk".into(), "yes".into());
            api.create(&PostParams::default(), &s)
                .await
                .expect("create")
        }
    });
    let created: Vec<Secret> = futures::stream::iter(creates)
        .buffer_unordered(16)
        .collect()
        .await;
    assert_eq!(created.len(), 1000);
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"secretSelector": {"matchLabels": {"bulk": "yes"}}}),
    )
    .await;
    let st = wait_guard_status(
        &client,
        &ns.name,
        "g",
        "a thousand guarded and healthy",
        |s| s.guarded == 1000 && condition(s, "Degraded") == Some(("False", "AllHealthy")),
    )
    .await;
    assert!(
        st.targets.is_empty(),
        "a large healthy guard lists no targets in status"
    );
    for name in ["s0000", "s0500", "s0999"] {
        wait_saved(&client, &ns.name, name).await;
        let before = api.get(name).await.expect("get");
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        wait_recreated(&api, name, before.metadata.uid).await;
    }
    wait_guard_status(&client, &ns.name, "g", "three restores", |s| {
        s.restores == 3 && s.missing == 0
    })
    .await;
}

#[tokio::test]
async fn a_selector_the_apiserver_would_refuse_is_an_invalid_spec_not_a_silent_watch_error() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "badselector").await;
    for (name, selector, why) in [
        (
            "badkey",
            json!({"matchLabels": {"bad key!": "v"}}),
            "label key \"bad key!\"",
        ),
        (
            "emptyin",
            json!({"matchExpressions": [{"key": "tier", "operator": "In", "values": []}]}),
            "needs at least one value",
        ),
    ] {
        create_guard(&client, &ns.name, name, json!({"secretSelector": selector})).await;
        let status = wait_guard_status(&client, &ns.name, name, "InvalidSpec", |s| {
            condition(s, "Ready") == Some(("False", "InvalidSpec"))
        })
        .await;
        let message = status
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .map(|c| c.message.clone())
            .unwrap_or_default();
        assert!(message.contains(why), "{name}: {message}");
    }
}

/// Restores the in-process operator counted in namespace `ns` (its restores_total).
fn restores_in(ctx: &secretguard::controller::Context, ns: &str) -> f64 {
    ctx.metrics
        .encode()
        .lines()
        .filter(|l| {
            l.starts_with("secretguard_restores_total{")
                && l.contains(&format!("namespace=\"{ns}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// The state of `name` in the guard's status.
async fn target_state(client: &Client, ns: &str, guard: &str, name: &str) -> Option<String> {
    Api::<SecretGuard>::namespaced(client.clone(), ns)
        .get(guard)
        .await
        .ok()?
        .status?
        .targets
        .into_iter()
        .find(|t| t.name == name)
        .map(|t| t.state)
}

#[tokio::test]
async fn a_restore_loop_stops_after_the_limit_and_resumes_when_asked() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "loop").await;
    let n = &ns.name;
    // A token Secret guarded as a plain Secret: once its ServiceAccount is gone, the
    // tokens controller deletes it each time it is restored (security review B2).
    create_service_account(&client, n, "x").await;
    let token: Secret = serde_json::from_value(json!({
        "metadata": {"name": "x-token", "annotations": {"kubernetes.io/service-account.name": "x"}},
        "type": "kubernetes.io/service-account-token",
    }))
    .expect("token Secret");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    secrets
        .create(&PostParams::default(), &token)
        .await
        .expect("create x-token");
    wait_for_token(&client, n, "x-token").await;
    create_guard(&client, n, "g", json!({"secrets": [{"name": "x-token"}]})).await;
    wait_restore_point(&client, n, "x-token", "x-token saved", |rp| {
        rp.data.as_ref().is_some_and(|d| d.contains_key("token"))
    })
    .await;
    Api::<ServiceAccount>::namespaced(client.clone(), n)
        .delete("x", &DeleteParams::default())
        .await
        .expect("delete the ServiceAccount");

    wait_guard_status(&client, n, "g", "RestoreLoop after 5 restores", |s| {
        s.targets
            .iter()
            .any(|t| t.name == "x-token" && t.state == "RestoreLoop")
    })
    .await;
    let ctx = operator();
    assert_eq!(restores_in(&ctx, n), 5.0, "exactly the limit, then no more");
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    assert_eq!(
        target_state(&client, n, "g", "x-token").await.as_deref(),
        Some("RestoreLoop"),
        "an audit does not restore it either"
    );
    let events = wait_event_on(&client, n, "RestoreLoop", "SecretGuard", "g").await;
    assert!(
        events.contains("secretguard.dev/resume-restores"),
        "says how to resume: {events}"
    );

    // Resumed: it restores again, up to the limit once more.
    Api::<SecretGuard>::namespaced(client.clone(), n)
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(
                json!({"metadata": {"annotations": {"secretguard.dev/resume-restores": "1"}}}),
            ),
        )
        .await
        .expect("annotate the guard");
    wait_for("10 restores", || async {
        (restores_in(&ctx, n) >= 10.0).then_some(())
    })
    .await;
    wait_for("RestoreLoop again", || async {
        (target_state(&client, n, "g", "x-token").await.as_deref() == Some("RestoreLoop"))
            .then_some(())
    })
    .await;
    assert_eq!(restores_in(&ctx, n), 10.0, "the limit again, then no more");
}
