//! Crate-wide error type. Each variant has a stable short reason, reused in Events and metrics.

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

    #[error("{0}")]
    Action(String),

    #[error("HTTP server on {0} failed: {1}")]
    Http(std::net::SocketAddr, #[source] std::io::Error),
}

impl Error {
    /// Stable short name, safe as an Event reason or metric label value.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::Kube(_) => "KubeAPIError",
            Error::Config(_) => "ConfigError",
            Error::Yaml(_) => "YamlError",
            Error::Telemetry(_) => "TelemetryError",
            Error::Action(_) => "ActionFailed",
            Error::Http(..) => "HTTPError",
        }
    }
}

impl From<kube::Error> for Error {
    fn from(e: kube::Error) -> Self {
        Error::Kube(e)
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
