//! Bad SecretGuards are refused by the apiserver (schema and CEL), with messages a kubectl
//! user understands. Checked through kubectl, as a user would see them.

mod support;

use support::*;

/// `kubectl apply --dry-run=server` of a SecretGuard with this spec (YAML); returns
/// (accepted, what kubectl printed).
fn apply(ns: &str, spec_yaml: &str) -> (bool, String) {
    let doc = format!(
        "apiVersion: secretguard.dev/v1alpha1\nkind: SecretGuard\nmetadata:\n  name: g\n  namespace: {ns}\nspec:\n{spec_yaml}"
    );
    let out = kubectl_with_input(&["apply", "--dry-run=server", "-f", "-"], &doc);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_apiserver_refuses_bad_guards_with_readable_messages() {
    install_crds();
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, "crd").await;
    let n = &ns.name;

    let (ok, out) = apply(
        n,
        "  serviceAccounts: [{name: writer}]\n  secrets: [{name: db}]\n  restore: Fresh\n  severity: warning\n",
    );
    assert!(ok, "a good guard is accepted: {out}");
    let (ok, out) = apply(n, "  restore: Never\n");
    assert!(ok, "restore Never is accepted: {out}");
    let (ok, out) = apply(n, "  restore: \"Off\"\n");
    assert!(
        ok,
        "quoted Off, the earlier spelling, is still accepted: {out}"
    );
    for delay in ["0", "300"] {
        let (ok, out) = apply(n, &format!("  restoreDelaySeconds: {delay}\n"));
        assert!(ok, "a restore delay of {delay} s is accepted: {out}");
    }

    let refused: &[(&str, String, &str)] = &[
        (
            "bad name",
            "  serviceAccounts: [{name: Bad_Name}]\n".into(),
            "must be a valid Kubernetes name",
        ),
        (
            "bad token name",
            "  serviceAccounts: [{name: a, tokenSecretName: 'x y'}]\n".into(),
            "must be a valid Kubernetes name",
        ),
        (
            "bad secret name",
            "  secrets: [{name: -db}]\n".into(),
            "must be a valid Kubernetes name",
        ),
        (
            "duplicate SA",
            "  serviceAccounts: [{name: a}, {name: a}]\n".into(),
            "spec.serviceAccounts[1]: Duplicate value",
        ),
        (
            "duplicate Secret",
            "  secrets: [{name: a}, {name: a}]\n".into(),
            "spec.secrets[1]: Duplicate value",
        ),
        (
            "unknown restore mode",
            "  restore: Sometimes\n".into(),
            "supported values: \"Identical\", \"Fresh\", \"Never\", \"Off\"",
        ),
        (
            "unknown severity",
            "  severity: info\n".into(),
            "supported values: \"critical\", \"warning\"",
        ),
        (
            "too many entries",
            format!(
                "  secrets: [{}]\n",
                (0..257)
                    .map(|i| format!("{{name: s{i}}}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            "must have at most 256 items",
        ),
        (
            "name too long for the default token name",
            format!("  serviceAccounts: [{{name: {}}}]\n", "a".repeat(250)),
            "set tokenSecretName",
        ),
        (
            "restore delay too long",
            "  restoreDelaySeconds: 301\n".into(),
            // v1.37 says "Invalid value: 301", v1.33 "Invalid value: \"integer\"".
            "must be from 0 to 300 (seconds)",
        ),
        (
            "negative restore delay",
            "  restoreDelaySeconds: -1\n".into(),
            "must be from 0 to 300 (seconds)",
        ),
        (
            "restore delay as a duration",
            "  restoreDelaySeconds: 2s\n".into(),
            "spec.restoreDelaySeconds",
        ),
        // YAML 1.1, which kubectl speaks, reads a bare Off as the boolean false.
        ("bare Off", "  restore: Off\n".into(), "spec.restore"),
    ];
    for (what, spec, message) in refused {
        let (ok, out) = apply(n, spec);
        assert!(!ok, "{what}: should be refused, kubectl said: {out}");
        assert!(
            out.contains(message),
            "{what}: expected {message:?} in: {out}"
        );
    }
}
