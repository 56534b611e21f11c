# Day-to-day commands. `make test` is what CI runs.
.PHONY: install run test test-quick lint format typecheck bench docker-build

install: ## Fetch dependencies and build
	cargo build --locked

run: ## Serve on :8000 with the embedded SQLite database
	cargo run

test: ## Everything CI runs: format, lints, licences and all tests against real services
	bash scripts/test.sh

test-quick: ## Unit tests only: no services needed
	cargo test --lib --locked

lint:
	cargo clippy --all-targets --locked -- -D warnings
	cargo deny check licenses bans sources

format:
	cargo fmt --all

typecheck:
	cargo check --all-targets --locked

bench: ## Load test over HTTP on SQLite and PostgreSQL; writes bench-results/
	bash scripts/bench.sh

docker-build:
	docker build -t aumos-mlops-lifecycle:dev .
