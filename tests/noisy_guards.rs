//! Cheap guards cannot buy unbounded work (security review A5): guards listing thousands of
//! Secrets that do not exist keep the operator busy in the background only. A deletion
//! elsewhere is restored first, the operator's requests stay under its client-side limit,
//! and each guard raises at most MAX_ALERTS_PER_GUARD alerts, plus one that says it was
//! capped.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams};
use secretguard::alerts::MAX_ALERTS_PER_GUARD;
use serde_json::json;
use support::*;

/// The value of one sample of a metric in an exposition, by name and label fragment.
fn value(text: &str, name: &str, label: &str) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(&format!("{name}{{")) || l.starts_with(&format!("{name} ")))
        .find(|l| l.contains(label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// Alertmanager's alerts about one namespace: (alertname, guard).
async fn alerts_in(am: &str, ns: &str) -> Vec<(String, String)> {
    support::alerts_in(am, ns)
        .await
        .into_iter()
        .map(|a| {
            (
                a["alertname"].clone(),
                a.get("guard").cloned().unwrap_or_default(),
            )
        })
        .collect()
}

#[tokio::test]
async fn a_flood_of_missing_names_waits_behind_a_restore_and_its_alerts_are_capped() {
    prepare_operator();
    let client = admin_client().await;
    let alertmanager = start_alertmanager();
    // A low limit, so the flood below takes minutes of background work.
    let operator = OperatorProcess::builder("noisy")
        .alertmanager(&alertmanager)
        .args(["--api-qps", "10", "--api-burst", "10"])
        .start();
    operator.wait_ready();

    let victim = TestNamespace::new(&client, "victim").await;
    create_secret(&client, &victim.name, "db").await;
    create_guard(
        &client,
        &victim.name,
        "g",
        json!({"secrets": [{"name": "db"}]}),
    )
    .await;
    wait_restore_point(&client, &victim.name, "db", "db saved", |_| true).await;

    // 8 guards of 256 names that do not exist: 2,048 GETs at 10 a second.
    let noisy = TestNamespace::new(&client, "noisy").await;
    for g in 0..8 {
        let names: Vec<_> = (0..256)
            .map(|i| json!({"name": format!("nope-{g}-{i}")}))
            .collect();
        create_guard(
            &client,
            &noisy.name,
            &format!("g{g}"),
            json!({"secrets": names}),
        )
        .await;
    }
    wait_for("a background backlog", || async {
        let m = get_text(operator.metrics_url()).await;
        value(&m, "secretguard_queue_depth", "lane=\"background\"")
            .is_some_and(|d| d > 100.0)
            .then_some(())
    })
    .await;

    // A real deletion is served before the backlog.
    Api::<Secret>::namespaced(client.clone(), &victim.name)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete db");
    wait_for("db restored", || async {
        Api::<Secret>::namespaced(client.clone(), &victim.name)
            .get_opt("db")
            .await
            .ok()
            .flatten()
            .filter(|s| s.metadata.deletion_timestamp.is_none())
    })
    .await;
    let m = get_text(operator.metrics_url()).await;
    assert!(
        value(&m, "secretguard_queue_depth", "lane=\"background\"").is_some_and(|d| d > 0.0),
        "restored while the flood still waited:\n{m}"
    );
    assert!(
        value(&m, "secretguard_api_throttled_seconds_total", "").is_some_and(|s| s > 0.0),
        "the client-side limit held the flood back"
    );

    // The first guard's alerts are capped: at most the cap per object, and one alert
    // saying so.
    let alerts = wait_for("g0's alerts capped", || async {
        let alerts = alerts_in(&alertmanager, &noisy.name).await;
        alerts
            .iter()
            .any(|(name, guard)| name == "SecretGuardAlertsCapped" && guard == "g0")
            .then_some(alerts)
    })
    .await;
    let per_object = alerts
        .iter()
        .filter(|(name, guard)| guard == "g0" && name != "SecretGuardAlertsCapped")
        .count();
    assert_eq!(per_object, MAX_ALERTS_PER_GUARD, "{alerts:?}");
}
