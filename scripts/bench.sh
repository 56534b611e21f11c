#!/usr/bin/env bash
# Run-logging benchmark over HTTP: a release build of the service on SQLite and on PostgreSQL
# (connected as a role bound by row-level security), driven by bench/loadgen.rs at concurrency
# 1 and 32. Each run carries 10 metrics, 5 params and 3 tags. Each store is measured twice:
# with publishing off (events stay in the outbox) and with the relay publishing to the tansu
# broker that scripts/services.sh starts, where the outbox figures (events/s from commit to
# broker acknowledgement, lag p50/p99) are read from the outbox afterwards. Then
# scripts/bench_mlflow.sh measures logging through the service against logging straight into
# MLflow, the sync worker's drain, and run comparison over 100,000 runs; and
# scripts/bench_rollout.sh measures the rollout controller with 2,000 active canaries.
# Writes bench-results/summary.md.
#
#   BENCH_SECONDS=20 scripts/bench.sh
set -euo pipefail

cd "$(dirname "$0")/.."
MEASURE_SECONDS="${BENCH_SECONDS:-20}"
PORT="${BENCH_PORT:-18080}"
OUT=bench-results
mkdir -p "$OUT"

cargo build --release --locked --bin aumos-mlops-lifecycle --bin aumos-loadgen \
    --bin aumos-rolloutbench
BIN=target/release/aumos-mlops-lifecycle
LOADGEN=target/release/aumos-loadgen
ROLLOUTBENCH=target/release/aumos-rolloutbench

. scripts/bench_lib.sh
trap 'stop_server; scripts/services.sh stop' EXIT
services_env=$(scripts/services.sh start)
MLFLOW_BIN=$(sed -n 's/^AUMOS_TEST_MLFLOW_BIN=//p' <<<"$services_env")

run_backend() {
    local backend=$1 kafka=$2
    local label="$backend, Kafka $kafka"
    local data brokers=
    data=$(mktemp -d)
    [ "$kafka" = on ] && brokers=127.0.0.1:9092
    local -a env=(
        AUMOS_DATA_DIR="$data" AUMOS_HTTP__HOST=127.0.0.1 AUMOS_HTTP__PORT="$PORT"
        AUMOS_LOG_LEVEL=warn AUMOS_KAFKA__BROKERS="$brokers" AUMOS_MLOPS_MLFLOW_TRACKING_URI=
        AUMOS_KAFKA__TOPIC_PREFIX="bench.$(date +%s)."
    )
    local location="$data/mlops.db"
    if [ "$backend" = postgres ]; then
        bench_database
        env+=(AUMOS_DATABASE__URL="$BENCH_APP_URL" AUMOS_DATABASE__MIGRATION_URL="$BENCH_OWNER_URL")
        location=$BENCH_SUPER_URL
    fi
    start_server "${env[@]}"
    local tenant token
    tenant=$(cat /proc/sys/kernel/random/uuid)
    token=$(env "${env[@]}" "$BIN" token --tenant "$tenant")
    for concurrency in 1 32; do
        local started ended
        started=$(date +%s.%N)
        "$LOADGEN" --url "http://127.0.0.1:$PORT" --token "$token" --tenant "$tenant" \
            --concurrency "$concurrency" --seconds "$MEASURE_SECONDS" \
            --label "$label" | tee -a "$OUT/runs.jsonl"
        ended=$(date +%s.%N)
        if [ "$kafka" = on ]; then
            python3 scripts/bench_events.py "$backend" "$location" "$started" "$ended" \
                "$label" "$concurrency" | tee -a "$OUT/events.jsonl"
        fi
    done
    echo "{\"label\":\"$label\",\"peak_rss_mib\":$(server_peak_rss_mib)}" | tee -a "$OUT/rss.jsonl"
    stop_server
    rm -rf "$data"
}

: >"$OUT/runs.jsonl"
: >"$OUT/rss.jsonl"
: >"$OUT/events.jsonl"
for backend in sqlite postgres; do
    run_backend "$backend" off
    run_backend "$backend" on
done
MEASURE_SECONDS=$MEASURE_SECONDS BIN=$BIN LOADGEN=$LOADGEN PORT=$PORT OUT=$OUT \
    MLFLOW_BIN=$MLFLOW_BIN bash scripts/bench_mlflow.sh
MEASURE_SECONDS=$MEASURE_SECONDS BIN=$BIN ROLLOUTBENCH=$ROLLOUTBENCH PORT=$PORT OUT=$OUT \
    bash scripts/bench_rollout.sh

python3 - "$OUT" <<'PY'
import json, platform, subprocess, sys
out = sys.argv[1]
runs = [json.loads(l) for l in open(f"{out}/runs.jsonl")]
rss = {r["label"]: r["peak_rss_mib"] for r in map(json.loads, open(f"{out}/rss.jsonl"))}
cpu = subprocess.run(["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"],
                     capture_output=True, text=True).stdout.strip()
lines = [f"Machine: {cpu}, {subprocess.getoutput('nproc')} cores, {platform.system()}", "",
         "| store | concurrency | runs/s | p50 ms | p99 ms | errors | server peak RSS |",
         "|---|---|---|---|---|---|---|"]
for r in runs:
    lines.append(f"| {r['label']} | {r['concurrency']} | {r['runs_per_second']:.0f} | "
                 f"{r['p50_ms']:.2f} | {r['p99_ms']:.2f} | {r['errors']} | {rss[r['label']]} MiB |")
events = [json.loads(l) for l in open(f"{out}/events.jsonl")]
lines += ["", "| store | concurrency | events | events/s published | lag p50 ms | lag p99 ms "
          "| drained after load (s) |", "|---|---|---|---|---|---|---|"]
for e in events:
    lines.append(f"| {e['label']} | {e['concurrency']} | {e['events']} | "
                 f"{e['events_per_second']:.0f} | {e['lag_p50_ms']} | {e['lag_p99_ms']} | "
                 f"{e['drain_seconds_after_load']} |")
mlflow = open(f"{out}/summary-mlflow.md").read()
rollout = open(f"{out}/summary-rollout.md").read()
text = "\n".join(lines) + "\n\n" + mlflow + "\n" + rollout
open(f"{out}/summary.md", "w").write(text)
print(text)
PY
