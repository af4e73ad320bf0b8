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

// ---------------------------------------------------------------------------------------
// The operator, running in this test process against the local control plane.

use k8s_openapi::api::authentication::v1::SelfSubjectReview;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use k8s_openapi::api::events::v1::Event;
use kube::api::ListParams;
use secretguard::api::v1alpha1::{SecretGuard, SecretGuardStatus};
use secretguard::controller::{Context, Controller};
use std::sync::Arc;

/// Where the operator under test keeps restore points.
pub const OPERATOR_NAMESPACE: &str = "secretguard-system";

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

/// The operator under test: started once per test binary, on a runtime of its own, with
/// its log in target/test-logs/<test binary>.log. Returns its context once its caches
/// have synced.
pub fn operator() -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        install_crds();
        let _ = kubectl(&["create", "namespace", OPERATOR_NAMESPACE]);
        let log_dir = repo_root().join("target/test-logs");
        std::fs::create_dir_all(&log_dir).expect("log dir");
        let exe = std::env::current_exe().expect("exe");
        let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("test");
        let file = std::fs::File::create(log_dir.join(format!("{stem}.log"))).expect("log file");
        let _ = tracing_subscriber::fmt()
            .with_writer(std::sync::Mutex::new(file))
            .with_ansi(false)
            .with_env_filter("info,secretguard=debug")
            .try_init();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .expect("operator runtime");
            rt.block_on(async move {
                let client = admin_client().await;
                let controller = Controller::new(client, operator_config());
                tx.send(controller.context()).expect("send context");
                controller
                    .run(std::future::pending())
                    .await
                    .expect("operator runs");
            });
        });
        let ctx = rx.recv().expect("operator context");
        let start = Instant::now();
        while !*ctx.synced.borrow() {
            assert!(start.elapsed() < DEADLINE, "operator caches did not sync");
            std::thread::sleep(Duration::from_millis(50));
        }
        ctx
    })
    .clone()
}

pub fn operator_config() -> secretguard::controller::Config {
    secretguard::controller::Config {
        operator_namespace: OPERATOR_NAMESPACE.into(),
        audit_interval: Duration::from_secs(300),
        populate_deadline: Duration::from_secs(5),
        workers: 4,
        instance: "test".into(),
        restore_point_retention: Duration::from_secs(24 * 3600),
        alertmanager_urls: Vec::new(),
        leader: None,
        runbook_base_url: secretguard::alerts::DEFAULT_RUNBOOK_BASE.into(),
    }
}

/// Wait until the operator has nothing queued or in progress, after at least one more unit
/// of work than `after`.
pub async fn wait_operator_idle(ctx: &Context, after: u64) {
    wait_for("the operator to finish its work", || async {
        (ctx.processed.load(std::sync::atomic::Ordering::Relaxed) > after && ctx.idle())
            .then_some(())
    })
    .await
}

pub async fn create_guard(
    client: &Client,
    ns: &str,
    name: &str,
    spec: serde_json::Value,
) -> SecretGuard {
    let guard: SecretGuard = serde_json::from_value(serde_json::json!({
        "apiVersion": "secretguard.dev/v1alpha1",
        "kind": "SecretGuard",
        "metadata": {"name": name, "namespace": ns},
        "spec": spec,
    }))
    .expect("guard JSON");
    Api::<SecretGuard>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &guard)
        .await
        .expect("create SecretGuard")
}

/// Wait until the guard's status satisfies `check`; returns it.
pub async fn wait_guard_status(
    client: &Client,
    ns: &str,
    name: &str,
    what: &str,
    check: impl Fn(&SecretGuardStatus) -> bool,
) -> SecretGuardStatus {
    let api: Api<SecretGuard> = Api::namespaced(client.clone(), ns);
    wait_for(what, || {
        let api = api.clone();
        let check = &check;
        async move {
            let g = api.get_opt(name).await.ok()??;
            g.status.filter(|s| check(s))
        }
    })
    .await
}

pub fn condition<'a>(s: &'a SecretGuardStatus, type_: &str) -> Option<(&'a str, &'a str)> {
    s.conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| (c.status.as_str(), c.reason.as_str()))
}

pub async fn create_service_account(client: &Client, ns: &str, name: &str) -> ServiceAccount {
    let sa = ServiceAccount {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &sa)
        .await
        .expect("create ServiceAccount")
}

/// The token in a Secret once the tokens controller has filled it. Never print it.
pub async fn wait_for_token(client: &Client, ns: &str, name: &str) -> String {
    let secrets: Api<Secret> = Api::namespaced(client.clone(), ns);
    wait_for("a populated token Secret", || {
        let secrets = secrets.clone();
        async move {
            let s = secrets.get_opt(name).await.ok()??;
            let token = s.data?.get("token")?.0.clone();
            (!token.is_empty()).then(|| String::from_utf8_lossy(&token).into_owned())
        }
    })
    .await
}

/// Wait until the token Secret holds a token other than `old` (after a rotation or a
/// ServiceAccount re-creation); returns it.
pub async fn wait_for_new_token(client: &Client, ns: &str, name: &str, old: &str) -> String {
    wait_for("a token different from the old one", || async {
        let t = wait_for_token(client, ns, name).await;
        (t != old).then_some(t)
    })
    .await
}

/// Who the apiserver says the bearer of `token` is.
pub async fn whoami(token: &str) -> Result<Option<String>, kube::Error> {
    Api::<SelfSubjectReview>::all(token_client(token).await)
        .create(&PostParams::default(), &SelfSubjectReview::default())
        .await
        .map(|r| r.status.and_then(|s| s.user_info).and_then(|u| u.username))
}

/// Events in a namespace with this reason, as (regarding kind, note).
pub async fn events(client: &Client, ns: &str, reason: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .expect("list events");
    list.items
        .into_iter()
        .map(|e| {
            (
                e.regarding.and_then(|r| r.kind).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Wait until an Event with this reason exists on the given kind of object.
pub async fn wait_event(client: &Client, ns: &str, reason: &str, kind: &str) -> String {
    wait_for(&format!("a {reason} Event on a {kind}"), || async {
        events(client, ns, reason)
            .await
            .into_iter()
            .find(|(k, _)| k == kind)
            .map(|(_, note)| note)
    })
    .await
}

/// Restart kube-controller-manager with other settings; the returned guard restarts it
/// with the defaults again when dropped (also when the test panics). Only for test
/// binaries of their own: other tests would see the controller-manager go away.
pub fn reconfigure_kcm(env: &[(&str, &str)]) -> KcmDefaults {
    restart_kcm(env);
    KcmDefaults
}

fn restart_kcm(env: &[(&str, &str)]) {
    kubeconfig_path();
    let out = Command::new(repo_root().join("e2e/cluster.sh"))
        .arg("restart-kcm")
        .env("TOOLS_BIN", tools_bin())
        .envs(env.iter().copied())
        .output()
        .expect("run e2e/cluster.sh restart-kcm");
    assert!(
        out.status.success(),
        "restart-kcm failed: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}

pub struct KcmDefaults;

impl Drop for KcmDefaults {
    fn drop(&mut self) {
        restart_kcm(&[
            ("LEGACY_TOKEN_CLEANUP_PERIOD", "8760h"),
            ("KUBE_CONTROLLER_MANAGER_EXTRA_ARGS", ""),
        ]);
    }
}

/// Start a process that lives as long as this test process: it is spawned from a thread
/// that never ends, with PR_SET_PDEATHSIG, so the kernel kills it when we exit (shared
/// statics are never dropped). Returns its pid.
pub fn spawn_for_life(mut cmd: Command) -> u32 {
    use std::os::unix::process::CommandExt;
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; it only sets this child's parent-death signal.
        unsafe {
            cmd.pre_exec(|| {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = cmd.spawn().expect("spawn process");
        tx.send(child.id()).expect("send pid");
        let _ = child.wait();
        // Keep this thread (the child's parent) alive until the process exits.
        loop {
            std::thread::park();
        }
    });
    rx.recv().expect("pid")
}

/// A free TCP port on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A log file under target/test-logs/ (created if need be), for a process a test starts.
pub fn test_log(name: &str) -> std::fs::File {
    let dir = repo_root().join("target/test-logs");
    std::fs::create_dir_all(&dir).expect("create target/test-logs");
    std::fs::File::create(dir.join(name)).expect("create log file")
}

/// A real Alertmanager on a free loopback port, living as long as this process, with a
/// receiver that drops notifications (tests read alerts from its API). Returns its URL,
/// once it is ready.
pub fn start_alertmanager(log: &str) -> String {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sg-alertmanager-{}-{log}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("alertmanager dir");
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .expect("alertmanager config");
    let mut cmd = Command::new(tools_bin().join("alertmanager"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(test_log(log));
    spawn_for_life(cmd);
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while !http_ok(&format!("{url}/-/ready")) {
        assert!(
            start.elapsed() < DEADLINE,
            "Alertmanager never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    url
}

/// A blocking GET (no runtime needed) that answers whether `url` returned 200.
pub fn http_ok(url: &str) -> bool {
    use std::io::{Read, Write};
    let Some(rest) = url.strip_prefix("http://") else {
        return false;
    };
    let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
    let Ok(mut stream) = std::net::TcpStream::connect(host) else {
        return false;
    };
    if write!(stream, "GET /{path} HTTP/1.0\r\nHost: {host}\r\n\r\n").is_err() {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.ends_with(b" 200")
}
