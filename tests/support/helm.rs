//! The helm binary, and what the chart renders.

use std::path::PathBuf;
use std::process::{Command, Output};

use kube::Client;

use super::{
    OPERATOR_NAMESPACE, OperatorBuilder, OperatorProcess, TestNamespace, kubeconfig_path,
    repo_root, tools_bin,
};

/// The Kubernetes version `helm template` renders for (without a cluster, helm assumes an
/// old one, which the chart's kubeVersion refuses): the oldest the tests run against.
pub const TEMPLATE_KUBE_VERSION: &str = "1.33.0";

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
        "--kube-version",
        TEMPLATE_KUBE_VERSION,
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
        let kubeconfig = super::token_kubeconfig(
            &format!("sg-{release}"),
            &super::service_account_token(&namespace.name, release),
        );
        ChartRelease {
            release: release.into(),
            kubeconfig,
            namespace,
        }
    }

    /// A token of the chart's ServiceAccount.
    pub fn token(&self) -> String {
        super::service_account_token(&self.namespace.name, &self.release)
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

/// A release of the chart in a namespace, uninstalled when the test ends however it ends:
/// its cluster-wide roles would make the next install fail.
pub struct HelmRelease {
    pub name: String,
    pub namespace: String,
}

impl HelmRelease {
    pub fn new(name: &str, namespace: &str) -> HelmRelease {
        HelmRelease {
            name: name.into(),
            namespace: namespace.into(),
        }
    }
}

impl Drop for HelmRelease {
    fn drop(&mut self) {
        let _ = helm_on_cluster(&["uninstall", &self.name, "--namespace", &self.namespace]);
    }
}

/// The chart and the CRDs of this repository at `commit` (`charts/`, `crds/` of `git
/// archive`), in a directory of the temp dir; returns it.
pub fn tree_at(commit: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("sg-tree-{commit}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create tree dir");
    let archive = Command::new("git")
        .args(["archive", "--format=tar", commit, "charts", "crds"])
        .current_dir(repo_root())
        .output()
        .expect("git archive");
    assert!(
        archive.status.success(),
        "git archive {commit}: {}",
        String::from_utf8_lossy(&archive.stderr)
    );
    let mut tar = Command::new("tar")
        .arg("-x")
        .current_dir(&dir)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .expect("tar");
    std::io::Write::write_all(&mut tar.stdin.take().expect("stdin"), &archive.stdout)
        .expect("write to tar");
    assert!(tar.wait().expect("tar").success(), "tar -x");
    dir
}
