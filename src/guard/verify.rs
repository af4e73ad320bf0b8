//! Read-only checks around a restore: whether the owners of a saved Secret still exist,
//! and whether a restored token authenticates. Each takes only the client.

use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Client;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};

use super::decide::Owners;
use super::outcome::TokenCheck;

/// Whether a deleted Secret's owners still exist, each read with a metadata GET (one
/// discovery request per kind first). An owner whose kind the apiserver does not serve is
/// gone (its objects went with its kind); one the operator may not read (403: its
/// resource is not in the chart's `ownerResources`) cannot be judged. Any other error is
/// returned: nothing is decided on a failed request.
pub async fn owners(
    client: &Client,
    namespace: &str,
    owners: &[OwnerReference],
) -> kube::Result<Owners> {
    let mut gone = None;
    let mut unreadable = None;
    for owner in owners {
        let gvk = GroupVersionKind::from(owner.clone());
        let shown = format!("{}/{}", owner.kind, owner.name);
        let (resource, caps) = match kube::discovery::pinned_kind(client, &gvk).await {
            Ok(found) => found,
            Err(kube::Error::Discovery(_)) => {
                gone.get_or_insert(shown);
                continue;
            }
            Err(kube::Error::Api(s)) if s.code == 404 => {
                gone.get_or_insert(shown);
                continue;
            }
            Err(e) => return Err(e),
        };
        let api: Api<DynamicObject> = if caps.scope == kube::discovery::Scope::Namespaced {
            Api::namespaced_with(client.clone(), namespace, &resource)
        } else {
            Api::all_with(client.clone(), &resource)
        };
        match api.get_metadata_opt(&owner.name).await {
            Ok(Some(o)) if o.metadata.uid.as_deref() == Some(owner.uid.as_str()) => {
                if o.metadata.deletion_timestamp.is_none() {
                    return Ok(Owners::Live);
                }
                gone.get_or_insert(shown);
            }
            // Gone, or another object of that name since.
            Ok(_) => {
                gone.get_or_insert(shown);
            }
            Err(kube::Error::Api(s)) if s.code == 403 => {
                tracing::info!(namespace, owner = %owner.name, kind = %owner.kind, "may not read this owner: its resource is not in the chart's ownerResources");
                let group = if resource.group.is_empty() {
                    String::new()
                } else {
                    format!(".{}", resource.group)
                };
                unreadable.get_or_insert(format!("{}{group}", resource.plural));
            }
            Err(e) => return Err(e),
        }
    }
    Ok(match (unreadable, gone) {
        (Some(what), _) => Owners::Unverified(what),
        (None, Some(owner)) => Owners::Gone(owner),
        (None, None) => Owners::Live,
    })
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
