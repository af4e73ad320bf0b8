//! High availability: two operator processes, one Lease. Only the leader writes; killing it
//! hands over to the warm standby, and a deletion made during the handover is still
//! restored. The failover time is measured and written to
//! target/test-logs/<test>/failover.txt, next to the replicas' logs.
//!
//! Fencing (security review B7): a leader stopped with SIGTERM gives the Lease up, so the
//! standby leads well within the lease duration; a leader paused past its Lease writes
//! nothing when it resumes, and exits; a standby judges the holder's Lease by when it saw
//! it change, never by the holder's clock.
//!
//! Every operator guards the whole cluster, so the tests take turns (`SERIAL`).

mod support;

use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use secretguard::fault::points;
use serde_json::json;
use support::*;

const LEASE: Duration = Duration::from_secs(4);

/// One pair of replicas at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// A replica on the Lease `lease`, with short leader-election timings.
fn replica(name: &str, lease: &str) -> OperatorBuilder {
    OperatorProcess::builder(name).short_lease(lease, LEASE)
}

#[tokio::test]
async fn only_the_leader_writes_and_a_killed_leader_is_replaced_in_time_to_restore() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let (ns, secrets) = guarded_db(&client, "ha").await;

    let lease = format!("ha-{}", std::process::id());
    let mut replicas = vec![
        replica("replica-a", &lease).start(),
        replica("replica-b", &lease).start(),
    ];
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
    // The restore's Events follow the restore: wait for them, then see who wrote them.
    let writers: std::collections::BTreeSet<String> = wait_for("the restore's Events", || async {
        let events = Api::<Event>::namespaced(client.clone(), &ns.name)
            .list(&ListParams::default())
            .await
            .ok()?;
        events
            .items
            .iter()
            .any(|e| e.reason.as_deref() == Some("SecretRestored"))
            .then(|| {
                events
                    .items
                    .iter()
                    .filter(|e| e.reporting_controller.as_deref() == Some("secretguard"))
                    .filter_map(|e| e.reporting_instance.clone())
                    .collect()
            })
    })
    .await;
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

/// A fresh namespace with a Secret `db` (k=v) guarded by `g`; its Secrets.
async fn guarded_db(client: &Client, prefix: &str) -> (TestNamespace, Api<Secret>) {
    let ns = TestNamespace::new(client, prefix).await;
    create_secret(client, &ns.name, "db").await;
    create_guard(client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    let secrets = Api::namespaced(client.clone(), &ns.name);
    (ns, secrets)
}

/// What the restore point of `ns/db` holds under key `k`.
fn saved_value(rp: &Secret) -> Option<String> {
    let v = rp.data.as_ref()?.get("k")?;
    Some(String::from_utf8_lossy(&v.0).into_owned())
}

/// Once `op` (with the fault `stop:count-not-saved`) has saved `db`, delete it, and wait
/// until `op` has restored it and stopped itself just before saving the restore point:
/// paused with the old content in hand, as a VM pause or a long GC would leave it.
async fn restore_and_pause(client: &Client, ns: &str, secrets: &Api<Secret>, op: &OperatorProcess) {
    wait_restore_point(client, ns, "db", "the first save", |rp| {
        saved_value(rp).as_deref() == Some("v")
    })
    .await;
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for(
        "the operator to restore db and pause before saving",
        || async { op.stopped().then_some(()) },
    )
    .await;
}

/// Change `db` to k=v2 and wait until its restore point holds that; returns the point.
async fn change_db(client: &Client, ns: &str, secrets: &Api<Secret>) -> Secret {
    secrets
        .patch(
            "db",
            &PatchParams::default(),
            &Patch::Merge(json!({"stringData": {"k": "v2"}})),
        )
        .await
        .expect("change db");
    wait_restore_point(client, ns, "db", "the new content saved", |rp| {
        saved_value(rp).as_deref() == Some("v2")
    })
    .await
}

/// The holder of the Lease `name` in the operator namespace, if any.
async fn lease_holder(client: &Client, name: &str) -> Option<String> {
    Api::<Lease>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .get_opt(name)
        .await
        .ok()??
        .spec?
        .holder_identity
        .filter(|h| !h.is_empty())
}

/// Wait until exactly one of `replicas` leads and all are ready; returns the leader's index.

#[tokio::test]
async fn a_leader_stopped_with_sigterm_gives_the_lease_up_and_the_standby_leads_well_within_the_lease_duration()
 {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let (_ns, secrets) = guarded_db(&client, "ha-term").await;

    // A long Lease: without a release the standby would wait all of it.
    let lease_duration = Duration::from_secs(60);
    let lease = format!("ha-term-{}", std::process::id());
    let replica = |name: &str| {
        OperatorProcess::builder(name)
            .lease(&lease)
            .args([
                format!(
                    "--leader-election-lease-duration={}s",
                    lease_duration.as_secs()
                ),
                "--leader-election-renew-deadline=30s".into(),
                "--leader-election-retry-period=500ms".into(),
            ])
            .start()
    };
    let mut replicas = vec![replica("term-a"), replica("term-b")];
    let leader = wait_one_leader(&replicas).await;
    let standby = replicas[1 - leader].identity();
    assert_eq!(
        lease_holder(&client, &lease).await,
        Some(replicas[leader].identity())
    );

    replicas[leader].signal(libc::SIGTERM);
    // A deadline, not a speed: well under the lease duration.
    wait_for_within(
        Duration::from_secs(20),
        "the standby to hold the Lease",
        || async { (lease_holder(&client, &lease).await? == standby).then_some(()) },
    )
    .await;
    let signal = replicas[leader].wait_exit("its exit after SIGTERM");
    assert_eq!(signal, None, "it exited by itself");
    let log = replicas[leader].read_log();
    assert!(log.contains("released the Lease"), "{log}");

    // The new leader guards.
    let new_leader = &replicas[1 - leader];
    wait_for("the new leader to lead", || async {
        (new_leader.leader().await? == 1).then_some(())
    })
    .await;
    let before = secrets.get("db").await.expect("get").metadata.uid;
    secrets
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_for("the new leader to restore", || async {
        let s = secrets.get_opt("db").await.ok()??;
        (s.metadata.uid != before).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_writes_nothing_when_it_resumes_and_exits() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let (ns, secrets) = guarded_db(&client, "ha-pause").await;
    let lease = format!("ha-pause-{}", std::process::id());

    // The first leader stops itself just before it saves the restore point of a Secret it
    // has restored: paused with content in hand, as a VM pause or a long GC would leave it.
    let mut old = replica("paused", &lease)
        .fault(&format!("stop:{}", points::COUNT_NOT_SAVED))
        .start();
    wait_for("the first replica to lead", || async {
        (old.leader().await? == 1).then_some(())
    })
    .await;
    restore_and_pause(&client, &ns.name, &secrets, &old).await;

    // A standby takes over once the Lease has not changed for its duration.
    let new = replica("successor", &lease).start();
    wait_for("the successor to hold the Lease", || async {
        (lease_holder(&client, &lease).await? == new.identity()).then_some(())
    })
    .await;
    // The Secret changes; the successor saves the new content.
    let saved = change_db(&client, &ns.name, &secrets).await;

    // The old leader resumes with the old content in hand.
    old.signal(libc::SIGCONT);
    let signal = old.wait_exit("its exit after losing the Lease");
    assert_eq!(signal, None, "it exited by itself");
    let log = old.read_log();
    assert!(log.contains("lost leadership"), "{log}");
    let now = get_restore_point(&client, &ns.name, "db")
        .await
        .expect("the restore point");
    assert_eq!(
        saved_value(&now).as_deref(),
        Some("v2"),
        "the old leader put its older content back"
    );
    assert_eq!(
        now.metadata.resource_version, saved.metadata.resource_version,
        "the old leader wrote to the restore point"
    );
    assert_eq!(
        lease_holder(&client, &lease).await,
        Some(new.identity()),
        "the successor still leads"
    );
}

// Multi-threaded: the test's renewals must go on while it waits for the standby.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_standby_never_takes_a_lease_its_holder_keeps_renewing_however_far_off_the_holders_clock()
{
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let lease = format!("ha-clock-{}", std::process::id());
    let leases: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    // A holder elsewhere whose clock is an hour behind: its renewTime looks long expired.
    let renewed = |n: i64| {
        let at =
            k8s_openapi::jiff::Timestamp::now() - k8s_openapi::jiff::SignedDuration::from_hours(1);
        let at = at + k8s_openapi::jiff::SignedDuration::from_millis(n * 500);
        json!({"holderIdentity": "elsewhere", "leaseDurationSeconds": LEASE.as_secs(),
               "renewTime": k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime(at)})
    };
    let created: Lease = serde_json::from_value(json!({
        "metadata": {"name": lease, "namespace": OPERATOR_NAMESPACE},
        "spec": renewed(0),
    }))
    .expect("Lease");
    leases
        .create(&PostParams::default(), &created)
        .await
        .expect("create the Lease");
    let renewing = tokio::spawn({
        let (leases, lease) = (leases.clone(), lease.clone());
        async move {
            for n in 1.. {
                tokio::time::sleep(Duration::from_millis(500)).await;
                let patch = json!({"spec": renewed(n)});
                let _ = leases
                    .patch(&lease, &PatchParams::default(), &Patch::Merge(&patch))
                    .await;
            }
        }
    });

    let standby = replica("standby", &lease).start();
    standby.wait_ready();
    // Over several lease durations, the standby stays one.
    let watched = Instant::now();
    while watched.elapsed() < 3 * LEASE {
        assert_eq!(standby.leader().await, Some(0), "took a Lease in use");
        assert_eq!(
            lease_holder(&client, &lease).await.as_deref(),
            Some("elsewhere")
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    // The holder stops renewing: the standby takes over once a lease duration has passed.
    renewing.abort();
    wait_for("the standby to take the abandoned Lease", || async {
        (standby.leader().await? == 1).then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_paused_operator_without_a_lease_never_puts_older_content_over_a_newer_restore_point() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let (ns, secrets) = guarded_db(&client, "ha-stale").await;

    // No leader election, so no fence: only the restore point's resourceVersion stands
    // between a paused writer and the newer point (two replicas run without a Lease, or
    // one is paused through a rollout).
    let old = OperatorProcess::builder("paused-unfenced")
        .fault(&format!("stop:{}", points::COUNT_NOT_SAVED))
        .start();
    restore_and_pause(&client, &ns.name, &secrets, &old).await;
    let saved = {
        let _other = OperatorProcess::builder("meanwhile").start();
        change_db(&client, &ns.name, &secrets).await
    }; // the other one is killed here

    old.signal(libc::SIGCONT);
    wait_for(
        "the resumed operator's save to be refused or to land",
        || async {
            let rp = get_restore_point(&client, &ns.name, "db").await?;
            let refused = old
                .read_log()
                .contains("the restore point changed since it was read");
            (refused || rp.metadata.resource_version != saved.metadata.resource_version)
                .then_some(())
        },
    )
    .await;
    let rp = get_restore_point(&client, &ns.name, "db")
        .await
        .expect("the restore point");
    assert_eq!(
        rp.metadata.resource_version, saved.metadata.resource_version,
        "the paused operator wrote over the newer restore point"
    );
    assert_eq!(saved_value(&rp).as_deref(), Some("v2"));
}
