//! `make demo` is part of `make test`: the outage replay must keep working end to end
//! (operator binary, real Alertmanager, real control plane). The script fails on any step
//! that does not happen as it says.

mod support;

use std::process::Command;

#[test]
fn the_demo_replays_the_outage_and_every_step_happens() {
    support::kubeconfig_path();
    let out = Command::new(support::repo_root().join("e2e/demo.sh"))
        .env("TOOLS_BIN", support::tools_bin())
        .env("SECRETGUARD_BIN", env!("CARGO_BIN_EXE_secretguard"))
        .output()
        .expect("run e2e/demo.sh");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "demo failed:\n{text}");
    for step in [
        "deploy deleted Secret ingest-writer-token",
        "restored with identical bytes; TokenReview verified it",
        "alert SecretGuardTokenDeleted raised in Alertmanager",
        "secretguard issued a fresh token at once",
        "the old token is rejected (HTTP 401)",
        "alert SecretGuardTokenRotated raised in Alertmanager",
    ] {
        assert!(text.contains(step), "the timeline lacks {step:?}:\n{text}");
    }
}
