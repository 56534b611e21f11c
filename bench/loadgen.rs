//! Load generator for `make bench`: logs complete runs (10 metrics, 5 params, 3 tags each) into
//! one new experiment at a fixed concurrency and reports throughput and latency.
//!
//! Usage: aumos-loadgen --url http://127.0.0.1:8000 [--token <jwt> --tenant <uuid>]
//!        [--target service|mlflow] [--concurrency 32] [--seconds 20 | --count N]
//!        [--warmup-seconds 2] [--label text]
//!
//! `--target service` (the default) posts each run to the service in one request;
//! `--target mlflow` logs the same run straight into an MLflow server with `runs/create` and
//! `runs/log-batch`. With `--count` exactly that many runs are logged, without warm-up.
//! Prints one JSON object on stdout, with the id of the experiment it logged into.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

#[derive(Clone, Copy, PartialEq, Eq)]
enum Target {
    Service,
    Mlflow,
}

#[derive(Clone)]
struct Options {
    url: String,
    token: String,
    tenant: String,
    target: Target,
    concurrency: usize,
    seconds: u64,
    count: Option<u64>,
    warmup_seconds: u64,
    label: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        url: "http://127.0.0.1:8000".into(),
        token: String::new(),
        tenant: String::new(),
        target: Target::Service,
        concurrency: 32,
        seconds: 20,
        count: None,
        warmup_seconds: 2,
        label: String::new(),
    };
    while let Some(flag) = args.next() {
        let value = args.next().ok_or_else(|| format!("{flag} needs a value"))?;
        let number = || {
            value
                .parse::<u64>()
                .map_err(|_| format!("{flag}: not a number"))
        };
        match flag.as_str() {
            "--url" => options.url = value.trim_end_matches('/').to_owned(),
            "--token" => options.token = value.clone(),
            "--tenant" => options.tenant = value.clone(),
            "--target" => {
                options.target = match value.as_str() {
                    "service" => Target::Service,
                    "mlflow" => Target::Mlflow,
                    _ => return Err("--target is service or mlflow".into()),
                }
            }
            "--concurrency" => options.concurrency = usize::try_from(number()?).unwrap_or(1),
            "--seconds" => options.seconds = number()?,
            "--count" => options.count = Some(number()?),
            "--warmup-seconds" => options.warmup_seconds = number()?,
            "--label" => options.label = value.clone(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.target == Target::Service && (options.token.is_empty() || options.tenant.is_empty())
    {
        return Err("--token and --tenant are required for the service".into());
    }
    Ok(options)
}

/// The run every request logs: 10 metrics, 5 params, 3 tags.
struct RunData {
    name: String,
    metrics: Vec<(String, f64)>,
    params: Vec<(&'static str, String)>,
    tags: Vec<(&'static str, String)>,
}

fn run_data(worker: usize, n: u64) -> RunData {
    RunData {
        name: format!("bench-{worker}-{n}"),
        metrics: (0..10)
            .map(|m| (format!("metric_{m}"), (n as f64) / 1000.0 + f64::from(m)))
            .collect(),
        params: vec![
            ("model", "xgboost".into()),
            ("max_depth", "6".into()),
            ("eta", "0.1".into()),
            ("subsample", "0.8".into()),
            ("seed", n.to_string()),
        ],
        tags: vec![
            ("team", "bench".into()),
            ("dataset", "synthetic".into()),
            ("worker", worker.to_string()),
        ],
    }
}

/// Where runs go, and how one is logged there.
struct Sink {
    client: reqwest::Client,
    options: Options,
    experiment: String,
}

impl Sink {
    async fn open(options: &Options) -> Result<Self, String> {
        let client = reqwest::Client::builder()
            .pool_max_idle_per_host(options.concurrency)
            .build()
            .map_err(|e| e.to_string())?;
        let name = format!("bench-{}", uuid::Uuid::now_v7());
        let experiment = match options.target {
            Target::Service => {
                let body = post(
                    service(&client, options, "/api/v1/experiments"),
                    json!({"name": name}),
                )
                .await?;
                body["id"].as_str().map(str::to_owned)
            }
            Target::Mlflow => {
                let url = format!("{}/api/2.0/mlflow/experiments/create", options.url);
                let body = post(client.post(url), json!({"name": name})).await?;
                body["experiment_id"].as_str().map(str::to_owned)
            }
        }
        .ok_or("the experiment was not created")?;
        Ok(Self {
            client,
            options: options.clone(),
            experiment,
        })
    }

    async fn log(&self, run: RunData) -> Result<(), String> {
        match self.options.target {
            Target::Service => {
                let path = format!("/api/v1/experiments/{}/runs", self.experiment);
                let metrics: Vec<Value> = run
                    .metrics
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v}))
                    .collect();
                let to_map = |pairs: &[(&str, String)]| -> Value {
                    pairs
                        .iter()
                        .map(|(k, v)| ((*k).to_owned(), json!(v)))
                        .collect()
                };
                let body = json!({
                    "name": run.name, "status": "FINISHED", "metrics": metrics,
                    "params": to_map(&run.params), "tags": to_map(&run.tags),
                });
                post(service(&self.client, &self.options, &path), body).await?;
            }
            Target::Mlflow => {
                let now = chrono::Utc::now().timestamp_millis();
                let pairs = |items: &[(&str, String)]| -> Vec<Value> {
                    items
                        .iter()
                        .map(|(k, v)| json!({"key": k, "value": v}))
                        .collect()
                };
                let created = post(
                    self.client.post(self.mlflow("runs/create")),
                    json!({"experiment_id": self.experiment, "run_name": run.name,
                           "start_time": now, "tags": pairs(&run.tags)}),
                )
                .await?;
                let run_id = created["run"]["info"]["run_id"]
                    .as_str()
                    .ok_or("MLflow did not answer a run id")?;
                let metrics: Vec<Value> = run
                    .metrics
                    .iter()
                    .map(|(k, v)| json!({"key": k, "value": v, "timestamp": now, "step": 0}))
                    .collect();
                post(
                    self.client.post(self.mlflow("runs/log-batch")),
                    json!({"run_id": run_id, "metrics": metrics, "params": pairs(&run.params)}),
                )
                .await?;
            }
        }
        Ok(())
    }

    fn mlflow(&self, path: &str) -> String {
        format!("{}/api/2.0/mlflow/{path}", self.options.url)
    }
}

fn service(client: &reqwest::Client, options: &Options, path: &str) -> reqwest::RequestBuilder {
    client
        .post(format!("{}{path}", options.url))
        .bearer_auth(&options.token)
        .header("X-Tenant-ID", &options.tenant)
}

/// Posts JSON and returns the answer's body; anything but a 2xx is an error.
async fn post(request: reqwest::RequestBuilder, body: Value) -> Result<Value, String> {
    let response = request
        .json(&body)
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let text = response.text().await.map_err(|e| e.to_string())?;
    if !status.is_success() {
        return Err(format!("{status}: {text}"));
    }
    Ok(serde_json::from_str(&text).unwrap_or(Value::Null))
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[rank.min(sorted.len() - 1)] as f64 / 1000.0
}

#[tokio::main]
async fn main() -> Result<(), String> {
    let options = options()?;
    let sink = Arc::new(Sink::open(&options).await?);
    let counted = options.count.is_some();
    let measuring = Arc::new(AtomicBool::new(counted));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let issued = Arc::new(AtomicU64::new(0));
    let limit = options.count.unwrap_or(u64::MAX);
    let started = Instant::now();
    let mut workers = Vec::new();
    for worker in 0..options.concurrency {
        let sink = sink.clone();
        let (measuring, stop, errors, issued) = (
            measuring.clone(),
            stop.clone(),
            errors.clone(),
            issued.clone(),
        );
        workers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                let n = issued.fetch_add(1, Ordering::Relaxed);
                if n >= limit {
                    break;
                }
                // A request counts when it starts inside the measured window, however long
                // it then takes, so slow answers weigh on the latency figures.
                let counts = measuring.load(Ordering::Relaxed);
                let began = Instant::now();
                let ok = sink.log(run_data(worker, n)).await.is_ok();
                if counts {
                    if ok {
                        latencies_us.push(began.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies_us
        }));
    }
    // Timed runs measure the window after the warm-up; counted runs measure everything.
    let window = if counted {
        None
    } else {
        tokio::time::sleep(Duration::from_secs(options.warmup_seconds)).await;
        measuring.store(true, Ordering::Relaxed);
        let from = Instant::now();
        tokio::time::sleep(Duration::from_secs(options.seconds)).await;
        measuring.store(false, Ordering::Relaxed);
        let window = from.elapsed().as_secs_f64();
        stop.store(true, Ordering::Relaxed);
        Some(window)
    };
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())?);
    }
    let elapsed = window.unwrap_or_else(|| started.elapsed().as_secs_f64());
    latencies.sort_unstable();
    let report = json!({
        "label": options.label,
        "target": match options.target { Target::Service => "service", Target::Mlflow => "mlflow" },
        "experiment_id": sink.experiment,
        "concurrency": options.concurrency,
        "seconds": elapsed,
        "runs": latencies.len(),
        "errors": errors.load(Ordering::Relaxed),
        "runs_per_second": latencies.len() as f64 / elapsed,
        "p50_ms": percentile(&latencies, 50.0),
        "p99_ms": percentile(&latencies, 99.0),
    });
    println!("{report}");
    Ok(())
}
