//! Proves the local control plane is the real thing: real versions, a real tokens
//! controller, real authentication and RBAC, real admission policies, and namespace
//! deletion that completes. Everything else in the test suite rests on these.

mod support;

use k8s_openapi::api::admissionregistration::v1::{
    MatchResources, NamedRuleWithOperations, ValidatingAdmissionPolicy,
    ValidatingAdmissionPolicyBinding, ValidatingAdmissionPolicyBindingSpec,
    ValidatingAdmissionPolicySpec, Validation,
};
use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{ConfigMap, Namespace, Secret, ServiceAccount};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use support::{TestNamespace, create_service_account, wait_for, wait_for_token};

const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";

fn api_status(err: &kube::Error) -> Option<(u16, &str)> {
    match err {
        kube::Error::Api(status) => Some((status.code, status.message.as_str())),
        _ => None,
    }
}

async fn create_token_secret(client: &Client, ns: &str, name: &str, sa: &str) {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    let secret = Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            annotations: Some([(SA_NAME_ANNOTATION.to_owned(), sa.to_owned())].into()),
            ..Default::default()
        },
        type_: Some(TOKEN_TYPE.into()),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &secret)
        .await
        .expect("create token Secret");
}

#[tokio::test]
async fn apiserver_reports_the_built_version() {
    let client = support::admin_client().await;
    let want = std::env::var("K8S_VERSION").unwrap_or_else(|_| "v1.37.1".into());
    let info = client.apiserver_version().await.expect("GET /version");
    assert_eq!(info.git_version, want);
}

#[tokio::test]
async fn tokens_controller_populates_a_legacy_token_that_authenticates_as_its_service_account() {
    let client = support::admin_client().await;
    let ns = TestNamespace::new(&client, "token").await;
    let sa = create_service_account(&client, &ns.name, "writer").await;
    create_token_secret(&client, &ns.name, "writer-token", "writer").await;

    let token = wait_for_token(&client, &ns.name, "writer-token").await;
    let secret = Api::<Secret>::namespaced(client.clone(), &ns.name)
        .get("writer-token")
        .await
        .expect("get token Secret");
    let annotations = secret.metadata.annotations.unwrap_or_default();
    assert_eq!(
        annotations.get("kubernetes.io/service-account.uid"),
        sa.metadata.uid.as_ref(),
        "the tokens controller records the ServiceAccount's UID"
    );
    let data = secret.data.unwrap_or_default();
    assert!(data.contains_key("ca.crt"), "ca.crt is filled in");
    assert_eq!(
        data.get("namespace").map(|b| b.0.as_slice()),
        Some(ns.name.as_bytes())
    );

    // A client holding nothing but that token is the ServiceAccount...
    let as_sa = support::token_client(&token).await;
    let review = Api::<SelfSubjectReview>::all(as_sa.clone())
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview with the legacy token");
    let user = review.status.and_then(|s| s.user_info).expect("userInfo");
    assert_eq!(
        user.username.as_deref(),
        Some(format!("system:serviceaccount:{}:writer", ns.name).as_str())
    );
    assert!(
        user.groups
            .unwrap_or_default()
            .contains(&"system:serviceaccounts".to_owned())
    );

    // ...and RBAC grants it nothing it was not given.
    let err = Api::<Secret>::namespaced(as_sa.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect_err("listing Secrets must be forbidden");
    assert_eq!(api_status(&err).map(|s| s.0), Some(403), "{err}");

    // A token that is not the stored one does not authenticate at all.
    let mut forged = token.clone();
    forged.pop();
    forged.push(if token.ends_with('A') { 'B' } else { 'A' });
    let err = Api::<SelfSubjectReview>::all(support::token_client(&forged).await)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .expect_err("a forged token must not authenticate");
    assert_eq!(api_status(&err).map(|s| s.0), Some(401), "{err}");
}

#[tokio::test]
async fn deleting_the_service_account_makes_the_tokens_controller_delete_its_token() {
    let client = support::admin_client().await;
    let ns = TestNamespace::new(&client, "sadel").await;
    create_service_account(&client, &ns.name, "doomed").await;
    create_token_secret(&client, &ns.name, "doomed-token", "doomed").await;
    wait_for_token(&client, &ns.name, "doomed-token").await;

    Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .delete("doomed", &DeleteParams::default())
        .await
        .expect("delete ServiceAccount");

    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    wait_for(
        "the tokens controller to delete the orphaned token Secret",
        || {
            let secrets = secrets.clone();
            async move { matches!(secrets.get_opt("doomed-token").await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

#[tokio::test]
async fn a_validating_admission_policy_denies_deleting_a_labelled_secret() {
    let client = support::admin_client().await;
    let ns = TestNamespace::new(&client, "vap").await;
    let policy_name = format!("deny-delete-{}", ns.name);
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    for (name, protected) in [("protected", true), ("ordinary", false)] {
        let mut labels = std::collections::BTreeMap::new();
        if protected {
            labels.insert("example.dev/protect".to_owned(), "true".to_owned());
        }
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(name.into()),
                labels: Some(labels),
                ..Default::default()
            },
            string_data: Some([("k".to_owned(), "v".to_owned())].into()),
            ..Default::default()
        };
        secrets
            .create(&PostParams::default(), &secret)
            .await
            .expect("create Secret");
    }

    let policy = ValidatingAdmissionPolicy {
        metadata: ObjectMeta {
            name: Some(policy_name.clone()),
            ..Default::default()
        },
        spec: Some(ValidatingAdmissionPolicySpec {
            failure_policy: Some("Fail".into()),
            match_constraints: Some(MatchResources {
                resource_rules: Some(vec![NamedRuleWithOperations {
                    api_groups: Some(vec!["".into()]),
                    api_versions: Some(vec!["v1".into()]),
                    operations: Some(vec!["DELETE".into()]),
                    resources: Some(vec!["secrets".into()]),
                    ..Default::default()
                }]),
                ..Default::default()
            }),
            validations: Some(vec![Validation {
                expression: "false".into(),
                message: Some("protected Secrets cannot be deleted".into()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        ..Default::default()
    };
    let namespace_only = LabelSelector {
        match_labels: Some([("kubernetes.io/metadata.name".to_owned(), ns.name.clone())].into()),
        ..Default::default()
    };
    let binding = ValidatingAdmissionPolicyBinding {
        metadata: ObjectMeta {
            name: Some(policy_name.clone()),
            ..Default::default()
        },
        spec: Some(ValidatingAdmissionPolicyBindingSpec {
            policy_name: Some(policy_name.clone()),
            validation_actions: Some(vec!["Deny".into()]),
            match_resources: Some(MatchResources {
                namespace_selector: Some(namespace_only),
                object_selector: Some(LabelSelector {
                    match_labels: Some(
                        [("example.dev/protect".to_owned(), "true".to_owned())].into(),
                    ),
                    ..Default::default()
                }),
                ..Default::default()
            }),
            ..Default::default()
        }),
    };
    let policies: Api<ValidatingAdmissionPolicy> = Api::all(client.clone());
    let bindings: Api<ValidatingAdmissionPolicyBinding> = Api::all(client.clone());
    policies
        .create(&PostParams::default(), &policy)
        .await
        .expect("create policy");
    bindings
        .create(&PostParams::default(), &binding)
        .await
        .expect("create binding");

    // Policies load asynchronously; probe with dry-run deletes, which go through admission
    // but change nothing, until the policy is in force.
    let dry_run = DeleteParams {
        dry_run: true,
        ..Default::default()
    };
    wait_for("the admission policy to take effect", || {
        let secrets = secrets.clone();
        let dry_run = dry_run.clone();
        async move {
            secrets
                .delete("protected", &dry_run)
                .await
                .is_err()
                .then_some(())
        }
    })
    .await;

    let err = secrets
        .delete("protected", &DeleteParams::default())
        .await
        .expect_err("deleting the labelled Secret must be denied");
    let (code, message) = api_status(&err).expect("an API error");
    assert_eq!(code, 422, "{err}");
    assert!(
        message.contains("protected Secrets cannot be deleted"),
        "{message}"
    );
    assert!(secrets.get_opt("protected").await.expect("get").is_some());

    secrets
        .delete("ordinary", &DeleteParams::default())
        .await
        .expect("an unlabelled Secret can still be deleted");

    bindings
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete binding");
    policies
        .delete(&policy_name, &DeleteParams::default())
        .await
        .expect("delete policy");
}

#[tokio::test]
async fn deleting_a_namespace_completes() {
    let client = support::admin_client().await;
    let ns = TestNamespace::new(&client, "nsdel").await;
    create_service_account(&client, &ns.name, "app").await;
    create_token_secret(&client, &ns.name, "app-token", "app").await;
    wait_for_token(&client, &ns.name, "app-token").await;
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some("settings".into()),
            ..Default::default()
        },
        data: Some([("a".to_owned(), "b".to_owned())].into()),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), &ns.name)
        .create(&PostParams::default(), &cm)
        .await
        .expect("create ConfigMap");

    ns.delete(&client).await;

    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for(
        "the namespace controller to finish deleting the namespace",
        || {
            let namespaces = namespaces.clone();
            let name = ns.name.clone();
            async move { matches!(namespaces.get_opt(&name).await, Ok(None)).then_some(()) }
        },
    )
    .await;
}

/// The premise of identical restores, checked on the real apiserver: a legacy token dies
/// with its Secret (once the apiserver's short success cache expires) and comes back to
/// life when the Secret is re-created with the same name and bytes.
#[tokio::test]
async fn recreating_a_deleted_token_secret_with_the_same_bytes_revives_the_token() {
    let client = support::admin_client().await;
    let ns = TestNamespace::new(&client, "revive").await;
    create_service_account(&client, &ns.name, "svc").await;
    create_token_secret(&client, &ns.name, "svc-token", "svc").await;
    let token = wait_for_token(&client, &ns.name, "svc-token").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let saved = secrets.get("svc-token").await.expect("get token Secret");

    let whoami = |token: String| async move {
        Api::<SelfSubjectReview>::all(support::token_client(&token).await)
            .create(&PostParams::default(), &SelfSubjectReview::default())
            .await
            .map(|r| r.status.and_then(|s| s.user_info).and_then(|u| u.username))
    };
    let expected = format!("system:serviceaccount:{}:svc", ns.name);
    assert_eq!(
        whoami(token.clone()).await.expect("token works"),
        Some(expected.clone())
    );

    secrets
        .delete("svc-token", &DeleteParams::default())
        .await
        .expect("delete token Secret");
    wait_for("the deleted token to be rejected", || {
        let token = token.clone();
        async move {
            match whoami(token).await {
                Err(e) if api_status(&e).map(|s| s.0) == Some(401) => Some(()),
                _ => None,
            }
        }
    })
    .await;

    let mut copy = saved.clone();
    copy.metadata = ObjectMeta {
        name: saved.metadata.name.clone(),
        annotations: saved.metadata.annotations.clone(),
        labels: saved.metadata.labels.clone(),
        ..Default::default()
    };
    secrets
        .create(&PostParams::default(), &copy)
        .await
        .expect("re-create token Secret");
    let back = whoami(token.clone())
        .await
        .expect("the old token works again");
    assert_eq!(back, Some(expected));
}
