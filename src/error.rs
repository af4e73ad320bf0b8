//! Crate-wide error types. Each variant of `Error` has a stable short reason, reused in
//! Events and metrics; errors keep their source.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("could not load Kubernetes client configuration: {0}")]
    Config(#[source] kube::config::InferConfigError),

    #[error("could not render CRD YAML: {0}")]
    Yaml(#[source] serde_yaml::Error),

    #[error("could not set up logging: {0}")]
    Telemetry(String),

    /// One action of a reconcile failed (the guard's Events and alerts say which).
    #[error("{action}: {source}")]
    Action {
        action: &'static str,
        #[source]
        source: ActionError,
    },

    /// Another replica holds the Lease, or it could not be renewed in time.
    #[error("lost leadership")]
    LostLeadership,

    #[error("HTTP server on {0} failed: {1}")]
    Http(std::net::SocketAddr, #[source] std::io::Error),

    /// A unit of work panicked; caught by the worker, which retries it with backoff.
    #[error("panicked: {0}")]
    Panicked(String),
}

impl Error {
    /// Stable short name, safe as an Event reason or metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeAPIError",
            Error::Config(_) => "ConfigError",
            Error::Yaml(_) => "YamlError",
            Error::Telemetry(_) => "TelemetryError",
            Error::Action { .. } => "ActionFailed",
            Error::LostLeadership => "LostLeadership",
            Error::Http(..) => "HTTPError",
            Error::Panicked(_) => "Panic",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

/// Why one action (a create, a patch, a delete the operator decided on) failed.
#[derive(Debug, Error)]
pub enum ActionError {
    #[error("Kubernetes API request failed: {0}")]
    Kube(#[source] kube::Error),

    #[error("no restore point to restore from")]
    MissingRestorePoint,

    #[error("no ServiceAccount snapshot")]
    MissingSnapshot,

    #[error("unreadable ServiceAccount snapshot")]
    BadSnapshot,

    /// The Secret cannot be saved as a restore point (`restore_point::Unsaveable`, in words).
    #[error("{0}")]
    Unsaveable(String),

    /// The restore point changed since this reconcile read it (409 on a save that carried
    /// the version read): read again and decide again, with backoff.
    #[error("the restore point changed since it was read")]
    StaleRestorePoint,

    /// The ServiceAccount to rotate changed since its snapshot was saved (409 on a delete
    /// that carried the version read): nothing was deleted; read, snapshot and try again.
    #[error("the ServiceAccount changed since its snapshot was saved")]
    StaleServiceAccount,

    /// The ServiceAccount a rotation deleted is still terminating (the garbage collector
    /// is orphaning its dependents): it is re-created once it is gone.
    #[error("the rotated ServiceAccount is still being deleted")]
    ServiceAccountTerminating,

    /// The Secret to label is gone (404): deleted since this reconcile read it. Never
    /// written as a stub: look again.
    #[error("the Secret was deleted since it was read")]
    Gone,
}

impl ActionError {
    /// The object changed under this reconcile: the one to create exists already
    /// (someone, or an earlier attempt of ours, was first), or the one to label is gone.
    /// Not a failure, a reason to look again.
    pub fn changed_meanwhile(&self) -> bool {
        self.is_already_exists() || matches!(self, ActionError::Gone)
    }

    /// The object to create exists already: its watch event brings the target back.
    pub fn is_already_exists(&self) -> bool {
        matches!(self, ActionError::Kube(kube::Error::Api(s)) if s.code == 409 && s.reason == "AlreadyExists")
    }
}

impl From<kube::Error> for ActionError {
    fn from(e: kube::Error) -> Self {
        ActionError::Kube(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
