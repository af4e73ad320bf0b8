//! High availability: two operator processes, one Lease. Only the leader writes; killing it
//! hands over to the warm standby, and a deletion made during the handover is still
//! restored. The failover time is measured and written to
//! target/test-logs/<test>/failover.txt, next to the replicas' logs.

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use serde_json::json;
use support::*;

const LEASE: Duration = Duration::from_secs(4);

/// One of the two replicas, on the Lease `lease`, with short leader-election timings.
fn replica(name: &str, lease: &str) -> OperatorProcess {
    OperatorProcess::builder(name)
        .lease(lease)
        .args([
            format!("--leader-election-lease-duration={}s", LEASE.as_secs()),
            "--leader-election-renew-deadline=3s".into(),
            "--leader-election-retry-period=500ms".into(),
        ])
        .start()
}

#[tokio::test]
async fn only_the_leader_writes_and_a_killed_leader_is_replaced_in_time_to_restore() {
    let client = admin_client().await;
    prepare_operator();
    let ns = TestNamespace::new(&client, "ha").await;
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    create_secret(&client, &ns.name, "db").await;
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;

    let lease = format!("ha-{}", std::process::id());
    let mut replicas = vec![replica("replica-a", &lease), replica("replica-b", &lease)];
    let leader_idx = wait_for("exactly one leader and one warm standby", || async {
        let (a, b) = (replicas[0].leader().await?, replicas[1].leader().await?);
        let ready = replicas[0].ready() && replicas[1].ready();
        match (a, b, ready) {
            (1, 0, true) => Some(0),
            (0, 1, true) => Some(1),
            _ => None,
        }
    })
    .await;
    let leader_name = replicas[leader_idx].name().to_owned();
    let standby_name = replicas[1 - leader_idx].name().to_owned();
    wait_guard_status(&client, &ns.name, "g", "guarded", |s| {
        s.guarded == 1 && s.missing == 0
    })
    .await;
    wait_restore_point(&client, &ns.name, "db", "the restore point", |_| true).await;

    let restored = |uid: Option<String>| {
        let secrets = secrets.clone();
        async move {
            secrets
                .get_opt("db")
                .await
                .ok()?
                .filter(|s| s.metadata.uid != uid)
                .map(|_| ())
        }
    };
    let before = secrets.get("db").await.expect("get").metadata.uid;
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the leader to restore", || restored(before.clone())).await;
    let events = Api::<Event>::namespaced(client.clone(), &ns.name)
        .list(&ListParams::default())
        .await
        .expect("events");
    let writers: std::collections::BTreeSet<String> = events
        .items
        .iter()
        .filter(|e| e.reporting_controller.as_deref() == Some("secretguard"))
        .filter_map(|e| e.reporting_instance.clone())
        .collect();
    assert_eq!(
        writers,
        [leader_name.clone()].into(),
        "only the leader ({leader_name}) reports, not the standby ({standby_name})"
    );

    // Kill the leader and delete during the handover.
    let killed = Instant::now();
    replicas.remove(leader_idx); // SIGKILL
    let standby = &replicas[0];
    let before = secrets.get("db").await.expect("get").metadata.uid;
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete during handover");
    wait_for("the standby to take over", || async {
        (standby.leader().await? == 1).then_some(())
    })
    .await;
    let failover = killed.elapsed();
    wait_for(
        "the new leader to restore the deletion made during the handover",
        || restored(before.clone()),
    )
    .await;
    let restore_done = killed.elapsed();
    wait_guard_status(&client, &ns.name, "g", "two restores", |s| {
        s.restores == 2 && s.missing == 0
    })
    .await;
    let report = format!(
        "lease duration {:?}, retry period 500ms: standby leading {:.2} s after SIGKILL of the leader; deletion made during the handover restored {:.2} s after the kill\n",
        LEASE,
        failover.as_secs_f64(),
        restore_done.as_secs_f64()
    );
    std::fs::write(test_dir().join("failover.txt"), &report).expect("report");
    eprintln!("{report}");
}
