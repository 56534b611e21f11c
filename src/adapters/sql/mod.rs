//! SQL shared by the PostgreSQL and SQLite adapters: listing queries built once, with the few
//! differences between the two dialects kept in one place.

pub mod deployments;
mod errors;
mod listing;

pub use errors::{db_error, map_error, MissingParent};

pub use listing::{
    events_page, experiments_page, runs_page, EVENT_COLUMNS, EXPERIMENT_COLUMNS, RUN_COLUMNS,
};

use chrono::{DateTime, Utc};
use uuid::Uuid;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Postgres,
    Sqlite,
}

/// A value bound to a placeholder. Each adapter turns it into its own column type (times are
/// `timestamptz` in PostgreSQL and epoch milliseconds in SQLite).
#[derive(Debug, Clone, PartialEq)]
pub enum Bind {
    Uuid(Uuid),
    Text(String),
    Float(f64),
    Int(i64),
    Time(DateTime<Utc>),
    /// PostgreSQL only: a `uuid[]` parameter.
    UuidArray(Vec<Uuid>),
}

/// SQL text with its bound values, in placeholder order.
#[derive(Debug, Clone)]
pub struct Sql {
    pub dialect: Dialect,
    pub text: String,
    pub binds: Vec<Bind>,
}

impl Sql {
    pub fn new(dialect: Dialect) -> Self {
        Self {
            dialect,
            text: String::new(),
            binds: Vec::new(),
        }
    }

    pub fn push(&mut self, sql: &str) -> &mut Self {
        self.text.push_str(sql);
        self
    }

    /// Appends a placeholder for `value`.
    pub fn bind(&mut self, value: Bind) -> &mut Self {
        self.binds.push(value);
        match self.dialect {
            Dialect::Postgres => {
                let n = self.binds.len();
                self.text.push_str(&format!("${n}"));
            }
            Dialect::Sqlite => self.text.push('?'),
        }
        self
    }

    /// Appends `column IN (...)` over `ids`; PostgreSQL takes them as one array parameter.
    pub fn push_in_uuids(&mut self, column: &str, ids: &[Uuid]) -> &mut Self {
        self.push(column);
        match self.dialect {
            Dialect::Postgres => {
                self.push(" = ANY(");
                self.bind(Bind::UuidArray(ids.to_vec()));
                self.push(")");
            }
            Dialect::Sqlite => {
                self.push(" IN (");
                for (i, id) in ids.iter().enumerate() {
                    if i > 0 {
                        self.push(", ");
                    }
                    self.bind(Bind::Uuid(*id));
                }
                self.push(")");
            }
        }
        self
    }
}

/// Epoch milliseconds, the SQLite representation of a time.
pub fn to_millis(t: DateTime<Utc>) -> i64 {
    t.timestamp_millis()
}

/// The time of epoch milliseconds read back from SQLite.
pub fn from_millis(ms: i64) -> DateTime<Utc> {
    DateTime::from_timestamp_millis(ms).unwrap_or_default()
}
