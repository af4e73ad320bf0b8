//! The helm binary, and what the chart renders.

use std::path::PathBuf;
use std::process::{Command, Output};

use kube::Client;
use serde_json::json;

use super::{
    OPERATOR_NAMESPACE, OperatorBuilder, OperatorProcess, TestNamespace, kubeconfig_path, kubectl,
    repo_root, tools_bin,
};

/// Run helm in the repository root, without a cluster (lint, template).
pub fn helm(args: &[&str]) -> Output {
    Command::new(tools_bin().join("helm"))
        .args(args)
        .current_dir(repo_root())
        .output()
        .expect("helm")
}

/// Run helm in the repository root against the local control plane (install, uninstall).
pub fn helm_on_cluster(args: &[&str]) -> Output {
    let kubeconfig = kubeconfig_path().to_string_lossy().into_owned();
    let mut all = args.to_vec();
    all.extend(["--kubeconfig", &kubeconfig]);
    helm(&all)
}

/// `helm template` of charts/secretguard as `make manifests` renders it (release
/// secretguard in OPERATOR_NAMESPACE), with `extra` arguments (e.g. `--set`, `k=v`):
/// the text and its documents.
pub fn helm_template(extra: &[&str]) -> (String, Vec<serde_yaml::Value>) {
    helm_template_release("secretguard", OPERATOR_NAMESPACE, extra)
}

/// `helm template` of charts/secretguard for release `release` in `namespace`.
pub fn helm_template_release(
    release: &str,
    namespace: &str,
    extra: &[&str],
) -> (String, Vec<serde_yaml::Value>) {
    let mut args = vec![
        "template",
        release,
        "charts/secretguard",
        "--namespace",
        namespace,
    ];
    args.extend_from_slice(extra);
    let out = helm(&args);
    assert!(
        out.status.success(),
        "helm template: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let docs = serde_yaml::Deserializer::from_str(&text)
        .filter_map(|d| serde::Deserialize::deserialize(d).ok())
        .filter(|v: &serde_yaml::Value| !v.is_null())
        .collect();
    (text, docs)
}

/// A token of ServiceAccount `ns/name` (TokenRequest, one hour). Never print it.
pub fn token_of(ns: &str, name: &str) -> String {
    let out = kubectl(&["-n", ns, "create", "token", name, "--duration=1h"]);
    assert!(
        out.status.success(),
        "create token: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// The chart installed on the local control plane as a release of its own, in a namespace
/// of its own (`--set` values as given, CRDs and aggregated roles left out), uninstalled
/// when dropped. Its operator runs as the chart's ServiceAccount: under exactly the
/// chart's RBAC, and nothing more.
pub struct ChartRelease {
    pub release: String,
    /// Where the kubeconfig naming the chart's ServiceAccount is written.
    pub kubeconfig: PathBuf,
    pub namespace: TestNamespace,
}

impl ChartRelease {
    /// `release` must contain "secretguard": then it is also the name of the chart's
    /// ServiceAccount and cluster-wide objects (two releases must differ).
    pub async fn install(client: &Client, release: &str, sets: &[&str]) -> ChartRelease {
        assert!(release.contains("secretguard"), "{release}");
        super::install_crds();
        let namespace = TestNamespace::new(client, "sg-release").await;
        let mut args = vec![
            "install",
            release,
            "charts/secretguard",
            "--namespace",
            &namespace.name,
            "--set",
            "crds.install=false",
            "--set",
            "aggregateRoles=false",
        ];
        for set in sets {
            args.extend(["--set", set]);
        }
        let out = helm_on_cluster(&args);
        assert!(
            out.status.success(),
            "helm install: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let kubeconfig =
            std::env::temp_dir().join(format!("sg-{release}-{}.kubeconfig", std::process::id()));
        let release = ChartRelease {
            release: release.into(),
            kubeconfig,
            namespace,
        };
        release.write_kubeconfig();
        release
    }

    /// A token of the chart's ServiceAccount.
    pub fn token(&self) -> String {
        token_of(&self.namespace.name, &self.release)
    }

    fn write_kubeconfig(&self) {
        let admin =
            kube::config::Kubeconfig::read_from(kubeconfig_path()).expect("admin kubeconfig");
        let cluster = admin.clusters[0].cluster.clone().expect("cluster");
        let config = json!({
            "apiVersion": "v1", "kind": "Config",
            "clusters": [{"name": "local", "cluster": {"server": cluster.server, "certificate-authority-data": cluster.certificate_authority_data}}],
            "users": [{"name": "secretguard", "user": {"token": self.token()}}],
            "contexts": [{"name": "local", "context": {"cluster": "local", "user": "secretguard"}}],
            "current-context": "local",
        });
        std::fs::write(&self.kubeconfig, serde_json::to_vec(&config).expect("json"))
            .expect("write kubeconfig");
    }

    /// The operator binary as the chart's ServiceAccount, in the release namespace, with
    /// leader election (the chart's RBAC names its Lease).
    pub fn operator(&self, name: &str) -> OperatorBuilder {
        OperatorProcess::builder(name)
            .namespace(&self.namespace.name)
            .kubeconfig(&self.kubeconfig)
            .leader_election()
    }
}

impl Drop for ChartRelease {
    fn drop(&mut self) {
        let _ = helm_on_cluster(&[
            "uninstall",
            &self.release,
            "--namespace",
            &self.namespace.name,
        ]);
        let _ = std::fs::remove_file(&self.kubeconfig);
    }
}
