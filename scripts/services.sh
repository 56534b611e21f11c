#!/usr/bin/env bash
# Starts (or stops) every service the test suite needs, without Docker: what
# `docker compose -f docker-compose.dev.yml up` gives a developer who has Docker.
#
#   scripts/services.sh start   # idempotent; prints the environment the tests read
#   scripts/services.sh stop    # stops only what `start` started, by process group
#
# PostgreSQL: used where it already runs on 127.0.0.1:5432; otherwise installed from Debian's
# packages and started, with trust authentication for local TCP connections (test machines only).
# Kafka protocol: the tansu broker (Apache-2.0, crates.io), built once into ~/.cargo/bin and
# reused while its version matches. Tests start their own broker processes from it (each test
# needs its own, some stop and restart theirs); `start` also runs one on 127.0.0.1:9092 for
# manual use and the benchmark.
# MLflow: mlflow from PyPI, installed once with uv into its own virtual environment under
# ~/.cache/aumos (reused while its version matches), served on 127.0.0.1:5000 with a fresh
# SQLite backend store. Tests that stop and restart MLflow start their own servers from the
# same installation (AUMOS_TEST_MLFLOW_BIN).
set -euo pipefail

cd "$(dirname "$0")/.."
STATE_DIR="${AUMOS_SERVICES_DIR:-$PWD/.services}"
PG_HOST=127.0.0.1
PG_PORT=5432
mkdir -p "$STATE_DIR"

log() { printf '[services] %s\n' "$*" >&2; }

postgres_ready() {
    command -v pg_isready >/dev/null 2>&1 && pg_isready -q -h "$PG_HOST" -p "$PG_PORT"
}

start_postgres() {
    if postgres_ready; then
        log "PostgreSQL already answers on $PG_HOST:$PG_PORT"
        return
    fi
    if ! ls /etc/postgresql/*/main >/dev/null 2>&1; then
        log "installing PostgreSQL from Debian's packages"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq
        apt-get install -y -qq postgresql >/dev/null
        local version
        version=$(ls /etc/postgresql | sort -V | tail -n 1)
        # Local test machine only: trust TCP connections from this host.
        sed -i -E 's/^(host\s+all\s+all\s+127\.0\.0\.1\/32\s+)\S+/\1trust/' \
            "/etc/postgresql/$version/main/pg_hba.conf"
        sed -i -E 's/^(host\s+all\s+all\s+::1\/128\s+)\S+/\1trust/' \
            "/etc/postgresql/$version/main/pg_hba.conf"
    fi
    local version
    version=$(ls /etc/postgresql | sort -V | tail -n 1)
    log "starting PostgreSQL $version"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start || true
    for _ in $(seq 1 60); do
        postgres_ready && return
        sleep 0.5
    done
    log "PostgreSQL did not become ready on $PG_HOST:$PG_PORT"
    exit 1
}

# Test databases from earlier runs are dropped, so they never pile up.
TANSU_VERSION=0.6.0
TANSU_BIN="${CARGO_HOME:-$HOME/.cargo}/bin/tansu"
KAFKA_PORT=9092

ensure_tansu() {
    if [ -x "$TANSU_BIN" ] && "$TANSU_BIN" --version 2>/dev/null | grep -q "$TANSU_VERSION"; then
        return
    fi
    log "building the tansu $TANSU_VERSION broker (once; about 13 minutes on 2 cores)"
    cargo install tansu --version "$TANSU_VERSION" --locked --no-default-features \
        --features dynostore
}

port_open() {
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null
}

start_kafka() {
    ensure_tansu
    if port_open "$KAFKA_PORT"; then
        log "a Kafka-protocol broker already answers on 127.0.0.1:$KAFKA_PORT"
        return
    fi
    local dir="$STATE_DIR/tansu"
    rm -rf "$dir" && mkdir -p "$dir"
    log "starting tansu on 127.0.0.1:$KAFKA_PORT"
    (cd "$dir" && exec setsid "$TANSU_BIN" broker \
        --listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --advertised-listener-url "tcp://127.0.0.1:$KAFKA_PORT" \
        --storage-engine memory://tansu/ >"$STATE_DIR/tansu.log" 2>&1) &
    echo $! >"$STATE_DIR/tansu.pid"
    for _ in $(seq 1 100); do
        port_open "$KAFKA_PORT" && return
        sleep 0.1
    done
    log "tansu did not start; see $STATE_DIR/tansu.log"
    exit 1
}

MLFLOW_VERSION=3.17.2
TOOLS_DIR="${AUMOS_TOOLS_DIR:-$HOME/.cache/aumos}"
MLFLOW_VENV="$TOOLS_DIR/mlflow-$MLFLOW_VERSION"
MLFLOW_PORT=5000

# psycopg2 lets the benchmark run MLflow on a PostgreSQL backend store.
MLFLOW_PACKAGES="mlflow==$MLFLOW_VERSION psycopg2-binary==2.9.13"

ensure_mlflow() {
    # The stamp names what was installed and is written last, so an interrupted or outdated
    # install is redone from scratch.
    if [ "$(cat "$MLFLOW_VENV/.installed" 2>/dev/null)" = "$MLFLOW_PACKAGES" ]; then
        return
    fi
    log "installing $MLFLOW_PACKAGES into $MLFLOW_VENV (once; about a minute)"
    rm -rf "$MLFLOW_VENV"
    mkdir -p "$TOOLS_DIR"
    python3 -m venv "$MLFLOW_VENV"
    "$MLFLOW_VENV/bin/pip" install -q --disable-pip-version-check uv
    # shellcheck disable=SC2086 # one word per package
    "$MLFLOW_VENV/bin/uv" pip install -q --python "$MLFLOW_VENV/bin/python" $MLFLOW_PACKAGES
    echo "$MLFLOW_PACKAGES" >"$MLFLOW_VENV/.installed"
}

start_mlflow() {
    ensure_mlflow
    if port_open "$MLFLOW_PORT"; then
        log "something already answers on 127.0.0.1:$MLFLOW_PORT; using it as MLflow"
        return
    fi
    local dir="$STATE_DIR/mlflow"
    rm -rf "$dir" && mkdir -p "$dir"
    log "starting MLflow $MLFLOW_VERSION on 127.0.0.1:$MLFLOW_PORT"
    (cd "$dir" && MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec setsid \
        "$MLFLOW_VENV/bin/mlflow" server \
        --backend-store-uri "sqlite:///$dir/mlflow.db" \
        --default-artifact-root "$dir/artifacts" \
        --host 127.0.0.1 --port "$MLFLOW_PORT" --workers 1 >"$STATE_DIR/mlflow.log" 2>&1) &
    echo $! >"$STATE_DIR/mlflow.pid"
    for _ in $(seq 1 120); do
        curl -sf "http://127.0.0.1:$MLFLOW_PORT/health" >/dev/null 2>&1 && return
        sleep 0.5
    done
    log "MLflow did not start; see $STATE_DIR/mlflow.log"
    exit 1
}

drop_old_test_databases() {
    local admin="postgres://postgres@$PG_HOST:$PG_PORT/postgres"
    local names
    names=$(psql "$admin" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'aumos\_test\_%'")
    for name in $names; do
        psql "$admin" -qc "DROP DATABASE IF EXISTS \"$name\" WITH (FORCE)" >/dev/null
    done
}

stop_started() {
    for pidfile in "$STATE_DIR"/*.pid; do
        [ -e "$pidfile" ] || continue
        local pid
        pid=$(cat "$pidfile")
        if kill -0 "$pid" 2>/dev/null; then
            log "stopping $(basename "$pidfile" .pid) (process group $pid)"
            kill -TERM -- "-$pid" 2>/dev/null || true
            for _ in $(seq 1 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
            kill -KILL -- "-$pid" 2>/dev/null || true
        fi
        rm -f "$pidfile"
    done
}

case "${1:-start}" in
    start)
        start_postgres
        drop_old_test_databases
        start_kafka
        start_mlflow
        echo "AUMOS_TEST_POSTGRES_ADMIN_URL=postgres://postgres@$PG_HOST:$PG_PORT/postgres"
        echo "AUMOS_TEST_TANSU_BIN=$TANSU_BIN"
        echo "AUMOS_KAFKA__BROKERS=127.0.0.1:$KAFKA_PORT"
        echo "AUMOS_TEST_MLFLOW_BIN=$MLFLOW_VENV/bin/mlflow"
        echo "AUMOS_MLOPS_MLFLOW_TRACKING_URI=http://127.0.0.1:$MLFLOW_PORT"
        ;;
    stop)
        stop_started
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
