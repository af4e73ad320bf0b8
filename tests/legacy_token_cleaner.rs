//! The real legacy token cleaner invalidates a guarded token; secretguard reports it and,
//! with revalidate, makes the token work again. An invalidation a person set stays.
//! Restarts kube-controller-manager, so it is a test binary of its own.

mod support;

use k8s_openapi::api::core::v1::{ConfigMap, ObjectReference, Secret, ServiceAccount};
use kube::api::{Api, Patch, PatchParams, PostParams};
use secretguard::api::v1alpha1::SecretGuard;
use secretguard::labels;
use serde_json::json;
use support::*;

const TRACKING: &str = "kube-apiserver-legacy-service-account-token-tracking";

#[tokio::test]
async fn a_token_invalidated_by_the_legacy_token_cleaner_works_again_after_revalidation() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "cleaner").await;
    let n = ns.name.as_str();
    // A token as clusters before 1.24 made them: listed in the ServiceAccount's .secrets,
    // which is what makes it a target of the cleaner.
    create_service_account(&client, n, "legacy").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    let secret: Secret = serde_json::from_value(json!({
        "metadata": {"name": "legacy-token", "annotations": {labels::SA_NAME_ANNOTATION: "legacy"}},
        "type": labels::TOKEN_TYPE,
    }))
    .expect("secret");
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create token Secret");
    let token = wait_for_token(&client, n, "legacy-token").await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), n);
    let listed = json!({"secrets": [ObjectReference { name: Some("legacy-token".into()), ..Default::default() }]});
    sas.patch("legacy", &PatchParams::default(), &Patch::Merge(&listed))
        .await
        .expect("list token in SA");
    // Guarded, but not revalidated yet, so the invalidation can be seen to bite.
    create_guard(
        &client,
        n,
        "g",
        json!({"serviceAccounts": [{"name": "legacy"}], "revalidate": false}),
    )
    .await;
    wait_guard_status(&client, n, "g", "guard healthy", |s| {
        s.guarded == 1 && condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;

    // Make the cleaner act now: tracking started long ago, period one second.
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "kube-system");
    let since = cms
        .get(TRACKING)
        .await
        .expect("tracking ConfigMap")
        .data
        .unwrap_or_default()
        .get("since")
        .cloned();
    cms.patch(
        TRACKING,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"since": "2000-01-01"}})),
    )
    .await
    .expect("backdate tracking");
    let kcm = reconfigure_kcm(&[("LEGACY_TOKEN_CLEANUP_PERIOD", "1s")]);

    wait_for("the cleaner to label the token invalid", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("legacy-token").await.ok()??;
            s.metadata
                .labels?
                .contains_key(labels::LEGACY_TOKEN_INVALID_SINCE)
                .then_some(())
        }
    })
    .await;
    let err = whoami(&token)
        .await
        .expect_err("an invalidated token is rejected");
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 401),
        "{err}"
    );
    let st = wait_guard_status(&client, n, "g", "TokenInvalidated", |s| {
        s.last_incident
            .as_ref()
            .is_some_and(|i| i.reason == "TokenInvalidated")
    })
    .await;
    assert_eq!(
        st.last_incident.as_ref().map(|i| i.outcome.as_str()),
        Some("AlertOnly")
    );
    assert_eq!(condition(&st, "Degraded"), Some(("True", "Invalidated")));
    wait_event(&client, n, "TokenInvalidated", "SecretGuard").await;

    // Now let secretguard revalidate.
    Api::<SecretGuard>::namespaced(client.clone(), n)
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"revalidate": true}})),
        )
        .await
        .expect("enable revalidate");
    wait_for("the invalid-since label to be removed", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt("legacy-token").await.ok()??;
            (!s.metadata
                .labels
                .unwrap_or_default()
                .contains_key(labels::LEGACY_TOKEN_INVALID_SINCE))
            .then_some(())
        }
    })
    .await;
    assert_eq!(
        whoami(&token).await.expect("the token works again"),
        Some(format!("system:serviceaccount:{n}:legacy"))
    );
    wait_event(&client, n, "TokenRevalidated", "SecretGuard").await;

    drop(kcm);
    if let Some(since) = since {
        let _ = cms
            .patch(
                TRACKING,
                &PatchParams::default(),
                &Patch::Merge(json!({"data": {"since": since}})),
            )
            .await;
    }
}

/// revalidate undoes the cleaner's automatic invalidation only: the same label set by a
/// person (here an admin's `kubectl label`, field manager kubectl-label) is deliberate
/// incident response, and stays.
#[tokio::test]
async fn an_invalidation_an_admin_set_stays_even_with_revalidate() {
    let client = admin_client().await;
    let ctx = operator();
    let (ns, token) = guarded_writer(&client, "admininvalid", json!({})).await;
    let n = ns.name.as_str();
    let label = format!("{}=2026-01-01", labels::LEGACY_TOKEN_INVALID_SINCE);
    let out = kubectl(&["-n", n, "label", "secret", "writer-token", &label]);
    assert!(
        out.status.success(),
        "kubectl label: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Published by the reconcile that decided about the label, after its writes.
    let note = wait_event(&client, n, "TokenInvalidated", "SecretGuard").await;
    assert!(note.contains("left in place"), "{note}");
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    let s = Api::<Secret>::namespaced(client.clone(), n)
        .get("writer-token")
        .await
        .expect("token Secret");
    assert!(
        s.metadata
            .labels
            .unwrap_or_default()
            .contains_key(labels::LEGACY_TOKEN_INVALID_SINCE),
        "the admin's invalidation was undone"
    );
    assert!(events(&client, n, "TokenRevalidated").await.is_empty());
    let st = wait_guard_status(&client, n, "g", "the token Invalidated", |s| {
        s.targets.first().is_some_and(|t| t.state == "Invalidated")
    })
    .await;
    assert!(
        st.targets[0]
            .message
            .as_deref()
            .is_some_and(|m| m.contains("left in place")),
        "{:?}",
        st.targets[0].message
    );
    // Never used before: the apiserver's token cache cannot answer for it.
    assert!(
        matches!(whoami(&token).await, Err(kube::Error::Api(s)) if s.code == 401),
        "the invalidated token is rejected"
    );
}
