//! Shared by the integration tests: one real control plane per test binary (started once,
//! or reused when `make cluster` already runs one), a fresh namespace per test, and waits
//! that poll a condition against a deadline.
#![allow(dead_code)] // each test binary uses a different part of this module

use std::future::Future;
use std::path::PathBuf;
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

/// How long a wait may take before the test fails. Generous: the machine is small and a
/// busy controller-manager can be slow; a passing wait returns as soon as it holds.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn tools_bin() -> PathBuf {
    std::env::var_os("TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin"))
}

/// Path of the admin kubeconfig of the local control plane, starting the control plane
/// the first time it is asked for in this test binary.
pub fn kubeconfig_path() -> &'static PathBuf {
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = Command::new(repo_root().join("e2e/cluster.sh"))
            .arg("up")
            .env("TOOLS_BIN", tools_bin())
            .output()
            .expect("run e2e/cluster.sh up");
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "e2e/cluster.sh up failed ({}):\n{}\n{}",
            out.status,
            stdout,
            String::from_utf8_lossy(&out.stderr)
        );
        let line = stdout
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("KUBECONFIG="))
            .expect("e2e/cluster.sh up prints KUBECONFIG=<path> last");
        PathBuf::from(line)
    })
}

/// Client configuration for the cluster admin (a client certificate in system:masters).
pub async fn admin_config() -> Config {
    let kubeconfig = Kubeconfig::read_from(kubeconfig_path()).expect("read admin kubeconfig");
    Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .expect("load admin kubeconfig")
}

pub async fn admin_client() -> Client {
    Client::try_from(admin_config().await).expect("admin client")
}

/// A client that authenticates with nothing but the given bearer token.
pub async fn token_client(token: &str) -> Client {
    let mut config = admin_config().await;
    config.auth_info = kube::config::AuthInfo {
        token: Some(secrecy::SecretString::from(token.to_owned())),
        ..Default::default()
    };
    Client::try_from(config).expect("token client")
}

/// Run kubectl against the local control plane as admin.
pub fn kubectl(args: &[&str]) -> std::process::Output {
    Command::new(tools_bin().join("kubectl"))
        .arg("--kubeconfig")
        .arg(kubeconfig_path())
        .args(args)
        .output()
        .expect("run kubectl")
}

/// A namespace of its own for one test, deleted (without waiting) when the test ends,
/// whether it passed or panicked.
pub struct TestNamespace {
    pub name: String,
}

impl TestNamespace {
    pub async fn new(client: &Client, prefix: &str) -> TestNamespace {
        let api: Api<Namespace> = Api::all(client.clone());
        let ns = Namespace {
            metadata: ObjectMeta {
                generate_name: Some(format!("{prefix}-")),
                labels: Some([("secretguard.dev/test".to_owned(), "true".to_owned())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        let created = api
            .create(&PostParams::default(), &ns)
            .await
            .expect("create test namespace");
        TestNamespace {
            name: created.metadata.name.expect("generated name"),
        }
    }

    /// Delete it now and keep the test's hands off it; used by tests of deletion itself.
    pub async fn delete(&self, client: &Client) {
        let api: Api<Namespace> = Api::all(client.clone());
        api.delete(&self.name, &DeleteParams::default())
            .await
            .expect("delete namespace");
    }
}

impl Drop for TestNamespace {
    fn drop(&mut self) {
        // Blocking and synchronous on purpose: it runs on panic too, outside any runtime.
        let _ = kubectl(&[
            "delete",
            "namespace",
            &self.name,
            "--wait=false",
            "--ignore-not-found",
        ]);
    }
}

/// Poll `check` until it returns `Some`, or fail the test after `DEADLINE` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_within(DEADLINE, what, &mut check).await
}

pub async fn wait_for_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
