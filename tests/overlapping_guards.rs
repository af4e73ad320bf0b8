//! Several guards covering one Secret (docs/architecture.md, Behaviour: overlapping
//! guards): the most protective settings are in force, whichever guard sorts first, and
//! every guard involved says so in its status and with an Event.

mod support;

use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, DeleteParams, PostParams};
use secretguard::api::v1alpha1::{SecretGuard, SecretGuardStatus};
use serde_json::{Value, json};
use support::*;

/// The team's guard: covers `db` (by name or selector), restores it with identical bytes
/// (the defaults).
const TEAM: &str = "team";
/// Another guard on the same Secret that sorts first by name, with weaker settings.
const WEAK: &str = "aaa";

fn overlap(s: &SecretGuardStatus) -> Option<(&str, &str)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Overlap")
        .map(|c| (c.status.as_str(), c.message.as_str()))
}

fn db_message(s: &SecretGuardStatus) -> Option<&str> {
    s.targets
        .iter()
        .find(|t| t.name == "db")
        .and_then(|t| t.message.as_deref())
}

/// A weak guard (`weak_spec`) joins the team's guard (`team_spec`) on Secret db: a deletion is undone
/// with the team's settings and both guards say they overlap; once the team's guard is
/// gone, the weak guard's own settings apply (`alone_outcome` for the next deletion) and
/// its status says no more overlap.
async fn a_weaker_guard_sorting_first_does_not_disarm_the_team(
    prefix: &str,
    team_spec: Value,
    weak_spec: Value,
    alone_outcome: &str,
) {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, prefix).await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let db: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "labels": {"tier": "critical"}},
        "stringData": {"password": "s3cr3t"},
    }))
    .expect("Secret");
    secrets
        .create(&PostParams::default(), &db)
        .await
        .expect("create db");
    create_guard(&client, &ns.name, TEAM, team_spec).await;
    wait_restore_point(&client, &ns.name, "db", "a restore point of db", |_| true).await;
    create_guard(&client, &ns.name, WEAK, weak_spec).await;

    // Its status is written once the index knows it.
    wait_guard_status(&client, &ns.name, WEAK, "aaa: a status", |s| {
        s.observed_generation.is_some()
    })
    .await;

    // The team's settings are in force: a deletion is undone.
    let before = secrets.get("db").await.expect("db");
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete db");
    let back = wait_for("db restored", || async {
        secrets
            .get_opt("db")
            .await
            .ok()?
            .filter(|s| s.metadata.uid != before.metadata.uid)
    })
    .await;
    assert!(back.data == before.data, "restored with the same data");
    wait_guard_status(&client, &ns.name, TEAM, "team: one restore", |s| {
        s.restores == 1 && s.missing == 0
    })
    .await;

    // Both guards say they overlap, and which one reports db.
    let team = wait_guard_status(&client, &ns.name, TEAM, "team: Overlap=True", |s| {
        overlap(s).is_some_and(|(status, m)| {
            status == "True" && m.contains("db (reported by this guard)")
        })
    })
    .await;
    assert!(
        db_message(&team).is_some_and(|m| m.contains("also covered by aaa; this guard reports it")),
        "{:?}",
        team.targets
    );
    let weak = wait_guard_status(&client, &ns.name, WEAK, "aaa: Overlap=True", |s| {
        overlap(s)
            .is_some_and(|(status, m)| status == "True" && m.contains("db (reported by team)"))
    })
    .await;
    assert!(
        db_message(&weak).is_some_and(|m| m.contains("team reports it")
            && m.contains("restore Identical, severity critical, not paused")),
        "aaa must not look as if its own settings applied: {:?}",
        weak.targets
    );
    assert_eq!(condition(&team, "Ready"), Some(("True", "Guarding")));
    for guard in [TEAM, WEAK] {
        let note = wait_event_on(&client, &ns.name, "Overlap", "SecretGuard", guard).await;
        assert!(note.contains(&format!("Secret {}/db", ns.name)), "{note}");
    }

    // Without the team's guard, the weak guard alone is in force, and says no more overlap.
    Api::<SecretGuard>::namespaced(client.clone(), &ns.name)
        .delete(TEAM, &DeleteParams::default())
        .await
        .expect("delete team guard");
    let weak = wait_guard_status(&client, &ns.name, WEAK, "aaa: Overlap=False", |s| {
        overlap(s).is_some_and(|(status, _)| status == "False")
    })
    .await;
    assert_eq!(db_message(&weak), None, "{:?}", weak.targets);
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete db again");
    let weak = wait_guard_status(&client, &ns.name, WEAK, "aaa reports the deletion", |s| {
        s.last_incident
            .as_ref()
            .is_some_and(|i| i.reason == "SecretDeleted" && i.outcome == alone_outcome)
    })
    .await;
    assert_eq!(weak.missing, 1, "not restored: aaa alone is in force");
}

fn naming_db() -> Value {
    json!({"secrets": [{"name": "db"}]})
}

#[tokio::test]
async fn a_paused_guard_naming_the_same_secret_does_not_disarm_the_team_guard() {
    a_weaker_guard_sorting_first_does_not_disarm_the_team(
        "overlap-paused",
        naming_db(),
        json!({"paused": true, "secrets": [{"name": "db"}]}),
        "Paused",
    )
    .await;
}

#[tokio::test]
async fn an_alert_only_guard_naming_the_same_secret_does_not_disarm_the_team_guard() {
    a_weaker_guard_sorting_first_does_not_disarm_the_team(
        "overlap-off",
        naming_db(),
        json!({"restore": "Never", "secrets": [{"name": "db"}]}),
        "AlertOnly",
    )
    .await;
}

/// A guard naming a Secret used to win over one selecting it, whatever its settings.
#[tokio::test]
async fn a_paused_guard_naming_a_secret_does_not_disarm_the_team_guard_selecting_it() {
    a_weaker_guard_sorting_first_does_not_disarm_the_team(
        "overlap-selector",
        json!({"secretSelector": {"matchLabels": {"tier": "critical"}}}),
        json!({"paused": true, "secrets": [{"name": "db"}]}),
        "Paused",
    )
    .await;
}
