//! Wiring: watches fill in-memory stores and the work queue; workers reconcile one
//! guarded Secret (or one guard's status) at a time; a periodic audit re-checks everything.
//!
//! Watches: SecretGuards (all), Secrets labelled secretguard.dev/guarded (only those),
//! restore points (operator namespace, by label), ServiceAccounts and Namespaces (metadata
//! only). Nothing is reconciled until every store has synced, so an object that is merely
//! not loaded yet is never mistaken for a deleted one.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fmt::Debug;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::api::Api;
use kube::core::PartialObjectMeta;
use kube::runtime::events::{Recorder, Reporter};
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::watcher::{self, Event};
use kube::runtime::{WatchStreamExt, watcher as watch};
use kube::{Client, Resource, ResourceExt};
use serde::de::DeserializeOwned;

use crate::api::v1alpha1::SecretGuard;
use crate::guard::decide::{Reason, TargetState};
use crate::guard::index::{Index, ObjectKey};
use crate::guard::{reconcile, status};
use crate::labels;
use crate::queue::WorkQueue;
use crate::restore_point;

/// Settings of a controller run.
#[derive(Clone, Debug)]
pub struct Config {
    /// Restore points live here.
    pub operator_namespace: String,
    pub audit_interval: Duration,
    /// A token Secret still empty this long after creation is reported TokenNotPopulated.
    pub populate_deadline: Duration,
    pub workers: usize,
    /// This process, as named in Events.
    pub instance: String,
    /// How long restore points of a deleted namespace are kept (it may come back).
    pub restore_point_retention: Duration,
    /// Alertmanagers to push alerts to (v2 API base URLs); none: no push.
    pub alertmanager_urls: Vec<String>,
    /// Prefix of runbook_url annotations: <base><AlertName>.md.
    pub runbook_base_url: String,
    /// Leader election; None: this process always leads (one replica, tests).
    pub leader: Option<crate::leader::Config>,
}

/// A unit of work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Reconcile one guarded (or formerly guarded) Secret.
    Target(ObjectKey),
    /// Write one guard's status.
    Status(ObjectKey),
}

pub struct Stores {
    pub guards: Store<SecretGuard>,
    pub secrets: Store<Secret>,
    pub restore_points: Store<Secret>,
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

impl Stores {
    pub fn secret(&self, key: &ObjectKey) -> Option<Arc<Secret>> {
        self.secrets
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    pub fn restore_point(&self, operator_namespace: &str, name: &str) -> Option<Arc<Secret>> {
        self.restore_points
            .get(&ObjectRef::new(name).within(operator_namespace))
    }

    pub fn service_account(
        &self,
        key: &ObjectKey,
    ) -> Option<Arc<PartialObjectMeta<ServiceAccount>>> {
        self.service_accounts
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

}

/// What the operator remembers about a guarded Secret between reconciles. Only used to
/// report each incident once and to time restores; everything that must survive a
/// restart lives in the cluster (restore points, status).
#[derive(Clone, Debug)]
pub struct TargetRecord {
    pub guard: ObjectKey,
    pub kind: &'static str,
    pub state: TargetState,
    pub reported: BTreeSet<Reason>,
    pub missing_since: Option<Instant>,
}

/// What the operator remembers about a guard.
#[derive(Clone, Debug, Default)]
pub struct GuardRecord {
    pub last_incident: Option<crate::api::v1alpha1::Incident>,
    /// Why the current spec cannot be used (Ready=False, InvalidSpec).
    pub invalid: Option<String>,
    /// Drift the audit found in this guard's objects since start.
    pub audit_drift: u64,
    /// A status write is queued or scheduled.
    pub status_pending: bool,
    /// When the last status write started.
    pub last_status: Option<Instant>,
}

/// At most one status write per guard in this interval. Status is for people reading
/// `kubectl get`; Events, metrics and alerts carry the real-time signal. A status write
/// costs the apiserver CPU in proportion to the whole guard (~35 ms for 200 entries,
/// measured; see BENCHMARKS.md), and that CPU is taken from restores.
pub const STATUS_MIN_INTERVAL: Duration = Duration::from_secs(2);

/// A status request waits this long before it is written, so that what follows an
/// incident within the same second (the restore, the restore point refresh) lands in the
/// same write: one write per incident, not one for "missing" and one for "restored".
pub const STATUS_SETTLE: Duration = Duration::from_secs(1);

#[derive(Default)]
pub struct Memory {
    pub targets: HashMap<ObjectKey, TargetRecord>,
    pub guards: HashMap<ObjectKey, GuardRecord>,
    failures: HashMap<Work, u32>,
    /// Targets queued by the audit and not by an event since: a write for one is drift.
    pub audit_pending: HashSet<ObjectKey>,
}

pub struct Context {
    pub client: Client,
    pub config: Config,
    pub stores: Stores,
    pub index: RwLock<Index>,
    pub memory: Mutex<Memory>,
    pub queue: Arc<WorkQueue<Work>>,
    pub recorder: Recorder,
    /// Units of work finished since start (tests and benchmarks wait on it).
    pub processed: AtomicU64,
    pub metrics: Arc<crate::metrics::Metrics>,
    pub alerter: Option<crate::alerts::Alerter>,
    /// Stores synced (ready: leader or warm standby).
    pub synced: tokio::sync::watch::Sender<bool>,
    /// This process holds the leader Lease (always true without leader election).
    pub leading: tokio::sync::watch::Sender<bool>,
    /// The leader's first pass over everything is done (the queue drained once).
    pub startup_done: tokio::sync::watch::Sender<bool>,
    /// One watch per guard with a secretSelector: (selector, task).
    selector_watches: Mutex<HashMap<ObjectKey, (String, tokio::task::AbortHandle)>>,
}

impl Context {
    pub fn index(&self) -> std::sync::RwLockReadGuard<'_, Index> {
        self.index.read().unwrap_or_else(|e| e.into_inner())
    }

    fn index_mut(&self) -> std::sync::RwLockWriteGuard<'_, Index> {
        self.index.write().unwrap_or_else(|e| e.into_inner())
    }

    pub fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Ask for a guard's status to be written after STATUS_SETTLE, and no sooner than
    /// STATUS_MIN_INTERVAL after its last write; requests in between are folded into one.
    pub fn request_status(&self, guard: ObjectKey) {
        let wait = {
            let mut m = self.memory();
            let rec = m.guards.entry(guard.clone()).or_default();
            if rec.status_pending {
                return;
            }
            rec.status_pending = true;
            rec.last_status
                .map(|t| STATUS_MIN_INTERVAL.saturating_sub(t.elapsed()))
                .unwrap_or(Duration::ZERO)
                .max(STATUS_SETTLE)
        };
        self.queue.add_after(Work::Status(guard), wait);
    }

    /// Work items failing right now (retrying with backoff).
    pub fn failing(&self) -> usize {
        self.memory().failures.len()
    }

    /// Ready to serve: caches synced, and, when leading, the first audit done.
    pub fn ready(&self) -> bool {
        *self.synced.borrow() && (!*self.leading.borrow() || *self.startup_done.borrow())
    }

    /// Nothing queued, nothing being processed, no status write waiting for its turn.
    pub fn idle(&self) -> bool {
        self.queue.is_idle() && !self.memory().guards.values().any(|g| g.status_pending)
    }

    /// Queue a target because something happened to it (not the audit).
    fn touch(&self, key: ObjectKey) {
        self.memory().audit_pending.remove(&key);
        self.queue.add(Work::Target(key));
    }
}

/// Run the controller until `shutdown` resolves.
pub async fn run(
    client: Client,
    config: Config,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> crate::Result<()> {
    Controller::new(client, config).run(shutdown).await
}

/// A controller whose context can be inspected while it runs (tests, benchmarks).
pub struct Controller {
    ctx: Arc<Context>,
    writers: Writers,
}

struct Writers {
    guards: reflector::store::Writer<SecretGuard>,
    secrets: reflector::store::Writer<Secret>,
    restore_points: reflector::store::Writer<Secret>,
    service_accounts: reflector::store::Writer<PartialObjectMeta<ServiceAccount>>,
    namespaces: reflector::store::Writer<PartialObjectMeta<Namespace>>,
}

impl Controller {
    pub fn new(client: Client, config: Config) -> Self {
        let (guards, guards_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        let (restore_points, restore_points_w) = reflector::store();
        let (service_accounts, service_accounts_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        let reporter = Reporter {
            controller: labels::MANAGER.into(),
            instance: Some(config.instance.clone()),
        };
        let metrics = Arc::new(crate::metrics::Metrics::new());
        let ctx = Arc::new(Context {
            recorder: Recorder::new(client.clone(), reporter),
            client: client.clone(),
            stores: Stores {
                guards: guards.clone(),
                secrets: secrets.clone(),
                restore_points: restore_points.clone(),
                service_accounts: service_accounts.clone(),
                namespaces: namespaces.clone(),
            },
            index: RwLock::new(Index::default()),
            memory: Mutex::new(Memory::default()),
            queue: WorkQueue::new(),
            processed: AtomicU64::new(0),
            alerter: crate::alerts::Alerter::start(
                config.alertmanager_urls.clone(),
                config.runbook_base_url.clone(),
                Arc::clone(&metrics),
            ),
            metrics,
            synced: tokio::sync::watch::Sender::new(false),
            leading: tokio::sync::watch::Sender::new(config.leader.is_none()),
            startup_done: tokio::sync::watch::Sender::new(false),
            selector_watches: Mutex::new(HashMap::new()),
            config,
        });
        Controller {
            ctx,
            writers: Writers {
                guards: guards_w,
                secrets: secrets_w,
                restore_points: restore_points_w,
                service_accounts: service_accounts_w,
                namespaces: namespaces_w,
            },
        }
    }

    pub fn context(&self) -> Arc<Context> {
        Arc::clone(&self.ctx)
    }

    pub async fn run(
        self,
        shutdown: impl std::future::Future<Output = ()> + Send,
    ) -> crate::Result<()> {
        let Controller { ctx, writers } = self;
        let Writers {
            guards: guards_w,
            secrets: secrets_w,
            restore_points: restore_points_w,
            service_accounts: service_accounts_w,
            namespaces: namespaces_w,
        } = writers;
        let client = ctx.client.clone();
        let config = ctx.config.clone();

        let guarded = watcher::Config::default().labels(&format!("{}=true", labels::GUARDED));
        let rp_selector =
            watcher::Config::default().labels(&format!("{}=true", labels::RESTORE_POINT));
        let c = &client;
        let streams = futures::future::join5(
            drive(
                "guards",
                reflector::reflector(
                    guards_w,
                    cached(Api::<SecretGuard>::all(c.clone()), Default::default()),
                ),
                &ctx,
                on_guard,
            ),
            drive(
                "secrets",
                reflector::reflector(secrets_w, cached(Api::<Secret>::all(c.clone()), guarded)),
                &ctx,
                on_secret,
            ),
            drive(
                "restore_points",
                reflector::reflector(
                    restore_points_w,
                    cached(
                        Api::<Secret>::namespaced(c.clone(), &config.operator_namespace),
                        rp_selector,
                    ),
                ),
                &ctx,
                on_restore_point,
            ),
            drive(
                "service_accounts",
                reflector::reflector(
                    service_accounts_w,
                    cached(
                        Api::<PartialObjectMeta<ServiceAccount>>::all(c.clone()),
                        Default::default(),
                    ),
                ),
                &ctx,
                on_service_account,
            ),
            drive(
                "namespaces",
                reflector::reflector(
                    namespaces_w,
                    cached(
                        Api::<PartialObjectMeta<Namespace>>::all(c.clone()),
                        Default::default(),
                    ),
                ),
                &ctx,
                on_namespace,
            ),
        );

        let start = Instant::now();
        let workers = async {
            wait_synced(&ctx.stores).await;
            ctx.synced.send_replace(true);
            // A standby keeps its caches warm and writes nothing until it leads.
            let mut leading = ctx.leading.subscribe();
            let _ = leading.wait_for(|l| *l).await;
            ctx.metrics.leader.set(1);
            startup_pass(&ctx);
            let first_pass = async {
                while !ctx.idle() {
                    tokio::time::sleep(Duration::from_millis(10)).await;
                }
                ctx.startup_done.send_replace(true);
                tracing::info!(
                    elapsed_ms = start.elapsed().as_millis() as u64,
                    "first audit done; ready"
                );
            };
            tracing::info!(
                elapsed_ms = start.elapsed().as_millis() as u64,
                guards = ctx.stores.guards.state().len(),
                guarded_secrets = ctx.stores.secrets.state().len(),
                restore_points = ctx.stores.restore_points.state().len(),
                "caches synced and leading; reconciling"
            );
            let workers = (0..config.workers.max(1)).map(|_| worker(&ctx));
            let audits = async {
                let mut tick = tokio::time::interval(config.audit_interval);
                tick.tick().await;
                loop {
                    tick.tick().await;
                    audit(&ctx);
                }
            };
            futures::future::join3(futures::future::join_all(workers), audits, first_pass).await;
        };
        let election = async {
            match config.leader.clone() {
                Some(cfg) => crate::leader::run(client.clone(), cfg, ctx.leading.clone()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = streams => {},
            _ = workers => {},
            lost = election => {
                ctx.metrics.leader.set(0);
                return lost;
            }
            _ = shutdown => tracing::info!("shutting down"),
        }
        Ok(())
    }
}

/// A watch for a cache: retried with backoff, managedFields dropped.
fn cached<K>(
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

async fn wait_synced(stores: &Stores) {
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

/// Consume a reflected watch stream, calling `handle` for every object event.
async fn drive<K, S>(
    what: &'static str,
    stream: S,
    ctx: &Arc<Context>,
    handle: fn(&Arc<Context>, &K, bool),
) where
    K: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static,
    S: Stream<Item = Result<Event<K>, watcher::Error>>,
{
    futures::pin_mut!(stream);
    let mut listed_before = false;
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(obj)) | Ok(Event::InitApply(obj)) => handle(ctx, &obj, false),
            Ok(Event::Delete(obj)) => handle(ctx, &obj, true),
            Ok(Event::InitDone) if listed_before => {
                // A re-list after a broken watch (apiserver restart, expired resource
                // version): what was deleted meanwhile just vanishes from the cache, with
                // no event. Look at everything again, as at startup.
                tracing::info!(
                    watch = what,
                    "watch re-listed: re-checking every guarded object"
                );
                startup_pass(ctx);
            }
            Ok(Event::InitDone) => listed_before = true,
            Ok(Event::Init) => {}
            Err(e) => tracing::warn!(error = %e, watch = what, "watch error; retrying"),
        }
    }
}

fn key_of<K: Resource>(obj: &K) -> ObjectKey {
    ObjectKey::new(
        obj.meta().namespace.clone().unwrap_or_default(),
        obj.meta().name.clone().unwrap_or_default(),
    )
}

fn on_guard(ctx: &Arc<Context>, guard: &SecretGuard, deleted: bool) {
    let key = key_of(guard);
    // Our own status writes come back as events. Only a new spec (generation) or a new
    // guard changes what is guarded; anything else must cost nothing, or every status
    // update would re-reconcile every target of the guard.
    let unchanged = !deleted
        && ctx.index().guard(&key).is_some_and(|e| {
            e.generation == guard.metadata.generation.unwrap_or_default()
                && Some(&e.uid) == guard.metadata.uid.as_ref()
        });
    if unchanged {
        return;
    }
    let touched = if deleted {
        ctx.memory().guards.remove(&key);
        for kind in ["ServiceAccountToken", "Secret"] {
            let labels = crate::metrics::GuardKind {
                namespace: key.namespace.clone(),
                guard: key.name.clone(),
                kind: kind.into(),
            };
            ctx.metrics.guarded_objects.remove(&labels);
            ctx.metrics.missing_objects.remove(&labels);
        }
        ctx.index_mut().remove(&key)
    } else {
        match status::validate(&guard.spec) {
            Ok(()) => {
                ctx.memory().guards.entry(key.clone()).or_default().invalid = None;
                ctx.index_mut().upsert(guard)
            }
            Err(why) => {
                // Keep guarding with the last usable spec: a bad edit must not drop protection.
                ctx.memory().guards.entry(key.clone()).or_default().invalid = Some(why);
                Vec::new()
            }
        }
    };
    for t in touched {
        ctx.touch(t);
    }
    update_selector_watch(ctx, &key);
    if !deleted {
        ctx.queue.add(Work::Status(key));
    }
}

/// Make the selector watch of a guard match the index: started, restarted with a new
/// selector, or stopped.
fn update_selector_watch(ctx: &Arc<Context>, key: &ObjectKey) {
    {
        let want = ctx.index().selector_of(key);
        let mut watches = ctx
            .selector_watches
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        if watches.get(key).map(|(s, _)| s) == want.as_ref() {
            return;
        }
        if let Some((_, task)) = watches.remove(key) {
            task.abort();
        }
        if let Some(selector) = want {
            let task = tokio::spawn(watch_selected(
                Arc::clone(ctx),
                key.namespace.clone(),
                selector.clone(),
            ));
            watches.insert(key.clone(), (selector, task.abort_handle()));
        }
    }
}

/// Watch, metadata only and filtered on the server, the Secrets a selector matches, to
/// guard new ones as they appear and let go of those that stop matching.
async fn watch_selected(ctx: Arc<Context>, namespace: String, selector: String) {
    // Api<PartialObjectMeta<_>> makes metadata-only requests.
    let api: Api<PartialObjectMeta<Secret>> = Api::namespaced(ctx.client.clone(), &namespace);
    let stream = watch(api, watcher::Config::default().labels(&selector)).default_backoff();
    futures::pin_mut!(stream);
    while let Some(event) = stream.next().await {
        match event {
            Ok(Event::Apply(s)) | Ok(Event::InitApply(s)) | Ok(Event::Delete(s)) => {
                ctx.touch(key_of(&s))
            }
            Ok(_) => {}
            Err(e) => {
                tracing::warn!(error = %e, namespace, selector, "selector watch error; retrying")
            }
        }
    }
}

fn on_secret(ctx: &Arc<Context>, secret: &Secret, deleted: bool) {
    let key = key_of(secret);
    if deleted && let Some(r) = ctx.memory().targets.get_mut(&key) {
        r.missing_since.get_or_insert_with(Instant::now);
    }
    ctx.touch(key);
}

fn on_restore_point(ctx: &Arc<Context>, rp: &Secret, deleted: bool) {
    let Some((namespace, name, _kind)) = restore_point::origin(rp) else {
        return;
    };
    let key = ObjectKey::new(namespace, name);
    if deleted {
        // A deleted restore point is rewritten from the live object.
        ctx.touch(key);
    } else {
        // A refreshed one may carry a new restore count: the guard's status sums them.
        let guard = ctx.memory().targets.get(&key).map(|r| r.guard.clone());
        if let Some(guard) = guard {
            ctx.request_status(guard);
        }
    }
}

fn on_service_account(ctx: &Arc<Context>, sa: &PartialObjectMeta<ServiceAccount>, _deleted: bool) {
    let tokens = ctx.index().tokens_of(&key_of(sa));
    for t in tokens {
        ctx.touch(t);
    }
}

fn on_namespace(ctx: &Arc<Context>, ns: &PartialObjectMeta<Namespace>, deleted: bool) {
    if deleted || ns.metadata.deletion_timestamp.is_some() {
        let name = ns.name_any();
        let targets = ctx.index().targets_in(&name);
        for t in targets {
            ctx.touch(t);
        }
        if deleted {
            // Its guards are gone too: start the retention of its restore points.
            for rp in ctx.stores.restore_points.state() {
                if let Some((origin_ns, origin, _)) = restore_point::origin(&rp)
                    && origin_ns == name
                {
                    ctx.touch(ObjectKey::new(origin_ns, origin));
                }
            }
        }
    }
}

/// Queue every guarded Secret, every restore point's origin and every labelled Secret, so
/// whatever the watches missed (or happened while the operator was down) is found.
pub fn audit(ctx: &Context) {
    queue_all(ctx, true);
}

/// The first pass after start: the same work, but nothing it finds is drift (there were
/// no watches yet to miss anything).
fn startup_pass(ctx: &Context) {
    queue_all(ctx, false);
}

fn queue_all(ctx: &Context, count_drift: bool) {
    let mut keys: BTreeSet<ObjectKey> = ctx.index().all_targets().into_iter().collect();
    for rp in ctx.stores.restore_points.state() {
        if let Some((ns, name, _)) = restore_point::origin(&rp) {
            keys.insert(ObjectKey::new(ns, name));
        }
    }
    for s in ctx.stores.secrets.state() {
        keys.insert(key_of(s.as_ref()));
    }
    let guards: Vec<ObjectKey> = ctx.index().guards().map(|g| g.key.clone()).collect();
    if count_drift {
        let mut m = ctx.memory();
        m.audit_pending.extend(keys.iter().cloned());
    }
    tracing::debug!(targets = keys.len(), "audit");
    ctx.queue.add_all(keys.into_iter().map(Work::Target));
    ctx.queue.add_all(guards.into_iter().map(Work::Status));
}

async fn worker(ctx: &Arc<Context>) {
    loop {
        let work = ctx.queue.next().await;
        let started = Instant::now();
        let (kind, result) = match &work {
            Work::Target(key) => {
                let span = tracing::info_span!("reconcile", target = %key);
                (
                    "target",
                    tracing::Instrument::instrument(reconcile::reconcile_target(ctx, key), span)
                        .await,
                )
            }
            Work::Status(key) => {
                let span = tracing::info_span!("status", guard = %key);
                (
                    "status",
                    tracing::Instrument::instrument(status::write(ctx, key), span)
                        .await
                        .map(|()| None),
                )
            }
        };
        ctx.metrics
            .reconcile_duration
            .get_or_create(&crate::metrics::Work { work: kind.into() })
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(requeue) => {
                ctx.memory().failures.remove(&work);
                if let Some(after) = requeue {
                    ctx.queue.add_after(work.clone(), after);
                }
            }
            Err(e) => {
                ctx.metrics
                    .reconcile_errors
                    .get_or_create(&crate::metrics::ErrorReason {
                        reason: e.reason().into(),
                    })
                    .inc();
                let attempt = {
                    let mut m = ctx.memory();
                    let n = m.failures.entry(work.clone()).or_insert(0);
                    *n = n.saturating_add(1);
                    *n
                };
                let delay = backoff(attempt);
                tracing::warn!(work = ?work, error = %e, reason = e.reason(), attempt, retry_in_ms = delay.as_millis() as u64, "reconcile failed");
                ctx.queue.add_after(work.clone(), delay);
            }
        }
        ctx.queue.done(&work);
        ctx.processed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Exponential backoff per object: 100 ms doubling to at most 60 s.
pub fn backoff(attempt: u32) -> Duration {
    let ms = 100u64.saturating_mul(1u64 << attempt.saturating_sub(1).min(10));
    Duration::from_millis(ms.min(60_000))
}

/// Drift found by audits since start in one guard's objects.
pub fn guard_audit_drift(ctx: &Context, guard: &ObjectKey) -> u64 {
    ctx.memory()
        .guards
        .get(guard)
        .map(|g| g.audit_drift)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_from_100ms_and_is_capped_at_a_minute() {
        assert_eq!(backoff(1), Duration::from_millis(100));
        assert_eq!(backoff(2), Duration::from_millis(200));
        assert_eq!(backoff(5), Duration::from_millis(1600));
        assert_eq!(backoff(11), Duration::from_secs(60));
        assert_eq!(backoff(1000), Duration::from_secs(60));
    }

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
