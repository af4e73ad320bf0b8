//! `SecretGuard` (secretguard.dev/v1alpha1): what a user declares critical, and what the
//! operator reports back. Types only; validation lives in the schema (OpenAPI + CEL) so the
//! apiserver refuses bad objects with a readable message.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, LabelSelector, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Regex of a DNS-1123 subdomain: what Kubernetes accepts as a Secret or ServiceAccount name.
pub const DNS1123_SUBDOMAIN: &str =
    "^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$";

/// Entries allowed in each list of a guard.
pub const MAX_LIST_ENTRIES: usize = 256;

/// The wait before a deleted generic Secret is restored, unless the guard says otherwise:
/// a CD tool that deletes and at once re-creates it (`kubectl replace --force`, Helm's
/// before-hook-creation, Argo CD `Replace=true`) gets its create in first, and its content
/// is kept. Token Secrets are restored at once unless the guard says otherwise.
pub const DEFAULT_SECRET_RESTORE_DELAY_SECONDS: i32 = 2;

/// The longest restore delay a guard may ask for.
pub const MAX_RESTORE_DELAY_SECONDS: i32 = 300;

/// Guards critical Secrets and ServiceAccount tokens in the guard's own namespace.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "secretguard.dev",
    version = "v1alpha1",
    kind = "SecretGuard",
    namespaced,
    shortname = "sguard",
    category = "secretguard",
    status = "SecretGuardStatus",
    doc = "SecretGuard declares the Secrets and ServiceAccount tokens of its namespace that must not go missing. secretguard saves each, and when one is deleted or invalidated it alerts and brings it back (the same token bytes where Kubernetes allows). Fields: kubectl explain secretguard.spec; what happened: kubectl describe secretguard.",
    printcolumn = r#"{"name":"Ready","type":"string","jsonPath":".status.conditions[?(@.type==\"Ready\")].status"}"#,
    printcolumn = r#"{"name":"Guarded","type":"integer","jsonPath":".status.guarded"}"#,
    printcolumn = r#"{"name":"Missing","type":"integer","jsonPath":".status.missing"}"#,
    printcolumn = r#"{"name":"Restores","type":"integer","jsonPath":".status.restores"}"#,
    printcolumn = r#"{"name":"Last Incident","type":"string","jsonPath":".status.lastIncident.reason"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct SecretGuardSpec {
    /// ServiceAccounts whose long-lived token Secret is critical, each named once. (Two
    /// entries sharing a tokenSecretName are refused by the operator, InvalidSpec.)
    //
    // A list-map keyed by name: the apiserver refuses a name listed twice in O(n), and
    // server-side apply merges entries by name. A CEL uniqueness rule would be O(n²) and,
    // as CEL runs on every status write too, cost the apiserver ~65 ms per write at 100
    // entries (measured by `make bench`, see BENCHMARKS.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub service_accounts: Vec<ServiceAccountTarget>,

    /// Other Secrets, of any type, that must not go missing, each named once.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 256))]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["name"]))]
    pub secrets: Vec<SecretTarget>,

    /// Every Secret in the namespace with these labels is guarded too.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_selector: Option<LabelSelector>,

    /// How a deleted object comes back: Identical (from the restore point, same bytes), Fresh
    /// (token Secrets re-created empty for the tokens controller to fill), Never (alert only;
    /// "Off", the earlier spelling, is still accepted).
    #[serde(default)]
    pub restore: RestoreMode,

    /// Remove kubernetes.io/legacy-token-invalid-since from guarded tokens when the legacy
    /// token cleaner set it; a label anyone else set (to disable a token) always stays.
    #[serde(default = "default_true")]
    #[schemars(default = "default_true")]
    pub revalidate: bool,

    /// Copied into alerts and Events.
    #[serde(default)]
    pub severity: Severity,

    /// Maintenance: keep alerting, write nothing.
    #[serde(default)]
    pub paused: bool,

    /// Seconds to wait before re-creating a deleted Secret, 0 to 300. A Secret created
    /// under its name meanwhile (a CD tool replacing it) is kept, and its content becomes
    /// the restore point. Default: 2 for Secrets, 0 (at once) for ServiceAccount tokens.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    // A CEL rule, not minimum/maximum: those are floats in a CRD (300.0), which Helm's
    // YAML round trip turns into 300, so the chart's CRD would differ from crds/.
    #[x_kube(validation = Rule::new("self >= 0 && self <= 300")
        .message("must be from 0 to 300 (seconds)"))]
    pub restore_delay_seconds: Option<i32>,
}

impl SecretGuardSpec {
    /// The restore delay this guard asks for, in seconds, for a token Secret (`token`) or
    /// another Secret: its own value, else the default of that kind.
    pub fn restore_delay_seconds_for(&self, token: bool) -> i32 {
        let default = if token {
            0
        } else {
            DEFAULT_SECRET_RESTORE_DELAY_SECONDS
        };
        self.restore_delay_seconds
            .unwrap_or(default)
            .clamp(0, MAX_RESTORE_DELAY_SECONDS)
    }
}

fn default_true() -> bool {
    true
}

/// A ServiceAccount whose legacy token Secret is guarded.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("has(self.tokenSecretName) || size(self.name) <= 247")
    .message("name is too long for the default tokenSecretName '<name>-token': set tokenSecretName"))]
pub struct ServiceAccountTarget {
    /// Name of the ServiceAccount in the guard's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("must be a valid Kubernetes name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,

    /// Name of the token Secret; default "<name>-token".
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("must be a valid Kubernetes name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub token_secret_name: Option<String>,

    /// Re-create the ServiceAccount itself, from its last snapshot, when it is deleted.
    #[serde(default)]
    pub recreate_service_account: bool,
}

impl ServiceAccountTarget {
    /// The token Secret's name, defaulted.
    pub fn token_secret_name(&self) -> String {
        self.token_secret_name
            .clone()
            .unwrap_or_else(|| format!("{}-token", self.name))
    }
}

/// A Secret guarded by name.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
pub struct SecretTarget {
    /// Name of the Secret in the guard's namespace.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')")
        .message("must be a valid Kubernetes name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
}

/// How a deleted object is brought back.
///
/// - Identical: re-create with the same bytes, so every holder of the old token keeps working.
/// - Fresh: re-create token Secrets empty; the tokens controller fills them (for an
///   unchanged ServiceAccount that is the same token: legacy tokens are deterministic).
/// - Never: alert only; write nothing. `Off`, its earlier spelling, is still accepted (it
///   must be quoted: YAML 1.1, which kubectl and Helm read, takes a bare Off for false).
//
// The schema lists "Off" too, or the apiserver would refuse guards written before.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[schemars(extend("enum" = ["Identical", "Fresh", "Never", "Off"]))]
pub enum RestoreMode {
    #[default]
    Identical,
    Fresh,
    #[serde(alias = "Off")]
    Never,
}

/// Severity copied into alerts and Events.
#[derive(JsonSchema, Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    #[default]
    Critical,
    Warning,
}

impl Severity {
    /// As written in the spec, alerts and Events.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Critical => "critical",
            Severity::Warning => "warning",
        }
    }
}

/// What the operator observed, for `kubectl get` / `describe`.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct SecretGuardStatus {
    /// The generation this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,

    /// Ready, Degraded and Overlap.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[x_kube(merge_strategy = ListMerge::Map(vec!["type".into()]))]
    pub conditions: Vec<Condition>,

    /// Objects guarded by this guard.
    #[serde(default)]
    pub guarded: i32,

    /// Guarded objects currently missing.
    #[serde(default)]
    pub missing: i32,

    /// Restores made since the guard was created.
    #[serde(default)]
    pub restores: i64,

    /// The most recent incident.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_incident: Option<Incident>,

    /// Per-object state; only unhealthy objects when the guard is large, and at most
    /// 50 of them (the Degraded condition counts the rest).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub targets: Vec<TargetStatus>,

    /// The spec in force, as JSON: the last valid one. While the current spec is invalid
    /// (Ready=False, InvalidSpec) the operator keeps guarding with it, across restarts and
    /// failovers. Written by the operator only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub spec_in_force: Option<String>,
}

/// One incident: something happened to a guarded object, and what the operator did.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct Incident {
    /// When the operator saw it.
    pub time: Time,
    /// Kind of the affected object: ServiceAccountToken, Secret or ServiceAccount.
    pub kind: String,
    /// Name of the affected object, in the guard's namespace.
    pub name: String,
    /// Stable reason, also the Event reason: TokenDeleted, TokenInvalidated, ...
    pub reason: String,
    /// What the operator did: Restored, RestoredFresh, Revalidated, AlertOnly, Failed, ...
    pub outcome: String,
    /// From seeing the object missing to it existing again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_seconds: Option<f64>,
}

/// State of one guarded object.
#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct TargetStatus {
    /// ServiceAccountToken or Secret.
    pub kind: String,
    pub name: String,
    /// Healthy, Missing, Invalidated, NotPopulated, ServiceAccountMissing, ...
    pub state: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
