//! Rollout controller benchmark for `make bench`: many active canaries against local health
//! endpoints served by this process, then the time from an endpoint starting to fail to the
//! deployment's `rolled_back` event.
//!
//! Usage: aumos-rolloutbench --url http://127.0.0.1:8000 --token <jwt> --tenant <uuid>
//!        --pid <service pid> [--deployments 2000] [--probe-interval 1] [--seconds 30]
//!        [--reactions 100] [--label text]
//!
//! The service must reach an MLflow server: a model is promoted once and deployed into one
//! environment per canary. Every canary steps once an hour, so all stay active while measured.
//! Probes per second, tick latency and lag come from the service's `/metrics`; CPU and memory
//! from `/proc/<pid>`. Prints one JSON object on stdout.

use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{json, Value};

struct Options {
    url: String,
    token: String,
    tenant: String,
    pid: u32,
    deployments: usize,
    probe_interval: f64,
    seconds: u64,
    reactions: usize,
    label: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut o = Options {
        url: "http://127.0.0.1:8000".into(),
        token: String::new(),
        tenant: String::new(),
        pid: 0,
        deployments: 2000,
        probe_interval: 1.0,
        seconds: 30,
        reactions: 100,
        label: String::new(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let bad = |_: std::num::ParseIntError| format!("{flag}: not a whole number");
        match flag.as_str() {
            "--url" => o.url = value.trim_end_matches('/').to_owned(),
            "--token" => o.token = value,
            "--tenant" => o.tenant = value,
            "--pid" => o.pid = value.parse().map_err(bad)?,
            "--deployments" => o.deployments = value.parse().map_err(bad)?,
            "--probe-interval" => {
                o.probe_interval = value.parse().map_err(|_| format!("{flag}: not a number"))?;
            }
            "--seconds" => o.seconds = value.parse().map_err(bad)?,
            "--reactions" => o.reactions = value.parse().map_err(bad)?,
            "--label" => o.label = value,
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if o.token.is_empty() || o.tenant.is_empty() || o.pid == 0 {
        return Err("--token, --tenant and --pid are required".into());
    }
    if o.reactions > o.deployments {
        return Err("--reactions cannot exceed --deployments".into());
    }
    Ok(o)
}

/// One health endpoint per deployment, `/health/{n}`, each answering the status it is set to.
type Endpoints = Arc<Vec<AtomicU16>>;

async fn health(State(endpoints): State<Endpoints>, Path(n): Path<usize>) -> StatusCode {
    let status = endpoints.get(n).map_or(404, |s| s.load(Ordering::Relaxed));
    StatusCode::from_u16(status).unwrap_or(StatusCode::OK)
}

async fn serve_endpoints(count: usize) -> Result<(String, Endpoints), String> {
    let endpoints: Endpoints = Arc::new((0..count).map(|_| AtomicU16::new(200)).collect());
    let router = axum::Router::new()
        .route("/health/{n}", axum::routing::get(health))
        .with_state(endpoints.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .map_err(|e| e.to_string())?;
    let base = format!(
        "http://{}",
        listener.local_addr().map_err(|e| e.to_string())?
    );
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    Ok((base, endpoints))
}

struct Api {
    http: reqwest::Client,
    o: Options,
}

impl Api {
    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        self.http
            .request(method, format!("{}{path}", self.o.url))
            .bearer_auth(&self.o.token)
            .header("X-Tenant-ID", &self.o.tenant)
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<Value, String> {
        let response = request.send().await.map_err(|e| e.to_string())?;
        let status = response.status();
        let text = response.text().await.map_err(|e| e.to_string())?;
        if !status.is_success() {
            return Err(format!("{status}: {text}"));
        }
        serde_json::from_str(&text).map_err(|e| e.to_string())
    }

    async fn post(&self, path: &str, body: Value) -> Result<Value, String> {
        self.send(self.request(reqwest::Method::POST, path).json(&body))
            .await
    }

    async fn get(&self, path: &str) -> Result<Value, String> {
        self.send(self.request(reqwest::Method::GET, path)).await
    }

    /// Promotes a finished run and returns the model id.
    async fn promoted_model(&self) -> Result<String, String> {
        let name = format!("rollout-bench-{}", uuid::Uuid::now_v7());
        let experiment = self
            .post("/api/v1/experiments", json!({"name": name}))
            .await?;
        let experiment = experiment["id"].as_str().unwrap_or_default().to_owned();
        let run = self
            .post(
                &format!("/api/v1/experiments/{experiment}/runs"),
                json!({"status": "FINISHED", "metrics": [{"key": "auc", "value": 0.9}]}),
            )
            .await?;
        let run = run["id"].as_str().unwrap_or_default();
        let promoted = self
            .post(
                &format!("/api/v1/experiments/{experiment}/runs/{run}/promote"),
                json!({"model_name": "rollout-bench"}),
            )
            .await?;
        Ok(promoted["model_id"].as_str().unwrap_or_default().to_owned())
    }

    async fn metrics(&self) -> Result<String, String> {
        let response = self
            .http
            .get(format!("{}/metrics", self.o.url))
            .send()
            .await
            .map_err(|e| e.to_string())?;
        response.text().await.map_err(|e| e.to_string())
    }
}

/// The sum of every sample of `name` (all label sets).
fn sample_sum(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(name)
                .is_some_and(|rest| rest.starts_with(' ') || rest.starts_with('{'))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

/// `(upper bound, cumulative count)` of a histogram's buckets.
fn buckets(text: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    text.lines()
        .filter_map(|l| {
            let rest = l.strip_prefix(&prefix)?;
            let (le, count) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, count.trim().parse().ok()?))
        })
        .collect()
}

/// The `q` quantile, in milliseconds, of what a histogram gained between two scrapes: the
/// upper bound of the bucket it falls in.
fn quantile_ms(before: &[(f64, f64)], after: &[(f64, f64)], q: f64) -> Option<f64> {
    let deltas: Vec<(f64, f64)> = after
        .iter()
        .map(|(le, n)| {
            let was = before
                .iter()
                .find(|(b, _)| b == le)
                .map_or(0.0, |(_, c)| *c);
            (*le, n - was)
        })
        .collect();
    let total = deltas.last()?.1;
    if total <= 0.0 {
        return None;
    }
    let target = total * q;
    deltas
        .iter()
        .find(|(_, cumulative)| *cumulative >= target)
        .map(|(le, _)| le * 1000.0)
}

/// CPU seconds (user + system) the process has used.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may hold spaces.
    let after = stat.rsplit_once(')').map_or("", |(_, rest)| rest);
    let fields: Vec<&str> = after.split_whitespace().collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|i| fields.get(*i)?.parse::<f64>().ok())
        .sum();
    // USER_HZ is 100 on Linux.
    ticks / 100.0
}

/// CPU seconds the whole machine has spent busy (the service, PostgreSQL, this benchmark).
fn machine_busy_seconds() -> f64 {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or_default()
        .split_whitespace()
        .skip(1)
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
    let busy: f64 = fields
        .iter()
        .enumerate()
        .filter(|(i, _)| *i != 3 && *i != 4)
        .take(6)
        .map(|(_, v)| v)
        .sum();
    busy / 100.0
}

fn memory_mib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024)
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let index = ((sorted.len() as f64 - 1.0) * q).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

async fn create_canaries(api: &Api, model: &str, base: &str) -> Result<Vec<String>, String> {
    let interval = api.o.probe_interval;
    let bodies: Vec<Value> = (0..api.o.deployments)
        .map(|n| {
            json!({
                "model_id": model, "model_version": 1, "strategy": "canary",
                "target_environment": format!("bench-{n}"),
                "traffic_split": {"stable": 90, "canary": 10},
                "health_check_url": format!("{base}/health/{n}"),
                "analysis": {
                    "step_interval_seconds": 3600, "probe_interval_seconds": interval,
                    "window_seconds": interval * 10.0, "min_samples": 5,
                    "error_threshold": 0.05, "progress_deadline_seconds": 7200
                }
            })
        })
        .collect();
    let created: Vec<Result<Value, String>> = futures::stream::iter(bodies)
        .map(|body| api.post("/api/v1/deployments", body))
        .buffered(32)
        .collect()
        .await;
    created
        .into_iter()
        .map(|r| r.map(|d| d["id"].as_str().unwrap_or_default().to_owned()))
        .collect()
}

/// Waits until no deployment is pending any more.
async fn wait_started(api: &Api) -> Result<(), String> {
    let started = Instant::now();
    loop {
        let page = api
            .get("/api/v1/deployments?status=pending&limit=1")
            .await?;
        if page["items"].as_array().is_some_and(Vec::is_empty) {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(300) {
            return Err("deployments stayed pending for 5 minutes".into());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// Times of the `rolled_back` events since `since`, by deployment id.
async fn rollbacks(
    api: &Api,
    since: DateTime<Utc>,
) -> Result<Vec<(String, DateTime<Utc>)>, String> {
    let mut found = Vec::new();
    let mut token = String::new();
    loop {
        let since = since.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let mut path = format!(
            "/api/v1/events?aggregate_type=deployment\
             &type=com.aumos.mlops.deployment.rolled_back.v1&since={}&limit=1000",
            since.replace('+', "%2B")
        );
        if !token.is_empty() {
            path.push_str(&format!("&page_token={token}"));
        }
        let page = api.get(&path).await?;
        for event in page["items"].as_array().into_iter().flatten() {
            let id = event["data"]["deployment_id"]
                .as_str()
                .unwrap_or_default()
                .to_owned();
            let at = event["time"]
                .as_str()
                .and_then(|t| DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&Utc));
            if let Some(at) = at {
                found.push((id, at));
            }
        }
        match page["next_page_token"].as_str() {
            Some(next) => token = next.to_owned(),
            None => return Ok(found),
        }
    }
}

async fn bench(o: Options) -> Result<Value, String> {
    let (base, endpoints) = serve_endpoints(o.deployments).await?;
    let api = Api {
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .build()
            .map_err(|e| e.to_string())?,
        o,
    };
    let model = api.promoted_model().await?;
    let ids = create_canaries(&api, &model, &base).await?;
    wait_started(&api).await?;
    // Let every deployment settle into its probe rhythm before measuring.
    tokio::time::sleep(Duration::from_secs_f64(api.o.probe_interval * 3.0)).await;

    let (ticks, probes, tick_hist, lag_hist) = (
        "aumos_controller_ticks_total",
        "aumos_controller_probes_total",
        "aumos_controller_tick_duration_seconds",
        "aumos_controller_tick_lag_seconds",
    );
    let before = api.metrics().await?;
    let cpu_before = cpu_seconds(api.o.pid);
    let machine_before = machine_busy_seconds();
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(api.o.seconds)).await;
    let after = api.metrics().await?;
    let elapsed = started.elapsed().as_secs_f64();
    let cpu = (cpu_seconds(api.o.pid) - cpu_before) / elapsed;
    let machine_cpu = (machine_busy_seconds() - machine_before) / elapsed;
    let rss = memory_mib(api.o.pid, "VmRSS:");
    let per_second = |name: &str| (sample_sum(&after, name) - sample_sum(&before, name)) / elapsed;
    let tick = |q| quantile_ms(&buckets(&before, tick_hist), &buckets(&after, tick_hist), q);
    let lag = |q| quantile_ms(&buckets(&before, lag_hist), &buckets(&after, lag_hist), q);

    // Reaction: fail one endpoint every 20 ms and time each to its rolled_back event.
    let since = Utc::now();
    let mut failed_at = Vec::new();
    for n in 0..api.o.reactions {
        failed_at.push((ids[n].clone(), Utc::now()));
        endpoints[n].store(500, Ordering::Relaxed);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let waiting = Instant::now();
    let events = loop {
        let events = rollbacks(&api, since).await?;
        if events.len() >= api.o.reactions || waiting.elapsed() > Duration::from_secs(120) {
            break events;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let mut reactions: Vec<f64> = failed_at
        .iter()
        .filter_map(|(id, at)| {
            let (_, rolled) = events.iter().find(|(e, _)| e == id)?;
            Some((*rolled - *at).num_microseconds()? as f64 / 1000.0)
        })
        .collect();
    reactions.sort_by(f64::total_cmp);

    Ok(json!({
        "label": api.o.label,
        "deployments": api.o.deployments,
        "probe_interval_seconds": api.o.probe_interval,
        "seconds": elapsed,
        "ticks_per_second": per_second(ticks),
        "probes_per_second": per_second(probes),
        "tick_p50_ms": tick(0.5), "tick_p99_ms": tick(0.99),
        "tick_lag_p50_ms": lag(0.5), "tick_lag_p99_ms": lag(0.99),
        "cpu_cores": cpu,
        "machine_cpu_cores": machine_cpu,
        "rss_mib": rss,
        "peak_rss_mib": memory_mib(api.o.pid, "VmHWM:"),
        "reactions": reactions.len(),
        "reaction_p50_ms": percentile(&reactions, 0.5),
        "reaction_p99_ms": percentile(&reactions, 0.99),
        "reaction_max_ms": reactions.last().copied().unwrap_or(f64::NAN),
    }))
}

#[tokio::main]
async fn main() {
    let outcome = match options() {
        Ok(o) => bench(o).await,
        Err(e) => Err(e),
    };
    match outcome {
        Ok(report) => println!("{report}"),
        Err(error) => {
            eprintln!("aumos-rolloutbench: {error}");
            std::process::exit(1);
        }
    }
}
