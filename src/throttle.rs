//! A client-side limit on the operator's requests to the apiserver: a token bucket in the
//! client's service stack, as client-go's QPS and burst. Whatever guards ask for, the
//! operator never sends more than `qps` requests a second after a burst of `burst`
//! (security review A5). Restores are served first by the work queue's urgent lane; at
//! most one request per worker waits here, so an urgent request waits behind at most
//! `workers` others. Every request is counted by verb.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use http::Request;
use tokio::time::{Instant, Sleep};
use tower::{Layer, Service};

use crate::metrics::{ApiMetrics, ApiVerb};

/// Tokens refill at `qps` a second up to `burst`; one request takes one.
#[derive(Debug)]
pub struct Bucket {
    qps: f64,
    burst: f64,
    tokens: f64,
    refilled: Instant,
}

impl Bucket {
    pub fn new(qps: f64, burst: u32) -> Bucket {
        let burst = f64::from(burst.max(1));
        Bucket {
            qps,
            burst,
            tokens: burst,
            refilled: Instant::now(),
        }
    }

    /// Take a token now (None), or say how long until one is there.
    pub fn take(&mut self, now: Instant) -> Option<Duration> {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.qps).min(self.burst);
        self.refilled = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - self.tokens) / self.qps))
        }
    }
}

/// The layer; `qps` of 0 counts requests without limiting them.
#[derive(Clone)]
pub struct ThrottleLayer {
    bucket: Option<Arc<Mutex<Bucket>>>,
    metrics: ApiMetrics,
}

impl ThrottleLayer {
    pub fn new(qps: f64, burst: u32, metrics: ApiMetrics) -> ThrottleLayer {
        ThrottleLayer {
            bucket: (qps > 0.0).then(|| Arc::new(Mutex::new(Bucket::new(qps, burst)))),
            metrics,
        }
    }
}

impl<S> Layer<S> for ThrottleLayer {
    type Service = Throttle<S>;

    fn layer(&self, inner: S) -> Throttle<S> {
        Throttle {
            inner,
            bucket: self.bucket.clone(),
            metrics: self.metrics.clone(),
            wait: None,
            permitted: false,
        }
    }
}

/// The service: `poll_ready` waits for a token, then for the inner service.
pub struct Throttle<S> {
    inner: S,
    bucket: Option<Arc<Mutex<Bucket>>>,
    metrics: ApiMetrics,
    wait: Option<(Pin<Box<Sleep>>, Instant)>,
    /// A token is taken for the next call.
    permitted: bool,
}

impl<S, B> Service<Request<B>> for Throttle<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        while !self.permitted {
            let Some(bucket) = &self.bucket else {
                self.permitted = true;
                break;
            };
            if let Some((sleep, since)) = &mut self.wait {
                if Pin::new(sleep).poll(cx).is_pending() {
                    return Poll::Pending;
                }
                self.metrics
                    .throttled_seconds
                    .inc_by(since.elapsed().as_secs_f64());
                self.wait = None;
            }
            let now = Instant::now();
            let wait = bucket.lock().unwrap_or_else(|e| e.into_inner()).take(now);
            match wait {
                None => self.permitted = true,
                Some(d) => self.wait = Some((Box::pin(tokio::time::sleep(d)), now)),
            }
        }
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.permitted = false;
        let watch = req.uri().query().is_some_and(|q| q.contains("watch=true"));
        let verb = if watch {
            "WATCH"
        } else {
            req.method().as_str()
        };
        self.metrics
            .requests
            .get_or_create(&ApiVerb {
                verb: verb.to_ascii_lowercase(),
            })
            .inc();
        self.inner.call(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn the_bucket_allows_a_burst_then_qps() {
        let start = Instant::now();
        let mut b = Bucket::new(10.0, 3);
        for _ in 0..3 {
            assert_eq!(b.take(start), None, "the burst is there at once");
        }
        let wait = b.take(start).expect("empty after the burst");
        assert_eq!(wait, Duration::from_millis(100));
        assert_eq!(b.take(start + Duration::from_millis(100)), None);
        assert!(b.take(start + Duration::from_millis(100)).is_some());
        // Refills to the burst, never beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..3 {
            assert_eq!(b.take(later), None);
        }
        assert!(b.take(later).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn the_service_spaces_requests_and_counts_them_by_verb() {
        let metrics = ApiMetrics::default();
        let layer = ThrottleLayer::new(10.0, 2, metrics.clone());
        let inner = tower::service_fn(|_req: Request<()>| async { Ok::<_, std::io::Error>(()) });
        let mut svc = layer.layer(inner);
        let start = Instant::now();
        for _ in 0..4 {
            futures::future::poll_fn(|cx| svc.poll_ready(cx))
                .await
                .expect("ready");
            svc.call(Request::get("/api/v1/secrets").body(()).expect("request"))
                .await
                .expect("call");
        }
        // Two at once, then one each 100 ms.
        assert_eq!(start.elapsed(), Duration::from_millis(200));
        let gets = metrics
            .requests
            .get_or_create(&ApiVerb { verb: "get".into() })
            .get();
        assert_eq!(gets, 4);
        assert!(metrics.throttled_seconds.get() > 0.19);
    }
}
