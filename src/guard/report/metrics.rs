//! Metrics for one reconcile: counters for what happened, per-object gauges for what is
//! wrong now (removed once it is not).

use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::cache::CachedSecret;
use crate::guard::context::Context;
use crate::guard::decide::{Action, TargetState};
use crate::guard::load::ObservedTarget;
use crate::guard::outcome::Executed;
use crate::guard::record::Recorded;
use crate::labels;
use crate::metrics::{Incident, Kind, Object, Restore};

pub fn export(
    ctx: &Context,
    target: &ObservedTarget,
    state: TargetState,
    executed: &Executed,
    recorded: &Recorded,
) {
    let (ns, guard) = (&target.guard.namespace, &target.guard.name);
    let kind = target.spec.kind().as_str();
    let metrics = &ctx.metrics;
    if let Some(before) = &recorded.previous_reporter {
        metrics.forget_object(&before.namespace, &before.name, kind, &target.key.name);
    }
    for (reason, _) in &recorded.new {
        metrics.count_incident(Incident {
            namespace: ns.clone(),
            guard: guard.clone(),
            kind: kind.into(),
            reason: reason.as_str().into(),
        });
    }
    let outcome = if recorded.restore_failing {
        Some("failed")
    } else if executed.did(&Action::RestoreIdentical) {
        Some("identical")
    } else if recorded.restored {
        Some("fresh")
    } else {
        None
    };
    if let Some(outcome) = outcome {
        metrics.count_restore(Restore {
            namespace: ns.clone(),
            guard: guard.clone(),
            kind: kind.into(),
            outcome: outcome.into(),
        });
    }
    if let Some(secs) = recorded.restore_seconds {
        metrics
            .restore_duration
            .get_or_create(&Kind { kind: kind.into() })
            .observe(secs);
    }
    let object = Object {
        namespace: ns.clone(),
        guard: guard.clone(),
        kind: kind.into(),
        name: target.key.name.clone(),
    };
    let flag = |family: &Family<Object, Gauge>, on: bool| {
        if on {
            family.get_or_create(&object).set(1);
        } else {
            family.remove(&object);
        }
    };
    flag(
        &metrics.object_missing,
        state.is_missing() && !recorded.restored,
    );
    flag(&metrics.restore_failing, recorded.restore_failing);
    flag(&metrics.token_invalid, state == TargetState::Invalidated);
    flag(
        &metrics.token_not_populated,
        state == TargetState::NotPopulated,
    );
    flag(&metrics.unprotected, state == TargetState::Unprotected);
    let now = k8s_openapi::jiff::Timestamp::now();
    match target
        .live
        .as_ref()
        .and_then(|s| last_used_if_unused_for_30_days(s, now))
    {
        Some(ts) => {
            metrics.token_last_used.get_or_create(&object).set(ts);
        }
        None => {
            metrics.token_last_used.remove(&object);
        }
    }
}

/// Seconds since the epoch of a token's last use (the apiserver's
/// kubernetes.io/legacy-token-last-used date, else its creation), when that is 30 days
/// before `now` or more: only then is it exported, as a token at risk of the legacy token
/// cleaner.
fn last_used_if_unused_for_30_days(
    secret: &CachedSecret,
    now: k8s_openapi::jiff::Timestamp,
) -> Option<f64> {
    let d = secret.detail.as_ref()?;
    if d.type_ != labels::TOKEN_TYPE {
        return None;
    }
    let last = match d.label(labels::LEGACY_TOKEN_LAST_USED) {
        Some(date) => date
            .parse::<k8s_openapi::jiff::civil::Date>()
            .ok()?
            .to_zoned(k8s_openapi::jiff::tz::TimeZone::UTC)
            .ok()?
            .timestamp(),
        None => d.created?,
    };
    let age = now.duration_since(last);
    (age.as_secs() >= 30 * 24 * 3600).then(|| last.as_second() as f64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
    use k8s_openapi::jiff::Timestamp;

    fn token(last_used: Option<&str>, created: i64) -> CachedSecret {
        CachedSecret::detailed(&token_secret(last_used, created))
    }

    fn token_secret(last_used: Option<&str>, created: i64) -> Secret {
        let mut s = Secret {
            type_: Some(labels::TOKEN_TYPE.into()),
            ..Default::default()
        };
        s.metadata.creation_timestamp = Some(Time(Timestamp::from_second(created).expect("ts")));
        s.metadata.labels =
            last_used.map(|d| [(labels::LEGACY_TOKEN_LAST_USED.to_owned(), d.to_owned())].into());
        s
    }

    #[test]
    fn a_token_is_at_risk_only_after_30_days_without_use() {
        let now: Timestamp = "2026-06-30T12:00:00Z".parse().expect("now");
        let day = 24 * 3600;
        let used_long_ago = token(Some("2026-05-01"), 0);
        let midnight: Timestamp = "2026-05-01T00:00:00Z".parse().expect("date");
        assert_eq!(
            last_used_if_unused_for_30_days(&used_long_ago, now),
            Some(midnight.as_second() as f64)
        );
        let used_lately = token(Some("2026-06-20"), 0);
        assert_eq!(last_used_if_unused_for_30_days(&used_lately, now), None);
        let never_used_old = token(None, now.as_second() - 31 * day);
        assert!(last_used_if_unused_for_30_days(&never_used_old, now).is_some());
        let never_used_new = token(None, now.as_second() - 29 * day);
        assert_eq!(last_used_if_unused_for_30_days(&never_used_new, now), None);
        let generic = CachedSecret::detailed(&Secret {
            type_: Some("Opaque".into()),
            ..token_secret(None, 0)
        });
        assert_eq!(last_used_if_unused_for_30_days(&generic, now), None);
    }
}
