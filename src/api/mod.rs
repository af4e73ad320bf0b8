//! CRD types. No logic lives here beyond defaults.

pub mod v1alpha1;

use kube::CustomResourceExt;

/// Every CRD the operator serves, as one YAML stream (what `secretguard crd` prints and
/// `crds/` holds).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    let crds = [v1alpha1::SecretGuard::crd()];
    let mut out = String::new();
    for crd in crds {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn checked_in_crds_match_the_rust_types() {
        let generated = super::crds_yaml().expect("render CRDs");
        let checked_in = include_str!("../../crds/secretguard.dev_secretguards.yaml");
        assert!(
            generated == checked_in,
            "crds/secretguard.dev_secretguards.yaml is stale: run `make crds`"
        );
    }
}
