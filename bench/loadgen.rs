//! Load generator for `make bench`: logs complete runs (10 metrics, 5 params, 3 tags each)
//! into one experiment over HTTP at a fixed concurrency and reports throughput and latency.
//!
//! Usage: aumos-loadgen --url http://127.0.0.1:8000 --token <jwt> --tenant <uuid>
//!        [--concurrency 32] [--seconds 20] [--warmup-seconds 2] [--label text]
//! Prints one JSON object on stdout.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;

struct Options {
    url: String,
    token: String,
    tenant: String,
    concurrency: usize,
    seconds: u64,
    warmup_seconds: u64,
    label: String,
}

fn options() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut options = Options {
        url: "http://127.0.0.1:8000".into(),
        token: String::new(),
        tenant: String::new(),
        concurrency: 32,
        seconds: 20,
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
            "--url" => options.url = value.clone(),
            "--token" => options.token = value.clone(),
            "--tenant" => options.tenant = value.clone(),
            "--concurrency" => options.concurrency = usize::try_from(number()?).unwrap_or(1),
            "--seconds" => options.seconds = number()?,
            "--warmup-seconds" => options.warmup_seconds = number()?,
            "--label" => options.label = value.clone(),
            _ => return Err(format!("unknown flag {flag}")),
        }
    }
    if options.token.is_empty() || options.tenant.is_empty() {
        return Err("--token and --tenant are required".into());
    }
    Ok(options)
}

fn run_body(worker: usize, n: u64) -> serde_json::Value {
    let metrics: Vec<_> = (0..10)
        .map(|m| json!({"key": format!("metric_{m}"), "value": (n as f64) / 1000.0 + f64::from(m)}))
        .collect();
    json!({
        "name": format!("bench-{worker}-{n}"),
        "status": "FINISHED",
        "params": {"model": "xgboost", "max_depth": "6", "eta": "0.1", "subsample": "0.8",
                   "seed": n.to_string()},
        "metrics": metrics,
        "tags": {"team": "bench", "dataset": "synthetic", "worker": worker.to_string()},
    })
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
    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(options.concurrency)
        .build()
        .map_err(|e| e.to_string())?;
    let experiment: serde_json::Value = client
        .post(format!("{}/api/v1/experiments", options.url))
        .bearer_auth(&options.token)
        .header("X-Tenant-ID", &options.tenant)
        .json(&json!({"name": format!("bench-{}", uuid::Uuid::now_v7())}))
        .send()
        .await
        .map_err(|e| e.to_string())?
        .json()
        .await
        .map_err(|e| e.to_string())?;
    let runs_url = format!(
        "{}/api/v1/experiments/{}/runs",
        options.url,
        experiment["id"]
            .as_str()
            .ok_or("experiment was not created")?
    );

    let measuring = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let errors = Arc::new(AtomicU64::new(0));
    let mut workers = Vec::new();
    for worker in 0..options.concurrency {
        let (client, url, token, tenant) = (
            client.clone(),
            runs_url.clone(),
            options.token.clone(),
            options.tenant.clone(),
        );
        let (measuring, stop, errors) = (measuring.clone(), stop.clone(), errors.clone());
        workers.push(tokio::spawn(async move {
            let mut latencies_us = Vec::new();
            let mut n = 0u64;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = Instant::now();
                let response = client
                    .post(&url)
                    .bearer_auth(&token)
                    .header("X-Tenant-ID", &tenant)
                    .json(&run_body(worker, n))
                    .send()
                    .await;
                let ok = matches!(&response, Ok(r) if r.status().as_u16() == 201);
                if let Ok(r) = response {
                    let _ = r.bytes().await;
                }
                if measuring.load(Ordering::Relaxed) {
                    if ok {
                        latencies_us.push(started.elapsed().as_micros() as u64);
                    } else {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies_us
        }));
    }
    tokio::time::sleep(Duration::from_secs(options.warmup_seconds)).await;
    measuring.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs(options.seconds)).await;
    measuring.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);

    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await.map_err(|e| e.to_string())?);
    }
    latencies.sort_unstable();
    let report = json!({
        "label": options.label,
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
