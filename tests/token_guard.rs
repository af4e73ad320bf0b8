//! Guarding ServiceAccount tokens on the real control plane: every token row of the
//! behaviour table (docs/architecture.md, Behaviour). Token bytes are compared, never printed.
//!
//! Note on the apiserver's token cache: kube-apiserver remembers successful token
//! authentications for about 10 s. A test that wants to prove a restored token works
//! therefore uses a token for the first time only after the restore; one that wants to
//! prove a token is dead never used it before.

mod support;

use k8s_openapi::api::core::v1::{LocalObjectReference, Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use secretguard::labels;
use secretguard::restore_point;
use serde_json::json;
use support::*;

fn secrets(client: &Client, ns: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), ns)
}

fn sa_user(ns: &str, sa: &str) -> Option<String> {
    Some(format!("system:serviceaccount:{ns}:{sa}"))
}

async fn rejected(token: &str) -> bool {
    matches!(whoami(token).await, Err(kube::Error::Api(s)) if s.code == 401)
}

#[tokio::test]
async fn creates_a_missing_token_secret_labels_it_and_never_lists_it_in_the_service_account() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "create", json!({})).await;

    let s = secrets(&client, &ns.name)
        .get("writer-token")
        .await
        .expect("token Secret");
    assert_eq!(s.type_.as_deref(), Some(labels::TOKEN_TYPE));
    let l = s.metadata.labels.unwrap_or_default();
    assert_eq!(l.get(labels::GUARDED).map(String::as_str), Some("true"));
    let sa = Api::<ServiceAccount>::namespaced(client.clone(), &ns.name)
        .get("writer")
        .await
        .expect("SA");
    assert!(
        sa.secrets.unwrap_or_default().is_empty(),
        "the token must not be listed in the SA's .secrets (the legacy cleaner targets those)"
    );
    assert_eq!(
        whoami(&token).await.expect("token works"),
        sa_user(&ns.name, "writer")
    );

    let st = wait_guard_status(&client, &ns.name, "g", "guard Ready and healthy", |s| {
        s.guarded == 1
            && condition(s, "Degraded") == Some(("False", "AllHealthy"))
            && s.targets.first().is_some_and(|t| t.state == "Healthy")
    })
    .await;
    assert_eq!(condition(&st, "Ready"), Some(("True", "Guarding")));
    assert_eq!(st.missing, 0);
    assert_eq!(st.targets.len(), 1);
    assert_eq!(st.targets[0].state, "Healthy");
    wait_event(&client, &ns.name, "TokenCreated", "SecretGuard").await;
}

#[tokio::test]
async fn restores_a_deleted_token_with_identical_bytes_that_the_old_holder_can_use() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "identical", json!({})).await;
    let api = secrets(&client, &ns.name);
    let before = api.get("writer-token").await.expect("token Secret");

    api.delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");

    let restored = wait_for("the token Secret to be re-created", || {
        let api = api.clone();
        let old_uid = before.metadata.uid.clone();
        async move {
            let s = api.get_opt("writer-token").await.ok()??;
            (s.metadata.uid != old_uid).then_some(s)
        }
    })
    .await;
    let bytes = restored
        .data
        .as_ref()
        .and_then(|d| d.get("token"))
        .map(|b| b.0.clone());
    assert!(
        bytes.as_deref() == Some(token.as_bytes()),
        "restored token bytes differ from the original"
    );
    assert_eq!(restored.type_, before.type_);
    let ann = restored.metadata.annotations.clone().unwrap_or_default();
    assert_eq!(
        ann.get(labels::SA_NAME_ANNOTATION).map(String::as_str),
        Some("writer")
    );
    // First use of the token: it works because the restored Secret holds the same bytes.
    assert_eq!(
        whoami(&token).await.expect("old token works"),
        sa_user(&ns.name, "writer")
    );

    let st = wait_guard_status(&client, &ns.name, "g", "a restore in status", |s| {
        s.restores == 1
    })
    .await;
    let inc = st.last_incident.expect("lastIncident");
    assert_eq!(
        (inc.reason.as_str(), inc.outcome.as_str(), inc.kind.as_str()),
        ("TokenDeleted", "Restored", "ServiceAccountToken")
    );
    assert!(inc.restore_seconds.is_some_and(|s| s >= 0.0));
    wait_event(&client, &ns.name, "TokenDeleted", "SecretGuard").await;
    let note = wait_event(&client, &ns.name, "TokenRestored", "SecretGuard").await;
    assert!(note.contains("TokenReview: authenticates as"), "{note}");
    wait_guard_status(&client, &ns.name, "g", "healthy again", |s| {
        s.missing == 0 && condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
}

/// Fresh re-creates the token Secret empty and lets the tokens controller fill it. Legacy
/// tokens are deterministic (no iat, jti or exp; RS256 signatures are deterministic), so for
/// an unchanged ServiceAccount the controller mints the very same bytes: this is checked
/// here, because the product's advice to users rests on it.
#[tokio::test]
async fn restore_fresh_recreates_the_secret_empty_and_the_tokens_controller_refills_it() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "fresh", json!({"restore": "Fresh"})).await;
    let api = secrets(&client, &ns.name);
    let before = api.get("writer-token").await.expect("get");
    api.delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    let st = wait_guard_status(&client, &ns.name, "g", "fresh restore counted", |s| {
        s.restores == 1
    })
    .await;
    assert_eq!(
        st.last_incident.map(|i| i.outcome).as_deref(),
        Some("RestoredFresh")
    );
    let again = wait_for_token(&client, &ns.name, "writer-token").await;
    let after = api.get("writer-token").await.expect("get");
    assert_ne!(after.metadata.uid, before.metadata.uid, "a new Secret");
    assert!(
        again == token,
        "same ServiceAccount, same name: the tokens controller mints identical bytes"
    );
    assert_eq!(
        whoami(&again).await.expect("token works"),
        sa_user(&ns.name, "writer")
    );
    assert!(
        events(&client, &ns.name, "TokenRotated").await.is_empty(),
        "nobody has to update: no TokenRotated"
    );
}

#[tokio::test]
async fn restore_never_its_earlier_spelling_off_and_paused_only_alert() {
    let client = admin_client().await;
    operator();
    for (prefix, extra) in [
        ("never", json!({"restore": "Never"})),
        ("off", json!({"restore": "Off"})),
        ("paused", json!({"paused": true})),
    ] {
        let (ns, _token) = guarded_writer(&client, prefix, json!({})).await;
        // Switch the policy only now: the token was provisioned and saved first.
        let guards: Api<secretguard::api::v1alpha1::SecretGuard> =
            Api::namespaced(client.clone(), &ns.name);
        guards
            .patch(
                "g",
                &PatchParams::default(),
                &Patch::Merge(json!({"spec": extra})),
            )
            .await
            .expect("patch guard");
        wait_guard_status(&client, &ns.name, "g", "new generation observed", |s| {
            s.observed_generation == Some(2)
        })
        .await;
        secrets(&client, &ns.name)
            .delete("writer-token", &DeleteParams::default())
            .await
            .expect("delete");
        let st = wait_guard_status(&client, &ns.name, "g", "the token reported missing", |s| {
            s.missing == 1
        })
        .await;
        let inc = st.last_incident.clone().expect("incident");
        assert_eq!(inc.reason, "TokenDeleted");
        let want = if prefix == "paused" {
            "Paused"
        } else {
            "AlertOnly"
        };
        assert_eq!(inc.outcome, want, "{prefix}");
        assert_eq!(condition(&st, "Degraded"), Some(("True", "Missing")));
        assert_eq!(st.restores, 0);
        assert!(
            secrets(&client, &ns.name)
                .get_opt("writer-token")
                .await
                .expect("get")
                .is_none(),
            "{prefix}: nothing re-created"
        );
    }
}

#[tokio::test]
async fn a_recreated_service_account_gets_a_fresh_token_at_once() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "sarecreate", json!({})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.delete("writer", &DeleteParams::default())
        .await
        .expect("delete SA");
    wait_event(&client, &ns.name, "ServiceAccountDeleted", "SecretGuard").await;
    create_service_account(&client, &ns.name, "writer").await;

    let new = wait_for_new_token(&client, &ns.name, "writer-token", &token).await;
    assert_eq!(
        whoami(&new).await.expect("fresh token works"),
        sa_user(&ns.name, "writer")
    );
    assert!(rejected(&token).await, "the old token can never work again");
    wait_event(&client, &ns.name, "TokenRotated", "SecretGuard").await;
    wait_guard_status(
        &client,
        &ns.name,
        "g",
        "healthy with the fresh token",
        |s| s.missing == 0 && condition(s, "Degraded") == Some(("False", "AllHealthy")),
    )
    .await;
}

#[tokio::test]
async fn a_deleted_service_account_is_reported_and_recreated_when_asked() {
    let client = admin_client().await;
    operator();
    // Without recreateServiceAccount: a critical incident, nothing re-created.
    let (ns, _) = guarded_writer(&client, "sadel", json!({})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    sas.delete("writer", &DeleteParams::default())
        .await
        .expect("delete SA");
    let st = wait_guard_status(&client, &ns.name, "g", "ServiceAccountDeleted", |s| {
        s.last_incident
            .as_ref()
            .is_some_and(|i| i.reason == "ServiceAccountDeleted")
    })
    .await;
    assert_eq!(
        st.last_incident.as_ref().map(|i| i.outcome.as_str()),
        Some("AlertOnly")
    );
    assert_eq!(
        condition(&st, "Degraded"),
        Some(("True", "ServiceAccountMissing"))
    );
    let note = wait_event(&client, &ns.name, "ServiceAccountDeleted", "SecretGuard").await;
    assert!(note.contains("severity critical"), "{note}");
    assert!(sas.get_opt("writer").await.expect("get").is_none());

    // With recreateServiceAccount: it comes back with its settings, and a fresh token.
    let ns2 = TestNamespace::new(&client, "sarestore").await;
    let sa = ServiceAccount {
        metadata: kube::api::ObjectMeta {
            name: Some("writer".into()),
            labels: Some([("team".to_owned(), "ingest".to_owned())].into()),
            ..Default::default()
        },
        image_pull_secrets: Some(vec![LocalObjectReference {
            name: "registry".into(),
        }]),
        automount_service_account_token: Some(false),
        ..Default::default()
    };
    let sas2: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns2.name);
    let original = sas2
        .create(&Default::default(), &sa)
        .await
        .expect("create SA");
    create_guard(
        &client,
        &ns2.name,
        "g",
        json!({"serviceAccounts": [{"name": "writer", "recreateServiceAccount": true}]}),
    )
    .await;
    let token = wait_for_token(&client, &ns2.name, "writer-token").await;
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let snap = restore_point::snapshot_name_for(&ns2.name, "writer-token");
    wait_for("the ServiceAccount snapshot", || {
        let (rps, snap) = (rps.clone(), snap.clone());
        async move { rps.get_opt(&snap).await.ok()?.map(|_| ()) }
    })
    .await;
    sas2.delete("writer", &DeleteParams::default())
        .await
        .expect("delete SA");
    let back = wait_for("the ServiceAccount to be re-created", || {
        let sas2 = sas2.clone();
        let old = original.metadata.uid.clone();
        async move {
            sas2.get_opt("writer")
                .await
                .ok()?
                .filter(|s| s.metadata.uid != old)
        }
    })
    .await;
    assert_eq!(
        back.metadata
            .labels
            .unwrap_or_default()
            .get("team")
            .map(String::as_str),
        Some("ingest")
    );
    assert_eq!(back.image_pull_secrets, sa.image_pull_secrets);
    assert_eq!(back.automount_service_account_token, Some(false));
    let new = wait_for_new_token(&client, &ns2.name, "writer-token", &token).await;
    assert_eq!(
        whoami(&new).await.expect("fresh token works"),
        sa_user(&ns2.name, "writer")
    );
    wait_event(&client, &ns2.name, "ServiceAccountRestored", "SecretGuard").await;
}

#[tokio::test]
async fn the_rotate_annotation_revokes_the_old_token_and_mints_a_new_one() {
    let client = admin_client().await;
    operator();
    let (ns, token) = guarded_writer(&client, "rotate", json!({})).await;
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), &ns.name);
    let sa_before = sas.get("writer").await.expect("SA").metadata.uid;
    let api = secrets(&client, &ns.name);
    api.patch(
        "writer-token",
        &PatchParams::default(),
        &Patch::Merge(json!({"metadata": {"annotations": {labels::ROTATE: "true"}}})),
    )
    .await
    .expect("annotate");
    let new = wait_for_new_token(&client, &ns.name, "writer-token", &token).await;
    assert!(rejected(&token).await, "the old token is revoked");
    assert_ne!(
        sas.get("writer").await.expect("SA").metadata.uid,
        sa_before,
        "rotation re-creates the ServiceAccount"
    );
    assert_eq!(
        whoami(&new).await.expect("new token works"),
        sa_user(&ns.name, "writer")
    );
    let s = api.get("writer-token").await.expect("get");
    assert!(
        !s.metadata
            .annotations
            .unwrap_or_default()
            .contains_key(labels::ROTATE),
        "the rotate annotation is removed"
    );
    // The restore point follows the new token, so a later deletion brings back the new one.
    wait_restore_point(
        &client,
        &ns.name,
        "writer-token",
        "the restore point to hold the new token",
        |rp| holds_token(rp, &new),
    )
    .await;
    wait_event(&client, &ns.name, "TokenRotated", "SecretGuard").await;
}

#[tokio::test]
async fn a_second_reconcile_writes_nothing() {
    let client = admin_client().await;
    let ctx = operator();
    let (ns, _) = guarded_writer(&client, "idem", json!({})).await;
    wait_guard_status(&client, &ns.name, "g", "healthy", |s| {
        condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let guards: Api<secretguard::api::v1alpha1::SecretGuard> =
        Api::namespaced(client.clone(), &ns.name);
    let rp_name = restore_point::name_for(&ns.name, "writer-token");
    let versions = || async {
        (
            secrets(&client, &ns.name)
                .get("writer-token")
                .await
                .expect("secret")
                .metadata
                .resource_version,
            rps.get(&rp_name)
                .await
                .expect("rp")
                .metadata
                .resource_version,
            guards
                .get("g")
                .await
                .expect("guard")
                .metadata
                .resource_version,
        )
    };
    wait_operator_idle(&ctx, 0).await;
    let before = versions().await;
    let guard = secretguard::guard::index::ObjectKey::new(&ns.name, "g");
    let drift = ctx.audit_drift(&guard);
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    assert_eq!(
        versions().await,
        before,
        "a reconcile of a healthy guard wrote something"
    );
    assert_eq!(
        ctx.audit_drift(&guard),
        drift,
        "the audit found drift where there was none"
    );
}

#[tokio::test]
async fn deleting_the_guard_removes_its_labels_and_keeps_its_restore_points_for_the_retention() {
    let client = admin_client().await;
    operator();
    let (ns, _) = guarded_writer(&client, "unguard", json!({})).await;
    let guards: Api<secretguard::api::v1alpha1::SecretGuard> =
        Api::namespaced(client.clone(), &ns.name);
    guards
        .delete("g", &DeleteParams::default())
        .await
        .expect("delete guard");
    let api = secrets(&client, &ns.name);
    wait_for("the guarded label to be removed", || {
        let api = api.clone();
        async move {
            let s = api.get_opt("writer-token").await.ok()??;
            (!s.metadata
                .labels
                .unwrap_or_default()
                .contains_key(labels::GUARDED))
            .then_some(())
        }
    })
    .await;
    // Kept for the retention, as for a deleted namespace (a guard deleted by accident,
    // or with the CRD, must not take every backup with it).
    wait_for("the restore point stamped orphaned", || async {
        restore_point::orphaned_since(&get_restore_point(&client, &ns.name, "writer-token").await?)
    })
    .await;
    // No longer guarded: a deletion now stays a deletion.
    api.delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    let ctx = operator();
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    assert!(api.get_opt("writer-token").await.expect("get").is_none());
}

#[tokio::test]
async fn a_guard_with_an_invalid_spec_reports_it_without_disturbing_another_guard() {
    let client = admin_client().await;
    let ctx = operator();
    let ns = TestNamespace::new(&client, "invalid").await;
    create_service_account(&client, &ns.name, "good").await;
    create_guard(
        &client,
        &ns.name,
        "bad",
        json!({"secretSelector": {"matchExpressions": [{"key": "tier", "operator": "Bogus"}]}}),
    )
    .await;
    create_guard(
        &client,
        &ns.name,
        "good",
        json!({"serviceAccounts": [{"name": "good"}]}),
    )
    .await;
    let msg = wait_invalid_spec(&client, &ns.name, "bad").await;
    assert!(msg.contains("spec.secretSelector"), "{msg}");
    wait_for_token(&client, &ns.name, "good-token").await;
    wait_guard_status(
        &client,
        &ns.name,
        "good",
        "the good guard is healthy",
        |s| condition(s, "Ready") == Some(("True", "Guarding")) && s.guarded == 1,
    )
    .await;
    // What SecretGuardNotReady fires on: the bad guard at 0, the good one at 1.
    let ready = |guard: &str| {
        let series = format!(
            "secretguard_guard_ready{{namespace=\"{}\",guard=\"{guard}\"}} ",
            ns.name
        );
        let text = ctx.metrics.encode();
        text.lines()
            .find_map(|l| l.strip_prefix(&series).map(str::to_owned))
    };
    wait_for("secretguard_guard_ready of both guards", || async {
        (ready("bad").as_deref() == Some("0") && ready("good").as_deref() == Some("1"))
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_terminating_namespace_is_left_alone() {
    let client = admin_client().await;
    let ctx = operator();
    let (ns, _) = guarded_writer(&client, "nsgone", json!({})).await;
    ns.delete_and_wait(&client).await;
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    assert_eq!(ctx.failing(), 0, "no error loop over a deleted namespace");
}

/// The audit repairs what the watches do not act on, and counts it: here a restore point
/// edited behind the operator's back (its watch only reacts to deletions).
#[tokio::test]
async fn the_audit_repairs_and_counts_drift_the_watches_do_not_act_on() {
    let client = admin_client().await;
    let ctx = operator();
    let (ns, token) = guarded_writer(&client, "drift", json!({})).await;
    let guard = secretguard::guard::index::ObjectKey::new(&ns.name, "g");
    let rps: Api<Secret> = Api::namespaced(client.clone(), OPERATOR_NAMESPACE);
    let rp_name = restore_point::name_for(&ns.name, "writer-token");
    let cached_hash = || {
        let cached = ctx.stores.restore_point(OPERATOR_NAMESPACE, &rp_name)?;
        Some(cached.saved.as_ref().ok()?.content_hash)
    };
    let before = wait_for("the operator's cache to hold the restore point", || async {
        cached_hash()
    })
    .await;
    rps.patch(
        &rp_name,
        &PatchParams::default(),
        &Patch::Merge(json!({"data": {"token": "dGFtcGVyZWQ="}})),
    )
    .await
    .expect("tamper with the restore point");
    // The operator must have seen the edit before the audit can find it.
    wait_for(
        "the operator's cache to hold the edited restore point",
        || async { cached_hash().filter(|h| *h != before).map(|_| ()) },
    )
    .await;
    let drift = ctx.audit_drift(&guard);
    let processed = ctx.processed.load(std::sync::atomic::Ordering::Relaxed);
    secretguard::controller::audit(&ctx);
    wait_operator_idle(&ctx, processed).await;
    assert_eq!(ctx.audit_drift(&guard), drift + 1);
    // What /metrics serves: SecretGuardAuditDrift fires on this counter.
    let exposition = ctx.metrics.encode();
    let counted = exposition
        .lines()
        .find(|l| {
            l.starts_with("secretguard_audit_drift_total{")
                && l.contains(&format!("namespace=\"{}\"", ns.name))
                && l.contains("guard=\"g\"")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok());
    assert_eq!(
        counted,
        Some(drift + 1),
        "secretguard_audit_drift_total counts the drift"
    );
    let rp = rps.get(&rp_name).await.expect("restore point");
    let saved = rp.data.and_then(|d| d.get("token").map(|b| b.0.clone()));
    assert!(
        saved.as_deref() == Some(token.as_bytes()),
        "the restore point was repaired from the live token"
    );
}

/// What GitOps tools do: a Namespace, a ServiceAccount and a guard applied together. The
/// guard can reach the operator before the namespace does; a namespace the cache has not
/// seen yet is not a terminating one, and the token is provisioned at once.
#[tokio::test]
async fn a_namespace_its_service_account_and_a_guard_applied_together_get_a_token() {
    let client = admin_client().await;
    operator();
    let name = format!(
        "bundle-{}",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or_default()
    );
    let ns = TestNamespace { name: name.clone() };
    let bundle = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {name}, labels: {{secretguard.dev/test: 'true'}}}}\n---\n\
         apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: writer, namespace: {name}}}\n---\n\
         apiVersion: secretguard.dev/v1alpha1\nkind: SecretGuard\nmetadata: {{name: g, namespace: {name}}}\n\
         spec: {{serviceAccounts: [{{name: writer}}]}}\n"
    );
    let out = kubectl_with_input(&["apply", "-f", "-"], &bundle);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let token = wait_for_token(&client, &ns.name, "writer-token").await;
    // The apiserver reads ServiceAccounts and token Secrets for authentication through its
    // own caches: a token of objects this new may be refused for a moment.
    let user = sa_user(&ns.name, "writer");
    wait_for("the token to authenticate as writer", || async {
        (whoami(&token).await.ok() == Some(user.clone())).then_some(())
    })
    .await;
    wait_guard_status(
        &client,
        &ns.name,
        "g",
        "the token guarded and healthy",
        |s| s.targets.first().is_some_and(|t| t.state == "Healthy"),
    )
    .await;
    assert!(
        events(&client, &ns.name, "ServiceAccountDeleted")
            .await
            .is_empty(),
        "a ServiceAccount that was merely new must not be reported deleted"
    );
}

/// A guard written before its ServiceAccount exists reports that, not a deletion (no
/// critical alert for something that was never there), and guards the token once the
/// ServiceAccount is created.
#[tokio::test]
async fn a_service_account_that_never_existed_is_not_found_rather_than_deleted() {
    let client = admin_client().await;
    operator();
    let ns = TestNamespace::new(&client, "never").await;
    create_guard(
        &client,
        &ns.name,
        "g",
        json!({"serviceAccounts": [{"name": "writer"}]}),
    )
    .await;
    wait_guard_status(
        &client,
        &ns.name,
        "g",
        "the token reported ServiceAccountNotFound",
        |s| {
            s.targets
                .first()
                .is_some_and(|t| t.state == "ServiceAccountNotFound")
                && condition(s, "Degraded") == Some(("True", "ServiceAccountNotFound"))
        },
    )
    .await;
    wait_event(&client, &ns.name, "ServiceAccountNotFound", "SecretGuard").await;
    assert!(
        events(&client, &ns.name, "ServiceAccountDeleted")
            .await
            .is_empty(),
        "never deleted: no ServiceAccountDeleted"
    );

    create_service_account(&client, &ns.name, "writer").await;
    let token = wait_for_token(&client, &ns.name, "writer-token").await;
    let user = sa_user(&ns.name, "writer");
    wait_for("the token to authenticate as writer", || async {
        (whoami(&token).await.ok() == Some(user.clone())).then_some(())
    })
    .await;
    wait_guard_status(&client, &ns.name, "g", "the guard healthy", |s| {
        condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
}
