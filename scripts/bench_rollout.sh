#!/usr/bin/env bash
# The rollout controller part of `make bench`, run by scripts/bench.sh once the services are
# up: one release replica on PostgreSQL (as the row-level-security role) with the MLflow
# server scripts/services.sh started, driving ROLLOUT_DEPLOYMENTS active canaries whose health
# endpoints the benchmark serves itself on loopback. Measured: probes and controller ticks per
# second, tick latency and lag p50/p99, the replica's CPU and memory; then the reaction time
# from an endpoint starting to fail to its deployment's rolled_back event, p50/p99 over
# ROLLOUT_REACTIONS deployments. Once per probe interval in ROLLOUT_PROBE_INTERVALS.
#
# Expects BIN, ROLLOUTBENCH, PORT, OUT and MEASURE_SECONDS; writes $OUT/rollout.jsonl and
# $OUT/summary-rollout.md.
set -euo pipefail

cd "$(dirname "$0")/.."
. scripts/bench_lib.sh
trap 'stop_server' EXIT
DEPLOYMENTS=${ROLLOUT_DEPLOYMENTS:-2000}
REACTIONS=${ROLLOUT_REACTIONS:-100}
INTERVALS=${ROLLOUT_PROBE_INTERVALS:-"1 5"}
RESULTS="$OUT/rollout.jsonl"
: >"$RESULTS"

for interval in $INTERVALS; do
    bench_database
    data=$(mktemp -d)
    env=(
        AUMOS_DATA_DIR="$data" AUMOS_HTTP__HOST=127.0.0.1 AUMOS_HTTP__PORT="$PORT"
        AUMOS_LOG_LEVEL=error AUMOS_KAFKA__BROKERS=
        AUMOS_MLOPS_MLFLOW_TRACKING_URI=http://127.0.0.1:5000
        AUMOS_MLOPS_PROBE_ALLOWED_NETWORKS=127.0.0.0/8
        AUMOS_DATABASE__URL="$BENCH_APP_URL" AUMOS_DATABASE__MIGRATION_URL="$BENCH_OWNER_URL"
    )
    start_server "${env[@]}"
    tenant=$(cat /proc/sys/kernel/random/uuid)
    token=$(env "${env[@]}" "$BIN" token --tenant "$tenant")
    "$ROLLOUTBENCH" --url "http://127.0.0.1:$PORT" --token "$token" --tenant "$tenant" \
        --pid "$SERVER" --deployments "$DEPLOYMENTS" --reactions "$REACTIONS" \
        --probe-interval "$interval" --seconds "$MEASURE_SECONDS" \
        --label "postgres, probe every ${interval}s" | tee -a "$RESULTS"
    stop_server
    rm -rf "$data"
done

python3 - "$OUT" <<'PY'
import json, sys
out = sys.argv[1]
rows = [json.loads(l) for l in open(f"{out}/rollout.jsonl")]
def ms(v):
    return "n/a" if v is None else f"{v:.1f}"
lines = ["| replica | active canaries | probes/s | ticks/s | tick p50 / p99 ms "
         "| tick lag p50 / p99 ms | CPU: service / machine (cores) | RSS / peak MiB "
         "| reaction p50 / p99 / max ms (of N) |",
         "|---|---|---|---|---|---|---|---|---|"]
for r in rows:
    lines.append(
        f"| {r['label']} | {r['deployments']} | {r['probes_per_second']:.0f} | "
        f"{r['ticks_per_second']:.0f} | {ms(r['tick_p50_ms'])} / {ms(r['tick_p99_ms'])} | "
        f"{ms(r['tick_lag_p50_ms'])} / {ms(r['tick_lag_p99_ms'])} | "
        f"{r['cpu_cores']:.2f} / {r['machine_cpu_cores']:.2f} | "
        f"{r['rss_mib']} / {r['peak_rss_mib']} | {ms(r['reaction_p50_ms'])} / "
        f"{ms(r['reaction_p99_ms'])} / {ms(r['reaction_max_ms'])} ({r['reactions']}) |")
text = "### Rollout controller\n\n" + "\n".join(lines) + "\n"
open(f"{out}/summary-rollout.md", "w").write(text)
print(text)
PY
