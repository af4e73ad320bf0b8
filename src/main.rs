//! `secretguard`: CLI and wiring only.

use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser, Subcommand};
use secretguard::metrics::Metrics;
use secretguard::throttle::ThrottleLayer;
use secretguard::transport::{Clients, Fence};
use secretguard::{Error, Result, api, controller, http, telemetry};

#[derive(Parser, Debug)]
#[command(
    name = "secretguard",
    version = concat!(env!("CARGO_PKG_VERSION"), " (", env!("SECRETGUARD_REVISION"), ")"),
    about = "Guards critical Kubernetes Secrets and ServiceAccount tokens"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the controller. A flag given twice takes its last value (the chart's extraArgs
    /// come after its own flags).
    #[command(args_override_self = true)]
    Run(Box<RunArgs>),
    /// Print the CustomResourceDefinitions as YAML.
    Crd,
}

#[derive(clap::Args, Debug)]
struct RunArgs {
    /// Namespace of the operator: restore points and the leader Lease live here.
    #[arg(
        long,
        env = "SECRETGUARD_NAMESPACE",
        default_value = "secretguard-system"
    )]
    namespace: String,

    /// Log format.
    #[arg(long, env = "SECRETGUARD_LOG_FORMAT", value_enum, default_value_t)]
    log_format: telemetry::LogFormat,

    /// How often every guard is re-checked from the caches, to catch what watches missed.
    #[arg(long, env = "SECRETGUARD_AUDIT_INTERVAL", default_value = "5m", value_parser = humantime::parse_duration)]
    audit_interval: Duration,

    /// A token Secret still empty this long after creation is reported TokenNotPopulated.
    #[arg(long, env = "SECRETGUARD_TOKEN_POPULATE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    token_populate_timeout: Duration,

    /// How long restore points of a deleted namespace are kept before they are dropped.
    #[arg(long, env = "SECRETGUARD_RESTORE_POINT_RETENTION", default_value = "24h", value_parser = humantime::parse_duration)]
    restore_point_retention: Duration,

    /// Where /metrics is served.
    #[arg(
        long,
        env = "SECRETGUARD_METRICS_BIND_ADDRESS",
        default_value = "0.0.0.0:8080"
    )]
    metrics_bind_address: std::net::SocketAddr,

    /// Serve /metrics over HTTPS, and only to bearer tokens allowed `get` on the
    /// non-resource URL /metrics (checked with a TokenReview and a SubjectAccessReview,
    /// cached briefly). false: plain HTTP, open to whoever reaches the port.
    #[arg(long, env = "SECRETGUARD_METRICS_SECURE", default_value_t = true, action = clap::ArgAction::Set)]
    metrics_secure: bool,

    /// Directory with tls.crt and tls.key for /metrics (a mounted kubernetes.io/tls
    /// Secret); read at start. Not given: a self-signed certificate made at start.
    #[arg(long, env = "SECRETGUARD_METRICS_CERT_DIR")]
    metrics_cert_dir: Option<std::path::PathBuf>,

    /// Where /healthz and /readyz are served.
    #[arg(
        long,
        env = "SECRETGUARD_HEALTH_BIND_ADDRESS",
        default_value = "0.0.0.0:8081"
    )]
    health_bind_address: std::net::SocketAddr,

    /// Alertmanager to push alerts to (base URL, e.g. http://alertmanager:9093); repeatable.
    #[arg(
        long = "alertmanager-url",
        env = "SECRETGUARD_ALERTMANAGER_URLS",
        value_delimiter = ','
    )]
    alertmanager_urls: Vec<String>,

    /// runbook_url of pushed alerts is <this><AlertName>.md.
    #[arg(long, env = "SECRETGUARD_RUNBOOK_BASE_URL", default_value = secretguard::alerts::DEFAULT_RUNBOOK_BASE)]
    runbook_base_url: String,

    /// Elect a leader among replicas on a Lease in --namespace; only the leader writes.
    #[arg(long, env = "SECRETGUARD_LEADER_ELECT", default_value_t = true, action = clap::ArgAction::Set)]
    leader_elect: bool,

    /// Name of the leader Lease.
    #[arg(
        long,
        env = "SECRETGUARD_LEADER_ELECTION_ID",
        default_value = "secretguard-leader"
    )]
    leader_election_id: String,

    /// How long the Lease is valid after a renewal: the longest a failover can take.
    #[arg(long, env = "SECRETGUARD_LEADER_ELECTION_LEASE_DURATION", default_value = "15s", value_parser = humantime::parse_duration)]
    leader_election_lease_duration: Duration,

    /// A leader that cannot renew for this long steps down (exits).
    #[arg(long, env = "SECRETGUARD_LEADER_ELECTION_RENEW_DEADLINE", default_value = "10s", value_parser = humantime::parse_duration)]
    leader_election_renew_deadline: Duration,

    /// How often candidates try to acquire, and the leader renews.
    #[arg(long, env = "SECRETGUARD_LEADER_ELECTION_RETRY_PERIOD", default_value = "2s", value_parser = humantime::parse_duration)]
    leader_election_retry_period: Duration,

    /// Guarded objects reconciled concurrently.
    #[arg(long, env = "SECRETGUARD_WORKERS", default_value_t = 8)]
    workers: usize,

    /// Restores of one object allowed within --restore-loop-window; one more stops its
    /// restores (RestoreLoop: Event, metric, alert) until a guard is told to resume.
    #[arg(long, env = "SECRETGUARD_RESTORE_LOOP_LIMIT", default_value_t = 5)]
    restore_loop_limit: usize,

    /// The window of --restore-loop-limit.
    #[arg(long, env = "SECRETGUARD_RESTORE_LOOP_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    restore_loop_window: Duration,

    /// Requests a second to the apiserver, at most, after a burst (0: no limit). Restores
    /// are served before the audit and other background work.
    #[arg(long, env = "SECRETGUARD_API_QPS", default_value_t = 200.0)]
    api_qps: f64,

    /// Requests allowed at once above --api-qps.
    #[arg(long, env = "SECRETGUARD_API_BURST", default_value_t = 400)]
    api_burst: u32,

    /// Restore points of an earlier format (after an upgrade) rewritten in the current one
    /// a second, at most: a GET and a write each, in the background.
    #[arg(long, env = "SECRETGUARD_MIGRATION_RATE", default_value_t = 10.0)]
    migration_rate: f64,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    fixed_mmap_threshold();
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Crd => print_crds(),
        Command::Run(args) => run(*args).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("secretguard: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

/// glibc raises its mmap threshold to the size of each large block freed (up to 32 MiB):
/// once the caches have filled, the hash tables they outgrew are freed, and the blocks
/// that follow come from the heap, whose freed space is not given back. A fixed threshold
/// keeps every block of 128 KiB or more in a mapping of its own, unmapped when freed: at
/// 10,000 guarded Secrets, 3.5 MiB less resident memory (BENCHMARKS.md).
fn fixed_mmap_threshold() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; any value is valid to pass.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 128 * 1024);
    }
}

fn print_crds() -> Result<()> {
    print!("{}", api::crds_yaml().map_err(Error::Yaml)?);
    Ok(())
}

async fn run(args: RunArgs) -> Result<()> {
    if args.leader_elect
        && args.leader_election_renew_deadline >= args.leader_election_lease_duration
    {
        // The fence closes at the renew deadline; a standby may lead at the lease duration.
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--leader-election-renew-deadline must be shorter than --leader-election-lease-duration",
            )
            .exit();
    }
    telemetry::init(args.log_format)?;
    let metrics = Arc::new(Metrics::new());
    let kube_config = kube::Config::infer().await.map_err(Error::Config)?;
    // One request budget for both clients; without leader election nothing fences writes.
    let throttle = ThrottleLayer::new(args.api_qps, args.api_burst, metrics.api.clone());
    let fence = if args.leader_elect {
        Fence::closed()
    } else {
        Fence::unfenced()
    };
    let clients = Clients::build(kube_config, &throttle, fence)?;
    let client = clients.requests.clone();
    let version = client.apiserver_version().await?;
    tracing::info!(
        apiserver = %version.git_version,
        namespace = %args.namespace,
        version = env!("CARGO_PKG_VERSION"),
        revision = env!("SECRETGUARD_REVISION"),
        "connected"
    );
    let instance = instance_name();
    let leader = args
        .leader_elect
        .then(|| secretguard::config::LeaderConfig {
            namespace: args.namespace.clone(),
            lease_name: args.leader_election_id.clone(),
            // Unique even for two processes on one host.
            identity: format!("{instance}-{}", std::process::id()),
            lease_duration: args.leader_election_lease_duration,
            renew_deadline: args.leader_election_renew_deadline,
            retry_period: args.leader_election_retry_period,
        });
    let config = secretguard::config::Config {
        leader,
        operator_namespace: args.namespace,
        audit_interval: args.audit_interval,
        populate_deadline: args.token_populate_timeout,
        workers: args.workers,
        restore_point_retention: args.restore_point_retention,
        restore_loop_limit: args.restore_loop_limit,
        restore_loop_window: args.restore_loop_window,
        migration_rate: args.migration_rate,
        alertmanager_urls: args.alertmanager_urls,
        runbook_base_url: args.runbook_base_url,
        instance,
    };
    let controller = controller::Controller::with_clients(clients, config, metrics);
    let ctx = controller.context();
    let metrics = serve_metrics(
        args.metrics_bind_address,
        args.metrics_secure,
        args.metrics_cert_dir.as_deref(),
        client,
        ctx.clone(),
    );
    let health = http::serve(args.health_bind_address, http::health_router(ctx));
    tokio::select! {
        r = controller.run(shutdown_signal()) => r,
        r = metrics => r.map_err(|e| Error::Http(args.metrics_bind_address, e)),
        r = health => r.map_err(|e| Error::Http(args.health_bind_address, e)),
    }
}

/// /metrics: `secure`, over HTTPS (certificate from `cert_dir`, else self-signed) and for
/// allowed bearer tokens only; else plain and open.
async fn serve_metrics(
    addr: std::net::SocketAddr,
    secure: bool,
    cert_dir: Option<&std::path::Path>,
    client: kube::Client,
    ctx: std::sync::Arc<secretguard::guard::context::Context>,
) -> std::io::Result<()> {
    if !secure {
        tracing::warn!("/metrics is served over plain HTTP to anyone (--metrics-secure=false)");
        return http::serve(addr, http::metrics_router(ctx)).await;
    };
    let tls = match cert_dir {
        Some(dir) => http::tls::from_dir(dir)?,
        None => http::tls::self_signed(&["localhost".to_owned(), instance_name()])?,
    };
    let auth = std::sync::Arc::new(http::auth::MetricsAuth::new(client));
    http::serve_tls(addr, http::secure_metrics_router(ctx, auth), tls).await
}

/// This process, as named in Events, the Lease and its certificate.
fn instance_name() -> String {
    std::env::var("POD_NAME")
        .or_else(|_| std::env::var("HOSTNAME"))
        .unwrap_or_else(|_| "secretguard".into())
}

/// Resolves on SIGTERM or Ctrl-C.
async fn shutdown_signal() {
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term => {},
    }
}
