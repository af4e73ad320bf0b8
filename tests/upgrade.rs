//! Upgrade and rollback (issue 13). The chart of UPGRADE_FROM (the commit before the "trust
//! before features" wave) is installed with its binary running as two replicas under the
//! chart's ServiceAccount, and guards at work: their restore points are of format 0 (no
//! namespace UID, no format). `helm upgrade` to this chart, then the rolling update a
//! Deployment with maxSurge 1 makes, with a guarded Secret deleted while the two versions
//! hand over: it is restored exactly once, the old points are rewritten in the current
//! format, and the two versions share one Lease. Then `helm rollback` and the same rollout
//! back: the old binary reads the points the new one wrote, and restores from them.
//!
//! The replicas run as processes with the identity and the arguments of the chart's
//! Deployment (the local control plane runs no Pods). Every operator guards the whole
//! cluster: one test at a time.

mod support;

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams};
use secretguard::restore_point::{self, annotation};
use serde_json::json;
use support::*;

/// The chart's release, and so its ServiceAccount, Deployment and ClusterRoles.
const RELEASE: &str = "secretguard";
/// The Lease both versions elect their leader on (the binary's default, and the chart's).
const LEASE: &str = "secretguard-leader";

/// Chart values for both versions: CRDs and aggregated roles are the test's (shared by
/// every test of the cluster), and short leader-election timings (the old version does not
/// give its Lease up on SIGTERM: its successor waits for it to expire).
const VALUES: &str = "crds.install=false,aggregateRoles=false,operator.leaderElection.leaseDuration=4s,operator.leaderElection.renewDeadline=3s,operator.leaderElection.retryPeriod=500ms";

/// Arguments the test's process builder sets itself (ports on loopback, the namespace,
/// plain /metrics for the test to read).
const SET_BY_BUILDER: &[&str] = &[
    "run",
    "--namespace",
    "--metrics-bind-address",
    "--health-bind-address",
    "--metrics-secure",
    "--leader-elect",
];

fn helm_ok(what: &str, args: &[&str]) {
    let out = helm_on_cluster(args);
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Apply the CRDs of a tree (crds/ of UPGRADE_FROM, or of this one), as installing or
/// rolling back a chart that ships them would.
fn apply_crds(tree: &std::path::Path) {
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        &tree.join("crds").to_string_lossy(),
    ]);
    assert!(
        out.status.success(),
        "apply CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Files and directories the test made, removed when it ends however it ends (a
/// kubeconfig holds a token).
struct Remove(Vec<std::path::PathBuf>);

impl Drop for Remove {
    fn drop(&mut self) {
        for path in &self.0 {
            let _ = std::fs::remove_file(path);
            let _ = std::fs::remove_dir_all(path);
        }
    }
}

/// Puts this tree's CRDs back when the test ends, for the tests that follow.
struct CurrentCrds;

impl Drop for CurrentCrds {
    fn drop(&mut self) {
        install_crds();
    }
}

/// The arguments of the operator container of the release's Deployment, as the chart
/// rendered them, without those the builder sets.
fn deployment_args(namespace: &str) -> Vec<String> {
    let out = kubectl(&[
        "-n",
        namespace,
        "get",
        "deployment",
        RELEASE,
        "-o",
        "jsonpath={.spec.template.spec.containers[0].args}",
    ]);
    assert!(out.status.success(), "get the Deployment");
    let args: Vec<String> = serde_json::from_slice(&out.stdout).expect("args as JSON");
    args.into_iter()
        .filter(|a| {
            let flag = a.split('=').next().unwrap_or_default();
            !SET_BY_BUILDER.contains(&flag)
        })
        .collect()
}

/// How replicas of one version start: its binary, the chart's arguments, the chart's
/// identity.
struct Version {
    release: Option<String>,
    args: Vec<String>,
    namespace: String,
    kubeconfig: std::path::PathBuf,
}

impl Version {
    fn replica(&self, name: &str) -> OperatorProcess {
        let mut builder = OperatorProcess::builder(name)
            .namespace(&self.namespace)
            .kubeconfig(&self.kubeconfig)
            .leader_election()
            .args(&self.args);
        if let Some(commit) = &self.release {
            builder = builder.release(commit);
        }
        builder.start()
    }
}

/// A rolling update with maxSurge 1 and maxUnavailable 0: start one of the new version,
/// once it is ready stop one of the old (SIGTERM), and again. The leader is stopped first,
/// so leadership passes between the versions; `during` runs right after that SIGTERM.
/// Returns the new replicas, one of them leading.
async fn roll(
    old: Vec<OperatorProcess>,
    new: &Version,
    names: [&str; 2],
    during: impl AsyncFnOnce(),
) -> Vec<OperatorProcess> {
    let mut old = old;
    let mut new_replicas = vec![new.replica(names[0])];
    new_replicas[0].wait_ready();
    let leader = wait_one_leader(&old).await;
    let mut stopped = old.remove(leader);
    stopped.signal(libc::SIGTERM);
    during().await;
    stopped.wait_exit("its exit after SIGTERM");
    new_replicas.push(new.replica(names[1]));
    new_replicas[1].wait_ready();
    for mut rest in old {
        rest.signal(libc::SIGTERM);
        rest.wait_exit("its exit after SIGTERM");
        assert_clean_logs(&[&rest]);
    }
    assert_clean_logs(&[&stopped]);
    wait_one_leader(&new_replicas).await;
    new_replicas
}

/// Delete a Secret; returns the UID it had.
async fn delete(secrets: &Api<Secret>, name: &str) -> Option<String> {
    let uid = secrets.get(name).await.expect("get").metadata.uid;
    secrets
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    uid
}

/// Wait until `name` exists again under another UID than `before`; returns its UID.
async fn wait_restored(secrets: &Api<Secret>, name: &str, before: &Option<String>) -> String {
    wait_for(&format!("{name} restored"), || async {
        let s = secrets.get_opt(name).await.ok()??;
        (s.metadata.uid != *before).then_some(s.metadata.uid?)
    })
    .await
}

/// SecretRestored Events on the Secret `name`, counting each repetition of a series.
async fn restored_events(client: &Client, ns: &str, name: &str) -> i32 {
    Api::<Event>::namespaced(client.clone(), ns)
        .list(&ListParams::default().fields("reason=SecretRestored"))
        .await
        .expect("list Events")
        .items
        .iter()
        .filter(|e| {
            e.regarding.as_ref().is_some_and(|r| {
                r.kind.as_deref() == Some("Secret") && r.name.as_deref() == Some(name)
            })
        })
        .map(|e| e.series.as_ref().map_or(1, |s| s.count))
        .sum()
}

/// The format and namespace UID a restore point records.
fn format_of(point: &Secret) -> (Option<String>, Option<String>) {
    let ann = point.metadata.annotations.clone().unwrap_or_default();
    (
        ann.get(annotation::FORMAT).cloned(),
        ann.get(annotation::ORIGIN_NAMESPACE_UID).cloned(),
    )
}

/// Nothing in the replicas' logs says they were refused something or could not read a
/// restore point.
fn assert_clean_logs(replicas: &[&OperatorProcess]) {
    for r in replicas {
        let log = r.read_log();
        for bad in ["forbidden", "unreadable restore point"] {
            assert!(!log.contains(bad), "{} logged {bad:?}:\n{log}", r.name());
        }
    }
}

#[tokio::test]
async fn an_upgrade_from_the_previous_release_and_a_rollback_keep_every_guarded_secret() {
    let client = admin_client().await;
    let from = upgrade_from();
    let old_tree = tree_at(&from);
    let _crds = CurrentCrds;
    apply_crds(&old_tree);
    let release_ns = TestNamespace::new(&client, "sg-upgrade").await;
    let _release = HelmRelease::new(RELEASE, &release_ns.name);
    let old_chart = old_tree.join("charts/secretguard");
    let old_chart = old_chart.to_string_lossy();
    let install = ["--namespace", &release_ns.name, "--set", VALUES];
    helm_ok(
        "helm install (old chart)",
        &[&["install", RELEASE, &old_chart][..], &install[..]].concat(),
    );
    let token = service_account_token(&release_ns.name, RELEASE);
    let kubeconfig = token_kubeconfig("sg-upgrade", &token);
    let _remove = Remove(vec![kubeconfig.clone(), old_tree.clone()]);
    let old = Version {
        release: Some(from.clone()),
        args: deployment_args(&release_ns.name),
        namespace: release_ns.name.clone(),
        kubeconfig: kubeconfig.clone(),
    };
    let old_replicas = vec![old.replica("old-a"), old.replica("old-b")];
    wait_one_leader(&old_replicas).await;

    // Guards at work under the old version: two Secrets and a token, saved in format 0.
    // Guard `h` with `cfg` and the token in the namespace's first second, as a GitOps tool
    // applying them together would have them: a namespace not older than a format-0 point
    // does not show it is its own, only the very Secret living there does (their points
    // are rewritten on that proof). Guard `g` with `db`, deleted during the handover, a
    // second later: a replica that starts after its deletion never sees it, and may be the
    // one that leads next, so only a namespace older than its point proves that point its
    // own (a same-second point of a Secret deleted then is refused, ForeignRestorePoint:
    // docs/upgrading.md).
    wait_for("the start of a second", || async {
        (k8s_openapi::jiff::Timestamp::now().subsec_millisecond() < 200).then_some(())
    })
    .await;
    let ns = TestNamespace::new(&client, "upgrade").await;
    create_secret(&client, &ns.name, "cfg").await;
    create_service_account(&client, &ns.name, "writer").await;
    create_guard(
        &client,
        &ns.name,
        "h",
        json!({"secrets": [{"name": "cfg"}], "serviceAccounts": [{"name": "writer"}]}),
    )
    .await;
    ns.wait_past_its_creation_second(&client).await;
    create_secret(&client, &ns.name, "db").await;
    create_guard(&client, &ns.name, "g", json!({"secrets": [{"name": "db"}]})).await;
    let writer_token = wait_for_token(&client, &ns.name, "writer-token").await;
    let targets = ["db", "cfg", "writer-token"];
    for name in targets {
        let point = wait_restore_point_in(
            &client,
            &release_ns.name,
            &ns.name,
            name,
            "a restore point by the old version",
            |_| true,
        )
        .await;
        assert_eq!(format_of(&point), (None, None), "{name}: format 0");
    }
    for (guard, guarded) in [("g", 1), ("h", 2)] {
        wait_guard_status(
            &client,
            &ns.name,
            guard,
            "guarded by the old version",
            |s| s.guarded == guarded && s.missing == 0,
        )
        .await;
    }

    // Upgrade: the chart (RBAC, admission policy, NetworkPolicy, CRD), then the replicas.
    install_crds();
    helm_ok(
        "helm upgrade",
        &[
            &["upgrade", RELEASE, "charts/secretguard"][..],
            &install[..],
        ]
        .concat(),
    );
    let new = Version {
        release: None,
        args: deployment_args(&release_ns.name),
        ..old
    };
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns.name);
    let mut db_uid = None;
    let new_replicas = roll(old_replicas, &new, ["new-a", "new-b"], async || {
        db_uid = delete(&secrets, "db").await;
    })
    .await;
    let restored_uid = wait_restored(&secrets, "db", &db_uid).await;
    let ns_uid = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get(&ns.name)
        .await
        .expect("namespace")
        .metadata
        .uid;
    for name in targets {
        wait_restore_point_in(
            &client,
            &release_ns.name,
            &ns.name,
            name,
            "the old point rewritten in the current format",
            |p| {
                format_of(p)
                    == (
                        Some(restore_point::Format::V1.as_str().to_owned()),
                        ns_uid.clone(),
                    )
            },
        )
        .await;
    }
    let status = wait_guard_status(&client, &ns.name, "g", "one restore", |s| {
        s.restores >= 1 && s.missing == 0
    })
    .await;
    assert_eq!(status.restores, 1, "restored once, not by both versions");
    wait_for("the restore's Event", || async {
        (restored_events(&client, &ns.name, "db").await > 0).then_some(())
    })
    .await;
    assert_eq!(restored_events(&client, &ns.name, "db").await, 1);
    assert_eq!(
        secrets.get("db").await.expect("db").metadata.uid.as_deref(),
        Some(restored_uid.as_str()),
        "nothing restored it a second time"
    );
    let leases: Vec<String> = Api::<Lease>::namespaced(client.clone(), &release_ns.name)
        .list(&ListParams::default())
        .await
        .expect("Leases")
        .items
        .into_iter()
        .filter_map(|l| l.metadata.name)
        .collect();
    assert_eq!(leases, [LEASE], "both versions elect on one Lease");
    let holder = lease_holder(&client, &release_ns.name, LEASE).await;
    assert!(
        new_replicas.iter().any(|r| Some(r.identity()) == holder),
        "a new replica holds the Lease: {holder:?}"
    );

    // Rollback: the old chart and CRD, then the old replicas, on the points the new
    // version wrote.
    helm_ok(
        "helm rollback",
        &["rollback", RELEASE, "1", "--namespace", &release_ns.name],
    );
    apply_crds(&old_tree);
    let old = Version {
        release: Some(from),
        args: deployment_args(&release_ns.name),
        ..new
    };
    let old_replicas = roll(new_replicas, &old, ["old-c", "old-d"], async || {}).await;
    let db_uid = delete(&secrets, "db").await;
    let token_uid = delete(&secrets, "writer-token").await;
    wait_restored(&secrets, "db", &db_uid).await;
    wait_restored(&secrets, "writer-token", &token_uid).await;
    assert!(
        wait_for_token(&client, &ns.name, "writer-token").await == writer_token,
        "the same token bytes, from the point the new version wrote"
    );
    assert_clean_logs(&old_replicas.iter().collect::<Vec<_>>());
}
