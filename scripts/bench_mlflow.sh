#!/usr/bin/env bash
# The MLflow part of `make bench`, run by scripts/bench.sh once the services are up:
#
# MLflow runs here on a PostgreSQL backend store with two workers (one per core), as it would
# in production: on its SQLite store, concurrent writers wait on the database lock until
# requests fail after 30 seconds.
#
# 1. Logging rate: the same runs (10 metrics, 5 params, 3 tags) at concurrency 1 and 32,
#    through the service on PostgreSQL with the MLflow sync worker on, then straight into the
#    MLflow server with runs/create + runs/log-batch (the service stopped by then, so the two
#    never compete for the machine).
# 2. Drain: a fresh database, DRAIN_RUNS runs logged through the service at once, and the time
#    until the sync worker has copied every one into MLflow.
# 3. Comparison over COMPARE_RUNS runs: the same filter and order through the service and
#    through MLflow's runs/search (seeded straight into its store), with a check that both
#    return the same runs.
#
# Expects BIN, LOADGEN, PORT, OUT, MEASURE_SECONDS and MLFLOW_BIN (the mlflow executable
# scripts/services.sh installed); writes $OUT/mlflow.jsonl and $OUT/summary-mlflow.md.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
MLFLOW_PORT=${BENCH_MLFLOW_PORT:-5057}
MLFLOW=http://127.0.0.1:$MLFLOW_PORT
MLFLOW_DB_URL=postgresql://postgres@127.0.0.1:5432/aumos_bench_mlflow
# SQLAlchemy's default PostgreSQL driver is psycopg 3; the environment has psycopg2.
MLFLOW_STORE=${MLFLOW_DB_URL/postgresql:/postgresql+psycopg2:}
# The virtual environment's python has psycopg2, for seeding MLflow's store.
PYTHON=$(dirname "$MLFLOW_BIN")/python
MLFLOW_DIR=$(mktemp -d)
MLFLOW_PID=

stop_mlflow() {
    if [ -n "$MLFLOW_PID" ]; then
        kill -TERM -- "-$MLFLOW_PID" 2>/dev/null || true
        sleep 1
        kill -KILL -- "-$MLFLOW_PID" 2>/dev/null || true
        MLFLOW_PID=
    fi
}
trap 'stop_server; stop_mlflow; rm -rf "$MLFLOW_DIR"' EXIT

psql "$BENCH_ADMIN" -qc "DROP DATABASE IF EXISTS aumos_bench_mlflow WITH (FORCE)" >/dev/null
psql "$BENCH_ADMIN" -qc "CREATE DATABASE aumos_bench_mlflow" >/dev/null
(cd "$MLFLOW_DIR" && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec setsid "$MLFLOW_BIN" server \
    --backend-store-uri "$MLFLOW_STORE" --default-artifact-root "$MLFLOW_DIR/artifacts" \
    --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 2 >"$MLFLOW_DIR/mlflow.log" 2>&1) &
MLFLOW_PID=$!
for _ in $(seq 1 240); do
    curl -sf "$MLFLOW/health" >/dev/null 2>&1 && break
    sleep 0.5
done
curl -sf "$MLFLOW/health" >/dev/null || { cat "$MLFLOW_DIR/mlflow.log" >&2; exit 1; }
DRAIN_RUNS=${BENCH_DRAIN_RUNS:-1000}
COMPARE_RUNS=${BENCH_COMPARE_RUNS:-100000}
RESULTS="$OUT/mlflow.jsonl"
: >"$RESULTS"

service_env() {
    local data=$1 mlflow=$2
    echo AUMOS_DATA_DIR="$data" AUMOS_HTTP__HOST=127.0.0.1 AUMOS_HTTP__PORT="$PORT" \
        AUMOS_LOG_LEVEL=warn AUMOS_KAFKA__BROKERS= AUMOS_MLOPS_MLFLOW_TRACKING_URI="$mlflow" \
        AUMOS_DATABASE__URL="$BENCH_APP_URL" AUMOS_DATABASE__MIGRATION_URL="$BENCH_OWNER_URL"
}

data=$(mktemp -d)
tenant=$(cat /proc/sys/kernel/random/uuid)

# 1. Logging rate, service then MLflow.
bench_database
read -ra env <<<"$(service_env "$data" "$MLFLOW")"
start_server "${env[@]}"
token=$(env "${env[@]}" "$BIN" token --tenant "$tenant")
for concurrency in 1 32; do
    "$LOADGEN" --url "http://127.0.0.1:$PORT" --token "$token" --tenant "$tenant" \
        --concurrency "$concurrency" --seconds "$MEASURE_SECONDS" \
        --label "rate: service (postgres, MLflow sync on)" | tee -a "$RESULTS"
done
stop_server
for concurrency in 1 32; do
    "$LOADGEN" --url "$MLFLOW" --target mlflow --concurrency "$concurrency" \
        --seconds "$MEASURE_SECONDS" --label "rate: MLflow directly" | tee -a "$RESULTS"
done

# 2. Drain.
bench_database
start_server "${env[@]}"
"$LOADGEN" --url "http://127.0.0.1:$PORT" --token "$token" --tenant "$tenant" \
    --concurrency 32 --count "$DRAIN_RUNS" --label "drain: logged" | tee -a "$RESULTS"
python3 scripts/bench_mlflow.py drain "http://127.0.0.1:$PORT" 1800 |
    python3 -c "import json,sys; d=json.load(sys.stdin); d.update(label='drain: copied', \
runs=$DRAIN_RUNS); print(json.dumps(d))" | tee -a "$RESULTS"
stop_server

# 3. Comparison over many runs: the service without MLflow, MLflow seeded directly.
bench_database
read -ra env <<<"$(service_env "$data" "")"
start_server "${env[@]}"
seeded=$("$LOADGEN" --url "http://127.0.0.1:$PORT" --token "$token" --tenant "$tenant" \
    --concurrency 32 --count "$COMPARE_RUNS" --label "compare: seeded the service")
echo "$seeded" | tee -a "$RESULTS"
experiment=$(echo "$seeded" | python3 -c "import json,sys; print(json.load(sys.stdin)['experiment_id'])")
mlflow_experiment=$("$LOADGEN" --url "$MLFLOW" --target mlflow --count 0 |
    python3 -c "import json,sys; print(json.load(sys.stdin)['experiment_id'])")
"$PYTHON" scripts/bench_mlflow.py seed "$MLFLOW_DB_URL" "$mlflow_experiment" "$COMPARE_RUNS" >/dev/null
psql "$MLFLOW_DB_URL" -qc "VACUUM ANALYZE" >/dev/null
psql "$BENCH_SUPER_URL" -qc "VACUUM ANALYZE" >/dev/null
python3 scripts/bench_mlflow.py compare "http://127.0.0.1:$PORT" "$token" "$tenant" \
    "$experiment" "$MLFLOW" "$mlflow_experiment" "${BENCH_COMPARE_REPS:-20}" |
    sed "s/^{/{\"label\": \"compare\", \"runs_in_experiment\": $COMPARE_RUNS, /" | tee -a "$RESULTS"
stop_server
rm -rf "$data"

python3 - "$RESULTS" "$OUT/summary-mlflow.md" <<'PY'
import json, sys
rows = [json.loads(line) for line in open(sys.argv[1])]
rate = {(r["target"], r["concurrency"]): r for r in rows if r["label"].startswith("rate")}
lines = ["| concurrency | service runs/s | service p50 / p99 ms | MLflow runs/s "
         "| MLflow p50 / p99 ms | service / MLflow |", "|---|---|---|---|---|---|"]
for c in (1, 32):
    s, m = rate[("service", c)], rate[("mlflow", c)]
    lines.append(f"| {c} | {s['runs_per_second']:.0f} | {s['p50_ms']:.1f} / {s['p99_ms']:.1f} | "
                 f"{m['runs_per_second']:.1f} | {m['p50_ms']:.1f} / {m['p99_ms']:.1f} | "
                 f"{s['runs_per_second'] / max(m['runs_per_second'], 0.001):.0f}x |")
logged = next(r for r in rows if r["label"] == "drain: logged")
copied = next(r for r in rows if r["label"] == "drain: copied")
if copied.get("drained"):
    total = logged["seconds"] + copied["seconds"]
    lines += ["", f"Drain: {copied['runs']} runs logged through the service in "
              f"{logged['seconds']:.1f} s were all in MLflow {copied['seconds']:.1f} s later "
              f"({copied['runs'] / total:.0f} runs/s end to end)."]
else:
    lines += ["", f"Drain: {copied['pending']} items were still waiting after 30 minutes."]
lines += ["", "| comparison query | runs returned | service p50 / p99 ms "
          "| MLflow runs/search p50 / p99 ms | same runs |", "|---|---|---|---|---|"]
for r in rows:
    if r["label"] == "compare" and "query" in r:
        lines.append(f"| `{r['filter']}` order `{r['order_by']}` | {r['rows']} | "
                     f"{r['service_p50_ms']} / "
                     f"{r['service_p99_ms']} | {r['mlflow_p50_ms']} / {r['mlflow_p99_ms']} | "
                     f"{'yes' if r['same_runs'] else 'NO'} |")
open(sys.argv[2], "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
