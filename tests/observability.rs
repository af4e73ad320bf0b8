//! Observability, checked with real parts: the operator binary serving /metrics,
//! /healthz and /readyz; a real Alertmanager receiving its pushes; promtool on the alert
//! rules; helm rendering the chart's PrometheusRule and dashboard; and no token bytes in
//! any log line, Event, status field or metric.

mod support;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use secretguard::labels;
use serde_json::json;
use support::*;

/// One Alertmanager and one operator (pushing to it, logging JSON) for this test binary.
fn shared() -> &'static WithAlertmanager {
    static SHARED: OnceLock<WithAlertmanager> = OnceLock::new();
    SHARED.get_or_init(|| {
        operator_with_alertmanager(
            OperatorProcess::builder("shared")
                .json_logs()
                .rust_log("debug,hyper=info,tower=info,rustls=info,kube_client=info"),
        )
    })
}

/// The value of one sample in an exposition, by metric name and label fragments.
fn sample(text: &str, name: &str, labels: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| labels.iter().all(|f| l.contains(f)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// `guarded_writer`, with this binary's operator, once the guard is healthy.
async fn healthy_guarded_writer(client: &Client, prefix: &str) -> TestNamespace {
    shared();
    let (ns, _) = guarded_writer(client, prefix, json!({})).await;
    wait_guard_status(client, &ns.name, "g", "healthy", |s| {
        condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
    ns
}

#[tokio::test]
async fn metrics_show_what_a_real_delete_and_restore_moved() {
    let client = admin_client().await;
    let s = shared();
    assert_eq!(
        get_text(&format!("{}/healthz", s.operator.health_url())).await,
        "ok"
    );
    assert_eq!(
        get_text(&format!("{}/readyz", s.operator.health_url())).await,
        "ready"
    );
    let ns = healthy_guarded_writer(&client, "metrics").await;
    let nsl = format!("namespace=\"{}\"", ns.name);
    let before = get_text(s.operator.metrics_url()).await;
    assert_eq!(
        sample(
            &before,
            "secretguard_guarded_objects",
            &[&nsl, "kind=\"ServiceAccountToken\""]
        ),
        Some(1.0)
    );
    assert_eq!(sample(&before, "secretguard_restores_total", &[&nsl]), None);

    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    wait_guard_status(&client, &ns.name, "g", "restored", |st| st.restores == 1).await;
    let after = wait_for("the restore in /metrics", || async {
        let t = get_text(s.operator.metrics_url()).await;
        sample(
            &t,
            "secretguard_restores_total",
            &[&nsl, "outcome=\"identical\""],
        )
        .is_some()
        .then_some(t)
    })
    .await;
    assert_eq!(
        sample(
            &after,
            "secretguard_restores_total",
            &[&nsl, "outcome=\"identical\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "secretguard_incidents_total",
            &[&nsl, "reason=\"TokenDeleted\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        sample(
            &after,
            "secretguard_missing_objects",
            &[&nsl, "kind=\"ServiceAccountToken\""]
        ),
        Some(0.0)
    );
    assert!(
        sample(
            &after,
            "secretguard_restore_duration_seconds_count",
            &["kind=\"ServiceAccountToken\""]
        )
        .is_some_and(|c| c >= 1.0),
        "the restore duration was observed"
    );
    assert!(
        !after.contains(&format!("secretguard_object_missing{{{nsl}")),
        "no per-object series once healthy"
    );
    assert_eq!(sample(&after, "secretguard_leader", &[]), Some(1.0));
    assert!(
        after.contains("secretguard_build_info{version="),
        "build info"
    );
    assert!(after.ends_with("# EOF\n"), "OpenMetrics exposition");
}

/// Alertmanager's view of the alerts for one namespace: (alertname, endsAt).
async fn alerts_in(am: &str, ns: &str) -> Vec<(String, String)> {
    support::alerts_in(am, ns)
        .await
        .into_iter()
        .map(|a| (a["alertname"].clone(), a["endsAt"].clone()))
        .collect()
}

#[tokio::test]
async fn incidents_reach_a_real_alertmanager_and_are_resolved_when_fixed() {
    let client = admin_client().await;
    let am = shared().alertmanager.clone();

    // A token deleted and restored in milliseconds is still alerted (for a window).
    let ns = healthy_guarded_writer(&client, "amtoken").await;
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("SecretGuardTokenDeleted in Alertmanager", || async {
        alerts_in(&am, &ns.name)
            .await
            .into_iter()
            .find(|(n, _)| n == "SecretGuardTokenDeleted")
    })
    .await;

    // So is a generic Secret (security review B9).
    let ns3 = TestNamespace::new(&client, "amsecret").await;
    create_secret(&client, &ns3.name, "db").await;
    create_guard(
        &client,
        &ns3.name,
        "g",
        json!({"secrets": [{"name": "db"}]}),
    )
    .await;
    wait_restore_point(&client, &ns3.name, "db", "the restore point", |_| true).await;
    Api::<Secret>::namespaced(client.clone(), &ns3.name)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_guard_status(&client, &ns3.name, "g", "restored", |st| st.restores == 1).await;
    wait_for("SecretGuardSecretDeleted in Alertmanager", || async {
        alerts_in(&am, &ns3.name)
            .await
            .into_iter()
            .find(|(n, _)| n == "SecretGuardSecretDeleted")
    })
    .await;

    // A Secret missing with restore Never fires until it is back, then resolves.
    let ns2 = TestNamespace::new(&client, "amstate").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns2.name);
    let s = create_secret(&client, &ns2.name, "db").await;
    create_guard(
        &client,
        &ns2.name,
        "g",
        json!({"secrets": [{"name": "db"}], "restore": "Never"}),
    )
    .await;
    wait_guard_status(&client, &ns2.name, "g", "healthy", |st| {
        st.guarded == 1 && st.missing == 0
    })
    .await;
    wait_restore_point(&client, &ns2.name, "db", "the restore point", |_| true).await;
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        "SecretGuardObjectMissing firing in Alertmanager",
        || async {
            alerts_in(&am, &ns2.name)
                .await
                .into_iter()
                .find(|(n, _)| n == "SecretGuardObjectMissing")
        },
    )
    .await;
    secrets
        .create(&PostParams::default(), &s)
        .await
        .expect("re-create by hand");
    wait_for("SecretGuardObjectMissing resolved", || async {
        (!alerts_in(&am, &ns2.name)
            .await
            .iter()
            .any(|(n, _)| n == "SecretGuardObjectMissing"))
        .then_some(())
    })
    .await;
}

#[tokio::test]
async fn no_token_or_secret_bytes_reach_logs_events_status_or_metrics() {
    let client = admin_client().await;
    let s = shared();
    let ns = TestNamespace::new(&client, "noleak").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let value = "a-distinctive-secret-value-0123456789";
    let db: Secret = serde_json::from_value(
        json!({"metadata": {"name": "db"}, "stringData": {"password": value}}),
    )
    .expect("secret");
    secrets
        .create(&PostParams::default(), &db)
        .await
        .expect("create");
    create_service_account(&client, &ns.name, "writer").await;
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"serviceAccounts": [{"name": "writer"}], "secrets": [{"name": "db"}]}),
    )
    .await;
    let token = wait_for_token(&client, &ns.name, "writer-token").await;
    wait_guard_status(&client, &ns.name, "g", "both guarded", |st| {
        st.guarded == 2 && condition(st, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
    for name in ["db", "writer-token"] {
        wait_restore_point(&client, &ns.name, name, "a restore point", |_| true).await;
    }

    // Delete and restore both, then rotate the token: every path that reports.
    secrets
        .delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_guard_status(&client, &ns.name, "g", "two restores", |st| {
        st.restores == 2
    })
    .await;
    secrets
        .patch(
            "writer-token",
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {labels::ROTATE: "true"}}})),
        )
        .await
        .expect("rotate");
    let new = wait_for_new_token(&client, &ns.name, "writer-token", &token).await;
    wait_event(&client, &ns.name, "TokenRotated", "SecretGuard").await;

    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let needles = [
        token.clone(),
        new.clone(),
        b64.encode(&token),
        b64.encode(&new),
        value.to_owned(),
        b64.encode(value),
        // A JWT's signature alone is distinctive too.
        token.rsplit('.').next().unwrap_or_default().to_owned(),
    ];
    let log = s.operator.read_log();
    let events = kubectl(&["-n", &ns.name, "get", "events", "-o", "json"]);
    let events = String::from_utf8_lossy(&events.stdout).into_owned();
    let status = kubectl(&["-n", &ns.name, "get", "sguard", "g", "-o", "json"]);
    let status = String::from_utf8_lossy(&status.stdout).into_owned();
    let metrics = get_text(s.operator.metrics_url()).await;
    assert!(
        events.contains("TokenRestored") && status.contains("restores") && log.contains(&ns.name)
    );
    for (what, text) in [
        ("log", &log),
        ("events", &events),
        ("status", &status),
        ("metrics", &metrics),
    ] {
        for (i, needle) in needles.iter().enumerate() {
            assert!(!needle.is_empty());
            assert!(
                !text.contains(needle.as_str()),
                "secret bytes (needle #{i}) found in the {what}"
            );
        }
    }
    let lines: BTreeSet<&str> = log
        .lines()
        .filter(|l| l.contains("\"span\"") && l.contains("reconcile"))
        .collect();
    assert!(!lines.is_empty(), "JSON log lines carry the reconcile span");
}

#[test]
fn alert_rules_pass_promtool_check_and_unit_tests() {
    let dir = repo_root().join("deploy/prometheus");
    for args in [
        vec!["check", "rules", "secretguard-rules.yaml"],
        vec!["test", "rules", "secretguard-rules.test.yaml"],
    ] {
        let out = Command::new(tools_bin().join("promtool"))
            .args(&args)
            .current_dir(&dir)
            .output()
            .expect("promtool");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && text.contains("SUCCESS"),
            "promtool {args:?}:\n{text}"
        );
    }
    // Every alert has a test case and a runbook.
    let rules: serde_yaml::Value = serde_yaml::from_str(
        &std::fs::read_to_string(dir.join("secretguard-rules.yaml")).expect("rules"),
    )
    .expect("YAML");
    let tests = std::fs::read_to_string(dir.join("secretguard-rules.test.yaml")).expect("tests");
    let alerts: Vec<String> = rules["groups"][0]["rules"]
        .as_sequence()
        .expect("rules")
        .iter()
        .filter_map(|r| r["alert"].as_str().map(str::to_owned))
        .collect();
    assert_eq!(alerts.len(), 14);
    for a in &alerts {
        assert!(
            tests.contains(&format!("alertname: {a}")),
            "{a} has no promtool test"
        );
        let runbook = std::fs::read_to_string(repo_root().join(format!("docs/runbooks/{a}.md")))
            .unwrap_or_else(|e| panic!("{a} has no runbook: {e}"));
        // The headings on-call people know, in their order.
        let headings: Vec<&str> = runbook.lines().filter(|l| l.starts_with("## ")).collect();
        assert_eq!(
            headings,
            ["## Meaning", "## Impact", "## Diagnosis", "## Mitigation"],
            "docs/runbooks/{a}.md"
        );
    }
}

#[test]
fn the_chart_prometheus_rule_is_the_plain_rules_file() {
    let plain =
        std::fs::read_to_string(repo_root().join("deploy/prometheus/secretguard-rules.yaml"))
            .expect("plain");
    let chart = std::fs::read_to_string(
        repo_root().join("charts/secretguard/files/secretguard-rules.yaml"),
    )
    .expect("chart copy");
    assert!(
        plain == chart,
        "charts/secretguard/files/secretguard-rules.yaml differs from deploy/prometheus/secretguard-rules.yaml: copy it"
    );
    let (_, docs) = helm_template(&["--set", "prometheusRule.enabled=true"]);
    let rule = docs
        .iter()
        .find(|d| d["kind"] == "PrometheusRule")
        .expect("a PrometheusRule");
    let want: serde_yaml::Value = serde_yaml::from_str(&plain).expect("YAML");
    assert_eq!(
        rule["spec"], want,
        "rendered PrometheusRule spec equals the plain rules"
    );
    assert!(
        helm_template(&[])
            .1
            .iter()
            .all(|d| d["kind"] != "PrometheusRule"),
        "opt-in"
    );
    // One runbook base URL, for the pushed alerts and the rules alike.
    let (text, _) = helm_template(&[
        "--set",
        "prometheusRule.enabled=true,operator.runbookBaseURL=https://wiki.example.org/runbooks/",
    ]);
    let urls: Vec<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("runbook_url: "))
        .collect();
    assert_eq!(urls.len(), 14, "{urls:?}");
    assert!(
        urls.iter().all(
            |u| u.starts_with("https://wiki.example.org/runbooks/SecretGuard")
                && u.ends_with(".md")
        ),
        "{urls:?}"
    );
    assert!(text.contains("--runbook-base-url=https://wiki.example.org/runbooks/"));
}

#[test]
fn the_dashboard_parses_and_every_query_names_an_existing_metric() {
    let (_, docs) = helm_template(&["--set", "grafanaDashboard.enabled=true"]);
    let cm = docs
        .iter()
        .find(|d| d["kind"] == "ConfigMap")
        .expect("dashboard ConfigMap");
    assert_eq!(cm["metadata"]["labels"]["grafana_dashboard"], "1");
    let json = cm["data"]["secretguard.json"]
        .as_str()
        .expect("dashboard JSON");
    let dash: serde_json::Value = serde_json::from_str(json).expect("the dashboard is valid JSON");
    let panels = dash["panels"].as_array().expect("panels");
    assert!(panels.len() >= 6);
    let mut used = BTreeSet::new();
    for p in panels {
        let targets = p["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "panel {} has a query", p["title"]);
        for t in targets {
            let expr = t["expr"].as_str().expect("expr");
            for word in expr.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if word.starts_with("secretguard_") {
                    let base = ["_bucket", "_sum", "_count"]
                        .iter()
                        .find_map(|s| word.strip_suffix(s))
                        .unwrap_or(word);
                    assert!(
                        secretguard::metrics::NAMES.contains(&base),
                        "{word} in {expr:?} is no metric"
                    );
                    used.insert(base.to_owned());
                }
            }
        }
    }
    for must in [
        "secretguard_guarded_objects",
        "secretguard_missing_objects",
        "secretguard_incidents_total",
        "secretguard_restores_total",
        "secretguard_restore_duration_seconds",
    ] {
        assert!(used.contains(must), "the dashboard shows {must}");
    }
}

/// A policy refuses the label secretguard.dev/guarded on Secrets of one namespace.
fn label_refusing_policy(ns: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata: {{name: refuse-guard-label-{ns}}}\n\
         spec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n\
         \x20   - {{apiGroups: [''], apiVersions: [v1], operations: [UPDATE], resources: [secrets]}}\n\
         \x20 validations:\n\
         \x20 - expression: \"!(has(object.metadata.labels) && 'secretguard.dev/guarded' in object.metadata.labels) || (has(oldObject.metadata.labels) && 'secretguard.dev/guarded' in oldObject.metadata.labels)\"\n\
         \x20   message: test policy refuses the guarded label\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n\
         metadata: {{name: refuse-guard-label-{ns}}}\n\
         spec:\n  policyName: refuse-guard-label-{ns}\n  validationActions: [Deny]\n\
         \x20 matchResources:\n    namespaceSelector:\n      matchLabels: {{kubernetes.io/metadata.name: {ns}}}\n"
    )
}

/// A failed write that is no restore (here a policy refuses our label on a healthy
/// Secret) is an ActionFailed Event and a retry, never SecretGuardRestoreFailing. Before,
/// that alert was pushed for any failed write and stayed firing while the Secret was
/// healthy.
#[tokio::test]
async fn a_failed_label_on_a_healthy_secret_never_fires_restore_failing() {
    let client = admin_client().await;
    let am = shared().alertmanager.clone();
    let ns = TestNamespace::new(&client, "amlabel").await;
    create_secret(&client, &ns.name, "db").await;
    let policy = label_refusing_policy(&ns.name);
    let out = kubectl_with_input(&["apply", "-f", "-"], &policy);
    assert!(
        out.status.success(),
        "apply policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let label = format!("{}=true", labels::GUARDED);
    wait_for("the policy to refuse the label", || async {
        let out = kubectl(&[
            "label",
            "secret",
            "db",
            &label,
            "-n",
            &ns.name,
            "--dry-run=server",
        ]);
        String::from_utf8_lossy(&out.stderr)
            .contains("test policy refuses the guarded label")
            .then_some(())
    })
    .await;

    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    let note = wait_event(&client, &ns.name, "ActionFailed", "SecretGuard").await;
    assert!(
        note.contains(": labelling it secretguard.dev/guarded failed"),
        "the action in words: {note}"
    );
    assert!(events(&client, &ns.name, "RestoreFailed").await.is_empty());

    // Lift the policy: the retry labels it and saves its restore point.
    let out = kubectl_with_input(&["delete", "-f", "-"], &policy);
    assert!(out.status.success(), "delete policy");
    wait_restore_point(&client, &ns.name, "db", "the restore point", |_| true).await;
    let firing = alerts_in(&am, &ns.name).await;
    assert!(
        !firing.iter().any(|(n, _)| n == "SecretGuardRestoreFailing"),
        "no restore failed, nothing may say so: {firing:?}"
    );
}
