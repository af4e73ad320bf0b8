//! Direct push to Alertmanager (v2 API), so an alert does not wait for a scrape and a rule
//! evaluation. Reconciles never wait for it: incidents go through a bounded channel to one
//! task that posts to every configured Alertmanager, with retries and backoff, and re-posts
//! active alerts every minute (Alertmanager forgets alerts that are not repeated).
//!
//! Two kinds of alerts:
//! - state alerts (object missing, token invalid, not populated, restore failing) fire
//!   until the object is healthy again, then are resolved;
//! - event alerts (token deleted, token rotated) fire for a fixed window even when the
//!   restore took milliseconds: resolving them at once would let Alertmanager drop them
//!   before its group_wait, and nobody would hear of the deletion.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use k8s_openapi::jiff::{SignedDuration, Timestamp};
use serde_json::json;
use tokio::sync::mpsc;

use crate::metrics::{Metrics, Outcome};
use crate::object_key::ObjectKey;

/// Where the runbooks are published (docs/runbooks in the repository).
pub const DEFAULT_RUNBOOK_BASE: &str =
    "https://github.com/secretguard/secretguard/blob/main/docs/runbooks/";

/// How long an event alert stays firing.
pub const EVENT_WINDOW: Duration = Duration::from_secs(600);
const RESEND: Duration = Duration::from_secs(60);
const ATTEMPTS: u32 = 5;
/// Alerts about one guard's objects active at once, at most: beyond, one
/// SecretGuardAlertsCapped alert for the guard stands for the rest (its objects are in
/// the guard's status and the per-object metrics), so one guard of many missing names
/// cannot flood Alertmanager or crowd out other alerts (security review A5).
pub const MAX_ALERTS_PER_GUARD: usize = 20;
/// Alerts per request to Alertmanager when re-sending all active ones.
const CHUNK: usize = 500;
const CAPPED: &str = "SecretGuardAlertsCapped";

/// One alert about one object.
#[derive(Clone, Debug)]
pub struct Alert {
    pub alertname: &'static str,
    /// An event alert fires for EVENT_WINDOW and then ends by itself; a state alert fires
    /// until it is resolved.
    pub event: bool,
    pub object: ObjectKey,
    pub guard: String,
    pub kind: String,
    pub reason: String,
    pub severity: String,
    pub summary: String,
    pub description: String,
}

enum Msg {
    Fire(Alert),
    /// The object is healthy: resolve its state alerts.
    Resolve(ObjectKey),
    /// Resolve one state alert of an object.
    ResolveOne(ObjectKey, &'static str),
}

/// Handle to the push task; cheap to clone, never blocks.
#[derive(Clone)]
pub struct Alerter {
    tx: mpsc::Sender<Msg>,
}

impl Alerter {
    /// Start the push task. Returns None when no Alertmanager is configured.
    pub fn start(
        urls: Vec<String>,
        runbook_base: String,
        metrics: std::sync::Arc<Metrics>,
    ) -> Option<Alerter> {
        if urls.is_empty() {
            return None;
        }
        let (tx, rx) = mpsc::channel(4096);
        tokio::spawn(push_loop(rx, urls, runbook_base, metrics));
        Some(Alerter { tx })
    }

    pub fn fire(&self, alert: Alert) {
        if self.tx.try_send(Msg::Fire(alert)).is_err() {
            tracing::warn!("alert queue full or closed: alert dropped");
        }
    }

    pub fn resolve(&self, object: ObjectKey) {
        let _ = self.tx.try_send(Msg::Resolve(object));
    }

    pub fn resolve_one(&self, object: ObjectKey, alertname: &'static str) {
        let _ = self.tx.try_send(Msg::ResolveOne(object, alertname));
    }
}

impl Msg {
    /// Whether this resolve message covers the alert with this key.
    fn resolves(&self, (object, alertname): &(ObjectKey, &'static str)) -> bool {
        match self {
            Msg::Resolve(o) => o == object,
            Msg::ResolveOne(o, name) => o == object && name == alertname,
            Msg::Fire(_) => false,
        }
    }
}

struct Active {
    alert: Alert,
    starts_at: Timestamp,
    ends_at: Option<Timestamp>,
}

async fn push_loop(
    mut rx: mpsc::Receiver<Msg>,
    urls: Vec<String>,
    runbook_base: String,
    metrics: std::sync::Arc<Metrics>,
) {
    let client = match reqwest::Client::builder()
        .timeout(Duration::from_secs(5))
        .build()
    {
        Ok(c) => c,
        Err(e) => {
            tracing::error!(error = %e, "cannot build the Alertmanager client; alerts will not be pushed");
            return;
        }
    };
    let mut active: HashMap<(ObjectKey, &'static str), Active> = HashMap::new();
    let mut tick = tokio::time::interval(RESEND);
    loop {
        let batch: Vec<serde_json::Value> = tokio::select! {
            msg = rx.recv() => {
                let Some(msg) = msg else { return };
                let now = Timestamp::now();
                match msg {
                    Msg::Fire(alert) => {
                        let ends_at = alert.event
                            .then(|| now + SignedDuration::try_from(EVENT_WINDOW).unwrap_or(SignedDuration::ZERO));
                        let key = (alert.object.clone(), alert.alertname);
                        if !active.contains_key(&key) && of_guard(&active, &alert) >= MAX_ALERTS_PER_GUARD {
                            metrics.alerts_sent.get_or_create(&Outcome { outcome: "capped".into() }).inc();
                            let capped = capped_alert(&alert);
                            let key = (capped.object.clone(), CAPPED);
                            if active.contains_key(&key) {
                                continue;
                            }
                            let a = active.entry(key).or_insert(Active { alert: capped, starts_at: now, ends_at: None });
                            vec![payload(a, &runbook_base)]
                        } else {
                            let a = active.entry(key).or_insert(Active { alert: alert.clone(), starts_at: now, ends_at });
                            a.alert = alert;
                            a.ends_at = ends_at;
                            vec![payload(a, &runbook_base)]
                        }
                    }
                    Msg::Resolve(_) | Msg::ResolveOne(..) => {
                        let done: Vec<_> = active
                            .iter()
                            .filter(|(k, a)| !a.alert.event && msg.resolves(k))
                            .map(|(k, _)| k.clone())
                            .collect();
                        let mut ended: Vec<Active> =
                            done.into_iter().filter_map(|k| active.remove(&k)).collect();
                        ended.extend(uncap(&mut active));
                        ended
                            .into_iter()
                            .map(|mut a| {
                                a.ends_at = Some(now);
                                payload(&a, &runbook_base)
                            })
                            .collect()
                    }
                }
            }
            _ = tick.tick() => {
                let now = Timestamp::now();
                active.retain(|_, a| a.ends_at.is_none_or(|e| e > now));
                let ended: Vec<_> = uncap(&mut active)
                    .into_iter()
                    .map(|mut a| {
                        a.ends_at = Some(now);
                        payload(&a, &runbook_base)
                    })
                    .collect();
                active.values().map(|a| payload(a, &runbook_base)).chain(ended).collect()
            }
        };
        for chunk in batch.chunks(CHUNK) {
            post(&client, &urls, chunk, &metrics).await;
        }
    }
}

type Key = (ObjectKey, &'static str);

/// Whether an active alert is about one of this guard's objects (the capped alert aside).
fn same_guard((object, name): &Key, a: &Active, namespace: &str, guard: &str) -> bool {
    *name != CAPPED && object.namespace == namespace && a.alert.guard == guard
}

/// Alerts active about the objects of `alert`'s guard.
fn of_guard(active: &HashMap<Key, Active>, alert: &Alert) -> usize {
    let ns = &alert.object.namespace;
    active
        .iter()
        .filter(|(k, a)| same_guard(k, a, ns, &alert.guard))
        .count()
}

/// The alert that stands for a guard's alerts beyond MAX_ALERTS_PER_GUARD.
fn capped_alert(alert: &Alert) -> Alert {
    Alert {
        alertname: CAPPED,
        event: false,
        object: ObjectKey::new(&alert.object.namespace, &alert.guard),
        guard: alert.guard.clone(),
        kind: "SecretGuard".into(),
        reason: "AlertsCapped".into(),
        severity: alert.severity.clone(),
        summary: format!(
            "More than {MAX_ALERTS_PER_GUARD} objects of SecretGuard {}/{} need attention",
            alert.object.namespace, alert.guard
        ),
        description: format!(
            "Further alerts about this guard's objects are not sent one by one. See kubectl -n {} get secretguard {} -o yaml, and the secretguard_object_missing metric.",
            alert.object.namespace, alert.guard
        ),
    }
}

/// Remove the capped alerts of guards back under the cap; returns them, to be resolved.
fn uncap(active: &mut HashMap<Key, Active>) -> Vec<Active> {
    let capped: Vec<Key> = active
        .keys()
        .filter(|(_, name)| *name == CAPPED)
        .cloned()
        .collect();
    let under: Vec<Key> = capped
        .into_iter()
        .filter(|(guard, _)| {
            active
                .iter()
                .filter(|(k, a)| same_guard(k, a, &guard.namespace, &guard.name))
                .count()
                < MAX_ALERTS_PER_GUARD
        })
        .collect();
    under
        .into_iter()
        .filter_map(|k| active.remove(&k))
        .collect()
}

fn payload(a: &Active, runbook_base: &str) -> serde_json::Value {
    let al = &a.alert;
    let labels = BTreeMap::from([
        ("alertname", al.alertname.to_owned()),
        ("namespace", al.object.namespace.clone()),
        ("name", al.object.name.clone()),
        ("guard", al.guard.clone()),
        ("kind", al.kind.clone()),
        ("reason", al.reason.clone()),
        ("severity", al.severity.clone()),
        ("source", "secretguard".to_owned()),
    ]);
    let mut v = json!({
        "labels": labels,
        "annotations": {
            "summary": al.summary,
            "description": al.description,
            "runbook_url": format!("{runbook_base}{}.md", al.alertname),
        },
        "startsAt": a.starts_at.to_string(),
    });
    if let Some(end) = a.ends_at {
        v["endsAt"] = json!(end.to_string());
    }
    v
}

async fn post(
    client: &reqwest::Client,
    urls: &[String],
    batch: &[serde_json::Value],
    metrics: &Metrics,
) {
    for url in urls {
        let endpoint = format!("{}/api/v2/alerts", url.trim_end_matches('/'));
        let mut delay = Duration::from_millis(200);
        let mut outcome = "failed";
        for attempt in 1..=ATTEMPTS {
            match client.post(&endpoint).json(batch).send().await {
                Ok(r) if r.status().is_success() => {
                    outcome = "sent";
                    break;
                }
                Ok(r) => {
                    tracing::warn!(url, status = %r.status(), attempt, "Alertmanager refused alerts")
                }
                Err(e) => tracing::warn!(url, error = %e, attempt, "could not reach Alertmanager"),
            }
            if attempt < ATTEMPTS {
                tokio::time::sleep(delay).await;
                delay *= 2;
            }
        }
        metrics
            .alerts_sent
            .get_or_create(&Outcome {
                outcome: outcome.into(),
            })
            .inc();
    }
}
