//! Nothing is lost under faults: the operator binary, built with fault-injection points,
//! killed with SIGKILL at every step of a restore; deletions while it is down; the
//! apiserver restarted under it; a namespace deleted with guarded Secrets in it.
//!
//! The operator runs as a subprocess here (one at a time: the tests take a lock), so it
//! can really be killed. Its logs are in target/test-logs/<test>/operator-<name>.log.

mod support;

use std::os::unix::process::ExitStatusExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::Client;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use secretguard::fault::points;
use secretguard::restore_point;
use serde_json::json;
use support::*;

/// One operator process at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

struct Operator {
    child: Child,
    log: std::path::PathBuf,
}

impl Operator {
    fn start(log: &str, fault: Option<&str>, extra: &[&str]) -> Operator {
        let file = test_log(&format!("operator-{log}.log"));
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_secretguard"));
        cmd.args([
            "run",
            "--namespace",
            OPERATOR_NAMESPACE,
            "--workers",
            "2",
            "--leader-elect=false",
        ])
        .args(extra)
        .env("KUBECONFIG", kubeconfig_path())
        .env("RUST_LOG", "info,secretguard=debug")
        .env_remove("SECRETGUARD_FAULT")
        .stdin(Stdio::null())
        .stdout(file.try_clone().expect("log file"))
        .stderr(file);
        if let Some(f) = fault {
            cmd.env("SECRETGUARD_FAULT", f);
        }
        Operator {
            child: cmd.spawn().expect("start the operator binary"),
            log: test_dir().join(format!("operator-{log}.log")),
        }
    }

    /// Wait for the process to end by itself; returns the signal that ended it.
    fn wait_killed(&mut self, what: &str) -> Option<i32> {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return status.signal();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the operator never reached {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill(); // SIGKILL
        let _ = self.child.wait();
        keep_if_failed(&self.log);
    }
}

async fn setup(client: &Client, prefix: &str) -> (TestNamespace, Api<Secret>) {
    install_crds();
    let _ = kubectl(&["create", "namespace", OPERATOR_NAMESPACE]);
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
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let rp_name = restore_point::name_for(ns, "db");
    wait_for(&format!("db saved with {restores} restores"), || async {
        let live = api.get_opt("db").await.ok()??;
        let rp = restore_point::parse(&rps.get_opt(&rp_name).await.ok()??).ok()?;
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
    let mut op = Operator::start("steady-0", None, &[]);
    wait_settled(&client, &ns.name, &api, 0).await;

    let steps = [
        points::DELETION_SEEN,
        points::RESTORE_POINT_READ,
        points::CREATE_SENT,
        points::COUNT_NOT_SAVED,
        points::STATUS_NOT_WRITTEN,
    ];
    for (n, step) in steps.iter().enumerate() {
        drop(op); // SIGKILL
        let mut faulty = Operator::start(&format!("fault-{step}"), Some(step), &[]);
        api.delete("db", &DeleteParams::default())
            .await
            .expect("delete");
        assert_eq!(
            faulty.wait_killed(step),
            Some(libc_sigkill()),
            "the operator must die at {step}, by SIGKILL"
        );
        op = Operator::start(&format!("steady-{}", n + 1), None, &[]);
        wait_settled(&client, &ns.name, &api, n as u64 + 1).await;
    }
    drop(op);
}

fn libc_sigkill() -> i32 {
    9
}

#[tokio::test]
async fn a_deletion_while_the_operator_is_down_is_restored_when_it_starts() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "down").await;
    let op = Operator::start("down-before", None, &[]);
    wait_settled(&client, &ns.name, &api, 0).await;
    drop(op);
    api.delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    assert!(api.get_opt("db").await.expect("get").is_none());
    let _op = Operator::start("down-after", None, &[]);
    wait_settled(&client, &ns.name, &api, 1).await;
}

#[tokio::test]
async fn watches_resume_after_an_apiserver_restart() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let (ns, api) = setup(&client, "apirestart").await;
    let _op = Operator::start("apiserver-restart", None, &[]);
    wait_settled(&client, &ns.name, &api, 0).await;
    let out = Command::new(repo_root().join("e2e/cluster.sh"))
        .arg("restart-apiserver")
        .env("TOOLS_BIN", tools_bin())
        .output()
        .expect("restart the apiserver");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
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
    let _op = Operator::start("retention", None, &["--restore-point-retention", "4s"]);
    wait_settled(&client, &ns.name, &api, 0).await;
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let rp_name = restore_point::name_for(&ns.name, "db");

    ns.delete(&client).await;
    let namespaces: Api<Namespace> = Api::all(client.clone());
    wait_for("the namespace deletion to complete", || async {
        namespaces
            .get_opt(&ns.name)
            .await
            .ok()?
            .is_none()
            .then_some(())
    })
    .await;
    let stamped = wait_for("the restore point to be kept, stamped orphaned", || async {
        let rp = rps.get_opt(&rp_name).await.ok()??;
        restore_point::orphaned_since(&rp)
    })
    .await;
    wait_for(
        "the restore point to be dropped after the retention",
        || async { rps.get_opt(&rp_name).await.ok()?.is_none().then_some(()) },
    )
    .await;
    let kept = k8s_openapi::jiff::Timestamp::now().duration_since(stamped);
    assert!(
        kept.as_secs() >= 4,
        "kept for the retention at least, was {kept:?}"
    );
    let log =
        std::fs::read_to_string(test_dir().join("operator-retention.log")).expect("operator log");
    assert!(
        !log.lines()
            .any(|l| l.contains("reconcile failed") && l.contains(&ns.name)),
        "no error loop over the deleted namespace"
    );
}
