//! Integration tests through HTTP against the real service, on SQLite and on PostgreSQL with
//! row-level security. One test binary: it links once and shares one PostgreSQL database.

mod auth;
mod cli;
mod concurrency;
mod deployments;
mod errors;
mod events;
mod experiments;
mod helpers;
mod isolation;
mod kafka;
mod mlflow;
mod probes;
mod runs;
