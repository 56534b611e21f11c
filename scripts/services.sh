#!/usr/bin/env bash
# Starts (or stops) every service the test suite needs, without Docker: what
# `docker compose -f docker-compose.dev.yml up` gives a developer who has Docker.
#
#   scripts/services.sh start   # idempotent; prints the environment the tests read
#   scripts/services.sh stop    # stops only what `start` started, by process group
#
# PostgreSQL: used where it already runs on 127.0.0.1:5432; otherwise installed from Debian's
# packages and started, with trust authentication for local TCP connections (test machines only).
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
        echo "AUMOS_TEST_POSTGRES_ADMIN_URL=postgres://postgres@$PG_HOST:$PG_PORT/postgres"
        ;;
    stop)
        stop_started
        ;;
    *)
        echo "usage: $0 start|stop" >&2
        exit 2
        ;;
esac
