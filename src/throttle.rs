//! A client-side limit on the operator's requests to the apiserver: a token bucket in the
//! client's service stack, as client-go's QPS and burst. Whatever guards ask for, the
//! operator never sends more than `qps` requests a second after a burst of `burst`
//! (security review A5). Restores are served first by the work queue's urgent lane; at
//! most one request per worker waits here, so an urgent request waits behind at most
//! `workers` others. Every request is counted by verb.
//!
//! Also a `Pace`: work that is never urgent (rewriting restore points of an earlier
//! format after an upgrade) spread at a bounded rate, each key given a time of its own.

use std::collections::HashMap;
use std::future::Future;
use std::hash::Hash;
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

/// Work spread at a bounded rate: one key at a time, `interval` apart. The first key asking
/// goes at once; each later one is given its own time (a slot), kept until it comes back
/// for it, so a thousand keys are each looked at again once, at their time, not a
/// thousand times in a herd. A key that never comes back only wastes its slot.
#[derive(Debug)]
pub struct Pace<K> {
    interval: Duration,
    /// The next free slot.
    next: Instant,
    slots: HashMap<K, Instant>,
}

impl<K: Clone + Eq + Hash> Pace<K> {
    /// At most `per_second` keys a second (at least one a minute).
    pub fn new(per_second: f64) -> Pace<K> {
        Pace {
            interval: Duration::from_secs_f64(1.0 / per_second.max(1.0 / 60.0)),
            next: Instant::now(),
            slots: HashMap::new(),
        }
    }

    /// May `key` go now (None)? Else how long until its slot.
    pub fn slot(&mut self, key: &K, now: Instant) -> Option<Duration> {
        if self.next <= now {
            // Every slot given out has come: forget them all.
            self.slots.clear();
        }
        let at = match self.slots.get(key) {
            Some(at) => *at,
            None => {
                let at = self.next.max(now);
                self.next = at + self.interval;
                at
            }
        };
        if at <= now {
            self.slots.remove(key);
            None
        } else {
            self.slots.insert(key.clone(), at);
            Some(at - now)
        }
    }

    /// Keys holding a slot still to come.
    pub fn waiting(&self) -> usize {
        self.slots.len()
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

    #[tokio::test(start_paused = true)]
    async fn a_pace_lets_one_key_go_each_interval_and_gives_each_its_own_time() {
        let start = Instant::now();
        let mut pace = Pace::new(10.0);
        let keys: Vec<u32> = (0..100).collect();
        let waits: Vec<Option<Duration>> = keys.iter().map(|k| pace.slot(k, start)).collect();
        assert_eq!(waits[0], None, "the first goes at once");
        for (k, wait) in waits.iter().enumerate().skip(1) {
            assert_eq!(
                *wait,
                Some(Duration::from_millis(100) * k as u32),
                "key {k}"
            );
        }
        assert_eq!(pace.waiting(), 99);
        // Asking again before its time changes nothing; no key gains by asking often.
        assert_eq!(pace.slot(&5, start), Some(Duration::from_millis(500)));
        assert_eq!(
            pace.slot(&5, start + Duration::from_millis(499)),
            Some(Duration::from_millis(1))
        );
        // In the first second, the keys whose time came: 10 more after the first.
        let second = start + Duration::from_secs(1);
        let went = keys[1..]
            .iter()
            .filter(|k| pace.slot(k, second).is_none())
            .count();
        assert_eq!(went, 10, "keys 1 to 10");
        // A key that asks late for the first time waits behind all the others.
        assert_eq!(pace.slot(&1000, second), Some(Duration::from_millis(9000)));
        // Once every slot has come, the next key goes at once.
        let later = start + Duration::from_secs(60);
        assert_eq!(pace.slot(&2000, later), None);
        assert_eq!(pace.waiting(), 0);
        assert_eq!(pace.slot(&2001, later), Some(Duration::from_millis(100)));
    }
}
