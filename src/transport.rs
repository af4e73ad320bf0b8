//! How requests leave the process: two clients and the layers of their service stack.
//!
//! - Request-response calls get a client whose reads and writes time out after
//!   `REQUEST_TIMEOUT`, with no retries inside it: a hung or refused call comes back to the
//!   worker, which retries with backoff. Watches get a client of their own with kube's
//!   long defaults (a watch is quiet for minutes by design). Security review B15.
//! - `Fence`: no write leaves the process once its leader Lease may have passed (B7). The
//!   election (src/leader.rs) opens it until the last renewal plus the renew deadline, and
//!   closes it on step-down; the check is made as each request is sent, so it covers every
//!   write, whichever step makes it.
//! - `KeepRetryAfter`: a 429's `Retry-After` header reaches the caller in the error's
//!   `details.retryAfterSeconds` (the apiserver's own 429s carry it only as a header, with
//!   a plain-text body), so the worker's backoff can honour it.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Either, Full};
use kube::Client;
use kube::client::ClientBuilder;
use kube::core::response::{Status, StatusDetails};
use tokio::sync::watch;
use tokio::time::Instant;
use tower::{BoxError, Layer, Service};

use crate::throttle::ThrottleLayer;

/// The longest a request-response call may wait to be sent or for its answer.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// The two clients of a run, and the fence both send through.
#[derive(Clone)]
pub struct Clients {
    /// Request-response calls: reads, writes, reviews, the Lease.
    pub requests: Client,
    /// Watches (and the lists that start them).
    pub watches: Client,
    pub fence: Fence,
}

impl Clients {
    /// One client for both, unfenced at the transport (tests over a mock apiserver, an
    /// operator inside a test process).
    pub fn single(client: Client) -> Clients {
        Clients {
            requests: client.clone(),
            watches: client,
            fence: Fence::unfenced(),
        }
    }

    /// The clients of the operator binary: both through one request budget (`throttle`)
    /// and `fence`; requests bounded by `REQUEST_TIMEOUT` and never retried inside the
    /// client; watches with kube's defaults.
    pub fn build(
        config: kube::Config,
        throttle: &ThrottleLayer,
        fence: Fence,
    ) -> Result<Clients, kube::Error> {
        let build = |config: kube::Config| -> Result<Client, kube::Error> {
            Ok(ClientBuilder::try_from(config)?
                .with_layer(&KeepRetryAfterLayer)
                .with_layer(&fence.layer())
                .with_layer(throttle)
                .build())
        };
        Ok(Clients {
            requests: build(request_config(config.clone()))?,
            watches: build(config)?,
            fence,
        })
    }
}

/// The settings of the request client: `REQUEST_TIMEOUT` to connect, send and read,
/// counted from each request (not from when its pooled connection went idle), and no
/// retries inside the client: kube's would resend a 429 or 503 for minutes, past any
/// timeout and past the fence's check.
pub fn request_config(mut config: kube::Config) -> kube::Config {
    config.connect_timeout = Some(REQUEST_TIMEOUT);
    config.read_timeout = Some(REQUEST_TIMEOUT);
    config.write_timeout = Some(REQUEST_TIMEOUT);
    config.reset_reader_on_write = true;
    config.default_retry = false;
    config
}

// ---------------------------------------------------------------------------------------
// The fence.

/// Whether this process may write to the cluster now. Without leader election it always
/// may; a candidate may only until the instant its last renewal allows.
#[derive(Clone, Debug)]
pub struct Fence(Option<Arc<watch::Sender<Option<Instant>>>>);

impl Fence {
    /// Always open: a process that does not take part in leader election.
    pub fn unfenced() -> Fence {
        Fence(None)
    }

    /// Closed until `open_until`: a candidate of leader election.
    pub fn closed() -> Fence {
        Fence(Some(Arc::new(watch::Sender::new(None))))
    }

    /// Writes may go out until `until` (the Lease was renewed).
    pub fn open_until(&self, until: Instant) {
        if let Some(tx) = &self.0 {
            tx.send_replace(Some(until));
        }
    }

    /// No write goes out any more (leadership lost or given up).
    pub fn close(&self) {
        if let Some(tx) = &self.0 {
            tx.send_replace(None);
        }
    }

    pub fn is_open(&self) -> bool {
        match &self.0 {
            None => true,
            Some(tx) => tx.borrow().is_some_and(|until| Instant::now() < until),
        }
    }

    /// Wait until writes may go out.
    pub async fn opened(&self) {
        let Some(tx) = &self.0 else {
            return;
        };
        let mut rx = tx.subscribe();
        loop {
            if rx
                .borrow_and_update()
                .is_some_and(|until| Instant::now() < until)
            {
                return;
            }
            // The sender lives as long as this fence.
            let _ = rx.changed().await;
        }
    }

    pub fn layer(&self) -> FenceLayer {
        FenceLayer(self.clone())
    }
}

/// A write the fence kept in: the Lease may have passed, so another process may lead.
#[derive(Debug, thiserror::Error)]
#[error("not sent: this process may no longer hold the leader Lease")]
pub struct NotLeading;

/// Whether a request failed because the fence kept it in.
pub fn is_not_leading(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Service(e) if e.is::<NotLeading>())
}

/// Requests that write nothing the election protects: the election's own Lease, and
/// reviews (TokenReview, SubjectAccessReview), which are created but never stored.
const UNFENCED_PATHS: &[&str] = &[
    "/apis/coordination.k8s.io/",
    "/apis/authentication.k8s.io/",
    "/apis/authorization.k8s.io/",
];

fn is_write<B>(req: &Request<B>) -> bool {
    let read = matches!(*req.method(), Method::GET | Method::HEAD | Method::OPTIONS);
    !read
        && !UNFENCED_PATHS
            .iter()
            .any(|p| req.uri().path().starts_with(p))
}

#[derive(Clone)]
pub struct FenceLayer(Fence);

impl<S> Layer<S> for FenceLayer {
    type Service = Fenced<S>;

    fn layer(&self, inner: S) -> Fenced<S> {
        Fenced {
            inner,
            fence: self.0.clone(),
        }
    }
}

pub struct Fenced<S> {
    inner: S,
    fence: Fence,
}

type BoxedFuture<T> = Pin<Box<dyn Future<Output = Result<T, BoxError>> + Send>>;

impl<S, B> Service<Request<B>> for Fenced<S>
where
    S: Service<Request<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = BoxError;
    type Future = BoxedFuture<S::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        if is_write(&req) && !self.fence.is_open() {
            tracing::warn!(method = %req.method(), path = req.uri().path(), "write refused: the leader Lease may have passed");
            return Box::pin(async { Err(Box::new(NotLeading) as BoxError) });
        }
        let sent = self.inner.call(req);
        Box::pin(async move { sent.await.map_err(Into::into) })
    }
}

// ---------------------------------------------------------------------------------------
// Retry-After.

#[derive(Clone)]
pub struct KeepRetryAfterLayer;

impl<S> Layer<S> for KeepRetryAfterLayer {
    type Service = KeepRetryAfter<S>;

    fn layer(&self, inner: S) -> KeepRetryAfter<S> {
        KeepRetryAfter { inner }
    }
}

pub struct KeepRetryAfter<S> {
    inner: S,
}

impl<S, ReqBody, B> Service<Request<ReqBody>> for KeepRetryAfter<S>
where
    S: Service<Request<ReqBody>, Response = Response<B>>,
    S::Error: Into<BoxError>,
    S::Future: Send + 'static,
    B: http_body::Body<Data = Bytes> + Send + 'static,
    B::Error: Into<BoxError>,
{
    type Response = Response<Either<B, Full<Bytes>>>;
    type Error = BoxError;
    type Future = BoxedFuture<Self::Response>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, req: Request<ReqBody>) -> Self::Future {
        let sent = self.inner.call(req);
        Box::pin(async move {
            let res = sent.await.map_err(Into::into)?;
            let retry_after = (res.status() == StatusCode::TOO_MANY_REQUESTS)
                .then(|| res.headers().get(http::header::RETRY_AFTER))
                .flatten()
                .and_then(|v| v.to_str().ok()?.trim().parse::<u32>().ok());
            let Some(seconds) = retry_after else {
                return Ok(res.map(Either::Left));
            };
            let (parts, body) = res.into_parts();
            let text = body.collect().await.map_err(Into::into)?.to_bytes();
            let status = with_retry_after(&text, seconds);
            let body = serde_json::to_vec(&status).map_err(Box::new)?;
            Ok(Response::from_parts(
                parts,
                Either::Right(Full::new(body.into())),
            ))
        })
    }
}

/// The Status of a 429 answer, with `retry_after` in its details: the apiserver's own
/// Status if the body is one, else one made from the plain-text message.
fn with_retry_after(body: &[u8], retry_after: u32) -> Status {
    let mut status = serde_json::from_slice::<Status>(body)
        .ok()
        .filter(|s| s.code != 0)
        .unwrap_or_else(|| {
            Status::failure(String::from_utf8_lossy(body).trim(), "TooManyRequests").with_code(429)
        });
    let details = status.details.get_or_insert_with(|| StatusDetails {
        name: String::new(),
        group: String::new(),
        kind: String::new(),
        uid: String::new(),
        causes: Vec::new(),
        retry_after_seconds: 0,
    });
    if details.retry_after_seconds == 0 {
        details.retry_after_seconds = retry_after;
    }
    status
}

/// How long the apiserver asked to wait before the next try (a 429 with Retry-After).
pub fn retry_after(e: &kube::Error) -> Option<Duration> {
    match e {
        kube::Error::Api(s) if s.code == 429 => s
            .details
            .as_ref()
            .map(|d| d.retry_after_seconds)
            .filter(|s| *s > 0)
            .map(|s| Duration::from_secs(s.into())),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::Secret;
    use kube::api::{Api, PostParams};
    use kube::client::Body;

    /// The error of a create through `KeepRetryAfter`, answered with `status`, a
    /// `Retry-After: 7` header and `body`.
    async fn create_answered(status: u16, body: &[u8]) -> kube::Error {
        let (service, mut handle) = tower_test::mock::pair::<Request<Body>, Response<Body>>();
        let client = ClientBuilder::new(service, "default")
            .with_layer(&KeepRetryAfterLayer)
            .build();
        let api: Api<Secret> = Api::namespaced(client, "ns");
        let secret: Secret =
            serde_json::from_value(serde_json::json!({"metadata": {"name": "db"}}))
                .expect("Secret");
        let pp = PostParams::default();
        let (result, ()) = tokio::join!(api.create(&pp, &secret), async {
            let (_, respond) = handle.next_request().await.expect("a request");
            respond.send_response(
                Response::builder()
                    .status(status)
                    .header("Retry-After", "7")
                    .body(Body::from(body.to_vec()))
                    .expect("response"),
            );
        });
        result.expect_err("an error status")
    }

    #[tokio::test]
    async fn a_429_with_retry_after_reaches_the_caller_with_its_delay() {
        let err = create_answered(429, b"Too many requests, please try again later.\n").await;
        assert_eq!(retry_after(&err), Some(Duration::from_secs(7)));
        let kube::Error::Api(status) = err else {
            panic!("an API error: {err:?}");
        };
        assert_eq!(
            (status.code, status.reason.as_str(), status.message.as_str()),
            (
                429,
                "TooManyRequests",
                "Too many requests, please try again later."
            )
        );
    }

    #[tokio::test]
    async fn a_429_status_keeps_its_own_retry_after_and_other_errors_pass_unchanged() {
        let own = serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
            "code": 429, "reason": "TooManyRequests", "message": "storage is (re)initializing",
            "details": {"retryAfterSeconds": 2}});
        let status = with_retry_after(own.to_string().as_bytes(), 9);
        assert_eq!(status.details.map(|d| d.retry_after_seconds), Some(2));
        assert_eq!(status.message, "storage is (re)initializing");

        let err = create_answered(503, b"unavailable").await;
        assert_eq!(retry_after(&err), None, "only a 429 asks to wait");
    }

    #[tokio::test(start_paused = true)]
    async fn the_fence_keeps_writes_in_once_the_lease_may_have_passed_but_not_reads_or_reviews() {
        let fence = Fence::closed();
        let sent = Arc::new(std::sync::Mutex::new(Vec::new()));
        let log = Arc::clone(&sent);
        let inner = tower::service_fn(move |req: Request<()>| {
            log.lock()
                .expect("log")
                .push(format!("{} {}", req.method(), req.uri().path()));
            async { Ok::<_, std::io::Error>(()) }
        });
        let mut svc = fence.layer().layer(inner);
        let mut send = async |method: Method, path: &str| {
            let req = Request::builder()
                .method(method)
                .uri(path)
                .body(())
                .expect("request");
            match svc.call(req).await {
                Ok(()) => "sent",
                Err(e) if e.is::<NotLeading>() => "refused",
                Err(_) => "failed",
            }
        };
        let secrets = "/api/v1/namespaces/ns/secrets";
        let lease = "/apis/coordination.k8s.io/v1/namespaces/op/leases/l";
        let review = "/apis/authentication.k8s.io/v1/tokenreviews";
        assert_eq!(
            send(Method::POST, secrets).await,
            "refused",
            "never renewed"
        );
        assert_eq!(send(Method::GET, secrets).await, "sent");
        assert_eq!(send(Method::PUT, lease).await, "sent", "the election's own");
        assert_eq!(send(Method::POST, review).await, "sent", "stores nothing");

        fence.open_until(Instant::now() + Duration::from_secs(10));
        for m in [Method::POST, Method::PUT, Method::PATCH, Method::DELETE] {
            assert_eq!(send(m, secrets).await, "sent", "renewed");
        }
        tokio::time::advance(Duration::from_secs(10)).await;
        assert_eq!(
            send(Method::PATCH, secrets).await,
            "refused",
            "the renewal's time is up"
        );
        fence.open_until(Instant::now() + Duration::from_secs(10));
        fence.close();
        assert_eq!(
            send(Method::DELETE, secrets).await,
            "refused",
            "stepped down"
        );
        assert_eq!(
            sent.lock().expect("log").len(),
            7,
            "three refused, never sent"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn opened_waits_for_a_renewal_and_an_unfenced_process_never_waits() {
        Fence::unfenced().opened().await;
        let fence = Fence::closed();
        let waiting = tokio::spawn({
            let fence = fence.clone();
            async move { fence.opened().await }
        });
        tokio::time::sleep(Duration::from_secs(1)).await;
        assert!(!waiting.is_finished());
        fence.open_until(Instant::now() + Duration::from_secs(5));
        waiting.await.expect("opened");
        assert!(fence.is_open());
    }

    #[tokio::test(start_paused = true)]
    async fn a_request_to_an_apiserver_that_never_answers_fails_at_the_timeout_instead_of_hanging()
    {
        // Accepts connections, never answers.
        let silent = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let url = format!("http://{}", silent.local_addr().expect("addr"));
        let held = tokio::spawn(async move {
            let mut open = Vec::new();
            while let Ok((conn, _)) = silent.accept().await {
                open.push(conn);
            }
        });
        let config = kube::Config::new(url.parse().expect("uri"));
        let throttle = ThrottleLayer::new(0.0, 1, Default::default());
        let clients = Clients::build(config, &throttle, Fence::unfenced()).expect("clients");
        let started = Instant::now();
        let api: Api<Secret> = Api::namespaced(clients.requests, "ns");
        // The clock is paused and jumps to each timer: no real 10 s wait.
        let answer = tokio::time::timeout(10 * REQUEST_TIMEOUT, api.get_opt("db")).await;
        let err = answer
            .expect("the request's own timeout ends it")
            .expect_err("no answer");
        assert!(started.elapsed() >= REQUEST_TIMEOUT, "{err}");
        held.abort();
    }

    #[test]
    fn requests_time_out_and_are_not_retried_inside_the_client_watches_keep_the_defaults() {
        let config = kube::Config::new("https://127.0.0.1:6443".parse().expect("uri"));
        let requests = request_config(config.clone());
        assert_eq!(requests.read_timeout, Some(REQUEST_TIMEOUT));
        assert_eq!(requests.write_timeout, Some(REQUEST_TIMEOUT));
        assert_eq!(requests.connect_timeout, Some(REQUEST_TIMEOUT));
        assert!(requests.reset_reader_on_write);
        assert!(!requests.default_retry);
        assert_eq!(config.read_timeout, None, "a watch is quiet for minutes");
    }
}
