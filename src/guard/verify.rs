//! Read-only checks around a restore: which owners of a saved Secret still exist, and
//! whether a restored token authenticates. Each takes only the client.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};

use super::outcome::TokenCheck;

/// The owner references whose owner still exists (same UID). A restored Secret pointing at
/// a deleted owner would be deleted again by the garbage collector. An owner that cannot be
/// checked (unknown kind, no permission to read it) is dropped too, and said so in the log.
pub async fn live_owners(
    client: &Client,
    namespace: &str,
    owners: &[OwnerReference],
) -> Vec<OwnerReference> {
    let mut kept = Vec::new();
    for owner in owners {
        let gvk = GroupVersionKind::from(owner.clone());
        let exists = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok((resource, caps)) => {
                let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
                    Api::namespaced_with(client.clone(), namespace, &resource)
                } else {
                    Api::all_with(client.clone(), &resource)
                };
                match api.get_metadata_opt(&owner.name).await {
                    Ok(found) => {
                        found.is_some_and(|o| o.metadata.uid.as_deref() == Some(owner.uid.as_str()))
                    }
                    Err(e) => {
                        tracing::warn!(namespace, owner = %owner.name, kind = %owner.kind, error = %e, "cannot check owner; restoring without this ownerReference");
                        false
                    }
                }
            }
            Err(e) => {
                tracing::warn!(namespace, owner = %owner.name, kind = %owner.kind, error = %e, "unknown owner kind; restoring without this ownerReference");
                false
            }
        };
        if exists {
            kept.push(owner.clone());
        }
    }
    kept
}

/// Ask the apiserver whether a restored token authenticates as its ServiceAccount. A
/// review that could not be made (timeout, refused, apiserver error) is `ReviewFailed`,
/// not a rejection: nothing is known about the token then.
pub async fn verify_token(
    client: &Client,
    namespace: &str,
    service_account: &str,
    token: &[u8],
) -> TokenCheck {
    let review = TokenReview {
        spec: TokenReviewSpec {
            token: Some(String::from_utf8_lossy(token).into_owned()),
            audiences: None,
        },
        ..Default::default()
    };
    let api: Api<TokenReview> = Api::all(client.clone());
    match api.create(&PostParams::default(), &review).await {
        Ok(r) => {
            let accepted = r.status.is_some_and(|s| {
                s.authenticated == Some(true)
                    && s.user.and_then(|u| u.username)
                        == Some(format!(
                            "system:serviceaccount:{namespace}:{service_account}"
                        ))
            });
            if accepted {
                TokenCheck::Accepted
            } else {
                TokenCheck::Rejected
            }
        }
        Err(e) => {
            tracing::warn!(namespace, service_account, error = %e, "TokenReview request failed; the restored token is not verified");
            TokenCheck::ReviewFailed
        }
    }
}
