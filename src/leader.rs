//! Leader election on a coordination.k8s.io Lease in the operator namespace, the way
//! client-go does it: acquire when the Lease is free or expired, renew every retry period,
//! give up when renewals fail for longer than the renew deadline. Writes carry the Lease's
//! resourceVersion, so two candidates never both win a round.

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};
use tokio::sync::watch;

use crate::config::LeaderConfig;

/// What one attempt found.
#[derive(Debug, PartialEq, Eq)]
enum Attempt {
    Leading,
    Following(Option<String>),
}

/// Run the election forever. `leading` is true while this process holds the Lease. Returns
/// only when leadership, once held, is lost (renewals failed past the deadline or someone
/// else took the Lease): the caller must stop writing at once.
pub async fn run(
    client: Client,
    cfg: LeaderConfig,
    leading: watch::Sender<bool>,
) -> crate::Result<()> {
    let api: Api<Lease> = Api::namespaced(client, &cfg.namespace);
    let mut last_renewal: Option<tokio::time::Instant> = None;
    let mut following: Option<String> = None;
    loop {
        match try_acquire_or_renew(&api, &cfg).await {
            Ok(Attempt::Leading) => {
                if !*leading.borrow() {
                    tracing::info!(identity = %cfg.identity, lease = %cfg.lease_name, "became leader");
                    leading.send_replace(true);
                }
                last_renewal = Some(tokio::time::Instant::now());
            }
            Ok(Attempt::Following(holder)) => {
                if *leading.borrow() {
                    tracing::error!(holder = ?holder, "another process took the Lease: stepping down");
                    leading.send_replace(false);
                    return Err(crate::Error::LostLeadership);
                }
                if holder != following {
                    tracing::info!(leader = ?holder, "standing by (caches warm)");
                    following = holder;
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "leader election attempt failed");
                if let Some(at) = last_renewal
                    && at.elapsed() > cfg.renew_deadline
                {
                    tracing::error!(
                        "could not renew the Lease within the renew deadline: stepping down"
                    );
                    leading.send_replace(false);
                    return Err(crate::Error::LostLeadership);
                }
            }
        }
        tokio::time::sleep(cfg.retry_period).await;
    }
}

async fn try_acquire_or_renew(api: &Api<Lease>, cfg: &LeaderConfig) -> kube::Result<Attempt> {
    let now = Timestamp::now();
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
                acquire_time: Some(MicroTime(now)),
                renew_time: Some(MicroTime(now)),
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
    let holder = spec.holder_identity.clone().filter(|h| !h.is_empty());
    let mine = holder.as_deref() == Some(cfg.identity.as_str());
    if !mine {
        let valid_for =
            SignedDuration::from_secs(spec.lease_duration_seconds.unwrap_or(duration_s).into());
        let expired = spec
            .renew_time
            .as_ref()
            .is_none_or(|t| t.0 + valid_for < now);
        if holder.is_some() && !expired {
            return Ok(Attempt::Following(holder));
        }
        spec.acquire_time = Some(MicroTime(now));
        spec.lease_transitions = Some(spec.lease_transitions.unwrap_or(0) + 1);
        spec.holder_identity = Some(cfg.identity.clone());
    }
    spec.renew_time = Some(MicroTime(now));
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
