//! What the operator shows, and to whom: a failed write is reported with its status code
//! and reason, never with the apiserver's words (which can echo an object); the metrics of
//! a deleted guard go with it. Secure /metrics is in tests/chart.rs, under the chart's
//! identity and roles.

mod support;

use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use serde_json::json;
use support::*;

/// One Alertmanager and one operator (pushing to it) for this test binary.
fn shared() -> &'static WithAlertmanager {
    static SHARED: OnceLock<WithAlertmanager> = OnceLock::new();
    SHARED.get_or_init(|| operator_with_alertmanager(OperatorProcess::builder("exposure")))
}

/// Every alert Alertmanager holds for one namespace, as JSON.
async fn alerts_in(am: &str, ns: &str) -> Vec<serde_json::Value> {
    let url = format!("{am}/api/v2/alerts?filter=namespace%3D%22{ns}%22");
    ::reqwest::get(&url)
        .await
        .expect("GET alerts")
        .json::<Vec<serde_json::Value>>()
        .await
        .expect("JSON")
}

/// A namespace with a Secret `db` guarded by guard `g`, its restore point written.
async fn guarded_db(client: &kube::Client, prefix: &str) -> TestNamespace {
    let ns = TestNamespace::new(client, prefix).await;
    create_secret(client, &ns.name, "db").await;
    create_guard(client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    wait_restore_point(client, &ns.name, "db", "the restore point", |_| true).await;
    ns
}

/// A ValidatingAdmissionPolicy, bound to namespace `ns`, that refuses every Secret
/// create with a message carrying `marker` (as a policy echoing an object field would).
fn create_refusing_policy(ns: &str, marker: &str) -> String {
    format!(
        "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\n\
         metadata: {{name: x-{ns}}}\n\
         spec:\n  failurePolicy: Fail\n  matchConstraints:\n    resourceRules:\n\
         \x20   - {{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [secrets]}}\n\
         \x20 validations:\n\
         \x20 - expression: 'false'\n\
         \x20   messageExpression: \"'{marker} ' + object.metadata.name\"\n---\n\
         apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\n\
         metadata: {{name: x-{ns}}}\n\
         spec:\n  policyName: x-{ns}\n  validationActions: [Deny]\n\
         \x20 matchResources:\n    namespaceSelector:\n      matchLabels: {{kubernetes.io/metadata.name: {ns}}}\n"
    )
}

/// A policy refuses the restore with a message of its own: the RestoreFailed Event and the
/// SecretGuardRestoreFailing alert say "<code> <reason> (admission denied)" and never
/// the message; the operator log has it.
#[tokio::test]
async fn a_refused_restore_is_reported_by_status_code_never_by_the_servers_words() {
    let client = admin_client().await;
    let s = shared();
    let ns = guarded_db(&client, "leak").await;
    let marker = format!("SGMARKER{}", std::process::id());
    let policy = create_refusing_policy(&ns.name, &marker);
    let out = kubectl_with_input(&["apply", "-f", "-"], &policy);
    assert!(
        out.status.success(),
        "apply policy: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    wait_for("the policy to refuse Secret creates", || async {
        let out = kubectl(&[
            "-n",
            &ns.name,
            "create",
            "secret",
            "generic",
            "probe",
            "--dry-run=server",
        ]);
        String::from_utf8_lossy(&out.stderr)
            .contains(&marker)
            .then_some(())
    })
    .await;

    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let note = wait_event(&client, &ns.name, "RestoreFailed", "SecretGuard").await;
    assert!(
        !note.contains(&marker),
        "the server's message leaked: {note}"
    );
    assert!(
        note.contains(" failed (severity critical): 4") && note.contains("(admission denied)"),
        "the status code and reason: {note}"
    );
    assert!(
        note.contains("/db: restoring the Secret from its restore point failed"),
        "the action in words, not the code's name for it: {note}"
    );
    let alert = wait_for("SecretGuardRestoreFailing in Alertmanager", || async {
        alerts_in(&s.alertmanager, &ns.name)
            .await
            .into_iter()
            .find(|a| a["labels"]["alertname"] == "SecretGuardRestoreFailing")
    })
    .await;
    let description = alert["annotations"]["description"]
        .as_str()
        .unwrap_or_default();
    assert!(
        description.contains("(admission denied)"),
        "the alert says why: {alert}"
    );
    let mut everything = events(&client, &ns.name, "RestoreFailed")
        .await
        .into_iter()
        .map(|(_, note)| note)
        .collect::<Vec<_>>();
    everything.extend(
        alerts_in(&s.alertmanager, &ns.name)
            .await
            .iter()
            .map(|a| a.to_string()),
    );
    for text in &everything {
        assert!(
            !text.contains(&marker),
            "the server's message leaked: {text}"
        );
    }
    let log = s.operator.read_log();
    assert!(
        log.lines()
            .any(|l| l.contains(&marker) && l.contains("WARN")),
        "the operator log keeps the server's message at warn"
    );

    // The policy lifted, the Secret comes back.
    let out = kubectl_with_input(&["delete", "-f", "-"], &policy);
    assert!(out.status.success(), "delete policy");
    wait_guard_status(&client, &ns.name, "g", "restored", |st| {
        st.restores == 1 && st.missing == 0
    })
    .await;
}

/// Whether an exposition has a sample whose line holds every one of `labels`.
fn has_series(text: &str, labels: &[&str]) -> bool {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .any(|l| labels.iter().all(|f| l.contains(f)))
}

/// The counters of a guard (incidents, restores, audit drift) and its gauges go with it:
/// guard churn does not grow /metrics.
#[tokio::test]
async fn a_deleted_guard_leaves_no_series_in_metrics() {
    let client = admin_client().await;
    let s = shared();
    let ns = guarded_db(&client, "churn").await;
    Api::<Secret>::namespaced(client.clone(), &ns.name)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    let nsl = format!("namespace=\"{}\"", ns.name);
    wait_for("the restore counted in /metrics", || async {
        let text = get_text(s.operator.metrics_url()).await;
        (has_series(&text, &["secretguard_restores_total{", &nsl])
            && has_series(&text, &["secretguard_incidents_total{", &nsl]))
        .then_some(())
    })
    .await;

    let out = kubectl(&["-n", &ns.name, "delete", "secretguard", "g"]);
    assert!(out.status.success(), "delete guard");
    wait_for("no series of the deleted guard", || async {
        let text = get_text(s.operator.metrics_url()).await;
        (!has_series(&text, &[&nsl])).then_some(())
    })
    .await;
}
