//! Unit tests of one reconcile over a mock apiserver: the exact requests, in order, and
//! nothing else. The integration tests (tests/) prove the behaviour on a real control
//! plane; these pin what the operator sends to get it.

use http::Method;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use serde_json::json;

use super::*;
use crate::controller::triggers::Seen;
use crate::guard::context::{Context, StoreWriters};
use crate::guard::fixtures::{
    self, ApiServer, Expect, OPERATOR_NAMESPACE, Reply, cache, expect, namespace, secret_event,
    service_account, spec, token_secret, uncache,
};
use crate::guard::state::TargetRecord;
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
    guard_writer(&ctx, &mut writers);
    (ctx, writers, server)
}

fn guard_writer(ctx: &Context, writers: &mut StoreWriters) {
    guard_writer_and(ctx, writers, &[]);
}

/// As `guard_writer`, the guard also naming these Secrets.
fn guard_writer_and(ctx: &Context, writers: &mut StoreWriters, secrets: &[&str]) {
    let guard = fixtures::guard(NS, "g", spec(&["writer"], secrets));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    cache(&mut writers.namespaces, namespace(NS));
    cache(
        &mut writers.service_accounts,
        service_account(NS, "writer", "sa-1"),
    );
}

fn live_token() -> Secret {
    token_secret(NS, "writer-token", "writer", "sa-1", TOKEN)
}

fn saved(secret: &Secret, restores: u64) -> Secret {
    restore_point::build(
        secret,
        "ServiceAccountToken",
        "ns-uid",
        OPERATOR_NAMESPACE,
        restores,
    )
    .expect("fits")
}

fn token_review_accepting(user: &str) -> Reply {
    Reply::Json(
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {}, "status": {"authenticated": true, "user": {"username": user}}}),
    )
}

/// The restore point read back, data included (the cache keeps none).
fn get_restore_point(point: Secret) -> fixtures::Expect {
    expect(
        Method::GET,
        rp_path(),
        Reply::Json(200, serde_json::to_value(point).unwrap_or_default()),
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

/// The token Secret was deleted while the watch ran: its deletion event showed its final
/// state, which the restore brings back with no read of the restore point.
fn deleted_while_watched(ctx: &Context, writers: &mut StoreWriters) {
    secret_event(ctx, writers, live_token(), Seen::Listed);
    secret_event(ctx, writers, live_token(), Seen::Deleted);
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
    cache(&mut writers.restore_points, saved(&live_token(), 0));

    // The token Secret is gone (deleted while no watch ran): restore it from its restore
    // point, which only the GET brings with its data.
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(
            [get_restore_point(saved(&live_token(), 0))]
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
    cache(&mut writers.restore_points, rp);
    let result = reconcile_target(&ctx, &target).await;
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
}

#[tokio::test]
async fn a_second_reconcile_of_a_healthy_token_sends_nothing() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.secrets, live_token());
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    for _ in 0..2 {
        let result = reconcile_target(&ctx, &target).await;
        server.assert_nothing_else();
        assert_eq!(result.ok(), Some(None));
    }
}

/// Unguard `writer-token` (cached, with its restore point) and return what was sent after
/// the label patch: `then` is expected next.
async fn unguard_writer(
    ctx: &Context,
    server: &mut ApiServer,
    then: Expect,
) -> Vec<fixtures::Received> {
    let target = key();
    let (result, received) = tokio::join!(
        reconcile_target(ctx, &target),
        server.serve(vec![
            expect(
                Method::PATCH,
                format!("{SECRETS}/writer-token"),
                Reply::Json(200, serde_json::to_value(live_token()).unwrap_or_default())
            ),
            then,
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        received[0].body,
        json!({"metadata": {"labels": {labels::GUARDED: null}}}),
        "only our label is taken off"
    );
    received
}

#[tokio::test]
async fn a_target_removed_from_its_guard_loses_its_label_and_restore_point() {
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.secrets, live_token());
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    // Guarded by g until now; g stays but names another ServiceAccount.
    let record = TargetRecord::new(
        ObjectKey::new(NS, "g"),
        crate::guard::spec::TargetKind::ServiceAccountToken,
        crate::guard::decide::TargetState::Healthy,
    );
    ctx.records().targets.insert(key(), record);
    let guard = fixtures::guard(NS, "g", spec(&["other"], &[]));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    let deleted = json!({"kind": "Status", "apiVersion": "v1", "status": "Success"});
    unguard_writer(
        &ctx,
        &mut server,
        expect(Method::DELETE, rp_path(), Reply::Json(200, deleted)),
    )
    .await;
}

#[tokio::test]
async fn a_deleted_guards_restore_point_is_stamped_and_kept() {
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.secrets, live_token());
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    let guard = fixtures::guard(NS, "g", spec(&["writer"], &[]));
    ctx.index_mut().remove(&ObjectKey::of(&guard));
    uncache(&mut writers.guards, guard);
    let rp = serde_json::to_value(saved(&live_token(), 0)).unwrap_or_default();
    let received = unguard_writer(
        &ctx,
        &mut server,
        expect(Method::PATCH, rp_path(), Reply::Json(200, rp)),
    )
    .await;
    assert!(
        received[1].body["metadata"]["annotations"][restore_point::annotation::ORPHANED_SINCE]
            .is_string(),
        "stamped orphaned: {}",
        received[1].body
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
async fn a_secret_whose_point_is_from_an_earlier_namespace_is_not_restored_and_the_point_starts_its_retention()
 {
    let target = ObjectKey::new(NS, "db");
    let (ctx, mut writers, mut server) = fixtures::context();
    let guard = fixtures::guard(NS, "g", spec(&[], &["db"]));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    cache(&mut writers.namespaces, namespace(NS));
    let mut earlier: Secret = serde_json::from_value(json!({
        "metadata": {"name": "db", "namespace": NS, "uid": "db-uid"},
        "data": {"password": k8s_openapi::ByteString(b"A-SECRET".to_vec())},
    }))
    .expect("Secret");
    earlier.metadata.labels = None;
    cache(
        &mut writers.restore_points,
        restore_point::build(&earlier, "Secret", "earlier-ns-uid", OPERATOR_NAMESPACE, 0)
            .expect("fits"),
    );
    let point = format!(
        "/api/v1/namespaces/{OPERATOR_NAMESPACE}/secrets/{}",
        restore_point::name_for(NS, "db")
    );

    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, point, Reply::Echo),
            expect(Method::GET, format!("{SECRETS}/db"), Reply::NotFound),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(
        result.ok(),
        Some(Some(crate::guard::decide::MISSING_RECHECK)),
        "looked at again, as any missing object that is not restored"
    );
    assert!(
        received[0]
            .uri
            .contains("fieldManager=secretguard-retention"),
        "{}",
        received[0].uri
    );
    assert!(
        received[0].body["metadata"]["annotations"][restore_point::annotation::ORPHANED_SINCE]
            .is_string(),
        "stamped: the retention of a deleted namespace applies"
    );
    assert_eq!(
        event_reasons(&received),
        [("ForeignRestorePoint".to_owned(), "SecretGuard".to_owned())]
    );
    assert_eq!(
        ctx.records().targets.get(&target).map(|r| r.state),
        Some(crate::guard::decide::TargetState::ForeignRestorePoint)
    );
}

/// A point as the version before namespace UIDs wrote it (format 0).
fn format_0(point: Secret) -> Secret {
    let mut point = point;
    let annotations = point.metadata.annotations.as_mut().expect("annotations");
    annotations.remove(restore_point::annotation::FORMAT);
    annotations.remove(restore_point::annotation::ORIGIN_NAMESPACE_UID);
    point.metadata.resource_version = Some("7".into());
    point
}

// Paused time: the pace is a matter of counts and slots, not of how fast the test runs.
#[tokio::test(start_paused = true)]
async fn points_of_an_earlier_format_are_rewritten_one_per_slot_and_the_others_wait_for_theirs() {
    let (ctx, mut writers, mut server) = fixtures::context();
    guard_writer_and(&ctx, &mut writers, &["db"]);
    cache(&mut writers.secrets, live_token());
    cache(&mut writers.secrets, db("1", "pw"));
    let old_token_point = format_0(saved(&live_token(), 2));
    cache(&mut writers.restore_points, old_token_point.clone());
    let old_db_point = format_0_db_point("pw");
    cache(&mut writers.restore_points, old_db_point.clone());

    // The first one asking goes at once: read whole, written back in this format over the
    // version read.
    let target = key();
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            get_restore_point(old_token_point.clone()),
            expect(Method::PATCH, rp_path(), Reply::Echo),
        ])
    );
    assert_eq!(result.ok(), Some(None));
    let written: Secret = serde_json::from_value(received[1].body.clone()).expect("a Secret");
    let ann = written.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get(restore_point::annotation::FORMAT)
            .map(String::as_str),
        Some(restore_point::Format::V1.as_str())
    );
    assert_eq!(
        ann.get(restore_point::annotation::ORIGIN_NAMESPACE_UID)
            .map(String::as_str),
        Some("ns-uid")
    );
    assert_eq!(written.metadata.resource_version.as_deref(), Some("7"));
    assert_eq!(written.data, old_token_point.data, "the same content");
    assert_eq!(restore_point::restores(&written), 2, "the same count");
    assert_eq!(ctx.metrics.restore_points_migrated.get(), 1);

    // The next one, at once after: nothing sent; it is looked at again at its own time.
    let db_key = ObjectKey::new(NS, "db");
    let (result, _) = tokio::join!(reconcile_target(&ctx, &db_key), server.serve(vec![]));
    let wait = result.expect("reconciled").expect("looked at again");
    assert_eq!(
        wait,
        Duration::from_millis(100),
        "one slot on at 10 a second"
    );
    // Looked at before its time (an audit), it keeps its slot and still sends nothing.
    tokio::time::advance(Duration::from_millis(40)).await;
    let (result, _) = tokio::join!(reconcile_target(&ctx, &db_key), server.serve(vec![]));
    assert_eq!(result.ok(), Some(Some(Duration::from_millis(60))));
    // At its time it is rewritten.
    tokio::time::advance(Duration::from_millis(60)).await;
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &db_key),
        server.serve(vec![
            get_db_point(&old_db_point),
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
    assert_eq!(received.len(), 2);
    assert_eq!(ctx.metrics.restore_points_migrated.get(), 2);
}

#[tokio::test]
async fn a_listed_secret_that_does_not_exist_is_looked_at_again_less_and_less_often() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, mut writers, mut server) = fixtures::context();
    let guard = fixtures::guard(NS, "g", spec(&[], &["db"]));
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.namespaces, namespace(NS));
    let mut waits = Vec::new();
    for round in 0..6 {
        let mut script = vec![expect(
            Method::GET,
            format!("{SECRETS}/db"),
            Reply::NotFound,
        )];
        if round == 0 {
            // Reported once per spell, on the guard (the object is not there).
            script.push(expect(Method::POST, EVENTS, Reply::Created));
        }
        let (result, _) = tokio::join!(reconcile_target(&ctx, &target), server.serve(script));
        waits.push(
            result
                .expect("reconciled")
                .expect("looked at again")
                .as_secs(),
        );
    }
    server.assert_nothing_else();
    assert_eq!(waits, [10, 20, 40, 80, 160, 160]);
}

#[tokio::test]
async fn a_paused_guard_that_sorts_first_does_not_disarm_another_and_each_guard_is_told_once() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    let mut paused = fixtures::guard(NS, "aaa", spec(&["writer"], &[]));
    paused.spec.paused = true;
    ctx.index_mut().upsert(&paused);
    cache(&mut writers.guards, paused);
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    deleted_while_watched(&ctx, &mut writers);

    // The token Secret is gone: g (not paused) is in force, so it is restored.
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::POST, SECRETS, Reply::Created),
            expect(
                Method::POST,
                TOKEN_REVIEWS,
                token_review_accepting("system:serviceaccount:ns:writer"),
            ),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let overlaps: Vec<String> = received
        .iter()
        .filter(|r| r.path() == EVENTS && r.body["reason"] == "Overlap")
        .map(|r| {
            r.body["regarding"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_owned()
        })
        .collect();
    assert_eq!(overlaps, ["g", "aaa"], "one Overlap Event on each guard");
    let rec = ctx
        .records()
        .targets
        .get(&target)
        .cloned()
        .expect("recorded");
    assert_eq!(rec.guard.name, "g", "the guard in force reports it");
    assert_eq!(
        rec.sharing.map(|s| s.with),
        Some(vec![ObjectKey::new(NS, "aaa")])
    );

    // Back: the restore point follows; no second Overlap Event.
    let mut restored: Secret = serde_json::from_value(received[0].body.clone()).expect("Secret");
    restored.metadata.uid = Some("restored-uid".into());
    restored.metadata.resource_version = Some("6".into());
    restored.metadata.creation_timestamp = live_token().metadata.creation_timestamp;
    secret_event(&ctx, &mut writers, restored, Seen::Changed);
    let (result, _) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![expect(Method::PATCH, rp_path(), Reply::Echo)])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
}

fn event_notes(received: &[fixtures::Received], reason: &str) -> Vec<String> {
    received
        .iter()
        .filter(|r| r.path() == EVENTS && r.body["reason"] == reason)
        .map(|r| r.body["note"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// Restore the deleted `writer-token` with the TokenReview answered by `review`; returns
/// the notes of its RestoreUnverified Events.
async fn restore_with_review(review: Reply) -> Vec<String> {
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    deleted_while_watched(&ctx, &mut writers);
    let target = key();
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::POST, SECRETS, Reply::Created),
            expect(Method::POST, TOKEN_REVIEWS, review),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let outcome = ctx
        .records()
        .guards
        .get(&ObjectKey::new(NS, "g"))
        .and_then(|g| g.last_incident.as_ref().map(|i| i.outcome.clone()));
    assert_eq!(outcome.as_deref(), Some("RestoredUnverified"));
    event_notes(&received, "RestoreUnverified")
}

#[tokio::test]
async fn a_token_review_that_fails_is_reported_as_unverified_not_as_a_rejected_token() {
    let unavailable = Reply::Json(
        503,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "ServiceUnavailable", "code": 503, "message": "etcd is down"}),
    );
    let notes = restore_with_review(unavailable).await;
    assert_eq!(notes.len(), 2, "on the guard and on the Secret: {notes:?}");
    for note in &notes {
        assert!(
            note.contains("unverified: the TokenReview request failed"),
            "{note}"
        );
        assert!(!note.contains("rejected"), "{note}");
        assert!(!note.contains("etcd is down"), "no server text: {note}");
    }

    let rejected = Reply::Json(
        201,
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview",
               "spec": {}, "status": {"authenticated": false}}),
    );
    let notes = restore_with_review(rejected).await;
    assert_eq!(notes.len(), 2);
    for note in &notes {
        assert!(note.contains("the apiserver rejected the token"), "{note}");
    }
}

/// The token Secret's content changed since its restore point (cached at resourceVersion
/// 41) was saved.
fn changed_writer() -> (Context, StoreWriters, ApiServer) {
    let (ctx, mut writers, server) = guarded_writer();
    let mut point = saved(&live_token(), 0);
    point.metadata.resource_version = Some("41".into());
    cache(&mut writers.restore_points, point);
    let changed = token_secret(NS, "writer-token", "writer", "sa-1", b"new-token-bytes");
    secret_event(&ctx, &mut writers, changed, Seen::Changed);
    (ctx, writers, server)
}

#[tokio::test]
async fn a_restore_point_is_saved_over_the_version_read_and_a_newer_one_is_read_again_not_overwritten()
 {
    let (ctx, _writers, mut server) = changed_writer();
    let target = key();
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, rp_path(), Reply::Echo),
            // SecretChanged, on the guard and on the Secret.
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        received[0].body["metadata"]["resourceVersion"], "41",
        "a precondition on the version the decision read"
    );

    // Someone saved a newer point meanwhile (a successor, if this process lost the Lease
    // unawares): 409, nothing reported, retried.
    let (ctx, _writers, mut server) = changed_writer();
    let conflict = json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
        "reason": "Conflict", "code": 409, "message": "the object has been modified"});
    let target = key();
    let (result, _) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![expect(
            Method::PATCH,
            rp_path(),
            Reply::Json(409, conflict)
        )])
    );
    server.assert_nothing_else();
    assert!(
        matches!(
            result,
            Err(crate::Error::Action {
                source: crate::error::ActionError::StaleRestorePoint,
                ..
            })
        ),
        "retried with backoff: {result:?}"
    );
}

#[tokio::test]
async fn a_reconcile_whose_write_the_fence_keeps_in_sends_reports_and_records_nothing() {
    use crate::transport::{Clients, Fence};
    let (service, mut server) = fixtures::mock_service();
    let fence = Fence::closed();
    let client = kube::client::ClientBuilder::new(service, "default")
        .with_layer(&fence.layer())
        .build();
    let clients = Clients {
        requests: client.clone(),
        watches: client,
        fence,
    };
    let (ctx, mut writers) = Context::with_clients(
        clients,
        fixtures::config(),
        std::sync::Arc::new(crate::metrics::Metrics::new()),
    );
    guard_writer(&ctx, &mut writers);
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    deleted_while_watched(&ctx, &mut writers);

    // The token Secret is gone, and the Lease may have passed: the restore is not sent.
    let result = reconcile_target(&ctx, &key()).await;
    server.assert_nothing_else();
    assert!(result.is_err(), "retried, should this process lead again");
    assert!(
        !ctx.records().targets.contains_key(&key()),
        "nothing recorded: the incident is still new to whoever leads"
    );
}

#[tokio::test]
async fn retiring_a_token_sends_only_a_tombstone_without_data_and_the_retired_events() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    let mut retired = live_token();
    retired
        .metadata
        .annotations
        .get_or_insert_default()
        .insert(labels::RETIRE.into(), "true".into());
    cache(&mut writers.secrets, retired);
    cache(&mut writers.restore_points, saved(&live_token(), 2));
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, rp_path(), Reply::Echo),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
    let tombstone: Secret = serde_json::from_value(received[0].body.clone()).expect("Secret");
    assert!(
        tombstone.data.as_ref().is_none_or(|d| d.is_empty()),
        "no copy is kept"
    );
    assert_eq!(restore_point::restores(&tombstone), 2, "the count stays");
    let rp = restore_point::parse(&tombstone).expect("still a readable restore point");
    assert_eq!(
        rp.annotations.get(labels::TOMBSTONE).map(String::as_str),
        Some("Retired")
    );
    assert_eq!(
        event_reasons(&received),
        [
            ("Retired".to_owned(), "SecretGuard".to_owned()),
            ("Retired".to_owned(), "Secret".to_owned()),
        ]
    );
}

#[tokio::test]
async fn an_invalidation_label_is_judged_by_the_managed_fields_its_event_carried_and_an_admins_is_left()
 {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    let mut invalid = live_token();
    invalid.metadata.labels.get_or_insert_default().insert(
        labels::LEGACY_TOKEN_INVALID_SINCE.into(),
        "2026-01-01".into(),
    );
    invalid.metadata.managed_fields = Some(vec![
        serde_json::from_value(json!({
            "manager": "kubectl-label", "operation": "Update", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:metadata": {"f:labels": {
                format!("f:{}", labels::LEGACY_TOKEN_INVALID_SINCE): {}}}},
        }))
        .expect("managed fields"),
    ]);
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    // The cache keeps no managedFields, only who set the label, read from the event.
    secret_event(&ctx, &mut writers, invalid, Seen::Changed);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            // Saved with the label: a restore brings the invalidation back with the token.
            expect(Method::PATCH, rp_path(), Reply::Echo),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
    let point: Secret = serde_json::from_value(received[0].body.clone()).expect("restore point");
    let saved = restore_point::parse(&point).expect("readable");
    assert!(
        saved
            .labels
            .contains_key(labels::LEGACY_TOKEN_INVALID_SINCE)
    );
    assert_eq!(
        event_reasons(&received[1..]),
        [
            ("TokenInvalidated".to_owned(), "SecretGuard".to_owned()),
            ("TokenInvalidated".to_owned(), "Secret".to_owned()),
            ("SecretChanged".to_owned(), "SecretGuard".to_owned()),
            ("SecretChanged".to_owned(), "Secret".to_owned()),
        ],
        "reported, and no patch removes the label"
    );
}

#[tokio::test]
async fn a_deletion_whose_event_shows_what_the_restore_point_holds_is_restored_without_reading_it()
{
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    cache(&mut writers.restore_points, saved(&live_token(), 0));
    deleted_while_watched(&ctx, &mut writers);
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

/// What restoring a generic Secret sends: the create and the Events (SecretDeleted on the
/// guard, SecretRestored on the guard and the Secret).
fn secret_restore() -> Vec<fixtures::Expect> {
    vec![
        expect(Method::POST, SECRETS, Reply::Created),
        expect(Method::POST, EVENTS, Reply::Created),
        expect(Method::POST, EVENTS, Reply::Created),
        expect(Method::POST, EVENTS, Reply::Created),
    ]
}

/// The restore point of `db` read back, data included.
fn get_db_point(point: &Secret) -> fixtures::Expect {
    expect(
        Method::GET,
        db_rp_path(),
        Reply::Json(200, serde_json::to_value(point).unwrap_or_default()),
    )
}

/// The restore point of `db("1", password)` as the version before namespace UIDs wrote it.
fn format_0_db_point(password: &str) -> Secret {
    format_0(
        restore_point::build(
            &db("1", password),
            "Secret",
            "ns-uid",
            OPERATOR_NAMESPACE,
            0,
        )
        .expect("fits"),
    )
}

/// `guarded_db`, with the restore point as the version before namespace UIDs wrote it in
/// the namespace's first second (the namespace is not older than the point: only the
/// Secret it saves tells that it is this namespace's), and `db` deleted while this
/// process stood by (so no content of it is kept: a handover follows). No restore delay:
/// what is tested here is whose point it is.
fn format_0_db_deleted_while_standing_by() -> (Context, StoreWriters, ApiServer, Secret) {
    let (ctx, mut writers, server) = guarded_db_after(Some(0));
    let point = format_0_db_point("old");
    cache(&mut writers.restore_points, point.clone());
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Listed);
    ctx.leading.send_replace(false);
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Deleted);
    ctx.leading.send_replace(true);
    (ctx, writers, server, point)
}

#[tokio::test]
async fn a_format_0_point_of_a_secret_seen_deleted_here_is_restored_however_young_the_namespace() {
    let (ctx, mut writers, mut server, point) = format_0_db_deleted_while_standing_by();
    let target = ObjectKey::new(NS, "db");
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(
            [get_db_point(&point)]
                .into_iter()
                .chain(secret_restore())
                .collect()
        )
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(data_of(&received[1].body).as_deref(), Some(&b"old"[..]));

    // The restored Secret is saved over the old point, and the restore counted.
    let mut restored: Secret = serde_json::from_value(received[1].body.clone()).expect("Secret");
    restored.metadata.uid = Some("restored-uid".into());
    restored.metadata.resource_version = Some("2".into());
    secret_event(&ctx, &mut writers, restored, Seen::Changed);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![expect(Method::PATCH, db_rp_path(), Reply::Echo)])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let saved: Secret = serde_json::from_value(received[0].body.clone()).expect("a point");
    assert_eq!(restore_point::restores(&saved), 1, "counted once");
    assert!(
        restore_point::orphaned_since(&saved).is_none(),
        "never taken for an earlier namespace's"
    );
}

#[tokio::test]
async fn a_secret_seen_deleted_from_an_earlier_namespace_of_the_name_proves_nothing_about_a_point()
{
    let (ctx, mut writers, mut server, _) = format_0_db_deleted_while_standing_by();
    // The namespace is deleted and created again under the same name: another UID.
    let mut again = namespace(NS);
    again.metadata.uid = Some("ns-uid-2".into());
    cache(&mut writers.namespaces, again);
    let target = ObjectKey::new(NS, "db");
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
            expect(Method::GET, format!("{SECRETS}/db"), Reply::NotFound),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert!(
        received[0].body["metadata"]["annotations"][restore_point::annotation::ORPHANED_SINCE]
            .is_string(),
        "an earlier namespace's point: stamped for the retention"
    );
    assert_eq!(
        ctx.records().targets.get(&target).map(|r| r.state),
        Some(crate::guard::decide::TargetState::ForeignRestorePoint)
    );
}

/// A guard `g` in `ns` guarding the generic Secret `db`, whose namespace is cached, and
/// whose restore point holds `db("1", "old")`. Restores wait the default restore delay.
fn guarded_db() -> (Context, StoreWriters, ApiServer) {
    guarded_db_after(None)
}

/// The same, with this `restoreDelaySeconds`.
fn guarded_db_after(delay: Option<i32>) -> (Context, StoreWriters, ApiServer) {
    let (ctx, mut writers, server) = fixtures::context();
    let mut spec = spec(&[], &["db"]);
    spec.restore_delay_seconds = delay;
    let guard = fixtures::guard(NS, "g", spec);
    ctx.index_mut().upsert(&guard);
    cache(&mut writers.guards, guard);
    cache(&mut writers.namespaces, namespace(NS));
    cache(
        &mut writers.restore_points,
        restore_point::build(&db("1", "old"), "Secret", "ns-uid", OPERATOR_NAMESPACE, 0)
            .expect("fits"),
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
    let (ctx, mut writers, mut server) = guarded_db_after(Some(0));
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Listed);
    // Both events arrive before any reconcile of it runs.
    secret_event(&ctx, &mut writers, db("2", "new"), Seen::Changed);
    secret_event(&ctx, &mut writers, db("2", "new"), Seen::Deleted);
    assert!(ctx.stores.secret(&target).is_none());

    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(
            [expect(Method::PATCH, db_rp_path(), Reply::Echo)]
                .into_iter()
                .chain(secret_restore())
                .collect()
        )
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

#[tokio::test]
async fn a_first_save_never_writes_over_a_restore_point_it_did_not_know() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    let mut live = live_token();
    live.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(labels::GUARDED.into(), "true".into());
    cache(&mut writers.secrets, live.clone());
    // No restore point cached, but one was written meanwhile (by a successor, or a newer
    // release): it is found, and nothing is written over it.
    let mut existing = saved(&live, 0);
    existing
        .metadata
        .annotations
        .get_or_insert_with(Default::default)
        .insert(restore_point::annotation::FORMAT.into(), "3".into());
    let (result, _) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/writer-token"),
                Reply::Json(200, serde_json::to_value(&live).unwrap_or_default())
            ),
            expect(
                Method::GET,
                rp_path(),
                Reply::Json(200, serde_json::to_value(&existing).unwrap_or_default())
            ),
        ])
    );
    server.assert_nothing_else();
    let err = result.expect_err("read again, with backoff");
    assert!(
        matches!(
            &err,
            crate::Error::Action {
                source: crate::error::ActionError::StaleRestorePoint,
                ..
            }
        ),
        "{err:?}"
    );
}

#[tokio::test]
async fn a_first_save_the_cache_does_not_show_yet_is_not_written_twice() {
    let target = key();
    let (ctx, mut writers, mut server) = guarded_writer();
    let mut live = live_token();
    live.metadata
        .labels
        .get_or_insert_with(Default::default)
        .insert(labels::GUARDED.into(), "true".into());
    cache(&mut writers.secrets, live.clone());
    // The point an earlier reconcile wrote, not in the cache yet: nothing to write, no error.
    let (result, _) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/writer-token"),
                Reply::Json(200, serde_json::to_value(&live).unwrap_or_default())
            ),
            expect(
                Method::GET,
                rp_path(),
                Reply::Json(
                    200,
                    serde_json::to_value(saved(&live, 0)).unwrap_or_default()
                )
            ),
        ])
    );
    server.assert_nothing_else();
    assert_eq!(result.ok(), Some(None));
}

/// `db` deleted as the watch showed it (its restore point holds it), with the default
/// restore delay: the first reconcile reports the deletion, looks once, and restores
/// nothing yet. Returns what the test goes on with.
async fn db_deleted_and_pending() -> (Context, StoreWriters, ApiServer) {
    let target = ObjectKey::new(NS, "db");
    let (ctx, mut writers, mut server) = guarded_db();
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Listed);
    secret_event(&ctx, &mut writers, db("1", "old"), Seen::Deleted);
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(Method::GET, format!("{SECRETS}/db"), Reply::NotFound),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let event: Event = serde_json::from_value(received[1].body.clone()).expect("Event");
    assert_eq!(event.reason.as_deref(), Some("SecretDeleted"));
    let note = event.note.unwrap_or_default();
    assert!(
        note.contains("restore due at") && note.contains("outcome: RestorePending"),
        "{note}"
    );
    let (state, outcome) = pending_state(&ctx, &target);
    assert_eq!(state.map(|s| s.as_str()), Some("RestorePending"));
    assert_eq!(outcome.as_deref(), Some("RestorePending"));
    (ctx, writers, server)
}

/// The target's state and its guard's last incident outcome.
fn pending_state(
    ctx: &Context,
    target: &ObjectKey,
) -> (Option<crate::guard::decide::TargetState>, Option<String>) {
    let records = ctx.records();
    (
        records.targets.get(target).map(|r| r.state),
        records
            .guards
            .get(&ObjectKey::new(NS, "g"))
            .and_then(|g| g.last_incident.as_ref().map(|i| i.outcome.clone())),
    )
}

/// As if the restore delay had passed since the deletion was seen.
fn delay_passed(ctx: &Context, target: &ObjectKey) {
    if let Some(r) = ctx.records().targets.get_mut(target) {
        r.missing_since = Some(std::time::Instant::now() - std::time::Duration::from_secs(3));
    }
}

#[tokio::test]
async fn a_deleted_secret_waits_for_its_restore_delay_then_is_restored_if_still_missing() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, _writers, mut server) = db_deleted_and_pending().await;
    delay_passed(&ctx, &target);
    let point = restore_point::build(&db("1", "old"), "Secret", "ns-uid", OPERATOR_NAMESPACE, 0)
        .expect("fits");
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            // Looked for once more: still missing.
            expect(Method::GET, format!("{SECRETS}/db"), Reply::NotFound),
            expect(
                Method::GET,
                db_rp_path(),
                Reply::Json(200, serde_json::to_value(point).unwrap_or_default())
            ),
            expect(Method::POST, SECRETS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(data_of(&received[2].body).as_deref(), Some(&b"old"[..]));
    let (_, outcome) = pending_state(&ctx, &target);
    assert_eq!(
        outcome.as_deref(),
        Some("Restored"),
        "the incident says so now"
    );
}

#[tokio::test]
async fn a_secret_created_during_its_restore_delay_is_kept_labelled_and_saved() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, _writers, mut server) = db_deleted_and_pending().await;
    delay_passed(&ctx, &target);
    // A CD tool's own Secret: another UID, other content, no label of ours.
    let mut theirs = db("7", "theirs");
    theirs.metadata.uid = Some("db-uid-2".into());
    theirs.metadata.labels = None;
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/db"),
                Reply::Json(200, serde_json::to_value(theirs).unwrap_or_default())
            ),
            expect(Method::PATCH, format!("{SECRETS}/db"), Reply::Echo),
            expect(Method::PATCH, db_rp_path(), Reply::Echo),
            expect(Method::POST, EVENTS, Reply::Created),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    assert_eq!(
        data_of(&received[2].body).as_deref(),
        Some(&b"theirs"[..]),
        "their content is the restore point now"
    );
    let event: Event = serde_json::from_value(received[3].body.clone()).expect("Event");
    assert_eq!(event.reason.as_deref(), Some("KeptRecreated"));
    let (state, outcome) = pending_state(&ctx, &target);
    assert_eq!(state.map(|s| s.as_str()), Some("Healthy"));
    assert_eq!(outcome.as_deref(), Some("KeptRecreated"));
}

#[tokio::test]
async fn a_secret_deleted_before_its_label_is_set_is_not_created_but_looked_at_again() {
    let target = ObjectKey::new(NS, "db");
    let (ctx, _writers, mut server) = guarded_db();
    let mut unlabelled = db("1", "old");
    unlabelled.metadata.labels = None;
    let (result, received) = tokio::join!(
        reconcile_target(&ctx, &target),
        server.serve(vec![
            expect(
                Method::GET,
                format!("{SECRETS}/db"),
                Reply::Json(200, serde_json::to_value(&unlabelled).unwrap_or_default())
            ),
            // Deleted since the GET.
            expect(Method::PATCH, format!("{SECRETS}/db"), Reply::NotFound),
            expect(Method::GET, format!("{SECRETS}/db"), Reply::NotFound),
            expect(Method::POST, EVENTS, Reply::Created),
        ])
    );
    server.assert_nothing_else();
    assert!(result.is_ok(), "{result:?}");
    let label = &received[1];
    assert_eq!(
        label.body,
        json!({"metadata": {"labels": {labels::GUARDED: "true"}}}),
        "a merge patch of the label alone (an apply would create a stub)"
    );
    assert!(
        !label.uri.contains("force"),
        "not a server-side apply: {}",
        label.uri
    );
    let event: Event = serde_json::from_value(received[3].body.clone()).expect("Event");
    assert_eq!(event.reason.as_deref(), Some("SecretDeleted"));
    let (state, _) = pending_state(&ctx, &target);
    assert_eq!(state.map(|s| s.as_str()), Some("RestorePending"));
}
