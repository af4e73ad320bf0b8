//! A guard's status: what `kubectl get sguard` and `kubectl describe` show. Built from what
//! the operator remembers about each target (pure), written with server-side apply only
//! when it differs from what is stored.

use std::collections::HashMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::api::{Api, Patch, PatchParams};
use kube::core::Selector;
use kube::runtime::reflector::ObjectRef;
use serde_json::json;

use super::decide::TargetState;
use super::index::{ObjectKey, TargetSpec, targets_of};
use crate::api::v1alpha1::{SecretGuard, SecretGuardSpec, SecretGuardStatus, TargetStatus};
use crate::controller::{Context, GuardRecord, TargetRecord};
use crate::labels;
use crate::restore_point;

/// Targets listed one by one in status up to this many; beyond, only unhealthy ones.
pub const LIST_ALL_TARGETS_UP_TO: usize = 20;

/// Checks the schema cannot express. A guard failing them is reported InvalidSpec and
/// changes nothing (a previously valid spec stays in force).
pub fn validate(spec: &SecretGuardSpec) -> Result<(), String> {
    if let Some(sel) = &spec.secret_selector {
        Selector::try_from(sel.clone())
            .map_err(|e| format!("spec.secretSelector is not a valid label selector: {e}"))?;
    }
    let mut tokens = std::collections::BTreeMap::new();
    for sa in &spec.service_accounts {
        let token = sa.token_secret_name();
        if let Some(other) = tokens.insert(token.clone(), &sa.name) {
            return Err(format!(
                "serviceAccounts {other:?} and {:?} both use token Secret {token:?}: give each its own tokenSecretName",
                sa.name
            ));
        }
        if spec.secrets.iter().any(|s| s.name == token) {
            return Err(format!(
                "Secret {token:?} is listed in spec.secrets and is also the token Secret of serviceAccount {:?}: list it once",
                sa.name
            ));
        }
    }
    Ok(())
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
        .map(|(k, spec, s)| TargetStatus {
            kind: spec.kind().into(),
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
    }
}

/// Set the guarded and missing gauges of a guard, per kind, from the targets its status
/// counts.
fn export_counts(
    ctx: &Context,
    guard: &ObjectKey,
    targets: &[(ObjectKey, TargetSpec)],
    records: &HashMap<ObjectKey, TargetRecord>,
) {
    for kind in ["ServiceAccountToken", "Secret"] {
        let (mut guarded, mut missing) = (0, 0);
        for (k, _) in targets.iter().filter(|(_, s)| s.kind() == kind) {
            guarded += 1;
            missing += i64::from(records.get(k).is_some_and(|r| r.state.is_missing()));
        }
        let labels = crate::metrics::GuardKind {
            namespace: guard.namespace.clone(),
            guard: guard.name.clone(),
            kind: kind.into(),
        };
        ctx.metrics
            .guarded_objects
            .get_or_create(&labels)
            .set(guarded);
        ctx.metrics
            .missing_objects
            .get_or_create(&labels)
            .set(missing);
    }
}

/// Write a guard's status if it changed.
pub async fn write(ctx: &Context, key: &ObjectKey) -> crate::Result<()> {
    {
        let mut m = ctx.memory();
        let rec = m.guards.entry(key.clone()).or_default();
        rec.status_pending = false;
        rec.last_status = Some(std::time::Instant::now());
    }
    let Some(guard) = ctx
        .stores
        .guards
        .get(&ObjectRef::new(&key.name).within(&key.namespace))
    else {
        return Ok(());
    };
    let status = {
        let index = ctx.index();
        let mut targets = match index.guard(key) {
            Some(entry) => entry.targets.clone(),
            // Never valid: nothing is guarded yet.
            None if ctx
                .memory()
                .guards
                .get(key)
                .is_some_and(|r| r.invalid.is_some()) =>
            {
                Vec::new()
            }
            None => targets_of(&key.namespace, &guard.spec),
        };
        drop(index);
        // Secrets guarded through the selector: those reconciled for this guard.
        {
            let m = ctx.memory();
            let named: std::collections::HashSet<ObjectKey> =
                targets.iter().map(|(k, _)| k.clone()).collect();
            let mut selected: Vec<ObjectKey> = m
                .targets
                .iter()
                .filter(|(k, r)| r.guard == *key && !named.contains(*k))
                .map(|(k, _)| k.clone())
                .collect();
            selected.sort();
            targets.extend(selected.into_iter().map(|k| (k, TargetSpec::Secret)));
        }
        // Restores are counted on the restore points, where each is recorded exactly once.
        let opns = &ctx.config.operator_namespace;
        let restores: u64 = targets
            .iter()
            .filter_map(|(k, _)| {
                ctx.stores
                    .restore_point(opns, &restore_point::name_for(&k.namespace, &k.name))
            })
            .map(|rp| restore_point::restores(&rp))
            .sum();
        let m = ctx.memory();
        export_counts(ctx, key, &targets, &m.targets);
        let record = m.guards.get(key).cloned().unwrap_or_default();
        build(
            &guard,
            &targets,
            &m.targets,
            &record,
            restores as i64,
            &Time(k8s_openapi::jiff::Timestamp::now()),
        )
    };
    if guard.status.as_ref() == Some(&status) {
        return Ok(());
    }
    if status.restores != guard.status.as_ref().map(|s| s.restores).unwrap_or(0) {
        crate::fault::point(crate::fault::points::STATUS_NOT_WRITTEN);
    }
    let api: Api<SecretGuard> = Api::namespaced(ctx.client.clone(), &key.namespace);
    let patch = json!({
        "apiVersion": "secretguard.dev/v1alpha1",
        "kind": "SecretGuard",
        "status": status,
    });
    api.patch_status(
        &key.name,
        &PatchParams::apply(labels::MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::{SecretTarget, ServiceAccountTarget};
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    fn spec() -> SecretGuardSpec {
        SecretGuardSpec {
            service_accounts: vec![ServiceAccountTarget {
                name: "writer".into(),
                token_secret_name: None,
                recreate_service_account: false,
            }],
            secrets: vec![SecretTarget { name: "db".into() }],
            secret_selector: None,
            restore: Default::default(),
            revalidate: true,
            severity: Default::default(),
            paused: false,
        }
    }

    fn guard() -> SecretGuard {
        let mut g = SecretGuard::new("g", spec());
        g.metadata.namespace = Some("ns".into());
        g.metadata.generation = Some(3);
        g
    }

    fn now() -> Time {
        Time(k8s_openapi::jiff::Timestamp::from_second(1_800_000_000).expect("time"))
    }

    fn record(name: &str, state: TargetState) -> (ObjectKey, TargetRecord) {
        (
            ObjectKey::new("ns", name),
            TargetRecord {
                guard: ObjectKey::new("ns", "g"),
                kind: "Secret",
                state,
                reported: Default::default(),
                missing_since: None,
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
        let degraded = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Degraded")
            .expect("Degraded");
        assert_eq!(
            (degraded.status.as_str(), degraded.reason.as_str()),
            ("True", "Missing")
        );
        assert_eq!(degraded.message, "db: Missing");
        let ready = s
            .conditions
            .iter()
            .find(|c| c.type_ == "Ready")
            .expect("Ready");
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
            ("False", "InvalidSpec", "bad selector")
        );
    }

    #[test]
    fn validation_rejects_bad_selectors_and_double_listing() {
        assert_eq!(validate(&spec()), Ok(()));
        let mut bad = spec();
        bad.secret_selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Bogus".into(),
                values: None,
            }]),
            match_labels: None,
        });
        assert!(validate(&bad).unwrap_err().contains("spec.secretSelector"));
        let mut twice = spec();
        twice.secrets.push(SecretTarget {
            name: "writer-token".into(),
        });
        assert!(validate(&twice).unwrap_err().contains("writer-token"));
    }

    #[test]
    fn large_guards_list_only_unhealthy_targets() {
        let mut s = spec();
        s.service_accounts.clear();
        s.secrets = (0..30)
            .map(|i| SecretTarget {
                name: format!("s{i}"),
            })
            .collect();
        let mut g = SecretGuard::new("g", s);
        g.metadata.namespace = Some("ns".into());
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
