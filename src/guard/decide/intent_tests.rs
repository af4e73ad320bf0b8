//! Table tests of what the owner of a Secret asked for, and of names held by something
//! else: the rotate annotation only on this ServiceAccount's own token, and once; the
//! retire annotation; an invalidation someone meant; a token name held by another Secret.

use super::*;

fn retire(secret: SecretView) -> SecretView {
    SecretView {
        retire_requested: true,
        ..secret
    }
}

fn tombstone(why: Tombstone, sa_uid: Option<&str>) -> Option<RestorePointView> {
    Some(RestorePointView {
        origin_uid: "secret-uid".into(),
        content_hash: "empty".into(),
        sa_uid: sa_uid.map(Into::into),
        refused: None,
        tombstone: Some(why),
        retired: why == Tombstone::Retired,
    })
}

/// An Opaque Secret at the token's name, annotated to rotate.
fn decoy() -> SecretView {
    SecretView {
        type_: "Opaque".into(),
        sa_name: None,
        sa_uid: None,
        token_populated: false,
        labelled: false,
        rotate_requested: true,
        ..token("h9")
    }
}

struct Row {
    name: &'static str,
    policy: Policy,
    obs: TokenObservation,
    state: TargetState,
    actions: Vec<Action>,
    incidents: Vec<Reason>,
}

fn check(rows: Vec<Row>) {
    for row in rows {
        let d = decide_token(&row.policy, &row.obs);
        assert_eq!(d.state, Some(row.state), "{}: state", row.name);
        assert_eq!(d.actions, row.actions, "{}: actions", row.name);
        assert_eq!(d.incidents, row.incidents, "{}: incidents", row.name);
    }
}

#[test]
fn only_a_token_of_this_service_account_is_touched_and_rotated() {
    let conflict = || vec![Reason::TargetConflict];
    check(vec![
        Row {
            name: "a decoy Opaque Secret with rotate: left alone, the name recorded",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), Some(decoy()), None),
            state: TargetState::TargetConflict,
            actions: vec![ForgetRestorePoint(Tombstone::TargetConflict)],
            incidents: conflict(),
        },
        Row {
            name: "a decoy whose name already has a restore point: nothing written",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), Some(decoy()), rp("h1", "sa-1")),
            state: TargetState::TargetConflict,
            actions: vec![],
            incidents: conflict(),
        },
        Row {
            name: "another ServiceAccount's token: a conflict, not a re-created ServiceAccount",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    sa_name: Some("other".into()),
                    sa_uid: Some("sa-9".into()),
                    rotate_requested: true,
                    ..token("h1")
                }),
                None,
            ),
            state: TargetState::TargetConflict,
            actions: vec![ForgetRestorePoint(Tombstone::TargetConflict)],
            incidents: conflict(),
        },
        Row {
            name: "a token Secret naming no ServiceAccount: a conflict",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    sa_name: None,
                    ..token("h1")
                }),
                None,
            ),
            state: TargetState::TargetConflict,
            actions: vec![ForgetRestorePoint(Tombstone::TargetConflict)],
            incidents: conflict(),
        },
        Row {
            name: "a decoy for a ServiceAccount that does not exist: still the conflict",
            policy: policy(Identical),
            obs: TokenObservation {
                has_sa_snapshot: false,
                ..obs(None, Some(decoy()), None)
            },
            state: TargetState::TargetConflict,
            actions: vec![ForgetRestorePoint(Tombstone::TargetConflict)],
            incidents: conflict(),
        },
        Row {
            name: "the decoy deleted: nothing is ever created under that name",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), None, tombstone(Tombstone::TargetConflict, None)),
            state: TargetState::TargetConflict,
            actions: vec![],
            incidents: conflict(),
        },
        Row {
            name: "a decoy while paused: reported, nothing written",
            policy: Policy {
                paused: true,
                ..policy(Identical)
            },
            obs: obs(sa("sa-1"), Some(decoy()), None),
            state: TargetState::TargetConflict,
            actions: vec![],
            incidents: conflict(),
        },
        Row {
            name: "rotate on a token not filled yet: waits for the tokens controller",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(SecretView {
                    sa_uid: None,
                    token_populated: false,
                    rotate_requested: true,
                    created: at(NOW - 10),
                    ..token("h0")
                }),
                None,
            ),
            state: TargetState::Pending,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "rotate after the rotation (the ServiceAccount has a new UID): never again",
            policy: policy(Identical),
            obs: obs(
                sa("sa-2"),
                Some(SecretView {
                    rotate_requested: true,
                    ..token("h1")
                }),
                rp("h1", "sa-1"),
            ),
            state: TargetState::Pending,
            actions: vec![],
            incidents: vec![Reason::ServiceAccountRecreated],
        },
    ]);
}

#[test]
fn a_conflict_says_what_holds_the_name_and_that_rotate_is_ignored() {
    let d = decide_token(&policy(Identical), &obs(sa("sa-1"), Some(decoy()), None));
    let detail = d.detail.expect("detail");
    assert!(detail.contains("type Opaque"), "{detail}");
    assert!(detail.contains("secretguard.dev/rotate"), "{detail}");
    let odd = SecretView {
        type_: "x\n\"injected\"".into(),
        ..decoy()
    };
    let detail = decide_token(&policy(Identical), &obs(sa("sa-1"), Some(odd), None))
        .detail
        .expect("detail");
    assert!(
        !detail.contains("injected"),
        "no arbitrary text is echoed: {detail}"
    );
}

#[test]
fn only_the_legacy_token_cleaners_invalidation_is_undone() {
    let invalid = |by_cleaner| SecretView {
        invalidated: true,
        invalidated_by_cleaner: by_cleaner,
        ..token("h1")
    };
    let d = decide_token(
        &policy(Identical),
        &obs(sa("sa-1"), Some(invalid(false)), rp("h1", "sa-1")),
    );
    assert_eq!(d.state, Some(TargetState::Invalidated));
    assert_eq!(d.incidents, vec![Reason::TokenInvalidated]);
    assert!(d.actions.is_empty(), "an admin's label stays");
    assert!(d.detail.is_some_and(|t| t.contains("left in place")));
    let d = decide_token(
        &policy(Identical),
        &obs(sa("sa-1"), Some(invalid(true)), rp("h1", "sa-1")),
    );
    assert_eq!(d.actions, vec![RemoveInvalidLabel]);
}

#[test]
fn a_retired_token_is_forgotten_and_never_brought_back() {
    let forget = || vec![ForgetRestorePoint(Tombstone::Retired)];
    check(vec![
        Row {
            name: "retire on a live token: its restore point becomes a tombstone",
            policy: policy(Identical),
            obs: obs(sa("sa-1"), Some(retire(token("h1"))), rp("h1", "sa-1")),
            state: TargetState::Retired,
            actions: forget(),
            incidents: vec![],
        },
        Row {
            name: "retire wins over rotate and revalidate",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(retire(SecretView {
                    rotate_requested: true,
                    invalidated: true,
                    invalidated_by_cleaner: true,
                    ..token("h1")
                })),
                tombstone(Tombstone::Retired, Some("sa-1")),
            ),
            state: TargetState::Retired,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "retired and unlabelled: labelled, so its deletion is seen at once",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(retire(SecretView {
                    labelled: false,
                    ..token("h1")
                })),
                None,
            ),
            state: TargetState::Retired,
            actions: vec![Label, ForgetRestorePoint(Tombstone::Retired)],
            incidents: vec![],
        },
        Row {
            name: "a retired token being deleted: no TokenDeleted",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(retire(SecretView {
                    terminating: true,
                    ..token("h1")
                })),
                tombstone(Tombstone::Retired, Some("sa-1")),
            ),
            state: TargetState::Retired,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "gone, the tombstone says retired: nothing restored or created",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                None,
                tombstone(Tombstone::Retired, Some("sa-1")),
            ),
            state: TargetState::Retired,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "annotated and deleted at once: the watch saw it retired, the copy did not",
            policy: policy(Identical),
            obs: TokenObservation {
                deleted_retired: true,
                ..obs(sa("sa-1"), None, rp("h1", "sa-1"))
            },
            state: TargetState::Retired,
            actions: forget(),
            incidents: vec![],
        },
        Row {
            name: "gone, the saved copy carries retire: forgotten, not restored",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                None,
                rp("h1", "sa-1").map(|r| RestorePointView { retired: true, ..r }),
            ),
            state: TargetState::Retired,
            actions: forget(),
            incidents: vec![],
        },
        Row {
            name: "retired, then the ServiceAccount got a new UID: a fresh token, quietly",
            policy: policy(Identical),
            obs: obs(
                sa("sa-2"),
                None,
                tombstone(Tombstone::Retired, Some("sa-1")),
            ),
            state: TargetState::Pending,
            actions: vec![CreateTokenSecret { restore_of: None }],
            incidents: vec![],
        },
        Row {
            name: "retired while paused: nothing written",
            policy: Policy {
                paused: true,
                ..policy(Identical)
            },
            obs: obs(sa("sa-1"), Some(retire(token("h1"))), rp("h1", "sa-1")),
            state: TargetState::Retired,
            actions: vec![],
            incidents: vec![],
        },
        Row {
            name: "created again by hand after retiring: guarded again",
            policy: policy(Identical),
            obs: obs(
                sa("sa-1"),
                Some(token("h1")),
                tombstone(Tombstone::Retired, Some("sa-1")),
            ),
            state: TargetState::Healthy,
            actions: vec![SaveRestorePoint],
            incidents: vec![],
        },
    ]);
}

#[test]
fn a_retired_secret_is_forgotten_and_never_brought_back() {
    let secret = || SecretView {
        type_: "Opaque".into(),
        sa_name: None,
        sa_uid: None,
        ..token("h1")
    };
    let saved = rp("h1", "none").map(|r| RestorePointView { sa_uid: None, ..r });
    let o = |secret, restore_point, deleted_retired| SecretObservation {
        namespace_terminating: false,
        secret,
        restore_point,
        deleted_retired,
        owners: None,
    };
    type Case = (&'static str, SecretObservation, TargetState, Vec<Action>);
    let forget = || vec![ForgetRestorePoint(Tombstone::Retired)];
    let cases: Vec<Case> = vec![
        (
            "retire on a live Secret",
            o(Some(retire(secret())), saved.clone(), false),
            TargetState::Retired,
            forget(),
        ),
        (
            "gone, retired",
            o(None, tombstone(Tombstone::Retired, None), false),
            TargetState::Retired,
            vec![],
        ),
        (
            "annotated and deleted at once",
            o(None, saved.clone(), true),
            TargetState::Retired,
            forget(),
        ),
        (
            "a tombstone of a conflict is no copy to restore from",
            o(None, tombstone(Tombstone::TargetConflict, None), false),
            TargetState::Missing,
            vec![],
        ),
    ];
    for (name, obs, state, actions) in cases {
        let d = decide_secret(&policy(Identical), &obs);
        assert_eq!(d.state, Some(state), "{name}: state");
        assert_eq!(d.actions, actions, "{name}: actions");
    }
}
