//! Test fixtures: small builders of guards.

use crate::api::v1alpha1::{SecretGuard, SecretGuardSpec, SecretTarget, ServiceAccountTarget};

/// A spec guarding the tokens of these ServiceAccounts and these Secrets, defaults
/// otherwise.
pub fn spec(service_accounts: &[&str], secrets: &[&str]) -> SecretGuardSpec {
    SecretGuardSpec {
        service_accounts: service_accounts
            .iter()
            .map(|n| ServiceAccountTarget {
                name: (*n).into(),
                token_secret_name: None,
                recreate_service_account: false,
            })
            .collect(),
        secrets: secrets
            .iter()
            .map(|n| SecretTarget { name: (*n).into() })
            .collect(),
        secret_selector: None,
        restore: Default::default(),
        revalidate: true,
        severity: Default::default(),
        paused: false,
        restore_delay_seconds: None,
    }
}

pub fn guard(namespace: &str, name: &str, spec: SecretGuardSpec) -> SecretGuard {
    let mut g = SecretGuard::new(name, spec);
    g.metadata.namespace = Some(namespace.into());
    g
}

// ---------------------------------------------------------------------------------------
// A mock apiserver for unit tests of the reconcile steps (the Linkerd discipline): the
// test scripts every request it expects, in order, with the reply; any request off the
// script fails the test, and so does any request left over once the step is done.

use futures::FutureExt;
use http::{Method, Request, Response, StatusCode};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::client::Body;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::Lookup;
use kube::runtime::watcher;
use serde_json::{Value, json};

use super::context::{Context, StoreWriters};
use crate::cache::{CachedRestorePoint, CachedSecret};
use crate::config::Config;
use crate::controller::triggers::{Seen, admit_secret};

pub const OPERATOR_NAMESPACE: &str = "secretguard-system";

/// A request the mock received: method, path with query, and the JSON body (Null if none).
#[derive(Clone, Debug)]
pub struct Received {
    pub method: Method,
    pub uri: String,
    pub body: Value,
}

impl Received {
    pub fn path(&self) -> &str {
        self.uri.split('?').next().unwrap_or_default()
    }
}

/// How the mock answers one expected request.
pub enum Reply {
    /// 200 with the request's own body (creates and patches).
    Echo,
    /// 201 with the request's body, given a uid (creates).
    Created,
    /// This status code and JSON body.
    Json(u16, Value),
    /// 404 Not Found.
    NotFound,
}

/// One expected request: method and path (no query), and the reply.
pub struct Expect {
    pub method: Method,
    pub path: String,
    pub reply: Reply,
}

pub fn expect(method: Method, path: impl Into<String>, reply: Reply) -> Expect {
    Expect {
        method,
        path: path.into(),
        reply,
    }
}

pub struct ApiServer {
    handle: tower_test::mock::Handle<Request<Body>, Response<Body>>,
}

impl ApiServer {
    /// Answer exactly `script`, in order; returns what was received.
    pub async fn serve(&mut self, script: Vec<Expect>) -> Vec<Received> {
        let mut received = Vec::new();
        for (i, step) in script.into_iter().enumerate() {
            let next = tokio::time::timeout(
                std::time::Duration::from_secs(5),
                self.handle.next_request(),
            )
            .await;
            let Ok(Some((request, respond))) = next else {
                panic!(
                    "expected request {i}: {} {}, none came (received so far: {received:#?})",
                    step.method, step.path
                );
            };
            let got = read(request).await;
            assert_eq!(
                (&got.method, got.path()),
                (&step.method, step.path.as_str()),
                "request {i} (received so far: {received:#?})"
            );
            let (status, body) = match step.reply {
                Reply::Echo => (200, got.body.clone()),
                Reply::Created => {
                    let mut body = got.body.clone();
                    body["metadata"]["uid"] = json!(format!("uid-{i}"));
                    (201, body)
                }
                Reply::Json(status, body) => (status, body),
                Reply::NotFound => (
                    404,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "NotFound", "code": 404, "message": "not found"}),
                ),
            };
            respond.send_response(
                Response::builder()
                    .status(StatusCode::from_u16(status).unwrap_or(StatusCode::OK))
                    .body(Body::from(serde_json::to_vec(&body).unwrap_or_default()))
                    .expect("a response"),
            );
            received.push(got);
        }
        received
    }

    /// Nothing else was sent. Exact: the client hands a request to the mock before it
    /// waits for the reply, so once the step under test returned, every request it made
    /// is already here.
    pub fn assert_nothing_else(&mut self) {
        if let Some(Some((request, _))) = self.handle.next_request().now_or_never() {
            panic!("unexpected request: {} {}", request.method(), request.uri());
        }
    }
}

async fn read(request: Request<Body>) -> Received {
    let method = request.method().clone();
    let uri = request.uri().to_string();
    let bytes = request
        .into_body()
        .collect_bytes()
        .await
        .unwrap_or_default();
    let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
    Received { method, uri, body }
}

pub fn config() -> Config {
    Config {
        operator_namespace: OPERATOR_NAMESPACE.into(),
        audit_interval: std::time::Duration::from_secs(300),
        populate_deadline: std::time::Duration::from_secs(30),
        workers: 1,
        instance: "unit-test".into(),
        restore_point_retention: std::time::Duration::from_secs(24 * 3600),
        restore_loop_limit: 5,
        restore_loop_window: std::time::Duration::from_secs(600),
        migration_rate: 10.0,
        alertmanager_urls: Vec::new(),
        runbook_base_url: String::new(),
        leader: None,
    }
}

/// A client of a mock apiserver, and the mock.
pub fn mock_client() -> (Client, ApiServer) {
    let (service, api) = mock_service();
    (Client::new(service, "default"), api)
}

/// The service end of a mock apiserver (for a client with layers of its own), and the mock.
pub fn mock_service() -> (
    tower_test::mock::Mock<Request<Body>, Response<Body>>,
    ApiServer,
) {
    let (service, handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
    (service, ApiServer { handle })
}

/// A Context over a mock apiserver, with empty caches and their writers.
pub fn context() -> (Context, StoreWriters, ApiServer) {
    let (client, api) = mock_client();
    let (ctx, writers) = Context::new(client, config());
    (ctx, writers, api)
}

/// Put an object into a cache, as its watch would (a Secret reduced as the Secret and
/// restore-point caches keep it).
pub fn cache<K>(writer: &mut kube::runtime::reflector::store::Writer<K>, obj: impl Into<K>)
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Clone + Default + Eq + std::hash::Hash,
{
    writer.apply_watcher_event(&watcher::Event::Apply(obj.into()));
}

/// Take an object out of a cache, as its watch would on deletion.
pub fn uncache<K>(writer: &mut kube::runtime::reflector::store::Writer<K>, obj: impl Into<K>)
where
    K: Lookup + Clone + 'static,
    K::DynamicType: Clone + Default + Eq + std::hash::Hash,
{
    writer.apply_watcher_event(&watcher::Event::Delete(obj.into()));
}

/// A guarded Secret as the Secret cache keeps it.
impl From<Secret> for CachedSecret {
    fn from(secret: Secret) -> CachedSecret {
        CachedSecret::detailed(&secret)
    }
}

/// A restore point as the restore-point cache keeps it.
impl From<Secret> for CachedRestorePoint {
    fn from(point: Secret) -> CachedRestorePoint {
        CachedRestorePoint::of(&point)
    }
}

/// A Secret's watch event, as the operator handles it: reduced for the cache (and its
/// content kept for the reconcile when it needs it).
pub fn secret_event(ctx: &Context, writers: &mut StoreWriters, secret: Secret, seen: Seen) {
    let cached = admit_secret(ctx, secret, seen);
    match seen {
        Seen::Deleted => uncache(&mut writers.secrets, cached),
        _ => cache(&mut writers.secrets, cached),
    }
}

pub fn namespace(name: &str) -> PartialObjectMeta<Namespace> {
    let mut ns = PartialObjectMeta::<Namespace>::default();
    ns.metadata.name = Some(name.into());
    ns.metadata.uid = Some(format!("{name}-uid"));
    ns
}

pub fn service_account(
    namespace: &str,
    name: &str,
    uid: &str,
) -> PartialObjectMeta<ServiceAccount> {
    let mut sa = PartialObjectMeta::<ServiceAccount>::default();
    sa.metadata.name = Some(name.into());
    sa.metadata.namespace = Some(namespace.into());
    sa.metadata.uid = Some(uid.into());
    sa.metadata.resource_version = Some("1".into());
    sa
}

/// A populated legacy token Secret of `sa`, labelled guarded.
pub fn token_secret(namespace: &str, name: &str, sa: &str, sa_uid: &str, token: &[u8]) -> Secret {
    serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": {
            "name": name, "namespace": namespace, "uid": format!("{name}-uid"),
            "resourceVersion": "5",
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {crate::labels::GUARDED: "true"},
            "annotations": {
                crate::labels::SA_NAME_ANNOTATION: sa,
                crate::labels::SA_UID_ANNOTATION: sa_uid,
            },
        },
        "type": crate::labels::TOKEN_TYPE,
        "data": {"token": k8s_openapi::ByteString(token.to_vec()), "namespace": k8s_openapi::ByteString(namespace.as_bytes().to_vec())},
    }))
    .unwrap_or_default()
}
