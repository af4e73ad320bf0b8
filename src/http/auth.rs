//! Who may read /metrics: the caller's bearer token is checked with a TokenReview, then
//! the user it names with a SubjectAccessReview (`get` on the non-resource URL /metrics),
//! as controller-runtime's `WithAuthenticationAndAuthorization` and kube-rbac-proxy do.
//! Verdicts are cached per token (a hash of it, never the token) for a minute when
//! allowed, 10 s when not, in a cache of bounded size: a scrape every 30 s costs two API
//! calls a minute, not two per scrape. Reviews run a few at a time, so a flood of made-up
//! tokens queues instead of flooding the apiserver.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::extract::{Request, State};
use axum::http::{StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

/// How long an allowed token is trusted without asking again.
pub const ALLOW_TTL: Duration = Duration::from_secs(60);
/// How long a refused token is refused without asking again (short: a scraper whose
/// role binding was just created gets in soon).
pub const DENY_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most (a scraper or two in practice; bounded against floods).
pub const CACHE_CAPACITY: usize = 256;
/// Reviews in flight at most.
const CONCURRENT_REVIEWS: usize = 4;

/// What the apiserver said about a token.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Authenticated, and allowed `get` on /metrics.
    Allowed,
    /// Not a token the apiserver accepts: 401.
    Unauthenticated,
    /// Authenticated, but not allowed: 403.
    Forbidden,
}

impl Verdict {
    fn ttl(self) -> Duration {
        match self {
            Verdict::Allowed => ALLOW_TTL,
            Verdict::Unauthenticated | Verdict::Forbidden => DENY_TTL,
        }
    }
}

type TokenHash = [u8; 32];

/// Verdicts by token hash, each until it expires; at most `capacity` of them. Pure: the
/// caller says what time it is.
#[derive(Debug)]
pub struct VerdictCache {
    capacity: usize,
    entries: HashMap<TokenHash, (Verdict, Instant)>,
}

impl VerdictCache {
    pub fn new(capacity: usize) -> Self {
        VerdictCache {
            capacity,
            entries: HashMap::new(),
        }
    }

    pub fn get(&self, token: &TokenHash, now: Instant) -> Option<Verdict> {
        self.entries
            .get(token)
            .filter(|(_, until)| now < *until)
            .map(|(v, _)| *v)
    }

    /// Remember a verdict; when full, expired entries go first, then the one that would
    /// expire soonest.
    pub fn insert(&mut self, token: TokenHash, verdict: Verdict, now: Instant) {
        if self.entries.len() >= self.capacity && !self.entries.contains_key(&token) {
            self.entries.retain(|_, (_, until)| now < *until);
            if self.entries.len() >= self.capacity
                && let Some(soonest) = self
                    .entries
                    .iter()
                    .min_by_key(|(_, (_, until))| *until)
                    .map(|(k, _)| *k)
            {
                self.entries.remove(&soonest);
            }
        }
        self.entries.insert(token, (verdict, now + verdict.ttl()));
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// The check in front of /metrics.
pub struct MetricsAuth {
    client: Client,
    cache: Mutex<VerdictCache>,
    reviews: Semaphore,
}

impl MetricsAuth {
    pub fn new(client: Client) -> Self {
        MetricsAuth {
            client,
            cache: Mutex::new(VerdictCache::new(CACHE_CAPACITY)),
            reviews: Semaphore::new(CONCURRENT_REVIEWS),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, VerdictCache> {
        self.cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// May the holder of `token` `verb` `path`? From the cache, else from the apiserver.
    pub async fn verdict(&self, token: &str, verb: &str, path: &str) -> kube::Result<Verdict> {
        let key: TokenHash = Sha256::new()
            .chain_update(verb)
            .chain_update([0])
            .chain_update(path)
            .chain_update([0])
            .chain_update(token)
            .finalize()
            .into();
        if let Some(v) = self.cache().get(&key, Instant::now()) {
            return Ok(v);
        }
        let _permit = self.reviews.acquire().await;
        // Another request may have asked while this one waited.
        if let Some(v) = self.cache().get(&key, Instant::now()) {
            return Ok(v);
        }
        let verdict = self.review(token, verb, path).await?;
        self.cache().insert(key, verdict, Instant::now());
        Ok(verdict)
    }

    async fn review(&self, token: &str, verb: &str, path: &str) -> kube::Result<Verdict> {
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_owned()),
                ..Default::default()
            },
            ..Default::default()
        };
        let status = Api::<TokenReview>::all(self.client.clone())
            .create(&PostParams::default(), &review)
            .await?
            .status
            .unwrap_or_default();
        let user = match status.user {
            Some(user) if status.authenticated == Some(true) => user,
            _ => return Ok(Verdict::Unauthenticated),
        };
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username.clone(),
                uid: user.uid,
                groups: user.groups,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(path.to_owned()),
                    verb: Some(verb.to_owned()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let allowed = Api::<SubjectAccessReview>::all(self.client.clone())
            .create(&PostParams::default(), &access)
            .await?
            .status
            .is_some_and(|s| s.allowed && s.denied != Some(true));
        tracing::debug!(
            user = user.username.as_deref().unwrap_or_default(),
            path,
            allowed,
            "metrics access reviewed"
        );
        Ok(if allowed {
            Verdict::Allowed
        } else {
            Verdict::Forbidden
        })
    }
}

/// Middleware: serve the request only to a bearer token the apiserver allows.
pub async fn require(
    State(auth): State<Arc<MetricsAuth>>,
    request: Request,
    next: Next,
) -> Response {
    let token = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .filter(|t| !t.is_empty());
    let Some(token) = token else {
        return unauthorized();
    };
    let verb = request.method().as_str().to_ascii_lowercase();
    let verb = if verb == "head" { "get".into() } else { verb };
    match auth.verdict(token, &verb, request.uri().path()).await {
        Ok(Verdict::Allowed) => next.run(request).await,
        Ok(Verdict::Unauthenticated) => unauthorized(),
        Ok(Verdict::Forbidden) => (StatusCode::FORBIDDEN, "Forbidden\n").into_response(),
        Err(e) => {
            tracing::warn!(error = %e, "could not review a metrics request");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "could not check the request's credentials\n",
            )
                .into_response()
        }
    }
}

fn unauthorized() -> Response {
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Bearer")],
        "Unauthorized\n",
    )
        .into_response()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::guard::fixtures::{Reply, expect, mock_client};
    use http::Method;
    use serde_json::json;

    fn key(n: u8) -> TokenHash {
        [n; 32]
    }

    /// The apiserver's answer to a review `kind` (TokenReview, SubjectAccessReview) in
    /// `group`, with this status.
    fn review(
        group: &str,
        kind: &str,
        status: serde_json::Value,
    ) -> crate::guard::fixtures::Expect {
        let plural = format!("{}s", kind.to_lowercase());
        expect(
            Method::POST,
            format!("/apis/{group}/v1/{plural}"),
            Reply::Json(
                201,
                json!({"apiVersion": format!("{group}/v1"), "kind": kind, "spec": {}, "status": status}),
            ),
        )
    }

    #[test]
    fn verdicts_expire_allowed_after_a_minute_refused_after_ten_seconds() {
        let mut cache = VerdictCache::new(8);
        let t0 = Instant::now();
        cache.insert(key(1), Verdict::Allowed, t0);
        cache.insert(key(2), Verdict::Forbidden, t0);
        let later = t0 + Duration::from_secs(30);
        assert_eq!(cache.get(&key(1), later), Some(Verdict::Allowed));
        assert_eq!(cache.get(&key(2), later), None);
        assert_eq!(cache.get(&key(1), t0 + ALLOW_TTL), None);
    }

    #[test]
    fn the_cache_never_holds_more_than_its_capacity() {
        let mut cache = VerdictCache::new(3);
        let t0 = Instant::now();
        cache.insert(key(1), Verdict::Allowed, t0);
        cache.insert(key(2), Verdict::Unauthenticated, t0);
        cache.insert(key(3), Verdict::Allowed, t0);
        // Full: the refused token expires soonest and makes room.
        cache.insert(key(4), Verdict::Allowed, t0 + Duration::from_secs(1));
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&key(2), t0), None);
        assert_eq!(cache.get(&key(1), t0), Some(Verdict::Allowed));
        for n in 5..100 {
            cache.insert(key(n), Verdict::Unauthenticated, t0);
        }
        assert_eq!(cache.len(), 3);
    }

    #[tokio::test]
    async fn a_token_is_reviewed_once_then_served_from_the_cache() {
        let (client, mut api) = mock_client();
        let auth = MetricsAuth::new(client);
        let first = async {
            auth.verdict("tok", "get", "/metrics")
                .await
                .expect("verdict")
        };
        let user = json!({"username": "system:serviceaccount:monitoring:prometheus",
                          "uid": "u1", "groups": ["system:serviceaccounts"]});
        let script = vec![
            review(
                "authentication.k8s.io",
                "TokenReview",
                json!({"authenticated": true, "user": user}),
            ),
            review(
                "authorization.k8s.io",
                "SubjectAccessReview",
                json!({"allowed": true}),
            ),
        ];
        let (verdict, received) = tokio::join!(first, api.serve(script));
        assert_eq!(verdict, Verdict::Allowed);
        assert_eq!(received[0].body["spec"]["token"], "tok");
        assert_eq!(
            received[1].body["spec"],
            json!({"user": "system:serviceaccount:monitoring:prometheus", "uid": "u1",
                   "groups": ["system:serviceaccounts"],
                   "nonResourceAttributes": {"path": "/metrics", "verb": "get"}})
        );
        // The next scrape costs nothing.
        let again = auth
            .verdict("tok", "get", "/metrics")
            .await
            .expect("cached");
        assert_eq!(again, Verdict::Allowed);
        api.assert_nothing_else();
        // Another path or verb is another question.
        let other = async { auth.verdict("tok", "get", "/other").await };
        let script = vec![review(
            "authentication.k8s.io",
            "TokenReview",
            json!({"authenticated": false}),
        )];
        let (verdict, _) = tokio::join!(other, api.serve(script));
        assert_eq!(verdict.expect("verdict"), Verdict::Unauthenticated);
        api.assert_nothing_else();
    }
}
