//! One extra watch per guard with a secretSelector: metadata only, filtered on the server
//! by the selector, so new matching Secrets are guarded as they appear.

use std::sync::Arc;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Secret;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};

use crate::guard::context::Context;
use crate::object_key::ObjectKey;

/// Make the selector watch of a guard match the index: started, restarted with a new
/// selector, or stopped.
pub fn update(ctx: &Arc<Context>, guard: &ObjectKey) {
    let want = ctx.index().selector_of(guard);
    let mut watches = ctx.selector_watches();
    if watches.get(guard).map(|(s, _)| s) == want.as_ref() {
        return;
    }
    if let Some((_, task)) = watches.remove(guard) {
        task.abort();
    }
    if let Some(selector) = want {
        let task = tokio::spawn(watch_selected(
            Arc::clone(ctx),
            guard.namespace.clone(),
            selector.clone(),
        ));
        watches.insert(guard.clone(), (selector, task.abort_handle()));
    }
}

/// Watch the Secrets a selector matches, to guard new ones as they appear and let go of
/// those that stop matching.
async fn watch_selected(ctx: Arc<Context>, namespace: String, selector: String) {
    // Api<PartialObjectMeta<_>> makes metadata-only requests.
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.watch_client.clone(), &namespace);
    let stream = watch(api, watcher::Config::default().labels(&selector)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) | Ok(Event::Delete(s)) => {
                ctx.touch(ObjectKey::of(&s))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, namespace, selector, "selector watch error; retrying")
            }
        }
    }
}
