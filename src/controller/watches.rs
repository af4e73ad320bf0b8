//! The watches that fill the caches and trigger work: SecretGuards (all), Secrets labelled
//! secretguard.dev/guarded (only those), restore points (operator namespace, by label),
//! ServiceAccounts and Namespaces (metadata only), and one metadata watch per guard with a
//! secretSelector.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Resource;
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector;
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use serde::de::DeserializeOwned;

use super::triggers;
use crate::api::v1alpha1::SecretGuard;
use crate::guard::context::{Context, StoreWriters, Stores};
use crate::labels;

/// Run every cache watch until the process ends, calling the triggers for every event.
pub async fn run(ctx: &Arc<Context>, writers: StoreWriters) {
    let c = &ctx.watch_client;
    let guarded = watcher::Config::default().labels(&format!("{}=true", labels::GUARDED));
    let rp_selector = watcher::Config::default().labels(&format!("{}=true", labels::RESTORE_POINT));
    let opns = &ctx.config.operator_namespace;
    futures::future::join5(
        consume(
            "guards",
            reflector::reflector(
                writers.guards,
                cache_watch(Api::<SecretGuard>::all(c.clone()), Default::default()),
            ),
            ctx,
            triggers::on_guard,
        ),
        consume(
            "secrets",
            reflector::reflector(
                writers.secrets,
                cache_watch(Api::<Secret>::all(c.clone()), guarded),
            ),
            ctx,
            triggers::on_secret,
        ),
        consume(
            "restore_points",
            reflector::reflector(
                writers.restore_points,
                cache_watch(Api::<Secret>::namespaced(c.clone(), opns), rp_selector),
            ),
            ctx,
            triggers::on_restore_point,
        ),
        consume(
            "service_accounts",
            reflector::reflector(
                writers.service_accounts,
                cache_watch(
                    Api::<PartialObjectMeta<ServiceAccount>>::all(c.clone()),
                    Default::default(),
                ),
            ),
            ctx,
            triggers::on_service_account,
        ),
        consume(
            "namespaces",
            reflector::reflector(
                writers.namespaces,
                cache_watch(
                    Api::<PartialObjectMeta<Namespace>>::all(c.clone()),
                    Default::default(),
                ),
            ),
            ctx,
            triggers::on_namespace,
        ),
    )
    .await;
}

/// A watch for a cache: retried with backoff, managedFields dropped.
fn cache_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watch(api, config)
        .default_backoff()
        .modify(drop_managed_fields)
}

/// Nothing reads managedFields, and on objects written with server-side apply they are
/// often larger than the rest of the metadata: not kept in the caches.
fn drop_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Until every cache has listed once. Nothing is reconciled before: an object that is
/// merely not loaded yet must never be mistaken for a deleted one.
pub async fn wait_synced(stores: &Stores) {
    // Store::wait_until_ready only fails if the writer is dropped, i.e. on shutdown.
    let _ = futures::future::join5(
        stores.guards.wait_until_ready(),
        stores.secrets.wait_until_ready(),
        stores.restore_points.wait_until_ready(),
        stores.service_accounts.wait_until_ready(),
        stores.namespaces.wait_until_ready(),
    )
    .await;
}

/// Consume a reflected watch stream, calling `trigger` for every object event.
async fn consume<K, S>(
    what: &'static str,
    stream: S,
    ctx: &Arc<Context>,
    trigger: fn(&Arc<Context>, &K, bool),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut listed_before = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(obj)) | Ok(Event::InitApply(obj)) => trigger(ctx, &obj, false),
            Ok(Event::Delete(obj)) => trigger(ctx, &obj, true),
            Ok(Event::InitDone) if listed_before => {
                // A re-list after a broken watch (apiserver restart, expired resource
                // version): what was deleted meanwhile just vanishes from the cache, with
                // no event. Look at everything again, as at startup.
                tracing::info!(
                    watch = what,
                    "watch re-listed: re-checking every guarded object"
                );
                if what == "guards" {
                    triggers::forget_vanished_guards(ctx);
                }
                triggers::startup_pass(ctx);
            }
            Ok(Event::InitDone) => listed_before = true,
            Ok(Event::Init) => {}
            Err(e) => tracing::warn!(error = %e, watch = what, "watch error; retrying"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_objects_keep_everything_but_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut secret = Secret::default();
        secret.metadata.name = Some("db".into());
        secret.metadata.labels = Some([(labels::GUARDED.to_owned(), "true".to_owned())].into());
        secret.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        secret.data = Some([("k".to_owned(), k8s_openapi::ByteString(b"v".to_vec()))].into());
        let mut cached = secret.clone();
        drop_managed_fields(&mut cached);
        assert_eq!(cached.metadata.managed_fields, None);
        secret.metadata.managed_fields = None;
        assert_eq!(cached, secret);
    }
}
