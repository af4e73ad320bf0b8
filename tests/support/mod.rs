//! Shared by the integration tests and the bench (benches/e2e.rs includes it by path): one
//! real control plane per test binary (started once, or reused when `make cluster` already
//! runs one), a fresh namespace per test, the operator in this process or as processes of
//! its own, and waits that poll a condition against a deadline.
//!
//! By file:
//! - `cluster`: the control plane, clients, kubectl, test namespaces, the CRDs;
//! - `logs`: where each test's logs go, and what a failed test keeps;
//! - `operator`: the operator inside the test process, shared by a test binary;
//! - `operator_process`: the operator binary as a process of its own (`OperatorProcess`);
//! - `process`: processes that live as long as the test binary, free ports, HTTP probes;
//! - `alertmanager`: a real Alertmanager;
//! - `guards`: SecretGuards, their status, restore points;
//! - `tokens`: ServiceAccounts, their token Secrets, who a token is;
//! - `events`: Events;
//! - `helm`: the helm binary and what the chart renders.
#![allow(dead_code)] // each test binary uses a different part of this module

mod alertmanager;
mod cluster;
mod events;
mod guards;
mod helm;
mod logs;
mod operator;
mod operator_process;
mod process;
mod tokens;

// Each test binary uses some of them.
#[allow(unused_imports)]
pub use {
    alertmanager::*, cluster::*, events::*, guards::*, helm::*, logs::*, operator::*,
    operator_process::*, process::*, tokens::*,
};

use std::future::Future;
use std::path::PathBuf;
use std::time::{Duration, Instant};

/// How long a wait may take before the test fails. Generous: the machine is small and a
/// busy controller-manager can be slow; a passing wait returns as soon as it holds.
pub const DEADLINE: Duration = Duration::from_secs(60);

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The commit an upgrade starts from (the Makefile's UPGRADE_FROM): `make tools` builds
/// the operator at it.
pub fn upgrade_from() -> String {
    std::env::var("UPGRADE_FROM").unwrap_or_else(|_| "daddc86".into())
}

pub fn tools_bin() -> PathBuf {
    std::env::var_os("TOOLS_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin"))
}

/// Poll `check` until it returns `Some`, or fail the test after `DEADLINE` with `what`.
pub async fn wait_for<T, F, Fut>(what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    wait_for_within(DEADLINE, what, &mut check).await
}

pub async fn wait_for_within<T, F, Fut>(deadline: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let start = Instant::now();
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(
            start.elapsed() < deadline,
            "timed out after {deadline:?} waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
