//! Table tests of decisions: one row per situation of the behaviour table (docs/architecture.md, Behaviour).
//! What owners of a Secret ask for (rotate, retire) and names held by something else are
//! in intent_tests.rs.

use super::*;

const NOW: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_second(secs).expect("timestamp")
}

fn policy(restore: RestoreMode) -> Policy {
    Policy {
        restore,
        revalidate: true,
        paused: false,
        recreate_service_account: false,
        populate_deadline: Duration::from_secs(30),
        restore_delay: Duration::ZERO,
    }
}

fn sa(uid: &str) -> Option<ServiceAccountView> {
    Some(ServiceAccountView {
        uid: uid.into(),
        terminating: false,
    })
}

fn token(hash: &str) -> SecretView {
    SecretView {
        uid: "secret-uid".into(),
        created: at(NOW - 3600),
        terminating: false,
        labelled: true,
        type_: crate::labels::TOKEN_TYPE.into(),
        sa_name: Some("writer".into()),
        sa_uid: Some("sa-1".into()),
        token_populated: true,
        content_hash: hash.into(),
        unsaveable: None,
        invalidated: false,
        invalidated_by_cleaner: false,
        rotate_requested: false,
        retire_requested: false,
    }
}

fn rp(hash: &str, sa_uid: &str) -> Option<RestorePointView> {
    Some(RestorePointView {
        origin_uid: "secret-uid".into(),
        content_hash: hash.into(),
        sa_uid: Some(sa_uid.into()),
        refused: None,
        tombstone: None,
        retired: false,
    })
}

/// A restore point that must not be restored into its target.
fn refused(rp: Option<RestorePointView>, why: Refusal) -> Option<RestorePointView> {
    rp.map(|r| RestorePointView {
        refused: Some(why),
        ..r
    })
}

fn obs(
    service_account: Option<ServiceAccountView>,
    secret: Option<SecretView>,
    restore_point: Option<RestorePointView>,
) -> TokenObservation {
    TokenObservation {
        namespace_terminating: false,
        service_account_name: "writer".into(),
        deleted_retired: false,
        service_account,
        secret,
        restore_point,
        has_sa_snapshot: true,
        sa_snapshot_current: true,
        rotating: None,
        now: at(NOW),
    }
}

use Action::*;
use RestoreMode::*;

#[test]
fn token_decisions_follow_the_behaviour_table() {
    struct Row {
        name: &'static str,
        policy: Policy,
        obs: TokenObservation,
        state: TargetState,
        actions: Vec<Action>,
        incidents: Vec<Reason>,
    }
    let healthy = || obs(sa("sa-1"), Some(token("h1")), rp("h1", "sa-1"));
    let paused = Policy {
        paused: true,
        ..policy(Identical)
    };
    let recreate = Policy {
        recreate_service_account: true,
        ..policy(Identical)
    };
    let rows = vec![
        Row {
            name: "healthy and saved: nothing to do",
            policy: policy(Identical),
            obs: healthy(),
            state: TargetState::Healthy,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "absent and never seen: create it empty for the tokens controller",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), None, None),
            state: TargetState::Pending,
            actions: vec![CreateTokenSecret { restore_of: None }],
            incidents: vec![],
        },
        Row {
            name: "deleted, SA unchanged, Identical: restore the same bytes",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), None, rp("h1", "sa-1")),
            state: TargetState::Missing,
            actions: vec![RestoreIdentical],
            incidents: vec![Reason::TokenDeleted],
        },
        Row {
            name: "deleted, Fresh: re-created empty for the tokens controller (same SA: same bytes)",
            policy: policy(Fresh),
            obs: obs(sa("sa-1"), None, rp("h1", "sa-1")),
            state: TargetState::Missing,
            actions: vec![CreateTokenSecret {
                restore_of: Some("secret-uid".into()),
            }],
            incidents: vec![Reason::TokenDeleted],
        },
        Row {
            name: "deleted, Never: alert only",
            policy: policy(Never),
            obs: obs(sa("sa-1"), None, rp("h1", "sa-1")),
            state: TargetState::Missing,
            actions: vec![],
            incidents: vec![Reason::TokenDeleted],
        },
        Row {
            name: "changed while paused: the restore point follows, nothing else is written",
            policy: paused,
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    labelled: false,
                    ..token("h2")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Healthy,
            actions: vec![SaveRestorePoint],
            incidents: vec![],
        },
        Row {
            name: "changed, too large to save: unprotected",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    unsaveable: Some(Unsaveable::TooLarge),
                    ..token("h2")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Unprotected,
            actions: vec![],
            incidents: vec![Reason::Unprotected],
        },
        Row {
            name: "deleted while paused: alert, write nothing",
            policy: paused,
            obs: obs(sa("sa-1"), None, rp("h1", "sa-1")),
            state: TargetState::Missing,
            actions: vec![],
            incidents: vec![Reason::TokenDeleted],
        },
        Row {
            name: "deleted after the SA was re-created: old bytes are useless, mint fresh",
            policy: policy(Identical),
            obs: obs(sa("sa-2"), None, rp("h1", "sa-1")),
            state: TargetState::Missing,
            actions: vec![CreateTokenSecret {
                restore_of: Some("secret-uid".into()),
            }],
            incidents: vec![
                Reason::TokenDeleted,
                Reason::ServiceAccountRecreated,
                Reason::TokenRotated,
            ],
        },
        Row {
            name: "SA re-created, stale token still there: the tokens controller deletes it",
            policy: policy(Identical),
            obs: obs(sa("sa-2"), Some(token("h1")), rp("h1", "sa-1")),
            state: TargetState::Pending,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountRecreated],
        },
        Row {
            name: "SA deleted: critical incident, nothing re-created by default",
            policy: policy(Identical),
            obs: obs(None, Some(token("h1")), rp("h1", "sa-1")),
            state: TargetState::ServiceAccountMissing,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountDeleted],
        },
        Row {
            name: "SA never seen (guard applied before it): its own reason, not a deletion",
            policy: policy(Identical),
            obs: TokenObservation {
                has_sa_snapshot: false,
                sa_snapshot_current: false,
                ..obs(None, None, None)
            },
            state: TargetState::ServiceAccountNotFound,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountNotFound],
        },
        Row {
            name: "SA gone, only a restore point of its token remains: it was deleted",
            policy: policy(Identical),
            obs: TokenObservation {
                has_sa_snapshot: false,
                ..obs(None, None, rp("h1", "sa-1"))
            },
            state: TargetState::ServiceAccountMissing,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountDeleted],
        },
        Row {
            name: "SA deleted with recreateServiceAccount: re-create it from its snapshot",
            policy: recreate,
            obs: obs(None, None, rp("h1", "sa-1")),
            state: TargetState::ServiceAccountMissing,
            actions: vec![RecreateServiceAccount],
            incidents: vec![Reason::ServiceAccountDeleted],
        },
        Row {
            name: "SA deleted with recreateServiceAccount but paused: alert only",
            policy: Policy {
                paused: true,
                ..recreate
            },
            obs: obs(None, None, rp("h1", "sa-1")),
            state: TargetState::ServiceAccountMissing,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountDeleted],
        },
        Row {
            name: "content changed: the restore point follows",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), Some(token("h2")), rp("h1", "sa-1")),
            state: TargetState::Healthy,
            actions: vec![SaveRestorePoint],
            incidents: vec![],
        },
        Row {
            name: "restore point deleted by someone: rewritten from the live object",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), Some(token("h1")), None),
            state: TargetState::Healthy,
            actions: vec![SaveRestorePoint],
            incidents: vec![],
        },
        Row {
            name: "unlabelled: label it",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    labelled: false,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Healthy,
            actions: vec![Label],
            incidents: vec![],
        },
        Row {
            name: "invalidated by the legacy token cleaner, revalidate: remove the label",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    invalidated: true,
                    invalidated_by_cleaner: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Invalidated,
            actions: vec![RemoveInvalidLabel],
            incidents: vec![Reason::TokenInvalidated],
        },
        Row {
            name: "invalidated, revalidate false: alert only",
            policy: Policy {
                revalidate: false,
                ..policy(Identical)
            },
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    invalidated: true,
                    invalidated_by_cleaner: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Invalidated,
            actions: vec![],
            incidents: vec![Reason::TokenInvalidated],
        },
        Row {
            name: "invalidated, Never: alert only",
            policy: policy(Never),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    invalidated: true,
                    invalidated_by_cleaner: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Invalidated,
            actions: vec![],
            incidents: vec![Reason::TokenInvalidated],
        },
        Row {
            name: "rotate requested: re-create the ServiceAccount (the only way to a new token)",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    rotate_requested: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Pending,
            actions: vec![RotateServiceAccount { uid: "sa-1".into() }],
            incidents: vec![Reason::TokenRotated],
        },
        Row {
            name: "rotation under way, ServiceAccount gone: re-created whatever the guard says",
            policy: paused,
            obs: TokenObservation {
                rotating: Some("sa-1".into()),
                ..obs(None, Some(token("h1")), rp("h1", "sa-1"))
            },
            state: TargetState::ServiceAccountMissing,
            actions: vec![RecreateServiceAccount],
            incidents: vec![Reason::TokenRotated],
        },
        Row {
            name: "rotation under way, ServiceAccount still terminating (orphaning): re-create it",
            policy: policy(Never),
            obs: TokenObservation {
                rotating: Some("sa-1".into()),
                ..obs(
                    Some(ServiceAccountView {
                        uid: "sa-1".into(),
                        terminating: true,
                    }),
                    Some(token("h1")),
                    rp("h1", "sa-1"),
                )
            },
            state: TargetState::ServiceAccountMissing,
            actions: vec![RecreateServiceAccount],
            incidents: vec![Reason::TokenRotated],
        },
        Row {
            name: "rotation marker, ServiceAccount re-created: the marker is cleared",
            policy: policy(Identical),
            obs: TokenObservation {
                rotating: Some("sa-1".into()),
                ..obs(sa("sa-2"), Some(token("h1")), rp("h1", "sa-1"))
            },
            state: TargetState::Pending,
            actions: vec![SaveServiceAccountSnapshot],
            incidents: vec![Reason::ServiceAccountRecreated],
        },
        Row {
            name: "rotation marker, delete refused (changed meanwhile), still asked: rotate again",
            policy: policy(Identical),
            obs: TokenObservation {
                rotating: Some("sa-1".into()),
                ..obs(
                    sa("sa-1"),
                    Some(SecretView {
                        rotate_requested: true,
                        ..token("h1")
                    }),
                    rp("h1", "sa-1"),
                )
            },
            state: TargetState::Pending,
            actions: vec![RotateServiceAccount { uid: "sa-1".into() }],
            incidents: vec![Reason::TokenRotated],
        },
        Row {
            name: "rotation marker, no rotation asked any more: the marker is cleared",
            policy: policy(Identical),
            obs: TokenObservation {
                rotating: Some("sa-1".into()),
                ..healthy()
            },
            state: TargetState::Healthy,
            actions: vec![SaveServiceAccountSnapshot],
            incidents: vec![],
        },
        Row {
            name: "rotate requested while paused: nothing yet",
            policy: paused,
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    rotate_requested: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Healthy,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "terminating Secret: already rejected, wait until it is gone",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    terminating: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Missing,
            actions: vec![],
            incidents: vec![Reason::TokenDeleted],
        },
        Row {
            name: "namespace terminating: stand aside",
            policy: policy(Identical),
            obs: TokenObservation {
                namespace_terminating: true,
                ..obs(sa("sa-1"), None, rp("h1", "sa-1"))
            },
            state: TargetState::Terminating,
            actions: vec![],
            incidents: vec![],
        },
    ];
    for row in rows {
        let d = decide_token(&row.policy, &row.obs);
        assert_eq!(d.state, Some(row.state), "{}: state", row.name);
        assert_eq!(d.actions, row.actions, "{}: actions", row.name);
        assert_eq!(d.incidents, row.incidents, "{}: incidents", row.name);
    }
}

#[test]
fn an_empty_token_is_pending_until_the_deadline_then_not_populated() {
    let p = policy(Identical);
    let mut empty = SecretView {
        token_populated: false,
        sa_uid: None,
        created: at(NOW - 10),
        ..token("h0")
    };
    let d = decide_token(&p, &obs(sa("sa-1"), Some(empty.clone()), None));
    assert_eq!(d.state, Some(TargetState::Pending));
    assert!(d.incidents.is_empty());
    assert!(d.actions.is_empty(), "nothing is saved from an empty token");
    let wait = d.requeue_after.expect("look again at the deadline");
    assert!(
        wait > Duration::from_secs(19) && wait < Duration::from_secs(21),
        "{wait:?}"
    );

    empty.created = at(NOW - 31);
    let d = decide_token(&p, &obs(sa("sa-1"), Some(empty), None));
    assert_eq!(d.state, Some(TargetState::NotPopulated));
    assert_eq!(d.incidents, vec![Reason::TokenNotPopulated]);
    assert_eq!(d.requeue_after, None);
}

#[test]
fn a_healthy_token_decides_nothing_twice() {
    let p = policy(Identical);
    let o = obs(sa("sa-1"), Some(token("h1")), rp("h1", "sa-1"));
    assert_eq!(decide_token(&p, &o), decide_token(&p, &o));
    assert!(decide_token(&p, &o).actions.is_empty());
}

#[test]
fn a_restore_point_of_a_previous_secret_is_refreshed() {
    // Same bytes, but the live Secret is a different object (re-created by someone):
    // the restore point should name the live object.
    let p = policy(Identical);
    let mut live = token("h1");
    live.uid = "other-uid".into();
    let d = decide_token(&p, &obs(sa("sa-1"), Some(live), rp("h1", "sa-1")));
    assert_eq!(d.actions, vec![SaveRestorePoint]);
}

#[test]
fn generic_secret_decisions_follow_the_behaviour_table() {
    let secret = || SecretView {
        sa_uid: None,
        token_populated: false,
        ..token("h1")
    };
    let saved = rp("h1", "none").map(|r| RestorePointView { sa_uid: None, ..r });
    let o = |secret: Option<SecretView>, rp: Option<RestorePointView>| SecretObservation {
        namespace_terminating: false,
        secret,
        restore_point: rp,
        deleted_retired: false,
        owners: None,
    };
    type Case = (
        &'static str,
        Policy,
        SecretObservation,
        TargetState,
        Vec<Action>,
        Vec<Reason>,
    );
    let cases: Vec<Case> = vec![
        (
            "healthy",
            policy(Identical),
            o(Some(secret()), saved.clone()),
            TargetState::Healthy,
            vec![],
            vec![],
        ),
        (
            "never saved: save",
            policy(Identical),
            o(Some(secret()), None),
            TargetState::Healthy,
            vec![SaveRestorePoint],
            vec![],
        ),
        (
            "deleted: restore",
            policy(Identical),
            o(None, saved.clone()),
            TargetState::Missing,
            vec![RestoreIdentical],
            vec![Reason::SecretDeleted],
        ),
        (
            "deleted, Fresh: restores like Identical",
            policy(Fresh),
            o(None, saved.clone()),
            TargetState::Missing,
            vec![RestoreIdentical],
            vec![Reason::SecretDeleted],
        ),
        (
            "deleted, Never: alert only",
            policy(Never),
            o(None, saved.clone()),
            TargetState::Missing,
            vec![],
            vec![Reason::SecretDeleted],
        ),
        (
            "missing, nothing saved: alert, nothing to restore",
            policy(Identical),
            o(None, None),
            TargetState::Missing,
            vec![],
            vec![Reason::SecretDeleted],
        ),
        (
            "deleted, its restore point from an earlier namespace of the same name: not restored, said why",
            policy(Identical),
            o(None, refused(saved.clone(), Refusal::ForeignNamespace)),
            TargetState::ForeignRestorePoint,
            vec![],
            vec![Reason::ForeignRestorePoint],
        ),
        (
            "deleted, its restore point records another origin: not restored, said why",
            policy(Identical),
            o(None, refused(saved.clone(), Refusal::Mismatch)),
            TargetState::RestorePointMismatch,
            vec![],
            vec![Reason::RestorePointMismatch],
        ),
        (
            "present, its restore point from an earlier namespace: saved anew",
            policy(Identical),
            o(
                Some(secret()),
                refused(saved.clone(), Refusal::ForeignNamespace),
            ),
            TargetState::Healthy,
            vec![SaveRestorePoint],
            vec![],
        ),
        (
            "present, its restore point records another origin: saved anew",
            policy(Identical),
            o(Some(secret()), refused(saved.clone(), Refusal::Mismatch)),
            TargetState::Healthy,
            vec![SaveRestorePoint],
            vec![],
        ),
        (
            "unlabelled: label",
            policy(Identical),
            o(
                Some(SecretView {
                    labelled: false,
                    ..secret()
                }),
                saved.clone(),
            ),
            TargetState::Healthy,
            vec![Label],
            vec![],
        ),
        (
            "changed: save",
            policy(Identical),
            o(
                Some(SecretView {
                    content_hash: "h2".into(),
                    ..secret()
                }),
                saved.clone(),
            ),
            TargetState::Healthy,
            vec![SaveRestorePoint],
            vec![],
        ),
        (
            "changed while paused: saved all the same (only the operator namespace is written)",
            Policy {
                paused: true,
                ..policy(Identical)
            },
            o(
                Some(SecretView {
                    content_hash: "h2".into(),
                    labelled: false,
                    ..secret()
                }),
                saved.clone(),
            ),
            TargetState::Healthy,
            vec![SaveRestorePoint],
            vec![],
        ),
        (
            "changed, too large to save: unprotected, said so, nothing written",
            policy(Identical),
            o(
                Some(SecretView {
                    content_hash: "h2".into(),
                    unsaveable: Some(Unsaveable::TooLarge),
                    ..secret()
                }),
                saved.clone(),
            ),
            TargetState::Unprotected,
            vec![],
            vec![Reason::Unprotected],
        ),
        (
            "never saved, its data holds the key format 2 needs: unprotected",
            policy(Never),
            o(
                Some(SecretView {
                    unsaveable: Some(Unsaveable::ReservedKey),
                    ..secret()
                }),
                None,
            ),
            TargetState::Unprotected,
            vec![],
            vec![Reason::Unprotected],
        ),
    ];
    for (name, p, obs, state, actions, incidents) in cases {
        let d = decide_secret(&p, &obs);
        assert_eq!(d.state, Some(state), "{name}: state");
        assert_eq!(d.actions, actions, "{name}: actions");
        assert_eq!(d.incidents, incidents, "{name}: incidents");
    }
}

#[test]
fn a_service_account_to_recreate_is_snapshotted_when_its_snapshot_is_stale() {
    let p = Policy {
        recreate_service_account: true,
        ..policy(Identical)
    };
    let mut o = obs(sa("sa-1"), Some(token("h1")), rp("h1", "sa-1"));
    o.sa_snapshot_current = false;
    assert_eq!(
        decide_token(&p, &o).actions,
        vec![SaveServiceAccountSnapshot]
    );
    assert!(
        decide_token(&policy(Identical), &o).actions.is_empty(),
        "only when asked to recreate"
    );
    o.sa_snapshot_current = true;
    assert!(decide_token(&p, &o).actions.is_empty());
}

#[test]
fn a_missing_object_that_is_not_restored_is_looked_at_again() {
    let d = decide_token(&policy(Never), &obs(sa("sa-1"), None, rp("h1", "sa-1")));
    assert_eq!(d.requeue_after, Some(MISSING_RECHECK));
    let d = decide_token(&policy(Identical), &obs(sa("sa-1"), None, rp("h1", "sa-1")));
    assert_eq!(
        d.requeue_after, None,
        "a restore is under way: its own events follow"
    );
    let missing = SecretObservation {
        namespace_terminating: false,
        secret: None,
        restore_point: None,
        deleted_retired: false,
        owners: None,
    };
    assert_eq!(
        decide_secret(&policy(Identical), &missing).requeue_after,
        Some(MISSING_RECHECK)
    );
}

#[test]
fn a_refused_restore_point_is_never_restored_and_is_looked_at_again() {
    for why in [Refusal::ForeignNamespace, Refusal::Mismatch] {
        let missing = SecretObservation {
            namespace_terminating: false,
            secret: None,
            restore_point: refused(rp("h1", "none"), why),
            deleted_retired: false,
            owners: None,
        };
        for p in [policy(Identical), policy(Fresh), policy(Never)] {
            let d = decide_secret(&p, &missing);
            assert!(d.actions.is_empty(), "{why:?}: nothing restored");
            assert_eq!(d.requeue_after, Some(MISSING_RECHECK), "{why:?}");
        }
    }
}

#[test]
fn a_token_whose_restore_point_is_refused_is_provisioned_like_a_new_one() {
    // From an earlier namespace (its ServiceAccount UID is gone with it), or recording
    // another origin: never restored; the tokens controller issues a token for the
    // ServiceAccount that exists now, without a restore or a rotation reported.
    for why in [Refusal::ForeignNamespace, Refusal::Mismatch] {
        for saved_for in ["sa-1", "sa-old"] {
            let o = obs(sa("sa-1"), None, refused(rp("h1", saved_for), why));
            let d = decide_token(&policy(Identical), &o);
            assert_eq!(d.state, Some(TargetState::Pending), "{why:?} {saved_for}");
            assert_eq!(
                d.actions,
                vec![CreateTokenSecret { restore_of: None }],
                "{why:?} {saved_for}"
            );
            assert!(d.incidents.is_empty(), "{why:?} {saved_for}");
        }
        // And a ServiceAccount that is missing was never seen, as far as this namespace
        // knows: not "deleted".
        let mut o = obs(None, None, refused(rp("h1", "sa-old"), why));
        o.has_sa_snapshot = false;
        let d = decide_token(&policy(Identical), &o);
        assert_eq!(d.incidents, vec![Reason::ServiceAccountNotFound], "{why:?}");
        // A present token is saved anew over the refused point.
        let o = obs(
            sa("sa-1"),
            Some(token("h1")),
            refused(rp("h1", "sa-1"), why),
        );
        assert_eq!(
            decide_token(&policy(Identical), &o).actions,
            vec![SaveRestorePoint]
        );
    }
}

#[test]
fn a_deleted_secrets_final_state_is_what_its_restore_point_should_hold() {
    let saved = rp("h1", "sa-1");
    // The deletion's event shows what the restore point holds: nothing more to save.
    assert_eq!(
        latest_saved(saved.clone(), Some(&token("h1")), true),
        (saved.clone(), false)
    );
    // Updated just before it was deleted: the final state is newer.
    let (view, unsaved) = latest_saved(saved.clone(), Some(&token("h2")), true);
    assert!(unsaved);
    assert_eq!(view.map(|v| v.content_hash), Some("h2".to_owned()));
    // Deleted before it was ever saved.
    assert!(latest_saved(None, Some(&token("h2")), true).1);
    // A token Secret not filled yet holds nothing worth restoring.
    let empty = SecretView {
        token_populated: false,
        ..token("h3")
    };
    assert_eq!(
        latest_saved(saved.clone(), Some(&empty), true),
        (saved.clone(), false)
    );
    assert!(
        latest_saved(saved.clone(), Some(&empty), false).1,
        "a Secret's content is"
    );
    // Nothing seen of it: the restore point as it is.
    assert_eq!(
        latest_saved(saved.clone(), None, true),
        (saved.clone(), false)
    );
    // Retired on purpose, or a tombstone: never brought back.
    let retiring = SecretView {
        retire_requested: true,
        ..token("h2")
    };
    assert_eq!(
        latest_saved(saved.clone(), Some(&retiring), true),
        (saved.clone(), false)
    );
    let tombstone = saved.map(|rp| RestorePointView {
        tombstone: Some(Tombstone::Retired),
        ..rp
    });
    assert_eq!(
        latest_saved(tombstone.clone(), Some(&token("h2")), true),
        (tombstone, false)
    );
}

#[test]
fn a_final_state_is_saved_before_it_is_restored_and_even_when_only_alerting() {
    let gone = SecretObservation {
        namespace_terminating: false,
        secret: None,
        restore_point: rp("h2", "sa-1"),
        deleted_retired: false,
        owners: None,
    };
    let d = save_first(decide_secret(&policy(Identical), &gone));
    assert_eq!(d.actions, vec![SaveRestorePoint, RestoreIdentical]);
    let paused = Policy {
        paused: true,
        ..policy(Identical)
    };
    for policy in [policy(Never), paused] {
        assert_eq!(
            save_first(decide_secret(&policy, &gone)).actions,
            vec![SaveRestorePoint],
            "only the operator namespace is written"
        );
    }
}

#[test]
fn a_restore_point_of_a_newer_format_is_neither_overwritten_nor_restored_from() {
    for policy in [policy(Identical), policy(Never)] {
        let present = SecretView {
            content_hash: "h2".into(),
            labelled: false,
            ..token("h1")
        };
        let d = held_by_newer_point(&policy, Some(&present), true, "3");
        assert_eq!(d.state, Some(TargetState::Unprotected));
        assert_eq!(d.actions, vec![Label], "labelled, never saved over");
        assert_eq!(d.incidents, vec![Reason::Unprotected]);
        assert!(d.detail.as_deref().is_some_and(|m| m.contains("format 3")));

        for (token, reason) in [(true, Reason::TokenDeleted), (false, Reason::SecretDeleted)] {
            let d = held_by_newer_point(&policy, None, token, "3");
            assert_eq!(d.state, Some(TargetState::Missing));
            assert_eq!(d.actions, vec![], "not restored, nothing provisioned");
            assert_eq!(d.incidents, vec![reason]);
            assert_eq!(d.requeue_after, Some(MISSING_RECHECK));
        }
    }
    let d = held_by_newer_point(&policy(Identical), None, false, "bad\nformat");
    assert!(
        d.detail
            .as_deref()
            .is_some_and(|m| m.contains("(not shown)")),
        "no arbitrary text echoed"
    );
}

#[test]
fn a_final_state_too_large_to_save_is_not_taken_for_saved() {
    let saved = rp("h1", "sa-1");
    let unsaveable = SecretView {
        unsaveable: Some(Unsaveable::TooLarge),
        ..token("h2")
    };
    assert_eq!(
        latest_saved(saved.clone(), Some(&unsaveable), true),
        (saved, false),
        "the restore point it has is what a restore brings back"
    );
}

#[path = "intent_tests.rs"]
mod intent;

#[test]
fn a_restore_waits_for_the_restore_delay_and_anything_else_goes_on() {
    let two = Duration::from_secs(2);
    let after = |restore, delay| Policy {
        restore_delay: delay,
        ..policy(restore)
    };
    let saved = rp("h1", "none").map(|r| RestorePointView { sa_uid: None, ..r });
    let missing = SecretObservation {
        namespace_terminating: false,
        secret: None,
        restore_point: saved,
        deleted_retired: false,
        owners: None,
    };
    let held = |p: &Policy, d: Decision, missing_for: u64| {
        delay_restore(d, p, Duration::from_secs(missing_for), at(NOW))
    };

    // Just deleted: reported at once, restored once the delay has passed.
    let p = after(Identical, two);
    let d = held(&p, decide_secret(&p, &missing), 0);
    assert_eq!(d.state, Some(TargetState::RestorePending));
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.incidents, vec![Reason::SecretDeleted]);
    assert_eq!(d.restore_after, Some(two));
    assert!(d.state.is_some_and(TargetState::is_missing));
    let detail = d.detail.unwrap_or_default();
    assert!(
        detail.contains("restore due at 2027-01-15T08:00:02Z, after the restore delay of 2 s"),
        "{detail}"
    );
    let d = held(&p, decide_secret(&p, &missing), 1);
    assert_eq!(
        d.restore_after,
        Some(Duration::from_secs(1)),
        "what is left"
    );
    // Its time has come (or it is the retry of a failed restore): restored.
    for missing_for in [2, 60] {
        let d = held(&p, decide_secret(&p, &missing), missing_for);
        assert_eq!(d.actions, vec![RestoreIdentical], "{missing_for} s");
        assert_eq!(d.restore_after, None);
    }
    // No delay: at once, as before.
    let p = after(Identical, Duration::ZERO);
    assert_eq!(
        held(&p, decide_secret(&p, &missing), 0).actions,
        vec![RestoreIdentical]
    );
    // The final state is still saved first; only the restore waits.
    let p = after(Identical, two);
    let d = held(&p, save_first(decide_secret(&p, &missing)), 0);
    assert_eq!(d.actions, vec![SaveRestorePoint]);
    // Nothing to hold back: alert only, as before.
    let p = after(Never, two);
    let d = held(&p, decide_secret(&p, &missing), 0);
    assert_eq!(
        (d.state, d.restore_after),
        (Some(TargetState::Missing), None)
    );

    // A token waits too when its guard asks (its default is no delay), Fresh included;
    // provisioning a token that never existed is no restore and never waits.
    let p = after(Fresh, two);
    let d = held(
        &p,
        decide_token(&p, &obs(sa("sa-1"), None, rp("h1", "sa-1"))),
        0,
    );
    assert_eq!(
        (d.state, d.actions.clone()),
        (Some(TargetState::RestorePending), vec![])
    );
    let d = held(&p, decide_token(&p, &obs(sa("sa-1"), None, None)), 0);
    assert_eq!(d.actions, vec![CreateTokenSecret { restore_of: None }]);
}

#[test]
fn a_secret_deleted_with_its_owners_is_not_restored_and_one_with_a_live_owner_is() {
    let missing = |owners| SecretObservation {
        namespace_terminating: false,
        secret: None,
        restore_point: rp("h1", "none"),
        deleted_retired: false,
        owners,
    };
    let restores = decide_secret(&policy(Identical), &missing(None));
    assert!(owned_restore(&restores, true), "owners are checked first");
    assert!(
        !owned_restore(&restores, false),
        "a Secret without owners is not"
    );
    let live = decide_secret(&policy(Identical), &missing(Some(Owners::Live)));
    assert_eq!(live.actions, vec![RestoreIdentical]);
    assert_eq!(live.incidents, vec![Reason::SecretDeleted]);

    let gone = decide_secret(
        &policy(Identical),
        &missing(Some(Owners::Gone("ConfigMap/owner".into()))),
    );
    assert_eq!(gone.state, Some(TargetState::OwnerGone));
    assert!(gone.actions.is_empty(), "the cascade is not undone");
    assert_eq!(gone.incidents, vec![Reason::OwnerGone]);
    assert!(
        gone.detail
            .as_deref()
            .is_some_and(|d| d.contains("ConfigMap/owner")),
        "{gone:?}"
    );
    assert!(TargetState::OwnerGone.is_healthy() && !TargetState::OwnerGone.is_missing());

    let unverified = decide_secret(
        &policy(Identical),
        &missing(Some(Owners::Unverified("configmaps".into()))),
    );
    assert_eq!(unverified.state, Some(TargetState::OwnerUnverified));
    assert!(unverified.actions.is_empty());
    assert_eq!(unverified.incidents, vec![Reason::SecretDeleted]);
    assert!(
        unverified
            .detail
            .as_deref()
            .is_some_and(|d| d.contains("configmaps") && d.contains("ownerResources")),
        "{unverified:?}"
    );
    assert!(TargetState::OwnerUnverified.is_missing());
}
