#!/usr/bin/env python3
"""Outbox figures for one benchmark phase: events recorded between two instants, how many the
relay published, and the commit-to-acknowledgement lag. Prints one JSON object.

    bench_events.py sqlite PATH START END LABEL CONCURRENCY
    bench_events.py postgres URL START END LABEL CONCURRENCY
"""
import json
import sqlite3
import subprocess
import sys
import time

backend, location, start, end, label, concurrency = sys.argv[1:7]
start, end = float(start), float(end)


def rows():
    if backend == "sqlite":
        db = sqlite3.connect(f"file:{location}?mode=ro", uri=True)
        query = ("SELECT recorded_at / 1000.0, published_at / 1000.0 FROM outbox_events "
                 "WHERE recorded_at >= ? AND recorded_at < ?")
        return db.execute(query, (start * 1000, end * 1000)).fetchall()
    query = ("SELECT extract(epoch FROM recorded_at), extract(epoch FROM published_at) "
             "FROM outbox_events WHERE recorded_at >= to_timestamp(%f) "
             "AND recorded_at < to_timestamp(%f)" % (start, end))
    out = subprocess.run(["psql", location, "-AtF", ",", "-c", query],
                         capture_output=True, text=True, check=True).stdout
    return [tuple(float(v) if v else None for v in line.split(",")) for line in out.split()]


# Wait (at most a minute) for the relay to drain what the phase recorded.
waited = 0.0
while True:
    data = rows()
    pending = sum(1 for _, published in data if published is None)
    if pending == 0 or waited > 60:
        break
    time.sleep(0.5)
    waited += 0.5

lags = sorted((p - r) * 1000 for r, p in data if p is not None)
published = [p for _, p in data if p is not None]


def pct(q):
    return round(lags[min(len(lags) - 1, int(q * (len(lags) - 1) + 0.5))], 1) if lags else None


print(json.dumps({
    "label": label,
    "concurrency": int(concurrency),
    "events": len(data),
    "published": len(published),
    "events_per_second": round(len(published) / (max(published) - start), 1) if published else 0,
    "lag_p50_ms": pct(0.50),
    "lag_p99_ms": pct(0.99),
    "drain_seconds_after_load": round(max(0.0, max(published) - end), 2) if published else None,
}))
