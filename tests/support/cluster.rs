//! The local control plane (e2e/cluster.sh): started once per test binary, clients for it,
//! kubectl, a namespace per test, the CRDs, and restarts of its parts.

use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::OnceLock;

use k8s_openapi::api::core::v1::Namespace;
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};

use super::{begin_test, repo_root, tools_bin};

/// Where the operator under test keeps restore points.
pub const OPERATOR_NAMESPACE: &str = "secretguard-system";

/// The state directory of the local control plane, as e2e/cluster.sh chooses it; its
/// components log to `logs/<component>.log` in it.
pub fn cluster_dir() -> PathBuf {
    std::env::var_os("SECRETGUARD_CLUSTER_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".cluster"))
}

/// Run `e2e/cluster.sh <verb>` with the given environment; fails the test if it fails.
pub fn cluster_script(verb: &str, env: &[(&str, &str)]) -> Output {
    let out = Command::new(repo_root().join("e2e/cluster.sh"))
        .arg(verb)
        .env("TOOLS_BIN", tools_bin())
        .envs(env.iter().copied())
        .output()
        .unwrap_or_else(|e| panic!("run e2e/cluster.sh {verb}: {e}"));
    assert!(
        out.status.success(),
        "e2e/cluster.sh {verb} failed ({}):\n{}\n{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Path of the admin kubeconfig of the local control plane, starting the control plane
/// the first time it is asked for in this test binary. A test that asks for it has begun
/// (see `logs`): from here on, its failure keeps the logs.
pub fn kubeconfig_path() -> &'static PathBuf {
    begin_test();
    static PATH: OnceLock<PathBuf> = OnceLock::new();
    PATH.get_or_init(|| {
        let out = cluster_script("up", &[]);
        let line = String::from_utf8_lossy(&out.stdout)
            .lines()
            .rev()
            .find_map(|l| l.strip_prefix("KUBECONFIG=").map(str::to_owned))
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

fn kubectl_command(args: &[&str]) -> Command {
    let mut cmd = Command::new(tools_bin().join("kubectl"));
    cmd.arg("--kubeconfig").arg(kubeconfig_path()).args(args);
    cmd
}

/// Run kubectl against the local control plane as admin.
pub fn kubectl(args: &[&str]) -> Output {
    kubectl_command(args).output().expect("run kubectl")
}

/// Run kubectl as admin with `input` on its standard input (for `-f -`).
pub fn kubectl_with_input(args: &[&str], input: &str) -> Output {
    let mut child = kubectl_command(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run kubectl");
    std::io::Write::write_all(&mut child.stdin.take().expect("stdin"), input.as_bytes())
        .expect("write to kubectl");
    child.wait_with_output().expect("kubectl output")
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

    /// Delete it now and wait until the namespace controller has finished with it.
    pub async fn delete_and_wait(&self, client: &Client) {
        self.delete(client).await;
        let api: Api<Namespace> = Api::all(client.clone());
        super::wait_for("the namespace deletion to complete", || async {
            api.get_opt(&self.name).await.ok()?.is_none().then_some(())
        })
        .await;
    }

    /// Wait until a second later than the namespace's creation: timestamps count whole
    /// seconds, so what is created from then on is younger than the namespace by them.
    pub async fn wait_past_its_creation_second(&self, client: &Client) {
        let created = Api::<Namespace>::all(client.clone())
            .get(&self.name)
            .await
            .expect("namespace")
            .metadata
            .creation_timestamp
            .expect("creationTimestamp")
            .0;
        super::wait_for("a second later than the namespace's creation", || async {
            (k8s_openapi::jiff::Timestamp::now().as_second() > created.as_second()).then_some(())
        })
        .await;
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

/// Install the CRDs (server-side apply of crds/) and wait until they are served.
pub fn install_crds() {
    let crds = repo_root().join("crds");
    let out = kubectl(&[
        "apply",
        "--server-side",
        "--force-conflicts",
        "-f",
        crds.to_str().unwrap_or_default(),
    ]);
    assert!(
        out.status.success(),
        "apply CRDs: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = kubectl(&[
        "wait",
        "--for=condition=Established",
        "--timeout=60s",
        "crd/secretguards.secretguard.dev",
    ]);
    assert!(
        out.status.success(),
        "CRD established: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// What an operator needs before it starts: the CRDs, and its namespace (OPERATOR_NAMESPACE).
pub fn prepare_operator() {
    install_crds();
    let _ = kubectl(&["create", "namespace", OPERATOR_NAMESPACE]);
}

/// Compact etcd's history up to now (through its HTTP gateway): a watch that resumes from
/// an older resource version then gets 410 Gone and must re-list.
pub async fn compact_etcd() {
    let port = std::fs::read_to_string(cluster_dir().join("etcd.port")).expect("etcd port");
    let base = format!("http://127.0.0.1:{}/v3/kv", port.trim());
    let http = reqwest::Client::new();
    let head: serde_json::Value = http
        .post(format!("{base}/range"))
        .json(&serde_json::json!({"key": "AA=="}))
        .send()
        .await
        .expect("etcd range")
        .json()
        .await
        .expect("etcd JSON");
    let revision = head["header"]["revision"]
        .as_str()
        .expect("revision")
        .to_owned();
    let out = http
        .post(format!("{base}/compaction"))
        .json(&serde_json::json!({"revision": revision, "physical": true}))
        .send()
        .await
        .expect("etcd compaction");
    assert!(
        out.status().is_success(),
        "etcd compaction: {}",
        out.status()
    );
}

/// Restart kube-apiserver (same flags, same port).
pub fn restart_apiserver() {
    kubeconfig_path();
    cluster_script("restart-apiserver", &[]);
}

/// Restart kube-controller-manager with other settings; the returned guard restarts it
/// with the defaults again when dropped (also when the test panics). Only for test
/// binaries of their own: other tests would see the controller-manager go away.
pub fn reconfigure_kcm(env: &[(&str, &str)]) -> KcmDefaults {
    kubeconfig_path();
    cluster_script("restart-kcm", env);
    KcmDefaults
}

pub struct KcmDefaults;

impl Drop for KcmDefaults {
    fn drop(&mut self) {
        cluster_script(
            "restart-kcm",
            &[
                ("LEGACY_TOKEN_CLEANUP_PERIOD", "8760h"),
                ("KUBE_CONTROLLER_MANAGER_EXTRA_ARGS", ""),
            ],
        );
    }
}

/// Restart etcd (same data, same ports) under a running kube-apiserver.
pub fn restart_etcd() {
    kubeconfig_path();
    cluster_script("restart-etcd", &[]);
}

/// Stop kube-apiserver; `start_apiserver` brings it back with the same flags and port.
pub fn stop_apiserver() {
    kubeconfig_path();
    cluster_script("stop-apiserver", &[]);
}

pub fn start_apiserver() {
    kubeconfig_path();
    cluster_script("start-apiserver", &[]);
}

/// A kubeconfig for the local control plane that authenticates with `token` only, written
/// to a file of the temp dir named after `name` and this test process; returns its path.
pub fn token_kubeconfig(name: &str, token: &str) -> PathBuf {
    let path = std::env::temp_dir().join(format!("{name}-{}.kubeconfig", std::process::id()));
    let admin = Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
    let cluster = admin.clusters[0].cluster.clone().expect("cluster");
    let config = serde_json::json!({
        "apiVersion": "v1", "kind": "Config",
        "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data}}],
        "users": [{"name": name, "user": {"token": token}}],
        "contexts": [{"name": "local", "context": {"cluster": "local", "user": name}}],
        "current-context": "local",
    });
    std::fs::write(&path, serde_json::to_vec(&config).expect("json")).expect("write kubeconfig");
    path
}
