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
use crate::transport::Clients;

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

    /// As `with_metrics`, with the clients made beforehand (src/transport.rs).
    pub fn with_clients(clients: Clients, config: Config, metrics: Arc<Metrics>) -> Self {
        let (ctx, writers) = Context::with_clients(clients, config, metrics);
        Controller {
            ctx: Arc::new(ctx),
            writers,
        }
    }

    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    /// Run until `shutdown` resolves, or until leadership, once held, is lost (an error:
    /// the process must stop writing at once). On shutdown the workers stop, then a leader
    /// gives the Lease up, so a standby leads within its retry period.
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
                Some(cfg) => {
                    let (leading, fence) = (ctx.leading.clone(), ctx.fence.clone());
                    crate::leader::run(ctx.client.clone(), cfg, leading, fence).await
                }
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
        release(&ctx).await;
        Ok(())
    }
}

/// Stop writing, and give the Lease up if this process leads (bounded by the renew
/// deadline: a shutdown never hangs on it).
async fn release(ctx: &Context) {
    let Some(cfg) = &ctx.config.leader else {
        return;
    };
    ctx.fence.close();
    if !ctx.leading.send_replace(false) {
        return;
    }
    ctx.metrics.leader.set(0);
    let released = tokio::time::timeout(
        cfg.renew_deadline,
        crate::leader::release(ctx.client.clone(), cfg),
    )
    .await;
    match released {
        Ok(Ok(true)) => tracing::info!(lease = %cfg.lease_name, "released the Lease"),
        Ok(Ok(false)) => tracing::info!(lease = %cfg.lease_name, "the Lease was no longer ours"),
        Ok(Err(e)) => tracing::warn!(error = %e, "could not release the Lease"),
        Err(_) => tracing::warn!("could not release the Lease in time"),
    }
}
