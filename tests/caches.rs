//! What the operator keeps in memory, on the real control plane (docs/security.md, A4):
//! no cache holds Secret data, so a tenant who labels big Secrets in a namespace without a
//! guard adds next to nothing to it; and a restore point is written from the watch event
//! itself, so an update followed at once by a deletion restores the latest content.
//!
//! Lists are streamed where the apiserver can (one object at a time), paged elsewhere.
//!
//! The tests of this binary run one at a time: each runs an operator of its own, and
//! operators act cluster-wide.

mod support;

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use secretguard::cache::Retained;
use secretguard::controller::{Config, Controller};
use secretguard::object_key::ObjectKey;
use serde_json::json;
use support::*;

static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn secret(name: &str, labels: &[(&str, &str)], data: &[(&str, Vec<u8>)]) -> Secret {
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some(
            data.iter()
                .map(|(k, v)| ((*k).into(), ByteString(v.clone())))
                .collect(),
        ),
        ..Default::default()
    }
}

fn value_of(s: &Secret) -> Option<&[u8]> {
    Some(s.data.as_ref()?.get("v")?.0.as_slice())
}

/// Send a signal to a process (SIGSTOP, SIGCONT).
fn signal(pid: u32, sig: &str) {
    let status = std::process::Command::new("kill")
        .args([&format!("-{sig}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{sig} {pid}");
}

#[tokio::test]
async fn an_update_followed_at_once_by_a_deletion_restores_the_latest_content() {
    let _serial = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let op = OperatorProcess::builder("update-then-delete").start();
    op.wait_ready();
    let ns = TestNamespace::new(&client, "update-delete").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let names: Vec<String> = (0..10).map(|i| format!("db-{i}")).collect();
    for name in &names {
        api.create(
            &PostParams::default(),
            &secret(name, &[], &[("v", b"old".to_vec())]),
        )
        .await
        .expect("create");
    }
    let list: Vec<_> = names.iter().map(|n| json!({"name": n})).collect();
    create_guard(&client, &ns.name, "g", json!({"secrets": list})).await;
    for name in &names {
        wait_restore_point(&client, &ns.name, name, "the first restore point", |rp| {
            value_of(rp) == Some(b"old")
        })
        .await;
    }

    // The operator sees both events of each Secret only once it runs again, so no
    // reconcile can read the update from a cache between them.
    signal(op.pid(), "STOP");
    for name in &names {
        let update = json!({"data": {"v": ByteString(b"new".to_vec())}});
        let done = api
            .patch(name, &PatchParams::default(), &Patch::Merge(&update))
            .await
            .map(|_| ());
        let gone = api.delete(name, &DeleteParams::default()).await.map(|_| ());
        if done.is_err() || gone.is_err() {
            signal(op.pid(), "CONT");
            panic!("update then delete {name}: {done:?} {gone:?}");
        }
    }
    signal(op.pid(), "CONT");

    for name in &names {
        let restored = wait_for(&format!("{name} restored"), || async {
            api.get_opt(name).await.ok().flatten()
        })
        .await;
        assert_eq!(
            value_of(&restored),
            Some(&b"new"[..]),
            "{name}: the content of the update, carried by the deletion's event, comes back"
        );
    }
    for name in &names {
        wait_restore_point(&client, &ns.name, name, "the restore point", |rp| {
            value_of(rp) == Some(b"new")
        })
        .await;
    }
}

/// Hold `name` in the operator namespace for someone else, for an hour.
async fn lease_held_elsewhere(client: &Client, name: &str) {
    let api: Api<Lease> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let _ = api.delete(name, &DeleteParams::default()).await;
    let now = MicroTime(k8s_openapi::jiff::Timestamp::now());
    api.create(
        &PostParams::default(),
        &Lease {
            metadata: ObjectMeta {
                name: Some(name.into()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some("someone-else".into()),
                lease_duration_seconds: Some(3600),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                ..Default::default()
            }),
        },
    )
    .await
    .expect("create the Lease");
}

/// The operator's cache of Secrets, gauged as /metrics serves it.
fn cached_secret_bytes(metrics: &str) -> i64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("secretguard_cached_bytes{cache=\"secrets\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn labelled_secrets_no_guard_targets_are_cached_without_their_content() {
    let _serial = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    // A warm standby: it caches what every replica caches, and, unlike the leader, never
    // takes the stray label off, so what it keeps stays to be seen.
    let lease = "caches-standby";
    lease_held_elsewhere(&client, lease).await;
    let mut config: Config = operator_config();
    config.leader = Some(secretguard::config::LeaderConfig {
        namespace: OPERATOR_NAMESPACE.into(),
        lease_name: lease.into(),
        identity: "caches-test".into(),
        lease_duration: Duration::from_secs(15),
        renew_deadline: Duration::from_secs(10),
        retry_period: Duration::from_secs(2),
    });
    let controller = Controller::new(client.clone(), config);
    let ctx = controller.context();
    tokio::spawn(controller.run(std::future::pending()));
    wait_for("the standby's caches to sync", || async {
        (*ctx.synced.borrow()).then_some(())
    })
    .await;
    assert!(!*ctx.leading.borrow(), "a standby");
    let before = cached_secret_bytes(&ctx.metrics.encode());

    // A tenant's namespace, no guard in it: Secrets of 900 KiB, and Secrets with 200 KiB
    // of annotations, labelled secretguard.dev/guarded.
    let ns = TestNamespace::new(&client, "noise").await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let label = [("secretguard.dev/guarded", "true")];
    let mut names = Vec::new();
    for i in 0..4 {
        let name = format!("data-{i}");
        api.create(
            &PostParams::default(),
            &secret(&name, &label, &[("blob", vec![i as u8; 900 * 1024])]),
        )
        .await
        .expect("create a big Secret");
        names.push(name);
        let name = format!("annotations-{i}");
        let mut s = secret(&name, &label, &[("v", b"x".to_vec())]);
        s.metadata.annotations =
            Some(BTreeMap::from_iter((0..4).map(|k| {
                (format!("noise.example/{k}"), "a".repeat(50 * 1024))
            })));
        api.create(&PostParams::default(), &s)
            .await
            .expect("create a Secret with big annotations");
        names.push(name);
    }

    for name in &names {
        let key = ObjectKey::new(&ns.name, name);
        let cached = wait_for(&format!("{name} in the standby's cache"), || async {
            ctx.stores.secret(&key)
        })
        .await;
        assert_eq!(cached.detail, None, "{name}: its name and UID only");
        assert!(
            cached.retained_bytes() < 1024,
            "{name}: the cache holds {} bytes of it",
            cached.retained_bytes()
        );
        assert!(ctx.take_content(&key).is_none(), "{name}: no content kept");
    }
    let added = cached_secret_bytes(&ctx.metrics.encode()) - before;
    assert!(
        added < 8 * 1024,
        "secretguard_cached_bytes grew by {added} bytes for {} Secrets of 200-900 KiB",
        names.len()
    );
}

#[tokio::test]
async fn initial_lists_are_streamed_where_the_apiserver_can() {
    let _serial = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let op = OperatorProcess::builder("lists").start();
    op.wait_ready();
    let version = client.apiserver_version().await.expect("version");
    let minor: u32 = version
        .minor
        .trim_end_matches('+')
        .parse()
        .expect("a minor version");
    // WatchList, which streams lists, is on by default from Kubernetes 1.34 (off in 1.33).
    let want = format!("streaming={}", minor >= 34);
    let log = op.read_log();
    assert!(
        log.lines()
            .any(|l| l.contains("initial lists") && l.contains(&want)),
        "{want} on {}: {log}",
        version.git_version
    );
}
