//! A real Alertmanager, for tests and the bench that check what the operator pushes.

use std::process::Command;
use std::time::{Duration, Instant};

use super::{DEADLINE, free_port, http_ok, spawn_for_life, test_log, tools_bin};

/// A real Alertmanager on a free loopback port, living as long as this process, with a
/// receiver that drops notifications (tests read alerts from its API). Returns its URL,
/// once it is ready.
pub fn start_alertmanager(log: &str) -> String {
    let port = free_port();
    let dir = std::env::temp_dir().join(format!("sg-alertmanager-{}-{log}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("alertmanager dir");
    let config = dir.join("alertmanager.yml");
    std::fs::write(
        &config,
        "route:\n  receiver: blackhole\nreceivers:\n  - name: blackhole\n",
    )
    .expect("alertmanager config");
    let mut cmd = Command::new(tools_bin().join("alertmanager"));
    cmd.arg(format!("--config.file={}", config.display()))
        .arg(format!("--storage.path={}", dir.display()))
        .arg(format!("--web.listen-address=127.0.0.1:{port}"))
        .arg("--cluster.listen-address=")
        .stdout(std::process::Stdio::null())
        .stderr(test_log(log));
    spawn_for_life(cmd);
    let url = format!("http://127.0.0.1:{port}");
    let start = Instant::now();
    while !http_ok(&format!("{url}/-/ready")) {
        assert!(
            start.elapsed() < DEADLINE,
            "Alertmanager never became ready"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    url
}
