//! The runtime around the reconciles: watches fill the caches and trigger work; once every
//! cache has synced and this process leads, workers reconcile one guarded Secret (or one
//! guard's status) at a time and a periodic audit re-checks everything. A standby keeps
//! its caches warm and writes nothing.

pub mod selectors;
pub mod triggers;
pub mod watches;
pub mod worker;

use std::sync::Arc;
use std::time::Instant;

use kube::Client;

use crate::metrics::Metrics;

pub use crate::config::Config;
pub use crate::guard::context::Context;
use crate::guard::context::StoreWriters;
pub use triggers::audit;

/// A controller whose context can be inspected while it runs (tests, benchmarks).
pub struct Controller {
    ctx: Arc<Context>,
    writers: StoreWriters,
}

impl Controller {
    pub fn new(client: Client, config: Config) -> Self {
        Controller::with_metrics(client, config, Arc::new(Metrics::new()))
    }

    /// As `new`, with metrics made beforehand (see `throttle`).
    pub fn with_metrics(client: Client, config: Config, metrics: Arc<Metrics>) -> Self {
        let (ctx, writers) = Context::with_metrics(client, config, metrics);
        Controller {
            ctx: Arc::new(ctx),
            writers,
        }
    }

    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    /// Run until `shutdown` resolves, or until leadership, once held, is lost (an error:
    /// the process must stop writing at once).
    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> crate::Result<()> {
        let Controller { ctx, writers } = self;
        let started = Instant::now();
        let watches = watches::run(&ctx, writers);
        let work = async {
            watches::wait_synced(&ctx.stores).await;
            ctx.synced.send_replace(true);
            // A standby keeps its caches warm and writes nothing until it leads.
            let _ = ctx.leading.subscribe().wait_for(|l| *l).await;
            ctx.metrics.leader.set(1);
            worker::run(&ctx, started).await;
        };
        let election = async {
            match ctx.config.leader.clone() {
                Some(cfg) => crate::leader::run(ctx.client.clone(), cfg, ctx.leading.clone()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = watches => {},
            _ = work => {},
            lost = election => {
                ctx.metrics.leader.set(0);
                return lost;
            }
            _ = shutdown => tracing::info!("shutting down"),
        }
        Ok(())
    }
}
