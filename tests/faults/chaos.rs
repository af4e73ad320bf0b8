//! Chaos (reliability issue): a burst of deletions with the control plane failing in the
//! middle of it (etcd restarted; the apiserver away for 30 s), and a leader paused past its
//! Lease while a standby takes over. Each ends the same way: every guarded Secret is back
//! with its latest content, each restore is counted once, and the Secrets retired on
//! purpose stay gone.
//!
//! Part of the `faults` test binary: these tests take its lock, since they stop parts of
//! the control plane that every other test of the binary needs.

use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::Client;
use kube::api::{
    Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions,
};
use secretguard::{labels, restore_point};
use serde_json::json;

use super::{SERIAL, support::*};

/// Guarded Secrets deleted in each burst.
const BURST: usize = 200;
/// Every RETIRE_EVERY-th Secret is retired (`secretguard.dev/retire`) before the burst.
const RETIRE_EVERY: usize = 20;
/// Deletions that retry through an outage, and restores after one, get this long.
const OUTAGE_DEADLINE: Duration = Duration::from_secs(180);
/// How long the apiserver stays away.
const OUTAGE: Duration = Duration::from_secs(30);
/// Deletions in flight at once.
const CONCURRENT: usize = 8;

/// A namespace of `count` guarded Secrets `s-000`... (one selector guard `g`), each saved
/// with its second version, every RETIRE_EVERY-th retired on purpose; an operator must run.
struct Burst {
    ns: TestNamespace,
    api: Api<Secret>,
    /// Name and UID of every Secret, before any deletion.
    originals: Vec<(String, String)>,
}

fn name(i: usize) -> String {
    format!("s-{i:03}")
}

fn retired(name: &str) -> bool {
    name.strip_prefix("s-")
        .and_then(|n| n.parse::<usize>().ok())
        .is_some_and(|i| i % RETIRE_EVERY == 0)
}

fn value_of(secret: &Secret) -> Option<&[u8]> {
    Some(secret.data.as_ref()?.get("v")?.0.as_slice())
}

impl Burst {
    /// Create the Secrets and their guard; `operator` must be running by the time the
    /// returned future's waits begin (it is started by the caller before this).
    async fn prepare(client: &Client, prefix: &str, count: usize) -> Burst {
        let ns = TestNamespace::new(client, prefix).await;
        let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
        create_guard(
            client,
            &ns.name,
            "g",
            json!({"secretSelector": {"matchLabels": {"chaos": "burst"}}}),
        )
        .await;
        futures::stream::iter(0..count)
            .for_each_concurrent(CONCURRENT, |i| {
                let api = api.clone();
                async move {
                    let s = Secret {
                        metadata: ObjectMeta {
                            name: Some(name(i)),
                            labels: Some([("chaos".to_owned(), "burst".to_owned())].into()),
                            ..Default::default()
                        },
                        string_data: Some([("v".to_owned(), "v1".to_owned())].into()),
                        ..Default::default()
                    };
                    api.create(&PostParams::default(), &s)
                        .await
                        .expect("create");
                }
            })
            .await;
        // The latest content is the second version: the burst must bring that back.
        futures::stream::iter(0..count)
            .for_each_concurrent(CONCURRENT, |i| {
                let (api, ns) = (api.clone(), ns.name.clone());
                async move {
                    wait_saved(client, &ns, &name(i)).await;
                    api.patch(
                        &name(i),
                        &PatchParams::default(),
                        &Patch::Merge(json!({"stringData": {"v": "v2"}})),
                    )
                    .await
                    .expect("update");
                    wait_saved(client, &ns, &name(i)).await;
                }
            })
            .await;
        for i in (0..count).step_by(RETIRE_EVERY) {
            api.patch(
                &name(i),
                &PatchParams::default(),
                &Patch::Merge(json!({"metadata": {"annotations": {labels::RETIRE: "true"}}})),
            )
            .await
            .expect("retire");
            wait_restore_point(
                client,
                &ns.name,
                &name(i),
                "a tombstone",
                is_retired_tombstone,
            )
            .await;
        }
        let mut originals = Vec::new();
        for s in api.list(&ListParams::default()).await.expect("list") {
            originals.push((
                s.metadata.name.clone().expect("name"),
                s.metadata.uid.clone().expect("uid"),
            ));
        }
        assert_eq!(originals.len(), count);
        Burst { ns, api, originals }
    }

    /// Delete every Secret once (this very object: by UID), CONCURRENT at a time, with
    /// `fault` run once the first half is deleted, alongside the second half.
    async fn delete_all_with<F>(&self, fault: F)
    where
        F: Future<Output = ()>,
    {
        let (first, second) = self.originals.split_at(self.originals.len() / 2);
        self.delete(first).await;
        tokio::join!(fault, self.delete(second));
    }

    async fn delete(&self, which: &[(String, String)]) {
        futures::stream::iter(which)
            .for_each_concurrent(CONCURRENT, |(name, uid)| delete_once(&self.api, name, uid))
            .await;
    }

    /// Wait until every Secret not retired is back (another object) with the second
    /// version, and the guard counts one restore for each; then check that each restore
    /// point counts exactly one and the retired Secrets are still gone.
    async fn wait_restored(&self, client: &Client) {
        let kept: Vec<&(String, String)> =
            self.originals.iter().filter(|(n, _)| !retired(n)).collect();
        wait_for_within(
            OUTAGE_DEADLINE,
            "every Secret back with its latest content",
            || async {
                let live = self.api.list(&ListParams::default()).await.ok()?;
                let back = kept
                    .iter()
                    .filter(|(n, uid)| {
                        live.items.iter().any(|s| {
                            s.metadata.name.as_ref() == Some(n)
                                && s.metadata.uid.as_ref() != Some(uid)
                                && value_of(s) == Some(b"v2")
                        })
                    })
                    .count();
                (back == kept.len()).then_some(())
            },
        )
        .await;
        let restores = kept.len() as i64;
        let status = wait_guard_status(
            client,
            &self.ns.name,
            "g",
            "one restore counted per Secret",
            |s| s.restores >= restores && s.missing == 0,
        )
        .await;
        assert_eq!(status.restores, restores, "restores counted by the guard");
        for (name, _) in &kept {
            let rp = get_restore_point(client, &self.ns.name, name)
                .await
                .expect("restore point");
            assert_eq!(restore_point::restores(&rp), 1, "restores of {name}");
        }
        for (name, _) in self.originals.iter().filter(|(n, _)| retired(n)) {
            assert!(
                self.api.get_opt(name).await.expect("get").is_none(),
                "{name} was retired on purpose and came back"
            );
            // Its tombstone stays, or goes with the selector's match once the deletion is
            // only seen in a re-list; never is there data to restore it from.
            if let Some(rp) = get_restore_point(client, &self.ns.name, name).await {
                assert!(
                    is_retired_tombstone(&rp),
                    "{name} has a tombstone, not data"
                );
            }
        }
    }
}

/// A restore point that keeps no data and says its Secret was retired.
fn is_retired_tombstone(rp: &Secret) -> bool {
    rp.data.as_ref().is_none_or(|d| d.is_empty())
        && restore_point::parse(rp).is_ok_and(|p| {
            p.annotations.get(labels::TOMBSTONE).map(String::as_str) == Some("Retired")
        })
}

/// Delete `name` if it is still the object `uid`, retrying through an outage: done when
/// this call or an earlier attempt whose answer was lost deleted it (NotFound, or a UID
/// precondition that fails on the restored object). Never deletes a restored object.
async fn delete_once(api: &Api<Secret>, name: &str, uid: &str) {
    let params = DeleteParams {
        preconditions: Some(Preconditions {
            uid: Some(uid.to_owned()),
            resource_version: None,
        }),
        ..Default::default()
    };
    wait_for_within(OUTAGE_DEADLINE, &format!("{name} deleted"), || async {
        match api.delete(name, &params).await {
            Ok(_) => Some(()),
            Err(kube::Error::Api(e)) if e.code == 404 || e.code == 409 => Some(()),
            Err(_) => None,
        }
    })
    .await
}

/// Run a blocking cluster step (a script) off the test's runtime.
async fn blocking(step: impl FnOnce() + Send + 'static) {
    tokio::task::spawn_blocking(step)
        .await
        .expect("cluster step");
}

#[tokio::test]
async fn a_burst_of_deletions_with_etcd_restarted_in_the_middle_is_restored_once_each() {
    let _one = SERIAL.lock().await;
    prepare_operator();
    let client = admin_client().await;
    let _op = OperatorProcess::builder("chaos-etcd").start();
    let burst = Burst::prepare(&client, "chaos-etcd", BURST).await;
    burst.delete_all_with(blocking(restart_etcd)).await;
    burst.wait_restored(&admin_client().await).await;
}

#[tokio::test]
async fn a_burst_of_deletions_with_a_30s_apiserver_outage_in_the_middle_is_restored_once_each() {
    let _one = SERIAL.lock().await;
    prepare_operator();
    let client = admin_client().await;
    let _op = OperatorProcess::builder("chaos-apiserver").start();
    let burst = Burst::prepare(&client, "chaos-api", BURST).await;
    // The second half of the deletions is sent while the apiserver is away: each retries
    // until it is back.
    let outage = async {
        blocking(stop_apiserver).await;
        tokio::time::sleep(OUTAGE).await;
        blocking(start_apiserver).await;
    };
    burst.delete_all_with(outage).await;
    burst.wait_restored(&admin_client().await).await;
}

#[tokio::test]
async fn a_leader_paused_past_its_lease_mid_burst_is_replaced_and_each_restore_counted_once() {
    let _one = SERIAL.lock().await;
    prepare_operator();
    let client = admin_client().await;
    let lease = format!("chaos-{}", std::process::id());
    let lease_duration = Duration::from_secs(4);
    let replicas = [
        OperatorProcess::builder("chaos-a")
            .short_lease(&lease, lease_duration)
            .start(),
        OperatorProcess::builder("chaos-b")
            .short_lease(&lease, lease_duration)
            .start(),
    ];
    let leader = wait_one_leader(&replicas).await;
    let burst = Burst::prepare(&client, "chaos-pause", BURST / 2).await;
    // The leader stops in the middle of the burst, and stays stopped past its Lease, while
    // the second half is deleted; the standby takes over and restores them.
    let pause = async {
        replicas[leader].signal(libc::SIGSTOP);
    };
    burst.delete_all_with(pause).await;
    let standby = 1 - leader;
    wait_for("the standby to lead", || async {
        (replicas[standby].leader().await? == 1).then_some(())
    })
    .await;
    burst.wait_restored(&client).await;
    // The old leader resumes: it must neither restore nor count anything again.
    replicas[leader].signal(libc::SIGCONT);
    let [mut a, mut b] = replicas;
    let old = if leader == 0 { &mut a } else { &mut b };
    assert_eq!(
        old.wait_exit("the old leader's exit after losing its Lease"),
        None,
        "it exited by itself"
    );
    burst.wait_restored(&client).await;
}
