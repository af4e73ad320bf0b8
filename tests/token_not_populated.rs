//! With no tokens controller, a guarded token Secret is never filled: secretguard says so
//! (TokenNotPopulated) after its deadline, and recovers when the controller is back.
//! Restarts kube-controller-manager, so it is a test binary of its own.

mod support;

use serde_json::json;
use support::*;

#[tokio::test]
async fn a_token_secret_the_tokens_controller_never_fills_is_reported_not_populated() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "notpop").await;
    let n = ns.name.as_str();
    create_service_account(&client, n, "writer").await;
    let kcm = reconfigure_kcm(&[("KCM_TOKENS_CONTROLLER", "off")]);
    create_guard(
        &client,
        n,
        "g",
        json!({"serviceAccounts": [{"name": "writer"}]}),
    )
    .await;

    let st = wait_guard_status(&client, n, "g", "TokenNotPopulated", |s| {
        s.last_incident
            .as_ref()
            .is_some_and(|i| i.reason == "TokenNotPopulated")
    })
    .await;
    assert_eq!(condition(&st, "Degraded"), Some(("True", "NotPopulated")));
    assert_eq!(
        st.targets.first().map(|t| t.state.as_str()),
        Some("NotPopulated")
    );
    let note = wait_event(&client, n, "TokenNotPopulated", "SecretGuard").await;
    assert!(note.contains("tokens controller"), "{note}");

    drop(kcm);
    wait_for_token(&client, n, "writer-token").await;
    wait_guard_status(&client, n, "g", "healthy once the token is filled", |s| {
        condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
}
