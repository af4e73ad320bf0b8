//! Well-known label and annotation keys, ours and Kubernetes'.

/// On every guarded Secret, so the operator's watch is label-filtered on the server.
pub const GUARDED: &str = "secretguard.dev/guarded";
/// Set by a user on a guarded token Secret to ask for a fresh token.
pub const ROTATE: &str = "secretguard.dev/rotate";
/// Set by a user on a guarded Secret (token or not) to retire it on purpose: it is not
/// restored or revalidated any more, and its restore point is forgotten.
pub const RETIRE: &str = "secretguard.dev/retire";
/// On a restore point that holds no data, only why the name must not be re-created:
/// `Retired` (retired on purpose) or `TargetConflict` (the name holds a Secret that is not
/// the guarded ServiceAccount's token). Kept among the saved origin annotations.
pub const TOMBSTONE: &str = "secretguard.dev/tombstone";
/// On every restore point.
pub const RESTORE_POINT: &str = "secretguard.dev/restore-point";
/// On every restore point: the namespace of the Secret it saves.
pub const ORIGIN_NAMESPACE: &str = "secretguard.dev/origin-namespace";
/// On a Secret secretguard re-created: the UID of the deleted Secret it replaces. Lets a
/// restore be counted exactly once, even across a crash.
pub const RESTORED_FROM: &str = "secretguard.dev/restored-from";
/// On a SecretGuard: a new value resumes the restores its restore-loop breaker stopped.
pub const RESUME_RESTORES: &str = "secretguard.dev/resume-restores";
/// Field manager for server-side apply, and the Event reporter.
pub const MANAGER: &str = "secretguard";

/// Type of a legacy ServiceAccount token Secret.
pub const TOKEN_TYPE: &str = "kubernetes.io/service-account-token";
/// Names the ServiceAccount of a token Secret.
pub const SA_NAME_ANNOTATION: &str = "kubernetes.io/service-account.name";
/// UID of that ServiceAccount, written by the tokens controller.
pub const SA_UID_ANNOTATION: &str = "kubernetes.io/service-account.uid";
/// Written by the legacy token cleaner; the token is rejected while it is present.
pub const LEGACY_TOKEN_INVALID_SINCE: &str = "kubernetes.io/legacy-token-invalid-since";
/// The field manager of kube-controller-manager's writes, the legacy token cleaner's
/// included (the apiserver names a manager after the client's user agent).
pub const CONTROLLER_MANAGER: &str = "kube-controller-manager";
/// Written by the apiserver on successful use (a date, at most once a day).
pub const LEGACY_TOKEN_LAST_USED: &str = "kubernetes.io/legacy-token-last-used";
