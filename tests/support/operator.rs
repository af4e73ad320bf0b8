//! The operator inside the test process, against the local control plane: started once per
//! test binary, on a runtime of its own, so tests can read its context (caches, counters)
//! and trigger an audit. Tests that kill it, run two, or read what it serves start the
//! binary instead (`OperatorProcess`).

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use secretguard::controller::{Context, Controller};

use super::{DEADLINE, OPERATOR_NAMESPACE, admin_client, prepare_operator, shared_log, wait_for};

/// The operator under test, with its log in target/test-logs/<test binary>/operator.log
/// (a failed test keeps the part written while it ran). Returns its context once its
/// caches have synced.
pub fn operator() -> Arc<Context> {
    static CTX: OnceLock<Arc<Context>> = OnceLock::new();
    CTX.get_or_init(|| {
        prepare_operator();
        let (_, file) = shared_log("operator.log");
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
        restore_loop_limit: 5,
        restore_loop_window: Duration::from_secs(600),
        migration_rate: 10.0,
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
