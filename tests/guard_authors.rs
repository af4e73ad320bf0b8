//! A SecretGuard gives its author nothing they did not have (security review A1, A9): the
//! chart's ValidatingAdmissionPolicy checks the author's own rights when a guard is created
//! or its spec changes. The attackers are users with custom Roles (`kubectl --as`); what
//! they are refused, and why, is read as kubectl prints it.

mod support;

use support::*;

/// The chart's guard-author policy and its binding, rendered for a release in `namespace`
/// (so that namespace counts as the operator's), applied while this lives and deleted
/// (cluster-scoped) when it drops.
struct AuthorPolicy {
    manifest: String,
}

impl AuthorPolicy {
    fn apply(release: &str, namespace: &str, extra: &[&str]) -> AuthorPolicy {
        let mut args = vec!["--show-only", "templates/admission-policy.yaml"];
        args.extend_from_slice(extra);
        let (manifest, _) = helm_template_release(release, namespace, &args);
        let applied = kubectl_with_input(&["apply", "-f", "-"], &manifest);
        assert!(
            applied.status.success(),
            "apply the policy: {}",
            String::from_utf8_lossy(&applied.stderr)
        );
        AuthorPolicy { manifest }
    }
}

impl Drop for AuthorPolicy {
    fn drop(&mut self) {
        let _ = kubectl_with_input(
            &["delete", "--ignore-not-found", "--wait=false", "-f", "-"],
            &self.manifest,
        );
    }
}

/// `kubectl [--as user] apply [--dry-run=server]` of a guard named `name` in `ns` with this
/// spec (YAML flow); returns (accepted, what kubectl printed).
fn apply_guard(
    as_user: Option<&str>,
    ns: &str,
    name: &str,
    spec: &str,
    dry: bool,
) -> (bool, String) {
    let doc = format!(
        "apiVersion: secretguard.dev/v1alpha1\nkind: SecretGuard\nmetadata: {{name: {name}, namespace: {ns}}}\nspec: {spec}\n"
    );
    let mut args = vec![];
    if let Some(user) = as_user {
        args.extend(["--as", user]);
    }
    args.extend(["apply", "-f", "-"]);
    if dry {
        args.push("--dry-run=server");
    }
    let out = kubectl_with_input(&args, &doc);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn admin(args: &[&str]) {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A Role with these verbs on this resource in `ns`, bound to `user`.
fn grant(ns: &str, user: &str, role: &str, verbs: &str, resource: &str) {
    admin(&[
        "-n",
        ns,
        "create",
        "role",
        role,
        &format!("--verb={verbs}"),
        &format!("--resource={resource}"),
    ]);
    admin(&[
        "-n",
        ns,
        "create",
        "rolebinding",
        role,
        &format!("--role={role}"),
        &format!("--user={user}"),
    ]);
}

/// Wait until `user` is refused for `spec` in `ns` with a message containing `why` (the
/// policy takes a moment to reach the apiserver's admission, and so does a new binding).
async fn refused(user: Option<&str>, ns: &str, spec: &str, why: &str) -> String {
    wait_for(
        &format!("{user:?} refused in {ns} for {spec}: {why}"),
        || async {
            let (ok, out) = apply_guard(user, ns, "g", spec, true);
            (!ok && out.contains(why)).then_some(out)
        },
    )
    .await
}

/// Wait until `user` may apply `spec` in `ns` (a new RoleBinding reaches the authorizer
/// within moments).
async fn accepted(user: Option<&str>, ns: &str, name: &str, spec: &str, dry: bool) {
    wait_for(&format!("{user:?} allowed in {ns}: {spec}"), || async {
        apply_guard(user, ns, name, spec, dry).0.then_some(())
    })
    .await
}

#[tokio::test]
async fn a_guard_needs_its_authors_own_rights_field_by_field() {
    install_crds();
    let client = admin_client().await;
    let app = TestNamespace::new(&client, "authors").await;
    let operator_ns = TestNamespace::new(&client, "authors-op").await;
    let _policy = AuthorPolicy::apply("authors", &operator_ns.name, &[]);
    let ns = &app.name;
    admin(&["-n", ns, "create", "serviceaccount", "deployer"]);

    // Mallory may write SecretGuards and read one Secret: enough, without the policy, to
    // have the operator mint a token for `deployer` under that name (review A1).
    grant(
        ns,
        "mallory",
        "guards",
        "create,update,patch,get",
        "secretguards.secretguard.dev",
    );
    let token_guard = "{serviceAccounts: [{name: deployer, tokenSecretName: ci-token}]}";
    let out = refused(
        Some("mallory"),
        ns,
        token_guard,
        &format!("you may not create Secrets in namespace {ns}"),
    )
    .await;
    assert!(
        out.contains("kubectl auth can-i create secrets"),
        "the refusal says how to check the missing right: {out}"
    );
    let secret_guard = "{secrets: [{name: db}]}";
    refused(
        Some("mallory"),
        ns,
        secret_guard,
        "you may not create Secrets",
    )
    .await;

    // With the right to create Secrets she could mint the token herself: the guard is hers.
    grant(ns, "mallory", "secrets", "create", "secrets");
    accepted(Some("mallory"), ns, "g", token_guard, false).await;

    // recreateServiceAccount needs the right to create ServiceAccounts, on create and when
    // an update turns it on.
    let recreate = "{serviceAccounts: [{name: deployer, tokenSecretName: ci-token, recreateServiceAccount: true}]}";
    let out = refused(
        Some("mallory"),
        ns,
        recreate,
        "recreateServiceAccount makes secretguard re-create ServiceAccount(s) deployer",
    )
    .await;
    assert!(
        out.contains(&format!(
            "you may not create ServiceAccounts in namespace {ns}"
        )),
        "names the missing right: {out}"
    );
    let (ok, out) = apply_guard(Some("mallory"), ns, "other", recreate, true);
    assert!(
        !ok,
        "a new guard with recreateServiceAccount is refused too: {out}"
    );

    // Someone who may create ServiceAccounts turns it on; mallory may still edit the rest
    // of that guard's spec without the right (she adds nothing she lacks).
    admin(&[
        "-n",
        ns,
        "create",
        "role",
        "sa-maker",
        "--verb=create",
        "--resource=serviceaccounts",
    ]);
    admin(&[
        "-n",
        ns,
        "create",
        "rolebinding",
        "sa-maker",
        "--role=sa-maker",
        "--user=trent",
    ]);
    grant(
        ns,
        "trent",
        "trent-guards",
        "create,update,patch,get",
        "secretguards.secretguard.dev",
    );
    grant(ns, "trent", "trent-secrets", "create", "secrets");
    accepted(Some("trent"), ns, "g", recreate, false).await;
    let recreate_warning = "{serviceAccounts: [{name: deployer, tokenSecretName: ci-token, recreateServiceAccount: true}], severity: warning}";
    let (ok, out) = apply_guard(Some("mallory"), ns, "g", recreate_warning, false);
    assert!(ok, "an edit that adds no right is allowed: {out}");

    // A user with no right to create Secrets may still label the guard (metadata only).
    grant(
        ns,
        "viewer",
        "labeller",
        "get,patch",
        "secretguards.secretguard.dev",
    );
    let out = kubectl(&[
        "--as",
        "viewer",
        "-n",
        ns,
        "label",
        "secretguard",
        "g",
        "team=a",
    ]);
    assert!(
        out.status.success(),
        "a metadata-only edit is not checked: {}",
        String::from_utf8_lossy(&out.stderr)
    );

    // No guards in the operator's namespace, not even from an admin (review A9, A12).
    refused(
        None,
        &operator_ns.name,
        secret_guard,
        &format!("SecretGuards are not allowed in {}", operator_ns.name),
    )
    .await;

    // kube-system: cluster admins only. A namespace admin of kube-system is refused.
    grant(
        "kube-system",
        "ksadmin",
        &format!("{ns}-guards"),
        "create,update,patch,get",
        "secretguards.secretguard.dev",
    );
    grant(
        "kube-system",
        "ksadmin",
        &format!("{ns}-secrets"),
        "create",
        "secrets",
    );
    let _cleanup = KubeSystemRoles(ns.clone());
    refused(
        Some("ksadmin"),
        "kube-system",
        secret_guard,
        "SecretGuards in namespace kube-system may only be written by cluster admins",
    )
    .await;
    let (ok, out) = apply_guard(None, "kube-system", "g", secret_guard, true);
    assert!(ok, "a cluster admin may guard kube-system: {out}");
}

/// The Roles and bindings a test made in kube-system, deleted when it ends.
struct KubeSystemRoles(String);

impl Drop for KubeSystemRoles {
    fn drop(&mut self) {
        for name in [format!("{}-guards", self.0), format!("{}-secrets", self.0)] {
            let _ = kubectl(&[
                "-n",
                "kube-system",
                "delete",
                "role,rolebinding",
                &name,
                "--ignore-not-found",
            ]);
        }
    }
}
