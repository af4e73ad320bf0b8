//! The workers: take a unit of work off the queue, run it, and on failure retry it with
//! per-object exponential backoff. Also the leader's first pass and the periodic audit.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::triggers;
use crate::guard::context::{Context, Work};
use crate::guard::{reconcile, status};
use crate::metrics::{ErrorReason, QueueLane, Work as WorkLabel};
use crate::queue::Lane;

/// Everything a leader runs: the first pass over everything (ready once it is done), the
/// workers and the periodic audit. Never returns.
pub async fn run(ctx: &Arc<Context>, started: Instant) {
    triggers::startup_pass(ctx);
    let first_pass = async {
        while !ctx.idle() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        ctx.startup_done.send_replace(true);
        tracing::info!(
            elapsed_ms = started.elapsed().as_millis() as u64,
            "first audit done; ready"
        );
    };
    tracing::info!(
        elapsed_ms = started.elapsed().as_millis() as u64,
        guards = ctx.stores.guards.state().len(),
        guarded_secrets = ctx.stores.secrets.state().len(),
        restore_points = ctx.stores.restore_points.state().len(),
        "caches synced and leading; reconciling"
    );
    let workers = (0..ctx.config.workers.max(1)).map(|_| worker(ctx));
    let audits = async {
        let mut tick = tokio::time::interval(ctx.config.audit_interval);
        tick.tick().await;
        loop {
            tick.tick().await;
            triggers::audit(ctx);
        }
    };
    futures::future::join3(futures::future::join_all(workers), audits, first_pass).await;
}

async fn worker(ctx: &Arc<Context>) {
    loop {
        let work = ctx.queue.next().await;
        for lane in [Lane::Urgent, Lane::Background] {
            ctx.metrics
                .queue_depth
                .get_or_create(&QueueLane {
                    lane: lane.as_str().into(),
                })
                .set(ctx.queue.waiting_in(lane) as i64);
        }
        let started = Instant::now();
        let (kind, result) = match &work {
            Work::Target(key) => {
                let span = tracing::info_span!("reconcile", target = %key);
                (
                    "target",
                    tracing::Instrument::instrument(reconcile::reconcile_target(ctx, key), span)
                        .await,
                )
            }
            Work::Status(key) => {
                let span = tracing::info_span!("status", guard = %key);
                (
                    "status",
                    tracing::Instrument::instrument(status::write(ctx, key), span)
                        .await
                        .map(|()| None),
                )
            }
        };
        ctx.metrics
            .reconcile_duration
            .get_or_create(&WorkLabel { work: kind.into() })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(requeue) => {
                ctx.failures().remove(&work);
                if let Some(after) = requeue {
                    ctx.queue.add_after(work.clone(), after);
                }
            }
            Err(e) => {
                ctx.metrics
                    .reconcile_errors
                    .get_or_create(&ErrorReason {
                        reason: e.reason().into(),
                    })
                    .inc();
                let attempt = {
                    let mut failures = ctx.failures();
                    let n = failures.entry(work.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let delay = backoff(attempt);
                tracing::warn!(work = ?work, error = %e, reason = e.reason(), attempt, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                ctx.queue.add_after(work.clone(), delay);
            }
        }
        ctx.queue.done(&work);
        ctx.processed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Exponential backoff per object: 100 ms doubling to at most 60 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(60_000))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(11), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
