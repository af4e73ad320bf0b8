//! The promises of `e2e/cluster.sh`, checked on a private control plane in a temporary
//! state directory (so the shared one the other tests use is never disturbed): it starts,
//! is reused while healthy, is replaced when a component crashed, names the component that
//! failed to start with the end of its log, and `down` removes everything.

mod support;

use std::path::Path;
use std::process::{Command, Output};

fn cluster(dir: &Path, verb: &str, env: &[(&str, &str)]) -> Output {
    Command::new(support::repo_root().join("e2e/cluster.sh"))
        .arg(verb)
        .env("SECRETGUARD_CLUSTER_DIR", dir)
        .env("TOOLS_BIN", support::tools_bin())
        .envs(env.iter().copied())
        .output()
        .expect("run e2e/cluster.sh")
}

fn pid(dir: &Path, component: &str) -> String {
    std::fs::read_to_string(dir.join(format!("{component}.pid"))).expect("pid file")
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn cluster_script_starts_reuses_replaces_and_removes_a_control_plane() {
    let tmp = std::env::temp_dir().join(format!("sg-cluster-test-{}", std::process::id()));
    let dir = tmp.join("state");

    let out = cluster(&dir, "up", &[]);
    assert!(out.status.success(), "first start: {}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let last = stdout.lines().last().unwrap_or_default();
    assert_eq!(
        last,
        format!("KUBECONFIG={}/admin.kubeconfig", dir.display())
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    for component in ["etcd", "kube-apiserver", "kube-controller-manager"] {
        assert!(
            stderr.contains(&format!("{component}.log")),
            "says where {component} logs: {stderr}"
        );
    }
    let apiserver = pid(&dir, "kube-apiserver");

    let out = cluster(&dir, "up", &[]);
    assert!(out.status.success(), "reuse: {}", text(&out));
    assert!(
        text(&out).contains("reusing healthy control plane"),
        "{}",
        text(&out)
    );
    assert_eq!(
        pid(&dir, "kube-apiserver"),
        apiserver,
        "a healthy cluster is reused"
    );

    let killed = Command::new("kill")
        .args(["-9", apiserver.trim()])
        .status()
        .expect("kill");
    assert!(killed.success());
    let out = cluster(&dir, "status", &[]);
    assert!(!out.status.success(), "a crashed cluster is not healthy");
    let out = cluster(&dir, "up", &[]);
    assert!(out.status.success(), "replace: {}", text(&out));
    assert!(
        text(&out).contains("not healthy: replacing it"),
        "{}",
        text(&out)
    );
    assert_ne!(
        pid(&dir, "kube-apiserver"),
        apiserver,
        "a crashed cluster is replaced"
    );
    assert!(cluster(&dir, "status", &[]).status.success());

    let out = cluster(&dir, "down", &[]);
    assert!(out.status.success(), "down: {}", text(&out));
    assert!(!dir.exists(), "down removes the state directory");

    // A component that cannot start is named, with the end of its log.
    let out = cluster(
        &dir,
        "up",
        &[("KUBE_APISERVER_EXTRA_ARGS", "--no-such-flag-for-this-test")],
    );
    assert!(!out.status.success(), "a failed start exits non-zero");
    let all = text(&out);
    assert!(all.contains("FAILED: kube-apiserver"), "{all}");
    assert!(
        all.contains("no-such-flag-for-this-test"),
        "shows the log's end: {all}"
    );
    let _ = cluster(&dir, "down", &[]);
    let _ = std::fs::remove_dir_all(&tmp);
}
