//! What owners of a Secret ask for, and names that are not the guard's to take, on the
//! real control plane: the rotate annotation acts only on the ServiceAccount's own token,
//! once; a tokenSecretName held by another Secret is left alone and never taken; the
//! retire annotation retires a token or Secret on purpose. Attackers are users with a
//! custom Role (`kubectl --as`). Token bytes are compared, never printed.
//!
//! The operator runs as a process, one at a time (the tests take a lock): a test starts
//! it again and waits for /readyz as a barrier, since the first pass after a start
//! reconciles every guarded object once.

mod support;

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};

use futures::StreamExt;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, Patch, PatchParams};
use kube::runtime::watcher;
use secretguard::api::v1alpha1::SecretGuardStatus;
use secretguard::labels;
use serde_json::json;
use support::*;

/// One operator process at a time.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The namespace of the operators of the churn test.
const CHURN_OPERATOR_NAMESPACE: &str = "secretguard-churn";

fn started(name: &str) -> OperatorProcess {
    prepare_operator();
    let op = OperatorProcess::builder(name).workers(2).start();
    op.wait_ready();
    op
}

fn secrets(client: &Client, ns: &str) -> Api<Secret> {
    Api::namespaced(client.clone(), ns)
}

fn ok(out: std::process::Output, what: &str) {
    assert!(
        out.status.success(),
        "{what}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Give user `mallory` in `ns` no more than: create and update SecretGuards, create Secrets.
fn grant_mallory(ns: &str) {
    let rbac = format!(
        "apiVersion: rbac.authorization.k8s.io/v1\nkind: Role\nmetadata: {{name: mallory, namespace: {ns}}}\n\
         rules:\n- {{apiGroups: [secretguard.dev], resources: [secretguards], verbs: [create, update, get]}}\n\
         - {{apiGroups: [''], resources: [secrets], verbs: [create]}}\n---\n\
         apiVersion: rbac.authorization.k8s.io/v1\nkind: RoleBinding\nmetadata: {{name: mallory, namespace: {ns}}}\n\
         roleRef: {{apiGroup: rbac.authorization.k8s.io, kind: Role, name: mallory}}\n\
         subjects: [{{apiGroup: rbac.authorization.k8s.io, kind: User, name: mallory}}]\n"
    );
    ok(
        kubectl_with_input(&["apply", "-f", "-"], &rbac),
        "grant mallory",
    );
}

fn as_mallory(ns: &str, yaml: &str) {
    ok(
        kubectl_with_input(&["--as", "mallory", "-n", ns, "create", "-f", "-"], yaml),
        "kubectl --as mallory create",
    );
}

fn ready_condition(s: &SecretGuardStatus) -> (&str, &str, &str) {
    s.conditions
        .iter()
        .find(|c| c.type_ == "Ready")
        .map(|c| (c.status.as_str(), c.reason.as_str(), c.message.as_str()))
        .unwrap_or_default()
}

async fn wait_conflict(client: &Client, ns: &str) -> SecretGuardStatus {
    wait_guard_status(client, ns, "g", "Ready=False, TargetConflict", |s| {
        ready_condition(s).1 == "TargetConflict"
            && s.targets
                .first()
                .is_some_and(|t| t.state == "TargetConflict")
    })
    .await
}

fn labelled(secret: &Secret) -> bool {
    secret
        .metadata
        .labels
        .as_ref()
        .is_some_and(|l| l.contains_key(labels::GUARDED))
}

async fn sa_uid(client: &Client, ns: &str, name: &str) -> Option<String> {
    Api::<ServiceAccount>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .expect("ServiceAccount")
        .metadata
        .uid
}

/// Wait until the restore point of `ns/name` is a tombstone: it holds no data.
async fn wait_tombstone(client: &Client, ns: &str, name: &str, why: &str) {
    wait_restore_point(client, ns, name, "a tombstone without data", |rp| {
        rp.data.as_ref().is_none_or(|d| d.is_empty())
            && rp
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get("secretguard.dev/origin-annotations"))
                .is_some_and(|o| o.contains(why))
    })
    .await;
}

async fn annotate(client: &Client, ns: &str, name: &str, key: &str) {
    secrets(client, ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"annotations": {key: "true"}}})),
        )
        .await
        .expect("annotate");
}

#[tokio::test]
async fn a_rotate_annotation_on_a_decoy_secret_never_rotates_the_service_account() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, "decoy").await;
    let n = ns.name.as_str();
    create_service_account(&client, n, "victim").await;
    let before = sa_uid(&client, n, "victim").await;
    grant_mallory(n);
    as_mallory(
        n,
        "apiVersion: v1\nkind: Secret\nmetadata: {name: decoy, annotations: {secretguard.dev/rotate: 'true'}}\nstringData: {x: 'decoy data'}\n",
    );
    as_mallory(
        n,
        "apiVersion: secretguard.dev/v1alpha1\nkind: SecretGuard\nmetadata: {name: g}\n\
         spec: {serviceAccounts: [{name: victim, tokenSecretName: decoy}]}\n",
    );
    // Started with the decoy in place: its first pass, which has reconciled the decoy
    // once by the time the operator is ready, must end and rotate nothing.
    let _op = started("decoy");
    assert_eq!(
        sa_uid(&client, n, "victim").await,
        before,
        "the ServiceAccount was re-created"
    );
    let st = wait_conflict(&client, n).await;
    let (_, _, why) = ready_condition(&st);
    assert!(
        why.contains("decoy") && why.contains("type Opaque") && why.contains(labels::ROTATE),
        "the guard says why: {why}"
    );
    wait_event(&client, n, "TargetConflict", "SecretGuard").await;
    assert!(events(&client, n, "TokenRotated").await.is_empty());
    let decoy = secrets(&client, n).get("decoy").await.expect("decoy");
    assert!(
        !labelled(&decoy),
        "a Secret that is not the token is not labelled"
    );
    wait_tombstone(&client, n, "decoy", "TargetConflict").await;
    assert_eq!(sa_uid(&client, n, "victim").await, before);
}

/// The ServiceAccount UIDs a watch sees for `name`, from now on (its current one first).
fn watch_uids(client: &Client, ns: &str, name: &str) -> Arc<Mutex<BTreeSet<String>>> {
    let seen = Arc::new(Mutex::new(BTreeSet::new()));
    let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let out = Arc::clone(&seen);
    tokio::spawn(async move {
        let mut stream = std::pin::pin!(watcher(api, config));
        while let Some(event) = stream.next().await {
            if let Ok(watcher::Event::Apply(sa) | watcher::Event::InitApply(sa)) = event
                && let Some(uid) = sa.metadata.uid
            {
                out.lock().expect("uids").insert(uid);
            }
        }
    });
    seen
}

#[tokio::test]
async fn a_rotate_request_on_the_real_token_rotates_once_even_across_a_restart() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let op = started("rotate-once");
    let (ns, token) = guarded_writer(&client, "rotateonce", json!({})).await;
    let n = ns.name.as_str();
    let uids = watch_uids(&client, n, "writer");
    let first = sa_uid(&client, n, "writer").await.expect("uid");
    wait_for("the watch to see the ServiceAccount", || async {
        uids.lock().ok()?.contains(&first).then_some(())
    })
    .await;
    annotate(&client, n, "writer-token", labels::ROTATE).await;
    let new = wait_for_new_token(&client, n, "writer-token", &token).await;
    drop(op);
    let _op = started("rotate-once-again");
    // Every object was reconciled once since the start: a second rotation would have begun.
    let now = sa_uid(&client, n, "writer").await.expect("uid");
    wait_for("the token of the current ServiceAccount", || async {
        let s = secrets(&client, n).get_opt("writer-token").await.ok()??;
        let issued_for = s
            .metadata
            .annotations?
            .get(labels::SA_UID_ANNOTATION)?
            .clone();
        (issued_for == now && uids.lock().ok()?.contains(&now)).then_some(())
    })
    .await;
    assert_eq!(
        uids.lock().expect("uids").len(),
        2,
        "exactly one rotation: the ServiceAccount and its one re-creation"
    );
    assert_eq!(
        whoami(&new).await.expect("the new token works"),
        Some(format!("system:serviceaccount:{n}:writer"))
    );
}

/// Delete a Secret the guard does not own, restart the operator (its first pass looks at
/// every guarded name), and check nothing was created under that name.
async fn delete_and_check_nothing_takes_the_name(client: &Client, ns: &str, name: &str) {
    secrets(client, ns)
        .delete(name, &DeleteParams::default())
        .await
        .expect("delete");
    let _op = started("after-delete");
    assert!(
        secrets(client, ns)
            .get_opt(name)
            .await
            .expect("get")
            .is_none(),
        "something was created under {name}"
    );
    wait_conflict(client, ns).await;
}

#[tokio::test]
async fn a_token_name_held_by_a_docker_registry_secret_is_left_alone_and_never_taken() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let op = started("regcred");
    let ns = TestNamespace::new(&client, "regcred").await;
    let n = ns.name.as_str();
    create_service_account(&client, n, "builder").await;
    let registry = [
        "-n",
        n,
        "create",
        "secret",
        "docker-registry",
        "regcred",
        "--docker-server=r",
        "--docker-username=u",
        "--docker-password=p",
    ];
    ok(kubectl(&registry), "create docker-registry Secret");
    let version = |s: Secret| s.metadata.resource_version;
    let before = version(secrets(&client, n).get("regcred").await.expect("get"));
    create_guard(
        &client,
        n,
        "g",
        json!({"serviceAccounts": [{"name": "builder", "tokenSecretName": "regcred"}]}),
    )
    .await;
    let st = wait_conflict(&client, n).await;
    let (_, _, why) = ready_condition(&st);
    assert!(
        why.contains("regcred") && why.contains("kubernetes.io/dockerconfigjson"),
        "{why}"
    );
    assert_eq!(
        st.targets.first().and_then(|t| t.message.clone()),
        Some(why.trim_start_matches("Secret regcred: ").to_owned())
    );
    wait_tombstone(&client, n, "regcred", "TargetConflict").await;
    let after = version(secrets(&client, n).get("regcred").await.expect("get"));
    assert_eq!(after, before, "nothing was written to the Secret");
    for reason in [
        "TokenCreated",
        "TokenNotPopulated",
        "TokenRotated",
        "TokenDeleted",
    ] {
        assert!(events(&client, n, reason).await.is_empty(), "no {reason}");
    }
    drop(op);

    delete_and_check_nothing_takes_the_name(&client, n, "regcred").await;
    ok(kubectl(&registry), "its owner creates it again");
}

#[tokio::test]
async fn a_token_name_held_by_another_service_accounts_token_is_a_conflict_not_a_rotation() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let op = started("other-sa");
    let ns = TestNamespace::new(&client, "othersa").await;
    let n = ns.name.as_str();
    create_service_account(&client, n, "app").await;
    create_service_account(&client, n, "other").await;
    let other: Secret = serde_json::from_value(json!({
        "metadata": {"name": "other-token", "annotations": {labels::SA_NAME_ANNOTATION: "other"}},
        "type": labels::TOKEN_TYPE,
    }))
    .expect("secret");
    secrets(&client, n)
        .create(&Default::default(), &other)
        .await
        .expect("create");
    wait_for_token(&client, n, "other-token").await;
    create_guard(
        &client,
        n,
        "g",
        json!({"serviceAccounts": [{"name": "app", "tokenSecretName": "other-token"}]}),
    )
    .await;
    let st = wait_conflict(&client, n).await;
    let (_, _, why) = ready_condition(&st);
    assert!(why.contains("token of ServiceAccount other"), "{why}");
    assert!(
        events(&client, n, "ServiceAccountRecreated")
            .await
            .is_empty()
    );
    let live = secrets(&client, n).get("other-token").await.expect("get");
    assert!(!labelled(&live));
    wait_tombstone(&client, n, "other-token", "TargetConflict").await;
    drop(op);

    delete_and_check_nothing_takes_the_name(&client, n, "other-token").await;
}

/// Whether a Secret's restore point still holds a copy of `token`.
async fn copy_kept(client: &Client, ns: &str, name: &str, token: &str) -> bool {
    get_restore_point(client, ns, name)
        .await
        .is_some_and(|rp| holds_token(&rp, token))
}

#[tokio::test]
async fn a_retired_token_is_forgotten_and_stays_revoked_after_its_deletion() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let op = started("retire");
    let (ns, token) = guarded_writer(&client, "retire", json!({})).await;
    let n = ns.name.as_str();
    annotate(&client, n, "writer-token", labels::RETIRE).await;
    wait_event(&client, n, "Retired", "SecretGuard").await;
    wait_guard_status(&client, n, "g", "the token Retired, not degraded", |s| {
        s.targets.first().is_some_and(|t| t.state == "Retired")
            && condition(s, "Degraded") == Some(("False", "AllHealthy"))
    })
    .await;
    wait_tombstone(&client, n, "writer-token", "Retired").await;
    assert!(!copy_kept(&client, n, "writer-token", &token).await);

    secrets(&client, n)
        .delete("writer-token", &DeleteParams::default())
        .await
        .expect("delete");
    drop(op);
    let _op = started("retire-after");
    assert!(
        secrets(&client, n)
            .get_opt("writer-token")
            .await
            .expect("get")
            .is_none(),
        "a retired token is not brought back"
    );
    // Never used before: the apiserver's token cache cannot answer for it.
    assert!(
        matches!(whoami(&token).await, Err(kube::Error::Api(s)) if s.code == 401),
        "the retired token is revoked"
    );
    assert!(events(&client, n, "TokenDeleted").await.is_empty());
}

/// `kubectl annotate ... && kubectl delete ...` can reach the operator as a deletion
/// only, before it ever reconciled the annotated Secret; here made certain by pausing the
/// guard meanwhile (it writes nothing while paused), then unpausing it.
#[tokio::test]
async fn a_secret_retired_and_deleted_before_the_operator_acted_is_not_restored() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let _op = started("retire-at-once");
    let ns = TestNamespace::new(&client, "retireonce").await;
    let n = ns.name.as_str();
    create_secret(&client, n, "db").await;
    create_guard(&client, n, "g", json!({"secrets": [{"name": "db"}]})).await;
    wait_restore_point(&client, n, "db", "db saved", |rp| {
        rp.data.as_ref().is_some_and(|d| d.contains_key("k"))
    })
    .await;
    let pause = |paused: bool| {
        let guards: Api<secretguard::api::v1alpha1::SecretGuard> =
            Api::namespaced(client.clone(), n);
        async move {
            guards
                .patch(
                    "g",
                    &PatchParams::default(),
                    &Patch::Merge(json!({"spec": {"paused": paused}})),
                )
                .await
                .expect("patch guard")
        }
    };
    let generation = pause(true).await.metadata.generation;
    wait_guard_status(&client, n, "g", "paused observed", |s| {
        s.observed_generation == generation
    })
    .await;
    annotate(&client, n, "db", labels::RETIRE).await;
    secrets(&client, n)
        .delete("db", &DeleteParams::default())
        .await
        .expect("delete");
    wait_guard_status(&client, n, "g", "db Retired while paused", |s| {
        s.targets.first().is_some_and(|t| t.state == "Retired")
    })
    .await;
    pause(false).await;
    wait_tombstone(&client, n, "db", "Retired").await;
    assert!(
        secrets(&client, n)
            .get_opt("db")
            .await
            .expect("get")
            .is_none(),
        "a retired Secret is not brought back"
    );
    assert!(events(&client, n, "SecretRestored").await.is_empty());
    assert!(events(&client, n, "SecretDeleted").await.is_empty());
}

/// Work that keeps coming back (here Secrets a controller rewrites without pause; before,
/// a rotation loop) must not keep a freshly started operator unready: ready means every
/// guarded object was looked at once, not that the queue ran dry, and the urgent events
/// must let the first pass's background work through.
#[tokio::test]
async fn a_fresh_operator_is_ready_while_guarded_secrets_keep_changing() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let ns = TestNamespace::new(&client, "churn").await;
    let n = ns.name.clone();
    let names: Vec<String> = (0..8).map(|i| format!("s{i}")).collect();
    for name in &names {
        create_secret(&client, &n, name).await;
    }
    let entries: Vec<_> = names.iter().map(|s| json!({"name": s})).collect();
    // Operators of a namespace of their own: the first pass is this test's work only, not
    // the restore points other tests left for the retention.
    let _ = kubectl(&["create", "namespace", CHURN_OPERATOR_NAMESPACE]);
    let restore_points = "secretguard.dev/restore-point=true";
    let clear = [
        "-n",
        CHURN_OPERATOR_NAMESPACE,
        "delete",
        "secrets",
        "-l",
        restore_points,
    ];
    ok(kubectl(&clear), "clear earlier runs' restore points");
    let churn_operator = |name: &str| {
        OperatorProcess::builder(name)
            .namespace(CHURN_OPERATOR_NAMESPACE)
            .workers(2)
            .start()
    };
    let op = churn_operator("churn-before");
    op.wait_ready();
    create_guard(&client, &n, "g", json!({"secrets": entries})).await;
    wait_guard_status(&client, &n, "g", "every Secret guarded", |s| {
        s.guarded == 8 && s.targets.iter().all(|t| t.state == "Healthy")
    })
    .await;
    // And some background work for the first pass: names that do not exist.
    let absent: Vec<_> = (0..16)
        .map(|i| json!({"name": format!("absent-{i}")}))
        .collect();
    create_guard(&client, &n, "absent", json!({"secrets": absent})).await;
    wait_guard_status(&client, &n, "absent", "the absent names reported", |s| {
        s.missing == 16
    })
    .await;
    drop(op);

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let (api, names, stop) = (secrets(&client, &n), names.clone(), Arc::clone(&stop));
            tokio::spawn(async move {
                let mut i = w;
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let patch = json!({"stringData": {"k": format!("v{i}")}});
                    let _ = api
                        .patch(
                            &names[i % names.len()],
                            &PatchParams::default(),
                            &Patch::Merge(&patch),
                        )
                        .await;
                    i += 3;
                }
            })
        })
        .collect();
    let op = churn_operator("churn");
    // Blocking: off the runtime, so the writers keep writing meanwhile.
    let ready = tokio::task::spawn_blocking(move || {
        op.wait_ready();
        op
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in writers {
        let _ = w.await;
    }
    if let Err(e) = ready {
        std::panic::resume_unwind(e.into_panic());
    }
}

/// Who the cluster admin is (the operator processes of this file run as the admin).
async fn admin_username(client: &Client) -> String {
    use k8s_openapi::api::authentication::v1::SelfSubjectReview;
    Api::<SelfSubjectReview>::all(client.clone())
        .create(&Default::default(), &SelfSubjectReview::default())
        .await
        .expect("SelfSubjectReview")
        .status
        .and_then(|s| s.user_info)
        .and_then(|u| u.username)
        .expect("admin username")
}

/// A ValidatingAdmissionPolicy (and its binding) refusing every ServiceAccount create by
/// `user` in namespace `ns`, in force once this returns; removed when dropped.
struct RefuseServiceAccounts(String);

impl RefuseServiceAccounts {
    async fn install(ns: &str, user: &str) -> RefuseServiceAccounts {
        let name = format!("refuse-sa-{ns}");
        let yaml = format!(
            "apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicy\nmetadata: {{name: {name}}}\n\
             spec:\n  failurePolicy: Fail\n  matchConstraints:\n    namespaceSelector: {{matchLabels: {{kubernetes.io/metadata.name: {ns}}}}}\n\
             \x20   resourceRules: [{{apiGroups: [''], apiVersions: [v1], operations: [CREATE], resources: [serviceaccounts]}}]\n\
             \x20 validations: [{{expression: \"request.userInfo.username != '{user}'\", message: \"ServiceAccount creates refused for this test\"}}]\n---\n\
             apiVersion: admissionregistration.k8s.io/v1\nkind: ValidatingAdmissionPolicyBinding\nmetadata: {{name: {name}}}\n\
             spec: {{policyName: {name}, validationActions: [Deny]}}\n"
        );
        ok(
            kubectl_with_input(&["apply", "-f", "-"], &yaml),
            "install the policy",
        );
        let refusal = RefuseServiceAccounts(name);
        wait_for("the policy to refuse ServiceAccount creates", || async {
            let out = kubectl(&[
                "-n",
                ns,
                "create",
                "serviceaccount",
                "probe",
                "--dry-run=server",
            ]);
            (!out.status.success()).then_some(())
        })
        .await;
        refusal
    }
}

impl Drop for RefuseServiceAccounts {
    fn drop(&mut self) {
        for kind in [
            "validatingadmissionpolicybinding",
            "validatingadmissionpolicy",
        ] {
            let _ = kubectl(&["delete", kind, &self.0, "--ignore-not-found"]);
        }
    }
}

/// Wait until `ns/writer` exists with a UID other than `old`, its token Secret holds a
/// token other than `old_token`, and that token authenticates as it; returns the UID.
async fn wait_rotated(client: &Client, ns: &str, old: &str, old_token: &str) -> String {
    let uid = wait_for("the ServiceAccount back with a new UID", || async {
        let sa = Api::<ServiceAccount>::namespaced(client.clone(), ns)
            .get_opt("writer")
            .await
            .ok()??;
        sa.metadata.uid.filter(|u| u != old)
    })
    .await;
    let token = wait_for_new_token(client, ns, "writer-token", old_token).await;
    assert_eq!(
        whoami(&token).await.expect("the new token works"),
        Some(format!("system:serviceaccount:{ns}:writer"))
    );
    uid
}

/// The ServiceAccount snapshot of `ns/writer-token` says no rotation is under way.
async fn wait_rotation_marker_cleared(client: &Client, ns: &str) {
    let name = secretguard::restore_point::snapshot_name_for(ns, "writer-token");
    let rps = secrets(client, OPERATOR_NAMESPACE);
    wait_for("the rotation marker to be cleared", || async {
        let snapshot = rps.get_opt(&name).await.ok()??;
        secretguard::restore_point::rotating(&snapshot)
            .is_none()
            .then_some(())
    })
    .await;
}

#[tokio::test]
async fn a_rotation_whose_create_is_refused_brings_the_service_account_back_once_allowed() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let _op = started("rotate-refused");
    // recreateServiceAccount is false (the default): only the rotation may bring it back.
    let (ns, token) = guarded_writer(&client, "rotaterefused", json!({})).await;
    let n = ns.name.as_str();
    let first = sa_uid(&client, n, "writer").await.expect("uid");
    let refusal = RefuseServiceAccounts::install(n, &admin_username(&client).await).await;
    annotate(&client, n, "writer-token", labels::ROTATE).await;
    let note = wait_event(&client, n, "RestoreFailed", "SecretGuard").await;
    assert!(note.contains("admission denied"), "{note}");
    assert!(
        Api::<ServiceAccount>::namespaced(client.clone(), n)
            .get_opt("writer")
            .await
            .expect("get")
            .is_none_or(|sa| sa.metadata.deletion_timestamp.is_some()),
        "the rotation deleted it and may not create it"
    );
    drop(refusal);
    wait_rotated(&client, n, &first, &token).await;
    wait_rotation_marker_cleared(&client, n).await;
}

#[tokio::test]
async fn a_rotation_killed_between_delete_and_create_is_finished_once_by_the_next_operator() {
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    prepare_operator();
    let mut op = OperatorProcess::builder("rotate-killed")
        .workers(2)
        .fault(secretguard::fault::points::SERVICE_ACCOUNT_DELETED)
        .start();
    op.wait_ready();
    let (ns, token) = guarded_writer(&client, "rotatekilled", json!({})).await;
    let n = ns.name.as_str();
    let uids = watch_uids(&client, n, "writer");
    let first = sa_uid(&client, n, "writer").await.expect("uid");
    wait_for("the watch to see the ServiceAccount", || async {
        uids.lock().ok()?.contains(&first).then_some(())
    })
    .await;
    annotate(&client, n, "writer-token", labels::ROTATE).await;
    op.wait_exit("the ServiceAccount deleted by the rotation");
    let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), n);
    wait_for("the ServiceAccount to be gone", || async {
        sas.get_opt("writer").await.ok()?.is_none().then_some(())
    })
    .await;
    let _next = started("rotate-finisher");
    let now = wait_rotated(&client, n, &first, &token).await;
    wait_rotation_marker_cleared(&client, n).await;
    assert_eq!(
        *uids.lock().expect("uids"),
        BTreeSet::from([first, now]),
        "exactly one rotation: the ServiceAccount and its one re-creation"
    );
    assert_eq!(
        events(&client, n, "TokenRotated").await.len(),
        1,
        "the rotation is reported once"
    );
}

#[tokio::test]
async fn what_the_service_account_owns_survives_its_rotation() {
    use k8s_openapi::api::core::v1::ConfigMap;
    use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
    let _one = SERIAL.lock().await;
    let client = admin_client().await;
    let _op = started("rotate-orphans");
    let (ns, token) = guarded_writer(&client, "rotateowned", json!({})).await;
    let n = ns.name.as_str();
    let first = sa_uid(&client, n, "writer").await.expect("uid");
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), n);
    let owned = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("owned-by-writer".into()),
            owner_references: Some(vec![OwnerReference {
                api_version: "v1".into(),
                kind: "ServiceAccount".into(),
                name: "writer".into(),
                uid: first.clone(),
                ..Default::default()
            }]),
            ..Default::default()
        },
        ..Default::default()
    };
    cms.create(&Default::default(), &owned)
        .await
        .expect("a ConfigMap owned by the ServiceAccount");
    annotate(&client, n, "writer-token", labels::ROTATE).await;
    wait_rotated(&client, n, &first, &token).await;
    // Orphaned, not collected: the garbage collector takes the reference off instead.
    wait_for("the ConfigMap orphaned by the rotation", || async {
        let cm = cms
            .get_opt("owned-by-writer")
            .await
            .expect("get")
            .expect("the garbage collector deleted what the ServiceAccount owned");
        cm.metadata
            .owner_references
            .unwrap_or_default()
            .iter()
            .all(|r| r.uid != first)
            .then_some(())
    })
    .await;
}
