//! Fault-injection points for the crash tests. With the `fault-injection` feature (test
//! builds only), a process whose SECRETGUARD_FAULT names a point kills itself with SIGKILL
//! when it gets there: no destructors, no flush, exactly like `kill -9`. `stop:<point>`
//! stops it there with SIGSTOP instead (a paused leader: the test sends SIGCONT), and
//! `panic:<point>` panics there (a bug in one reconcile); each of those two only the
//! first time. Without the feature, `point` compiles to nothing.

/// The points: the one a newly guarded Secret passes, those in the order a restore passes
/// them, then the one a rotation passes.
pub mod points {
    /// A Secret newly guarded (or whose label was taken off) is about to be labelled.
    pub const LABEL_NOT_SENT: &str = "label-not-sent";
    /// A deletion was seen and reported; its restore waits for the restore delay.
    pub const RESTORE_PENDING: &str = "restore-pending";
    /// A deletion was seen and a restore decided; nothing written yet.
    pub const DELETION_SEEN: &str = "deletion-seen";
    /// The restore point was read and the Secret to create built.
    pub const RESTORE_POINT_READ: &str = "restore-point-read";
    /// The create was sent and succeeded; the restore is not recorded anywhere yet.
    pub const CREATE_SENT: &str = "create-sent";
    /// The restore point is about to be refreshed, counting the restore.
    pub const COUNT_NOT_SAVED: &str = "count-not-saved";
    /// The guard's status is about to be written.
    pub const STATUS_NOT_WRITTEN: &str = "status-not-written";
    /// A rotation deleted the ServiceAccount (its snapshot marked as rotating); the
    /// create that brings it back is not sent yet.
    pub const SERVICE_ACCOUNT_DELETED: &str = "service-account-deleted";
}

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    use std::sync::atomic::{AtomicBool, Ordering};
    // A stop or a panic happens once per process: the test resumes it, or the retry runs.
    static FIRED: AtomicBool = AtomicBool::new(false);
    let Ok(fault) = std::env::var("SECRETGUARD_FAULT") else {
        return;
    };
    let (how, at) = fault.split_once(':').unwrap_or(("kill", &fault));
    if at != name {
        return;
    }
    match how {
        "stop" if !FIRED.swap(true, Ordering::SeqCst) => {
            eprintln!("secretguard: fault point {name} reached: SIGSTOP");
            // SAFETY: as below; the process stops here until it gets SIGCONT.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGSTOP);
            }
        }
        "panic" if !FIRED.swap(true, Ordering::SeqCst) => {
            panic!("fault point {name} reached: panic")
        }
        "kill" => {
            eprintln!("secretguard: fault point {name} reached: SIGKILL");
            // SAFETY: getpid and kill have no preconditions; this ends the process.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
        _ => {}
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
