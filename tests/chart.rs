//! The Helm chart: lint, a server-side dry run of what it renders, hardened defaults, the
//! CRD and plain manifests in sync, and least-privilege RBAC proven on the real apiserver
//! by running the operator binary under the chart's ServiceAccount identity.

mod support;

use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use k8s_openapi::api::core::v1::{ConfigMap, Secret, ServiceAccount};
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

/// The values people expect of a chart (cert-manager, External Secrets, Kyverno): extra
/// arguments, environment and volumes, a log level, common labels, an image by digest, an
/// existing ServiceAccount, OpenShift's assigned IDs, a parent chart's `global`.
#[test]
fn the_chart_takes_the_conventional_values() {
    let digest = format!("sha256:{}", "a".repeat(64));
    let sets = format!(
        "openshift=true,image.digest={digest},commonLabels.team=platform,\
         extraArgs[0]=--workers=4,extraEnv[0].name=HTTPS_PROXY,extraEnv[0].value=http://proxy:3128,\
         extraVolumes[0].name=scratch,extraVolumes[0].emptyDir.medium=Memory,\
         extraVolumeMounts[0].name=scratch,extraVolumeMounts[0].mountPath=/scratch,\
         operator.logLevel=debug,global.imageRegistry=example.org"
    );
    let (_, docs) = helm_template(&["--set", &sets]);
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    let c = &pod["containers"][0];
    assert_eq!(
        c["image"].as_str(),
        Some(format!("ghcr.io/secretguard/secretguard@{digest}").as_str())
    );
    let args = serde_yaml::to_string(&c["args"]).expect("yaml");
    assert!(
        args.trim_end().ends_with("- --workers=4"),
        "extra arguments last: {args}"
    );
    let env = serde_yaml::to_string(&c["env"]).expect("yaml");
    assert!(env.contains("RUST_LOG") && env.contains("debug"), "{env}");
    assert!(env.contains("HTTPS_PROXY"), "{env}");
    assert_eq!(c["volumeMounts"][0]["mountPath"], "/scratch");
    assert_eq!(pod["volumes"][0]["emptyDir"]["medium"], "Memory");
    // OpenShift assigns user and group IDs; the rest stays hardened.
    assert!(pod["securityContext"]["runAsUser"].is_null());
    assert!(pod["securityContext"]["runAsGroup"].is_null());
    assert_eq!(pod["securityContext"]["runAsNonRoot"], true);
    assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
    for d in &docs {
        assert_eq!(
            d["metadata"]["labels"]["team"],
            "platform",
            "commonLabels on {} {}",
            d["kind"].as_str().unwrap_or_default(),
            d["metadata"]["name"].as_str().unwrap_or_default()
        );
    }

    // An existing ServiceAccount: none created, the RBAC bound to it.
    let (_, docs) = helm_template(&[
        "--set",
        "serviceAccount.create=false,serviceAccount.name=platform-sa",
    ]);
    assert!(docs.iter().all(|d| d["kind"] != "ServiceAccount"));
    let pod = &find(&docs, "Deployment")["spec"]["template"]["spec"];
    assert_eq!(pod["serviceAccountName"], "platform-sa");
    let binding = serde_yaml::to_string(&find(&docs, "ClusterRoleBinding")).expect("yaml");
    assert!(binding.contains("platform-sa"), "{binding}");

    // One replica: no PodDisruptionBudget (it would block every drain).
    let (_, docs) = helm_template(&[
        "--set",
        "replicaCount=1,operator.leaderElection.enabled=false",
    ]);
    assert!(docs.iter().all(|d| d["kind"] != "PodDisruptionBudget"));
}

/// Values that contradict each other, or that the values schema refuses, are refused,
/// saying what to change.
#[test]
fn contradictory_values_are_refused_with_a_message() {
    for (sets, message) in [
        (
            "operator.leaderElection.enabled=false",
            "replicaCount is 2 but operator.leaderElection.enabled is false",
        ),
        (
            "podDisruptionBudget.minAvailable=2",
            "podDisruptionBudget.minAvailable (2) must be below replicaCount (2)",
        ),
        (
            "serviceAccount.create=false",
            "serviceAccount.name: name the existing ServiceAccount to run as",
        ),
        ("image.digest=latest", "/image/digest"),
        // The values schema refuses nonsense.
        ("replicaCount=none", "replicaCount"),
    ] {
        let out = helm(&[
            "template",
            "x",
            "charts/secretguard",
            "--kube-version",
            TEMPLATE_KUBE_VERSION,
            "--set",
            sets,
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains(message),
            "{sets}: {err}"
        );
    }
    let out = helm(&[
        "template",
        "x",
        "charts/secretguard",
        "--kube-version",
        "1.29.0",
    ]);
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains(">=1.30.0-0"),
        "ValidatingAdmissionPolicy needs Kubernetes 1.30"
    );
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
    // The Lease rule names its Lease (create cannot be limited to a name).
    let role = find(&docs, "Role");
    let lease_rules: Vec<&serde_yaml::Value> = role["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter(|r| r["resources"][0] == "leases")
        .collect();
    assert_eq!(lease_rules.len(), 2, "{lease_rules:?}");
    for rule in lease_rules {
        let verbs = serde_yaml::to_string(&rule["verbs"]).expect("yaml");
        if rule["resourceNames"].is_null() {
            assert_eq!(verbs.trim(), "- create", "only create is unnamed");
        } else {
            assert_eq!(rule["resourceNames"][0], "secretguard-leader");
        }
    }
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

/// Secure metrics by default: HTTPS and the metrics-reader role; the operator may ask the
/// apiserver about a scraper's token; the ServiceMonitor scrapes with a bearer token.
#[test]
fn the_chart_serves_metrics_only_to_the_metrics_reader_role() {
    let (_, docs) = helm_template(&["--set", "metrics.serviceMonitor.enabled=true"]);
    let args = serde_yaml::to_string(
        &find(&docs, "Deployment")["spec"]["template"]["spec"]["containers"][0]["args"],
    )
    .expect("yaml");
    assert!(args.contains("--metrics-secure=true"), "{args}");
    let role = |name: &str| {
        docs.iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == name)
            .unwrap_or_else(|| panic!("ClusterRole {name}"))
            .clone()
    };
    let reader: serde_yaml::Value =
        serde_yaml::from_str("[{nonResourceURLs: [/metrics], verbs: [get]}]").expect("yaml");
    assert_eq!(
        role("secretguard-metrics-reader")["rules"],
        reader,
        "get /metrics, nothing else"
    );
    let operator = serde_yaml::to_string(&role("secretguard")["rules"]).expect("yaml");
    assert!(
        operator.contains("subjectaccessreviews"),
        "the operator asks whether a scraper may read /metrics: {operator}"
    );
    assert!(
        docs.iter().all(|d| d["kind"] != "ClusterRoleBinding"
            || d["metadata"]["name"] != "secretguard-metrics-reader"),
        "nobody is bound to metrics-reader unless metrics.readers says so"
    );
    let endpoint = &find(&docs, "ServiceMonitor")["spec"]["endpoints"][0];
    assert_eq!(endpoint["scheme"], "https");
    assert_eq!(
        endpoint["bearerTokenFile"],
        "/var/run/secrets/kubernetes.io/serviceaccount/token"
    );
    assert_eq!(endpoint["tlsConfig"]["insecureSkipVerify"], true);
    assert_eq!(
        endpoint["honorLabels"], true,
        "the metrics' namespace label (the guard's) is kept, not renamed exported_namespace"
    );

    let (_, plain) = helm_template(&["--set", "metrics.secure=false"]);
    let operator = serde_yaml::to_string(
        &plain
            .iter()
            .find(|d| d["kind"] == "ClusterRole" && d["metadata"]["name"] == "secretguard")
            .expect("operator ClusterRole")["rules"],
    )
    .expect("yaml");
    assert!(!operator.contains("subjectaccessreviews"), "{operator}");
}

/// Each rule of a rendered NetworkPolicy section as YAML text.
fn rules(policy: &serde_yaml::Value, section: &str) -> Vec<String> {
    policy["spec"][section]
        .as_sequence()
        .map(|rules| {
            rules
                .iter()
                .map(|r| serde_yaml::to_string(r).expect("yaml"))
                .collect()
        })
        .unwrap_or_default()
}

/// The NetworkPolicy is on by default and opens nothing it is not told to: the metrics
/// port only to the Prometheus selectors (without them: to nobody), egress only to the
/// apiserver (its addresses as the cluster has them), DNS and the Alertmanagers.
#[tokio::test]
async fn the_charts_network_policy_opens_only_what_the_operator_needs() {
    let (_, docs) = helm_template(&[]);
    let policy = find(&docs, "NetworkPolicy");
    assert_eq!(
        serde_yaml::to_string(&policy["spec"]["policyTypes"]).expect("yaml"),
        "- Ingress\n- Egress\n"
    );
    let ingress = rules(policy, "ingress");
    assert_eq!(
        ingress,
        vec!["ports:\n- port: 8081\n".to_owned()],
        "no scraper selector: the metrics port is closed, only the probes are open"
    );
    let egress = rules(policy, "egress");
    assert!(
        egress.iter().all(|r| r.contains("ports:")),
        "no egress rule opens every port: {egress:?}"
    );
    assert!(
        !egress.iter().any(|r| r.contains("9093")),
        "no Alertmanager configured, none reachable: {egress:?}"
    );

    let (_, docs) = helm_template(&[
        "--set",
        "networkPolicy.prometheus.namespaceSelector.matchLabels.team=monitoring,networkPolicy.prometheus.podSelector.matchLabels.app=prometheus,operator.alertmanagerURLs={http://am.monitoring:9093}",
    ]);
    let policy = find(&docs, "NetworkPolicy");
    let scrapers = &policy["spec"]["ingress"][0];
    assert_eq!(scrapers["ports"][0]["port"], 8080);
    assert_eq!(
        scrapers["from"][0]["namespaceSelector"]["matchLabels"]["team"],
        "monitoring"
    );
    assert_eq!(
        scrapers["from"][0]["podSelector"]["matchLabels"]["app"], "prometheus",
        "one peer: those pods in those namespaces"
    );
    assert!(
        rules(policy, "egress")
            .iter()
            .any(|r| r.contains("port: 9093")),
        "the Alertmanager's port"
    );

    // Installed (or rendered against the cluster), the apiserver rule names the
    // apiserver's addresses, from its EndpointSlices (this control plane runs without the
    // endpoint reconciler, so the test provides one).
    let slice = "apiVersion: discovery.k8s.io/v1\nkind: EndpointSlice\n\
                 metadata: {name: kubernetes-sg-chart-test, namespace: default, labels: {kubernetes.io/service-name: kubernetes}}\n\
                 addressType: IPv4\nendpoints: [{addresses: [192.0.2.10]}]\nports: [{name: https, port: 16443, protocol: TCP}]\n";
    let out = kubectl_with_input(&["apply", "-f", "-"], slice);
    assert!(out.status.success(), "EndpointSlice");
    let kubeconfig = kubeconfig_path().to_string_lossy().into_owned();
    let (_, docs) = helm_template(&["--dry-run=server", "--kubeconfig", &kubeconfig]);
    let _ = kubectl_with_input(&["delete", "-f", "-"], slice);
    let apiserver = &rules(find(&docs, "NetworkPolicy"), "egress")[0];
    assert!(
        apiserver.contains("cidr: 192.0.2.10/32")
            && apiserver.contains("cidr: 10.0.0.1/32")
            && apiserver.contains("port: 16443"),
        "the apiserver's endpoints and Service: {apiserver}"
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

fn access_named(
    ns: &str,
    verb: &str,
    group: &str,
    resource: &str,
    name: &str,
) -> SelfSubjectAccessReview {
    let mut review = access(Some(ns), verb, group, resource);
    if let Some(attrs) = review.spec.resource_attributes.as_mut() {
        attrs.name = Some(name.into());
    }
    review
}

fn access_url(verb: &str, path: &str) -> SelfSubjectAccessReview {
    SelfSubjectAccessReview {
        spec: SelfSubjectAccessReviewSpec {
            non_resource_attributes: Some(NonResourceAttributes {
                path: Some(path.into()),
                verb: Some(verb.into()),
            }),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Whether the holder of `client` may do what `review` asks.
async fn allowed(client: &kube::Client, review: &SelfSubjectAccessReview) -> bool {
    Api::<SelfSubjectAccessReview>::all(client.clone())
        .create(&PostParams::default(), review)
        .await
        .expect("SelfSubjectAccessReview")
        .status
        .is_some_and(|s| s.allowed)
}

/// GET `url` (HTTPS, self-signed) with this bearer token: the status code and body.
async fn scrape(url: &str, token: Option<&str>) -> (u16, String) {
    let client = ::reqwest::Client::builder()
        .danger_accept_invalid_certs(true)
        .build()
        .expect("HTTP client");
    let mut request = client.get(url);
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("GET /metrics");
    let code = response.status().as_u16();
    (code, response.text().await.unwrap_or_default())
}

/// One operator at a time: each one guards every guard of the cluster.
static OPERATOR: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[tokio::test]
async fn the_operator_works_under_the_charts_service_account_and_can_do_nothing_more() {
    let _one = OPERATOR.lock().await;
    let client = admin_client().await;
    let chart = ChartRelease::install(&client, "secretguard", &[]).await;
    let release_ns = &chart.namespace;
    let as_operator = token_client(&chart.token()).await;

    // What it must be able to do, and what it must not.
    let reviews = Api::<SelfSubjectAccessReview>::all(as_operator.clone());
    let other = "some-app";
    let lease = |verb: &str, name: &str| {
        access_named(
            &release_ns.name,
            verb,
            "coordination.k8s.io",
            "leases",
            name,
        )
    };
    for (review, want) in [
        (lease("get", "secretguard-leader"), true),
        (lease("update", "secretguard-leader"), true),
        (
            access(
                Some(&release_ns.name),
                "create",
                "coordination.k8s.io",
                "leases",
            ),
            true,
        ),
        (lease("get", "another-lease"), false),
        (lease("update", "another-lease"), false),
        (lease("delete", "secretguard-leader"), false),
    ] {
        let attrs = review.spec.resource_attributes.clone().expect("attrs");
        assert_eq!(
            allowed(&as_operator, &review).await,
            want,
            "{:?} lease {:?}",
            attrs.verb,
            attrs.name
        );
    }
    let cases = [
        (access(Some(other), "create", "", "secrets"), true),
        (access(Some(other), "patch", "", "secrets"), true),
        (
            access(Some(&release_ns.name), "delete", "", "secrets"),
            true,
        ),
        (
            access(None, "create", "authentication.k8s.io", "tokenreviews"),
            true,
        ),
        (
            access(
                None,
                "create",
                "authorization.k8s.io",
                "subjectaccessreviews",
            ),
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
    let mut op = chart.operator("chart").secure_metrics().start();
    op.wait_ready();

    // /metrics: HTTPS, only for tokens bound to the chart's metrics-reader role (through
    // metrics.readers), checked by the operator with a TokenReview and a
    // SubjectAccessReview under the chart's RBAC. The probes stay open.
    let url = op.metrics_url().to_owned();
    assert!(url.starts_with("https://"), "{url}");
    assert_eq!(scrape(&url, None).await.0, 401, "no token");
    assert_eq!(
        scrape(&url, Some("not-a-token")).await.0,
        401,
        "a made-up token"
    );
    for sa in ["nobody", "scraper"] {
        create_service_account(&client, &release_ns.name, sa).await;
    }
    let nobody = service_account_token(&release_ns.name, "nobody");
    let scraper = service_account_token(&release_ns.name, "scraper");
    assert_eq!(
        scrape(&url, Some(&nobody)).await.0,
        403,
        "a ServiceAccount without the metrics-reader role"
    );
    let reader = format!(
        "metrics.readers[0].kind=ServiceAccount,metrics.readers[0].name=scraper,metrics.readers[0].namespace={}",
        release_ns.name
    );
    let out = helm_on_cluster(&[
        "upgrade",
        "secretguard",
        "charts/secretguard",
        "--namespace",
        &release_ns.name,
        "--reuse-values",
        "--set",
        &reader,
    ]);
    assert!(
        out.status.success(),
        "helm upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let body = wait_for("the bound scraper to read /metrics", || async {
        let (code, body) = scrape(&url, Some(&scraper)).await;
        (code == 200).then_some(body)
    })
    .await;
    assert!(body.contains("secretguard_build_info"), "{body}");
    assert_eq!(scrape(&url, Some(&nobody)).await.0, 403, "still refused");
    let as_scraper = token_client(&scraper).await;
    assert!(allowed(&as_scraper, &access_url("get", "/metrics")).await);
    assert!(
        !allowed(
            &as_scraper,
            &access(Some(&release_ns.name), "get", "", "secrets")
        )
        .await,
        "the role reads metrics and nothing else"
    );
    assert!(!allowed(&as_scraper, &access_url("get", "/logs")).await);
    assert!(op.ready(), "/readyz answers without a token");

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

/// Owners under the chart's RBAC (the operator may get only the resources listed in
/// ownerResources): with ConfigMaps listed, a Secret whose owner lives comes back with its
/// ownerReference, and one the garbage collector deleted with its owner stays deleted and
/// says why. Once ConfigMaps are no longer listed, an owned Secret is not restored
/// (nothing tells whether its owner lives) and status names what to allow.
#[tokio::test]
async fn under_the_charts_rbac_a_secret_comes_back_with_its_live_owner_and_stays_gone_with_its_deleted_one()
 {
    let _one = OPERATOR.lock().await;
    let client = admin_client().await;
    let configmaps = "ownerResources[0].apiGroup=,ownerResources[0].resources[0]=configmaps";
    let chart = ChartRelease::install(&client, "secretguard-owners", &[configmaps]).await;
    let op = chart.operator("owners").start();
    op.wait_ready();
    let ns = TestNamespace::new(&client, "sg-owners").await;
    let n = ns.name.as_str();
    let secrets: Api<Secret> = Api::namespaced(client.clone(), n);
    let (stays, stays_owner) = create_owned_secret(&client, n, "stays").await;
    create_owned_secret(&client, n, "goes").await;
    create_guard(
        &client,
        n,
        "g",
        json!({"secrets": [{"name": "stays"}, {"name": "goes"}]}),
    )
    .await;
    for name in ["stays", "goes"] {
        wait_restore_point_in(&client, &chart.namespace.name, n, name, "saved", |_| true).await;
    }

    secrets
        .delete("stays", &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_recreated_in(&client, n, "stays", &stays).await;
    let refs = back.metadata.owner_references.unwrap_or_default();
    assert_eq!(
        refs.iter().map(|r| r.uid.as_str()).collect::<Vec<_>>(),
        vec![stays_owner.as_str()],
        "restored with its ownerReference"
    );

    Api::<ConfigMap>::namespaced(client.clone(), n)
        .delete("owner-goes", &DeleteParams::default())
        .await
        .expect("delete the owner");
    let why = wait_target_state(&client, n, "g", "goes", "OwnerGone").await;
    assert!(why.contains("ConfigMap/owner-goes"), "{why}");
    assert!(
        secrets.get_opt("goes").await.expect("get").is_none(),
        "the cascade is not undone"
    );
    wait_event(&client, n, "OwnerGone", "SecretGuard").await;

    // The default: no owner may be read.
    let out = helm_on_cluster(&[
        "upgrade",
        &chart.release,
        "charts/secretguard",
        "--namespace",
        &chart.namespace.name,
        "--reuse-values",
        "--set-json",
        "ownerResources=[]",
    ]);
    assert!(
        out.status.success(),
        "helm upgrade: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let as_operator = token_client(&chart.token()).await;
    wait_for(
        "the operator's right to read ConfigMaps to be gone",
        || async {
            (!allowed(&as_operator, &access(Some(n), "get", "", "configmaps")).await).then_some(())
        },
    )
    .await;
    let restored = back.metadata.uid.unwrap_or_default();
    secrets
        .delete("stays", &DeleteParams::default())
        .await
        .expect("delete");
    let why = wait_target_state(&client, n, "g", "stays", "OwnerUnverified").await;
    assert!(
        why.contains("configmaps") && why.contains("ownerResources"),
        "{why}"
    );
    assert!(
        secrets.get_opt("stays").await.expect("get").is_none(),
        "not restored while its owner cannot be checked (was {restored})"
    );
}

/// charts/secretguard/README.md is generated from values.yaml (each value, its default and
/// the comment above it): `make chart-readme` writes it, this test fails when it is stale.
#[test]
fn the_chart_readme_is_generated_from_its_values() {
    let values = std::fs::read_to_string(repo_root().join("charts/secretguard/values.yaml"))
        .expect("values.yaml");
    let path = repo_root().join("charts/secretguard/README.md");
    let generated = chart_readme(&values);
    if std::env::var_os("SECRETGUARD_WRITE_CHART_README").is_some() {
        std::fs::write(&path, &generated).expect("write README");
    }
    let current = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        current == generated,
        "charts/secretguard/README.md is not what values.yaml says: run `make chart-readme`"
    );
}

/// The chart README: an introduction and a table of every value.
fn chart_readme(values: &str) -> String {
    let doc: serde_yaml::Value = serde_yaml::from_str(values).expect("values.yaml parses");
    let mut out = String::from(
        "<!-- Generated from values.yaml by `make chart-readme`: edit values.yaml, not this file. -->\n\
         # secretguard Helm chart\n\n\
         Guards critical Kubernetes Secrets and ServiceAccount tokens; restores them, with the same\n\
         bytes, when they go missing. What it does and why: the repository's README and\n\
         docs/architecture.md; upgrading: docs/upgrading.md.\n\n\
         ```sh\n\
         helm install secretguard charts/secretguard --namespace secretguard-system --create-namespace\n\
         ```\n\n\
         Kubernetes 1.30 or later (ValidatingAdmissionPolicy). Values that contradict each other\n\
         (several replicas without leader election, a PodDisruptionBudget that blocks every drain,\n\
         no ServiceAccount to run as) are refused at install with a message.\n\n\
         ## Values\n\n\
         | key | default | description |\n|---|---|---|\n",
    );
    for (path, comment) in documented_keys(values) {
        let mut value = &doc;
        for part in path.split('.') {
            value = &value[part];
        }
        let is_parent = matches!(value, serde_yaml::Value::Mapping(m) if !m.is_empty());
        if is_parent && comment.is_empty() {
            continue;
        }
        let default = if is_parent {
            String::new()
        } else {
            let json: serde_json::Value =
                serde_json::to_value(value).expect("a value converts to JSON");
            format!("`{}`", serde_json::to_string(&json).expect("JSON"))
        };
        out.push_str(&format!(
            "| `{path}` | {default} | {} |\n",
            comment.replace('|', "\\|")
        ));
    }
    out
}

/// Every key of values.yaml as a dotted path, with the comment lines right above it
/// joined (empty when none), in file order. Keys inside lists are not listed.
fn documented_keys(values: &str) -> Vec<(String, String)> {
    let mut keys = Vec::new();
    let mut stack: Vec<(usize, String)> = Vec::new();
    let mut comment: Vec<&str> = Vec::new();
    // The indent of a key just read with nothing after its colon: a map or a block list.
    let mut opened: Option<usize> = None;
    // Inside a block list (the value of the key at this indent): its lines are skipped.
    let mut in_list: Option<usize> = None;
    for line in values.lines() {
        let trimmed = line.trim_start();
        let indent = line.len() - trimmed.len();
        if trimmed.is_empty() {
            comment.clear();
            continue;
        }
        if let Some(parent) = opened.take()
            && trimmed.starts_with('-')
        {
            in_list = Some(parent);
        }
        if let Some(l) = in_list {
            if indent > l || (indent == l && trimmed.starts_with('-')) {
                continue;
            }
            in_list = None;
        }
        if let Some(text) = trimmed.strip_prefix('#') {
            comment.push(text.trim());
            continue;
        }
        let Some((key, rest)) = trimmed.split_once(':') else {
            comment.clear();
            continue;
        };
        if !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
            comment.clear();
            continue;
        }
        while stack.last().is_some_and(|(i, _)| *i >= indent) {
            stack.pop();
        }
        let path: Vec<&str> = stack.iter().map(|(_, k)| k.as_str()).chain([key]).collect();
        keys.push((path.join("."), comment.join(" ")));
        comment.clear();
        if rest.trim().is_empty() {
            stack.push((indent, key.to_owned()));
            opened = Some(indent);
        }
    }
    keys
}
