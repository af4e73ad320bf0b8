//! Leader election on a coordination.k8s.io Lease in the operator namespace, the way
//! client-go does it: acquire when the Lease is free or expired, renew every retry period,
//! give up when renewals fail for longer than the renew deadline. Writes carry the Lease's
//! resourceVersion, so two candidates never both win a round.
//!
//! Fencing (security review B7): each attempt is cut off at the renew deadline, so a hung
//! request cannot stretch leadership; the `Fence` is open only until the start of the last
//! successful renewal plus the renew deadline, i.e. the lease duration minus a margin of
//! (lease duration - renew deadline), and no write leaves the process once it has shut;
//! another holder's Lease is judged expired by when this process saw it change
//! (client-go's observedTime), never by comparing its renewTime with the local clock; and
//! a leader that shuts down gives the Lease up, so a standby takes over at its next try.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;
use tokio::time::{Duration, Instant};

use crate::config::LeaderConfig;
use crate::transport::Fence;

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following(Option<String>),
}

/// Run the election forever. `leading` is true while this process holds the Lease, and
/// `fence` open while it may write. Returns only when leadership, once held, is lost
/// (renewals failed up to the deadline or someone else took the Lease); the fence is shut
/// by then.
pub async fn run(
    client: Client,
    cfg: LeaderConfig,
    leading: watch::Sender<bool>,
    fence: Fence,
) -> crate::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut observed = Observed::default();
    // When the last successful renewal started: leading since.
    let mut renewed: Option<Instant> = None;
    let mut following: Option<String> = None;
    loop {
        let started = Instant::now();
        let deadline = renewed.unwrap_or(started) + cfg.renew_deadline;
        if renewed.is_some() && started >= deadline {
            return step_down(&leading, &fence, "could not renew the Lease in time");
        }
        let attempt =
            tokio::time::timeout_at(deadline, try_acquire_or_renew(&api, &cfg, &mut observed))
                .await;
        match attempt {
            Ok(Ok(Attempt::Leading)) => {
                fence.open_until(started + cfg.renew_deadline);
                renewed = Some(started);
                if !*leading.borrow() {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became leader");
                    leading.send_replace(true);
                }
            }
            Ok(Ok(Attempt::Following(holder))) => {
                if renewed.is_some() {
                    tracing::error!(holder = ?holder, "another process took the Lease");
                    return step_down(&leading, &fence, "another process holds the Lease");
                }
                if holder != following {
                    tracing::info!(leader = ?holder, "standing by (caches warm)");
                    following = holder;
                }
            }
            Ok(Err(e)) => tracing::warn!(error = %e, "leader election attempt failed"),
            Err(_) => tracing::warn!(
                deadline_ms = cfg.renew_deadline.as_millis() as u64,
                "leader election attempt timed out"
            ),
        }
        let next = Instant::now() + cfg.retry_period;
        let renew_by = renewed.map(|at| at + cfg.renew_deadline);
        tokio::time::sleep_until(renew_by.map_or(next, |by| next.min(by))).await;
    }
}

fn step_down(leading: &watch::Sender<bool>, fence: &Fence, why: &str) -> crate::Result<()> {
    fence.close();
    leading.send_replace(false);
    tracing::error!(why, "lost leadership: writing nothing more, exiting");
    Err(crate::Error::LostLeadership)
}

/// Give the Lease up (client-go's ReleaseOnCancel): no holder and a duration of 1 s, so a
/// standby takes it at its next try instead of after the lease duration. Only if this
/// process still holds it (the write carries the resourceVersion read). The caller has
/// stopped writing first.
pub async fn release(client: Client, cfg: &LeaderConfig) -> kube::Result<bool> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let Some(mut lease) = api.get_opt(&cfg.lease_name).await? else {
        return Ok(false);
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    if spec.holder_identity.as_deref() != Some(cfg.identity.as_str()) {
        return Ok(false);
    }
    let now = MicroTime(Timestamp::now());
    spec.holder_identity = None;
    spec.lease_duration_seconds = Some(1);
    spec.acquire_time = Some(now.clone());
    spec.renew_time = Some(now);
    api.replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await?;
    Ok(true)
}

/// The Lease as this process last saw it, and when it first saw it so (client-go's
/// observedTime). Another holder's Lease expires a lease duration after this process last
/// saw it change: two clocks are never compared.
#[derive(Debug, Default)]
struct Observed {
    spec: Option<LeaseSpec>,
    at: Option<Instant>,
}

impl Observed {
    fn see(&mut self, spec: &LeaseSpec, now: Instant) {
        if self.spec.as_ref() != Some(spec) {
            self.spec = Some(spec.clone());
            self.at = Some(now);
        }
    }

    /// Whether a candidate may take the Lease now: nobody holds it, or it has not changed
    /// for its whole duration.
    fn free(&self, now: Instant) -> bool {
        let Some(spec) = &self.spec else {
            return true;
        };
        let held = spec
            .holder_identity
            .as_deref()
            .is_some_and(|h| !h.is_empty());
        let duration = Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64);
        !held || self.at.is_none_or(|at| at + duration <= now)
    }
}

async fn try_acquire_or_renew(
    api: &Api<Lease>,
    cfg: &LeaderConfig,
    observed: &mut Observed,
) -> kube::Result<Attempt> {
    let now = MicroTime(Timestamp::now());
    let duration_s = cfg.lease_duration.as_secs().max(1) as i32;
    let Some(mut lease) = api.get_opt(&cfg.lease_name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(cfg.lease_name.clone()),
                namespace: Some(cfg.namespace.clone()),
                ..Default::default()
            },
            spec: Some(LeaseSpec {
                holder_identity: Some(cfg.identity.clone()),
                lease_duration_seconds: Some(duration_s),
                acquire_time: Some(now.clone()),
                renew_time: Some(now),
                lease_transitions: Some(0),
                ..Default::default()
            }),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(Attempt::Leading),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(None)),
            Err(e) => Err(e),
        };
    };
    let spec = lease.spec.get_or_insert_with(Default::default);
    observed.see(spec, Instant::now());
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(cfg.identity.as_str());
    if !mine {
        if !observed.free(Instant::now()) {
            return Ok(Attempt::Following(holder));
        }
        spec.acquire_time = Some(now.clone());
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(cfg.identity.clone());
    }
    spec.renew_time = Some(now);
    spec.lease_duration_seconds = Some(duration_s);
    // replace carries metadata.resourceVersion: a concurrent winner makes this a 409.
    match api
        .replace(&cfg.lease_name, &PostParams::default(), &lease)
        .await
    {
        Ok(_) => Ok(Attempt::Leading),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(Attempt::Following(holder)),
        Err(e) => Err(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held_by(holder: &str, renewed: &str) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(renewed.parse().expect("timestamp"))),
            ..Default::default()
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_holder_that_keeps_renewing_is_never_expired_whatever_its_clock_says() {
        let mut seen = Observed::default();
        // The holder's clock is a day behind ours: each renewal still changes the Lease.
        for renewal in [
            "2020-01-01T00:00:01Z",
            "2020-01-01T00:00:03Z",
            "2020-01-01T00:00:05Z",
        ] {
            seen.see(&held_by("other", renewal), Instant::now());
            tokio::time::advance(Duration::from_secs(10)).await;
            assert!(!seen.free(Instant::now()), "renewed 10 s ago, lasts 15 s");
        }
        // It stops renewing: free a lease duration after its last change was seen.
        seen.see(&held_by("other", "2020-01-01T00:00:05Z"), Instant::now());
        assert!(!seen.free(Instant::now()));
        tokio::time::advance(Duration::from_secs(5)).await;
        assert!(seen.free(Instant::now()));
    }

    #[tokio::test(start_paused = true)]
    async fn a_lease_seen_for_the_first_time_runs_a_whole_duration_from_then_unless_nobody_holds_it()
     {
        let future = "2999-01-01T00:00:00Z";
        let mut seen = Observed::default();
        seen.see(&held_by("other", future), Instant::now());
        tokio::time::advance(Duration::from_secs(14)).await;
        assert!(!seen.free(Instant::now()));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(
            seen.free(Instant::now()),
            "a renewTime in the future changes nothing"
        );

        let released = LeaseSpec {
            holder_identity: None,
            lease_duration_seconds: Some(1),
            ..Default::default()
        };
        let mut seen = Observed::default();
        seen.see(&released, Instant::now());
        assert!(seen.free(Instant::now()), "given up: taken at once");
    }
}
