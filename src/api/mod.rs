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
        out.push_str(&quote_yaml11_booleans(&serde_yaml::to_string(&crd)?));
    }
    Ok(out)
}

/// serde_yaml writes YAML 1.2, where `Off` is a string; Kubernetes reads YAML 1.1, where a
/// bare `Off` (or On, Yes, No, Y, N) is a boolean. Quote such scalars so the enum value
/// `Off` survives `kubectl apply` and Helm.
fn quote_yaml11_booleans(yaml: &str) -> String {
    const WORDS: &[&str] = &[
        "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
        "OFF",
    ];
    let mut out = String::with_capacity(yaml.len() + 16);
    for line in yaml.lines() {
        let quoted = [": ", "- "].iter().find_map(|sep| {
            let (head, value) = line.rsplit_once(sep)?;
            WORDS
                .contains(&value)
                .then(|| format!("{head}{sep}'{value}'"))
        });
        out.push_str(quoted.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::v1alpha1::RestoreMode;

    #[test]
    fn restore_never_is_written_never_and_off_is_still_read_as_never() {
        let read = |s: &str| serde_json::from_str::<RestoreMode>(s).expect("a restore mode");
        assert_eq!(read("\"Never\""), RestoreMode::Never);
        assert_eq!(read("\"Off\""), RestoreMode::Never, "the earlier spelling");
        assert_eq!(
            serde_json::to_string(&RestoreMode::Never).expect("json"),
            "\"Never\""
        );
        assert!(serde_json::from_str::<RestoreMode>("false").is_err());
    }

    #[test]
    fn yaml11_booleans_are_quoted_and_nothing_else_changes() {
        let y = "enum:\n- Identical\n- Off\ndefault: Off\nname: offset\nx: 'On'\n";
        assert_eq!(
            super::quote_yaml11_booleans(y),
            "enum:\n- Identical\n- 'Off'\ndefault: 'Off'\nname: offset\nx: 'On'\n"
        );
    }

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
