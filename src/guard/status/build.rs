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
/// Objects named in a condition message, at most; then how many more.
const NAMED_IN_CONDITIONS: usize = 5;

/// Other guards named per shared object, at most.
pub const NAMED_GUARDS: usize = 3;

/// At most `cap` names, then how many more: "a, b, c and 2 more".
pub fn names_capped<'a>(names: impl ExactSizeIterator<Item = &'a str>, cap: usize) -> String {
    let total = names.len();
    let mut listed = names.take(cap).collect::<Vec<_>>().join(", ");
    if total > cap {
        listed.push_str(&format!(" and {} more", total - cap));
    }
    listed
}

/// For a target other guards cover too: who else, who reports it, and what is in force,
/// as `me` sees it. None when no other guard covers it.
fn shared_message(me: &ObjectKey, rec: &TargetRecord) -> Option<String> {
    let sharing = rec.sharing.as_ref()?;
    let others: Vec<&str> = rec
        .guards()
        .filter(|g| *g != me)
        .map(|g| g.name.as_str())
        .collect();
    let reporter = if rec.guard == *me {
        "this guard reports it".to_owned()
    } else {
        format!("{} reports it", rec.guard.name)
    };
    Some(format!(
        "also covered by {}; {reporter}; in force, the most protective of each setting: {}",
        names_capped(others.into_iter(), NAMED_GUARDS),
        sharing.settings
    ))
}

/// `Overlap`: True while other guards cover some of this guard's objects, naming them
/// (at most NAMED_IN_CONDITIONS) and which guard reports each.
fn overlap(me: &ObjectKey, shared: &[(&ObjectKey, &TargetRecord)]) -> (bool, &'static str, String) {
    if shared.is_empty() {
        return (
            false,
            "NoOverlap",
            "no other guard covers this guard's objects".into(),
        );
    }
    let described: Vec<String> = shared
        .iter()
        .map(|(k, r)| {
            let reporter = if r.guard == *me {
                "this guard"
            } else {
                r.guard.name.as_str()
            };
            format!("{} (reported by {reporter})", k.name)
        })
        .collect();
    (
        true,
        "SharedWithOtherGuards",
        format!(
            "other guards cover {} of this guard's object{}, and the most protective value of each setting among them is in force: {}",
            shared.len(),
            if shared.len() == 1 { "" } else { "s" },
            names_capped(described.iter().map(String::as_str), NAMED_IN_CONDITIONS)
        ),
    )
}

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
    let me = ObjectKey::of(guard);
    // The records of this guard's targets: those it covers (it may not report them).
    let covered: Vec<Option<&TargetRecord>> = targets
        .iter()
        .map(|(k, _)| records.get(k).filter(|r| r.covered_by(&me)))
        .collect();
    let states: Vec<(&ObjectKey, &TargetSpec, TargetState)> = targets
        .iter()
        .zip(&covered)
        .map(|((k, spec), r)| (k, spec, r.map(|r| r.state).unwrap_or(TargetState::Pending)))
        .collect();
    let shared: Vec<(&ObjectKey, &TargetRecord)> = targets
        .iter()
        .zip(&covered)
        .filter_map(|((k, _), r)| r.filter(|r| r.sharing.is_some()).map(|r| (k, r)))
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
        .zip(&covered)
        .filter(|((_, _, s), _)| list_all || !s.is_healthy())
        .take(LIST_AT_MOST)
        .map(|((k, spec, s), r)| TargetStatus {
            kind: spec.kind().as_str().into(),
            name: k.name.clone(),
            state: s.as_str().into(),
            message: r.and_then(|r| match (r.message.clone(), shared_message(&me, r)) {
                (Some(why), Some(shared)) => Some(format!("{why}; {shared}")),
                (why, shared) => why.or(shared),
            }),
        })
        .collect();
    let conflicts: Vec<String> = states
        .iter()
        .zip(&covered)
        .filter(|((_, _, s), _)| *s == TargetState::TargetConflict)
        .map(|((k, _, _), r)| {
            let why = r
                .and_then(|r| r.message.clone())
                .unwrap_or_else(|| "not a token of its ServiceAccount".into());
            format!("Secret {}: {why}", k.name)
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
        // A token name held by another Secret: that entry of the spec cannot be served.
        None if !conflicts.is_empty() => {
            let mut why = conflicts[0].clone();
            if conflicts.len() > 1 {
                why.push_str(&format!(" (and {} more)", conflicts.len() - 1));
            }
            condition("Ready", false, "TargetConflict", why, generation, now, old)
        }
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
        let message = names_capped(unhealthy.iter().map(String::as_str), NAMED_IN_CONDITIONS);
        condition("Degraded", true, first, message, generation, now, old)
    };
    let (overlapping, reason, message) = overlap(&me, &shared);
    let overlap = condition(
        "Overlap",
        overlapping,
        reason,
        message,
        generation,
        now,
        old,
    );
    SecretGuardStatus {
        observed_generation: generation,
        conditions: vec![ready, degraded, overlap],
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
    use crate::guard::state::Sharing;

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
            TargetRecord::new(ObjectKey::new("ns", "g"), TargetKind::Secret, state),
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
    fn a_token_name_held_by_another_secret_makes_the_guard_not_ready_and_says_why() {
        let g = guard();
        let targets = targets_of("ns", &g.spec);
        let (key, mut conflict) = record("writer-token", TargetState::TargetConflict);
        conflict.message = Some("names a Secret of type Opaque".into());
        let records = HashMap::from([(key, conflict), record("db", TargetState::Retired)]);
        let s = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
        assert_eq!(
            (
                ready.status.as_str(),
                ready.reason.as_str(),
                ready.message.as_str()
            ),
            (
                "False",
                "TargetConflict",
                "Secret writer-token: names a Secret of type Opaque"
            )
        );
        assert_eq!(
            s.targets[0].message.as_deref(),
            Some("names a Secret of type Opaque")
        );
        let degraded = find(&s, "Degraded");
        assert_eq!(
            (degraded.reason.as_str(), degraded.message.as_str()),
            ("TargetConflict", "writer-token: TargetConflict"),
            "a Retired Secret is no trouble"
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

    fn shared(
        name: &str,
        state: TargetState,
        reporter: &str,
        with: &[&str],
    ) -> (ObjectKey, TargetRecord) {
        let (k, mut r) = record(name, state);
        r.guard = ObjectKey::new("ns", reporter);
        r.sharing = Some(Box::new(Sharing {
            with: with.iter().map(|g| ObjectKey::new("ns", *g)).collect(),
            settings: "restore Identical, severity critical, not paused".into(),
        }));
        (k, r)
    }

    #[test]
    fn a_guard_that_does_not_report_a_shared_object_shows_its_state_who_reports_it_and_what_is_in_force()
     {
        let g = guard();
        let targets = targets_of("ns", &g.spec);
        let records = HashMap::from([
            record("writer-token", TargetState::Healthy),
            shared("db", TargetState::Missing, "team", &["g"]),
        ]);
        let s = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        let db = s
            .targets
            .iter()
            .find(|t| t.name == "db")
            .expect("db listed");
        assert_eq!(db.state, "Missing", "the real state, not Pending");
        assert_eq!(
            db.message.as_deref(),
            Some(
                "also covered by team; team reports it; in force, the most protective of each setting: restore Identical, severity critical, not paused"
            )
        );
        assert_eq!(s.missing, 1);
        let overlap = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Overlap")
            .expect("Overlap");
        assert_eq!(
            (overlap.status.as_str(), overlap.reason.as_str()),
            ("True", "SharedWithOtherGuards")
        );
        assert!(
            overlap.message.contains("db (reported by team)"),
            "{}",
            overlap.message
        );
        let ready = find(&s, "Ready");
        assert_eq!(
            (ready.status.as_str(), ready.reason.as_str()),
            ("True", "Guarding")
        );
    }

    #[test]
    fn the_guard_that_reports_a_shared_object_says_so_and_a_guard_alone_has_no_overlap() {
        let g = guard();
        let targets = targets_of("ns", &g.spec);
        let alone = HashMap::from([record("db", TargetState::Healthy)]);
        let s = build(&g, &targets, &alone, &GuardRecord::default(), 0, &now());
        let overlap = find(&s, "Overlap");
        assert_eq!(
            (overlap.status.as_str(), overlap.reason.as_str()),
            ("False", "NoOverlap")
        );
        assert!(s.targets.iter().all(|t| t.message.is_none()));

        let records = HashMap::from([shared("db", TargetState::Healthy, "g", &["aaa", "bbb"])]);
        let s = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        let db = s
            .targets
            .iter()
            .find(|t| t.name == "db")
            .expect("db listed");
        assert!(
            db.message
                .as_deref()
                .is_some_and(|m| m.starts_with("also covered by aaa, bbb; this guard reports it;")),
            "{db:?}"
        );
        assert!(
            find(&s, "Overlap")
                .message
                .contains("db (reported by this guard)")
        );
        // A record of another guard that does not name g leaves the target Pending here.
        let others = HashMap::from([shared("db", TargetState::Missing, "team", &["aaa"])]);
        let s = build(&g, &targets, &others, &GuardRecord::default(), 0, &now());
        let db = s
            .targets
            .iter()
            .find(|t| t.name == "db")
            .expect("db listed");
        assert_eq!(
            (db.state.as_str(), db.message.as_deref()),
            ("Pending", None)
        );
    }

    #[test]
    fn overlap_messages_stay_bounded() {
        let names: Vec<String> = (0..40).map(|i| format!("s{i}")).collect();
        let names: Vec<&str> = names.iter().map(String::as_str).collect();
        let g = fixtures::guard("ns", "g", spec(&[], &names));
        let targets = targets_of("ns", &g.spec);
        let many: Vec<String> = (0..10).map(|i| format!("other{i}")).collect();
        let many: Vec<&str> = many.iter().map(String::as_str).collect();
        let mut with = vec!["g"];
        with.extend(&many);
        let records: HashMap<_, _> = names
            .iter()
            .map(|n| shared(n, TargetState::Missing, "team", &with))
            .collect();
        let s = build(&g, &targets, &records, &GuardRecord::default(), 0, &now());
        let overlap = find(&s, "Overlap");
        assert!(overlap.message.contains("cover 40 of this guard's objects"));
        assert!(
            overlap.message.ends_with(" and 35 more"),
            "{}",
            overlap.message
        );
        let message = s.targets[0].message.clone().unwrap_or_default();
        assert!(
            message.starts_with("also covered by team, other0, other1 and 8 more;"),
            "{message}"
        );
    }
}
