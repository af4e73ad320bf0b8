//! What every step of a reconcile reads and writes: the client, the settings, the caches
//! the watches fill, the contents of the latest watch events, the guard index, what is
//! remembered between reconciles, the work queue and the reporters. Built by `Context::new` without starting anything that
//! watches, so a test can build one over a mock apiserver and fill its caches by hand.

use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use k8s_openapi::api::core::v1::{Namespace, Secret, ServiceAccount};
use kube::Client;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{self, ObjectRef, Store, store::Writer};

use super::index::Index;
use super::state::Records;
use crate::alerts::Alerter;
use crate::api::v1alpha1::SecretGuard;
use crate::cache::{self, CachedRestorePoint, CachedSecret};
use crate::config::Config;
use crate::event_recorder::Recorder;
use crate::labels;
use crate::metrics::Metrics;
use crate::object_key::ObjectKey;
use crate::queue::{Lane, WorkQueue};
use crate::throttle::Pace;
use crate::transport::{Clients, Fence};

/// A unit of work.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Work {
    /// Reconcile one guarded (or formerly guarded) Secret: the key of the Secret.
    Target(ObjectKey),
    /// Write one guard's status: the key of the guard.
    Status(ObjectKey),
}

/// The caches the watches fill (src/controller/watches.rs). None holds Secret data
/// (src/cache.rs).
pub struct Stores {
    pub guards: Store<SecretGuard>,
    /// Secrets labelled secretguard.dev/guarded only, reduced.
    pub secrets: Store<CachedSecret>,
    /// Restore points and ServiceAccount snapshots, in the operator namespace, reduced.
    pub restore_points: Store<CachedRestorePoint>,
    /// Metadata only, and of that only what identifies them.
    pub service_accounts: Store<PartialObjectMeta<ServiceAccount>>,
    pub namespaces: Store<PartialObjectMeta<Namespace>>,
}

/// The write side of the caches: handed to the watches that fill them.
pub struct StoreWriters {
    pub guards: Writer<SecretGuard>,
    pub secrets: Writer<CachedSecret>,
    pub restore_points: Writer<CachedRestorePoint>,
    pub service_accounts: Writer<PartialObjectMeta<ServiceAccount>>,
    pub namespaces: Writer<PartialObjectMeta<Namespace>>,
}

impl Stores {
    fn new() -> (Stores, StoreWriters) {
        let (guards, guards_w) = reflector::store();
        let (secrets, secrets_w) = reflector::store();
        let (restore_points, restore_points_w) = reflector::store();
        let (service_accounts, service_accounts_w) = reflector::store();
        let (namespaces, namespaces_w) = reflector::store();
        (
            Stores {
                guards,
                secrets,
                restore_points,
                service_accounts,
                namespaces,
            },
            StoreWriters {
                guards: guards_w,
                secrets: secrets_w,
                restore_points: restore_points_w,
                service_accounts: service_accounts_w,
                namespaces: namespaces_w,
            },
        )
    }

    pub fn guard(&self, key: &ObjectKey) -> Option<Arc<SecretGuard>> {
        self.guards
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    pub fn secret(&self, key: &ObjectKey) -> Option<Arc<CachedSecret>> {
        self.secrets
            .get(&ObjectRef::new(&key.name).within(&key.namespace))
    }

    pub fn restore_point(
        &self,
        operator_namespace: &str,
        name: &str,
    ) -> Option<Arc<CachedRestorePoint>> {
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

    pub fn namespace(&self, name: &str) -> Option<Arc<PartialObjectMeta<Namespace>>> {
        self.namespaces.get(&ObjectRef::new(name))
    }
}

pub struct Context {
    /// Request-response calls (bounded by a timeout).
    pub client: Client,
    /// Watches (long-lived).
    pub watch_client: Client,
    /// Open while this process may write (src/transport.rs); the workers wait on it.
    pub fence: Fence,
    pub config: Config,
    pub stores: Stores,
    pub index: RwLock<Index>,
    pub records: Mutex<Records>,
    pub queue: Arc<WorkQueue<Work>>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
    pub alerter: Option<Alerter>,

    // Signals of the runtime around the reconciles (src/controller/), read by the HTTP
    // endpoints, tests and benchmarks.
    /// Units of work finished since start (tests and benchmarks wait on it).
    pub processed: AtomicU64,
    /// Units of work failing right now, with their attempts (retrying with backoff).
    pub failures: Mutex<HashMap<Work, u32>>,
    /// Stores synced (ready: leader or warm standby).
    pub synced: tokio::sync::watch::Sender<bool>,
    /// This process holds the leader Lease (always true without leader election).
    pub leading: tokio::sync::watch::Sender<bool>,
    /// The leader's first pass over everything is done (each object reconciled once).
    pub startup_done: tokio::sync::watch::Sender<bool>,
    /// One watch per guard with a secretSelector: (selector, task).
    pub selector_watches: Mutex<SelectorWatches>,
    /// Whole Secrets from watch events, kept until the reconcile of their key takes them.
    pub contents: Mutex<Contents>,
    /// When each restore point of an earlier format may be rewritten (src/guard/migrate.rs).
    pub migrations: Mutex<Pace<String>>,
}

/// The Secrets, data included, that watch events carried and that a reconcile will need:
/// a guarded Secret whose content its restore point does not hold yet, or the final state
/// of a deleted one. The caches never hold data; this holds it only from the event to the
/// reconcile of its key, at most one per key (the latest) and `CONTENTS_MAX_BYTES` in all.
#[derive(Debug, Default)]
pub struct Contents {
    by_key: HashMap<ObjectKey, Arc<Secret>>,
    bytes: usize,
}

impl Contents {
    fn insert(&mut self, key: ObjectKey, secret: Arc<Secret>) -> bool {
        let bytes = cache::secret_bytes(&secret);
        let replaced = self.by_key.get(&key).map_or(0, |s| cache::secret_bytes(s));
        if self.bytes - replaced + bytes > CONTENTS_MAX_BYTES {
            return false;
        }
        self.bytes = self.bytes - replaced + bytes;
        self.by_key.insert(key, secret);
        true
    }
}

/// Beyond this, a new event's content is not kept: a save then reads the Secret with a
/// GET, and a deleted Secret is restored from its restore point as it is.
pub const CONTENTS_MAX_BYTES: usize = 32 * 1024 * 1024;

/// The selector watches by guard: (selector, task).
pub type SelectorWatches = HashMap<ObjectKey, (String, tokio::task::AbortHandle)>;

/// A lock whose holder panicked still guards consistent enough data: every critical
/// section here leaves it usable, and losing the operator over it would drop protection.
fn recover<G>(result: Result<G, std::sync::PoisonError<G>>) -> G {
    result.unwrap_or_else(|e| e.into_inner())
}

impl Context {
    /// A context with empty caches and nothing running but the Alertmanager push task
    /// (when Alertmanagers are configured; it needs a Tokio runtime). The caches fill
    /// through the returned writers.
    pub fn new(client: Client, config: Config) -> (Context, StoreWriters) {
        Context::with_metrics(client, config, Arc::new(Metrics::new()))
    }

    /// As `new`, with metrics made beforehand (the client's service stack counts into them).
    pub fn with_metrics(
        client: Client,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> (Context, StoreWriters) {
        let mut clients = Clients::single(client);
        if config.leader.is_some() {
            clients.fence = Fence::closed();
        }
        Context::with_clients(clients, config, metrics)
    }

    /// As `with_metrics`, with the clients made beforehand (src/main.rs: the fence and the
    /// request budget are in their service stack).
    pub fn with_clients(
        clients: Clients,
        config: Config,
        metrics: Arc<Metrics>,
    ) -> (Context, StoreWriters) {
        let Clients {
            requests: client,
            watches: watch_client,
            fence,
        } = clients;
        let (stores, writers) = Stores::new();
        let ctx = Context {
            recorder: Recorder::new(client.clone(), labels::MANAGER, &config.instance),
            client,
            watch_client,
            fence,
            stores,
            index: RwLock::new(Index::default()),
            records: Mutex::new(Records::default()),
            queue: WorkQueue::new(),
            alerter: Alerter::start(
                config.alertmanager_urls.clone(),
                config.runbook_base_url.clone(),
                Arc::clone(&metrics),
            ),
            metrics,
            processed: AtomicU64::new(0),
            failures: Mutex::new(HashMap::new()),
            synced: tokio::sync::watch::Sender::new(false),
            leading: tokio::sync::watch::Sender::new(config.leader.is_none()),
            startup_done: tokio::sync::watch::Sender::new(false),
            selector_watches: Mutex::new(HashMap::new()),
            contents: Mutex::new(Contents::default()),
            migrations: Mutex::new(Pace::new(config.migration_rate)),
            config,
        };
        (ctx, writers)
    }

    pub fn index(&self) -> RwLockReadGuard<'_, Index> {
        recover(self.index.read())
    }

    pub fn index_mut(&self) -> RwLockWriteGuard<'_, Index> {
        recover(self.index.write())
    }

    pub fn records(&self) -> MutexGuard<'_, Records> {
        recover(self.records.lock())
    }

    pub fn failures(&self) -> MutexGuard<'_, HashMap<Work, u32>> {
        recover(self.failures.lock())
    }

    pub fn selector_watches(&self) -> MutexGuard<'_, SelectorWatches> {
        recover(self.selector_watches.lock())
    }

    /// Keep the content of a watch event for the reconcile of its key, replacing an older
    /// one; false when it does not fit in `CONTENTS_MAX_BYTES`.
    pub fn keep_content(&self, key: ObjectKey, secret: Arc<Secret>) -> bool {
        recover(self.contents.lock()).insert(key, secret)
    }

    /// Take the content kept for a key (a reconcile of it has started).
    pub fn take_content(&self, key: &ObjectKey) -> Option<Arc<Secret>> {
        let mut c = recover(self.contents.lock());
        let secret = c.by_key.remove(key)?;
        c.bytes -= cache::secret_bytes(&secret);
        Some(secret)
    }

    /// Give back a content a failed reconcile took, unless a newer event brought another.
    pub fn return_content(&self, key: &ObjectKey, secret: Arc<Secret>) {
        let mut c = recover(self.contents.lock());
        if !c.by_key.contains_key(key) {
            c.insert(key.clone(), secret);
        }
    }

    /// Work items failing right now (retrying with backoff).
    pub fn failing(&self) -> usize {
        self.failures().len()
    }

    /// Ready to serve: caches synced, and, when leading, the first audit done.
    pub fn ready(&self) -> bool {
        *self.synced.borrow() && (!*self.leading.borrow() || *self.startup_done.borrow())
    }

    /// Nothing queued, nothing being processed, no status write waiting for its turn.
    pub fn idle(&self) -> bool {
        self.queue.is_idle() && !self.records().guards.values().any(|g| g.status_pending)
    }

    /// Queue a target, urgently, because something happened to it (not the audit).
    pub fn touch(&self, key: ObjectKey) {
        self.touch_in(key, Lane::Urgent);
    }

    /// Queue a target because something changed around it (its guard, its namespace), in
    /// `lane`; not the audit.
    pub fn touch_in(&self, key: ObjectKey, lane: Lane) {
        self.records().audit_pending.remove(&key);
        self.queue.add_in(Work::Target(key), lane);
    }

    /// Drift found by audits since start in one guard's objects.
    pub fn audit_drift(&self, guard: &ObjectKey) -> u64 {
        self.records()
            .guards
            .get(guard)
            .map(|g| g.audit_drift)
            .unwrap_or(0)
    }
}
