//! Turns database errors into domain errors: constraint violations become precise client
//! errors naming the field, lost connections become `Unavailable`, the rest is internal.

use crate::core::Error;

/// A unique constraint a client can violate. PostgreSQL reports the constraint's name, SQLite
/// only the columns, so both are kept.
struct UniqueConstraint {
    name: &'static str,
    sqlite_columns: &'static str,
    field: &'static str,
    message: &'static str,
}

const UNIQUE_CONSTRAINTS: &[UniqueConstraint] = &[UniqueConstraint {
    name: "experiments_tenant_name_key",
    sqlite_columns: "experiments.tenant_id, experiments.name",
    field: "name",
    message: "an experiment with this name already exists; choose another name",
}];

/// What a foreign-key violation means where it can happen: the parent does not exist.
#[derive(Debug, Clone, Copy)]
pub struct MissingParent {
    pub resource: &'static str,
    pub id: uuid::Uuid,
}

/// Maps a database error; `missing_parent` names the parent a foreign-key violation refers to.
pub fn map_error(error: sqlx::Error, missing_parent: Option<MissingParent>) -> Error {
    match &error {
        sqlx::Error::Database(db) => {
            if db.is_unique_violation() {
                let constraint = db.constraint().unwrap_or_default();
                let message = db.message();
                let known = UNIQUE_CONSTRAINTS
                    .iter()
                    .find(|c| c.name == constraint || message.ends_with(c.sqlite_columns));
                if let Some(c) = known {
                    return Error::conflict(c.field, c.message);
                }
            }
            if db.code().is_some_and(|code| is_unavailable(&code)) {
                return Error::Unavailable(format!("database: {}", db.message()));
            }
            if db.is_foreign_key_violation() {
                if let Some(parent) = missing_parent {
                    return Error::not_found(parent.resource, parent.id);
                }
            }
            Error::Internal(anyhow::Error::new(error).context("database statement failed"))
        }
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_) => Error::Unavailable(format!("database: {error}")),
        _ => Error::Internal(anyhow::Error::new(error).context("database access failed")),
    }
}

/// SQLSTATEs that mean the database cannot serve right now rather than that the statement is
/// wrong: connection failures (class 08), a database that is gone, shutdowns, too many clients.
fn is_unavailable(code: &str) -> bool {
    code.starts_with("08") || matches!(code, "3D000" | "57P01" | "57P02" | "57P03" | "53300")
}

/// `map_error` with no parent in play.
pub fn db_error(error: sqlx::Error) -> Error {
    map_error(error, None)
}
