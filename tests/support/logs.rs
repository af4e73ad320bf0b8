//! Where the logs of a test go, and what a failed test keeps.
//!
//! - The operator processes a test starts log to `target/test-logs/<test>/operator-<name>.log`;
//!   the next run of the same test starts that directory's files afresh.
//! - Processes shared by a whole test binary (the in-process operator, observability's
//!   operator, Alertmanager) log to `target/test-logs/<binary>/`.
//! - When a test fails (panics), a panic hook keeps, in
//!   `target/test-logs/<test>/failed-<UTC time>/`: the test's own logs, and the part of each
//!   shared log and of each control plane log (`.cluster/logs/*.log`) written since the test
//!   began. It prints that directory under the panic message. Nothing removes or rewrites a
//!   `failed-*` directory; delete them by hand.
//!
//! "The test" is the thread libtest runs it on, which libtest names after the test. A test
//! begins the first time its thread asks for the control plane (`kubeconfig_path`) or for
//! a log directory; nothing needs calling by hand.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

use k8s_openapi::jiff::Timestamp;

use super::{cluster_dir, repo_root};

/// The most kept of one log, from its end.
const KEEP_AT_MOST: u64 = 64 << 20;

pub fn logs_root() -> PathBuf {
    repo_root().join("target/test-logs")
}

/// The running test's name, from its thread's; None outside a test (the bench's main
/// thread, runtime workers, helper threads).
pub fn test_name() -> Option<String> {
    let thread = std::thread::current();
    let name = thread.name()?;
    (name != "main" && !name.starts_with("tokio-")).then(|| name.replace("::", "-"))
}

/// This test binary's name, without the hash cargo appends: "faults", "e2e".
pub fn binary_name() -> String {
    let exe = std::env::current_exe().unwrap_or_default();
    let stem = exe.file_stem().and_then(|s| s.to_str()).unwrap_or("test");
    match stem.rsplit_once('-') {
        Some((name, hash)) if hash.chars().all(|c| c.is_ascii_hexdigit()) => name.to_owned(),
        _ => stem.to_owned(),
    }
}

/// The directory of the running test's logs (outside a test, the binary's), created if
/// need be.
pub fn test_dir() -> PathBuf {
    begin_test();
    let dir = logs_root().join(test_name().unwrap_or_else(binary_name));
    std::fs::create_dir_all(&dir).expect("create the test's log directory");
    dir
}

/// The directory of the logs of processes shared by this test binary.
pub fn binary_dir() -> PathBuf {
    let dir = logs_root().join(binary_name());
    std::fs::create_dir_all(&dir).expect("create the binary's log directory");
    dir
}

/// A new (emptied) log file in this binary's directory, for a process every test of the
/// binary shares. A failed test keeps the part written while it ran.
pub fn shared_log(name: &str) -> (PathBuf, File) {
    let path = binary_dir().join(name);
    let file = File::create(&path).expect("create log file");
    SHARED
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(path.clone());
    (path, file)
}

/// Logs of processes shared by this test binary.
static SHARED: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

struct TestRun {
    name: String,
    began_at: Timestamp,
    /// Where each shared and control plane log ended when the test began.
    began: BTreeMap<PathBuf, u64>,
    /// Where this test's logs were kept, once it failed.
    kept: Option<PathBuf>,
}

thread_local! {
    static RUN: RefCell<Option<TestRun>> = const { RefCell::new(None) };
}

/// Note that the running test has begun: where every shared and control plane log ends
/// now, and a fresh start for the test's own log directory. Once per test; nothing
/// outside a test.
pub fn begin_test() {
    let Some(name) = test_name() else {
        return;
    };
    static HOOK: Once = Once::new();
    HOOK.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            default(info);
            keep_logs_of_failed_test();
        }));
    });
    let _ = RUN.try_with(|run| {
        let Ok(mut run) = run.try_borrow_mut() else {
            return;
        };
        if run.is_some() {
            return;
        }
        // This run's logs replace the last run's; what a failed run kept stays.
        let dir = logs_root().join(&name);
        for file in files_in(&dir) {
            let _ = std::fs::remove_file(file);
        }
        let began = watched_logs()
            .into_iter()
            .map(|p| {
                let len = std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0);
                (p, len)
            })
            .collect();
        *run = Some(TestRun {
            name,
            began_at: Timestamp::now(),
            began,
            kept: None,
        });
    });
}

/// When the running test has failed: keep (again) one of its own logs, whole, in what it
/// keeps; for logs of processes stopped after the panic, such as an `OperatorProcess`.
pub fn keep_if_failed(log: &Path) {
    let _ = RUN.try_with(|run| {
        let Ok(run) = run.try_borrow() else {
            return;
        };
        if let (Some(kept), Some(name)) =
            (run.as_ref().and_then(|r| r.kept.as_ref()), log.file_name())
        {
            let _ = std::fs::copy(log, kept.join(name));
        }
    });
}

fn keep_logs_of_failed_test() {
    let _ = RUN.try_with(|run| {
        let Ok(mut run) = run.try_borrow_mut() else {
            return;
        };
        let Some(run) = run.as_mut() else {
            return;
        };
        if run.kept.is_some() {
            return; // a second panic, while unwinding: the first kept the logs
        }
        let Some(kept) = failed_dir(&logs_root().join(&run.name)) else {
            return;
        };
        let mut index = format!(
            "{} began at {} and failed at {}. Kept here (from byte N: what the log gained while the test ran):\n",
            run.name,
            run.began_at,
            Timestamp::now()
        );
        for own in files_in(&logs_root().join(&run.name)) {
            if let Some(name) = own.file_name() {
                index += &format!("- {}: the test's own, whole\n", name.to_string_lossy());
                let _ = std::fs::copy(&own, kept.join(name));
            }
        }
        let binary = binary_name();
        for shared in SHARED.lock().unwrap_or_else(|e| e.into_inner()).iter() {
            let name = shared.file_name().unwrap_or_default().to_string_lossy();
            let from = run.began.get(shared).copied().unwrap_or(0);
            let to = format!("{binary}-{name}");
            index += &format!("- {to}: {} from byte {from}\n", shared.display());
            copy_since(shared, from, &kept.join(to));
        }
        let control_plane = kept.join("control-plane");
        for log in files_in(&cluster_dir().join("logs")) {
            let _ = std::fs::create_dir_all(&control_plane);
            let from = run.began.get(&log).copied().unwrap_or(0);
            let name = log.file_name().unwrap_or_default();
            index += &format!(
                "- control-plane/{}: {} from byte {from}\n",
                name.to_string_lossy(),
                log.display()
            );
            copy_since(&log, from, &control_plane.join(name));
        }
        let _ = std::fs::write(kept.join("KEPT.txt"), index);
        eprintln!(
            "logs of this failed test (its operators', and the control plane's since it began) kept in {}",
            kept.display()
        );
        run.kept = Some(kept);
    });
}

/// A new `failed-<UTC time>` directory in `dir`.
fn failed_dir(dir: &Path) -> Option<PathBuf> {
    let stamp = k8s_openapi::jiff::Timestamp::now().strftime("%Y%m%dT%H%M%SZ");
    (0..100).find_map(|n| {
        let path = match n {
            0 => dir.join(format!("failed-{stamp}")),
            n => dir.join(format!("failed-{stamp}-{n}")),
        };
        std::fs::create_dir_all(dir).ok()?;
        std::fs::create_dir(&path).ok().map(|_| path)
    })
}

/// The logs a failed test keeps a part of: the shared ones, and the control plane's.
fn watched_logs() -> Vec<PathBuf> {
    let mut logs = SHARED.lock().unwrap_or_else(|e| e.into_inner()).clone();
    logs.extend(files_in(&cluster_dir().join("logs")));
    logs
}

/// The files (not directories) directly in `dir`.
fn files_in(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file())
        .collect()
}

/// Copy `src` from byte `from` to its end (the whole file if it is shorter now: it was
/// replaced), at most KEEP_AT_MOST from its end.
fn copy_since(src: &Path, from: u64, dst: &Path) {
    let Ok(mut file) = File::open(src) else {
        return;
    };
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let from = if from > len { 0 } else { from };
    let from = from.max(len.saturating_sub(KEEP_AT_MOST));
    if file.seek(SeekFrom::Start(from)).is_err() {
        return;
    }
    if let Ok(mut out) = File::create(dst) {
        let _ = std::io::copy(&mut file, &mut out);
    }
}
