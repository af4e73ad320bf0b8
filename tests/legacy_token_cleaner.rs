//! The real legacy token cleaner invalidates a guarded token; secretguard reports it and,
//! with revalidate, makes the token work again. Restarts kube-controller-manager, so it
//! is a test binary of its own.

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
