#!/usr/bin/env bash
# The whole test suite, as CI runs it: formatting, lints, licences, then every test against
# real services, which this script starts and stops again.
set -euo pipefail

cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
CARGO_DENY_VERSION=0.20.2

if ! cargo deny --version 2>/dev/null | grep -q "$CARGO_DENY_VERSION"; then
    echo "[test] installing cargo-deny $CARGO_DENY_VERSION"
    cargo install cargo-deny --version "$CARGO_DENY_VERSION" --locked
fi

echo "[test] formatting"
cargo fmt --all -- --check
echo "[test] clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "[test] licences"
cargo deny check licenses bans sources

trap 'scripts/services.sh stop' EXIT
while IFS='=' read -r name value; do
    export "$name=$value"
done < <(scripts/services.sh start)

echo "[test] tests"
cargo test --all-targets --locked
