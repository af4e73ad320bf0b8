//! The operator binary as a process of its own: for the tests that kill it, run two of it,
//! run it under another identity or read what it serves, and for the bench. One builder for
//! all of them. Each process serves /metrics and /readyz on free loopback ports, logs
//! (stdout and stderr) to target/test-logs/<test>/operator-<name>.log, and is killed with
//! SIGKILL when dropped; a failed test keeps its whole log (see `logs`).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use super::{
    DEADLINE, OPERATOR_NAMESPACE, free_port, http_ok, keep_if_failed, kubeconfig_path, shared_log,
    spawn_for_life, test_dir, wait_http_ok,
};

/// How an operator process is started; from `OperatorProcess::builder`.
#[must_use]
pub struct OperatorBuilder {
    name: String,
    binary: PathBuf,
    namespace: String,
    kubeconfig: Option<PathBuf>,
    leader_elect: bool,
    lease: Option<String>,
    workers: Option<u32>,
    fault: Option<String>,
    alertmanager: Option<String>,
    json_logs: bool,
    secure_metrics: bool,
    rust_log: String,
    args: Vec<String>,
}

impl OperatorBuilder {
    /// Another operator binary than the one cargo built for this test (the bench's release
    /// build).
    pub fn binary(mut self, path: impl Into<PathBuf>) -> Self {
        self.binary = path.into();
        self
    }

    /// The operator's namespace (restore points, Lease); OPERATOR_NAMESPACE if not given.
    pub fn namespace(mut self, ns: &str) -> Self {
        self.namespace = ns.into();
        self
    }

    /// Run as whoever this kubeconfig names; the cluster admin if not given.
    pub fn kubeconfig(mut self, path: &Path) -> Self {
        self.kubeconfig = Some(path.into());
        self
    }

    /// Take part in leader election (off if not given), as the binary's default Lease.
    pub fn leader_election(mut self) -> Self {
        self.leader_elect = true;
        self
    }

    /// Take part in leader election for this Lease.
    pub fn lease(mut self, name: &str) -> Self {
        self.leader_elect = true;
        self.lease = Some(name.into());
        self
    }

    /// Take part in leader election for this Lease, with a Lease of `duration`, a 3 s renew
    /// deadline and retries every 500 ms: a standby takes over soon after a leader stops.
    pub fn short_lease(self, name: &str, duration: Duration) -> Self {
        self.lease(name).args([
            format!("--leader-election-lease-duration={}s", duration.as_secs()),
            "--leader-election-renew-deadline=3s".into(),
            "--leader-election-retry-period=500ms".into(),
        ])
    }

    pub fn workers(mut self, n: u32) -> Self {
        self.workers = Some(n);
        self
    }

    /// Kill itself with SIGKILL at this fault-injection point (`secretguard::fault::points`).
    pub fn fault(mut self, point: &str) -> Self {
        self.fault = Some(point.into());
        self
    }

    pub fn alertmanager(mut self, url: &str) -> Self {
        self.alertmanager = Some(url.into());
        self
    }

    pub fn json_logs(mut self) -> Self {
        self.json_logs = true;
        self
    }

    /// Serve /metrics as the binary does by default: HTTPS with a self-signed certificate,
    /// only to bearer tokens allowed `get` on /metrics. Without it, tests read plain,
    /// open /metrics (`--metrics-secure=false`).
    pub fn secure_metrics(mut self) -> Self {
        self.secure_metrics = true;
        self
    }

    /// Its RUST_LOG; "info,secretguard=debug" if not given.
    pub fn rust_log(mut self, filter: &str) -> Self {
        self.rust_log = filter.into();
        self
    }

    /// More command-line arguments, after the others.
    pub fn args<I: IntoIterator<Item = S>, S: AsRef<str>>(mut self, args: I) -> Self {
        self.args
            .extend(args.into_iter().map(|a| a.as_ref().to_owned()));
        self
    }

    /// Start it, logging to target/test-logs/<test>/operator-<name>.log; it is killed when
    /// the returned value is dropped.
    pub fn start(self) -> OperatorProcess {
        let log = test_dir().join(format!("operator-{}.log", self.name));
        let file = std::fs::File::create(&log).expect("create operator log");
        let (mut cmd, metrics, health) = self.command(file);
        let child = cmd.spawn().expect("start the operator binary");
        OperatorProcess {
            name: self.name,
            pid: child.id(),
            child: Some(child),
            log,
            metrics,
            health,
        }
    }

    /// Start one that lives as long as the test process, for a static shared by the tests
    /// of a binary; it logs to target/test-logs/<test binary>/operator-<name>.log, and is
    /// never killed by a drop.
    pub fn start_for_life(self) -> OperatorProcess {
        let (log, file) = shared_log(&format!("operator-{}.log", self.name));
        let (cmd, metrics, health) = self.command(file);
        OperatorProcess {
            name: self.name,
            pid: spawn_for_life(cmd),
            child: None,
            log,
            metrics,
            health,
        }
    }

    fn command(&self, log: std::fs::File) -> (Command, String, String) {
        let (m, h) = (free_port(), free_port());
        let mut cmd = Command::new(&self.binary);
        cmd.args(["run", "--namespace", &self.namespace])
            .arg(format!("--leader-elect={}", self.leader_elect))
            .arg(format!("--metrics-bind-address=127.0.0.1:{m}"))
            .arg(format!("--health-bind-address=127.0.0.1:{h}"))
            .arg(format!("--metrics-secure={}", self.secure_metrics));
        if let Some(lease) = &self.lease {
            cmd.arg(format!("--leader-election-id={lease}"));
        }
        if let Some(n) = self.workers {
            cmd.arg(format!("--workers={n}"));
        }
        if let Some(url) = &self.alertmanager {
            cmd.arg(format!("--alertmanager-url={url}"));
        }
        if self.json_logs {
            cmd.args(["--log-format", "json"]);
        }
        cmd.args(&self.args)
            .env(
                "KUBECONFIG",
                self.kubeconfig.as_deref().unwrap_or(kubeconfig_path()),
            )
            // Its instance name in Events and the Lease.
            .env("POD_NAME", &self.name)
            .env("RUST_LOG", &self.rust_log)
            .env_remove("SECRETGUARD_FAULT")
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("operator log"))
            .stderr(log);
        if let Some(point) = &self.fault {
            cmd.env("SECRETGUARD_FAULT", point);
        }
        (
            cmd,
            format!(
                "{}://127.0.0.1:{m}/metrics",
                if self.secure_metrics { "https" } else { "http" }
            ),
            format!("http://127.0.0.1:{h}"),
        )
    }
}

/// An operator binary running as a process of its own.
pub struct OperatorProcess {
    name: String,
    pid: u32,
    /// None for a process started for life.
    child: Option<Child>,
    log: PathBuf,
    metrics: String,
    health: String,
}

impl OperatorProcess {
    /// An operator process named `name` (its log file, its POD_NAME): by default the binary
    /// cargo built for this test, as the cluster admin, in OPERATOR_NAMESPACE, without
    /// leader election.
    pub fn builder(name: &str) -> OperatorBuilder {
        OperatorBuilder {
            name: name.into(),
            binary: env!("CARGO_BIN_EXE_secretguard").into(),
            namespace: OPERATOR_NAMESPACE.into(),
            kubeconfig: None,
            leader_elect: false,
            lease: None,
            workers: None,
            fault: None,
            alertmanager: None,
            json_logs: false,
            secure_metrics: false,
            rust_log: "info,secretguard=debug".into(),
            args: Vec::new(),
        }
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    /// The URL of its /metrics.
    pub fn metrics_url(&self) -> &str {
        &self.metrics
    }

    /// The base URL of its health endpoints (/healthz, /readyz).
    pub fn health_url(&self) -> &str {
        &self.health
    }

    pub fn log_path(&self) -> &Path {
        &self.log
    }

    /// What it has logged so far.
    pub fn read_log(&self) -> String {
        std::fs::read_to_string(&self.log).expect("read the operator log")
    }

    /// Whether /readyz answers 200 now.
    pub fn ready(&self) -> bool {
        http_ok(&format!("{}/readyz", self.health))
    }

    /// Wait until /readyz answers 200, or fail after DEADLINE.
    pub fn wait_ready(&self) -> Duration {
        self.wait_ready_within(DEADLINE)
    }

    /// Wait until /readyz answers 200, or fail after `deadline`; returns how long it took.
    pub fn wait_ready_within(&self, deadline: Duration) -> Duration {
        wait_http_ok(&format!("{}/readyz", self.health), deadline)
    }

    /// 1 if leading, 0 if standing by, None if not answering (secretguard_leader).
    pub async fn leader(&self) -> Option<i64> {
        let text = reqwest::get(&self.metrics).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix("secretguard_leader "))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Wait for the process to end by itself (it reached `what`), or fail after DEADLINE;
    /// returns the signal that ended it.
    pub fn wait_exit(&mut self, what: &str) -> Option<i32> {
        use std::os::unix::process::ExitStatusExt;
        let child = self.child.as_mut().expect("a process this test started");
        let start = Instant::now();
        loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                return status.signal();
            }
            assert!(
                start.elapsed() < DEADLINE,
                "the operator never reached {what}"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The value of one series of its /metrics (`name{labels}` as exposed), None if absent
    /// or not answering. Never call it on a stopped process: the request would hang.
    pub async fn metric(&self, series: &str) -> Option<f64> {
        let text = reqwest::get(&self.metrics).await.ok()?.text().await.ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    }

    /// Its identity in the leader Lease.
    pub fn identity(&self) -> String {
        format!("{}-{}", self.name, self.pid)
    }

    /// Send it `signal` (SIGTERM, SIGSTOP, SIGCONT...).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill has no preconditions; the pid is a child this test started.
        let sent = unsafe { libc::kill(self.pid as i32, signal) };
        assert_eq!(sent, 0, "kill({}, {signal})", self.pid);
    }

    /// Whether it is stopped (SIGSTOP): its state in /proc/<pid>/stat is T.
    pub fn stopped(&self) -> bool {
        std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .and_then(|stat| {
                let (_, after_name) = stat.rsplit_once(')')?;
                after_name.trim_start().chars().next()
            })
            == Some('T')
    }

    /// SIGKILL, and wait for it to be gone.
    pub fn kill(&mut self) {
        if let Some(child) = self.child.as_mut() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        if self.child.is_some() {
            self.kill();
            keep_if_failed(&self.log);
        }
    }
}

/// Wait until every replica is ready and exactly one leads; returns its index.
pub async fn wait_one_leader(replicas: &[OperatorProcess]) -> usize {
    super::wait_for("one leader, the others warm standbys", || async {
        let mut leaders = Vec::new();
        for (i, r) in replicas.iter().enumerate() {
            if !r.ready() {
                return None;
            }
            if r.leader().await? == 1 {
                leaders.push(i);
            }
        }
        (leaders.len() == 1).then(|| leaders[0])
    })
    .await
}
