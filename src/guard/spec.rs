//! What a guard's spec means: the Secrets it names and what it asks of each, and the
//! checks its schema cannot express. Pure.

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
