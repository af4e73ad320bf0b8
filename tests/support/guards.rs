//! SecretGuards and what the operator keeps for them.

use kube::Client;
use kube::api::{Api, PostParams};
use secretguard::api::v1alpha1::{SecretGuard, SecretGuardStatus};

use super::wait_for;

pub async fn create_guard(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> SecretGuard {
    let guard: SecretGuard = serde_json::from_value(serde_json::json!({
        "apiVersion": "secretguard.dev/v1alpha1",
        "kind": "SecretGuard",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .expect("guard JSON");
    Api::<SecretGuard>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &guard)
        .await
        .expect("create SecretGuard")
}

/// Wait until the guard's status satisfies `check`; returns it.
pub async fn wait_guard_status(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&SecretGuardStatus) -> bool,
) -> SecretGuardStatus {
    let api: Api<SecretGuard> = Api::namespaced(client.clone(), ns);
    wait_for(what, || {
        let api = api.clone();
        let check = &check;
        async move {
            let g = api.get_opt(name).await.ok()??;
            g.status.filter(|s| check(s))
        }
    })
    .await
}

pub fn condition<'a>(s: &'a SecretGuardStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}
