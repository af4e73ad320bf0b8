//! Unit tests of one reconcile over a mock apiserver: the exact requests, in order, and
//! nothing else. The integration tests (tests/) prove the behaviour on a real control
//! plane; these pin what the operator sends to get it.

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use serde_json::json;

use super::*;
use crate::cache::CachedSecret;
use crate::controller::triggers::Seen;
use crate::guard::context::{Context, StoreWriters};
use crate::guard::fixtures::{
    self, ApiServer, OPERATOR_NAMESPACE, Reply, cache, cache_restore_point, expect, namespace,
    secret_event, service_account, spec, token_secret, uncache,
};
use crate::{labels, restore_point};

const NS: &str = "ns";
const TOKEN: &[u8] = b"saved-token-bytes";
const SECRETS: &str = "/api/v1/namespaces/ns/secrets";
const EVENTS: &str = "/apis/events.k8s.io/v1/namespaces/ns/events";
const TOKEN_REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

fn key() -> ObjectKey {
    ObjectKey::new(NS, "writer-token")
}

fn rp_path() -> String {
    format!(
        "/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/{}",
        restore_point::name_for(NS, "writer-token")
    )
}

/// A guard `g` in `ns` guarding the token of ServiceAccount `writer` (uid sa-1), whose
/// namespace and ServiceAccount are cached.
fn guarded_writer() -> (Context, StoreWriters, ApiServer) {
    let (ctx, mut writers, server) = fixtures::context();
    let guard = fixtures::guard(NS, "g", spec(&["writer"], &[]));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    cache(&mut writers.namespaces, namespace(NS));
    cache(
        &mut writers.service_accounts,
        service_account(NS, "writer", "sa-1"),
    );
    (ctx, writers, server)
}

fn live_token() -> Secret {
    token_secret(NS, "writer-token", "writer", "sa-1", TOKEN)
}

fn saved(secret: &Secret, restores: u64) -> Secret {
    restore_point::build(secret, "ServiceAccountToken", OPERATOR_NAMESPACE, restores)
}

fn token_review_accepting(user: &str) -> Reply {
    Reply::Json(
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {}, "status": {"authenticated": true, "user": {"username": user}}}),
    )
}

/// What restoring the token sends: the create, the TokenReview, and the Events (TokenDeleted
/// on the guard, TokenRestored on the guard and the Secret).
fn token_restore() -> Vec<fixtures::Expect> {
    vec![
        expect(Method::POST, SECRETS, Reply::Created),
        expect(
            Method::POST,
            TOKEN_REVIEWS,
            token_review_accepting("system:serviceaccount:ns:writer"),
        ),
        expect(Method::POST, EVENTS, Reply::Created),
        expect(Method::POST, EVENTS, Reply::Created),
        expect(Method::POST, EVENTS, Reply::Created),
    ]
}

fn token_of(secret: &Secret) -> Option<&[u8]> {
    Some(secret.data.as_ref()?.get("token")?.0.as_slice())
}

fn event_reasons(received: &[fixtures::Received]) -> Vec<(String, String)> {
    received
        .iter()
        .filter(|r| r.path() == EVENTS)
        .map(|r| {
            let e: Event = serde_json::from_value(r.body.clone()).unwrap_or_default();
            let regarding = e.regarding.and_then(|o| o.kind).unwrap_or_default();
            (e.reason.unwrap_or_default(), regarding)
        })
        .collect()
}

#[tokio::test]
async fn an_identical_token_restore_sends_the_create_the_token_review_the_events_then_the_counted_restore_point()
 {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache_restore_point(&mut writers, &saved(&live_token(), 0));

    // The token Secret is gone (deleted while no watch ran): restore it from its restore
    // point, which only the GET brings with its data.
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(
            [expect(
                Method::GET,
                rp_path(),
                Reply::Json(
                    200,
                    serde_json::to_value(saved(&live_token(), 0)).unwrap_or_default()
                )
            )]
            .into_iter()
            .chain(token_restore())
            .collect()
        )
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let created: Secret = serde_json::from_value(received[1].body.clone()).expect("Secret");
    assert_eq!(
        token_of(&created),
        Some(TOKEN),
        "the create carries the saved bytes"
    );
    let annotations = created.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        annotations.get(labels::RESTORED_FROM).map(String::as_str),
        Some("writer-token-uid"),
        "marked as a restore of the deleted Secret, so it is counted once"
    );
    assert_eq!(
        received[2].body["spec"]["token"],
        json!(String::from_utf8_lossy(TOKEN)),
        "the TokenReview checks the restored token"
    );
    assert_eq!(
        event_reasons(&received),
        [
            ("TokenDeleted".to_owned(), "SecretGuard".to_owned()),
            ("TokenRestored".to_owned(), "SecretGuard".to_owned()),
            ("TokenRestored".to_owned(), "Secret".to_owned()),
        ]
    );

    // Its watch brings the restored Secret: the restore point follows it, written from
    // the event, and counts the restore.
    let mut restored = created;
    restored.metadata.uid = Some("restored-uid".into());
    restored.metadata.resource_version = Some("6".into());
    restored.metadata.creation_timestamp = live_token().metadata.creation_timestamp;
    secret_event(&ctx, &mut writers, restored, Seen::Changed);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![expect(Method::PATCH, rp_path(), Reply::Echo)])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        received[0].uri.contains("fieldManager=secretguard"),
        "server-side apply: {}",
        received[0].uri
    );
    let rp: Secret = serde_json::from_value(received[0].body.clone()).expect("restore point");
    assert_eq!(restore_point::restores(&rp), 1);
    assert_eq!(
        rp.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(restore_point::annotation::ORIGIN_UID))
            .map(String::as_str),
        Some("restored-uid")
    );

    // And with the refreshed restore point cached, all is well: nothing more to send.
    cache_restore_point(&mut writers, &rp);
    let result = reconcile_target(&ctx, &target).await;
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_second_reconcile_of_a_healthy_token_sends_nothing() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.secrets, CachedSecret::detailed(&live_token()));
    cache_restore_point(&mut writers, &saved(&live_token(), 0));
    for _ in 0..2 {
        let result = reconcile_target(&ctx, &target).await;
        server.assert_nothing_else();
        assert_eq!(result.ok(), Some(None));
    }
}

#[tokio::test]
async fn unguarding_sends_only_the_label_patch_and_the_restore_point_delete() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.secrets, CachedSecret::detailed(&live_token()));
    cache_restore_point(&mut writers, &saved(&live_token(), 0));
    let guard = fixtures::guard(NS, "g", spec(&["writer"], &[]));
    ctx.index_mut().remove(&ObjectKey::of(&guard));
    uncache(&mut writers.guards, guard);

    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::PATCH,
                format!("{SECRETS}/writer-token"),
                Reply::Json(200, serde_json::to_value(live_token()).unwrap_or_default())
            ),
            expect(
                Method::DELETE,
                rp_path(),
                Reply::Json(
                    200,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Success"})
                )
            ),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
    assert_eq!(
        received[0].body,
        json!({"metadata": {"labels": {labels::GUARDED: null}}}),
        "only our label is taken off"
    );
}

#[tokio::test]
async fn a_namespace_not_cached_yet_is_looked_up_and_its_token_provisioned() {
    let target = key();
    let (ctx, mut writers, mut server) = fixtures::context();
    let guard = fixtures::guard(NS, "g", spec(&["writer"], &[]));
    ctx.index_mut().upsert(&guard);
    cache(
        &mut writers.service_accounts,
        service_account(NS, "writer", "sa-1"),
    );
    // The namespace's watch event has not arrived: it exists all the same.
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                "/api/v1/namespaces/ns",
                Reply::Json(
                    200,
                    json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                           "metadata": {"name": NS, "uid": "ns-uid"}})
                )
            ),
            expect(
                Method::GET,
                format!("{SECRETS}/writer-token"),
                Reply::NotFound
            ),
            expect(Method::POST, SECRETS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
    let created: Secret = serde_json::from_value(received[2].body.clone()).expect("Secret");
    assert_eq!(created.type_.as_deref(), Some(labels::TOKEN_TYPE));
    assert_eq!(
        created.data, None,
        "empty, for the tokens controller to fill"
    );
    assert_eq!(
        event_reasons(&received),
        [
            ("TokenCreated".to_owned(), "SecretGuard".to_owned()),
            ("TokenCreated".to_owned(), "Secret".to_owned()),
        ]
    );
}

#[tokio::test]
async fn a_failed_label_is_an_action_failure_not_a_failed_restore() {
    let target = key();
    let (ctx, _writers, mut server) = guarded_writer();
    let mut unlabelled = live_token();
    unlabelled.metadata.labels = None;
    // Selected by name, found by the one GET a Secret without our label gets.
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/writer-token"),
                Reply::Json(200, serde_json::to_value(&unlabelled).unwrap_or_default())
            ),
            expect(
                Method::PATCH,
                format!("{SECRETS}/writer-token"),
                Reply::Json(
                    403,
                    json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                           "reason": "Forbidden", "code": 403, "message": "denied by a policy"})
                )
            ),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    let err = result.expect_err("the failure is returned, for a retry with backoff");
    assert_eq!(err.reason(), "ActionFailed");
    assert!(
        matches!(&err, crate::Error::Action { action: "Label", source: crate::error::ActionError::Kube(kube::Error::Api(s)) } if s.code == 403),
        "the error keeps its action and source: {err:?}"
    );
    assert_eq!(
        event_reasons(&received),
        [("ActionFailed".to_owned(), "SecretGuard".to_owned())]
    );
    let exposition = ctx.metrics.encode();
    assert!(
        !exposition
            .lines()
            .any(|l| l.starts_with("secretguard_restore_failing{")),
        "no restore failed:\n{exposition}"
    );
    assert!(
        ctx.records()
            .targets
            .get(&target)
            .is_some_and(|r| !r.restore_failing)
    );
}

#[tokio::test]
async fn a_deletion_whose_event_shows_what_the_restore_point_holds_is_restored_without_reading_it()
{
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache_restore_point(&mut writers, &saved(&live_token(), 0));
    secret_event(&ctx, &mut writers, live_token(), Seen::Listed);
    secret_event(&ctx, &mut writers, live_token(), Seen::Deleted);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(token_restore())
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let created: Secret = serde_json::from_value(received[0].body.clone()).expect("Secret");
    assert_eq!(token_of(&created), Some(TOKEN));
    assert!(
        ctx.take_content(&target).is_none(),
        "the content went with the reconcile"
    );
}

/// A guard `g` in `ns` guarding the generic Secret `db`, whose namespace is cached, and
/// whose restore point holds `db("1", "old")`.
fn guarded_db() -> (Context, StoreWriters, ApiServer) {
    let (ctx, mut writers, server) = fixtures::context();
    let guard = fixtures::guard(NS, "g", spec(&[], &["db"]));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    cache(&mut writers.namespaces, namespace(NS));
    cache_restore_point(
        &mut writers,
        &restore_point::build(&db("1", "old"), "Secret", OPERATOR_NAMESPACE, 0),
    );
    (ctx, writers, server)
}

fn db_rp_path() -> String {
    format!(
        "/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/{}",
        restore_point::name_for(NS, "db")
    )
}

fn db(version: &str, password: &str) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": NS, "uid": "db-uid", "resourceVersion": version,
                     "labels": {labels::GUARDED: "true"}},
        "type": "Opaque",
        "data": {"password": k8s_openapi::ByteString(password.as_bytes().to_vec())},
    }))
    .unwrap_or_default()
}

fn data_of(body: &serde_json::Value) -> Option<Vec<u8>> {
    let s: Secret = serde_json::from_value(body.clone()).ok()?;
    Some(s.data?.get("password")?.0.clone())
}

#[tokio::test]
async fn an_update_then_a_deletion_before_the_reconcile_saves_and_restores_the_latest_content() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, mut writers, mut server) = guarded_db();
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Listed);
    // Both events arrive before any reconcile of it runs.
    secret_event(&ctx, &mut writers, db("2", "new"), Seen::Changed);
    secret_event(&ctx, &mut writers, db("2", "new"), Seen::Deleted);
    assert!(ctx.stores.secret(&target).is_none());

    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
            expect(Method::POST, SECRETS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        data_of(&received[0].body).as_deref(),
        Some(&b"new"[..]),
        "the restore point is written from the deletion's event first"
    );
    assert_eq!(
        data_of(&received[1].body).as_deref(),
        Some(&b"new"[..]),
        "and the latest content is what comes back"
    );
}

#[tokio::test]
async fn a_change_is_saved_from_its_watch_event_and_without_it_read_once() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, mut writers, mut server) = guarded_db();
    // From the event: no read.
    secret_event(&ctx, &mut writers, db("2", "new"), Seen::Changed);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(data_of(&received[0].body).as_deref(), Some(&b"new"[..]));

    // Seen in a list (as after a restart): the cache has no data, so it is read once.
    let (ctx, mut writers, mut server) = guarded_db();
    secret_event(&ctx, &mut writers, db("3", "newer"), Seen::Listed);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/db"),
                Reply::Json(
                    200,
                    serde_json::to_value(db("3", "newer")).unwrap_or_default()
                )
            ),
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(data_of(&received[1].body).as_deref(), Some(&b"newer"[..]));
}

#[tokio::test]
async fn a_labelled_secret_no_guard_targets_is_cached_bare_and_its_content_not_kept() {
    let (ctx, mut writers, _server) = fixtures::context();
    let mut big = db("1", &"x".repeat(900 * 1024));
    big.metadata.name = Some("noise".into());
    secret_event(&ctx, &mut writers, big.clone(), Seen::Changed);
    secret_event(&ctx, &mut writers, big, Seen::Deleted);
    let key = ObjectKey::new(NS, "noise");
    assert!(ctx.take_content(&key).is_none(), "no content kept");
    secret_event(&ctx, &mut writers, db("1", "x"), Seen::Changed);
    let cached = ctx
        .stores
        .secret(&ObjectKey::new(NS, "db"))
        .expect("cached");
    assert_eq!(cached.detail, None, "name and UID only");
}
