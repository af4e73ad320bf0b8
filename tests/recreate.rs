//! A guarded Secret deleted and at once re-created by someone else (a CD tool: `kubectl
//! replace --force`, Helm's before-hook-creation, Argo CD `Replace=true`), on the real
//! control plane (security review B3). The restore of a generic Secret waits its restore
//! delay (`restoreDelaySeconds`, 2 s by default): the re-creator's Secret wins and becomes
//! the restore point, while a plain deletion is still undone. `restoreDelaySeconds: 0`
//! restores at once, as token Secrets are by default.

mod support;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::Client;
use kube::api::{Api, DeleteParams, PostParams};
use secretguard::api::v1alpha1::SecretGuardStatus;
use secretguard::{labels, restore_point};
use serde_json::json;
use support::*;

/// A Secret `name` holding `v: value`.
fn secret(name: &str, value: &str) -> Secret {
    serde_json::from_value(json!({"metadata": {"name": name}, "stringData": {"v": value}}))
        .expect("Secret")
}

/// The value of `v` in a Secret (read from its data).
fn value_of(s: &Secret) -> Option<String> {
    let bytes = s.data.as_ref()?.get("v")?;
    Some(String::from_utf8_lossy(&bytes.0).into_owned())
}

/// Create `names`, each holding "old", guarded by `guard` with these extra fields, and
/// wait until each is saved.
async fn guarded(client: &Client, ns: &str, guard: &str, names: &[&str], extra: serde_json::Value) {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    for name in names {
        api.create(&PostParams::default(), &secret(name, "old"))
            .await
            .expect("create Secret");
    }
    let mut spec = json!({"secrets": names.iter().map(|n| json!({"name": n})).collect::<Vec<_>>()});
    if let (Some(s), Some(e)) = (spec.as_object_mut(), extra.as_object()) {
        s.extend(e.clone());
    }
    create_guard(client, ns, guard, spec).await;
    for name in names {
        wait_saved(client, ns, name).await;
    }
}

/// A test namespace with Secret `db` ("old") guarded by guard `g` (with these extra
/// fields), saved; the in-process operator running.
async fn guarded_db(
    client: &Client,
    prefix: &str,
    extra: serde_json::Value,
) -> (TestNamespace, Api<Secret>) {
    guarded_in_new_namespace(client, prefix, &["db"], extra).await
}

/// A test namespace with Secrets `names` ("old") guarded by guard `g` (with these extra
/// fields), saved; the in-process operator running.
async fn guarded_in_new_namespace(
    client: &Client,
    prefix: &str,
    names: &[&str],
    extra: serde_json::Value,
) -> (TestNamespace, Api<Secret>) {
    operator();
    let ns = TestNamespace::new(client, prefix).await;
    guarded(client, &ns.name, "g", names, extra).await;
    let api = Api::namespaced(client.clone(), &ns.name);
    (ns, api)
}

/// Delete `name` and wait until it exists again as another object: (deleted, back).
async fn delete_until_back(api: &Api<Secret>, name: &str) -> (Secret, Secret) {
    let before = api.get(name).await.expect("get");
    api.delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let back = wait_for(&format!("{name} back"), || async {
        api.get_opt(name)
            .await
            .ok()?
            .filter(|s| s.metadata.uid != before.metadata.uid)
    })
    .await;
    (before, back)
}

/// The note of the deletion Event (`reason`) about `name` on its guard.
async fn deletion_note(client: &Client, ns: &str, reason: &str, name: &str) -> String {
    let about = format!("{ns}/{name} was deleted");
    wait_for(&format!("a {reason} Event about {name}"), || async {
        events(client, ns, reason)
            .await
            .into_iter()
            .find(|(kind, note)| kind == "SecretGuard" && note.contains(&about))
            .map(|(_, note)| note)
    })
    .await
}

/// When the restore announced in a deletion's note ("restore due at <time>") is due.
fn due_at(note: &str) -> Timestamp {
    note.split("restore due at ")
        .nth(1)
        .and_then(|rest| rest.split([',', ' ']).next())
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no due time in: {note}"))
}

/// Wait until the restore announced in `note` was due (and a second more), and the
/// operator has done what was queued by then.
async fn wait_past_due(note: &str) {
    let after = due_at(note) + SignedDuration::from_secs(1);
    wait_for(&format!("the restore delay to pass ({after})"), || async {
        (Timestamp::now() > after).then_some(())
    })
    .await;
    let ctx = operator();
    wait_for("the operator to be idle", || async {
        ctx.idle().then_some(())
    })
    .await;
}

/// The guard's last incident: (reason, outcome, restore seconds).
fn last_incident(s: &SecretGuardStatus) -> Option<(&str, &str, Option<f64>)> {
    let i = s.last_incident.as_ref()?;
    Some((i.reason.as_str(), i.outcome.as_str(), i.restore_seconds))
}

#[tokio::test]
async fn a_secret_a_cd_tool_deletes_and_re_creates_keeps_its_new_content() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "replace").await;
    let n = ns.name.as_str();
    let api: Api<Secret> = Api::namespaced(client.clone(), n);
    guarded(&client, n, "g1", &["by-replace"], json!({})).await;
    guarded(&client, n, "g2", &["by-create"], json!({})).await;
    let old_uid = |s: Secret| s.metadata.uid;
    let replaced_uid = old_uid(api.get("by-replace").await.expect("get"));

    // kubectl replace --force: a delete, then a create of the new manifest.
    let manifest = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: by-replace\n  namespace: {n}\nstringData:\n  v: new-1\n"
    );
    let out = kubectl_with_input(&["replace", "--force", "-f", "-"], &manifest);
    assert!(
        out.status.success(),
        "kubectl replace --force must win over the restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    // A deletion that does not wait, then a create.
    let out = kubectl(&["-n", n, "delete", "secret", "by-create", "--wait=false"]);
    assert!(out.status.success(), "{out:?}");
    let out = kubectl(&[
        "-n",
        n,
        "create",
        "secret",
        "generic",
        "by-create",
        "--from-literal=v=new-2",
    ]);
    assert!(
        out.status.success(),
        "the create right after the deletion must win over the restore: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    for (guard, name, value) in [("g1", "by-replace", "new-1"), ("g2", "by-create", "new-2")] {
        // The deletion is still reported, as pending; then the decision: kept.
        let note = deletion_note(&client, n, "SecretDeleted", name).await;
        assert!(note.contains("outcome: RestorePending"), "{note}");
        let kept = wait_event_on(&client, n, "KeptRecreated", "Secret", name).await;
        assert!(kept.contains("kept as it is, not restored"), "{kept}");
        // It stays so once the restore was due.
        wait_past_due(&note).await;
        let live = api.get(name).await.expect("get");
        assert_eq!(value_of(&live).as_deref(), Some(value), "{name}: theirs");
        let restored_from = live
            .metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::RESTORED_FROM));
        assert_eq!(restored_from, None, "{name}: not a restore of ours");
        // And its content is the restore point: a later deletion brings back theirs.
        let want = restore_point::secret_hash(&live);
        wait_restore_point(
            &client,
            n,
            name,
            "the restore point of their Secret",
            |rp| restore_point::parse(rp).is_ok_and(|rp| rp.content_hash == want),
        )
        .await;
        let st = wait_guard_status(&client, n, guard, "healthy, nothing restored", |s| {
            s.missing == 0
                && last_incident(s).map(|(r, o, _)| (r, o))
                    == Some(("SecretDeleted", "KeptRecreated"))
        })
        .await;
        assert_eq!(st.restores, 0, "{name}: nothing was restored");
    }
    assert_ne!(
        old_uid(api.get("by-replace").await.expect("get")),
        replaced_uid
    );
}

#[tokio::test]
async fn a_plain_deletion_is_still_restored_once_the_restore_delay_has_passed() {
    let client = admin_client().await;
    let (ns, api) = guarded_db(&client, "delay", json!({})).await;
    let n = ns.name.as_str();

    let (before, back) = delete_until_back(&api, "db").await;
    let note = deletion_note(&client, n, "SecretDeleted", "db").await;
    assert!(
        note.contains("outcome: RestorePending") && note.contains("restore delay of 2 s"),
        "reported at once, restore pending: {note}"
    );
    assert_eq!(value_of(&back).as_deref(), Some("old"));
    assert_eq!(
        back.metadata
            .annotations
            .as_ref()
            .and_then(|a| a.get(labels::RESTORED_FROM)),
        before.metadata.uid.as_ref(),
        "restored by the operator"
    );
    wait_event_on(&client, n, "SecretRestored", "Secret", "db").await;
    let st = wait_guard_status(&client, n, "g", "one restore", |s| {
        s.restores == 1 && s.missing == 0
    })
    .await;
    let (reason, outcome, seconds) = last_incident(&st).expect("lastIncident");
    assert_eq!((reason, outcome), ("SecretDeleted", "Restored"));
    assert!(
        seconds.is_some_and(|s| s >= 2.0),
        "not restored before its delay: {seconds:?}"
    );
}

#[tokio::test]
async fn with_no_restore_delay_a_deletion_is_undone_at_once_and_a_late_create_is_refused() {
    let client = admin_client().await;
    let (ns, api) = guarded_db(&client, "nodelay", json!({"restoreDelaySeconds": 0})).await;

    delete_until_back(&api, "db").await;
    let note = deletion_note(&client, &ns.name, "SecretDeleted", "db").await;
    assert!(
        note.contains("outcome: Restored"),
        "restored in the reconcile that saw the deletion: {note}"
    );
    // What a CD tool re-creating it now gets, as before restore delays existed.
    let refused = api
        .create(&PostParams::default(), &secret("db", "new"))
        .await
        .expect_err("the restored Secret is there");
    assert!(
        matches!(&refused, kube::Error::Api(s) if s.code == 409 && s.reason == "AlreadyExists"),
        "{refused:?}"
    );
    let live = api.get("db").await.expect("get");
    assert_eq!(value_of(&live).as_deref(), Some("old"));
}

#[tokio::test]
async fn two_secrets_of_one_guard_deleted_in_turn_each_get_an_event_naming_them() {
    // kube's event recorder folded Events of one reason on one object into a series that
    // kept the first note: the second Secret's deletion read as the first one's, again.
    let client = admin_client().await;
    let names = ["first", "second"];
    let no_delay = json!({"restoreDelaySeconds": 0});
    let (ns, api) = guarded_in_new_namespace(&client, "twoevents", &names, no_delay).await;

    for name in names {
        delete_until_back(&api, name).await;
    }
    for name in names {
        let note = deletion_note(&client, &ns.name, "SecretDeleted", name).await;
        assert!(note.contains("outcome: Restored"), "{note}");
    }
}

#[tokio::test]
async fn a_token_secret_is_restored_at_once_by_default() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "tokennow", json!({})).await;
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns.name);

    let (_, back) = delete_until_back(&api, "writer-token").await;
    let note = wait_event(&client, &ns.name, "TokenDeleted", "SecretGuard").await;
    assert!(
        note.contains("outcome: Restored") && !note.contains("restore due"),
        "no restore delay for a token unless its guard asks: {note}"
    );
    let bytes = back.data.as_ref().and_then(|d| d.get("token"));
    assert!(
        bytes.is_some_and(|b| b.0 == token.as_bytes()),
        "the same token bytes"
    );
}
