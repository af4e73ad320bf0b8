//! The Helm chart: lint, a server-side dry run of what it renders, hardened defaults, the
//! CRD and plain manifests in sync, and least-privilege RBAC proven on the real apiserver
//! by running the operator binary under the chart's ServiceAccount identity.

mod support;

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::api::{Api, DeleteParams, PostParams};
use serde_json::json;
use support::*;

fn find<'a>(docs: &'a [serde_yaml::Value], kind: &str) -> &'a serde_yaml::Value {
    docs.iter()
        .find(|d| d["kind"] == kind)
        .unwrap_or_else(|| panic!("no {kind} rendered"))
}

#[test]
fn the_chart_lints_and_what_it_renders_passes_a_server_side_dry_run() {
    for set in [
        vec![],
        vec![
            "--set",
            "prometheusRule.enabled=true,grafanaDashboard.enabled=true,networkPolicy.enabled=true,metrics.serviceMonitor.enabled=true,operator.alertmanagerURLs={http://am:9093}",
        ],
    ] {
        let mut args = vec!["lint", "charts/secretguard", "--strict"];
        args.extend_from_slice(&set);
        let out = helm(&args);
        assert!(
            out.status.success(),
            "helm lint {set:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    prepare_operator();
    let (text, _) = helm_template(&["--set", "networkPolicy.enabled=true"]);
    let out = kubectl_with_input(
        &[
            "apply",
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
            "-f",
            "-",
        ],
        &text,
    );
    assert!(
        out.status.success(),
        "server-side dry run: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied = String::from_utf8_lossy(&out.stdout);
    for kind in [
        "deployment.apps/secretguard",
        "clusterrole.rbac.authorization.k8s.io/secretguard",
        "poddisruptionbudget.policy/secretguard",
    ] {
        assert!(applied.contains(kind), "{kind} in {applied}");
    }
}

#[test]
fn the_chart_is_hardened_by_default() {
    let (_, docs) = helm_template(&[]);
    let dep = find(&docs, "Deployment");
    assert_eq!(dep["spec"]["replicas"], 2);
    let pod = &dep["spec"]["template"]["spec"];
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(
        pod["securityContext"]["seccompProfile"]["type"],
        "RuntimeDefault"
    );
    let c = &pod["containers"][0];
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    assert_eq!(c["securityContext"]["allowPrivilegeEscalation"], false);
    assert_eq!(c["securityContext"]["capabilities"]["drop"][0], "ALL");
    assert_eq!(c["livenessProbe"]["httpGet"]["path"], "/healthz");
    assert_eq!(c["readinessProbe"]["httpGet"]["path"], "/readyz");
    assert!(
        c["resources"]["requests"]["memory"].is_string()
            && c["resources"]["limits"]["memory"].is_string()
    );
    let args: Vec<&str> = c["args"]
        .as_sequence()
        .expect("args")
        .iter()
        .filter_map(|a| a.as_str())
        .collect();
    assert!(args.contains(&"--leader-elect=true"), "{args:?}");
    assert_eq!(
        pod["topologySpreadConstraints"][0]["topologyKey"],
        "kubernetes.io/hostname"
    );
    assert_eq!(
        find(&docs, "PodDisruptionBudget")["spec"]["minAvailable"],
        1
    );
    // Least privilege: no wildcard, and no delete of Secrets cluster-wide.
    let cr = docs
        .iter()
        .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "secretguard")
        .expect("operator ClusterRole");
    for rule in cr["rules"].as_sequence().expect("rules") {
        let text = serde_yaml::to_string(rule).expect("yaml");
        assert!(!text.contains("'*'"), "no wildcards: {text}");
        if rule["resources"][0] == "secrets" {
            assert!(
                !text.contains("delete"),
                "no cluster-wide delete of Secrets: {text}"
            );
        }
    }
    let labels = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
            .map(|d| d["metadata"]["labels"].clone())
            .expect("aggregated role")
    };
    assert_eq!(
        labels("secretguard-edit")["rbac.authorization.k8s.io/aggregate-to-edit"],
        "true"
    );
    assert_eq!(
        labels("secretguard-view")["rbac.authorization.k8s.io/aggregate-to-view"],
        "true"
    );
    // The values schema refuses nonsense.
    let out = helm(&[
        "template",
        "x",
        "charts/secretguard",
        "--set",
        "replicaCount=none",
    ]);
    assert!(
        !out.status.success(),
        "values.schema.json refuses a non-integer replicaCount"
    );
}

#[test]
fn the_chart_crd_and_the_plain_manifests_are_in_sync() {
    let (text, docs) = helm_template(&[]);
    let crd = find(&docs, "CustomResourceDefinition");
    let checked_in: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(repo_root().join("crds/secretguard.dev_secretguards.yaml"))
            .expect("crds/"),
    )
    .expect("CRD YAML");
    assert_eq!(
        crd["spec"], checked_in["spec"],
        "the chart's CRD is crds/ (copy crds/ to charts/secretguard/files/crds/)"
    );
    assert_eq!(
        crd["metadata"]["annotations"]["helm.sh/resource-policy"],
        "keep"
    );
    let (_, without) = helm_template(&["--set", "crds.install=false"]);
    assert!(
        without
            .iter()
            .all(|d| d["kind"] != "CustomResourceDefinition")
    );

    let plain = std::fs::read_to_string(repo_root().join("deploy/kubernetes/secretguard.yaml"))
        .expect("plain manifests");
    assert!(
        plain.ends_with(&text),
        "deploy/kubernetes/secretguard.yaml is stale: run `make manifests`"
    );
}

fn access(ns: Option<&str>, verb: &str, group: &str, resource: &str) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            resource_attributes: Some(ResourceAttributes {
                namespace: ns.map(str::to_owned),
                verb: Some(verb.into()),
                group: Some(group.into()),
                resource: Some(resource.into()),
                ..Default::default()
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

#[tokio::test]
async fn the_operator_works_under_the_charts_service_account_and_can_do_nothing_more() {
    let client = admin_client().await;
    install_crds();
    let release_ns = TestNamespace::new(&client, "sg-release").await;
    let out = helm_on_cluster(&[
        "install",
        "secretguard",
        "charts/secretguard",
        "--namespace",
        &release_ns.name,
        "--set",
        "crds.install=false",
        "--set",
        "aggregateRoles=false",
    ]);
    assert!(
        out.status.success(),
        "helm install: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = kubectl(&[
        "-n",
        &release_ns.name,
        "create",
        "token",
        "secretguard",
        "--duration=1h",
    ]);
    assert!(token.status.success());
    let token = String::from_utf8_lossy(&token.stdout).trim().to_owned();
    let as_operator = token_client(&token).await;

    // What it must be able to do, and what it must not.
    let reviews = Api::<SelfSubjectAccessReview>::all(as_operator.clone());
    let other = "some-app";
    let cases = [
        (access(Some(other), "create", "", "secrets"), true),
        (access(Some(other), "patch", "", "secrets"), true),
        (
            access(Some(&release_ns.name), "delete", "", "secrets"),
            true,
        ),
        (
            access(
                Some(&release_ns.name),
                "update",
                "coordination.k8s.io",
                "leases",
            ),
            true,
        ),
        (
            access(None, "create", "authentication.k8s.io", "tokenreviews"),
            true,
        ),
        (access(Some(other), "delete", "", "secrets"), false),
        (access(Some(other), "update", "", "secrets"), false),
        (access(Some(other), "get", "", "pods"), false),
        (access(Some(other), "create", "", "pods"), false),
        (access(Some(other), "get", "", "configmaps"), false),
        (access(None, "list", "", "nodes"), false),
        (
            access(Some(other), "update", "coordination.k8s.io", "leases"),
            false,
        ),
        (
            access(Some(other), "create", "secretguard.dev", "secretguards"),
            false,
        ),
        (
            access(
                None,
                "create",
                "rbac.authorization.k8s.io",
                "clusterrolebindings",
            ),
            false,
        ),
    ];
    for (review, want) in cases {
        let attrs = review.spec.resource_attributes.clone().expect("attrs");
        let got = reviews
            .create(&PostParams::default(), &review)
            .await
            .expect("SelfSubjectAccessReview")
            .status
            .is_some_and(|s| s.allowed);
        assert_eq!(
            got,
            want,
            "{} {} {:?} in {:?}",
            attrs.verb.unwrap_or_default(),
            attrs.resource.unwrap_or_default(),
            attrs.group,
            attrs.namespace
        );
    }

    // The operator binary, as that ServiceAccount, does its job.
    let kubeconfig =
        std::env::temp_dir().join(format!("sg-operator-{}.kubeconfig", std::process::id()));
    let admin = kube::config::Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.clone().expect("cluster");
    let config = json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data}}],
        "users": [{"name": "secretguard", "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": "secretguard"}}],
        "current-context": "local",
    });
    std::fs::write(&kubeconfig, serde_json::to_vec(&config).expect("json"))
        .expect("write kubeconfig");
    let mut op = OperatorProcess::builder("chart")
        .namespace(&release_ns.name)
        .kubeconfig(&kubeconfig)
        .leader_election()
        .start();

    let ns = TestNamespace::new(&client, "sg-rbac").await;
    create_service_account(&client, &ns.name, "writer").await;
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"serviceAccounts": [{"name": "writer"}]}),
    )
    .await;
    let token = wait_for_token(&client, &ns.name, "writer-token").await;
    wait_restore_point_in(
        &client,
        &release_ns.name,
        &ns.name,
        "writer-token",
        "a restore point in the release namespace",
        |_| true,
    )
    .await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    secrets
        .delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    wait_guard_status(
        &client,
        &ns.name,
        "g",
        "restored under least privilege",
        |s| s.restores == 1 && s.missing == 0,
    )
    .await;
    assert!(
        wait_for_token(&client, &ns.name, "writer-token").await == token,
        "same bytes"
    );
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.delete("writer", &DeleteParams::default())
        .await
        .expect("delete SA");
    create_service_account(&client, &ns.name, "writer").await;
    let fresh = wait_for_new_token(&client, &ns.name, "writer-token", &token).await;
    assert_eq!(
        whoami(&fresh).await.expect("fresh token works"),
        Some(format!("system:serviceaccount:{}:writer", ns.name))
    );

    op.kill();
    let _ = std::fs::remove_file(&kubeconfig);
    let log = op.read_log();
    assert!(
        !log.contains("forbidden"),
        "the operator was refused something it needs:\n{log}"
    );
    let out = helm_on_cluster(&["uninstall", "secretguard", "--namespace", &release_ns.name]);
    assert!(
        out.status.success(),
        "helm uninstall: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
