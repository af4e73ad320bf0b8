//! `make bench`: restore latency, memory, startup and alert latency of the release operator
//! binary on the local control plane, against the targets of docs/architecture.md (Targets).
//! Writes bench/results.json, from which bench/report.py writes BENCHMARKS.md. Not part of
//! `make test`. The operator's logs are in target/test-logs/e2e/.
//!
//! Knobs (environment): BENCH_SCALES (default "100,1000,10000"), BENCH_DELETIONS (1000),
//! BENCH_UNGUARDED (50000), BENCH_ALERTS (100), BENCH_KINDS ("secret,token"),
//! BENCH_LAYOUTS ("one-guard,many-guards"), BENCH_NOISE (300: labelled Secrets of each noise
//! row), BENCH_PARTS ("restore,memory": "memory" alone populates only the largest
//! many-guards namespace of Secrets and measures memory, startup and the noise rows),
//! BENCH_DELAYED_DELETIONS (20: deletions of generic Secrets measured at the default
//! restore delay, after the rows at no delay; 0 skips them).
//!
//! The targets are restore latencies with no restore delay: guards of generic Secrets
//! here set `restoreDelaySeconds: 0` (token Secrets have none by default). The rows at the
//! default delay (2 s) show what a deletion costs as shipped: the delay plus a restore.
//!
//! Restore latency is measured from just before the DELETE is sent to the moment this
//! driver's own watch delivers the re-created Secret, verified to hold the same bytes. The
//! floor, in the same run, is one CREATE plus the delivery of its watch event to this
//! same bare client.

#[path = "../tests/support/mod.rs"]
mod support;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, ServiceAccount};
use kube::Client;
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use secretguard::api::v1alpha1::{DEFAULT_SECRET_RESTORE_DELAY_SECONDS, SecretGuard};
use serde_json::json;
use support::*;
use tokio::sync::mpsc;

/// How long the operator may take to become ready, at the largest scale.
const READY_DEADLINE: Duration = Duration::from_secs(600);

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|s| s.trim().parse().ok())
        .collect()
}

fn env_words(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .collect()
}

fn env_num(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// The release operator (make bench builds it), pushing to `alertmanager`, logging to
/// target/test-logs/e2e/operator-<name>.log.
fn start_operator(alertmanager: &str, name: &str) -> OperatorProcess {
    let bin = std::env::var("SECRETGUARD_BENCH_BIN")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|_| repo_root().join("target/release/secretguard"));
    OperatorProcess::builder(name)
        .binary(bin)
        .alertmanager(alertmanager)
        .rust_log("info")
        // Each object is deleted many times within minutes here, on purpose: the restore-loop
        // breaker (5 in 10 minutes by default) would rightly stop restoring it.
        .args([
            "--restore-point-retention=1s",
            "--restore-loop-limit=100000",
        ])
        .start()
}

/// Peak RSS (MiB) and CPU seconds of a process, from /proc.
fn usage(pid: u32) -> (f64, f64) {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm_kb: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    (hwm_kb / 1024.0, cpu_seconds(pid))
}

/// CPU time (user + system, seconds) a process has used so far, from /proc.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    (tick(11) + tick(12)) / 100.0
}

/// The profile of a phase: CPU used by each process of the benchmark and the requests the
/// apiserver served, by verb and resource. Taken before and after a phase and subtracted.
#[derive(Default)]
struct Usage {
    cpu_s: BTreeMap<String, f64>,
    requests: BTreeMap<String, f64>,
}

impl Usage {
    async fn take(client: &Client, operator_pid: u32) -> Usage {
        let dir = cluster_dir();
        let mut cpu_s = BTreeMap::new();
        for c in ["etcd", "kube-apiserver", "kube-controller-manager"] {
            if let Some(pid) = std::fs::read_to_string(dir.join(format!("{c}.pid")))
                .ok()
                .and_then(|p| p.trim().parse().ok())
            {
                cpu_s.insert(c.to_owned(), cpu_seconds(pid));
            }
        }
        cpu_s.insert("secretguard".into(), cpu_seconds(operator_pid));
        cpu_s.insert("bench driver".into(), cpu_seconds(std::process::id()));
        let mut requests = BTreeMap::new();
        let req = http::Request::get("/metrics")
            .body(vec![])
            .expect("request");
        let text = client.request_text(req).await.unwrap_or_default();
        for line in text.lines() {
            let Some(rest) = line.strip_prefix("apiserver_request_total{") else {
                continue;
            };
            let Some((labels, value)) = rest.rsplit_once("} ") else {
                continue;
            };
            let label = |name: &str| {
                labels
                    .split(',')
                    .find_map(|kv| kv.strip_prefix(&format!("{name}=\"")))
                    .map(|v| v.trim_end_matches('"').to_owned())
                    .unwrap_or_default()
            };
            let (verb, resource, sub) = (label("verb"), label("resource"), label("subresource"));
            if verb == "WATCH" || resource.is_empty() {
                continue;
            }
            let key = if sub.is_empty() {
                format!("{verb} {resource}")
            } else {
                format!("{verb} {resource}/{sub}")
            };
            *requests.entry(key).or_insert(0.0) += value.trim().parse::<f64>().unwrap_or(0.0);
        }
        Usage { cpu_s, requests }
    }

    /// What was used since `before`, per unit of work (`per`), rounded; zeros left out.
    fn since(&self, before: &Usage, per: usize) -> serde_json::Value {
        let diff = |now: &BTreeMap<String, f64>, then: &BTreeMap<String, f64>, scale: f64| {
            now.iter()
                .filter_map(|(k, v)| {
                    let d = (v - then.get(k).copied().unwrap_or(0.0)) * scale / per as f64;
                    (d > 0.005).then(|| (k.clone(), json!((d * 100.0).round() / 100.0)))
                })
                .collect::<serde_json::Map<_, _>>()
        };
        json!({
            "cpu_ms": diff(&self.cpu_s, &before.cpu_s, 1000.0),
            "requests": diff(&self.requests, &before.requests, 1.0),
        })
    }
}

/// A watch of one namespace's Secrets: (name, uid, data, when seen).
type Seen = (String, String, BTreeMap<String, ByteString>, Instant);

fn watch_namespace(client: &Client, ns: &str) -> mpsc::UnboundedReceiver<Seen> {
    let (tx, rx) = mpsc::unbounded_channel();
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    tokio::spawn(async move {
        let stream = watcher(api, watcher::Config::default());
        futures::pin_mut!(stream);
        while let Some(ev) = stream.next().await {
            if let Ok(watcher::Event::Apply(s)) = ev {
                let seen = (
                    s.metadata.name.clone().unwrap_or_default(),
                    s.metadata.uid.clone().unwrap_or_default(),
                    s.data.clone().unwrap_or_default(),
                    Instant::now(),
                );
                if tx.send(seen).is_err() {
                    return;
                }
            }
        }
    });
    rx
}

async fn next_of(rx: &mut mpsc::UnboundedReceiver<Seen>, name: &str, not_uid: &str) -> Seen {
    loop {
        let seen = tokio::time::timeout(Duration::from_secs(60), rx.recv())
            .await
            .expect("a watch event within 60 s")
            .expect("watch open");
        if seen.0 == name && seen.1 != not_uid {
            return seen;
        }
    }
}

fn secret(name: &str, labels: &[(&str, &str)], bytes: usize, seed: usize) -> Secret {
    let data: Vec<u8> = (0..bytes)
        .map(|i| ((i * 31 + seed * 7) % 251) as u8)
        .collect();
    Secret {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                labels
                    .iter()
                    .map(|(k, v)| ((*k).into(), (*v).into()))
                    .collect(),
            ),
            ..Default::default()
        },
        data: Some([("value".to_owned(), ByteString(data))].into()),
        ..Default::default()
    }
}

async fn create_all<T, F, Fut>(items: Vec<T>, concurrency: usize, f: F)
where
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    futures::stream::iter(items.into_iter().map(f))
        .buffer_unordered(concurrency)
        .collect::<Vec<()>>()
        .await;
}

async fn restore_points_of(client: &Client, ns: &str) -> usize {
    Api::<Secret>::namespaced(client.clone(), OPERATOR_NAMESPACE)
        .list_metadata(
            &ListParams::default().labels(&format!("secretguard.dev/origin-namespace={ns}")),
        )
        .await
        .map(|l| l.items.len())
        .unwrap_or(0)
}

/// Populate `n` guarded objects of `kind` in `ns` with `layout`; returns their names.
async fn populate(client: &Client, ns: &str, kind: &str, n: usize, layout: &str) -> Vec<String> {
    let names: Vec<String> = (0..n).map(|i| format!("obj-{i:05}")).collect();
    let per_guard = if layout == "one-guard" { n } else { 100.min(n) };
    if kind == "secret" {
        let api: Api<Secret> = Api::namespaced(client.clone(), ns);
        create_all(names.clone(), 32, |name| {
            let api = api.clone();
            async move {
                api.create(
                    &PostParams::default(),
                    &secret(&name, &[("bench", "yes")], 1024, name.len()),
                )
                .await
                .expect("create Secret");
            }
        })
        .await;
        // The targets are measured with no restore delay (see the top of this file).
        if layout == "one-guard" {
            create_guard(
                client,
                ns,
                "all",
                json!({"secretSelector": {"matchLabels": {"bench": "yes"}}, "restoreDelaySeconds": 0}),
            )
            .await;
        } else {
            for (g, chunk) in names.chunks(per_guard).enumerate() {
                let list: Vec<_> = chunk.iter().map(|n| json!({"name": n})).collect();
                create_guard(
                    client,
                    ns,
                    &format!("g{g:03}"),
                    json!({"secrets": list, "restoreDelaySeconds": 0}),
                )
                .await;
            }
        }
    } else {
        let api: Api<ServiceAccount> = Api::namespaced(client.clone(), ns);
        create_all(names.clone(), 32, |name| {
            let api = api.clone();
            async move {
                let sa = ServiceAccount {
                    metadata: ObjectMeta {
                        name: Some(name),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                api.create(&PostParams::default(), &sa)
                    .await
                    .expect("create SA");
            }
        })
        .await;
        for (g, chunk) in names.chunks(per_guard.min(256)).enumerate() {
            let list: Vec<_> = chunk.iter().map(|n| json!({"name": n})).collect();
            create_guard(
                client,
                ns,
                &format!("g{g:03}"),
                json!({"serviceAccounts": list}),
            )
            .await;
        }
    }
    let start = Instant::now();
    while restore_points_of(client, ns).await < n {
        assert!(
            start.elapsed() < Duration::from_secs(1200),
            "population of {n} never fully saved"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    if kind == "token" {
        names.iter().map(|n| format!("{n}-token")).collect()
    } else {
        names
    }
}

/// Drop `restoreDelaySeconds` from every guard in `ns`, so the default restore delay
/// applies, and wait until the operator has taken each new spec in (its status says it
/// observed that generation).
async fn default_restore_delay(client: &Client, ns: &str) {
    let api: Api<SecretGuard> = Api::namespaced(client.clone(), ns);
    let guards = api.list(&ListParams::default()).await.expect("list guards");
    let patch = json!({"spec": {"restoreDelaySeconds": null}});
    for g in guards.items {
        let name = g.metadata.name.clone().unwrap_or_default();
        let patched = api
            .patch(&name, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .expect("patch guard");
        let generation = patched.metadata.generation;
        wait_guard_status(
            client,
            ns,
            &name,
            "the default restore delay in force",
            |s| s.observed_generation == generation,
        )
        .await;
    }
}

/// Starts one operation every `every` at most; with None, never waits.
struct Pacer {
    every: Option<Duration>,
    next: Instant,
}

impl Pacer {
    fn new(every: Option<Duration>) -> Pacer {
        Pacer {
            every,
            next: Instant::now(),
        }
    }

    async fn wait(&mut self) {
        if let Some(every) = self.every {
            tokio::time::sleep_until(self.next.into()).await;
            self.next = Instant::now() + every;
        }
    }
}

/// The floor: `n` creates, each measured until this driver's watch delivers it. `pace` as
/// for `restores`, so each load is compared with a floor taken under the same pacing.
async fn floor(
    client: &Client,
    ns: &str,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    n: usize,
    pace: Option<Duration>,
) -> Vec<f64> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::with_capacity(n);
    let tag = if pace.is_some() { "paced" } else { "b2b" };
    let mut pacer = Pacer::new(pace);
    for i in 0..n {
        let name = format!("floor-{tag}-{i:05}");
        pacer.wait().await;
        let t0 = Instant::now();
        api.create(&PostParams::default(), &secret(&name, &[], 1024, i))
            .await
            .expect("create");
        let seen = next_of(rx, &name, "").await;
        out.push((seen.3 - t0).as_secs_f64() * 1000.0);
    }
    out
}

/// `n` deletions of guarded objects, each measured until the restored object, with the same
/// bytes, is delivered to this driver's watch. `pace`: None deletes back to back (the next
/// deletion 2 ms after the previous restore is seen, so the operator's follow-up writes of
/// one restore overlap the next); Some(p) starts one deletion every p at most, an offered
/// load of 1/p deletions a second.
async fn restores(
    client: &Client,
    ns: &str,
    rx: &mut mpsc::UnboundedReceiver<Seen>,
    targets: &[String],
    n: usize,
    pace: Option<Duration>,
) -> Vec<f64> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::with_capacity(n);
    let mut pacer = Pacer::new(pace);
    for i in 0..n {
        let name = &targets[(i * 7919) % targets.len()];
        let before = api.get(name).await.expect("get");
        let uid = before.metadata.uid.clone().unwrap_or_default();
        pacer.wait().await;
        let t0 = Instant::now();
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        let seen = next_of(rx, name, &uid).await;
        assert!(
            seen.2 == before.data.clone().unwrap_or_default(),
            "{name}: restored bytes differ"
        );
        out.push((seen.3 - t0).as_secs_f64() * 1000.0);
        if pace.is_none() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    out
}

async fn alert_latency(client: &Client, am: &str, ns: &str, targets: &[String]) -> Vec<f64> {
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    let mut out = Vec::new();
    for name in targets {
        let url =
            format!("{am}/api/v2/alerts?filter=name%3D%22{name}%22&filter=namespace%3D%22{ns}%22");
        let t0 = Instant::now();
        api.delete(name, &DeleteParams::default())
            .await
            .expect("delete");
        loop {
            let body = reqwest::get(&url)
                .await
                .expect("AM")
                .text()
                .await
                .unwrap_or_default();
            if body.contains("SecretGuardTokenDeleted") {
                out.push(t0.elapsed().as_secs_f64() * 1000.0);
                break;
            }
            assert!(
                t0.elapsed() < Duration::from_secs(60),
                "alert for {name} never arrived"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    out
}

fn mib(v: f64) -> f64 {
    (v * 10.0).round() / 10.0
}

/// A Secret of a tenant who labels it secretguard.dev/guarded in a namespace without a
/// guard: 900 KiB of data.
fn big_data(i: usize) -> Secret {
    secret(
        &format!("noise-{i:04}"),
        &[("secretguard.dev/guarded", "true")],
        900 * 1024,
        i,
    )
}

/// The same with 200 KiB of annotations (which a metadata-only watch would still carry).
fn big_annotations(i: usize) -> Secret {
    let mut s = secret(
        &format!("noise-{i:04}"),
        &[("secretguard.dev/guarded", "true")],
        16,
        i,
    );
    s.metadata.annotations = Some(
        (0..4)
            .map(|k| (format!("noise.example/{k}"), "a".repeat(50 * 1024)))
            .collect(),
    );
    s
}

/// What `n` Secrets made by `make`, labelled secretguard.dev/guarded in a namespace no
/// guard covers, add to the peak RSS (MiB) of an operator started without them (its peak
/// once ready is the baseline):
/// - while it runs: created one after the other, each a watch event of its own;
/// - across a restart: labelled again while it is down, so its first list holds them all.
///
/// The leader takes each stray label off; the row waits for that (it has seen them all).
/// Returns the operator (the last one started) and the row.
async fn noise_row(
    client: &Client,
    am: &str,
    op: OperatorProcess,
    what: &str,
    n: usize,
    make: fn(usize) -> Secret,
) -> (OperatorProcess, serde_json::Value) {
    let ns = "bench-noise";
    delete_namespace(client, ns).await;
    let _ = kubectl(&["create", "namespace", ns]);
    drop(op);
    let op = start_operator(am, "noise-running");
    op.wait_ready_within(READY_DEADLINE);
    let (base, _) = usage(op.pid());
    let api: Api<Secret> = Api::namespaced(client.clone(), ns);
    create_all((0..n).collect(), 8, |i| {
        let api = api.clone();
        async move {
            api.create(&PostParams::default(), &make(i))
                .await
                .expect("create a labelled Secret");
        }
    })
    .await;
    let labelled = || async {
        api.list_metadata(&ListParams::default().labels("secretguard.dev/guarded=true"))
            .await
            .map(|l| l.items.len())
            .unwrap_or(usize::MAX)
    };
    let unlabelled = || async {
        let start = Instant::now();
        while labelled().await > 0 {
            assert!(start.elapsed() < READY_DEADLINE, "labels never taken off");
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    };
    unlabelled().await;
    let (running, _) = usage(op.pid());
    drop(op);
    let _ = kubectl(&[
        "label",
        "secrets",
        "--all",
        "-n",
        ns,
        "secretguard.dev/guarded=true",
        "--overwrite",
    ]);
    let op = start_operator(am, "noise-restart");
    op.wait_ready_within(READY_DEADLINE);
    let (restart, _) = usage(op.pid());
    unlabelled().await;
    eprintln!(
        "bench: {n} labelled Secrets with {what}, no guard: +{:.1} MiB while running, +{:.1} MiB across a restart (baseline {base:.1} MiB)",
        running - base,
        restart - base
    );
    delete_namespace(client, ns).await;
    let row = json!({"secrets": n, "each": what, "baseline_mib": mib(base), "running_add_mib": mib(running - base), "restart_add_mib": mib(restart - base)});
    (op, row)
}

fn pct(v: &[f64], p: f64) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(|a, b| a.total_cmp(b));
    if s.is_empty() {
        return f64::NAN;
    }
    let idx = ((p / 100.0) * (s.len() - 1) as f64).round() as usize;
    (s[idx] * 100.0).round() / 100.0
}

async fn delete_namespace(client: &Client, ns: &str) {
    let api: Api<k8s_openapi::api::core::v1::Namespace> = Api::all(client.clone());
    let _ = api.delete(ns, &DeleteParams::default()).await;
    let start = Instant::now();
    while api.get_opt(ns).await.ok().flatten().is_some() || restore_points_of(client, ns).await > 0
    {
        if start.elapsed() > Duration::from_secs(900) {
            eprintln!("bench: namespace {ns} still terminating; going on");
            return;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(run());
}

async fn run() {
    let scales = env_list("BENCH_SCALES", "100,1000,10000");
    let deletions = env_num("BENCH_DELETIONS", 1000);
    let unguarded = env_num("BENCH_UNGUARDED", 50_000);
    let alerts = env_num("BENCH_ALERTS", 100);
    let kinds = env_words("BENCH_KINDS", "secret,token");
    let layouts = env_words("BENCH_LAYOUTS", "one-guard,many-guards");
    std::fs::create_dir_all(repo_root().join("bench")).expect("bench dir");
    let client = admin_client().await;
    prepare_operator();
    // A clean slate: restore points left by tests or an interrupted run would be cached by
    // the operator too, and counted in its memory.
    let _ = kubectl(&[
        "delete",
        "secrets",
        "-n",
        OPERATOR_NAMESPACE,
        "-l",
        "secretguard.dev/restore-point=true",
    ]);
    let k8s = client
        .apiserver_version()
        .await
        .expect("version")
        .git_version;
    let am = start_alertmanager();
    let mut op = start_operator(&am, "main");
    op.wait_ready_within(READY_DEADLINE);

    let parts = env_words("BENCH_PARTS", "restore,memory");
    let measure_restores = parts.iter().any(|p| p == "restore");
    let measure_memory = parts.iter().any(|p| p == "memory");
    let noise = env_num("BENCH_NOISE", 300);
    let delayed_deletions = env_num("BENCH_DELAYED_DELETIONS", 20);
    let mut restore_rows = Vec::new();
    let mut alert_ms = Vec::new();
    let mut memory = json!(null);
    let mut startup = json!(null);
    let max_scale = scales.iter().copied().max().unwrap_or(0);
    for &n in &scales {
        for kind in kinds.iter().map(String::as_str) {
            for layout in layouts.iter().map(String::as_str) {
                if kind == "token" && layout == "one-guard" && n > 256 {
                    continue; // a guard lists at most 256 ServiceAccounts
                }
                let memory_here =
                    measure_memory && n == max_scale && kind == "secret" && layout == "many-guards";
                if !measure_restores && !memory_here {
                    continue;
                }
                let ns = format!("bench-{kind}-{layout}-{n}");
                // A previous, interrupted run may have left it behind.
                delete_namespace(&client, &ns).await;
                let _ = kubectl(&["create", "namespace", &ns]);
                let t = Instant::now();
                let mut targets = populate(&client, &ns, kind, n, layout).await;
                eprintln!(
                    "bench: {ns}: {n} guarded in {:.1} s",
                    t.elapsed().as_secs_f64()
                );
                let mut rx = watch_namespace(&client, &ns);
                tokio::time::sleep(Duration::from_millis(500)).await; // let the watch establish
                if kind == "token"
                    && layout == "many-guards"
                    && alert_ms.is_empty()
                    && targets.len() > alerts * 2
                {
                    // A guard pushes at most MAX_ALERTS_PER_GUARD alerts (then one that says
                    // so): a few deletions from each guard of 100, up to `alerts` in all.
                    let per_guard = secretguard::alerts::MAX_ALERTS_PER_GUARD / 4;
                    let (reserved, rest): (Vec<_>, Vec<_>) = std::mem::take(&mut targets)
                        .into_iter()
                        .enumerate()
                        .partition(|(i, _)| i % 100 < per_guard && i / 100 * per_guard < alerts);
                    targets = rest.into_iter().map(|(_, t)| t).collect();
                    let reserved: Vec<String> = reserved.into_iter().map(|(_, t)| t).collect();
                    alert_ms = alert_latency(&client, &am, &ns, &reserved).await;
                }
                let loads: &[(&str, Option<Duration>)] = if measure_restores {
                    &[
                        ("back-to-back", None),
                        ("20/s", Some(Duration::from_millis(50))),
                    ]
                } else {
                    &[]
                };
                let mut back_to_back_floor = Vec::new();
                for &(load, pace) in loads {
                    let fl = floor(&client, &ns, &mut rx, 200.min(deletions), pace).await;
                    if pace.is_none() {
                        back_to_back_floor = fl.clone();
                    }
                    let before = Usage::take(&client, op.pid()).await;
                    let lat = restores(&client, &ns, &mut rx, &targets, deletions, pace).await;
                    // Let the follow-up writes of the last restores (status, restore points) land.
                    tokio::time::sleep(Duration::from_secs(2)).await;
                    let profile = Usage::take(&client, op.pid())
                        .await
                        .since(&before, lat.len());
                    eprintln!(
                        "bench: {ns} ({load}): restore p50 {} p99 {} ms; floor p50 {} ms",
                        pct(&lat, 50.0),
                        pct(&lat, 99.0),
                        pct(&fl, 50.0)
                    );
                    restore_rows.push(json!({
                        "kind": kind, "guarded": n, "layout": layout, "load": load, "n": lat.len(),
                        "restore_delay_s": 0,
                        "p50_ms": pct(&lat, 50.0), "p90_ms": pct(&lat, 90.0), "p99_ms": pct(&lat, 99.0), "max_ms": pct(&lat, 100.0),
                        "floor_p50_ms": pct(&fl, 50.0), "floor_p99_ms": pct(&fl, 99.0),
                        "per_restore": profile,
                    }));
                }
                if measure_restores && kind == "secret" && delayed_deletions > 0 {
                    // As shipped: the default restore delay, then the restore. Back to
                    // back (each deletion waits for the previous restore), so few of them.
                    default_restore_delay(&client, &ns).await;
                    let fl = &back_to_back_floor;
                    let lat =
                        restores(&client, &ns, &mut rx, &targets, delayed_deletions, None).await;
                    eprintln!(
                        "bench: {ns} (default restore delay): restore p50 {} p99 {} ms",
                        pct(&lat, 50.0),
                        pct(&lat, 99.0)
                    );
                    restore_rows.push(json!({
                        "kind": kind, "guarded": n, "layout": layout, "load": "back-to-back", "n": lat.len(),
                        "restore_delay_s": DEFAULT_SECRET_RESTORE_DELAY_SECONDS,
                        "p50_ms": pct(&lat, 50.0), "p90_ms": pct(&lat, 90.0), "p99_ms": pct(&lat, 99.0), "max_ms": pct(&lat, 100.0),
                        "floor_p50_ms": pct(fl, 50.0), "floor_p99_ms": pct(fl, 99.0),
                    }));
                }
                if memory_here {
                    // Memory and startup at the largest scale, with unguarded Secrets around.
                    let un = "bench-unguarded";
                    delete_namespace(&client, un).await;
                    let _ = kubectl(&["create", "namespace", un]);
                    let api: Api<Secret> = Api::namespaced(client.clone(), un);
                    create_all((0..unguarded).collect(), 32, |i| {
                        let api = api.clone();
                        async move {
                            // 1 in 20 is the size of a Helm release Secret.
                            let bytes = if i % 20 == 0 {
                                100 * 1024
                            } else {
                                1024 + (i % 3) * 1024
                            };
                            api.create(
                                &PostParams::default(),
                                &secret(&format!("u-{i:06}"), &[("app", "other")], bytes, i),
                            )
                            .await
                            .expect("create unguarded");
                        }
                    })
                    .await;
                    drop(op);
                    op = start_operator(&am, "startup");
                    let ready = op.wait_ready_within(READY_DEADLINE);
                    let more =
                        restores(&client, &ns, &mut rx, &targets, 200.min(deletions), None).await;
                    let (rss, cpu) = usage(op.pid());
                    eprintln!(
                        "bench: startup {:.2} s; peak RSS {rss:.1} MiB; CPU {cpu:.1} s; {} more restores",
                        ready.as_secs_f64(),
                        more.len()
                    );
                    startup = json!({"guarded": n, "ready_s": (ready.as_secs_f64() * 100.0).round() / 100.0});
                    let mut noise_rows = Vec::new();
                    for (what, make) in [
                        ("900 KiB of data", big_data as fn(usize) -> Secret),
                        ("200 KiB of annotations", big_annotations),
                    ] {
                        let row;
                        (op, row) = noise_row(&client, &am, op, what, noise, make).await;
                        noise_rows.push(row);
                    }
                    memory = json!({"guarded": n, "unguarded": unguarded, "rss_peak_mib": mib(rss), "cpu_s": (cpu * 10.0).round() / 10.0, "noise": noise_rows});
                    delete_namespace(&client, un).await;
                }
                delete_namespace(&client, &ns).await;
            }
        }
    }
    let results = json!({
        "k8s": k8s,
        "date": k8s_openapi::jiff::Timestamp::now().to_string(),
        "restore": restore_rows,
        "memory": memory,
        "startup": startup,
        "alert": {"n": alert_ms.len(), "p50_ms": pct(&alert_ms, 50.0), "p99_ms": pct(&alert_ms, 99.0)},
    });
    let path = repo_root().join("bench/results.json");
    std::fs::write(
        &path,
        serde_json::to_string_pretty(&results).expect("json") + "\n",
    )
    .expect("write results");
    eprintln!("bench: wrote {}", path.display());
}
