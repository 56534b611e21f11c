//! The SQLite adapter: the embedded default, so the service runs on a bare machine.
//!
//! SQLite allows one writer at a time. All writes go through a pool of one connection, so they
//! queue in the service instead of failing with `SQLITE_BUSY`; reads use their own pool and, in
//! WAL mode, never wait for writes. Isolation rests on every statement filtering by `tenant_id`.

mod deployments;
mod experiments;
mod mlflow_sync;
mod models;
mod outbox;
mod rows;
mod runs;

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::query::Query;
use sqlx::sqlite::{
    SqliteArguments, SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{ConnectOptions, Sqlite, SqlitePool, Transaction};

use crate::adapters::sql::{db_error, to_millis, Bind, Sql};
use crate::adapters::ChangeSignal;
use crate::core::events::DomainEvent;
use crate::core::ports::{PoolStats, StoreHealth};
use crate::core::Result;
use crate::settings::DatabaseSettings;

static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

#[derive(Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    signal: ChangeSignal,
}

impl SqliteStore {
    /// Opens (creating if needed) the database file and its directory.
    pub async fn open(
        path: &Path,
        settings: &DatabaseSettings,
        signal: ChangeSignal,
    ) -> anyhow::Result<Self> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                anyhow::anyhow!(
                    "cannot create the database directory {}: {e}",
                    dir.display()
                )
            })?;
        }
        let options = SqliteConnectOptions::from_str("sqlite:")?
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(10))
            .log_statements(log::LevelFilter::Debug);
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .acquire_timeout(settings.acquire_timeout.max(Duration::from_secs(30)))
            .connect_with(options.clone())
            .await
            .map_err(|e| anyhow::anyhow!("cannot open SQLite at {}: {e}", path.display()))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(settings.max_connections.clamp(1, 8))
            .acquire_timeout(settings.acquire_timeout)
            .connect_with(options.read_only(true))
            .await?;
        Ok(Self {
            writer,
            reader,
            signal,
        })
    }

    pub async fn migrate(&self) -> anyhow::Result<()> {
        MIGRATOR.run(&self.writer).await?;
        Ok(())
    }

    /// Appends `events` to the outbox in `tx`, commits, and wakes the relay.
    pub(crate) async fn commit_with_events(
        &self,
        mut tx: Transaction<'static, Sqlite>,
        events: &[DomainEvent],
    ) -> Result<()> {
        outbox::append_events(&mut tx, events).await?;
        tx.commit().await.map_err(db_error)?;
        if !events.is_empty() {
            self.signal.notify();
        }
        Ok(())
    }

    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Binds the values of a shared query in order; times become epoch milliseconds.
pub(crate) fn prepare(sql: &Sql) -> Query<'_, Sqlite, SqliteArguments<'_>> {
    let mut query = sqlx::query(&sql.text);
    for value in &sql.binds {
        query = match value {
            Bind::Uuid(u) => query.bind(*u),
            Bind::Text(s) => query.bind(s.as_str()),
            Bind::Float(f) => query.bind(*f),
            Bind::Int(i) => query.bind(*i),
            Bind::Time(t) => query.bind(to_millis(*t)),
            Bind::UuidArray(_) => unreachable!("SQLite queries expand id lists into IN (...)"),
        };
    }
    query
}

#[async_trait]
impl StoreHealth for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(&self.reader)
            .await
            .map_err(db_error)?;
        Ok(())
    }

    fn pool_stats(&self) -> PoolStats {
        let pools = [&self.writer, &self.reader];
        PoolStats {
            size: pools.iter().map(|p| p.size()).sum(),
            idle: pools
                .iter()
                .map(|p| u32::try_from(p.num_idle()).unwrap_or(0))
                .sum(),
            max: pools
                .iter()
                .map(|p| p.options().get_max_connections())
                .sum(),
        }
    }
}
