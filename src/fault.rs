//! Fault-injection points for the crash tests. With the `fault-injection` feature (test
//! builds only), a process whose SECRETGUARD_FAULT names a point kills itself with SIGKILL
//! when it gets there: no destructors, no flush, exactly like `kill -9`. Without the
//! feature, `point` compiles to nothing.

/// The points, in the order a restore passes them.
pub mod points {
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
}

#[cfg(feature = "fault-injection")]
pub fn point(name: &str) {
    if std::env::var("SECRETGUARD_FAULT").is_ok_and(|f| f == name) {
        eprintln!("secretguard: fault point {name} reached: SIGKILL");
        // SAFETY: getpid and kill have no preconditions; this ends the process.
        unsafe {
            libc::kill(libc::getpid(), libc::SIGKILL);
        }
    }
}

#[cfg(not(feature = "fault-injection"))]
#[inline(always)]
pub fn point(_name: &str) {}
