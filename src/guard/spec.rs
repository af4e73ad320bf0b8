//! What a guard's spec means: the Secrets it names and what it asks of each, and the
//! checks its schema cannot express. Pure.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::LabelSelector;
use kube::core::Selector;

use crate::api::v1alpha1::SecretGuardSpec;
use crate::object_key::ObjectKey;

/// What a guard asks for one Secret.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TargetSpec {
    /// The legacy token Secret of a ServiceAccount.
    Token {
        service_account: String,
        recreate_service_account: bool,
    },
    /// Any other Secret, named in spec.secrets.
    Secret,
}

impl TargetSpec {
    pub fn kind(&self) -> TargetKind {
        match self {
            TargetSpec::Token { .. } => TargetKind::ServiceAccountToken,
            TargetSpec::Secret => TargetKind::Secret,
        }
    }
}

/// The kinds of guarded object, as shown in status, Events, metrics and restore points.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TargetKind {
    ServiceAccountToken,
    Secret,
}

impl TargetKind {
    pub const ALL: [TargetKind; 2] = [TargetKind::ServiceAccountToken, TargetKind::Secret];

    pub fn as_str(self) -> &'static str {
        match self {
            TargetKind::ServiceAccountToken => "ServiceAccountToken",
            TargetKind::Secret => "Secret",
        }
    }
}

/// The Secrets a guard spec names, with what it asks of each.
pub fn targets_of(namespace: &str, spec: &SecretGuardSpec) -> Vec<(ObjectKey, TargetSpec)> {
    let tokens = spec.service_accounts.iter().map(|sa| {
        (
            ObjectKey::new(namespace, sa.token_secret_name()),
            TargetSpec::Token {
                service_account: sa.name.clone(),
                recreate_service_account: sa.recreate_service_account,
            },
        )
    });
    let secrets = spec
        .secrets
        .iter()
        .map(|s| (ObjectKey::new(namespace, &s.name), TargetSpec::Secret));
    tokens.chain(secrets).collect()
}

/// Whether a spec names this Secret, valid or not: in `secrets`, or as a token Secret.
pub fn names(spec: &SecretGuardSpec, secret: &str) -> bool {
    spec.secrets.iter().any(|s| s.name == secret)
        || spec
            .service_accounts
            .iter()
            .any(|sa| sa.token_secret_name() == secret)
}

/// Checks the schema cannot express, for a guard in `namespace` of an operator whose
/// restore points live in `operator_namespace`. A guard failing them is reported
/// InvalidSpec and changes nothing (a previously valid spec stays in force).
/// What the apiserver would refuse in a label selector (and answer a watch with 400 for
/// ever): keys that are not qualified names, values that are not label values, `In` and
/// `NotIn` without values, `Exists` and `DoesNotExist` with values.
fn check_selector(sel: &LabelSelector) -> Result<(), String> {
    for (key, value) in sel.match_labels.iter().flatten() {
        check_key(key)?;
        check_value(value)?;
    }
    for req in sel.match_expressions.iter().flatten() {
        check_key(&req.key)?;
        let values = req.values.as_deref().unwrap_or_default();
        match req.operator.as_str() {
            "In" | "NotIn" if values.is_empty() => {
                return Err(format!(
                    "{:?} {} needs at least one value",
                    req.key, req.operator
                ));
            }
            "Exists" | "DoesNotExist" if !values.is_empty() => {
                return Err(format!("{:?} {} takes no values", req.key, req.operator));
            }
            _ => {}
        }
        for v in values {
            check_value(v)?;
        }
    }
    Ok(())
}

/// A label name part or value: at most 63 of [A-Za-z0-9_.-], starting and ending with an
/// alphanumeric (a value may be empty).
fn is_label_word(s: &str) -> bool {
    let ends = |c: Option<char>| c.is_some_and(|c| c.is_ascii_alphanumeric());
    s.len() <= 63
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && ends(s.chars().next())
        && ends(s.chars().last())
}

fn check_key(key: &str) -> Result<(), String> {
    let (prefix, name) = match key.split_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, key),
    };
    let prefix_ok = prefix.is_none_or(|p| {
        !p.is_empty()
            && p.len() <= 253
            && p.split('.').all(|part| {
                !part.is_empty()
                    && part
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
                    && !part.starts_with('-')
                    && !part.ends_with('-')
            })
    });
    if prefix_ok && !name.is_empty() && is_label_word(name) {
        Ok(())
    } else {
        Err(format!(
            "label key {key:?} is not valid: an optional DNS prefix and '/', then at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

fn check_value(value: &str) -> Result<(), String> {
    if value.is_empty() || is_label_word(value) {
        Ok(())
    } else {
        Err(format!(
            "label value {value:?} is not valid: at most 63 letters, digits, '-', '_' or '.', starting and ending with a letter or digit"
        ))
    }
}

pub fn validate(
    namespace: &str,
    spec: &SecretGuardSpec,
    operator_namespace: &str,
) -> Result<(), String> {
    if namespace == operator_namespace {
        // Its Secrets are the restore points: guarding them copies each into a restore
        // point of its own, which is guarded in turn, without end.
        return Err(format!(
            "SecretGuards are not allowed in {operator_namespace:?}, the secretguard operator's namespace: it holds the restore points, which are never guarded. Create the guard in the namespace of the Secrets it guards"
        ));
    }
    if let Some(sel) = &spec.secret_selector {
        check_selector(sel)
            .map_err(|e| format!("spec.secretSelector is not a valid label selector: {e}"))?;
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::v1alpha1::SecretTarget;
    use crate::guard::fixtures::spec;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, LabelSelectorRequirement};

    #[test]
    fn a_spec_names_its_token_secrets_first_then_its_secrets() {
        let targets = targets_of("ns", &spec(&["writer"], &["db"]));
        let kinds: Vec<_> = targets
            .iter()
            .map(|(k, s)| (k.name.as_str(), s.kind().as_str()))
            .collect();
        assert_eq!(
            kinds,
            [("writer-token", "ServiceAccountToken"), ("db", "Secret")]
        );
    }

    fn validate(spec: &SecretGuardSpec) -> Result<(), String> {
        super::validate("ns", spec, "secretguard-system")
    }

    #[test]
    fn selectors_the_apiserver_would_refuse_are_invalid_specs() {
        let with = |sel: serde_json::Value| {
            let mut s = spec(&[], &[]);
            s.secret_selector = Some(serde_json::from_value(sel).expect("selector"));
            validate(&s)
        };
        for (sel, why) in [
            (
                serde_json::json!({"matchLabels": {"bad key!": "v"}}),
                "label key \"bad key!\"",
            ),
            (
                serde_json::json!({"matchLabels": {"k": "a,b"}}),
                "label value \"a,b\"",
            ),
            (
                serde_json::json!({"matchLabels": {"-k": "v"}}),
                "label key \"-k\"",
            ),
            (
                serde_json::json!({"matchLabels": {"Ex.com/k": "v"}}),
                "label key",
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "k", "operator": "In", "values": []}]}),
                "needs at least one value",
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "k", "operator": "Exists", "values": ["x"]}]}),
                "takes no values",
            ),
            (
                serde_json::json!({"matchExpressions": [{"key": "k", "operator": "In", "values": ["a=b"]}]}),
                "label value \"a=b\"",
            ),
        ] {
            let err = with(sel.clone()).expect_err(&format!("{sel} is refused"));
            assert!(err.contains(why), "{sel}: {err}");
        }
        for sel in [
            serde_json::json!({"matchLabels": {"app.kubernetes.io/name": "db", "tier": ""}}),
            serde_json::json!({"matchExpressions": [{"key": "k", "operator": "NotIn", "values": ["a_b.c-1"]}]}),
            serde_json::json!({}),
        ] {
            assert_eq!(with(sel.clone()), Ok(()), "{sel}");
        }
    }

    #[test]
    fn a_guard_in_the_operator_namespace_is_refused_whatever_it_says() {
        let err = super::validate("secretguard-system", &spec(&[], &[]), "secretguard-system")
            .unwrap_err();
        assert!(
            err.contains("not allowed in \"secretguard-system\""),
            "{err}"
        );
        assert_eq!(
            super::validate("secretguard-system", &spec(&[], &[]), "other-operator-ns"),
            Ok(())
        );
    }

    #[test]
    fn validation_rejects_bad_selectors_and_double_listing() {
        assert_eq!(validate(&spec(&["writer"], &["db"])), Ok(()));
        let mut bad = spec(&["writer"], &["db"]);
        bad.secret_selector = Some(LabelSelector {
            match_expressions: Some(vec![LabelSelectorRequirement {
                key: "tier".into(),
                operator: "Bogus".into(),
                values: None,
            }]),
            match_labels: None,
        });
        assert!(validate(&bad).unwrap_err().contains("spec.secretSelector"));
        let mut twice = spec(&["writer"], &["db"]);
        twice.secrets.push(SecretTarget {
            name: "writer-token".into(),
        });
        assert!(validate(&twice).unwrap_err().contains("writer-token"));
    }
}
