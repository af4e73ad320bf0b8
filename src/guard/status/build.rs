//! A guard's status, built from what the operator remembers about each target. Pure:
//! the same inputs build the same status, so an unchanged status is never written again.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};

use crate::api::v1alpha1::{SecretGuard, SecretGuardStatus, TargetStatus};
use crate::guard::decide::TargetState;
use crate::guard::spec::TargetSpec;
use crate::guard::state::{GuardRecord, TargetRecord};
use crate::object_key::ObjectKey;

/// Targets listed one by one in status up to this many; beyond, only unhealthy ones.
pub const LIST_ALL_TARGETS_UP_TO: usize = 20;

/// Unhealthy targets listed at most, so a status stays small whatever a selector matches
/// (security review B16); the Degraded condition counts them all.
pub const LIST_AT_MOST: usize = 50;

fn condition(
    type_: &str,
    status: bool,
    reason: &str,
    message: String,
    generation: Option<i64>,
    now: &Time,
    old: Option<&SecretGuardStatus>,
) -> Condition {
    let status = if status { "True" } else { "False" }.to_owned();
    let previous = old.and_then(|o| o.conditions.iter().find(|c| c.type_ == type_));
    let last_transition_time = match previous {
        Some(p) if p.status == status => p.last_transition_time.clone(),
        _ => now.clone(),
    };
    Condition {
        type_: type_.into(),
        status,
        reason: reason.into(),
        message,
        observed_generation: generation,
        last_transition_time,
    }
}

/// Build the status of a guard. Pure.
pub fn build(
    guard: &SecretGuard,
    targets: &[(ObjectKey, TargetSpec)],
    records: &HashMap<ObjectKey, TargetRecord>,
    record: &GuardRecord,
    restores: i64,
    now: &Time,
) -> SecretGuardStatus {
    let old = guard.status.as_ref();
    let generation = guard.metadata.generation;
    let states: Vec<(&ObjectKey, &TargetSpec, TargetState)> = targets
        .iter()
        .map(|(k, spec)| {
            let owned = records
                .get(k)
                .filter(|r| r.guard.name == guard.metadata.name.clone().unwrap_or_default());
            (
                k,
                spec,
                owned.map(|r| r.state).unwrap_or(TargetState::Pending),
            )
        })
        .collect();
    let missing = states.iter().filter(|(_, _, s)| s.is_missing()).count();
    let unhealthy: Vec<String> = states
        .iter()
        .filter(|(_, _, s)| !s.is_healthy())
        .map(|(k, _, s)| format!("{}: {}", k.name, s.as_str()))
        .collect();
    let list_all = states.len() <= LIST_ALL_TARGETS_UP_TO;
    let target_status = states
        .iter()
        .filter(|(_, _, s)| list_all || !s.is_healthy())
        .take(LIST_AT_MOST)
        .map(|(k, spec, s)| TargetStatus {
            kind: spec.kind().as_str().into(),
            name: k.name.clone(),
            state: s.as_str().into(),
            message: None,
        })
        .collect();
    let ready = match &record.invalid {
        Some(why) => condition(
            "Ready",
            false,
            "InvalidSpec",
            why.clone(),
            generation,
            now,
            old,
        ),
        None => condition(
            "Ready",
            true,
            "Guarding",
            format!(
                "guarding {} object{}",
                states.len(),
                if states.len() == 1 { "" } else { "s" }
            ),
            generation,
            now,
            old,
        ),
    };
    let degraded = if unhealthy.is_empty() {
        condition(
            "Degraded",
            false,
            "AllHealthy",
            "every guarded object is healthy".into(),
            generation,
            now,
            old,
        )
    } else {
        let first = states
            .iter()
            .find(|(_, _, s)| !s.is_healthy())
            .map(|(_, _, s)| s.as_str())
            .unwrap_or("Unhealthy");
        let mut message = unhealthy
            .iter()
            .take(5)
            .cloned()
            .collect::<Vec<_>>()
            .join(", ");
        if unhealthy.len() > 5 {
            message.push_str(&format!(" and {} more", unhealthy.len() - 5));
        }
        condition("Degraded", true, first, message, generation, now, old)
    };
    SecretGuardStatus {
        observed_generation: generation,
        conditions: vec![ready, degraded],
        guarded: states.len() as i32,
        missing: missing as i32,
        restores,
        last_incident: record
            .last_incident
            .clone()
            .or_else(|| old.and_then(|o| o.last_incident.clone())),
        targets: target_status,
        // A valid spec is the one in force; an invalid one leaves the last valid in force.
        spec_in_force: match &record.invalid {
            None => serde_json::to_string(&guard.spec).ok(),
            Some(_) => old.and_then(|o| o.spec_in_force.clone()),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::fixtures::{self, spec};
    use crate::guard::spec::{TargetKind, targets_of};

    fn guard() -> SecretGuard {
        let mut g = fixtures::guard("ns", "g", spec(&["writer"], &["db"]));
        g.metadata.generation = Some(3);
        g
    }

    fn find<'a>(s: &'a SecretGuardStatus, type_: &str) -> &'a Condition {
        s.conditions
            .iter()
            .find(|c| c.type_ == type_)
            .unwrap_or_else(|| panic!("condition {type_}"))
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"))
    }

    fn record(name: &str, state: TargetState) -> (ObjectKey, TargetRecord) {
        (
            ObjectKey::new("ns", name),
            TargetRecord {
                guard: ObjectKey::new("ns", "g"),
                kind: TargetKind::Secret,
                state,
                reported: Default::default(),
                missing_since: None,
                restore_failing: false,
                rechecks: 0,
            },
        )
    }

    #[test]
    fn status_counts_guarded_and_missing_and_names_what_is_wrong() {
        let g = guard();
        let targets = targets_of("ns", &g.spec);
        let records = HashMap::from([
            record("writer-token", TargetState::Healthy),
            record("db", TargetState::Missing),
        ]);
        let s = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        assert_eq!((s.guarded, s.missing), (2, 1));
        assert_eq!(s.observed_generation, Some(3));
        let degraded = find(&s, "Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "Missing")
        );
        assert_eq!(degraded.message, "db: Missing");
        let ready = find(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Guarding")
        );
        assert_eq!(s.targets.len(), 2);
    }

    #[test]
    fn an_unchanged_status_builds_identically_so_nothing_is_written_twice() {
        let mut g = guard();
        let targets = targets_of("ns", &g.spec);
        let records = HashMap::from([
            record("writer-token", TargetState::Healthy),
            record("db", TargetState::Healthy),
        ]);
        let first = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        g.status = Some(first.clone());
        let later = Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_999).expect("time"));
        let second = build(&g, &targets, &records, &GuardRecord::default(), 0, &later);
        assert_eq!(
            first, second,
            "transition times are kept while nothing changes"
        );
    }

    #[test]
    fn an_invalid_spec_is_reported_not_ready() {
        let g = guard();
        let rec = GuardRecord {
            invalid: Some("bad selector".into()),
            ..Default::default()
        };
        let s = build(&g, &[], &HashMap::new(), &rec, 0, &now());
        let ready = find(&s, "Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            ("False", "InvalidSpec", "bad selector")
        );
    }

    #[test]
    fn large_guards_list_only_unhealthy_targets() {
        let names: Vec<String> = (0..30).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let g = fixtures::guard("ns", "g", spec(&[], &names));
        let targets = targets_of("ns", &g.spec);
        let mut records: HashMap<_, _> = (0..30)
            .map(|i| record(&format!("s{i}"), TargetState::Healthy))
            .collect();
        records.extend([record("s7", TargetState::Missing)]);
        let st = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        assert_eq!(st.targets.len(), 1);
        assert_eq!(st.targets[0].name, "s7");
        assert_eq!(st.guarded, 30);
    }
}
