//! The tools built from the Go module proxy report the versions they were built at (a
//! build without version ldflags reports v0.0.0 or "unknown", which hides what we test on).

mod support;

use std::process::Command;

fn version_output(tool: &str, args: &[&str]) -> String {
    let out = Command::new(support::tools_bin().join(tool))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {tool}: {e}"));
    assert!(out.status.success(), "{tool} {args:?} failed");
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn want(var: &str, default: &str) -> String {
    std::env::var(var).unwrap_or_else(|_| default.to_owned())
}

#[test]
fn every_tool_reports_the_version_it_was_built_at() {
    let k8s = want("K8S_VERSION", "v1.37.1");
    for tool in ["kube-apiserver", "kube-controller-manager"] {
        let got = version_output(tool, &["--version"]);
        assert_eq!(got.trim(), format!("Kubernetes {k8s}"), "{tool}");
    }
    let kubectl = version_output("kubectl", &["version", "--client"]);
    assert!(
        kubectl.contains(&format!("Client Version: {k8s}")),
        "{kubectl}"
    );

    let etcd = want("ETCD_VERSION", "v3.6.14");
    let got = version_output("etcd", &["--version"]);
    assert!(
        got.contains(&format!("etcd Version: {}", &etcd[1..])),
        "{got}"
    );

    let helm = want("HELM_VERSION", "v3.21.4");
    assert_eq!(version_output("helm", &["version", "--short"]).trim(), helm);

    // Prometheus module v0.314.0 is release 3.14.0.
    let prom = want("PROMETHEUS_VERSION", "v0.314.0");
    let minor: u32 = prom
        .split('.')
        .nth(1)
        .and_then(|m| m.parse().ok())
        .expect("minor");
    let release = format!(
        "{}.{}.{}",
        minor / 100,
        minor % 100,
        prom.rsplit('.').next().unwrap_or("0")
    );
    let got = version_output("promtool", &["--version"]);
    assert!(
        got.starts_with(&format!("promtool, version {release} ")),
        "{got}"
    );

    let am = want("ALERTMANAGER_VERSION", "v0.31.1");
    let got = version_output("alertmanager", &["--version"]);
    assert!(
        got.starts_with(&format!("alertmanager, version {} ", &am[1..])),
        "{got}"
    );
}
