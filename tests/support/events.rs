//! Events the operator reports.

use k8s_openapi::api::events::v1::Event;
use kube::Client;
use kube::api::{Api, ListParams};

use super::wait_for;

/// Events in a namespace with this reason, as (regarding kind, note).
pub async fn events(client: &Client, ns: &str, reason: &str) -> Vec<(String, String)> {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    let list = api
        .list(&ListParams::default().fields(&format!("reason={reason}")))
        .await
        .expect("list events");
    list.items
        .into_iter()
        .map(|e| {
            (
                e.regarding.and_then(|r| r.kind).unwrap_or_default(),
                e.note.unwrap_or_default(),
            )
        })
        .collect()
}

/// Wait until an Event with this reason exists on the given kind of object.
pub async fn wait_event(client: &Client, ns: &str, reason: &str, kind: &str) -> String {
    wait_for(&format!("a {reason} Event on a {kind}"), || async {
        events(client, ns, reason)
            .await
            .into_iter()
            .find(|(k, _)| k == kind)
            .map(|(_, note)| note)
    })
    .await
}

/// Wait until an Event with this reason exists on the named object of this kind; returns
/// its note.
pub async fn wait_event_on(
    client: &Client,
    ns: &str,
    reason: &str,
    kind: &str,
    name: &str,
) -> String {
    let api: Api<Event> = Api::namespaced(client.clone(), ns);
    wait_for(&format!("a {reason} Event on {kind} {name}"), || async {
        let list = api
            .list(&ListParams::default().fields(&format!("reason={reason}")))
            .await
            .ok()?;
        list.items.into_iter().find_map(|e| {
            let on = e.regarding?;
            (on.kind.as_deref() == Some(kind) && on.name.as_deref() == Some(name))
                .then(|| e.note.unwrap_or_default())
        })
    })
    .await
}
