//! Nothing is lost under faults: the operator binary, built with fault-injection points,
//! killed with SIGKILL at every step of a restore (the wait of its restore delay
//! included); deletions while it is down; the apiserver restarted under it; a namespace
//! or a guard deleted with guarded Secrets in it; a restart while a guard's spec is
//! invalid; and chaos (`faults/chaos.rs`): bursts of deletions through an etcd restart, a
//! 30 s apiserver outage and a paused leader.
//!
//! The operator runs as a subprocess here (one at a time: the tests take a lock), so it
//! can really be killed. Its logs are in target/test-logs/<test>/operator-<name>.log.

mod support;

#[path = "faults/chaos.rs"]
mod chaos;

use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use secretguard::api::v1alpha1::SecretGuard;
use secretguard::fault::points;
use secretguard::restore_point;
use serde_json::json;
use support::*;

/// One operator process at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// An operator process as these tests run it: with two workers.
fn operator_process(name: &str) -> OperatorBuilder {
    OperatorProcess::builder(name).workers(2)
}

async fn setup(client: &Client, prefix: &str) -> (TestNamespace, Api<Secret>) {
    prepare_operator();
    let ns = TestNamespace::new(client, prefix).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let s = Secret {
        metadata: ObjectMeta {
            name: Some("db".into()),
            ..Default::default()
        },
        string_data: Some([("password".to_owned(), "s3cr3t".to_owned())].into()),
        ..Default::default()
    };
    api.create(&PostParams::default(), &s)
        .await
        .expect("create Secret");
    create_guard(client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    (ns, api)
}

/// Wait until `db` exists, its restore point saves this very object, and the restore
/// count is `restores` on the restore point and in status.
async fn wait_settled(client: &Client, ns: &str, api: &Api<Secret>, restores: u64) {
    wait_for(&format!("db saved with {restores} restores"), || async {
        let live = api.get_opt("db").await.ok()??;
        let rp = restore_point::parse(&get_restore_point(client, ns, "db").await?).ok()?;
        (live.metadata.uid.as_deref() == Some(rp.origin_uid.as_str()) && rp.restores == restores)
            .then_some(())
    })
    .await;
    wait_guard_status(client, ns, "g", "the restore count in status", |s| {
        s.restores == restores as i64 && s.missing == 0
    })
    .await;
}

#[tokio::test]
async fn a_restore_survives_a_sigkill_at_every_step_and_is_counted_once() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "crash").await;
    let mut op = operator_process("steady-0").start();
    wait_settled(&client, &ns.name, &api, 0).await;

    let steps = [
        // Killed while the restore waits for its restore delay: the next process finds the
        // Secret missing in its first pass, waits the delay again and restores it.
        points::RESTORE_PENDING,
        points::DELETION_SEEN,
        points::RESTORE_POINT_READ,
        points::CREATE_SENT,
        points::COUNT_NOT_SAVED,
        points::STATUS_NOT_WRITTEN,
    ];
    for (n, step) in steps.iter().enumerate() {
        drop(op); // SIGKILL
        let mut faulty = operator_process(&format!("fault-{step}"))
            .fault(step)
            .start();
        api.delete("db", &DeleteParams::default())
            .await
            .expect("delete");
        assert_eq!(
            faulty.wait_exit(step),
            Some(libc_sigkill()),
            "the operator must die at {step}, by SIGKILL"
        );
        op = operator_process(&format!("steady-{}", n + 1)).start();
        wait_settled(&client, &ns.name, &api, n as u64 + 1).await;
    }
    drop(op);
}

/// A Secret whose label is set again (its guard re-applied, or the label taken off) and
/// that is deleted just before the patch: the operator must see it missing and restore it,
/// not write a stub of its label alone (an apply would: it creates what is missing, and the
/// stub, taken for a re-creation by someone, would replace the saved content).
#[tokio::test]
async fn a_secret_deleted_just_before_its_label_is_set_is_restored_and_never_replaced_by_a_stub() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "label-race").await;
    let op = operator_process("label-race-before").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    drop(op); // SIGKILL
    let unlabel = json!({"metadata": {"labels": {secretguard::labels::GUARDED: null}}});
    api.patch_metadata("db", &PatchParams::default(), &Patch::Merge(&unlabel))
        .await
        .expect("take the label off");
    let op = operator_process("label-race")
        .fault(&format!("stop:{}", points::LABEL_NOT_SENT))
        .start();
    wait_for("the operator stopped just before labelling db", || async {
        op.stopped().then_some(())
    })
    .await;
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    op.signal(libc::SIGCONT);
    wait_settled(&client, &ns.name, &api, 1).await;
    let db = api.get("db").await.expect("get db");
    // Compared, never printed: test output carries no Secret data.
    assert!(
        db.data
            .unwrap_or_default()
            .get("password")
            .map(|v| v.0.as_slice())
            == Some(b"s3cr3t".as_slice()),
        "db must be restored with its saved content"
    );
}

fn libc_sigkill() -> i32 {
    9
}

#[tokio::test]
async fn a_deletion_while_the_operator_is_down_is_restored_when_it_starts() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "down").await;
    let op = operator_process("down-before").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    drop(op);
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(api.get_opt("db").await.expect("get").is_none());
    let _op = operator_process("down-after").start();
    wait_settled(&client, &ns.name, &api, 1).await;
}

#[tokio::test]
async fn watches_resume_after_an_apiserver_restart() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "apirestart").await;
    let _op = operator_process("apiserver-restart").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    restart_apiserver();
    // A deletion right after the restart, while the operator's watches reconnect.
    let client = admin_client().await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_settled(&client, &ns.name, &api, 1).await;
}

#[tokio::test]
async fn a_deleted_namespace_completes_and_its_restore_points_expire_after_the_retention() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "nsretention").await;
    let op = operator_process("retention")
        .args(["--restore-point-retention", "4s"])
        .start();
    wait_settled(&client, &ns.name, &api, 0).await;
    ns.delete_and_wait(&client).await;
    let stamped = wait_for("the restore point to be kept, stamped orphaned", || async {
        restore_point::orphaned_since(&get_restore_point(&client, &ns.name, "db").await?)
    })
    .await;
    wait_restore_point_gone(
        &client,
        &ns.name,
        "db",
        "the restore point to be dropped after the retention",
    )
    .await;
    let kept = k8s_openapi::jiff::Timestamp::now().duration_since(stamped);
    assert!(
        kept.as_secs() >= 4,
        "kept for the retention at least, was {kept:?}"
    );
    let log = op.read_log();
    assert!(
        !log.lines()
            .any(|l| l.contains("reconcile failed") && l.contains(&ns.name)),
        "no error loop over the deleted namespace"
    );
}

/// Patch the guard `g` (merge patch of its spec).
async fn patch_guard_spec(client: &Client, ns: &str, spec: serde_json::Value) {
    Api::<SecretGuard>::namespaced(client.clone(), ns)
        .patch(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": spec})),
        )
        .await
        .expect("patch the guard");
}

/// Make the guard invalid (a token Secret name also listed in secrets) and wait until the
/// operator says so.
async fn make_invalid(client: &Client, ns: &str) {
    patch_guard_spec(
        client,
        ns,
        json!({"serviceAccounts": [{"name": "a", "tokenSecretName": "db"}]}),
    )
    .await;
    wait_guard_status(client, ns, "g", "InvalidSpec", |s| {
        condition(s, "Ready")
            .is_some_and(|(status, reason)| status == "False" && reason == "InvalidSpec")
    })
    .await;
}

#[tokio::test]
async fn an_invalid_spec_then_a_restart_keeps_the_last_valid_spec_in_force() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "invalid-restart").await;
    let op = operator_process("invalid-before").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    make_invalid(&client, &ns.name).await;
    drop(op);
    let after = operator_process("invalid-after").start();
    after.wait_ready();
    // The restarted operator never saw the valid spec: it guards with the one in force.
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_settled(&client, &ns.name, &api, 1).await;
    let g = Api::<SecretGuard>::namespaced(client.clone(), &ns.name)
        .get("g")
        .await
        .expect("guard");
    assert_eq!(
        g.status.as_ref().and_then(|s| condition(s, "Ready")),
        Some(("False", "InvalidSpec")),
        "still says the current spec is invalid"
    );
}

#[tokio::test]
async fn a_restart_never_unguards_what_an_invalid_guard_names() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "invalid-nospec").await;
    let op = operator_process("nospec-before").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    make_invalid(&client, &ns.name).await;
    drop(op);
    // As a guard written before the spec in force was recorded.
    Api::<SecretGuard>::namespaced(client.clone(), &ns.name)
        .patch_status(
            "g",
            &PatchParams::default(),
            &Patch::Merge(json!({"status": {"specInForce": null}})),
        )
        .await
        .expect("clear specInForce");
    let after = operator_process("nospec-after").start();
    // Ready: its first pass over every restore point and labelled Secret is done.
    after.wait_ready();
    let rp = get_restore_point(&client, &ns.name, "db").await;
    assert!(
        rp.as_ref()
            .is_some_and(|rp| restore_point::orphaned_since(rp).is_none()),
        "the restore point of a Secret an existing guard names is kept, not orphaned"
    );
    let db = api.get("db").await.expect("db");
    assert_eq!(
        db.metadata
            .labels
            .as_ref()
            .and_then(|l| l.get(secretguard::labels::GUARDED))
            .map(String::as_str),
        Some("true"),
        "and so is its label"
    );
}

#[tokio::test]
async fn a_deleted_guard_leaves_its_restore_points_for_the_retention() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "guard-deleted").await;
    let _op = operator_process("guard-deleted").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    let guards: Api<SecretGuard> = Api::namespaced(client.clone(), &ns.name);
    guards
        .delete("g", &DeleteParams::default())
        .await
        .expect("delete the guard");
    wait_for("the restore point kept, stamped orphaned", || async {
        restore_point::orphaned_since(&get_restore_point(&client, &ns.name, "db").await?)
    })
    .await;
    // The guard comes back (say, re-applied after an accidental deletion): so does
    // protection, with the same restore point.
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    wait_for("the stamp removed", || async {
        let rp = get_restore_point(&client, &ns.name, "db").await?;
        restore_point::orphaned_since(&rp).is_none().then_some(())
    })
    .await;
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_settled(&client, &ns.name, &api, 1).await;
    // Removing the Secret from a guard that stays drops its restore point at once.
    patch_guard_spec(&client, &ns.name, json!({"secrets": [{"name": "other"}]})).await;
    wait_restore_point_gone(&client, &ns.name, "db", "the restore point dropped").await;
}

#[tokio::test]
async fn a_guard_deleted_while_the_watch_was_down_stops_guarding() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "watchgap").await;
    let op = operator_process("watch-gap").start();
    wait_settled(&client, &ns.name, &api, 0).await;
    // The operator hears nothing while stopped. The apiserver restart closes its watches
    // before the guard is deleted (so no event of it waits in a socket buffer), and the
    // compaction makes them resume from a resource version that is gone: a re-list.
    let pid = op.pid() as i32;
    // SAFETY: a plain kill(2) of the operator process this test started.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
    restart_apiserver();
    let client = admin_client().await;
    Api::<SecretGuard>::namespaced(client.clone(), &ns.name)
        .delete("g", &DeleteParams::default())
        .await
        .expect("delete the guard");
    create_secret(&client, &ns.name, "unrelated").await;
    compact_etcd().await;
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    // No longer guarded: our label comes off, and its restore point is kept only for the
    // retention.
    wait_for("the guarded label removed", || async {
        let db = api.get_opt("db").await.ok()??;
        (!db.metadata
            .labels
            .unwrap_or_default()
            .contains_key(secretguard::labels::GUARDED))
        .then_some(())
    })
    .await;
    wait_for("the restore point stamped orphaned", || async {
        restore_point::orphaned_since(&get_restore_point(&client, &ns.name, "db").await?)
    })
    .await;
    drop(op);
}

#[tokio::test]
async fn a_panic_in_one_reconcile_is_caught_counted_and_retried_and_the_operator_stays_up() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "panic").await;
    // A bug in the restore path, the first time it runs.
    let op = operator_process("panics-once")
        .fault(&format!("panic:{}", points::DELETION_SEEN))
        .start();
    wait_settled(&client, &ns.name, &api, 0).await;
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    // Caught, retried with backoff: restored by the retry.
    wait_settled(&client, &ns.name, &api, 1).await;
    assert!(
        http_ok(&format!("{}/healthz", op.health_url())),
        "the operator is still up"
    );
    let panics = op
        .metric(r#"secretguard_reconcile_errors_total{reason="Panic"}"#)
        .await;
    assert_eq!(panics, Some(1.0), "counted once");
    let log = op.read_log();
    assert!(log.contains("reconcile panicked"), "{log}");
}
