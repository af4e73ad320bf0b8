//! A real Alertmanager, for tests and the bench that check what the operator pushes.

use std::process::{Command, Stdio};

use super::{
    DEADLINE, OperatorBuilder, OperatorProcess, binary_name, free_port, prepare_operator,
    shared_log, spawn_for_life, tools_bin, wait_http_ok,
};

/// A real Alertmanager on a free loopback port, living as long as this process, with a
/// receiver that drops notifications (tests read alerts from its API), logging to
/// target/test-logs/<test binary>/alertmanager.log. Returns its URL, once it is ready.
pub fn start_alertmanager() -> String {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!(
        "sg-alertmanager-{}-{}",
        std::process::id(),
        binary_name()
    ));
    std::fs::create_dir_all(&dir).expect("alertmanager dir");
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .expect("alertmanager config");
    let (_, log) = shared_log("alertmanager.log");
    let mut cmd = Command::new(tools_bin().join("alertmanager"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(Stdio::null())
        .stderr(log);
    spawn_for_life(cmd);
    let url = format!("http://127.0.0.1:{port}");
    wait_http_ok(&format!("{url}/-/ready"), DEADLINE);
    url
}

/// An operator process pushing to a real Alertmanager, both living as long as this test
/// binary: keep it in a static of the binary.
pub struct WithAlertmanager {
    pub operator: OperatorProcess,
    pub alertmanager: String,
}

/// Start an Alertmanager, then the operator `builder` describes pushing to it, ready.
pub fn operator_with_alertmanager(builder: OperatorBuilder) -> WithAlertmanager {
    prepare_operator();
    let alertmanager = start_alertmanager();
    let operator = builder.alertmanager(&alertmanager).start_for_life();
    operator.wait_ready();
    WithAlertmanager {
        operator,
        alertmanager,
    }
}

/// Alertmanager's alerts about one namespace, each as its labels plus `endsAt`.
pub async fn alerts_in(am: &str, ns: &str) -> Vec<std::collections::BTreeMap<String, String>> {
    let url = format!("{am}/api/v2/alerts?filter=namespace%3D%22{ns}%22");
    let v: serde_json::Value = ::reqwest::get(&url)
        .await
        .expect("GET alerts")
        .json()
        .await
        .expect("JSON");
    v.as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            let mut fields: std::collections::BTreeMap<String, String> =
                serde_json::from_value(a["labels"].clone()).unwrap_or_default();
            fields.insert(
                "endsAt".into(),
                a["endsAt"].as_str().unwrap_or_default().to_owned(),
            );
            fields
        })
        .collect()
}

/// GET `url`: the body as text.
pub async fn get_text(url: &str) -> String {
    ::reqwest::get(url)
        .await
        .expect("GET")
        .text()
        .await
        .expect("body")
}
