//! ServiceAccounts, their token Secrets, and who a token says its bearer is. Tokens are
//! compared, never printed.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use serde_json::json;

use super::{TestNamespace, create_guard, holds_token, token_client, wait_for, wait_restore_point};

pub async fn create_service_account(client: &Client, ns: &str, name: &str) -> ServiceAccount {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount")
}

/// The token in a Secret once the tokens controller has filled it. Never print it.
pub async fn wait_for_token(client: &Client, ns: &str, name: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    wait_for("a populated token Secret", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt(name).await.ok()??;
            let token = s.data?.get("token")?.0.clone();
            (!token.is_empty()).then(|| String::from_utf8_lossy(&token).into_owned())
        }
    })
    .await
}

/// Wait until the token Secret holds a token other than `old` (after a rotation or a
/// ServiceAccount re-creation); returns it.
pub async fn wait_for_new_token(client: &Client, ns: &str, name: &str, old: &str) -> String {
    wait_for("a token different from the old one", || async {
        let t = wait_for_token(client, ns, name).await;
        (t != old).then_some(t)
    })
    .await
}

/// Who the apiserver says the bearer of `token` is.
pub async fn whoami(token: &str) -> Result<Option<String>, kube::Error> {
    Api::<SelfSubjectReview>::all(token_client(token).await)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map(|r| r.status.and_then(|s| s.user_info).and_then(|u| u.username))
}

/// A namespace with a ServiceAccount `writer` guarded by guard `g` (serviceAccounts:
/// [writer], and the fields of `extra`), its token Secret populated and saved in a restore
/// point. An operator (in process or not) must be running. Returns the token.
pub async fn guarded_writer(
    client: &Client,
    prefix: &str,
    extra: serde_json::Value,
) -> (TestNamespace, String) {
    let ns = TestNamespace::new(client, prefix).await;
    create_service_account(client, &ns.name, "writer").await;
    let mut spec = json!({"serviceAccounts": [{"name": "writer"}]});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    create_guard(client, &ns.name, "g", spec).await;
    let token = wait_for_token(client, &ns.name, "writer-token").await;
    wait_restore_point(
        client,
        &ns.name,
        "writer-token",
        "the restore point to hold the token",
        |rp| holds_token(rp, &token),
    )
    .await;
    (ns, token)
}

/// A token of ServiceAccount `name` in `ns` (TokenRequest), valid for an hour.
pub fn service_account_token(ns: &str, name: &str) -> String {
    let out = super::kubectl(&["-n", ns, "create", "token", name, "--duration=1h"]);
    assert!(
        out.status.success(),
        "create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}
