//! The watches that fill the caches and trigger work: SecretGuards (all), Secrets labelled
//! secretguard.dev/guarded (only those), restore points (operator namespace, by label),
//! ServiceAccounts and Namespaces (metadata only), and one metadata watch per guard with a
//! secretSelector. Secrets and restore points are reduced before they reach a cache
//! (src/cache.rs): no cache holds Secret data.

use std::fmt::Debug;
use std::sync::Arc;

use futures::{Stream, StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Resource;
use kube::api::{Api, ObjectMeta, WatchEvent, WatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, Lookup, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use prometheus_client::metrics::gauge::Gauge;
use serde::de::DeserializeOwned;

use super::triggers::{self, Seen};
use crate::api::v1alpha1::SecretGuard;
use crate::cache::Retained;
use crate::guard::context::{Context, StoreWriters, Stores};
use crate::labels;
use crate::metrics::Cache;

/// Objects per list request where the apiserver cannot stream lists (kube's default is
/// 500). A list response is read whole, and a listed Secret of 900 KiB costs about 4 MiB
/// while it is (measured: 300 of them in pages of 100 added 406 MiB to the peak): 25 keeps
/// a page of the largest Secrets near 100 MiB, and a list of 10,000 guarded Secrets to 400
/// requests.
pub const PAGE_SIZE: u32 = 25;

/// Run every cache watch until the process ends, calling the triggers for every event.
pub async fn run(ctx: &Arc<Context>, writers: StoreWriters) {
    let c = &ctx.watch_client;
    let opns = &ctx.config.operator_namespace;
    let streaming = streaming_lists(c, opns).await;
    tracing::info!(
        streaming,
        "initial lists: {}",
        if streaming {
            "streamed, one object at a time"
        } else {
            "paged"
        }
    );
    let config = || {
        let c = watcher::Config::default();
        if streaming {
            c.streaming_lists()
        } else {
            c.page_size(PAGE_SIZE)
        }
    };
    let guarded = config().labels(&format!("{}=true", labels::GUARDED));
    let rp_selector = config().labels(&format!("{}=true", labels::RESTORE_POINT));
    let stores = &ctx.stores;
    futures::future::join5(
        consume(
            "guards",
            reflector::reflector(
                writers.guards,
                cache_watch(Api::<SecretGuard>::all(c.clone()), config())
                    .modify(drop_managed_fields),
            ),
            &stores.guards,
            ctx,
            triggers::on_guard,
        ),
        async {
            // What the Secret cache keeps depends on which guard targets a Secret: the
            // guards are listed, and indexed, first.
            let _ = stores.guards.wait_until_ready().await;
            consume(
                "secrets",
                reflector::reflector(
                    writers.secrets,
                    reduced(
                        "secrets",
                        ctx,
                        cache_watch(Api::<Secret>::all(c.clone()), guarded),
                        &stores.secrets,
                        triggers::admit_secret,
                    ),
                ),
                &stores.secrets,
                ctx,
                triggers::on_secret,
            )
            .await
        },
        consume(
            "restore_points",
            reflector::reflector(
                writers.restore_points,
                reduced(
                    "restore_points",
                    ctx,
                    cache_watch(Api::<Secret>::namespaced(c.clone(), opns), rp_selector),
                    &stores.restore_points,
                    triggers::admit_restore_point,
                ),
            ),
            &stores.restore_points,
            ctx,
            triggers::on_restore_point,
        ),
        consume(
            "service_accounts",
            reflector::reflector(
                writers.service_accounts,
                cache_watch(
                    Api::<PartialObjectMeta<ServiceAccount>>::all(c.clone()),
                    config(),
                )
                .modify(keep_identity),
            ),
            &stores.service_accounts,
            ctx,
            triggers::on_service_account,
        ),
        consume(
            "namespaces",
            reflector::reflector(
                writers.namespaces,
                cache_watch(
                    Api::<PartialObjectMeta<Namespace>>::all(c.clone()),
                    config(),
                )
                .modify(keep_identity),
            ),
            &stores.namespaces,
            ctx,
            triggers::on_namespace,
        ),
    )
    .await;
}

/// Whether the apiserver streams lists (the WatchList feature: on by default from
/// Kubernetes 1.34, off in 1.33): a (re-)list then comes as one watch event per object, so
/// it never holds more than one large Secret at once. Asked once, with a watch that
/// selects nothing; any failure means no.
async fn streaming_lists(client: &kube::Client, namespace: &str) -> bool {
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(client.clone(), namespace);
    let params = WatchParams::streaming_lists()
        .labels("secretguard.dev/streaming-list-probe=none")
        .timeout(2);
    let probe = async {
        let stream = api.watch(&params, "0").await.ok()?;
        futures::pin_mut!(stream);
        match stream.try_next().await.ok()?? {
            WatchEvent::Bookmark(b) => Some(
                b.metadata
                    .annotations
                    .contains_key("k8s.io/initial-events-end"),
            ),
            _ => Some(false),
        }
    };
    tokio::time::timeout(std::time::Duration::from_secs(5), probe)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// A watch for a cache, retried with backoff.
fn cache_watch<K>(
    api: Api<K>,
    config: watcher::Config,
) -> impl Stream<Item = Result<Event<K>, watcher::Error>> + Send
where
    K: Resource + Clone + DeserializeOwned + Debug + Send + 'static,
{
    watch(api, config).default_backoff()
}

/// Nothing reads managedFields, and on objects written with server-side apply they are
/// often larger than the rest of the metadata: not kept in the caches.
fn drop_managed_fields<K: Resource>(obj: &mut K) {
    obj.meta_mut().managed_fields = None;
}

/// Of a ServiceAccount or Namespace, decisions read only what identifies it (a namespace's
/// UID and creation time tell it from an earlier one of the same name) and whether it is
/// being deleted; their labels and annotations are anyone's to fill.
fn keep_identity<K: Resource>(obj: &mut K) {
    let m = obj.meta_mut();
    *m = ObjectMeta {
        name: m.name.take(),
        namespace: m.namespace.take(),
        uid: m.uid.take(),
        resource_version: m.resource_version.take(),
        creation_timestamp: m.creation_timestamp.take(),
        deletion_timestamp: m.deletion_timestamp.take(),
        ..Default::default()
    };
}

/// Each Secret of a watch, reduced by `admit` to what its cache keeps, before the cache
/// sees it; the bytes the cache holds are counted on the way (`secretguard_cached_bytes`).
fn reduced<V, S>(
    what: &'static str,
    ctx: &Arc<Context>,
    stream: S,
    store: &Store<V>,
    admit: fn(&Context, Secret, Seen) -> V,
) -> impl Stream<Item = Result<Event<V>, watcher::Error>> + use<V, S>
where
    V: Lookup<DynamicType = ()> + Retained + Clone + 'static,
    S: Stream<Item = Result<Event<Secret>, watcher::Error>>,
{
    let ctx = Arc::clone(ctx);
    let store = store.clone();
    let bytes: Gauge = ctx.metrics.cached_bytes.get_or_create(&cache(what)).clone();
    let mut listed: i64 = 0;
    let held = move |v: &V| store.get(&v.to_object_ref(())).map_or(0, |o| size(&*o));
    stream.map(move |event| {
        event.map(|e| match e {
            Event::Init => {
                listed = 0;
                Event::Init
            }
            Event::InitApply(s) => {
                let v = admit(&ctx, s, Seen::Listed);
                listed += size(&v);
                Event::InitApply(v)
            }
            Event::InitDone => {
                bytes.set(listed);
                Event::InitDone
            }
            Event::Apply(s) => {
                let v = admit(&ctx, s, Seen::Changed);
                bytes.inc_by(size(&v) - held(&v));
                Event::Apply(v)
            }
            Event::Delete(s) => {
                let v = admit(&ctx, s, Seen::Deleted);
                bytes.dec_by(held(&v));
                Event::Delete(v)
            }
        })
    })
}

fn size(v: &impl Retained) -> i64 {
    i64::try_from(v.retained_bytes()).unwrap_or(i64::MAX)
}

fn cache(what: &str) -> Cache {
    Cache {
        cache: what.to_owned(),
    }
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
    store: &Store<K>,
    ctx: &Arc<Context>,
    trigger: fn(&Arc<Context>, &K, bool),
) where
    K: Lookup + Clone + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let objects = ctx
        .metrics
        .cached_objects
        .get_or_create(&cache(what))
        .clone();
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
                if what == "restore_points" {
                    triggers::recount_unreadable(ctx);
                }
                triggers::startup_pass(ctx, |_| {});
            }
            Ok(Event::InitDone) => {
                if what == "restore_points" {
                    triggers::recount_unreadable(ctx);
                }
                listed_before = true;
            }
            Ok(Event::Init) => {}
            Err(e) => tracing::warn!(error = %e, watch = what, "watch error; retrying"),
        }
        objects.set(i64::try_from(store.len()).unwrap_or(i64::MAX));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn guards_keep_everything_but_managed_fields() {
        use k8s_openapi::apimachinery::pkg::apis::meta::v1::ManagedFieldsEntry;
        let mut guard =
            crate::guard::fixtures::guard("ns", "g", crate::guard::fixtures::spec(&[], &["db"]));
        guard.metadata.managed_fields = Some(vec![ManagedFieldsEntry {
            manager: Some("kubectl".into()),
            ..Default::default()
        }]);
        let mut cached = guard.clone();
        drop_managed_fields(&mut cached);
        assert_eq!(cached.metadata.managed_fields, None);
        guard.metadata.managed_fields = None;
        assert_eq!(cached.metadata, guard.metadata);
        assert_eq!(cached.spec.secrets.len(), 1);
    }

    #[test]
    fn service_accounts_and_namespaces_keep_only_what_identifies_them() {
        let mut sa: PartialObjectMeta<ServiceAccount> = serde_json::from_value(serde_json::json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": {"name": "writer", "namespace": "ns", "uid": "u", "resourceVersion": "3",
                         "deletionTimestamp": "2026-01-01T00:00:00Z",
                         "creationTimestamp": "2025-01-01T00:00:00Z",
                         "labels": {"a": "b"}, "annotations": {"big": "x".repeat(200 * 1024)},
                         "finalizers": ["f"], "managedFields": [{"manager": "kubectl"}]},
        }))
        .expect("metadata");
        keep_identity(&mut sa);
        let m = &sa.metadata;
        assert_eq!(
            (
                m.name.as_deref(),
                m.namespace.as_deref(),
                m.uid.as_deref(),
                m.resource_version.as_deref()
            ),
            (Some("writer"), Some("ns"), Some("u"), Some("3"))
        );
        assert!(m.deletion_timestamp.is_some());
        assert!(m.creation_timestamp.is_some());
        assert_eq!(
            (&m.labels, &m.annotations, &m.finalizers),
            (&None, &None, &None)
        );
        assert_eq!(m.managed_fields, None);
    }
}
