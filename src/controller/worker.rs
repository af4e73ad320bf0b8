//! The workers: take a unit of work off the queue, run it, and on failure (a panic
//! included) retry it with per-object exponential backoff, or after the apiserver's
//! Retry-After. They take work only while this process may write (the fence). Also the
//! leader's first pass and the periodic audit.

use std::collections::HashSet;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::FutureExt;
use tracing::Instrument;

use super::triggers;
use crate::error::ActionError;
use crate::guard::context::{Context, Work};
use crate::guard::{reconcile, status};
use crate::metrics::{ErrorReason, QueueLane, Work as WorkLabel};
use crate::queue::Lane;
use crate::{Error, Result, transport};

/// Everything a leader runs: the first pass over everything (ready once it is done), the
/// workers and the periodic audit. Never returns.
pub async fn run(ctx: &Arc<Context>, started: Instant) {
    let first = FirstPass::default();
    triggers::startup_pass(ctx, |work| first.expect(work));
    // Every target gets a record in the first pass: room made for all at once, not by
    // doubling the table as they come (each doubling holds the old table and the new one:
    // at 10,000 targets, that was the peak of the process).
    let targets = first.pending().len();
    ctx.records().targets.reserve(targets);
    let first_pass = async {
        while !first.done() {
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
    let workers = (0..ctx.config.workers.max(1)).map(|_| worker(ctx, &first));
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

/// The leader's first pass: done once every guarded object it queued has been reconciled
/// once, whatever the result. Not "once the queue is empty": work that keeps coming back
/// (an object changed over and over, a write that fails and is retried) must not keep a
/// freshly started operator unready. Guard statuses follow on their own (debounced).
///
/// It holds a 64-bit hash of each, not the keys: the queue holds them already, and at
/// 10,000 guarded Secrets another copy of every key was 1.5 MiB at the process's peak. A
/// collision could only count one object as run before it is (odds of 1 in 2^64/n).
#[derive(Default)]
struct FirstPass(Mutex<HashSet<u64>>);

impl FirstPass {
    /// Queued by the first pass: wait for it (targets only; statuses follow on their own).
    fn expect(&self, work: &Work) {
        if matches!(work, Work::Target(_)) {
            self.pending().insert(Self::hash(work));
        }
    }

    fn hash(work: &Work) -> u64 {
        use std::hash::BuildHasher;
        // Fixed keys: the same work hashes the same in `new` and in `ran`.
        std::hash::BuildHasherDefault::<std::hash::DefaultHasher>::default().hash_one(work)
    }

    fn pending(&self) -> std::sync::MutexGuard<'_, HashSet<u64>> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn ran(&self, work: &Work) {
        self.pending().remove(&Self::hash(work));
    }

    fn done(&self) -> bool {
        self.pending().is_empty()
    }
}

async fn worker(ctx: &Arc<Context>, first: &FirstPass) {
    loop {
        // No reconcile starts once the leader Lease may have passed (the transport keeps
        // in the writes of one already running).
        ctx.fence.opened().await;
        let work = ctx.queue.next().await;
        for lane in [Lane::Urgent, Lane::Background] {
            ctx.metrics
                .queue_depth
                .get_or_create(&QueueLane {
                    lane: lane.as_str().into(),
                })
                .set(ctx.queue.waiting_in(lane) as i64);
        }
        match &work {
            Work::Target(key) => {
                let span = tracing::info_span!("reconcile", target = %key);
                let run = reconcile::reconcile_target(ctx, key);
                process(ctx, &work, "target", run.instrument(span)).await;
            }
            Work::Status(key) => {
                let span = tracing::info_span!("status", guard = %key);
                let run = status::write(ctx, key).map(|r| r.map(|()| None));
                process(ctx, &work, "status", run.instrument(span)).await;
            }
        }
        ctx.queue.done(&work);
        first.ran(&work);
        ctx.processed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Run one unit of work and deal with its result: queue it again when it asks to, or, if
/// it failed, count the failure and retry it with backoff. A panic inside it is such a
/// failure (logged, counted as reason `Panic`, retried): it never takes the worker, or
/// the process, down.
async fn process<F>(ctx: &Context, work: &Work, kind: &'static str, run: F)
where
    F: Future<Output = Result<Option<Duration>>>,
{
    let started = Instant::now();
    let result = AssertUnwindSafe(run)
        .catch_unwind()
        .await
        .unwrap_or_else(|panic| {
            let what = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(work = ?work, panic = %what, "reconcile panicked; retrying with backoff");
            Err(Error::Panicked(what))
        });
    ctx.metrics
        .reconcile_duration
        .get_or_create(&WorkLabel { work: kind.into() })
        .observe(started.elapsed().as_secs_f64());
    match result {
        Ok(requeue) => {
            ctx.failures().remove(work);
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
            let delay = retry_delay(attempt, &e);
            tracing::warn!(work = ?work, error = %e, reason = e.reason(), attempt, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
            ctx.queue.add_after(work.clone(), delay);
        }
    }
}

/// The wait before retrying a failed unit of work: its backoff, or longer if the apiserver
/// asked (429 Retry-After), up to the backoff's cap.
fn retry_delay(attempt: u32, e: &Error) -> Duration {
    let asked = match e {
        Error::Kube(e)
        | Error::Action {
            source: ActionError::Kube(e),
            ..
        } => transport::retry_after(e),
        _ => None,
    };
    backoff(attempt).max(asked.unwrap_or_default().min(MAX_BACKOFF))
}

/// The longest wait before a retry.
const MAX_BACKOFF: Duration = Duration::from_secs(60);

/// Exponential backoff per object: 100 ms doubling to at most 60 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(ms).min(MAX_BACKOFF)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::fixtures;
    use crate::object_key::ObjectKey;

    fn too_many_requests(retry_after: u32) -> Error {
        let status = kube::core::response::Status::failure("slow down", "TooManyRequests")
            .with_code(429)
            .with_details(kube::core::response::StatusDetails {
                name: String::new(),
                group: String::new(),
                kind: String::new(),
                uid: String::new(),
                causes: Vec::new(),
                retry_after_seconds: retry_after,
            });
        Error::Action {
            action: "RestoreIdentical",
            source: ActionError::Kube(kube::Error::Api(status.boxed())),
        }
    }

    /// Let delayed adds whose time has come reach the queue (paused clock).
    async fn after(delay: Duration) {
        tokio::time::sleep(delay).await;
        for _ in 0..10 {
            tokio::task::yield_now().await;
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_panicking_unit_of_work_is_logged_counted_and_retried_with_backoff_and_the_worker_goes_on()
     {
        let (ctx, _writers, mut server) = fixtures::context();
        let work = Work::Target(ObjectKey::new("ns", "db"));
        process(&ctx, &work, "target", async {
            if ctx.processed.load(Ordering::Relaxed) == 0 {
                panic!("a bug in one reconcile");
            }
            Ok(None)
        })
        .await;
        assert_eq!(ctx.failures().get(&work), Some(&1));
        assert!(
            ctx.metrics
                .encode()
                .contains(r#"secretguard_reconcile_errors_total{reason="Panic"} 1"#),
            "{}",
            ctx.metrics.encode()
        );
        after(Duration::from_millis(99)).await;
        assert!(ctx.queue.is_empty(), "not before its backoff");
        after(Duration::from_millis(1)).await;
        assert_eq!(ctx.queue.len(), 1, "retried after 100 ms");

        ctx.processed.fetch_add(1, Ordering::Relaxed);
        process(&ctx, &work, "target", async { Ok(None) }).await;
        assert_eq!(ctx.failing(), 0, "the retry went through");
        server.assert_nothing_else();
    }

    #[tokio::test(start_paused = true)]
    async fn a_429_is_retried_no_sooner_than_its_retry_after() {
        let (ctx, _writers, _server) = fixtures::context();
        let work = Work::Target(ObjectKey::new("ns", "db"));
        process(&ctx, &work, "target", async { Err(too_many_requests(7)) }).await;
        after(Duration::from_millis(6_900)).await;
        assert!(ctx.queue.is_empty(), "the apiserver asked for 7 s");
        after(Duration::from_millis(100)).await;
        assert_eq!(ctx.queue.len(), 1);
    }

    #[test]
    fn the_first_pass_is_done_once_each_of_its_units_ran_however_often_they_come_back() {
        let key = |n: &str| Work::Target(crate::object_key::ObjectKey::new("ns", n));
        let status = Work::Status(crate::object_key::ObjectKey::new("ns", "g"));
        let first = FirstPass::default();
        for work in [key("a"), key("b"), key("a"), status] {
            first.expect(&work);
        }
        assert!(!first.done());
        for _ in 0..3 {
            first.ran(&key("a")); // queued again and again: counts once
        }
        first.ran(&key("other"));
        assert!(!first.done(), "b has not run yet");
        first.ran(&key("b"));
        assert!(first.done());
        assert!(FirstPass::default().done(), "nothing to do: ready at once");
    }

    #[test]
    fn retry_after_lengthens_the_backoff_never_shortens_it_and_is_capped() {
        assert_eq!(
            retry_delay(1, &too_many_requests(7)),
            Duration::from_secs(7)
        );
        assert_eq!(
            retry_delay(10, &too_many_requests(7)),
            backoff(10),
            "the backoff is longer already"
        );
        assert_eq!(
            retry_delay(1, &too_many_requests(3600)),
            MAX_BACKOFF,
            "a Retry-After of an hour parks no object for an hour"
        );
        assert_eq!(retry_delay(3, &Error::Panicked("x".into())), backoff(3));
    }

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(11), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }
}
