#!/usr/bin/env python3
"""Helpers of the MLflow benchmark (scripts/bench_mlflow.sh). Prints JSON.

    bench_mlflow.py drain SERVICE_URL SECONDS
        waits until /ready reports no MLflow sync backlog; prints how long that took
    bench_mlflow.py seed MLFLOW_STORE_URL EXPERIMENT_ID COUNT
        writes COUNT runs shaped like the load generator's straight into MLflow's PostgreSQL
        store (logging 100,000 runs through MLflow's REST API would take most of an hour
        here); needs psycopg2, so run it with the MLflow virtual environment's python
    bench_mlflow.py compare SERVICE_URL TOKEN TENANT EXPERIMENT MLFLOW_URL MLFLOW_EXPERIMENT REPS
        times the same comparison queries through the service and MLflow's runs/search,
        and checks that both return the same runs
"""
import json
import statistics
import sys
import time
import urllib.parse
import urllib.request
import uuid

QUERIES = [
    ("broad: half the runs match, best 100 by another metric",
     "metrics.metric_0 > 50 and params.model = 'xgboost'", "metrics.metric_1 DESC"),
    ("selective: one run by param",
     "params.seed = '4242'", "start_time DESC"),
    ("two metrics and a tag",
     "metrics.metric_2 >= 10 and metrics.metric_3 < 30 and tags.team = 'bench'",
     "metrics.metric_3 ASC"),
]


def request(url, body=None, headers=None):
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers=headers or {})
    if data is not None:
        req.add_header("Content-Type", "application/json")
    with urllib.request.urlopen(req, timeout=120) as answer:
        return json.loads(answer.read() or b"null")


def drain(service, limit):
    started = time.time()
    while True:
        ready = request(f"{service}/ready")
        pending = ready["checks"]["mlflow"].get("pending_sync")
        if pending == 0:
            break
        if time.time() - started > float(limit):
            print(json.dumps({"drained": False, "pending": pending}))
            return
        time.sleep(0.2)
    print(json.dumps({"drained": True, "seconds": round(time.time() - started, 2)}))


def seed(store, experiment, count):
    import io
    import psycopg2  # from the MLflow virtual environment

    db = psycopg2.connect(store)
    now = int(time.time() * 1000)
    tables = {name: io.StringIO() for name in
              ("runs", "params", "tags", "metrics", "latest_metrics")}

    def row(table, *values):
        tables[table].write("\t".join(str(v) for v in values) + "\n")

    for n in range(int(count)):
        run = uuid.uuid4().hex
        worker = n % 32
        name = f"bench-{worker}-{n}"
        row("runs", run, name, "UNKNOWN", "", "", "", "FINISHED", now + n, now + n, "",
            "active", f"bench/{run}/artifacts", experiment)
        for key, value in (("model", "xgboost"), ("max_depth", "6"), ("eta", "0.1"),
                           ("subsample", "0.8"), ("seed", str(n))):
            row("params", key, value, run)
        for key, value in (("team", "bench"), ("dataset", "synthetic"),
                           ("worker", str(worker)), ("mlflow.runName", name)):
            row("tags", key, value, run)
        for m in range(10):
            value = n / 1000.0 + m
            row("metrics", f"metric_{m}", value, now + n, run, 0, "false")
            row("latest_metrics", f"metric_{m}", value, now + n, 0, "false", run)
    columns = {
        "runs": ("run_uuid", "name", "source_type", "source_name", "entry_point_name", "user_id",
                 "status", "start_time", "end_time", "source_version", "lifecycle_stage",
                 "artifact_uri", "experiment_id"),
        "params": ("key", "value", "run_uuid"),
        "tags": ("key", "value", "run_uuid"),
        "metrics": ("key", "value", "timestamp", "run_uuid", "step", "is_nan"),
        "latest_metrics": ("key", "value", "timestamp", "step", "is_nan", "run_uuid"),
    }
    with db, db.cursor() as cursor:
        for table in ("runs", "params", "tags", "metrics", "latest_metrics"):
            tables[table].seek(0)
            cursor.copy_from(tables[table], table, columns=columns[table])
    print(json.dumps({"seeded": int(count)}))


def timed(call, reps):
    times, result = [], None
    for _ in range(int(reps)):
        started = time.perf_counter()
        result = call()
        times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return result, round(statistics.median(times), 1), round(times[int(0.99 * (len(times) - 1))], 1)


def compare(service, token, tenant, experiment, mlflow, mlflow_experiment, reps):
    headers = {"Authorization": f"Bearer {token}", "X-Tenant-ID": tenant}
    for label, filter_, order in QUERIES:
        query = urllib.parse.urlencode({"filter": filter_, "order_by": order, "limit": 100})
        url = f"{service}/api/v1/experiments/{experiment}/runs?{query}"
        ours, ours_p50, ours_p99 = timed(lambda: request(url, headers=headers), reps)
        body = {"experiment_ids": [mlflow_experiment], "filter": filter_, "order_by": [order],
                "max_results": 100}
        theirs, theirs_p50, theirs_p99 = timed(
            lambda: request(f"{mlflow}/api/2.0/mlflow/runs/search", body), reps)
        ours_seeds = [run["params"]["seed"] for run in ours["items"]]
        theirs_seeds = [next(p["value"] for p in run["data"]["params"] if p["key"] == "seed")
                        for run in theirs.get("runs", [])]
        print(json.dumps({
            "query": label, "filter": filter_, "order_by": order,
            "service_p50_ms": ours_p50, "service_p99_ms": ours_p99,
            "mlflow_p50_ms": theirs_p50, "mlflow_p99_ms": theirs_p99,
            "rows": len(ours_seeds), "same_runs": sorted(ours_seeds) == sorted(theirs_seeds),
        }))


if __name__ == "__main__":
    command, args = sys.argv[1], sys.argv[2:]
    {"drain": drain, "seed": seed, "compare": compare}[command](*args)
