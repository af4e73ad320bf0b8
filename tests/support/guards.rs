//! SecretGuards and what the operator keeps for them: status, and restore points.

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use secretguard::api::v1alpha1::{SecretGuard, SecretGuardStatus};
use secretguard::restore_point;

use super::{OPERATOR_NAMESPACE, wait_for};

/// Create a plain Secret `name` in `ns` holding k=v; returns what was sent.
pub async fn create_secret(client: &Client, ns: &str, name: &str) -> Secret {
    let secret: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "stringData": {"k": "v"}}),
    )
    .expect("secret");
    Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create Secret");
    secret
}

/// A plain Secret `name` (k=v) in `ns`, owned by a new ConfigMap `owner-<name>`; returns
/// the Secret's UID and the owner's.
pub async fn create_owned_secret(client: &Client, ns: &str, name: &str) -> (String, String) {
    let owner = ConfigMap {
        metadata: ObjectMeta {
            name: Some(format!("owner-{name}")),
            ..Default::default()
        },
        ..Default::default()
    };
    let owner = Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &owner)
        .await
        .expect("create the owner");
    let owner_uid = owner.metadata.uid.clone().unwrap_or_default();
    let mut secret: Secret = serde_json::from_value(
        serde_json::json!({"metadata": {"name": name}, "stringData": {"k": "v"}}),
    )
    .expect("secret");
    secret.metadata.owner_references = Some(vec![OwnerReference {
        api_version: "v1".into(),
        kind: "ConfigMap".into(),
        name: owner.metadata.name.unwrap_or_default(),
        uid: owner_uid.clone(),
        ..Default::default()
    }]);
    let secret = Api::<Secret>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &secret)
        .await
        .expect("create the owned Secret");
    (secret.metadata.uid.unwrap_or_default(), owner_uid)
}

/// Wait until `ns/name` exists again with a UID other than `old`; returns it.
pub async fn wait_recreated_in(client: &Client, ns: &str, name: &str, old: &str) -> Secret {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("{ns}/{name} to be re-created"), || async {
        api.get_opt(name)
            .await
            .ok()?
            .filter(|s| s.metadata.uid.as_deref() != Some(old))
    })
    .await
}

/// Wait until guard `guard` shows its target `name` in `state`; returns the target's message.
pub async fn wait_target_state(
    client: &Client,
    ns: &str,
    guard: &str,
    name: &str,
    state: &str,
) -> String {
    let status = wait_guard_status(
        client,
        ns,
        guard,
        &format!("{name} in state {state}"),
        |s| s.targets.iter().any(|t| t.name == name && t.state == state),
    )
    .await;
    status
        .targets
        .into_iter()
        .find(|t| t.name == name)
        .and_then(|t| t.message)
        .unwrap_or_default()
}

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

/// Wait until the guard is refused (Ready=False, InvalidSpec); returns the message.
pub async fn wait_invalid_spec(client: &Client, ns: &str, name: &str) -> String {
    let st = wait_guard_status(client, ns, name, "InvalidSpec", |s| {
        condition(s, "Ready") == Some(("False", "InvalidSpec"))
    })
    .await;
    st.conditions
        .into_iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| c.message)
        .unwrap_or_default()
}

pub fn condition<'a>(s: &'a SecretGuardStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

/// The restore point of `ns/name` that an operator of namespace `operator_ns` keeps, if
/// there is one now.
pub async fn get_restore_point_in(
    client: &Client,
    operator_ns: &str,
    ns: &str,
    name: &str,
) -> Option<Secret> {
    Api::<Secret>::namespaced(client.clone(), operator_ns)
        .get_opt(&restore_point::name_for(ns, name))
        .await
        .ok()?
}

/// The restore point of `ns/name` in OPERATOR_NAMESPACE, if there is one now.
pub async fn get_restore_point(client: &Client, ns: &str, name: &str) -> Option<Secret> {
    get_restore_point_in(client, OPERATOR_NAMESPACE, ns, name).await
}

/// Wait until the restore point of `ns/name` in OPERATOR_NAMESPACE exists and satisfies
/// `check`; returns it.
pub async fn wait_restore_point(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Secret) -> bool,
) -> Secret {
    wait_restore_point_in(client, OPERATOR_NAMESPACE, ns, name, what, check).await
}

/// Wait until the restore point of `ns/name` that an operator of namespace `operator_ns`
/// keeps exists and satisfies `check`; returns it.
pub async fn wait_restore_point_in(
    client: &Client,
    operator_ns: &str,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&Secret) -> bool,
) -> Secret {
    wait_for(what, || async {
        get_restore_point_in(client, operator_ns, ns, name)
            .await
            .filter(|rp| check(rp))
    })
    .await
}

/// Wait until the operator keeps a restore point of this Secret with its current content
/// (in OPERATOR_NAMESPACE); returns it.
pub async fn wait_saved(client: &Client, ns: &str, name: &str) -> Secret {
    let live = Api::<Secret>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("get");
    let want = restore_point::secret_hash(&live);
    wait_restore_point(
        client,
        ns,
        name,
        &format!("a restore point of {ns}/{name}"),
        |rp| restore_point::parse(rp).is_ok_and(|rp| rp.content_hash == want),
    )
    .await
}

/// Wait until there is no restore point of `ns/name` in OPERATOR_NAMESPACE.
pub async fn wait_restore_point_gone(client: &Client, ns: &str, name: &str, what: &str) {
    let api: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let rp_name = restore_point::name_for(ns, name);
    wait_for(what, || async {
        api.get_opt(&rp_name).await.ok()?.is_none().then_some(())
    })
    .await
}

/// Whether a restore point of a token Secret holds this token (compared, never printed).
pub fn holds_token(rp: &Secret, token: &str) -> bool {
    rp.data
        .as_ref()
        .and_then(|d| d.get("token"))
        .is_some_and(|t| t.0 == token.as_bytes())
}
