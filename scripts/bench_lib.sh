# Shared by the benchmark scripts: a fresh PostgreSQL database with the service's two roles,
# and starting and stopping a release build of the service. Source it; it expects BIN and PORT.

BENCH_ADMIN="postgres://postgres@127.0.0.1:5432/postgres"
BENCH_APP_URL="postgres://aumos_bench_app@127.0.0.1:5432/aumos_bench"
BENCH_OWNER_URL="postgres://aumos_bench_owner@127.0.0.1:5432/aumos_bench"
BENCH_SUPER_URL="postgres://postgres@127.0.0.1:5432/aumos_bench"

# Drops and recreates aumos_bench, owned by a role that is neither superuser nor BYPASSRLS.
bench_database() {
    for role in aumos_bench_owner aumos_bench_app; do
        psql "$BENCH_ADMIN" -qc "DO \$\$ BEGIN CREATE ROLE $role LOGIN NOSUPERUSER NOBYPASSRLS; \
            EXCEPTION WHEN duplicate_object THEN NULL; END \$\$" >/dev/null
    done
    psql "$BENCH_ADMIN" -qc "DROP DATABASE IF EXISTS aumos_bench WITH (FORCE)" >/dev/null
    psql "$BENCH_ADMIN" -qc "CREATE DATABASE aumos_bench OWNER aumos_bench_owner" >/dev/null
}

# Starts the service with the given VAR=value settings and waits until it serves; sets SERVER.
start_server() {
    env "$@" "$BIN" serve &
    SERVER=$!
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$PORT/live" >/dev/null && return
        sleep 0.1
    done
    echo "the service did not start" >&2
    exit 1
}

# Peak resident memory of the running service, in MiB.
server_peak_rss_mib() {
    awk '/VmHWM/ {print int($2 / 1024)}' "/proc/$SERVER/status"
}

stop_server() {
    if [ -n "${SERVER:-}" ]; then
        kill "$SERVER" 2>/dev/null || true
        wait "$SERVER" 2>/dev/null || true
        SERVER=
    fi
}
